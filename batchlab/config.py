"""Reading an experiment: a YAML file, `--set path=value` overrides, and errors that point at the line.

The schema and every default are in batchlab.schema. A config is validated by pydantic: an unknown
key, a wrong type or an impossible value is a `ConfigError` naming the file, the line where the key
can be found, the key path, and what was expected.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from batchlab.errors import VALUE_CHARS, ConfigError, short
from batchlab.fields import message
from batchlab.schema import UNITS as BUDGET_UNITS
from batchlab.schema import Experiment

# What a config may hold. Real ones are a few levels deep and a few hundred values; beyond these bounds a
# file is a mistake (or an alias bomb: YAML anchors repeat a value without copying it), refused before
# validating or writing it would exhaust the recursion limit, the memory or the patience.
MAX_DEPTH = 100  # nested mappings and lists
MAX_VALUES = 1_000_000  # values in all, counting each use of a YAML alias
MAX_BYTES = 2**20  # a config file: a few KB; 1 MiB lists over 100,000 values (grid.TRIALS_LIMIT), and PyYAML
# takes seconds per MiB: a larger file is refused before it is read, not parsed for minutes


# ---------------------------------------------------------------- loading

def read_text(path: Path) -> str:
    """A config file's text, read no further than MAX_BYTES: a 55 MB list, or /dev/zero, is refused, not read."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            raise ConfigError(f"{path}: over {MAX_BYTES:,} bytes, more than a config holds (a sweep list that long "
                              "is more trials than one sweep can plan)")
        return data.decode()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None


def load_raw(path: Path) -> dict:
    """Read a YAML experiment as a plain dict (safe_load only)."""
    text = read_text(path)
    raw = parse_yaml(text, str(path))
    if raw is None:  # an empty file (or only comments) would silently run every default
        raise ConfigError(f"{path}: the file is empty; expected a mapping of sections (name, dataset, model, ...)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (name, dataset, model, ...), got {type(raw).__name__}")
    if not raw.keys() & Experiment.model_fields.keys():  # some other file (say, a password file): echo none of it
        raise ConfigError(f"{path}: not a batchlab experiment: none of its {len(raw)} top-level keys is a section "
                          "(name, dataset, model, ...)")
    return raw


class TwiceGiven(Exception):
    """A mapping gives one key twice: (key, line of the second, line of the first), lines from 1."""


class StrictLoader(yaml.SafeLoader):
    """safe_load's loader, refusing a key given twice in one mapping, which PyYAML reads as the last value
    silently: `lr: 0.1` early in a section and `lr: 0.4` further down trained at 0.4 alone. A `<<` merge's
    keys may still be overridden: they are not the mapping's own."""

    def compose_mapping_node(self, anchor):
        node = super().compose_mapping_node(anchor)
        node.own_keys = [key for key, _ in node.value]  # before a << merge elsewhere adds keys to node.value
        return node

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node in getattr(node, "own_keys", ()):
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue  # a key that is no scalar: PyYAML's own error, if it cannot be one
            key = self.construct_object(key_node)
            try:
                hash(key)
            except TypeError:
                continue  # PyYAML's own error says so
            if key in seen:
                raise TwiceGiven(key, key_node.start_mark.line + 1, seen[key])
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, source: str) -> Any:
    """YAML text (safe_load, a key given twice refused) within MAX_DEPTH and MAX_VALUES, or a ConfigError naming
    the source and line."""
    try:
        value = yaml.load(text, Loader=StrictLoader)  # noqa: S506 -- StrictLoader is a SafeLoader
    except TwiceGiven as e:
        key, line, first = e.args
        raise ConfigError(f"{source}, line {line}: {short(str(key), 40)!r} is given twice in one mapping (first on "
                          f"line {first}); YAML would keep only the last: remove one") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{source}{where}: YAML syntax error: {short(problem)}") from None
    except RecursionError:  # PyYAML composes nested nodes recursively: a few hundred levels exhaust Python's stack
        raise ConfigError(f"{source}: nested more than {MAX_DEPTH} levels deep") from None
    except (ValueError, IndexError, TypeError, OverflowError) as e:  # a tagged scalar PyYAML cannot construct
        raise ConfigError(f"{source}: a YAML value cannot be read ({type(e).__name__}: {short(str(e), 80)}), e.g. "
                          "an empty or malformed !!float, !!int or !!timestamp") from None
    check_size(value, source)
    return value


