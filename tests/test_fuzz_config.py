"""Config fuzzing: any YAML text, and any mutation of a shipped config, is a valid config or one line and exit
code 2 from `batchlab sweep --dry-run`: never a traceback, never a hang (tests/config_fuzz.py; the profile,
bounded and derandomised in CI, is in conftest.py). `python tests/config_fuzz.py` prints the figures."""

import time

import config_fuzz
import pytest
from config_fuzz import SHIPPED, mutated_configs, outcome, yaml_texts
from hypothesis import given

import batchlab.config


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@given(text=yaml_texts())
def test_any_yaml_text_is_a_valid_config_or_one_line(workdir, text):
    result, detail = outcome(text, workdir)
    assert result in ("valid", "one-line exit"), f"{result}: {detail}\n--- config ---\n{text[:2000]}"


@given(text=mutated_configs())
def test_any_mutation_of_a_shipped_config_is_a_valid_config_or_one_line(workdir, text):
    result, detail = outcome(text, workdir)
    assert result in ("valid", "one-line exit"), f"{result}: {detail}\n--- config ---\n{text[:2000]}"


def test_the_judge_tells_the_outcomes_apart(workdir, monkeypatch):
    """The fuzzer's judge itself: the shipped configs are valid, a mistake is one line, and a crash or a hang
    inside the command is caught as such."""
    assert len(SHIPPED) == 9  # configs/*.yaml (charlm and the two schedule configs among them) and the examples
    for path in SHIPPED:
        assert outcome(path.read_text(), workdir) == ("valid", "")
    result, line = outcome("name: x\nlr: -1\n", workdir)
    assert result == "one-line exit" and line.endswith("line 2: lr: Input should be greater than 0")
    assert outcome("name: x\ntarget: {value: []}\n", workdir) == ("valid", "")  # its warning is no error

    def crash(path):
        raise RecursionError("maximum recursion depth exceeded")
    monkeypatch.setattr(batchlab.config, "load_raw", crash)
    assert outcome("name: x\n", workdir) == ("traceback", "RecursionError: maximum recursion depth exceeded")
    monkeypatch.setattr(batchlab.config, "load_raw", lambda path: time.sleep(5))
    monkeypatch.setattr(config_fuzz, "HANG_SECONDS", 0.5)
    started = time.monotonic()
    assert outcome("name: x\n", workdir)[0] == "hang" and time.monotonic() - started < 4
