"""`batchlab max-batch`, `max` in a batch-size axis and `micro_batch_size: auto`, through the CLI."""

import json
import re

import pytest
from typer.testing import CliRunner

from batchlab.cli import app

runner = CliRunner()
WIDE = {"model": {"name": "mlp", "hidden": [16384]}}  # memory grows with the batch: 3 x 16,384 floats an example


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("mb") / "wide.yaml"
    path.write_text(json.dumps({"name": "wide", "dataset": {"name": "digits"}, "threads": 1, **WIDE}))
    result = runner.invoke(app, ["max-batch", str(path), "--memory-limit", "32MiB"])
    assert result.exit_code == 0, result.output
    rows = re.findall(r"^\s+(\d+)\s+(yes|no)\s", result.output, flags=re.M)
    answer = int(re.search(r"fits in a limit of 32.0 MiB on cpu: (\d+)", result.output).group(1))
    return [(int(b), fits == "yes") for b, fits in rows], answer


def test_max_batch_table(table):
    rows, answer = table
    fits = {b: ok for b, ok in rows}
    assert fits[answer] and not fits[answer + 1]  # bisected down to a gap of one
    assert [b for b, _ in rows[:4]] == [1, 2, 4, 8]  # doubling first
    assert max(b for b, ok in rows if ok) == answer < min(b for b, ok in rows if not ok) + 1
    assert 100 < answer < 400  # 32 MiB / (3 * 16384 * 4 B per example) = 170, less what the weights' step takes


def test_bad_memory_limit(write_config):
    result = runner.invoke(app, ["max-batch", str(write_config()), "--memory-limit", "lots"])
    assert result.exit_code == 2 and "expected a size such as 512MiB" in result.output


def test_max_in_the_batch_size_axis_and_auto_micro_batch(write_config, table, tmp_path):
    rows, answer = table
    cfg = write_config({**WIDE, "budget": {"steps": 2}, "sweep": {"batch_size": [16, "max"]}})
    result = runner.invoke(app, ["sweep", str(cfg), "--memory-limit", "32MiB", "--dry-run"])
    assert result.exit_code == 0, result.output
    found = int(re.search(r"batch_size max = (\d+)", result.output).group(1))
    assert abs(found - answer) <= 0.1 * answer  # the same search; the edge moves between processes (167 or 176)
    assert f"bs{found:04d}-" in result.output

    cfg = write_config({**WIDE, "budget": {"steps": 2}, "micro_batch_size": "auto", "sweep": {"batch_size": [1437]}})
    result = runner.invoke(app, ["sweep", str(cfg), "--memory-limit", "32MiB", "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    micro = int(re.search(r"micro_batch_size auto = (\d+)", result.output).group(1))
    summary = json.loads(next((tmp_path / "tiny" / "trials").glob("*/summary.json")).read_text())
    assert summary["micro_batch_size"] == micro < 1437 and summary["batch_size"] == 1437
    assert summary["steps"] == 2 and summary["examples"] == 2 * 1437  # optimizer steps, full batches


@pytest.mark.parametrize("n, text", [(None, "?"), (0, "0.0 KiB"), (1536, "1.5 KiB"), (2**20 / 10 - 1, "102.4 KiB"),
                                     (2**20 / 10, "0.1 MiB"), (3 * 2**20, "3.0 MiB"), (2**40, "1,048,576.0 MiB")])
def test_memory_sizes_read_at_every_scale(n, text):
    """A peak of a few KiB printed as '0.0 MiB': sizes under a tenth of a MiB are in KiB."""
    from batchlab.memory import mib
    from batchlab.reporting.display import memory
    assert mib(n) == text
    assert memory(float("nan") if n is None else n) == ("–" if n is None else text)
