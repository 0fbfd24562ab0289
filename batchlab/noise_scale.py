"""`batchlab noise`: the gradient noise scale of a config's model at fixed parameters, at initialisation
or after some steps of its training (noise.NoiseMonitor measures it during training instead)."""

from __future__ import annotations

import math
import statistics
import tempfile
from pathlib import Path

import torch

from batchlab import registry
from batchlab.data import load_dataset
from batchlab.errors import BatchlabError, TrainingError, described
from batchlab.losses import build_loss
from batchlab.machine import resolve_device
from batchlab.noise import check_noise, estimate, measure_batch, noise_batch_sizes
from batchlab.records import MetricsWriter
from batchlab.schema import Experiment
from batchlab.summary import Summary
from batchlab.train import build_parts, train


def noise_scale(experiment: Experiment, steps: int = 0, measurements: int = 20,
                code_dirs: tuple[str, ...] = ()) -> dict:
    """Measure B_simple at fixed parameters: the model at init, or after `steps` steps of its training.

    At fixed parameters every measurement estimates the same |G|^2 and tr(Sigma) without bias, so
    they are averaged plainly (the moving average is for training, where the parameters move);
    B_simple is the ratio of the two means.
    """
    registry.make_importable(*code_dirs)
    cfg = experiment.model_copy(update={"sweep": {}})
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    data = load_dataset(cfg.dataset, cfg.seed).to(device)
    stage = f"training the {steps} steps before measuring" if steps else "building the model"
    try:
        if steps:
            few = cfg.model_copy(update={"budget": cfg.budget.counting("steps", steps),
                                         "eval": cfg.eval.model_copy(update={"every": 1e9, "train_subset": 0}),
                                         "noise": cfg.noise.model_copy(update={"every": None})})
            with tempfile.TemporaryDirectory() as tmp:
                metrics = MetricsWriter(Path(tmp) / "metrics.csv")
                model = train(few, data, device, Summary("noise", cfg.batch_size, cfg.lr, cfg.seed), metrics)
                metrics.close()
            criterion = build_loss(cfg.loss, data.task, data.ignore_index)
        else:
            model, criterion, _ = build_parts(cfg, data, device)
        stage = "measuring"
        figures = at_fixed_parameters(cfg, model, criterion, data, device, measurements)
    except (KeyboardInterrupt, BatchlabError):
        raise
    except Exception as e:  # noqa: BLE001 -- the user's model or loss raised (or memory ran out): one line
        raise TrainingError(f"{stage} failed: {described(e)}") from None
    in_tokens = {"b_simple_tokens": figures["b_simple"] * data.context, "context": data.context} if data.context else {}
    return {**figures, **in_tokens, "steps": steps, "batch_size": cfg.batch_size, "lr": cfg.lr,
            "device": str(device)}


def at_fixed_parameters(cfg: Experiment, model, criterion, data, device: torch.device, measurements: int) -> dict:
    """B_simple of `model` as it is: `measurements` independent draws of noise.batch_size examples (the draws'
    generator seeded from cfg.seed, as the monitor's), each estimate averaged plainly (the parameters do not
    move), B_simple the ratio of the two means. Also `batchlab cbs`'s B_simple at each of its points."""
    n = len(data.train)
    check_noise(cfg, n)
    b_small, b_big = noise_batch_sizes(cfg, n)
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    g2s, traces = [], []
    for _ in range(measurements):
        x, y = data.train.take(torch.randperm(n, generator=generator)[:b_big])
        g_small, g_big = measure_batch(model, criterion, x.to(device), y.to(device), b_small)
        g2, trace = estimate(g_small, g_big, b_small, b_big, n=n)
        g2s.append(g2)
        traces.append(trace)
    g2, trace = statistics.fmean(g2s), statistics.fmean(traces)
    stderr = lambda xs: (statistics.stdev(xs) / math.sqrt(len(xs))  # noqa: E731
                         if len(xs) > 1 and all(map(math.isfinite, xs)) else math.nan)  # a diverged model's: none
    b_simple = trace / g2 if g2 > 0 else math.nan
    return {"g2": g2, "g2_stderr": stderr(g2s), "trace": trace, "trace_stderr": stderr(traces),
            "b_simple": b_simple, "measurements": measurements, "b_small": b_small, "b_big": b_big,
            "train_size": n}
