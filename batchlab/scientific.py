"""A count written in scientific notation: YAML 1.1 (PyYAML) reads 3e6, 1e2 or 2.5e3 as text (its floats need a dot
and a signed exponent, 3.0e+6), and pydantic refused that text where an integer belongs ("unable to parse string
as an integer"; `budget.tokens: 3e6`), or kept it as text where a progress was read (a schedule's point '2e3').
Where a field takes integers, such text is read as the number it writes, which is then that integer when whole (as
a whole float from Python is: 3e6); one that is not whole (2.5e0) meets the field's own error for a fraction.
Plain digits in quotes ("32") stay text: they were quoted on purpose. One home for fields.Section's fields and a
batch schedule's points and sizes (batchlab.batches), as batchlab.booleans is for yes/no."""

from __future__ import annotations

import math
import re
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

NOTATION = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")  # 3e6, 1.5E+3, .5e2: what YAML 1.1 leaves as text


def whole(value: Any) -> Any:
    """A number in scientific notation (text) as the number it writes, and a whole one (text, or a float) as that
    int; any other value unchanged."""
    if isinstance(value, str) and NOTATION.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def takes_int(annotation: Any) -> bool:
    """Whether a field holds an integer, maybe beside None or other types (not a list of them)."""
    if get_origin(annotation) is Annotated:
        return takes_int(get_args(annotation)[0])
    if get_origin(annotation) in (Union, UnionType):
        return any(takes_int(kind) for kind in get_args(annotation))
    return annotation is int


def counts(value: Any, annotation: Any) -> Any:
    """`value` with each count of a field of `annotation` (an int, or a list of ints) written in scientific
    notation read as that count (`whole`); other values unchanged."""
    if get_origin(annotation) is Annotated:
        return counts(value, get_args(annotation)[0])
    if get_origin(annotation) is list and isinstance(value, list):
        [item] = get_args(annotation) or (Any,)
        return [counts(v, item) for v in value]
    return whole(value) if takes_int(annotation) else value


def within(value: Any) -> Any:
    """`value` with every text in scientific notation read as the number it writes (a whole one as an int), at
    any depth: a sweep axis's values, which no field's type reads (sweep.lr: [1e-3], sweep.seed: [1e0], a
    schedule's point [2e3, 64] in sweep.batch_size), so that trial ids, labels and the commands that read the
    axes (smoke's schedule scaling, cbs's first seed, suggest's batch sizes) see numbers."""
    if isinstance(value, list):
        return [within(v) for v in value]
    if isinstance(value, dict):
        return {k: within(v) for k, v in value.items()}
    return whole(value) if isinstance(value, str) else value
