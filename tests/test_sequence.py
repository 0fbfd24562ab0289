"""Sequence tasks: (B, T, V) outputs, integer token ids, the common output forms, tokens as the unit,
perplexity, user schedules, the built-in token and corpus data sets, and bad input as one line."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from typer.testing import CliRunner

from batchlab.cli import app
from batchlab.data import load_dataset
from batchlab.data.text import corpus_text
from batchlab.losses import build_loss
from batchlab.reporting.build import build_report
from batchlab.schema import DatasetConfig, LossConfig
from batchlab.evaluation import evaluate

HERE = Path(__file__).parent
runner = CliRunner()
TOY = {
    "name": "seq",
    "dataset": {"name": "seq_parts:successor", "args": {"n": 256, "context": 8, "vocab": 11}},
    "model": {"name": "seq_parts:TokenLM"},
    "optimizer": {"name": "adam"},
    "lr": 0.05,
    "batch_size": 32,
    "budget": {"steps": 16},
    "eval": {"every": 0.5, "log_every": 0.125, "train_subset": 0},
    "threads": 1,
}


def sweep(tmp_path: Path, **update) -> tuple:
    """Run TOY (updated) through the CLI; return (result, summaries, metrics rows of the first trial)."""
    cfg = {**TOY, **update}
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "seq.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = runner.invoke(app, ["sweep", str(path), "--out", str(tmp_path / "runs"), "--quiet"])
    trials = sorted((tmp_path / "runs" / cfg["name"] / "trials").glob("*")) if result.exit_code == 0 else []
    summaries = [json.loads((d / "summary.json").read_text()) for d in trials]
    rows = list(csv.DictReader(open(trials[0] / "metrics.csv"))) if trials else []
    return result, summaries, rows


def test_the_loss_is_cross_entropy_over_the_last_dimension_with_the_ignore_index():
    torch.manual_seed(0)
    out, y = torch.randn(3, 5, 7), torch.randint(0, 7, (3, 5))
    y[0, :2] = -100
    y[2, 4] = -100
    loss = build_loss(LossConfig(), "sequence", -100)(out, y)
    expected = F.cross_entropy(out.transpose(1, 2), y)  # torch's own (B, V, T) layout, -100 ignored by default
    assert torch.allclose(loss, expected)
    keep = y != -100
    assert torch.allclose(loss, -out.log_softmax(-1)[keep].gather(1, y[keep][:, None]).mean())


def test_evaluation_weighs_by_labelled_tokens_and_counts_token_accuracy():
    data = load_dataset(DatasetConfig(name="seq_parts:successor", args={"n": 20, "context": 4, "vocab": 5,
                                                                       "ignore_last": True}), 0)
    model = torch.nn.Sequential(torch.nn.Embedding(5, 5))
    criterion = build_loss(LossConfig(), data.task, data.ignore_index)
    loss, accuracy = evaluate(model, data.eval, criterion, data.task, 7, torch.device("cpu"))  # uneven batches
    x, y = data.eval.x, data.eval.y
    out = model(x)
    keep = y != -100
    assert loss == pytest.approx(F.cross_entropy(out[keep], y[keep]).item(), rel=1e-5)
    assert accuracy == pytest.approx((out.argmax(-1)[keep] == y[keep]).float().mean().item())


def test_integer_targets_of_shape_n_t_are_a_sequence_task_and_token_ids_stay_integer(tmp_path):
    data = load_dataset(DatasetConfig(name="seq_parts:successor", args={"n": 64, "context": 8, "vocab": 11}), 0)
    assert (data.task, data.context, data.num_classes, data.input_shape) == ("sequence", 8, 11, (8,))
    assert data.train.x.dtype == torch.int64 and data.train.y.dtype == torch.int64
    result, summaries, _ = sweep(tmp_path)  # TokenLM raises on anything but int64 ids
    assert result.exit_code == 0, result.output
    assert summaries[0]["status"] == "completed", summaries[0]["error"]


@pytest.mark.parametrize("model", ["WithLoss", "AsDict", "AsObject"])
def test_a_tuple_a_dict_and_an_output_object_train_as_the_plain_tensor_does(tmp_path, model):
    _, (plain,), _ = sweep(tmp_path / "plain")
    result, (other,), _ = sweep(tmp_path / model, model={"name": f"seq_parts:{model}"})
    assert result.exit_code == 0, result.output
    assert other["status"] == "completed", other["error"]
    # same weights, same data, batchlab's own loss on the logits (WithLoss's own loss is 0 and ignored)
    assert other["initial"]["test_loss"] == pytest.approx(plain["initial"]["test_loss"], rel=1e-6)
    assert other["final"]["test_loss"] == pytest.approx(plain["final"]["test_loss"], rel=1e-4)
    assert other["final"]["test_loss"] < 0.5 * other["initial"]["test_loss"]


def test_tokens_are_counted_a_token_budget_sets_the_steps_and_perplexity_is_exp_loss(tmp_path):
    result, (summary,), rows = sweep(tmp_path, budget={"tokens": 1000}, target={"metric": "test_loss",
                                                                               "value": [1.5]})
    assert result.exit_code == 0, result.output
    assert summary["steps"] == math.ceil(1000 / (32 * 8))
    assert summary["tokens"] == summary["examples"] * 8 == summary["steps"] * 32 * 8
    assert summary["context"] == 8
    assert summary["tokens_per_second"] == pytest.approx(summary["samples_per_second"] * 8)
    assert all(int(r["tokens"]) == int(r["examples"]) * 8 for r in rows)
    for when in ("initial", "final"):
        assert summary[when]["test_perplexity"] == pytest.approx(math.exp(summary[when]["test_loss"]))
    hit = summary["targets"]["1.5"]
    evaluated = [r for r in rows if r["test_loss"]]
    first = next(r for r in evaluated if float(r["test_loss"]) <= 1.5)
    assert hit["tokens"] == int(first["tokens"]) == hit["examples"] * 8


def lrs(rows) -> dict[int, float]:
    return {int(r["step"]): float(r["lr"]) for r in rows}


def test_a_torch_scheduler_by_import_path_follows_batchlab_warmup(tmp_path):
    # 256 examples / 32 = 8 steps an epoch: warmup 0.25 epoch = 2 steps, then StepLR halving every 3 steps
    schedule = {"name": "torch.optim.lr_scheduler:StepLR", "args": {"step_size": 3, "gamma": 0.5},
                "warmup_epochs": 0.25}
    result, _, rows = sweep(tmp_path, schedule=schedule, eval={"every": 1, "log_every": 0.125, "train_subset": 0})
    assert result.exit_code == 0, result.output
    for step, lr in lrs(rows).items():  # a row's lr is the one the next step uses
        expected = 0.05 * ((step + 1) / 2 if step < 2 else 0.5 ** ((step - 2) // 3))
        assert lr == pytest.approx(expected), step


def test_a_function_of_the_step_by_import_path_is_a_schedule(tmp_path):
    result, _, rows = sweep(tmp_path, schedule={"name": "seq_parts:halving", "args": {"every": 4}})
    assert result.exit_code == 0, result.output
    assert lrs(rows) and all(lr == pytest.approx(0.05 * 0.5 ** (step // 4)) for step, lr in lrs(rows).items())


def test_the_tokens_data_set_reads_bin_and_npy_token_files(tmp_path):
    ids = (np.arange(1000) * 7 % 50).astype(np.uint16)
    ids[:800].tofile(tmp_path / "train.bin")
    np.save(tmp_path / "val.npy", ids[800:].astype(np.int32))
    data = load_dataset(DatasetConfig(name="tokens", path=str(tmp_path / "train.bin"),
                                      val_path=str(tmp_path / "val.npy"), context=16), 0)
    assert (data.task, data.context, data.num_classes) == ("sequence", 16, 50)
    assert (len(data.train), len(data.eval)) == ((800 - 1) // 16, (200 - 1) // 16)
    x, y = data.train.take(torch.tensor([0, 3]))
    assert x.dtype == torch.int64
    assert x[1].tolist() == ids[48:64].tolist() and y[1].tolist() == ids[49:65].tolist()
    result, (summary,), _ = sweep(tmp_path, dataset={"name": "tokens", "path": str(tmp_path / "train.bin"),
                                                     "val_path": str(tmp_path / "val.npy"), "context": 16},
                                  model={"name": "gpt", "args": {"n_layer": 1, "n_head": 2, "n_embd": 16}},
                                  budget={"steps": 4}, batch_size=8)
    assert result.exit_code == 0, result.output
    assert summary["status"] == "completed" and summary["tokens"] == 4 * 8 * 16


def test_the_corpus_is_the_python_reference_offline_in_windows_shifted_by_one():
    data = load_dataset(DatasetConfig(name="chars", context=32), 0)
    text = corpus_text()
    vocabulary = sorted(set(text))
    assert data.num_classes == len(vocabulary) and data.context == 32
    assert len(data.train) == (int(len(text) * 0.9) - 1) // 32
    decode = lambda ids: "".join(vocabulary[i] for i in ids)  # noqa: E731
    assert decode(data.train.x[0].tolist()) == text[:32] and decode(data.train.y[0].tolist()) == text[1:33]
    assert decode(data.eval.x[0].tolist()) == text[int(len(text) * 0.9):][:32]


def one_line(tmp_path, **update) -> str:
    result, _, _ = sweep(tmp_path, **{"target": {"metric": "test_loss", "value": [0.5]}, **update})  # (a sweep
    # without a target prints a note first)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    return result.output


def test_a_context_longer_than_the_data_is_one_line(tmp_path):
    np.arange(100, dtype=np.uint16).tofile(tmp_path / "small.bin")
    out = one_line(tmp_path, dataset={"name": "tokens", "path": str(tmp_path / "small.bin"), "context": 256})
    assert "dataset.context: 256 tokens per example, but the training token file holds 90 tokens" in out


def test_a_token_file_beyond_num_classes_or_with_a_negative_id_is_one_line(tmp_path):
    """Both reached the model, and the line blamed it (model.name: gpt fails on a batch ... IndexError)."""
    (np.arange(1000) % 50).astype(np.uint16).tofile(tmp_path / "train.bin")
    out = one_line(tmp_path, dataset={"name": "tokens", "path": str(tmp_path / "train.bin"), "context": 16,
                                      "num_classes": 10}, model={"name": "gpt", "args": {"n_layer": 1, "n_head": 2,
                                                                                           "n_embd": 16}})
    assert "dataset.num_classes: 10, but the labels go up to 49" in out, out
    ids = np.arange(1000) % 50
    ids[500] = -3
    np.save(tmp_path / "signed.npy", ids.astype(np.int32))
    out = one_line(tmp_path, dataset={"name": "tokens", "path": str(tmp_path / "signed.npy"), "context": 16},
                   model={"name": "gpt", "args": {"n_layer": 1, "n_head": 2, "n_embd": 16}})
    assert f"dataset.path: {tmp_path / 'signed.npy'} holds a negative token id (-3); token ids are 0, 1, ..." in out


def test_targets_beyond_the_model_vocabulary_are_one_line(tmp_path):
    out = one_line(tmp_path, model={"name": "seq_parts:TokenLM", "args": {"vocab": 6}})
    assert "model.name: seq_parts:TokenLM outputs 6 values per position (its vocabulary), but the tokens go up to " \
           "10" in out
    out = one_line(tmp_path, dataset={**TOY["dataset"], "num_classes": 4})
    assert "dataset.num_classes: 4, but the labels go up to 10" in out


def test_the_noise_scale_and_max_batch_measure_a_sequence_model_and_state_tokens():
    import batchlab

    noise = batchlab.noise_scale(TOY, {"noise.batch_size": 64, "noise.small_batch_size": 8}, measurements=3)
    assert noise["context"] == 8 and math.isfinite(noise["b_simple"])
    assert noise["b_simple_tokens"] == pytest.approx(noise["b_simple"] * 8)
    found = batchlab.find_max_batch({**TOY, "model": {"name": "seq_parts:AsObject"}}, max_batch=64)
    assert (found.batch_size, found.context) == (64, 8)  # the cap fits: this toy is tiny


def test_the_context_length_is_a_sweep_axis_and_tokens_per_batch_follow_it(tmp_path):
    (np.arange(2000) * 3 % 40).astype(np.uint16).tofile(tmp_path / "train.bin")
    result, summaries, _ = sweep(tmp_path, dataset={"name": "tokens", "path": str(tmp_path / "train.bin")},
                                 model={"name": "gpt", "args": {"n_layer": 1, "n_head": 2, "n_embd": 16}},
                                 budget={"steps": 2}, batch_size=4, sweep={"dataset.context": [8, 16]})
    assert result.exit_code == 0, result.output
    assert sorted((s["context"], s["tokens"]) for s in summaries) == [(8, 2 * 4 * 8), (16, 2 * 4 * 16)]
    assert sorted(s["train_size"] for s in summaries) == [(1800 - 1) // 16, (1800 - 1) // 8]  # 10% held out


def test_the_report_states_tokens_tokens_per_second_and_perplexity(tmp_path):
    result, summaries, _ = sweep(tmp_path, target={"metric": "test_loss", "value": [1.5]},
                                 sweep={"batch_size": [16, 64]})
    assert result.exit_code == 0, result.output
    build_report(tmp_path / "runs" / "seq", formats=["md"])  # the text alone: no figures to draw
    text = (tmp_path / "runs" / "seq" / "report" / "report.md").read_text()
    fastest = min((s for s in summaries if s["targets"]["1.5"]), key=lambda s: s["targets"]["1.5"]["seconds"])
    assert f"Use batch size {fastest['batch_size']} ({fastest['batch_size'] * 8} tokens) with" in text
    assert "| tokens | seeds reached |" in text and "| tokens/s |" in text and "| final test ppl |" in text
    tokens_to_target = f"| {fastest['targets']['1.5']['tokens']:,} |"
    assert tokens_to_target in text


def test_schedule_fields_of_the_other_kind_are_one_line(tmp_path):
    out = one_line(tmp_path, schedule={"name": "torch.optim.lr_scheduler:StepLR", "gamma": 0.5})
    assert "gamma: for the built-in schedules only; give torch.optim.lr_scheduler:StepLR's own arguments in " \
           "schedule.args" in out
    out = one_line(tmp_path, schedule={"name": "cosine", "args": {"T_max": 5}})
    assert "args: for a schedule named by import path" in out


def test_a_schedule_that_cannot_be_built_or_gives_no_number_is_one_line_before_training(tmp_path):
    out = one_line(tmp_path, schedule={"name": "torch.optim.lr_scheduler:StepLR", "args": {"step_sise": 3}})
    assert out.startswith("error: ") and "schedule.name: " in out and "step_sise" in out
    out = one_line(tmp_path, schedule={"name": "seq_parts:halving", "args": {"every": 0}})
    assert "schedule.name: " in out and "ZeroDivisionError" in out
    trials = tmp_path / "runs" / "seq" / "trials"
    assert not trials.exists() or not any(trials.iterdir())  # refused before any trial started
