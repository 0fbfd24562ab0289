"""Your model, your data: user code named by import path, the Python API, and every bad input as one line."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

import batchlab
from batchlab.cli import app
from batchlab.errors import ConfigError

runner = CliRunner()
EXAMPLE = Path(__file__).parent.parent / "examples" / "custom"
ON_DIGITS = ["--set", "dataset.args.source=digits", "--set", "dataset.num_workers=0", "--set", "eval.every=0.5"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def summaries(sweep_dir: Path) -> list[dict]:
    return [json.loads((d / "summary.json").read_text()) for d in sorted((sweep_dir / "trials").iterdir())]


def test_the_example_runs_through_the_cli_and_records_what_ran(tmp_path):
    smoke = invoke("sweep", EXAMPLE / "custom.yaml", *ON_DIGITS, "--smoke", "--out", tmp_path, "--quiet")
    assert smoke.exit_code == 0, smoke.output
    assert "9 completed" in smoke.output

    result = invoke("sweep", EXAMPLE / "custom.yaml", *ON_DIGITS, "--set", "sweep.batch_size=[64, 256]",
                    "--set", "sweep.lr=[0.05]", "--set", "budget.epochs=2", "--out", tmp_path, "--quiet")
    assert result.exit_code == 0, result.output
    assert "2 completed" in result.output
    for d in sorted((tmp_path / "custom" / "trials").iterdir()):
        config = json.loads((d / "config.json").read_text())
        assert config["model"] == {**config["model"], "name": "nets:SmallCNN", "args": {"width": 16, "dropout": 0.1}}
        assert config["dataset"]["name"] == "data:augmented" and config["dataset"]["args"]["source"] == "digits"
        assert config["loss"]["label_smoothing"] == 0.1 and config["optimizer"]["grad_clip"] == 1.0
        summary = json.loads((d / "summary.json").read_text())
        assert summary["train_size"] == 1437 and summary["epochs"] == 2.0
        for module in ("nets", "data"):  # the source that ran, hashed independently here
            recorded = summary["code"][module]
            assert Path(recorded["file"]) == (EXAMPLE / f"{module}.py").resolve()
            assert recorded["sha256"] == hashlib.sha256((EXAMPLE / f"{module}.py").read_bytes()).hexdigest()


def test_the_api_sweeps_a_file_and_a_class_handed_over_from_python(tmp_path):
    result = batchlab.sweep(EXAMPLE / "custom.yaml", out=tmp_path,
                            overrides={"dataset.args.source": "digits", "dataset.num_workers": 0,
                                       "sweep.batch_size": [128], "sweep.lr": [0.05, 0.1], "budget.steps": 30})
    assert result.path == tmp_path / "custom"
    assert result.counts == {"completed": 2} and result.skipped == 0
    trials = result.trials
    assert list(trials["lr"]) == [0.05, 0.1] and list(trials["steps"]) == [30, 30]
    assert set(trials["status"]) == {"completed"}

    records = batchlab.load_records(result.path)
    csvs = [pd.read_csv(d / "metrics.csv") for d in sorted((result.path / "trials").iterdir())]
    assert len(records.trials) == 2 and len(records.metrics) == sum(len(c) for c in csvs)
    assert records.metrics.groupby("trial_id")["step"].max().tolist() == [30, 30]
    report = batchlab.report(result.path)
    assert report.time_to_accuracy["batch_size"].tolist() == [128]
    answer = report.recommendation.to_dict()
    assert json.loads(json.dumps(answer)) == answer  # JSON-safe, as `batchlab report --json` prints it
    written = report.write(tmp_path / "custom-report")
    assert (tmp_path / "custom-report" / "report.html") in written
    assert "nets:SmallCNN(width=16, dropout=0.1)" in (tmp_path / "custom-report" / "report.md").read_text()

    class Tiny(torch.nn.Module):  # defined here: importable by no other process
        def __init__(self, input_shape, num_classes, hidden=8):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(int(np.prod(input_shape)), hidden),
                                           torch.nn.ReLU(), torch.nn.Linear(hidden, num_classes))

        def forward(self, x):
            return self.net(x)

    config = {"name": "nb", "dataset": {"name": "digits"}, "model": {"name": "mlp", "hidden": [4], "args": {"hidden": 6}},
              "budget": {"steps": 30}, "threads": 1, "sweep": {"lr": [0.1, 0.2]}}
    notebook = batchlab.sweep(config, out=tmp_path, model=Tiny)
    assert notebook.counts == {"completed": 2}
    recorded = json.loads(next((tmp_path / "nb" / "trials").iterdir()).joinpath("config.json").read_text())
    assert recorded["model"]["name"].endswith(":test_the_api_sweeps_a_file_and_a_class_handed_over_from_python."
                                              "<locals>.Tiny")
    assert recorded["model"]["args"] == {"hidden": 6}  # kept; the built-in mlp's `hidden` list is not
    with pytest.raises(ConfigError, match="worker processes cannot import; move it into a module"):
        batchlab.sweep({**config, "name": "nb2"}, out=tmp_path, model=Tiny, workers=2)


def test_workers_import_user_code_by_path(tmp_path):
    # with DataLoader processes too: a pool worker may start processes (it is not daemonic)
    result = invoke("sweep", EXAMPLE / "custom.yaml", *ON_DIGITS, "--set", "sweep.batch_size=[64, 128]",
                    "--set", "sweep.lr=[0.1]", "--set", "budget.steps=30", "--set", "dataset.num_workers=1",
                    "--out", tmp_path, "--workers", "2", "--quiet")
    assert result.exit_code == 0, result.output
    assert "2 completed" in result.output


def write_npz(path: Path, regression: bool = False, n: int = 300) -> dict:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2 * n, 5)).astype(np.float32)
    y = x @ np.arange(1, 6, dtype=np.float32) if regression else (x[:, 0] > 0).astype(np.int64) + 2 * (x[:, 1] > 0)
    arrays = {"x_train": x[:n], "y_train": y[:n], "x_test": x[n:], "y_test": y[n:]}
    np.savez(path, **arrays)
    return arrays


@pytest.mark.parametrize("regression", [False, True])
def test_an_npz_file_needs_no_code(write_config, tmp_path, regression):
    arrays = write_npz(tmp_path / "data.npz", regression)
    target = {"metric": "test_loss", "value": [1.0]} if regression else {"value": [0.5]}
    cfg = write_config({"dataset": {"name": "npz", "path": str(tmp_path / "data.npz")}, "target": target,
                        "model": {"name": "linear"}, "budget": {"epochs": 3}, "sweep": {"batch_size": [32]}})
    result = invoke("sweep", cfg, "--out", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0, result.output
    [summary] = summaries(tmp_path / "runs" / "tiny")
    assert summary["train_size"] == 300 and summary["status"] == "completed"
    metrics = pd.read_csv(next((tmp_path / "runs" / "tiny" / "trials").iterdir()) / "metrics.csv")
    if regression:
        assert metrics["test_accuracy"].isna().all()  # a regression: no accuracy
        assert metrics["test_loss"].iloc[-1] < metrics["test_loss"].iloc[0]
    else:  # four classes, read from the labels: chance is 1/4
        assert set(np.unique(arrays["y_train"])) == {0, 1, 2, 3}
        assert metrics["test_accuracy"].iloc[-1] > 0.5


@pytest.mark.parametrize("workers", [(2, 2), (0, 2)], ids=["same-workers", "any-workers"])
def test_a_dataset_with_augmentation_is_reproducible(tmp_path, workers):
    """Random crops and flips are seeded per batch from the trial's seed, and dropout's stream is untouched by
    fetching: the same numbers whichever process, and however many, fetched the batches."""
    runs = []
    for name, n in zip(("a", "b"), workers):
        result = invoke("sweep", EXAMPLE / "custom.yaml", "--set", "dataset.args.source=digits",
                        "--set", f"dataset.num_workers={n}", "--set", "sweep.batch_size=[32]", "--set", "sweep.lr=[0.05]",
                        "--set", "budget.steps=40", "--set", "eval.every=0.5", "--set", f"name={name}",
                        "--set", "model.args.dropout=0.5", "--out", tmp_path, "--quiet")
        assert result.exit_code == 0, result.output
        trial = next((tmp_path / name / "trials").iterdir())
        runs.append(pd.read_csv(trial / "metrics.csv").drop(columns="train_seconds"))
    pd.testing.assert_frame_equal(runs[0], runs[1], check_exact=True)
    assert runs[0]["train_loss"].notna().sum() > 5


def test_resuming_with_changed_user_code_is_refused(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__"))
    args = ["sweep", project / "custom.yaml", *ON_DIGITS, "--set", "budget.steps=2", "--set", "sweep.lr=[0.05]",
            "--out", tmp_path / "runs", "--quiet"]
    first = invoke(*args, "--set", "sweep.batch_size=[32]")
    assert first.exit_code == 0, first.output
    (project / "nets.py").write_text((project / "nets.py").read_text() + "\n# changed\n")
    extended = invoke(*args, "--set", "sweep.batch_size=[32, 64]")
    assert extended.exit_code == 2
    assert f"{(project / 'nets.py').resolve()} changed since" in extended.output and "--restart" in extended.output
    assert invoke(*args, "--set", "sweep.batch_size=[32, 64]", "--restart").exit_code == 0


# ---------------------------------------------------------------- bad input: one line, exit 2

BAD_CODE = """
import numpy as np
import torch

