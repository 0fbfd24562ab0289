"""The critical batch size at one point, from its branches' loss curves: pure functions of the figures.

A branch's curve is its held-out loss at evaluations, [(examples trained since the point, loss), ...], the
first at 0. The definition (batchlab.critical_batch's docstring has it in full):
- L*: the loss the smallest batch of the ladder reaches after the window of W examples (its best lr);
- E_B: the examples batch B needs to reach L*, interpolated linearly between evaluations (its best lr);
- cbs_fit: B_crit of E_B = E_min (1 + B / B_crit) fitted across the ladder (batchlab.frontier, on steps
  S_B = E_B / B): the batch at which E_B = 2 E_min, McCandlish et al.'s critical batch (none, with a note,
  over CBS_ABOVE x the ladder's largest batch: not measured there);
- cbs_tolerance: the largest batch of the ladder with E_B <= (1 + tolerance) E_ref, E_ref the smallest batch's
  (Merrill et al.'s "largest batch within tolerance"; tolerance 1: twice the examples).
"""

from __future__ import annotations

import math

from batchlab.cbs_defaults import CBS_ABOVE
from batchlab.errors import counted
from batchlab.frontier import MIN_POINTS, TooFewPoints, fit

Curve = list[tuple[float, float]]


def crossing(curve: Curve, level: float) -> float | None:
    """The examples at which the curve first reaches `level` (loss <= level), linear between evaluations;
    None when it never does."""
    for (e0, l0), (e1, l1) in zip([(math.nan, math.inf)] + curve[:-1], curve):
        if math.isfinite(l1) and l1 <= level:
            if not math.isfinite(e0) or not math.isfinite(l0) or l0 <= l1:
                return float(e1)
            return float(e0 + (l0 - level) / (l0 - l1) * (e1 - e0))
    return None


def loss_at(curve: Curve, examples: float) -> float | None:
    """The loss at the first evaluation at or past `examples` (None: the curve stops short)."""
    for e, loss in curve:
        if e >= examples:
            return loss
    return None


def best(branches: list[dict]) -> dict | None:
    """Of one batch size's branches (its lr search), the one that reaches L* in the fewest examples; none
    reaching it: the lowest loss after the window."""
    reached = [b for b in branches if b["examples_to_target"] is not None]
    if reached:
        return min(reached, key=lambda b: b["examples_to_target"])
    finite = [b for b in branches if b["loss_after_window"] is not None and math.isfinite(b["loss_after_window"])]
    return min(finite, key=lambda b: b["loss_after_window"]) if finite else None


def level(smallest: list[dict]) -> float | None:
    """L*: the lowest loss after the window among the smallest batch's branches."""
    losses = [b["loss_after_window"] for b in smallest
              if b["loss_after_window"] is not None and math.isfinite(b["loss_after_window"])]
    return min(losses) if losses else None


def critical(branches: list[dict], tolerance: float) -> dict:
    """A point's figures from its branches (each with batch_size, examples_to_target, loss_after_window):
    {target_loss, e_ref, examples_by_batch, cbs_fit, cbs_tolerance, fit_r2, note}. Marks each branch `best`.
    No figures (a note why) where L* is not below the point's loss: the window was too short to measure
    progress at the smallest batch (one evaluation's noise exceeds it)."""
    by_batch: dict[int, list[dict]] = {}
    for b in branches:
        by_batch.setdefault(b["batch_size"], []).append(b)
    sizes = sorted(by_batch)
    target = level(by_batch[sizes[0]]) if sizes else None
    start = branches[0]["curve"][0][1] if branches else None
    measurable = target is not None and start is not None and target < start  # else every batch "reaches" it at once
    if not measurable:  # so branches.csv says what cbs.json does: no examples to a target that is not one (and
        for b in branches:  # each batch's best lr is then the lowest loss after the window)
            b["examples_to_target"] = None
    chosen = {size: best(by_batch[size]) for size in sizes}
    for b in branches:
        b["best"] = b is chosen[b["batch_size"]]
    if not measurable:
        errors = [b["error"] for b in by_batch[sizes[0]] if b.get("error")] if sizes else []
        note = (f"every branch at the smallest batch ({sizes[0]}) failed: {errors[0]}" if sizes and
                len(errors) == len(by_batch[sizes[0]]) else
                "the smallest batch ended the window no lower than the point's loss: give a longer window")
        return {"target_loss": target, "e_ref": None, "examples_by_batch": {str(s): None for s in sizes},
                "cbs_fit": None, "fit_r2": None, "cbs_tolerance": None, "note": note}
    examples = {size: (c["examples_to_target"] if c else None) for size, c in chosen.items()}
    e_ref = examples[sizes[0]] if sizes else None
    within = [s for s in sizes if e_ref and examples[s] is not None and examples[s] <= (1 + tolerance) * e_ref]
    reached = [(s, e) for s, e in examples.items() if e is not None and e > 0]
    note = None
    try:
        frontier = fit([s for s, _ in reached], [e / s for s, e in reached])
        cbs_fit, r2 = frontier.b_crit, frontier.r2
        if cbs_fit is not None and cbs_fit > CBS_ABOVE * sizes[-1]:
            note = (f"E_B grew by under 1/{CBS_ABOVE} across the ladder: the critical batch lies above its largest "
                    f"batch, {sizes[-1]:,} (a ladder reaching higher measures it)")
            cbs_fit = None
    except TooFewPoints:
        cbs_fit, r2 = None, None
        broken = [s for s in sizes if all(b.get("error") for b in by_batch[s])]
        note = (f"{counted(len(reached), 'batch size')} of the ladder reached L* within "
                f"their branches, a fit needs {MIN_POINTS} " + (
                    f"({', '.join(map(str, broken))} failed at every lr)" if broken else
                    f"(the ladder has {len(sizes)}: give more --batch-sizes)" if len(sizes) < MIN_POINTS else
                    "(a longer --window gives the larger ones room)"))
    return {"target_loss": target, "e_ref": e_ref, "examples_by_batch": {str(s): e for s, e in examples.items()},
            "cbs_fit": cbs_fit, "fit_r2": r2, "cbs_tolerance": max(within) if within else None, "note": note}
