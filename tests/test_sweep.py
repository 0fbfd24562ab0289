"""A tiny real sweep through the CLI: records, resume, interruption, divergence, failure, determinism, lock."""

import csv
import json
import math
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import batchlab.train
from batchlab.cli import app
from batchlab.records import METRIC_COLUMNS, SweepDir

runner = CliRunner()
DIGITS_TRAIN = 1437  # sklearn digits, 80% stratified split


def sweep(config, out, *args):
    return runner.invoke(app, ["sweep", str(config), "--out", str(out), "--quiet", *args])


def trials(out, name="tiny"):
    return sorted((out / name / "trials").iterdir())


def summary(d):
    return json.loads((d / "summary.json").read_text())


def test_tiny_sweep_writes_the_records_contract(write_config, tmp_path):
    out = tmp_path / "runs"
    result = sweep(write_config(), out)
    assert result.exit_code == 0, result.output
    assert "4 completed" in result.output
    assert yaml.safe_load((out / "tiny" / "sweep.yaml").read_text())["sweep"]["lr"] == [0.1, 0.5]
    dirs = trials(out)
    assert [d.name.split("-s0-")[0] for d in dirs] == ["bs0064-lr0.1", "bs0064-lr0.5", "bs0512-lr0.1", "bs0512-lr0.5"]
    for d in dirs:
        cfg = json.loads((d / "config.json").read_text())
        s = summary(d)
        bs = cfg["batch_size"]
        assert cfg["axes"] == {"batch_size": bs, "lr": cfg["lr"]} and cfg["threads"] == 1
        assert s["status"] == "completed" and s["error"] is None
        assert s["steps_per_epoch"] == math.ceil(DIGITS_TRAIN / bs) == s["steps"]
        assert s["examples"] == DIGITS_TRAIN and s["epochs"] == 1.0 and s["train_size"] == DIGITS_TRAIN
        assert s["tokens"] == 0 and s["context"] is None  # tokens are a sequence task's
        assert s["threads"] == 1 and s["torch_version"] and s["device"] == "cpu"
        assert s["train_seconds"] > 0 and s["eval_seconds"] > 0
        assert s["samples_per_second"] == pytest.approx(DIGITS_TRAIN / s["train_seconds"])
        assert s["peak_memory_bytes"] > 0
        assert s["command"].startswith("batchlab sweep ") and "--out" in s["command"]
        with open(d / "metrics.csv") as f:
            assert next(csv.reader(f)) == METRIC_COLUMNS
        m = pd.read_csv(d / "metrics.csv")
        assert m["step"].iloc[0] == 0 and pd.isna(m["train_loss"].iloc[0]) and not pd.isna(m["test_accuracy"].iloc[0])
        assert m["step"].iloc[-1] == s["steps"] and m["train_seconds"].is_monotonic_increasing
        assert (m["epoch"] == m["step"] / s["steps_per_epoch"]).all()
        assert s["final"]["test_accuracy"] == m["test_accuracy"].dropna().iloc[-1]
        # evaluations every 0.5 epoch, plus the start and the last step
        expected = {0, max(1, round(0.5 * s["steps_per_epoch"])), s["steps"]}
        expected |= set(range(0, s["steps"] + 1, max(1, round(0.5 * s["steps_per_epoch"]))))
        assert set(m.dropna(subset=["test_accuracy"])["step"]) == expected
        # each target: the first evaluation that met it, found here independently
        for value in (0.3, 0.999):
            hit = m[m["test_accuracy"] >= value]
            rec = s["targets"][f"{value:g}"]
            if hit.empty:
                assert rec is None
            else:
                first = hit.iloc[0]
                assert rec == {"seconds": first["train_seconds"], "steps": first["step"],
                               "epochs": first["epoch"], "examples": first["examples"]}
        assert s["targets"]["0.999"] is None


def test_determinism_same_seed_same_threads_identical_metrics(write_config, tmp_path):
    cfg = write_config({"sweep": {"batch_size": [32], "lr": [0.3]}})
    for out in ("a", "b"):
        assert sweep(cfg, tmp_path / out).exit_code == 0
    a, b = (pd.read_csv(trials(tmp_path / o)[0] / "metrics.csv").drop(columns="train_seconds") for o in "ab")
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert a["train_loss"].notna().sum() > 10


