"""`batchlab report` on the records of a real tiny sweep: every figure traced back to summary.json."""

import json
import statistics

import pandas as pd
import pytest
from typer.testing import CliRunner

from batchlab.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    cfg = tmp / "exp.yaml"
    cfg.write_text(json.dumps({
        "name": "tiny", "dataset": {"name": "digits"}, "model": {"name": "mlp", "hidden": [16]}, "threads": 1,
        "budget": {"epochs": 2}, "eval": {"every": 0.25}, "target": {"value": [0.5, 0.85]},
        "sweep": {"batch_size": [16, 128, 1437], "lr": [0.1, 0.5], "seed": [0, 1]}}))
    result = runner.invoke(app, ["sweep", str(cfg), "--out", str(tmp), "--quiet"])
    assert result.exit_code == 0, result.output
    return tmp


def test_report_figures_match_the_records(tiny_runs):
    result = runner.invoke(app, ["report", str(tiny_runs / "tiny")])
    assert result.exit_code == 0, result.output
    out = tiny_runs / "tiny" / "report"
    assert f"report: {out / 'report.html'}" in result.output
    table = pd.read_csv(out / "time_to_accuracy.csv")
    summaries = [json.loads(p.read_text()) for p in (tiny_runs / "tiny" / "trials").glob("*/summary.json")]
    assert len(summaries) == 12
    for target in (0.5, 0.85):
        key = f"{target:g}"
        for bs in (16, 128, 1437):
            row = table[(table["target"] == target) & (table["batch_size"] == bs)].iloc[0]
            by_lr = {}
            for s in summaries:
                if s["batch_size"] == bs:
                    hit = s["targets"][key]
                    by_lr.setdefault(s["lr"], []).append(hit)
            def median(hits, what):
                return statistics.median([h[what] if h else float("inf") for h in hits])

            # The best lr of a batch size: fewest seeds missing, then fewest median steps, examples, seconds.
            rank = {lr: (sum(h is None for h in hits), *(median(hits, what) for what in ("steps", "examples",
                                                                                        "seconds")))
                    for lr, hits in by_lr.items()}
            best = min(rank, key=lambda lr: (rank[lr], lr))
            if rank[best][1] == float("inf"):
                assert row["status"] in ("not reached", "partly reached") and pd.isna(row["seconds"])
                continue
            hits = by_lr[best]
            assert row["status"] == ("reached" if all(hits) else "partly reached")
            assert row["best_lr"] == best
            assert row["seconds"] == statistics.median([h["seconds"] if h else float("inf") for h in hits])
            assert row["seeds_reached"] == f"{sum(h is not None for h in hits)}/{len(hits)}"
            if all(hits):
                assert row["steps"] == statistics.median([h["steps"] for h in hits])
                assert row["examples"] == statistics.median([h["examples"] for h in hits])
        if (table[table["target"] == target]["status"] == "reached").any():
            assert table[(table["target"] == target) & table["fastest"]]["batch_size"].item() == \
                _fastest(table, target, tiny_runs / "tiny")["batch_size"]
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "batchlab sweep" in html


