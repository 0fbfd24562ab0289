"""A boolean where a number belongs: YAML reads yes/no, on/off and true/false as booleans, and pydantic takes one
as 1 or 0 (`steps: yes` trained one step), so the config's models refuse it. One home for fields.Section's fields
and a batch schedule's points (batchlab.batches, which schema imports)."""

from __future__ import annotations

from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin


def takes_number(annotation: Any) -> bool:
    """Whether a field holds numbers: int or float, or lists or tuples of them, maybe beside None or other types."""
    if get_origin(annotation) is Annotated:
        return takes_number(get_args(annotation)[0])
    if get_origin(annotation) in (list, tuple, Union, UnionType):
        kinds = get_args(annotation)
        return bool not in kinds and any(takes_number(kind) for kind in kinds)
    return annotation in (int, float)


def boolean_in(value: Any) -> bool | None:
    """The first boolean in a value or in its lists and tuples; None when it holds none."""
    if isinstance(value, bool):
        return value
    for item in value if isinstance(value, (list, tuple)) else ():
        if (found := boolean_in(item)) is not None:
            return found
    return None


def refuse_boolean(value: Any, annotation: Any) -> Any:
    """`value` unchanged; ValueError when it holds a boolean where `annotation` takes numbers."""
    found = boolean_in(value)
    if found is not None and takes_number(annotation):
        raise ValueError(f"expected a number, got the boolean {str(found).lower()} (YAML reads yes/no, on/off too)")
    return value