def net(input_shape, num_classes, kind="ok"):
    if kind == "raises":
        raise ValueError("width must be even")
    if kind == "list":
        return [1, 2]
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(int(np.prod(input_shape)), 3))

def data(kind):
    x, y = np.zeros((10, 4), np.float32), np.arange(10) % 3
    if kind == "string":
        return "not data"
    if kind == "shapes":
        return x, y, np.zeros((5, 6), np.float32), y[:5]
    if kind == "lengths":
        return x, y[:9], x, y
    if kind == "empty":
        return x[:0], y[:0], x, y
    if kind == "labels":
        return x, y + 5, x, y
    return x, y, x, y
"""


@pytest.mark.parametrize("section, expected", [
    ({"model": {"name": "nosuchmodule:Net"}},
     "line 5: model.name: cannot import 'nosuchmodule' (nosuchmodule:Net): No module named 'nosuchmodule'"),
    ({"model": {"name": "broken:Net"}}, "model.name: importing 'broken' raised ZeroDivisionError: division by zero"),
    ({"model": {"name": "exits:Net"}}, "model.name: importing 'exits' called sys.exit(3); put the module's script "
     "under `if __name__ == '__main__':`"),
    ({"dataset": {"name": "exits_quietly:data"}}, "dataset.name: importing 'exits_quietly' called sys.exit(None)"),
    ({"model": {"name": "usercode:Missing"}}, "model.name: usercode:Missing: module 'usercode' has no attribute 'Missing'"),
    ({"model": {"name": "usercode:net", "args": {"kind": "raises"}}},
     "model.name: usercode:net(kind='raises') raised ValueError: width must be even"),
    ({"model": {"name": "usercode:net", "args": {"kind": "list"}}},
     "model.name: usercode:net returned a list, expected a torch.nn.Module"),
    ({"model": {"name": "usercode:net", "args": {"colour": "red"}}},
     "model.name: usercode:net(colour='red') raised TypeError"),
    ({"dataset": {"name": "usercode:data", "args": {"kind": "string"}}},
     "dataset.name: usercode:data: returned a str; expected (x_train, y_train, x_test, y_test) arrays"),
    ({"dataset": {"name": "usercode:data", "args": {"kind": "shapes"}}},
     "dataset.name: usercode:data: train and test examples differ in shape: (4,) and (6,)"),
    ({"dataset": {"name": "usercode:data", "args": {"kind": "lengths"}}},
     "dataset.name: usercode:data: x_train has 10 examples but y_train has 9"),
    ({"dataset": {"name": "usercode:data", "args": {"kind": "empty"}}},
     "dataset.name: usercode:data: the train set is empty"),
    ({"dataset": {"name": "usercode:data", "args": {"kind": "labels"}}, "model": {"name": "usercode:net"}},
     "model.name: usercode:net outputs 3 values per example, but the labels go up to 7 (8 classes)"),
    ({"loss": {"name": "usercode:nothing"}}, "loss.name: usercode:nothing: module 'usercode' has no attribute"),
    ({"optimizer": {"name": "torch.optim:NoSuchOptimizer"}}, "optimizer.name: torch.optim:NoSuchOptimizer: module"),
    ({"optimizer": {"name": "torch.optim:SGD", "momentum": 0.9}},
     "optimizer: momentum: for the built-in optimizers only; give torch.optim:SGD's own arguments in optimizer.args"),
    ({"dataset": {"name": "npz"}}, "dataset: dataset npz needs a path"),
    ({"dataset": {"name": "npz", "path": "nowhere.npz"}}, "dataset.path: nowhere.npz: no such file"),
])
def test_bad_user_code_is_one_line_naming_file_line_and_key(tmp_path, section, expected):
    (tmp_path / "usercode.py").write_text(BAD_CODE)
    (tmp_path / "broken.py").write_text("1 / 0\n")
    (tmp_path / "exits.py").write_text("import sys\nsys.exit(3)\n")
    (tmp_path / "exits_quietly.py").write_text("raise SystemExit\n")
    config = {"name": "bad", "dataset": {"name": "digits"}, "model": {"name": "mlp"}, "budget": {"steps": 1},
              "target": {"value": [0.5]}, "threads": 1, **section}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = invoke("sweep", path, "--out", tmp_path / "runs" / "deeper", "--quiet")
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: {path}")
    assert expected in result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()  # refused before anything was written: no folder (nor .lock) left


def test_max_batch_and_noise_run_on_user_code(tmp_path):
    args = [*ON_DIGITS, "--set", "model.args.width=4"]
    result = invoke("max-batch", EXAMPLE / "custom.yaml", *args, "--memory-limit", "256MiB", "--max", "64")
    assert result.exit_code == 0, result.output
    assert "largest batch size that fits in a limit of 256.0 MiB on cpu: 64 (the largest tried)" in result.output
    noise = invoke("noise", EXAMPLE / "custom.yaml", *args, "--measurements", "3", "--json")
    assert noise.exit_code == 0, noise.output
    got = json.loads(noise.output)
    assert got["b_small"] == 64 and got["b_big"] == 1024 and got["train_size"] == 1437 and got["trace"] > 0


@pytest.mark.filterwarnings("error")  # e.g. a loss broadcasting (N, 1) outputs against (N,) targets
def test_losses_optimizers_and_clipping_by_name(write_config, tmp_path):
    cfg = write_config({"dataset": {"name": "linear"}, "model": {"name": "linear"},
                        "loss": {"name": "torch.nn:HuberLoss", "args": {"delta": 0.5}},
                        "optimizer": {"name": "torch.optim:RMSprop", "args": {"alpha": 0.9}, "grad_clip": 0.5},
                        "target": {"metric": "test_loss", "value": [0.1]}, "budget": {"epochs": 2},
                        "sweep": {"lr": [0.01]}})
    result = invoke("sweep", cfg, "--out", tmp_path, "--quiet")
    assert result.exit_code == 0, result.output
    [summary] = summaries(tmp_path / "tiny")
    assert summary["status"] == "completed" and summary["final"]["test_loss"] < 1.0


def test_gradient_clipping_scales_the_step_to_the_norm():
    from batchlab.step import Step

    def one_step(grad_clip):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        x, y = torch.full((4, 3), 10.0), torch.zeros(4)
        before = [p.detach().clone() for p in model.parameters()]
        loss = lambda out, target: ((out.squeeze(-1) - target) ** 2).mean()  # noqa: E731
        Step(model, optimizer, loss, torch.device("cpu"), grad_clip=grad_clip)(x, y)
        return [b - p.detach() for b, p in zip(before, model.parameters())]  # lr * the gradient used

    free = one_step(None)
    norm = torch.cat([d.flatten() for d in free]).norm() / 0.1
    assert norm > 1.0
    clipped = one_step(1.0)
    for f, c in zip(free, clipped):
        torch.testing.assert_close(c, f / norm, rtol=1e-5, atol=1e-7)  # the same direction, norm 1


def test_an_image_folder_is_read_with_its_classes(tmp_path, write_config):
    from PIL import Image

    from batchlab.data import load_dataset
    from batchlab.schema import DatasetConfig

    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("test", 2)):
        for label in ("cat", "dog"):
            (tmp_path / split / label).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (6, 5), dtype=np.uint8)).save(tmp_path / split / label / f"{i}.png")
    data = load_dataset(DatasetConfig(name="image-folder", path=str(tmp_path)), seed=0)
    assert (len(data.train), len(data.eval), data.input_shape, data.num_classes) == (6, 4, (1, 6, 5), 2)
    x, y = data.train.take(torch.arange(6))
    assert y.tolist() == [0, 0, 0, 1, 1, 1] and 0 <= float(x.min()) and float(x.max()) <= 1
    first = np.asarray(Image.open(tmp_path / "train" / "cat" / "0.png"), dtype=np.float32) / 255
    np.testing.assert_allclose(x[0, 0].numpy(), first)
