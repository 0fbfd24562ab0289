"""Resolve what a config names: a built-in short name, or an import path `package.module:attribute`.

One mechanism for models, data sets, losses and optimizers. A config that names an import path runs
that module's code, as `python -c "import package.module"` would; YAML itself is read with safe_load.

The directory of the config file and the working directory are made importable, so `nets.py` beside
the config is `nets:SmallCNN`. A callable handed straight from Python (`batchlab.sweep(..., model=Net)`)
is registered here under its name (registry.name_of: its import path, or what a lambda or a partial wraps) and
used in this process; worker processes import it by that path, which a class defined in a notebook or a script's
`__main__`, a lambda and a partial do not have.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.machinery
import inspect
import sys
import sysconfig
from pathlib import Path
from typing import Any, Callable

from batchlab.errors import VALUE_CHARS, BatchlabError, ConfigError, short

# (config key, name) -> a callable handed over from Python, in this process only; keyed by its part too, as
# two lambdas handed over in one call (model=, dataset=) have the same name
_given: dict[tuple[str, str], Callable] = {}


class ComponentError(ConfigError):
    """A named part cannot be imported or built. `key` is the config key that names it (e.g. model.name)."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key, self.message = key, message

    def __reduce__(self):  # rebuilt from (key, message) when it crosses a process boundary
        return type(self), (self.key, self.message)


def make_importable(*dirs: str | Path) -> None:
    """Put directories first on sys.path, in this order, as Python does with a script's own directory."""
    for d in reversed([str(Path(d).resolve()) for d in dirs]):
        if d in sys.path:
            sys.path.remove(d)
        sys.path.insert(0, d)


def import_module(name: str):
    """importlib.import_module, except that a top-level module imported earlier from another directory (an
    earlier config's `nets.py`, say) is imported anew from where sys.path finds it now."""
    module = sys.modules.get(name)
    if module is not None and "." not in name and getattr(module, "__file__", None):
        spec = importlib.machinery.PathFinder.find_spec(name, sys.path)
        if spec is not None and spec.origin and Path(spec.origin).resolve() != Path(module.__file__).resolve():
            del sys.modules[name]
    return importlib.import_module(name)


def name_of(obj: Callable) -> str:
    """The import path `module:qualname` of a callable. One that has no such path (a partial, a callable object)
    is named by what it wraps, marked by a part in angle brackets as Python marks `<lambda>` and `<locals>`:
    `nets:Net.<partial>`, `nets:Scaled.<instance>` (a name the config accepts, the records show, and
    not_importable knows no other process can import). A lambda, a partial and an object also carry a stamp of
    what they hold, `nets:Net.<partial>.<3fa2c1d0>`: two lambdas, or partial(Net, width=16) and width=32, share
    the rest of their names, so a sweep resumed with the other one would have counted its trials as recorded."""
    if isinstance(obj, functools.partial):
        return f"{name_of(obj.func)}.<partial>.<{stamp((obj.args, obj.keywords))}>"
    qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if isinstance(qualname, str) and isinstance(getattr(obj, "__module__", None), str):
        lambda_stamp = f".<{stamp(obj)}>" if qualname.rpartition(".")[2] == "<lambda>" else ""
        return f"{obj.__module__}:{qualname}{lambda_stamp}"
    held = vars(obj) if hasattr(obj, "__dict__") else obj
    return f"{type(obj).__module__}:{type(obj).__qualname__}.<instance>.<{stamp(held)}>"


def stamp(value: Any) -> str:
    """8 hex digits of what `value` holds: a function's code, defaults and closure, containers' items, else its
    repr (one that shows a memory address differs from run to run: a resumed sweep then refuses the records as
    another experiment's, rather than taking them for its own)."""
    def held(v: Any, depth: int = 0) -> Any:
        if depth > 8:
            return repr(v)
        if inspect.iscode(v):
            return (v.co_code, v.co_names, tuple(held(c, depth + 1) for c in v.co_consts))
        if inspect.isfunction(v):
            cells = []
            for cell in v.__closure__ or ():
                try:
                    cells.append(held(cell.cell_contents, depth + 1))
                except ValueError:  # a cell not yet filled
                    cells.append(None)
            return (held(v.__code__, depth + 1), held(v.__defaults__, depth + 1),
                    held(v.__kwdefaults__, depth + 1), tuple(cells))
        if isinstance(v, (list, tuple)):
            return tuple(held(x, depth + 1) for x in v)
        if isinstance(v, dict):
            return tuple(sorted((repr(k), held(x, depth + 1)) for k, x in v.items()))
        return repr(v)
    return hashlib.sha256(repr(held(value)).encode()).hexdigest()[:8]