def test_report_errors_are_one_line(tmp_path, tiny_runs):
    result = runner.invoke(app, ["report", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and result.output.startswith("error: ") and "no such directory" in result.output
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["report", str(tmp_path / "empty")])
    assert result.exit_code == 2 and result.output.startswith("error: ")
    result = runner.invoke(app, ["report", str(tiny_runs), "--format", "pdf"])
    assert result.exit_code == 2 and "choose from" in result.output


def test_report_warns_about_a_damaged_record_and_goes_on(tiny_runs, tmp_path):
    import shutil

    copy = tmp_path / "tiny"
    shutil.copytree(tiny_runs / "tiny", copy)
    victim = sorted((copy / "trials").iterdir())[0]
    (victim / "summary.json").write_text("{not json")
    result = runner.invoke(app, ["report", str(copy), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stderr and str(victim / "summary.json") in result.stderr
    assert "warning:" not in result.stdout  # warnings go to stderr only
    assert (tmp_path / "out" / "time_to_accuracy.csv").exists()


def _fastest(table: pd.DataFrame, target: float, sweep) -> pd.Series:
    """The batch size with the least predicted seconds to `target`: its median steps x its seconds per step in the
    sweep's step_times.json, the median over the rounds (read on a thread's CPU clock: threads 1 here) (ties: fewer
    steps, smaller batch)."""
    recorded = json.loads((sweep / "step_times.json").read_text())
    timings = recorded["timings"]
    assert recorded["clock"] == "thread CPU"  # one torch thread, on the CPU, no DataLoader workers
    per_step = {bs: statistics.median(t["seconds"] / t["steps"] for t in timings if t["batch_size"] == bs)
                for bs in {t["batch_size"] for t in timings}}
    reached = table[(table["target"] == target) & (table["status"] == "reached")]
    reached = reached.assign(predicted=[row.steps * per_step[row.batch_size] for row in reached.itertuples()])
    assert list(reached["predicted_seconds"]) == pytest.approx(list(reached["predicted"]))
    return reached.sort_values(["predicted", "steps", "batch_size"]).iloc[0]


def test_report_prints_the_answer_first(tiny_runs, tmp_path):
    result = runner.invoke(app, ["report", str(tiny_runs / "tiny"), "--out", str(tmp_path / "out"), "--format", "csv"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "out" / "time_to_accuracy.csv")
    target = 0.85 if (table[table["target"] == 0.85]["status"] == "reached").any() else 0.5
    best = _fastest(table, target, tiny_runs / "tiny")
    lines = result.stdout.splitlines()
    sentence = next(i for i, line in enumerate(lines) if line.startswith("Use batch size"))
    header = next(i for i, line in enumerate(lines) if "batch size" in line and "best lr" in line)
    assert sentence < header  # the answer, then the table
    assert lines[sentence].startswith(f"Use batch size {best['batch_size']}")
    assert f"test_accuracy ≥ {target:g}" in lines[sentence] and "this machine" in lines[sentence]
    for column in ("predicted s", "steps", "s/step", "measured s", "examples", "reached", "memory",
                   "eval share"):
        assert column in lines[header]
    assert "final test loss" not in result.stdout  # the rest stays in the CSVs and the HTML


def test_report_json_is_the_only_output(tiny_runs, tmp_path):
    result = runner.invoke(app, ["report", str(tiny_runs), "--json", "--out", str(tmp_path / "out"), "--format", "csv"])
    assert result.exit_code == 0, result.output
    [sweep] = json.loads(result.stdout)  # nothing else on stdout
    assert {"name", "target", "recommendation", "warnings"} <= set(sweep)
    assert sweep["name"] == "tiny" and sweep["warnings"] == []
    table = pd.read_csv(tmp_path / "out" / "tiny" / "time_to_accuracy.csv")
    best = _fastest(table, sweep["target"], tiny_runs / "tiny")
    answer = sweep["recommendation"]
    assert (answer["batch_size"], answer["lr"], answer["seconds"], answer["predicted_seconds"]) == \
        (best["batch_size"], best["best_lr"], pytest.approx(best["seconds"]), pytest.approx(best["predicted"]))
    assert answer["target"] == sweep["target"] and answer["sentence"].startswith("Use batch size")
    smallest = table[(table["target"] == sweep["target"]) & (table["status"] == "reached")]["batch_size"].min()
    assert answer["baseline_batch_size"] == smallest


def test_a_report_target_no_accuracy_can_reach_is_one_line_and_exit_2(tiny_runs, tmp_path):
    """--target 5 on accuracy is refused, as the config's and suggest's targets are; a reachable target that was
    not recorded is a warning, and the report shows the recorded ones."""
    result = runner.invoke(app, ["report", str(tiny_runs / "tiny"), "--out", str(tmp_path / "a"), "--target", "5"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: target 5: an accuracy target lies above 0 and at most 1 (got 5)"
    assert not (tmp_path / "a").exists()
    result = runner.invoke(app, ["report", str(tiny_runs / "tiny"), "--out", str(tmp_path / "b"), "--target", "0.99"])
    assert result.exit_code == 0, result.output
    assert "warning: target 0.99 is not among the recorded targets" in result.output
