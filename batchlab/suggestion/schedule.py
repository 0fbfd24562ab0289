"""`suggest --schedule`: a batch-size schedule proposed around the answer, raced against it.

The proposal is the answer's batch size B* spread over training: a quarter of it at the start, doubling each time
the examples grow 4x, twice it from a quarter of the answer's examples on (`propose` says why). It is proposed
only when the pilot's B_simple(t) grows over its run: a schedule is for a noise scale that rises. B_simple's level
is not the critical batch size (fitted on sweeps here, B_crit was 2-17x B_simple; `batchlab cbs` measured the
critical batch at 2.5-13x it on Fashion-MNIST and 0.4-6.8x on the char-level LM), nor did its pilot-run trend place
the changes well: scaled to the answer, it switched 16-17x later than the schedule that won (README). The lr moves
with the batch size by the lr rule's scale (the config's, else the one suggest's race searched around), from the
answer's lr at its batch size: the race's best lrs are one seed's, a factor of 2 apart, and their slope moved from
run to run (at 0.88 a tie at 128 made it linear and put 1,024's lr at 1.4x its best); the proposal trains at batch
sizes the scan timed.

The schedule trains on the seeds the answer was confirmed on and is decided against it by the report's rule
(batchlab.reporting.decision: steps at each batch size x that batch size's seconds per step, per seed).
"""

from __future__ import annotations

import math
from enum import Enum

import numpy as np

from batchlab import batches
from batchlab.recommend import yaml_line
from batchlab.reporting.decision import Mixed, StepCost, decide
from batchlab.reporting.schedules import STEPS_SAVED  # the bar, held to as the report holds it


class Verdict(str, Enum):
    """What the race found for the schedule, against the answer (suggest.json's `verdict`)."""
    FASTER = "faster"  # the decision names it alone
    TIE = "tie"  # within the noise of the answer
    SLOWER = "slower"
    MISSED = "missed"  # the target, on some seed (or not trained within the budget): never the answer
    UNTIMED = "untimed"  # a batch size it trained at could not be timed: not decided


# The proposal: the answer's batch size B* spread over training, B*/4 at the start, doubling each time the examples
# trained grow 4x (as their square root), 2B* from a quarter of B*'s examples E* on. Evidence: on Fashion-MNIST at
# test accuracy 0.88 that shape took 30-41% fewer steps than B* = 512 with 0.82-0.97x its examples on six seeds of
# six (README); the critical batch `batchlab cbs` measured on the char LM grew about as the square root of the
# examples. Small batches early take fewer examples while the gradient noise is low; large ones late, fewer steps.
START, END = 0.25, 2.0  # the first and last batch sizes, x B*
END_AT = 0.25  # the last batch size from this fraction of E* on
GROWTH = 4  # examples grow this many times per doubling of the batch size


class NoSchedule(Exception):
    """Why no schedule is proposed (suggest's notes say it)."""


def propose(points: list[tuple[float, float]], best: int, examples: float, timed: list[int]) -> list[list[int]]:
    """[[examples, batch size], ...]: the powers of 2 among `timed` from START x `best` to END x `best`, each from
    END_AT x `examples` / GROWTH^k on (k: its doublings below END x `best`; `examples`: what `best` needed, the
    median over the answer's seeds); where whole examples cannot tell two changes apart, the larger batch size
    starts there. `points`: the pilot's (examples trained, B_simple). Raises NoSchedule when B_simple does not
    grow over the run (a power law fitted to the measurements after the start: then a constant batch size is the
    answer), or no timed power of 2 lies both at or below `best` and above it."""
    kept = np.array([(e, v) for e, v in points if e > 0 and np.isfinite(v) and v > 0], dtype=float).reshape(-1, 2)
    if len(kept) < 3:
        raise NoSchedule(f"{len(kept)} of the pilot's B_simple measurements were finite, fewer than 3 to see a trend")
    if np.polyfit(np.log(kept[:, 0]), np.log(kept[:, 1]), 1)[0] <= 0:
        raise NoSchedule("B_simple did not grow over the pilot's run: a constant batch size is the answer")
    sizes = [b for b in sorted(timed) if b & (b - 1) == 0 and START * best <= b <= END * best]
    if not sizes or sizes[0] > best or sizes[-1] <= best:
        raise NoSchedule(f"a schedule needs a power of 2 from {START:g}x to 1x the answer's batch size {best} "
                         f"and one above it up to {END:g}x, and the scan timed {', '.join(map(str, timed))}")
    schedule = [[0, sizes[0]]]
    for b in sizes[1:]:
        at = round(END_AT * examples / GROWTH ** math.log2(END * best / b))
        if at <= schedule[-1][0]:
            schedule[-1][1] = b
        else:
            schedule.append([at, b])
    if len(schedule) < 2:
        raise NoSchedule(f"the answer reached the target in {examples:g} examples: too few to change the batch size")
    return schedule