def test_resume_skips_finished_trials_and_reruns_the_interrupted_one(write_config, tmp_path, monkeypatch):
    cfg, out = write_config(), tmp_path / "runs"
    real_tally, calls = batchlab.train.tally, []

    def tally_then_interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 9:  # inside the second trial (6 evaluations per trial here: 3 test, 3 train)
            raise KeyboardInterrupt
        return real_tally(*args, **kwargs)

    monkeypatch.setattr(batchlab.train, "tally", tally_then_interrupt)
    result = sweep(cfg, out)
    assert result.exit_code == 130
    assert "interrupted" in result.output and "run the same command again" in result.output
    first, second = trials(out)
    assert summary(first)["status"] == "completed"
    assert summary(second)["status"] == "interrupted"
    assert len(pd.read_csv(second / "metrics.csv")) >= 1  # what it had is kept
    report = runner.invoke(app, ["report", str(out / "tiny"), "--format", "csv"])  # the answer says what it lacks
    assert ("warning: 1 trial did not finish (interrupted or killed) and is left out of these figures, the answer "
            "included: run the sweep again to finish it\n") in report.output
    finished_at = summary(first)["finished_at"]
    first_metrics = (first / "metrics.csv").read_bytes()

    monkeypatch.setattr(batchlab.train, "tally", real_tally)
    result = sweep(cfg, out)
    assert result.exit_code == 0, result.output
    assert "3 completed (1 already recorded)" in result.output
    assert summary(first)["finished_at"] == finished_at and (first / "metrics.csv").read_bytes() == first_metrics
    assert [summary(d)["status"] for d in trials(out)] == ["completed"] * 4

    # extending an axis runs only the new trials
    result = sweep(cfg, out, "--set", "sweep.lr=[0.1, 0.5, 0.05]")
    assert "2 completed (4 already recorded)" in result.output
    assert len(trials(out)) == 6
    # nothing left to do
    assert "nothing to run (4 already recorded)" in sweep(cfg, out).output


def test_changed_fixed_field_is_refused_unless_restart(write_config, tmp_path):
    cfg, out = write_config({"sweep": {"batch_size": [256], "lr": [0.1]}}), tmp_path / "runs"
    assert sweep(cfg, out).exit_code == 0
    result = sweep(cfg, out, "--set", "model.hidden=[32]")
    assert result.exit_code == 2
    assert "model.hidden changed" in result.output and "--restart" in result.output
    assert len(trials(out)) == 1
    result = sweep(cfg, out, "--set", "model.hidden=[32]", "--restart")
    assert result.exit_code == 0, result.output
    assert len(trials(out)) == 1 and json.loads((trials(out)[0] / "config.json").read_text())["model"]["hidden"] == [32]