def give(key: str, obj: Callable) -> str:
    """Register a callable handed over from Python for config key `key` (e.g. model.name); return the name the
    config records for it."""
    if not callable(obj):
        raise ConfigError(f"expected a callable (a class or a function), got {type(obj).__name__}")
    name = name_of(obj)
    _given[key, name] = obj
    return name


def not_importable(name: str, main: bool = True) -> str | None:
    """Why another process cannot import `name` (a function's locals, a lambda, a partial, an object, and with
    `main` a callable from __main__), said after the name; None where it can. (A spawned child imports a script's
    __main__ again, a worker of a pool or a cluster does not.)"""
    module, _, attr = name.partition(":")
    parts = attr.split(".")
    for marker, why in (("<partial>", "as a functools.partial"), ("<lambda>", "as a lambda"),
                        ("<instance>", "as an object, not a class or a function"),
                        ("<locals>", "and is defined inside a function")):
        if marker in parts:
            return why
    if main and module in ("__main__", "__mp_main__"):
        return f"and is defined in {module}"
    return None


def check_importable(names: list[str], where: str, otherwise: str = "", main: bool = True) -> None:
    """ConfigError for the first of `names` that another process (`where`, e.g. "worker processes") cannot
    import: a lambda, a partial, a callable from __main__ (not_importable); `otherwise`: what else would do."""
    for name in names:
        if why := not_importable(name, main):
            raise ConfigError(f"{name} was handed over from Python {why}, which {where} cannot import; move it into "
                              "a module and name it by import path (e.g. model: {name: my_nets:SmallCNN}; a "
                              f"partial's keywords under args){', or ' + otherwise if otherwise else ''}")


def resolve(key: str, name: str, builtins: dict[str, Callable]) -> Callable:
    """The callable that `name` means under config key `key` (e.g. "model.name")."""
    if name in builtins:
        return builtins[name]
    if (key, name) in _given:
        return _given[key, name]
    module_name, sep, attr = name.partition(":")
    if not sep:
        raise ComponentError(key, f"{short(repr(name), VALUE_CHARS)} is not one of {', '.join(builtins)}, nor an "
                                  "import path like "
                                  "package.module:attribute")
    try:
        obj: Any = import_module(module_name)
    except ImportError as e:
        raise ComponentError(key, f"cannot import {module_name!r} ({name}): {e}") from None
    except Exception as e:  # noqa: BLE001 -- the user's module raised while being imported
        raise ComponentError(key, f"importing {module_name!r} raised {type(e).__name__}: {e}") from None
    except SystemExit as e:  # a script's exit at module level: it would end batchlab without a word
        raise ComponentError(key, f"importing {module_name!r} called sys.exit({short(repr(e.code), VALUE_CHARS)}); "
                                  "put the module's script under `if __name__ == '__main__':`") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ComponentError(key, f"{name}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ComponentError(key, f"{name} is a {type(obj).__name__}, not a class or a function")
    return obj


def call(key: str, factory: Callable, args: dict[str, Any], *positional: Any, **offered: Any) -> Any:
    """factory(*positional, **args), plus each of `offered` that its signature names (e.g. input_shape).

    An exception raised by the factory becomes a ComponentError naming the key and its message.
    """
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # some builtins have no signature: offer nothing
        parameters = {}
    extra = {k: v for k, v in offered.items() if k in parameters and k not in args}
    try:
        return factory(*positional, **args, **extra)
    except BatchlabError:
        raise  # already a message for the user (e.g. a built-in data set's missing files)
    except Exception as e:  # noqa: BLE001 -- the user's factory raised while building
        raise ComponentError(key, f"{name_of(factory)}({describe_args(args)}) raised {type(e).__name__}: "
                                  f"{short(str(e))}") from None


def describe_args(args: dict[str, Any]) -> str:
    return short(", ".join(f"{k}={v!r}" for k, v in args.items()), 200)


# ---------------------------------------------------------------- what ran: source hashes

def _installed_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple(str(Path(paths[k]).resolve()) for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths)


def source_hashes(names: list[str]) -> dict[str, dict[str, str]]:
    """{module: {"file", "sha256"}} for the user modules that import paths name.

    Installed packages and the standard library are left out (their version is what identifies them);
    only the named module's own file is hashed, not the modules it imports.
    """
    roots, out = _installed_roots(), {}
    for name in names:
        module_name = name.partition(":")[0]
        module = sys.modules.get(module_name)
        file = getattr(module, "__file__", None)
        if not file or module_name in out:
            continue
        path = Path(file).resolve()
        if any(str(path).startswith(root + "/") for root in roots):
            continue
        out[module_name] = {"file": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return out
