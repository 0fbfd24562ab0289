"""Evaluation and memory that mean what they say: eval.subset, the evaluation's share of the time, the default
evaluation batch, peak memory of the training alone, a raced trial's last figure, suggest --restart."""

import json

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import batchlab.machine
import batchlab.train
from batchlab.cli import app
from batchlab.data import load_dataset
from batchlab.schema import DatasetConfig

runner = CliRunner()


def sweep(config, out, *args):
    result = runner.invoke(app, ["sweep", str(config), "--out", str(out), "--quiet", *args])
    assert result.exit_code == 0, result.output
    return sorted((out / "tiny" / "trials").iterdir())


def read(trial_dir):
    return json.loads((trial_dir / "summary.json").read_text()), pd.read_csv(trial_dir / "metrics.csv")


def test_eval_subset_reads_drawn_examples_and_the_whole_split_decides_targets(write_config, tmp_path, monkeypatch):
    """Periodic evaluations read the same 100 drawn test examples; step 0, the last step and every evaluation at
    which the subset comes near a target read all 360 (within 3 standard errors; once the whole split has been
    read beside the subset, the subset's figure corrected by their difference then, within 2 standard errors of
    a 100-of-360 subset's difference from the whole; always when the subset's figure reaches it), and those
    figures (the ones targets are judged on) equal a run without a subset at the same step: evaluating never
    changes the training."""
    calls = []  # (examples evaluated, their inputs, correct predictions), in order
    real = batchlab.train.tally

    def spy(model, split, *args):
        result = real(model, split, *args)
        calls.append((len(split), split.x.clone(), result.correct))
        return result

    monkeypatch.setattr(batchlab.train, "tally", spy)
    update = {"eval": {"every": 0.25, "train_subset": 0, "subset": 100}, "budget": {"epochs": 3},
              "target": {"metric": "test_accuracy", "value": [0.5, 0.9]},
              "sweep": {"batch_size": [64], "lr": [0.5]}}
    [with_subset] = sweep(write_config(update), tmp_path / "subset")
    subset_calls, calls[:] = list(calls), []
    [exact] = sweep(write_config({**update, "eval": {**update["eval"], "subset": None}}, name="exact.yaml"),
                    tmp_path / "exact")
    s, m = read(with_subset)
    exact_s, exact_m = read(exact)

    test = load_dataset(DatasetConfig(name="digits"), 0).eval
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))
    drawn, rest = order[:100].sort().values, order[100:].sort().values
    assert len(test) == 360
    rows = m.dropna(subset=["test_accuracy"]).reset_index(drop=True)
    exact_rows = exact_m.dropna(subset=["test_accuracy"]).set_index("step")["test_accuracy"]
    assert list(rows["step"]) == list(exact_rows.index)  # the same evaluation steps
    left, whole_steps, i, gap, corrected = [0.5, 0.9], [], 0, None, 0
    for step, accuracy in zip(rows["step"], rows["test_accuracy"]):
        n, x, correct = subset_calls[i]
        first = correct / n
        if step in (0, s["steps"]):
            assert n == 360
        else:
            assert n == 100 and torch.equal(x, test.x[drawn])  # the drawn examples, the same every time
            # near a target (binomial standard errors of 100 examples): the whole split decides
            if gap is None:
                near = any(first >= v - 3 * (v * (1 - v) / 100) ** 0.5 for v in left)
            else:
                corrected += 1
                margin = lambda v: 2 * (v * (1 - v) / 100 * (1 - 100 / 360)) ** 0.5  # noqa: E731
                near = any(first >= v or first + gap >= v - margin(v) for v in left)
            if near:  # the rest of the split is read, and with the subset's makes the whole split's figure
                on_subset = first
                i += 1
                n, x, rest_correct = subset_calls[i]
                assert n == 260 and torch.equal(x, test.x[rest])
                n, first = 360, (correct + rest_correct) / 360
                gap = first - on_subset
        i += 1
        assert accuracy == first
        if n == 360:
            whole_steps.append(step)
            assert accuracy == exact_rows[step]
            left = [v for v in left if accuracy < v]
    assert i == len(subset_calls)
    assert s["final"]["test_accuracy"] == exact_s["final"]["test_accuracy"] == rows["test_accuracy"].iloc[-1]
    for key, hit in s["targets"].items():
        exact_hit = exact_s["targets"][key]
        assert exact_hit is not None  # both targets are reached on digits at lr 0.5 in 3 epochs
        if hit is not None:
            assert hit["steps"] in whole_steps and exact_rows[hit["steps"]] >= float(key)
            assert hit["steps"] >= exact_hit["steps"]  # the subset can only notice a target later, never earlier
    assert 2 < len(whole_steps) < len(rows)  # some evaluations read the subset alone
    assert corrected > 0  # some were judged by the corrected figure