def test_divergence_and_failure_are_recorded_and_the_sweep_goes_on(write_config, tmp_path):
    linear = {"dataset": {"name": "linear", "n": 1000}, "model": {"name": "linear"},
              "target": {"metric": "test_loss", "value": [0.5]}}
    cfg = write_config({**linear, "budget": {"epochs": 5}, "sweep": {"lr": [1e10, 50.0, 0.1], "batch_size": [10]}})
    out = tmp_path / "runs"
    result = sweep(cfg, out)
    assert result.exit_code == 0, result.output
    by_lr = {summary(d)["lr"]: summary(d) for d in trials(out)}
    nan, exploded = by_lr[1e10], by_lr[50.0]
    assert nan["status"] == "diverged" and nan["steps"] < 5 * nan["steps_per_epoch"]
    assert nan["final"]["train_loss"] is None  # NaN is not JSON; the status and error say why
    assert nan["error"] in ("the training loss became nan", "the training loss became inf")
    assert exploded["status"] == "diverged" and exploded["steps"] < 5 * exploded["steps_per_epoch"]
    assert exploded["final"]["train_loss"] > 100 * exploded["initial"]["test_loss"]  # finite, but 100x the start
    assert by_lr[0.1]["status"] == "completed"

    # user code that raises during training fails its trial only; the traceback is kept in error.txt
    (tmp_path / "flaky.py").write_text(
        "import torch\n"
        "class BreaksLater(torch.nn.Module):\n"
        "    def __init__(self, input_shape, num_classes, after):\n"
        "        super().__init__()\n"
        "        self.layer, self.after, self.calls = torch.nn.Linear(input_shape[0], 1), after, 0\n"
        "    def forward(self, x):\n"
        "        self.calls += self.training\n"
        "        if self.calls > self.after:\n"
        "            raise RuntimeError(f'broken after {self.after} training steps')\n"
        "        return self.layer(x)\n")
    cfg = write_config({**linear, "sweep": {"model": [{"name": "flaky:BreaksLater", "args": {"after": 5}},
                                                      {"name": "linear"}], "batch_size": [16]}})
    result = sweep(cfg, tmp_path / "runs2")
    assert result.exit_code == 0, result.output
    by_model = {json.loads((d / "config.json").read_text())["model"]["name"]: (d, summary(d))
                for d in trials(tmp_path / "runs2")}
    broken_dir, broken = by_model["flaky:BreaksLater"]
    assert broken["status"] == "failed" and broken["steps"] == 5
    assert broken["error"] == "RuntimeError: broken after 5 training steps"
    assert 'raise RuntimeError' in (broken_dir / "error.txt").read_text()
    assert by_model["linear"][1]["status"] == "completed"
    assert by_model["linear"][1]["targets"]["0.5"] is not None  # y = 3x + 2: MSE falls below 0.5 within an epoch

    # every trial that ran failed: the sweep still records each, and exits 1 saying so (it exited 0)
    cfg = write_config({**linear, "model": {"name": "flaky:BreaksLater", "args": {"after": 2}},
                        "sweep": {"batch_size": [16, 32]}})
    result = sweep(cfg, tmp_path / "runs3")
    assert result.exit_code == 1, result.output
    assert result.stdout.splitlines()[-1].startswith("2 failed; ")
    [line] = result.stderr.splitlines()
    assert line.startswith("error: every trial that ran failed (2), e.g. bs0016-") and line.endswith(
        ": RuntimeError: broken after 2 training steps (trials/*/error.txt)"), line
    assert {summary(d)["status"] for d in trials(tmp_path / "runs3")} == {"failed"}


def test_a_summary_from_an_earlier_run_of_the_trial_is_not_trusted(write_config, tmp_path):
    """A worker that outlived a killed sweep writes its summary into the trial directory the rerun made:
    the rerun's run token does not match, so the trial counts as incomplete and is trained again."""
    cfg, out = write_config({"sweep": {"batch_size": [64], "lr": [0.1]}}), tmp_path / "runs"
    assert sweep(cfg, out).exit_code == 0
    [trial] = trials(out)
    stale = (trial / "summary.json").read_text()
    SweepDir(out, "tiny").start_trial(trial.name, json.loads((trial / "config.json").read_text()))  # the rerun
    (trial / "summary.json").write_text(stale)  # ... and the orphan's late summary
    assert SweepDir(out, "tiny").status(trial.name) == "incomplete"
    result = sweep(cfg, out)
    assert "1 completed;" in result.output and "already recorded" not in result.output
    assert summary(trial)["run_token"] == (trial / "run_token").read_text().strip() != json.loads(stale)["run_token"]


def test_a_second_sweep_on_the_same_records_is_refused(write_config, tmp_path):
    out = tmp_path / "runs"
    with SweepDir(out, "tiny").lock():
        result = sweep(write_config(), out)
    assert result.exit_code == 2
    assert "in use by another sweep" in result.output
    assert not (out / "tiny" / "trials").exists()


def test_budget_in_steps_and_examples_and_stop_at_target(write_config, tmp_path):
    cfg = write_config({"budget": {"steps": 7}, "sweep": {"batch_size": [100]}, "lr": 0.1})
    sweep(cfg, tmp_path / "a")
    assert summary(trials(tmp_path / "a")[0])["steps"] == 7
    cfg = write_config({"budget": {"examples": 1000}, "sweep": {"batch_size": [100]}})
    sweep(cfg, tmp_path / "b")
    assert summary(trials(tmp_path / "b")[0])["examples"] == 1000
    cfg = write_config({"budget": {"epochs": 20, "stop_at_target": True}, "target": {"value": 0.5},
                        "sweep": {"batch_size": [32], "lr": [0.5]}})
    sweep(cfg, tmp_path / "c")
    s = summary(trials(tmp_path / "c")[0])
    assert s["targets"]["0.5"] is not None and s["steps"] == s["targets"]["0.5"]["steps"] < 20 * 45