def check_size(value: Any, source: str) -> None:
    """Refuse a value nested deeper than MAX_DEPTH or holding more than MAX_VALUES values (a cycle of
    aliases nests without end). Iterative: the check must not itself exhaust the stack."""
    stack, count = [(value, 0)], 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if depth > MAX_DEPTH:
            raise ConfigError(f"{source}: nested more than {MAX_DEPTH} levels deep")
        if count > MAX_VALUES:
            raise ConfigError(f"{source}: holds more than {MAX_VALUES:,} values")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend((v, depth + 1) for v in node)




def apply_overrides(raw: dict, overrides: list[str] | dict[str, Any]) -> dict:
    """Apply overrides to a copy of raw: `path=value` strings (value parsed as YAML), or {path: value}.

    `sweep.a.b=[1,2]` sets the sweep axis "a.b", since sweep keys are themselves dotted paths.
    A budget unit replaces the one the file gives: `budget.steps=5` over `epochs: 1` means 5 steps.
    """
    raw = copy.deepcopy(raw)
    items = overrides.items() if isinstance(overrides, dict) else [parse_override(o) for o in overrides]
    for path, value in items:
        keys = path.strip().split(".")
        if keys[0] == "sweep" and len(keys) > 1:
            keys = ["sweep", ".".join(keys[1:])]
        node = raw
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        if keys[:-1] == ["budget"] and keys[-1] in BUDGET_UNITS:  # --set budget.steps=5 replaces epochs: 1
            for unit in BUDGET_UNITS:
                node.pop(unit, None)
        node[keys[-1]] = value
        if keys == ["batch_size"]:
            raw.pop("batch_schedule", None)  # a batch size given replaces the schedule (a dump's) as a whole
    return raw


def parse_override(item: str) -> tuple[str, Any]:
    path, eq, text = item.partition("=")
    shown = f"--set {short(repr(item), VALUE_CHARS)}"
    if not eq or not path.strip():
        raise ConfigError(f"{shown}: expected path=value, e.g. --set budget.epochs=2")
    if not text.strip():  # YAML reads nothing as null, which unsets the field: a forgotten value, most likely
        raise ConfigError(f"{shown}: no value after '='; to unset the field, write {path.strip()}=null")
    try:
        return path.strip(), parse_yaml(text, shown)
    except ConfigError as e:
        raise ConfigError(str(e).replace("YAML syntax error", "value is not valid YAML")) from None


def validate(raw: dict, source: str = "config", text: str | None = None) -> Experiment:
    """Validate a raw dict into an Experiment, or raise ConfigError naming key path and line."""
    try:
        return Experiment.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(describe(e, source, text)) from None


def describe(error: ValidationError, source: str, text: str | None) -> str:
    """One line per problem: `file, line N: key.path: what was expected`."""
    lines = []
    for err in error.errors():
        loc = [str(part) for part in err["loc"]]
        msg = message(err)
        key = ".".join(loc)
        # a sweep-level check names its own path in the message (`sweep.x: ...`)
        if (msg.startswith("sweep.") and key in ("", "sweep")) or (msg.startswith("batch_size: ") and not key):
            key, _, msg = msg.partition(": ")
        place = where(source, text, key)
        key, msg = short(key, VALUE_CHARS), short(msg)  # a key or a value can be a user's 100,000 characters
        lines.append(f"{place}: {key}: {msg}" if key else f"{place}: {msg}")
    return "; ".join(lines)


@lru_cache(maxsize=2)
def compose(text: str) -> yaml.Node | None:
    """The YAML node tree of a config's text, once for all the lines an error message names."""
    try:
        return yaml.compose(text)
    except (yaml.YAMLError, RecursionError):
        return None


