"""The building blocks every section of the schema shares: bounds, field types, and validators.

The bounds turn a value no machine can run into a config error instead of a crash mid-sweep.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from batchlab.booleans import refuse_boolean
from batchlab.errors import VALUE_CHARS, short
from batchlab.scientific import counts

# package.module:attribute; parts in angle brackets (`<locals>`, `<lambda>`, `<partial>`) appear in the name of a
# callable handed over from Python (registry.name_of)
IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_<][\w.<>]*$")

COUNT_MAX = 2**63 - 1  # sizes, counts and seeds: torch holds them in 64-bit integers (a larger one overflows)
PARALLEL_MAX = 1024  # threads or processes: above any machine's core count (OpenMP crashes at 100,000 threads)
NAME_MAX = 255  # the name is a directory, <out>/<name>: a file name holds 255 bytes
RETRIES_MAX = 100  # --retries: a trial whose worker is lost 100 times over is not losing workers by chance
MEASUREMENTS_MAX = 100_000  # `noise --measurements`: its error falls as 1/sqrt(n), 0.3% of one draw's at 100,000
EPOCHS_MAX = 1e12  # a length in epochs becomes a whole number of steps: past any run, and 1e308 overflows
Count = Annotated[int, Field(le=COUNT_MAX)]

Epochs = Annotated[float, Field(le=EPOCHS_MAX)]


def cadence(epochs: float, per_epoch: int) -> int:
    """An interval given in epochs (eval.every, noise.every) as a whole count of what an epoch holds `per_epoch`
    of (steps; a batch-size schedule's examples): at least one."""
    return max(1, round(epochs * per_epoch))


def finite(value: Any, path: str = "") -> Any:
    """Refuse inf and NaN anywhere in a value: the records are strict JSON, which has neither."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{path + ': ' if path else ''}expected a finite number, got {value}")
    if isinstance(value, dict):
        for k, v in value.items():
            finite(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            finite(v, f"{path}[{i}]" if path else f"[{i}]")
    return value


Args = Annotated[dict[str, Any], AfterValidator(finite)]  # keyword arguments of a factory, passed as given


def is_import_path(name: str) -> bool:
    return bool(IMPORT_PATH.match(name))


def check_name(name: str, builtins: tuple[str, ...]) -> str:
    if name in builtins or is_import_path(name):
        return name
    raise ValueError(f"{short(repr(name), VALUE_CHARS)} is not one of {', '.join(builtins)}, nor an import path like "
                     "package.module:attribute")


def message(error: dict) -> str:
    """One pydantic error as a user reads it: "unknown key", "expected one of ...", the validator's text."""
    if error["type"] == "extra_forbidden":
        return "unknown key"
    text = error["msg"].removeprefix("Value error, ")
    return text.replace("Input should be", "expected one of") if error["type"] == "literal_error" else text


def changed_from_default(section: BaseModel, fields: tuple[str, ...]) -> set[str]:
    """The fields whose value is not their default (by value, so a full dump validates again unchanged)."""
    return {f for f in fields if getattr(section, f) != type(section).model_fields[f].default}


class Section(BaseModel):
    # a typo in a key is an error, never silently ignored; inf and NaN too (the records are strict JSON)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_as_meant(cls, value: Any, info: ValidationInfo) -> Any:
        # YAML's yes/on/true, which pydantic would take as 1 where a number belongs (batchlab.booleans); and a count
        # in scientific notation, which YAML reads as text (batchlab.scientific)
        annotation = cls.model_fields[info.field_name].annotation
        return counts(refuse_boolean(value, annotation), annotation)