def test_eval_subset_larger_than_the_split_is_the_whole_split(write_config, tmp_path):
    update = {"eval": {"every": 0.5, "train_subset": 0}, "sweep": {"batch_size": [256], "lr": [0.5]}}
    [big] = sweep(write_config({**update, "eval": {**update["eval"], "subset": 10_000}}), tmp_path / "big")
    [exact] = sweep(write_config(update, name="exact.yaml"), tmp_path / "exact")
    pd.testing.assert_series_equal(read(big)[1]["test_accuracy"], read(exact)[1]["test_accuracy"])


def test_report_shows_the_evaluation_share_of_each_batch_size(write_config, tmp_path):
    """eval_share = eval / (train + eval + noise) seconds, summed over a batch size's trials, computed here from
    the summaries; the terminal table shows it as a percentage."""
    out = tmp_path / "runs"
    dirs = sweep(write_config({"noise": {"every": 0.5}}), out)
    result = runner.invoke(app, ["report", str(out / "tiny"), "--out", str(tmp_path / "report"), "--format", "csv"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "report" / "time_to_accuracy.csv")
    summaries = pd.DataFrame([read(d)[0] for d in dirs])
    assert (summaries["noise_seconds"] > 0).all()
    sums = summaries.groupby("batch_size")[["train_seconds", "eval_seconds", "noise_seconds"]].sum()
    expected = sums["eval_seconds"] / sums.sum(axis=1)
    for bs, share in expected.items():
        rows = table[table["batch_size"] == bs]
        assert rows["eval_share"].to_numpy() == pytest.approx([share] * len(rows))
    header = next(line for line in result.stdout.splitlines() if "best lr" in line)
    assert "eval share" in header
    for share in expected:
        assert f"{share:.0%}" in result.stdout


@pytest.mark.parametrize("batch, micro, given, expected", [
    (16, None, None, 256),  # below 256: per-batch overhead would dominate the evaluation
    (512, None, None, 512),  # the trial's own batch: no more memory than a training step
    (512, 64, None, 256),  # accumulation: the micro-batch is what a forward pass holds
    (1437, None, None, 1024),  # the full batch of digits: no faster above 1024
    (16, None, 100, 100),  # eval.batch_size given: as given
])
def test_default_eval_batch_follows_the_trials_batch(write_config, tmp_path, monkeypatch, batch, micro, given,
                                                      expected):
    sizes = set()
    real = batchlab.train.tally

    def spy(model, split, criterion, task, batch_size, *rest):
        sizes.add(batch_size)
        return real(model, split, criterion, task, batch_size, *rest)

    monkeypatch.setattr(batchlab.train, "tally", spy)
    sweep(write_config({"budget": {"steps": 2}, "micro_batch_size": micro, "eval": {"batch_size": given},
                        "sweep": {"batch_size": [batch], "lr": [0.1]}}), tmp_path)
    assert sizes == {expected}


def test_peak_memory_is_the_trainings_whatever_the_evaluation_batch(write_config, tmp_path):
    """An MLP 64-4096-10 trained at batch 16 holds about 2.3 MiB beyond the data (weights and gradients of
    300,000 parameters, 16 x 4,096 activations); evaluating its 1,000 train-subset examples in one batch of 4,096
    holds two 1,000 x 4,096 float activations at once (the hidden layer and its ReLU), 31 MiB, against 0.5 MiB in
    batches of 16. Measured over training alone, both trials report about the same need; counting evaluation
    (as batchlab once did) the large-batch one reported 50-63 MiB against 5 MiB.

    The margin, 8 MiB (half of one evaluation activation), covers how RSS differs between such trials here: the
    large-evaluation trial came out 1-2.5 MiB above the other (glibc raises its mmap threshold once the
    evaluation frees its 16 MiB blocks, so training's later blocks come from the heap, which keeps some). The
    first trial of a process also carries about 5 MiB of one-off costs (code loaded, allocator pools): a
    warm-up trial takes them first."""
    def peak(eval_batch, name):
        out = tmp_path / name
        [trial] = sweep(write_config({"model": {"name": "mlp", "hidden": [4096]}, "budget": {"steps": 20},
                                      "eval": {"every": 0.1, "batch_size": eval_batch, "train_subset": 1000},
                                      "sweep": {"batch_size": [16], "lr": [0.01]}}, name=f"{name}.yaml"), out)
        return read(trial)[0]["peak_memory_bytes"]

    peak(16, "warm-up")
    small, large = peak(16, "small"), peak(4096, "large")
    assert small >= 2 * (64 * 4096 + 4096 * 10) * 4  # the weights and their gradients, at least
    assert large < small + 8 * 2**20


def test_a_raced_trial_records_and_prints_its_figure_where_it_stopped(tmp_path, monkeypatch):
    """Stopped by the race at step 7, before its first periodic evaluation (one an epoch, 23 steps): its last row
    and summary hold the test accuracy of the model at step 7, computed here from the returned model, not step 0's,
    and no target is judged there (its steps would be the clock's). The line says it was raced, and where."""
    from batchlab.cli.display import trial_line
    from batchlab.records import MetricsWriter
    from batchlab.schema import Experiment
    from batchlab.summary import Summary

    # the race's clock passes the deadline at step 7, whatever the machine's speed
    monkeypatch.setattr(batchlab.machine.Clock, "peek", lambda self: 1e6 if summary.steps >= 7 else 0.0)
    cfg = Experiment.model_validate({"dataset": {"name": "digits"}, "model": {"name": "mlp", "hidden": [16]},
                                     "batch_size": 64, "lr": 0.5, "target": {"value": [0.2, 0.999]},
                                     "eval": {"every": 1.0, "train_subset": 0}, "budget": {"epochs": 3},
                                     "threads": 1})
    data = load_dataset(cfg.dataset, 0)
    summary = Summary(trial_id="bs0064-lr0.5-s0", targets={})
    metrics = MetricsWriter(tmp_path / "metrics.csv")
    model = batchlab.train.train(cfg, data, torch.device("cpu"), summary, metrics, deadline=5.0)
    metrics.close()
    assert summary.status == "raced" and summary.steps == 7
    with torch.inference_mode():
        accuracy = (model.eval()(data.eval.x).argmax(-1) == data.eval.y).float().mean().item()
    m = pd.read_csv(tmp_path / "metrics.csv")
    assert list(m.dropna(subset=["test_accuracy"])["step"]) == [0, 7]
    assert m["test_accuracy"].iloc[-1] == pytest.approx(accuracy, abs=1e-6)
    assert summary.final["test_accuracy"] == m["test_accuracy"].iloc[-1] != summary.initial["test_accuracy"]
    assert summary.initial["test_accuracy"] < 0.2 <= accuracy
    assert summary.targets == {"0.2": None, "0.999": None}  # reached where it stopped, but not judged there
    line = trial_line(summary.to_json())
    assert line.startswith("bs0064-lr0.5-s0: raced, 7 steps, ")
    assert f"acc {accuracy:.4f} when stopped, targets 0/2" in line and "past the best time to the target, 5.00s" in line


def test_a_trial_line_shows_the_metric_its_targets_are_judged_on():
    """A language model records an accuracy too; its targets are on the loss, so the line shows the loss."""
    from batchlab.cli.display import trial_line

    summary = {"trial_id": "bs0032-lr0.005-s0", "status": "completed", "steps": 104, "train_seconds": 1.5,
               "final": {"test_accuracy": 0.401, "test_loss": 2.3987}, "targets": {"2.4": {"steps": 104}},
               "target_metric": "test_loss"}
    assert trial_line(summary) == "bs0032-lr0.005-s0: completed, 104 steps, 1.50s, loss 2.399, targets 1/1"
    summary["target_metric"] = "test_accuracy"
    assert trial_line(summary) == "bs0032-lr0.005-s0: completed, 104 steps, 1.50s, acc 0.4010, targets 1/1"
    summary.update(target_metric="test_loss", final={"test_accuracy": None, "test_loss": 0.0})  # was "loss nan"
    assert trial_line(summary) == "bs0032-lr0.005-s0: completed, 104 steps, 1.50s, loss 0, targets 1/1"


def test_suggest_restart_deletes_its_own_records_and_starts_over(write_config, tmp_path):
    """The error for records of another experiment advises --restart, which suggest has: it deletes the trials
    under <out>/<name>-suggest (and nothing else) and runs the pilot again. A 3-step pilot stops suggest early
    (it cannot reach 0.99), which is all this needs: its trials are recorded first."""
    cfg = write_config({"dataset": {"name": "digits"}, "model": {"name": "mlp", "hidden": [32]},
                        "budget": {"steps": 3}, "target": {"value": [0.99]}, "threads": 1, "sweep": {"lr": [0.3]}})
    other = tmp_path / "tiny" / "trials" / "kept"  # another sweep's records beside suggest's
    other.mkdir(parents=True)
    records = tmp_path / "tiny-suggest" / "trials"

    def suggest(*args):
        return runner.invoke(app, ["suggest", str(cfg), "--out", str(tmp_path), "--quiet", *args])

    first = suggest()
    assert first.exit_code == 2 and "did not reach test_accuracy 0.99" in first.output
    old = {d.name for d in records.iterdir()}  # the pilot, and its retry at a neighbouring batch size
    assert old
    changed = suggest("--set", "model.hidden=[16]")
    assert changed.exit_code == 2 and "Traceback" not in changed.output
    assert "holds trials of a different experiment: model.hidden changed" in changed.output
    assert "Use --restart to start over" in changed.output
    restarted = suggest("--set", "model.hidden=[16]", "--restart")
    assert restarted.exit_code == 2 and "did not reach test_accuracy 0.99" in restarted.output  # ran again
    new = list(records.iterdir())
    assert new and not {d.name for d in new} & old
    for trial in new:
        assert json.loads((trial / "config.json").read_text())["model"]["hidden"] == [16]
        assert json.loads((trial / "summary.json").read_text())["steps"] == 3
    assert other.is_dir()
    assert "--restart" in runner.invoke(app, ["suggest", "--help"]).output


def test_peak_on_cuda_is_the_largest_training_segment(monkeypatch):
    """CUDA's allocator statistics, simulated (no GPU needed): what an evaluation allocates inside `excluded()`
    never counts, what training holds across it does, and the figure is the largest training segment."""
    from batchlab.memory import Peak

    held = {"now": 0, "peak": 0}

    def allocate(n):
        held["now"] += n
        held["peak"] = max(held["peak"], held["now"])

    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: held.update(peak=held["now"]))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: held["peak"])
    allocate(10)  # the data, put on the device before the trial: counted, as on CUDA it always was
    peak = Peak(torch.device("cuda"))
    allocate(100), allocate(-60)  # training: 110 at most, with the data
    with peak.excluded():
        allocate(5000), allocate(-5000)  # an evaluation
    allocate(55), allocate(-55)  # training again: 105
    assert peak.bytes() == 110 and held["now"] == 50
    with peak.excluded():
        allocate(5000), allocate(-5000)
    allocate(90)  # training: 140 held, more than before
    assert peak.bytes() == 140


