"""Errors and warnings a user can cause. The CLI turns each error into one line and exit code 2, and each
warning into one `warning: ...` line on stderr."""

from __future__ import annotations

import re
from typing import Any


class BatchlabError(Exception):
    """Base class: the message is written for the user, not for a developer."""


class ConfigError(BatchlabError):
    """The experiment file or an override is not valid."""


class ArgumentError(ConfigError, ValueError):
    """An argument of a Python API function is not valid (the command line's bad option value): the message names
    the function called and the argument, `batchlab.sweep(workers=0): ...`. A ValueError too, as Python's own
    functions raise for a bad value."""


class OptionError(ArgumentError):
    """A bad argument found inside a procedure, worded for whoever called it. str(): the Python API's words,
    `batchlab.cbs(points=0): expected ...`; `worded(flags)`: the command line's, `--points 0: expected ...`.
    `names`/`values`: the argument (or arguments) at fault. `reason` names any other argument as a field,
    `{max_batch=16}` or `{source='noise'}`: `max_batch=16` in the API's words, `--max-batch 16` in the CLI's."""

    FIELD = re.compile(r"\{(\w+)=([^{}]*)\}")

    def __init__(self, function: str, names: str | tuple[str, ...], values: Any, reason: str):
        self.function, self.reason = function, reason
        self.names, self.values = (names, values) if isinstance(names, tuple) else ((names,), (values,))
        super().__init__(f"{called(function, zip(self.names, self.values))}: " + self.FIELD.sub(r"\1=\2", reason))

    def worded(self, flags: dict[str, str]) -> str:
        """As the command line says it: each argument by its option (`flags`, else --name-with-dashes) and value
        as typed (a list comma-separated); several at fault by their options alone."""
        def flag(name: str) -> str:
            return flags.get(name, "--" + name.replace("_", "-"))

        def typed(value: Any) -> str:
            text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else (
                repr(value) if isinstance(value, str) else str(value))
            return short(text, VALUE_CHARS)

        head = (f"{flag(self.names[0])} {typed(self.values[0])}" if len(self.names) == 1
                else ", ".join(map(flag, self.names)))
        return f"{head}: " + self.FIELD.sub(lambda m: f"{flag(m[1])} {m[2].strip(chr(39) + '[]')}", self.reason)


class DataError(BatchlabError):
    """A data set is missing, corrupt or cannot be fetched."""


class RecordsError(BatchlabError):
    """The records on disk cannot be used as asked (locked, changed config, damaged, not writable)."""


class TrainingError(BatchlabError):
    """Training that the rest of the work stands on failed: the user's code raised, or the loss diverged (the
    reference run of `batchlab cbs`). A sweep's trial that fails is that trial's status, never this."""


class BatchlabWarning(UserWarning):
    """Something the user should know that does not stop the work (e.g. a damaged copy of a data set skipped
    for another). The library never prints: it warns with this category (Python's `warnings`)."""


def short(text: str, limit: int = 300) -> str:
    """Text cut to a readable length on one line: what an error message echoes of a user's value (pass its
    repr, with a smaller limit) or of an exception's message. A 100,000-character value is not a message."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def called(function: str, arguments) -> str:
    """A call of the Python API as an error names it, `batchlab.sweep(workers=0)`: (name, value) pairs."""
    return f"batchlab.{function}({', '.join(f'{n}={short(repr(v), VALUE_CHARS)}' for n, v in arguments)})"


def counted(n: int, noun: str) -> str:
    """'1 trial', '2 trials', '1 batch size': a count and its noun, agreeing."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


VALUE_CHARS = 60  # a value echoed in a message: enough to recognise it


def described(error: BaseException) -> str:
    """A user's exception in one line: 'OutOfMemoryError: CUDA out of memory', or its type alone where its
    message is empty."""
    text = short(str(error))
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
