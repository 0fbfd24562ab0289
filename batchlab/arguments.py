"""The Python API's checks of its own arguments, with the command line's limits (batchlab.cli's options): a wrong
argument is one ArgumentError naming the function called and the argument, `batchlab.sweep(workers=0): ...`, raised
before any work; not a TypeError from deep inside (`'>' not supported between 'str' and 'int'`)."""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path
from typing import Any

from batchlab.errors import ArgumentError, called
from batchlab.fields import COUNT_MAX, PARALLEL_MAX, RETRIES_MAX
from batchlab.memory import parse_size


def fault(function: str, name: str, value: Any, expected: str) -> ArgumentError:
    return ArgumentError(f"{called(function, [(name, value)])}: {expected}")


def whole(function: str, name: str, value: Any, low: int, high: int = COUNT_MAX) -> None:
    """None, or a whole number from `low` to `high` (a bool is not one: True is not 1 worker)."""
    if value is not None and not (isinstance(value, numbers.Integral) and not isinstance(value, bool)
                                  and low <= value <= high):
        raise fault(function, name, value, f"expected a whole number from {low} to {high:,}")


def real(function: str, name: str, value: Any, above: float | None = None, most: float | None = None) -> None:
    """None, or a finite number, above `above` and at most `most` where given."""
    fits = (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
            and (above is None or value > above) and (most is None or value <= most))
    if value is not None and not fits:
        bounds = ((f" above {above:g}" if above is not None else "")
                  + (f", at most {most:g}" if most is not None else ""))
        raise fault(function, name, value, f"expected a finite number{bounds}")


def number(function: str, name: str, value: Any) -> None:
    """None, or a number of any value: where the bounds are checked later with the command line's own message
    (`--tolerance nan: expected a number above 0`), a str is still refused here, not a TypeError there."""
    if value is not None and not (isinstance(value, numbers.Real) and not isinstance(value, bool)):
        raise fault(function, name, value, "expected a number")


def path(function: str, name: str, value: Any) -> Path:
    """A directory or file given as a str or a path; an empty one is a mistake, not the working directory."""
    if not isinstance(value, (str, os.PathLike)) or not str(os.fspath(value)).strip():
        raise fault(function, name, value, "expected a path, a str or a pathlib.Path ('.' for the working "
                                           "directory)")
    return Path(value)


def overrides(function: str, value: Any) -> dict | list | None:
    """Overrides as load_config takes them: a dict {path: value}, a list of "path=value", or one "path=value" (a
    str, which would otherwise be read a character at a time)."""
    if isinstance(value, str):
        return [value]
    if value is None or isinstance(value, dict) or (isinstance(value, (list, tuple))
                                                    and all(isinstance(o, str) for o in value)):
        return value
    raise fault(function, "overrides", value, 'expected {"budget.epochs": 2}, ["budget.epochs=2"] or '
                                              '"budget.epochs=2"')


def memory_limit(function: str, value: Any) -> int | None:
    """Bytes, or a size as --memory-limit takes it ('512MiB', '2GiB', '1.5GB')."""
    if isinstance(value, str):
        try:
            return parse_size(value, COUNT_MAX)
        except ValueError as e:
            raise fault(function, "memory_limit", value, str(e)) from None
    if value is None:
        return None
    if not (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
            and 1 <= value <= COUNT_MAX):  # bytes as a float too (2e9, 1.5 * 2**30), as the search took them
        raise fault(function, "memory_limit", value, "expected bytes (a number from 1) or a size such as '512MiB'")
    return int(value)


def executor(function: str, workers: Any, gpus: Any, gpus_per_trial: Any, retries: Any) -> None:
    """As `batchlab sweep` checks --workers, --gpus, --gpus-per-trial and --retries (make_executor checks how they
    combine)."""
    whole(function, "workers", workers, 1, PARALLEL_MAX)
    whole(function, "retries", retries, 0, RETRIES_MAX)
    real(function, "gpus_per_trial", gpus_per_trial, above=0, most=PARALLEL_MAX)
    if gpus is not None:
        if not isinstance(gpus, (list, tuple)):
            raise fault(function, "gpus", gpus, "expected a list of CUDA device ids, e.g. [0, 1]")
        for gpu in gpus:
            whole(function, "gpus", gpu, 0, PARALLEL_MAX - 1)