@pytest.mark.parametrize("metric, value, threshold, n, expected", [
    ("test_accuracy", 0.763, 0.8, 1000, True),  # 3 standard errors at 0.8 of 1,000: 0.0379
    ("test_accuracy", 0.761, 0.8, 1000, False),
    ("test_accuracy", 0.85, 0.8, 1000, True),
    ("test_loss", 0.54, 0.5, 100, True),  # a loss: 3 / sqrt(100) = 30% of the target above it
    ("test_loss", 0.66, 0.5, 100, False),
    ("test_accuracy", None, 0.8, 1000, False),
])
def test_a_subset_figure_near_a_target_calls_for_the_whole_split(metric, value, threshold, n, expected):
    from batchlab.evaluation import near

    assert near(metric, value, threshold, n) is expected


@pytest.mark.parametrize("value, gap, expected", [
    (0.790, 0.0, True),  # 2 standard errors of a 1,000-of-5,000 subset's difference at 0.8: 2 x 0.01131 = 0.0226
    (0.775, 0.0, False),  # 3 standard errors (0.0379) without the gap would have read the whole split
    (0.790, -0.02, False),  # the subset reads 0.02 above the whole split: 0.77 corrected
    (0.770, 0.02, True),
    (0.805, -0.05, True),  # the subset says reached: only the whole split may say so, whatever the gap
])
def test_once_the_whole_split_was_read_the_subset_is_corrected_by_its_difference(value, gap, expected):
    from batchlab.evaluation import near

    assert near("test_accuracy", value, 0.8, 1000, 5000, gap) is expected
    assert near("test_accuracy", value, 0.8, 1000) is (value >= 0.8 - 3 * (0.8 * 0.2 / 1000) ** 0.5)  # no gap yet


@pytest.mark.parametrize("value, gap, expected", [
    (0.60, -0.02, True),  # a loss: 0.5 x (1 + 2 x sqrt(1 - 100/400) / sqrt(100)) = 0.5866; 0.58 corrected
    (0.62, -0.02, False),  # 0.60 corrected (3 standard errors without a gap, 0.65, would have read the whole)
    (0.49, 0.2, True),  # the subset reaches 0.5 itself
])
def test_a_loss_on_the_subset_is_corrected_the_same_way(value, gap, expected):
    from batchlab.evaluation import near

    assert near("test_loss", value, 0.5, 100, 400, gap) is expected
    assert near("test_loss", value, 0.5, 100) is (value <= 0.65)
