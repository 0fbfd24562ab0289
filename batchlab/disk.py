"""Writing the records so that a fault leaves nothing half-written, and the OS's refusal is one line.

A file is replaced atomically (temp file, fsync, rename) or appended a whole line at a time; a write that
fails (a full disk) leaves the file as it was before it. An OSError while writing (a read-only, immutable
or full disk, a directory without permission) becomes a RecordsError naming the path and the OS's reason,
which the command line prints as one line.
"""

from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any, Callable

from batchlab.errors import RecordsError


@contextmanager
def writing(path: Path, exact: bool = False):
    """Turn an OSError inside into a RecordsError naming the file and the reason: the file the OS names (else
    `path`), or with `exact` always `path` (the file a temp file stands in for)."""
    try:
        yield
    except OSError as e:
        raise RecordsError(f"cannot write {path if exact else e.filename or path}: {e.strerror or e}") from None


def check_writable(path: Path, access: bool = True) -> None:
    """Raise the RecordsError writing under `path` would, found without writing anything: the deepest part of
    it that exists must be a directory (and, with `access`, one this process may write in): a command checks
    before its work, not after it."""
    there = Path(path)
    while not there.exists() and there.parent != there:
        there = there.parent
    if not there.is_dir():
        raise RecordsError(f"cannot write {path}: {there} is not a directory")
    if access and not os.access(there, os.W_OK | os.X_OK):
        raise RecordsError(f"cannot write {path}: Permission denied")


def write_atomic(path: Path, write: Callable[[IO], None], binary: bool = False) -> None:
    """Temp file + fsync + rename: a reader sees the old file or the new one, never half of one. When the
    writing fails (a full disk, a value the format cannot hold), the temp file is removed and the error raised."""
    tmp = path.with_name(path.name + ".tmp")
    with writing(path, exact=True):
        try:
            with open(tmp, "wb" if binary else "w") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with suppress(OSError):  # (on a read-only disk there is none to remove)
                tmp.unlink(missing_ok=True)
            raise


def strict_json(value: Any) -> Any:
    """`value` with every NaN and inf, however deep in dicts, lists and tuples, as None: JSON has neither."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def write_json_atomic(path: Path, obj: Any) -> None:
    """`obj` as strict JSON (no NaN or inf), atomically."""
    def dump(f: IO) -> None:
        json.dump(obj, f, indent=2, allow_nan=False, default=str)
        f.write("\n")
    write_atomic(path, dump)


def write_text(path: Path, text: str) -> None:
    """`text`, atomically."""
    write_atomic(Path(path), lambda f: f.write(text))


class LineFile:
    """A file appended a whole line at a time, unbuffered: a line that cannot be written whole (a full disk)
    is cut back off, so the file never ends in part of a line, and the RecordsError raised names the file."""

    def __init__(self, path: Path):
        self.path = Path(path)
        with writing(self.path):
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            self.size = os.fstat(self.fd).st_size

    def write(self, text: str) -> None:
        encoded = text.encode()
        data = memoryview(encoded)
        with writing(self.path):
            try:
                while data:
                    data = data[os.write(self.fd, data):]
            except OSError:
                os.ftruncate(self.fd, self.size)  # frees space: it works on a full disk too
                raise
        self.size += len(encoded)

    def close(self) -> None:
        with writing(self.path):
            os.close(self.fd)