def around_each(search, points: list[tuple[float, float]], anchors: list[tuple[int, float]], seeds: list[int],
                timed: list[int]) -> tuple[list[tuple[int, float, list[list[int]]]], dict[str, list[int]]]:
    """The schedules to race: one around each of `anchors` ((batch size, lr): the answer, then the constants
    within its noise), the same schedule once; and why any was not proposed. Around each, not the answer alone:
    which of two tied constants is the answer is the timing's coin flip, and the schedule moved with it (at 0.88
    on seeds 3-5 the answer was 256, 6.48 s against 512's 6.57 s, and the schedule around 256 cleared the bar on
    one seed of three where the one around 512 had on every seed of two other runs). `why`: each reason for
    no schedule, with the batch sizes it held for."""
    proposals, why = [], {}
    for b, lr in anchors:
        try:
            examples = [search.examples(b, lr, seed) for seed in seeds]
            if None in examples:
                raise NoSchedule(f"the examples to the target are not recorded on seed {seeds[examples.index(None)]}")
            schedule = propose(points, b, float(np.median(examples)), timed)
        except NoSchedule as e:
            why.setdefault(str(e), []).append(b)
            continue
        if all(schedule != other for _, _, other in proposals):
            proposals.append((b, lr, schedule))
    return proposals, why


def race(search, schedule: list[list[int]], best: int, lr: float, scale: str, seeds: list[int],
         steps: list[int], costs: dict[int, StepCost], around: tuple[int, float] | None = None) -> dict:
    """Train `schedule` on `seeds` (those `best` reached the target on, with `steps`), and decide between them.
    The schedule's lr at its first batch size is the lr of the constant it was proposed around (`around`:
    (batch size, lr); the answer's, `best` and `lr`, unless given) moved by `scale`."""
    start = schedule[0][1]
    spec = {"schedule": schedule, "lr_scale": scale}
    anchor, anchor_lr = around or (best, lr)
    first_lr = anchor_lr * batches.scaled(scale, start / anchor)
    label = batches.label({"schedule": schedule})
    runs = []
    for seed in seeds:
        summary = search.train("schedule", spec, first_lr, seed)
        if summary is None:
            break
        hit = search.hit(summary)
        runs.append({"seed": seed, "trial_id": summary["trial_id"], "steps": hit and hit["steps"],
                     "examples": hit and hit["examples"],
                     "by_batch": batches.steps_by_batch(summary["batch_changes"], hit["steps"]) if hit else None,
                     "constant_steps": steps[seeds.index(seed)],
                     "constant_examples": search.examples(best, lr, seed)})
    out = {"schedule": schedule, "yaml": yaml_line(schedule), "label": label, "lr_scale": scale, "lr": first_lr,
           "around": anchor, "against": {"batch_size": best, "lr": lr}, "runs": runs, "reached_every_seed": False}
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
    tied = result["around"] != result["against"]["batch_size"]
    head = (f"Schedule {result['label']} ({result['yaml']}, lr {result['lr']:g} at the start, {result['lr_scale']}"
            + (f"; proposed around batch size {result['around']}, as fast within the noise" if tied else "") + ")")
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
