"""The command line's own checks: a usage mistake (for every command) and a bad option value are one
`error: ...` line and exit code 2, as a library error is (batchlab.cli.user_errors); option values are
parsed here and bounded."""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path

import typer
from typer.core import TyperGroup

from batchlab.errors import VALUE_CHARS, short
from batchlab.fields import COUNT_MAX
from batchlab.memory import parse_size

try:  # typer 0.2x carries its own copy of click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # older typer: click itself (before click 8.2, no_args_is_help raised no error)
    from click.exceptions import ClickException
    NoArgsIsHelpError = ()


class Commands(TyperGroup):
    """The command group, the one place command-line mistakes are handled: a bad option value, a missing
    argument, an unknown option or command, for every command, is one `error: ...` line and exit code 2 like
    a config's error, not Typer's usage box."""

    def make_context(self, *args, **kwargs):
        with usage_errors():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):  # parses the command's own options (its make_context), then runs it
        with usage_errors():
            return super().invoke(ctx)


@contextmanager
def usage_errors():
    try:
        yield
    except NoArgsIsHelpError:  # `batchlab` alone: the help, as asked
        raise
    except ClickException as e:
        where = f" (see {e.ctx.command_path} --help)" if getattr(e, "ctx", None) else ""
        raise fail(e.format_message() + where, e.exit_code) from None


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {short(message, 2000)}", err=True)  # one line, whatever the message holds
    return typer.Exit(code)


def parse_bytes(text: str | None) -> int | None:
    """'512MiB', '2GiB', '1.5GB' or plain bytes; None stays None."""
    if text is None:
        return None
    try:
        return parse_size(text, COUNT_MAX)  # torch and the OS hold sizes in 64-bit integers
    except ValueError as e:
        raise fail(f"--memory-limit {short(repr(text), VALUE_CHARS)}: {e}") from None


def directory(name: str, text: str | None) -> Path | None:
    """A directory option as a Path; an empty one is a mistake, not the working directory (Path('') is '.')."""
    if text is None:
        return None
    if not text.strip():
        raise fail(f"{name} {text!r}: expected a directory (use {name} . for the working directory)")
    return Path(text)


def finite_target(target: float | None) -> None:
    if target is not None and not math.isfinite(target):
        raise fail(f"--target {target}: expected a finite number, e.g. 0.98")


def parse_seconds(text: str | None) -> float | None:
    """'5m', '90s', '1.5h' or plain seconds; None stays None. The units are lower case only: '5M' could as well
    mean five million (examples, steps) as five minutes, so it is refused rather than guessed."""
    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "": 1}
    number = text.strip().rstrip("smh")
    try:
        seconds = float(number) * units[text.strip()[len(number):]]
    except (ValueError, KeyError):
        seconds = math.nan
    if seconds == 0:
        raise fail(f"--budget {text!r}: nothing could run in it; give more than 0, e.g. 5m")
    if not (seconds > 0 and math.isfinite(seconds)):
        raise fail(f"--budget {text!r}: expected a duration such as 5m, 90s or 1.5h (seconds, minutes, hours; "
                   "lower case)")
    return seconds
