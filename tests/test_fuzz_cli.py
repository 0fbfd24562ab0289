"""Command-line fuzzing: every subcommand's options with random values are a run or one line and exit code 2:
never a traceback, a usage box or a hang (tests/cli_fuzz.py; bounded, and derandomised in CI, by the profile in
conftest.py). `python tests/cli_fuzz.py` prints the figures."""

import time

import cli_fuzz
import pytest
from cli_fuzz import command_tree, invocations, outcome
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.core import TyperGroup

import batchlab.api
import batchlab.cli


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("cli-fuzz")


def test_every_command_is_fuzzed():
    assert sorted(command_tree()) == ["cbs", "export", "max-batch", "noise", "report", "suggest", "sweep"]


@settings(max_examples=40)
@given(data=st.data())
def test_any_command_line_is_a_run_or_one_line(workdir, data):
    args = data.draw(invocations(workdir))
    result, detail = outcome(args, workdir)
    assert result in ("ran", "one-line exit"), f"{result}: batchlab {' '.join(args)}\n{detail}"


def test_the_judge_tells_the_outcomes_apart(workdir, monkeypatch):
    """The fuzzer's judge itself: a run, a mistake as one line, the usage box, a crash and a hang."""
    config = workdir / "fz.yaml"
    config.write_text("name: x\n")
    assert outcome(["sweep", str(config), "--dry-run", "--out", str(workdir / "runs")], workdir)[0] == "ran"
    assert outcome(["sweep", str(config), "--threads", "0"], workdir) == (
        "one-line exit", "error: Invalid value for '--threads': Input should be greater than or equal to 1 "
        "(see root sweep --help)")
    with monkeypatch.context() as m:  # without the one place usage errors are handled: Typer's usage box
        m.setattr(batchlab.cli.Commands, "invoke", TyperGroup.invoke)
        assert outcome(["sweep", str(config), "--threads", "0"], workdir)[0] == "multi-line error"

    def crash(*args, **kwargs):
        raise RecursionError("maximum recursion depth exceeded")
    monkeypatch.setattr(batchlab.api, "find_max_batch", crash)
    assert outcome(["max-batch", str(config)], workdir) == ("traceback",
                                                           "RecursionError: maximum recursion depth exceeded")
    monkeypatch.setattr(batchlab.api, "find_max_batch", lambda *a, **k: time.sleep(5))
    monkeypatch.setattr(cli_fuzz, "HANG_SECONDS", 0.5)
    started = time.monotonic()
    assert outcome(["max-batch", str(config)], workdir)[0] == "hang" and time.monotonic() - started < 4
