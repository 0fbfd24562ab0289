#!/usr/bin/env python
"""Language-model throughput: batchlab's tokens/s against a hand-written nanoGPT-style training loop.

The requirement (issue 18): batchlab trains a GPT at >= 0.95x the tokens/s of a minimal loop on the same
model and batch. Two columns, measured in ONE process, interleaved repetition by repetition (the order
swapped every repetition), each from a freshly built model (seed 0), after an untimed warm-up of each:

  a  loop      the nanoGPT-style loop: the corpus as one 1-d tensor of token ids, each step `batch` random
               offsets, x and y stacked from them (y one token later), forward, cross-entropy over the
               flattened (B*T, V) logits, zero_grad, backward, AdamW step. Nothing else.
  b  batchlab  `batchlab.train.run_trial` on a trial built by `config.validate` + `grid.expand`, what
               `batchlab sweep` runs: the built-in chars data set and gpt model, evaluation off. Its own
               training clock (summary.json's train_seconds: the loop, without the step-0 evaluation).

Both train the built-in `gpt` on the built-in `chars` corpus. Ratios are the median over repetitions of the
per-repetition b/a ratio (the two columns of a repetition ran seconds apart, so machine drift mostly cancels).

    python benchmarks/lm_throughput.py                                   # ~1 minute on 2 CPU cores
    python benchmarks/lm_throughput.py --batch-sizes 8,64 --context 128 --reps 5 --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Measure the batchlab of the checkout this file is in, not whichever copy is installed.
_ROOT = Path(__file__).resolve().parents[1]
if (_ROOT / "batchlab" / "__init__.py").exists() and str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import torch
import torch.nn.functional as F

from batchlab.config import validate
from batchlab.data import load_dataset
from batchlab.gpt import gpt
from batchlab.grid import expand
from batchlab.train import run_trial

SEED, LR = 0, 1e-3


def experiment(args, bs: int, steps: int) -> dict:
    return {"name": "lm-bench", "dataset": {"name": "chars", "context": args.context},
            "model": {"name": "gpt", "args": {"n_layer": args.n_layer, "n_head": args.n_head, "n_embd": args.n_embd}},
            "optimizer": {"name": "adamw"}, "lr": LR, "batch_size": bs, "budget": {"steps": steps},
            "eval": {"every": 1e9, "train_subset": 0}, "checkpoint": {"every": None}, "device": "cpu",
            "seed": SEED}


def run_loop(args, ids: torch.Tensor, vocab: int, bs: int, steps: int) -> float:
    """(a) Seconds for `steps` steps of the nanoGPT-style loop."""
    torch.manual_seed(SEED)
    model = gpt((args.context,), vocab, args.n_layer, args.n_head, args.n_embd)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    gen = torch.Generator().manual_seed(SEED)
    t = args.context
    start = time.perf_counter()
    for _ in range(steps):
        offsets = torch.randint(len(ids) - t - 1, (bs,), generator=gen).tolist()
        x = torch.stack([ids[i:i + t] for i in offsets])
        y = torch.stack([ids[i + 1:i + 1 + t] for i in offsets])
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def run_batchlab(args, data, bs: int, steps: int) -> float:
    """(b) batchlab's training seconds for the same steps."""
    trial = expand(validate(experiment(args, bs, steps)))[0]
    with tempfile.TemporaryDirectory(prefix="batchlab-lm-throughput-") as tmp:
        summary = run_trial(trial.config, trial.id, trial.axes, Path(tmp), data, torch.device("cpu"),
                            command="benchmarks/lm_throughput.py", judge=False)
    if summary["status"] != "completed" or summary["steps"] != steps:
        raise RuntimeError(f"batchlab trial {summary['status']}: {summary.get('error')}")
    return summary["train_seconds"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", default="8,64,256", help="sequences per batch, comma-separated")
    p.add_argument("--context", type=int, default=64)
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=64)
    p.add_argument("--tokens", type=int, default=200_000, help="tokens per measurement (steps = tokens / batch)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadiest on a shared CPU)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_dataset(validate(experiment(args, 1, 1)).dataset, SEED)
    ids = torch.cat([data.train.x.reshape(-1), data.train.y[-1, -1:]])  # the training text as one 1-d tensor
    print(f"# gpt n_layer={args.n_layer} n_head={args.n_head} n_embd={args.n_embd}, context {args.context}, "
          f"chars corpus ({len(ids):,} training tokens), AdamW, {args.threads} thread(s), torch {torch.__version__}")
    for bs in (int(b) for b in args.batch_sizes.split(",")):
        steps = max(5, args.tokens // (bs * args.context))
        tokens = steps * bs * args.context
        run_loop(args, ids, data.num_classes, bs, max(2, steps // 5))  # warm-ups
        run_batchlab(args, data, bs, max(2, steps // 5))
        ratios = []
        for r in range(args.reps):
            columns = ("a", "b") if r % 2 == 0 else ("b", "a")
            seconds = {c: (run_loop(args, ids, data.num_classes, bs, steps) if c == "a"
                           else run_batchlab(args, data, bs, steps)) for c in columns}
            rate = {c: tokens / s for c, s in seconds.items()}
            ratios.append(rate["b"] / rate["a"])
            print(f"bs {bs:>5} rep {r} ({''.join(columns)}): loop {rate['a']:>9,.0f}  batchlab {rate['b']:>9,.0f} "
                  f"tokens/s   b/a {ratios[-1]:.3f}   load {os.getloadavg()[0]:.1f}", flush=True)
        print(f"bs {bs:>5}: {steps} steps of {bs * args.context:,} tokens; batchlab/loop tokens/s, median of "
              f"{args.reps}: {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