def test_sigterm_records_the_running_trial_as_interrupted(write_config, tmp_path):
    cfg = write_config({"budget": {"epochs": 200}, "sweep": {"batch_size": [8], "lr": [0.1]}})
    out = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "batchlab", "sweep", str(cfg), "--out", str(out), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and sum(len(f.read_text().splitlines()) for f in out.glob("tiny/trials/*/metrics.csv")) < 3:
        time.sleep(0.1)  # wait until training has logged a row
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert "interrupted" in output and "Traceback" not in output
    s = summary(trials(out)[0])
    assert s["status"] == "interrupted" and s["steps"] > 0


def test_noise_scale_is_recorded_without_disturbing_training(write_config, tmp_path):
    base = {"budget": {"epochs": 2}, "sweep": {"batch_size": [64], "lr": [0.3]}}
    sweep(write_config(base), tmp_path / "off")
    sweep(write_config({**base, "noise": {"every": 0.5, "batch_size": 512, "small_batch_size": 32}}), tmp_path / "on")
    off, on = (pd.read_csv(trials(tmp_path / o)[0] / "metrics.csv") for o in ("off", "on"))
    measured = on.dropna(subset=["noise_b_simple"])
    spe = math.ceil(DIGITS_TRAIN / 64)
    assert list(measured["step"]) == list(range(0, 2 * spe + 1, round(0.5 * spe)))
    assert (measured["noise_b_simple"] == measured["noise_trace"] / measured["noise_g2"]).all()
    assert (measured["noise_trace"] > 0).all() and off["noise_b_simple"].isna().all()
    s = summary(trials(tmp_path / "on")[0])
    assert s["noise"]["b_small"] == 32 and s["noise"]["b_big"] == 512 and s["noise"]["measurements"] == len(measured)
    assert s["noise"]["b_simple"] == pytest.approx(measured["noise_b_simple"].iloc[-1])
    assert s["noise_seconds"] > 0
    # its own generator and no parameter change: the training run is the same with or without it
    same = on[off.columns].drop(columns=["train_seconds", "noise_g2", "noise_trace", "noise_b_simple"])
    rows = same["step"].isin(off["step"])
    pd.testing.assert_frame_equal(same[rows].reset_index(drop=True),
                                  off.drop(columns=["train_seconds", "noise_g2", "noise_trace", "noise_b_simple"]),
                                  check_exact=True)


def test_gradient_accumulation_matches_the_full_batch(write_config, tmp_path):
    base = {"budget": {"epochs": 2}, "sweep": {"batch_size": [300], "lr": [0.5]}}
    sweep(write_config(base), tmp_path / "full")
    sweep(write_config({**base, "micro_batch_size": 64}), tmp_path / "micro")
    full, micro = (pd.read_csv(trials(tmp_path / o)[0] / "metrics.csv") for o in ("full", "micro"))
    assert list(full["step"]) == list(micro["step"])  # optimizer steps, not micro-batches
    for column in ("train_loss", "test_loss", "test_accuracy"):
        a, b = full[column].dropna().to_numpy(), micro[column].dropna().to_numpy()
        assert a == pytest.approx(b, rel=1e-4, abs=1e-6)  # the same gradients, summed in another order
    s = summary(trials(tmp_path / "micro")[0])
    assert (s["batch_size"], s["micro_batch_size"], s["steps_per_epoch"]) == (300, 64, 5)
    assert summary(trials(tmp_path / "full")[0])["micro_batch_size"] == 300


