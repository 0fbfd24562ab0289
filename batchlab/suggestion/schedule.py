"""`suggest --schedule`: a batch-size schedule proposed from the pilot's B_simple(t), raced against the answer.

The noise run measures B_simple at MEASUREMENTS points of the pilot's training. Its level is not the critical
batch size (fitted on sweeps here, B_crit was 2-17x B_simple; `batchlab cbs` measured the critical batch at 3-7x
it on Fashion-MNIST and 0.4-6.8x on the char-level LM), but its rise over training is what a schedule is for. So
the proposal keeps B_simple's shape and takes its level from the answer: B_simple(t) scaled so that its median
over the run is the best constant batch size suggest found, then `recommend` (powers of 2, never decreasing),
within the batch sizes whose steps the scan timed. The lr moves with the batch size as the race found the best lr
to move (`lr_scale`: none, sqrt or linear, whichever is nearest), from the answer's lr at its batch size.

The schedule trains on the seeds the answer was confirmed on and is decided against it by the report's rule
(batchlab.reporting.decision: steps at each batch size x that batch size's seconds per step, per seed).
"""

from __future__ import annotations

from enum import Enum

import numpy as np

from batchlab import batches
from batchlab.recommend import recommend, yaml_line
from batchlab.reporting.decision import Mixed, StepCost, decide
from batchlab.reporting.schedules import STEPS_SAVED  # the bar, held to as the report holds it


class Verdict(str, Enum):
    """What the race found for the schedule, against the answer (suggest.json's `verdict`)."""
    FASTER = "faster"  # the decision names it alone
    TIE = "tie"  # within the noise of the answer
    SLOWER = "slower"
    MISSED = "missed"  # the target, on some seed (or not trained within the budget): never the answer
    UNTIMED = "untimed"  # a batch size it trained at could not be timed: not decided


def propose(points: list[tuple[float, float]], best: int, timed: list[int]) -> list[list[int]] | None:
    """[[examples, batch size], ...] from B_simple(t) (`points`: (examples trained, B_simple)): its trend, a power
    law fitted to the measurements after the start (one noisy measurement must not set the schedule), scaled so
    its median over the points is `best`, rounded to the nearest power of 2 among `timed`. None when B_simple
    does not grow over the run (a constant batch size is then the answer) or fewer than 3 measurements are
    finite."""
    kept = np.array([(e, v) for e, v in points if e > 0 and np.isfinite(v) and v > 0], dtype=float).reshape(-1, 2)
    powers = [b for b in timed if b & (b - 1) == 0]
    if len(kept) < 3 or not powers:
        return None
    slope, intercept = np.polyfit(np.log(kept[:, 0]), np.log(kept[:, 1]), 1)
    if slope <= 0:
        return None
    trend = np.exp(intercept + slope * np.log(kept[:, 0]))
    # x sqrt(2): `recommend` takes the power of 2 at or below a value (right for a measured critical batch, which
    # a batch should not pass); a trend scaled to the answer goes to the nearest power of 2 instead (in log2)
    scaled = trend * best / float(np.median(trend)) * 2 ** 0.5
    return recommend([(0.0, scaled[0]), *zip(kept[1:, 0], scaled[1:])], min(powers), max(powers))


def lr_scale(best_lr: dict[int, float], default: str) -> str:
    """How the best lr moved with the batch size in the race (a least-squares slope of log lr on log batch size,
    the nearest of none 0, sqrt 0.5, linear 1), else `default` (the search's rule) with fewer than 2 sizes."""
    if len(best_lr) < 2:
        return default
    sizes = sorted(best_lr)
    slope = np.polyfit(np.log(sizes), np.log([best_lr[b] for b in sizes]), 1)[0]
    return min((("none", 0.0), ("sqrt", 0.5), ("linear", 1.0)), key=lambda kv: abs(kv[1] - slope))[0]