def find_line(text: str, dotted: str) -> int | None:
    """The 1-based line of a key path in YAML text, following mappings as far as they go."""
    node = compose(text)
    keys = dotted.split(".")
    line = None
    while keys and isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            # sweep keys are dotted paths themselves: match the longest joined key
            for n in range(len(keys), 0, -1):
                if k.value == ".".join(keys[:n]):
                    line, node, keys = k.start_mark.line + 1, v, keys[n:]
                    break
            else:
                continue
            break
        else:
            break
    return line


def set_path(raw: dict, dotted: str, value: Any) -> None:
    """raw[a][b][c] = value for "a.b.c", making the mappings that are missing; ConfigError when a value on the
    way is not a mapping (a sweep of model.args.x.y where model.args.x is 5)."""
    *parents, last = dotted.split(".")
    for i, key in enumerate(parents):
        raw = raw.setdefault(key, {})
        if not isinstance(raw, dict):
            raise ConfigError(f"{'.'.join(parents[:i + 1])} is {short(repr(raw), VALUE_CHARS)}, not a mapping "
                              f"that could hold {last}")
    raw[last] = value
    if dotted == "batch_size":
        raw.pop("batch_schedule", None)  # a batch size given replaces the schedule (a dump's) as a whole


def where(source: str, text: str | None, key: str) -> str:
    """`file, line N` for a key path, or just the source when the line cannot be found."""
    line = find_line(text, key) if text else None
    return f"{source}, line {line}" if line else source


def check_axes(experiment: Experiment, source: str, text: str | None) -> None:
    """Each value of each sweep axis must be valid in the config on its own: name the first that is not."""
    base = experiment.model_dump(mode="json", exclude={"sweep"})
    for path, values in experiment.sweep.items():
        for value in values if isinstance(values, list) else []:
            if path == "batch_size" and value == "max":
                continue  # the largest batch that fits, found before the trials are expanded
            trial = copy.deepcopy(base)
            try:
                set_path(trial, path, value)
                Experiment.model_validate(trial)
            except (ValidationError, ConfigError) as e:
                problem = ("; ".join(message(err) for err in e.errors()) if isinstance(e, ValidationError)
                           else str(e))
                raise ConfigError(f"{where(source, text, f'sweep.{path}')}: sweep.{short(path, VALUE_CHARS)}: "
                                  f"value {short(repr(value), VALUE_CHARS)}: {short(problem)}") from None


def source_name(path: str | Path, overridden: bool) -> str:
    """How an error names a config: the file, and `(with --set)` when overrides were applied (the line it points
    at then holds the key, and perhaps not the value at fault)."""
    return str(path) + (" (with --set)" if overridden else "")


def load(path: Path, overrides: list[str] | dict[str, Any] = ()) -> Experiment:
    """Load, override and validate an experiment file."""
    raw = load_raw(path)
    text = read_text(path)
    source = source_name(path, bool(overrides))
    raw = apply_overrides(raw, overrides)
    experiment = validate(raw, source, text)
    check_axes(experiment, source, text)
    return experiment


def load_config(config: str | Path | dict | Experiment, overrides: list[str] | dict[str, Any] = ()) -> Experiment:
    """An Experiment from a YAML file's path, a dict of the same shape, or an Experiment, with overrides."""
    if isinstance(config, (str, Path)):
        return load(Path(config), overrides)
    if isinstance(config, Experiment):
        if not overrides:
            return config
        config = config.model_dump(mode="json", exclude_unset=True)
    if not isinstance(config, dict):
        raise ConfigError(f"expected a config file path, a dict or an Experiment, got {type(config).__name__}")
    check_size(config, "config")
    experiment = validate(apply_overrides(config, overrides), "config")
    check_axes(experiment, "config", None)
    return experiment


def changed_fields(old: Experiment, new: Experiment) -> list[str]:
    """Fixed (non-axis) fields whose value differs between two experiments (a resumed sweep's recorded one and
    this one): their trials could not be compared."""
    axes = set(old.sweep) | set(new.sweep) | {"checkpoint"}  # checkpointing changes no result
    a, b = flatten(old.model_dump(mode="json", exclude={"sweep"})), flatten(new.model_dump(mode="json", exclude={"sweep"}))
    return sorted(k for k in a.keys() | b.keys()
                  if a.get(k) != b.get(k) and not any(k == axis or k.startswith(axis + ".") for axis in axes))


def flatten(d: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}"""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