def test_workers_give_records_identical_to_a_sequential_run(write_config, tmp_path):
    cfg = write_config({"sweep": {"batch_size": [16, 64, 512], "lr": [0.1, 0.5]}})  # threads: 1 in every trial
    assert sweep(cfg, tmp_path / "seq").exit_code == 0
    result = sweep(cfg, tmp_path / "par", "--workers", "2")
    assert result.exit_code == 0, result.output
    assert "6 completed" in result.output
    seq, par = trials(tmp_path / "seq"), trials(tmp_path / "par")
    assert [d.name for d in seq] == [d.name for d in par]
    for a, b in zip(seq, par):
        assert summary(b)["threads"] == summary(a)["threads"] == 1
        ma, mb = (pd.read_csv(d / "metrics.csv").drop(columns="train_seconds") for d in (a, b))
        pd.testing.assert_frame_equal(ma, mb, check_exact=True)
        assert summary(a)["final"] == summary(b)["final"] and summary(a)["steps"] == summary(b)["steps"]


def test_gpus_option_is_checked(write_config, tmp_path):
    result = sweep(write_config(), tmp_path, "--gpus", "0,x")
    assert result.exit_code == 2 and "expected comma-separated device ids" in result.output
    import torch

    if torch.cuda.device_count() < 2:  # the check itself, on a machine with fewer GPUs than asked for
        result = sweep(write_config(), tmp_path, "--gpus", "0,1")
        assert result.exit_code == 2 and f"{torch.cuda.device_count()} CUDA device(s) available" in result.output


def test_lr_column_follows_warmup_then_cosine(write_config, tmp_path):
    cfg = write_config({"budget": {"epochs": 3}, "schedule": {"name": "cosine", "warmup_epochs": 1},
                        "eval": {"every": 0.5, "log_every": 0.05}, "sweep": {"batch_size": [64], "lr": [0.4]}})
    sweep(cfg, tmp_path)
    m = pd.read_csv(trials(tmp_path)[0] / "metrics.csv")
    spe, total = 23, 69  # ceil(1437 / 64) steps per epoch, 3 epochs
    for step, lr in zip(m["step"], m["lr"]):  # the lr the next optimizer step uses
        if step < spe:
            expected = 0.4 * (step + 1) / spe
        else:
            expected = 0.4 * 0.5 * (1 + math.cos(math.pi * (step - spe) / (total - spe)))
        assert lr == pytest.approx(expected, abs=1e-12), step


def test_compile_keeps_compile_time_off_the_training_clock(write_config, tmp_path):
    base = {"budget": {"epochs": 1}, "sweep": {"batch_size": [500], "lr": [0.3]}}  # 1437 = 2 x 500 + 437
    sweep(write_config(base), tmp_path / "eager")
    result = sweep(write_config({**base, "compile": True}), tmp_path / "compiled")
    assert result.exit_code == 0, result.output
    eager, comp = summary(trials(tmp_path / "eager")[0]), summary(trials(tmp_path / "compiled")[0])
    assert comp["status"] == "completed" and eager["compile_seconds"] is None
    assert comp["compile_seconds"] > 1.0  # inductor compiles forward and backward, for both batch shapes
    assert comp["train_seconds"] < comp["compile_seconds"]  # the clock did not absorb it
    a, b = (pd.read_csv(trials(tmp_path / o)[0] / "metrics.csv") for o in ("eager", "compiled"))
    assert b["test_accuracy"].dropna().to_numpy() == pytest.approx(a["test_accuracy"].dropna().to_numpy(), abs=0.02)


def test_half_precision_on_cpu_is_recorded_as_the_fp32_it_computes_in(write_config, tmp_path):
    """bf16 and fp16 autocast on CUDA only: on CPU the step is fp32, and the records said fp16 all the same."""
    cfg = write_config({"device": "cpu",  # (on CUDA they autocast, and differ)
                        "sweep": {"batch_size": [64], "lr": [0.1], "precision": ["fp32", "fp16", "bf16"]}})
    assert sweep(cfg, tmp_path / "runs").exit_code == 0
    summaries = [summary(d) for d in trials(tmp_path / "runs")]
    assert [s["axes"]["precision"] for s in summaries] == ["bf16", "fp16", "fp32"]  # the axis, as asked for
    assert {s["precision"] for s in summaries} == {"fp32"}  # what each step computed in
    assert len({s["final"]["test_loss"] for s in summaries}) == 1  # the same computation, to the bit