def race(search, schedule: list[list[int]], best: int, lr: float, scale: str, seeds: list[int],
         steps: list[int], costs: dict[int, StepCost]) -> dict:
    """Train `schedule` on `seeds` (those `best` reached the target on, with `steps`), and decide between them.
    The schedule's lr at its first batch size is `lr` (the answer's) moved by `scale`."""
    start = schedule[0][1]
    spec = {"schedule": schedule, "lr_scale": scale}
    first_lr = lr * batches.scaled(scale, start / best)
    label = batches.label({"schedule": schedule})
    runs = []
    for seed in seeds:
        summary = search.train("schedule", spec, first_lr, seed)
        if summary is None:
            break
        hit = search.hit(summary)
        constant = search.trial_summary(best, lr, seed)
        runs.append({"seed": seed, "trial_id": summary["trial_id"], "steps": hit and hit["steps"],
                     "examples": hit and hit["examples"],
                     "by_batch": batches.steps_by_batch(summary["batch_changes"], hit["steps"]) if hit else None,
                     "constant_steps": steps[seeds.index(seed)],
                     "constant_examples": (search.hit(constant) or {}).get("examples") if constant else None})
    out = {"schedule": schedule, "yaml": yaml_line(schedule), "label": label, "lr_scale": scale, "lr": first_lr,
           "against": {"batch_size": best, "lr": lr}, "runs": runs, "reached_every_seed": False}
    if len(runs) < len(seeds) or any(r["steps"] is None for r in runs):
        out["verdict"] = Verdict.MISSED.value
        return out
    sizes = sorted({b for r in runs for b in r["by_batch"]})
    if any(b not in costs for b in sizes):
        out["verdict"] = Verdict.UNTIMED.value
        return out
    mixed = Mixed(np.array([[r["by_batch"].get(b, 0) for b in sizes] for r in runs], dtype=float),
                  [costs[b] for b in sizes])
    decision = decide({best: np.array(steps, dtype=float)}, costs, {label: mixed})
    saved = [1 - r["steps"] / r["constant_steps"] for r in runs]
    ratios = [r["examples"] / r["constant_examples"] if r["constant_examples"] else None for r in runs]
    out.update(reached_every_seed=True, predicted=decision.predicted[label],
               constant_predicted=decision.predicted[best],
               steps_saved=saved, examples_ratio=ratios,
               bar=all(s >= STEPS_SAVED and x is not None and x <= 1 for s, x in zip(saved, ratios)),
               verdict=(Verdict.FASTER if decision.fastest == label and not decision.within_noise else
                        Verdict.TIE if decision.within_noise else Verdict.SLOWER).value)
    return out


def sentence(result: dict) -> str:
    """What the race found, one sentence after suggest's answer."""
    against = f"batch size {result['against']['batch_size']}"
    head = f"Schedule {result['label']} ({result['yaml']}, lr {result['lr']:g} at the start, {result['lr_scale']})"
    if result["verdict"] == Verdict.MISSED:
        return f"{head} did not reach the target on every seed: keep {against}."
    if result["verdict"] == Verdict.UNTIMED:
        return f"{head}: a batch size it trained at could not be timed; not decided."
    steps = "/".join(str(r["steps"]) for r in result["runs"])
    constant = "/".join(str(r["constant_steps"]) for r in result["runs"])
    saved = "/".join(f"{s:.0%} fewer" if s >= 0 else f"{-s:.0%} more" for s in result["steps_saved"])
    seconds = f"{result['predicted'][0]:.3g} s against {result['constant_predicted'][0]:.3g} s predicted"
    verdict = {Verdict.FASTER: f"use it instead of {against}", Verdict.TIE: f"it cannot be told apart from {against}",
               Verdict.SLOWER: f"keep {against}"}[Verdict(result["verdict"])]
    return (f"{head}: {steps} steps against {constant} ({saved}), {seconds}: {verdict}"
            + ("" if result["bar"] else f" (not {STEPS_SAVED:.0%} fewer steps with no more examples on every seed)")
            + ".")
