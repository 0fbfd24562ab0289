"""Errors and warnings a user can cause. The CLI turns each error into one line and exit code 2, and each
warning into one `warning: ...` line on stderr."""


class BatchlabError(Exception):
    """Base class: the message is written for the user, not for a developer."""


class ConfigError(BatchlabError):
    """The experiment file or an override is not valid."""


class ArgumentError(ConfigError, ValueError):
    """An argument of a Python API function is not valid (the command line's bad option value): the message names
    the function called and the argument, `batchlab.sweep(workers=0): ...`. A ValueError too, as Python's own
    functions raise for a bad value."""


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


def counted(n: int, noun: str) -> str:
    """'1 trial', '2 trials', '1 batch size': a count and its noun, agreeing."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


VALUE_CHARS = 60  # a value echoed in a message: enough to recognise it


def described(error: BaseException) -> str:
    """A user's exception in one line: 'OutOfMemoryError: CUDA out of memory', or its type alone where its
    message is empty."""
    text = short(str(error))
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
