"""Batch-size science on top of the tables, for the headline target.

- The steps-examples frontier (McCandlish et al. 2018): S(B) is the median steps to the target of
  batch size B's best lr (time_to_accuracy rows that reached it), E(B) = B S(B); fitted with
  batchlab.frontier, never from fewer than 3 batch sizes.
- The gradient noise scale B_simple measured during training (measured_noise.py), next to the
  fitted B_crit.
- The lr per batch size, against the config's lr rule when it has one.
- The generalisation gap (Keskar et al. 2016): train-subset minus test accuracy (test minus
  train-subset loss for regression) at the same evaluation rows.

Rules (report.md lists them too):
- A batch size whose trials the race cut (tables.py `cut_by_race`) is left out: its steps are not
  known to be its best, and fitting the survivors alone is said in a note.
- A batch size above the training set runs full-batch steps: in the frontier it counts as the
  training-set size (B_used), and of several configured sizes with the same B_used only the
  smallest is fitted.
- The gap "at the target" is read at the first evaluation row at or after the step where the
  seed reached the target (the same row when the records come from `batchlab sweep`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from batchlab.records import Status
from batchlab.errors import counted
from batchlab.frontier import MIN_POINTS, Frontier, TooFewPoints, fit
from batchlab.reporting import display
from batchlab.reporting.load import INFEASIBLE, SweepRecords, same_target
from batchlab.reporting.measured_noise import NoiseResult, measured_noise
from batchlab.reporting.tables import REACHED, Tables

FRONTIER_COLUMNS = ["target_metric", "target", "fitted", "reason", "s_min", "e_min", "b_crit", "r2",
                    "rms_log_error", "points", "batch_sizes"]
LR_SCALES = {"linear": lambda ratio: ratio, "sqrt": np.sqrt, "none": lambda ratio: np.ones_like(ratio)}


@dataclass
class FrontierResult:
    target: float
    target_metric: str
    points: pd.DataFrame  # a row per batch size that reached: batch_size, batch_used, steps, examples (B·S),
    # seconds, recorded_examples (the median recorded, each epoch's short last batch counted)
    fit: Frontier | None  # None: the data cannot support a fit (reason says why)
    reason: str = ""
    notes: list[str] = field(default_factory=list)  # caveats about a fit that was made
    regimes: dict[int, str] = field(default_factory=dict)  # configured batch size -> regime (with a fit)
    fitted_steps: dict[int, float] = field(default_factory=dict)  # configured batch size -> S_fit(B_used)

    def table(self) -> pd.DataFrame:
        """frontier.csv: one row, the fit or the reason there is none."""
        f = self.fit
        row = {"target_metric": self.target_metric, "target": self.target, "fitted": f is not None,
               "reason": self.reason, "points": len(f.batch_sizes) if f else len(self.points),
               "batch_sizes": ";".join(str(int(b)) for b in (f.batch_sizes if f else self.points["batch_used"]))}
        for key in ("s_min", "e_min", "b_crit", "r2", "rms_log_error"):
            row[key] = getattr(f, key) if f else math.nan
        return pd.DataFrame([row], columns=FRONTIER_COLUMNS)


@dataclass
class GapResult:
    kind: str  # "accuracy" (train - test) or "loss" (test - train)
    table: pd.DataFrame  # generalisation_gap.csv: a row per batch size (its best lr's seeds)
    curves: dict[int, list[pd.DataFrame]]  # batch size -> per seed: epoch, gap at every evaluation row


@dataclass
class LrResult:
    rule: dict | None  # config.json lr_rule (base, base_batch_size, scale), when valid
    table: pd.DataFrame  # batch_size, best_lr, reached, rule_lr, best_over_rule
    tried: pd.DataFrame  # every finished (batch_size, lr, status) tried


@dataclass
class Science:
    frontier: FrontierResult
    noise: NoiseResult | None
    noise_note: str  # why there is no noise section (empty when there is one)
    gap: GapResult | None
    gap_note: str
    lr: LrResult


def build_science(rec: SweepRecords, tables: Tables) -> Science:
    """Everything above, for the headline target. Adds two columns to tables.time_to_accuracy,
    filled on the headline target's rows when the frontier was fitted: frontier_steps (the
    fitted S at that batch size) and regime."""
    frontier = _frontier(rec, tables)
    tta = tables.time_to_accuracy
    headline = same_target(tta["target"], tables.target)
    tta["frontier_steps"] = np.where(headline, tta["batch_size"].map(frontier.fitted_steps), np.nan)
    tta["regime"] = tta["batch_size"].map(frontier.regimes).where(headline, None)
    noise, noise_note = measured_noise(rec, tables)
    gap, gap_note = _gap(rec, tables)
    lr = _lr(rec, tables)
    return Science(frontier, noise, noise_note, gap, gap_note, lr)


# --- the frontier ------------------------------------------------------------------------------

def measured(rows: pd.DataFrame) -> pd.DataFrame:
    """The time-to-accuracy rows whose steps to the target are known and not 0: reached on every seed, not cut
    by the race, after training began. What the frontier is fitted to and examples are compared on."""
    steps = rows["steps"].astype(float)
    return rows[(rows["status"] == REACHED) & ~rows["cut_by_race"].astype(bool) & np.isfinite(steps) & (steps > 0)]


def _frontier(rec: SweepRecords, tables: Tables) -> FrontierResult:
    rows = tables.headline_rows.sort_values("batch_size")
    train_size = rec.trials.groupby("batch_size")["train_size"].median()
    cut = rows[rows["cut_by_race"]]
    reached = measured(rows)
    points = pd.DataFrame({
        "batch_size": reached["batch_size"].astype(int).to_numpy(),
        "batch_used": [_batch_used(b, train_size.get(b, math.nan)) for b in reached["batch_size"]],
        "steps": reached["steps"].astype(float).to_numpy(),
        "seconds": reached["seconds"].astype(float).to_numpy(),
        "recorded_examples": reached["examples"].astype(float).to_numpy(),  # each epoch's short last batch counted
    })
    points["examples"] = points["batch_used"] * points["steps"]  # the frontier's E = B·S
    notes = []
    if len(cut):
        sizes = ", ".join(str(int(b)) for b in cut["batch_size"])
        notes.append(f"the race cut trials at batch size{'s' * (len(cut) != 1)} {sizes} "
                     "before their best lr was known: their steps to the target are unknown, so they are left out "
                     "of the fit")
    duplicates = points[points.duplicated("batch_used")]
    if len(duplicates):
        kept = points.drop_duplicates("batch_used", keep="first")
        full = kept[kept["batch_used"].isin(duplicates["batch_used"])]
        notes.append(f"batch size{'s' * (len(duplicates) != 1)} {', '.join(map(str, duplicates['batch_size']))} "
                     f"exceed{'s' * (len(duplicates) == 1)} the training set "
                     f"({', '.join(str(int(b)) for b in full['batch_used'])} examples): their steps are full-batch "
                     f"steps like batch size {', '.join(map(str, full['batch_size']))}'s, which alone is fitted")
        points = kept.reset_index(drop=True)
    result = FrontierResult(tables.target, rec.target_metric, points, None, notes=notes)
    try:
        with np.errstate(all="ignore"):
            result.fit = fit(points["batch_used"], points["steps"])
    except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:  # TooFewPoints is a ValueError
        result.reason = str(exc) or type(exc).__name__
        if isinstance(exc, TooFewPoints) and len(cut):
            result.reason = (f"{counted(len(points), 'batch size')} reached the target with known steps; a fit needs "
                             f"{MIN_POINTS} (the race cut {', '.join(str(int(b)) for b in cut['batch_size'])}'s "
                             "trials before their steps to the target were known)")
        return result
    f = result.fit
    used = {int(b): _batch_used(b, train_size.get(b, math.nan)) for b in rows["batch_size"]}
    result.regimes = {b: f.regime(u) for b, u in used.items()}
    result.fitted_steps = {b: float(f.steps_at(u)) for b, u in used.items()}
    low, high = min(f.batch_sizes), max(f.batch_sizes)
    if not low <= f.b_crit <= high:
        notes.append(f"B_crit = {display.number(f.b_crit)} lies outside the batch sizes fitted ({low}–{high}): "
                     "it is an extrapolation")
    if math.isfinite(f.r2) and f.r2 < 0.9:
        notes.append(f"the fit is loose (R² = {f.r2:.2f}): the measured S(B) does not follow "
                     "S_min (1 + B_crit / B) closely")
    return result


def _batch_used(batch_size, train_size) -> int:
    """The examples per step: a batch above the training set is the full batch."""
    b = int(batch_size)
    return min(b, int(train_size)) if isinstance(train_size, (int, float)) and math.isfinite(train_size) \
        and train_size > 0 else b


# --- the generalisation gap --------------------------------------------------------------------

def _gap(rec: SweepRecords, tables: Tables) -> tuple[GapResult | None, str]:
    kind = "loss" if rec.regression else "accuracy"
    train_col, test_col = f"train_eval_{kind}", f"test_{kind}"
    hits = rec.hits[same_target(rec.hits["target"], tables.target)].set_index("trial_id")["steps"]
    rows, curves = [], {}
    for bs, choice in sorted(tables.plotted.items()):
        ends, at_target, seeds = [], [], []
        for trial_id in choice.trial_ids:
            frame = rec.metrics.get(trial_id)
            if frame is None:
                continue
            data = frame[["step", "epoch", train_col, test_col]].to_numpy(dtype=float)
            data = data[np.isfinite(data).all(axis=1)]
            if not len(data):
                continue
            gap = data[:, 2] - data[:, 3] if kind == "accuracy" else data[:, 3] - data[:, 2]
            seeds.append(pd.DataFrame({"epoch": data[:, 1], "gap": gap}))
            ends.append((data[-1, 2], data[-1, 3], gap[-1]))
            step = hits.get(trial_id, math.nan)
            after = np.flatnonzero(data[:, 0] >= step) if math.isfinite(step) else []
            if len(after):
                i = after[0]
                at_target.append((data[i, 2], data[i, 3], gap[i]))
        if not seeds:
            continue
        curves[bs] = seeds
        end, target = np.array(ends), np.array(at_target).reshape(-1, 3)
        rows.append({
            "batch_size": bs, "lr": choice.lr, "metric": kind, "seeds": len(seeds),
            "train_end": np.median(end[:, 0]), "test_end": np.median(end[:, 1]), "gap_end": np.median(end[:, 2]),
            "seeds_at_target": len(target),
            "train_at_target": np.median(target[:, 0]) if len(target) else math.nan,
            "test_at_target": np.median(target[:, 1]) if len(target) else math.nan,
            "gap_at_target": np.median(target[:, 2]) if len(target) else math.nan,
        })
    if not rows:
        return None, (f"No train-subset evaluation was recorded ({train_col} is empty in metrics.csv: "
                      "eval.train_subset is 0 or the records predate it): no generalisation gap.")
    return GapResult(kind, pd.DataFrame(rows), curves), ""


# --- lr per batch size ---------------------------------------------------------------------------

def lr_rule(config: dict) -> dict | None:
    """config.json's lr_rule when it is usable: base > 0, base_batch_size > 0, a known scale."""
    rule = config.get("lr_rule")
    if not isinstance(rule, dict):
        return None
    base, base_bs, scale = rule.get("base"), rule.get("base_batch_size"), rule.get("scale", "linear")
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in (base, base_bs))
    return {**rule, "scale": scale} if numbers and scale in LR_SCALES else None


def rule_lr(rule: dict, batch_sizes) -> np.ndarray:
    """The rule's lr (factor 1) at each batch size: base * scale(B / base_batch_size)."""
    ratio = np.asarray(batch_sizes, dtype=float) / float(rule["base_batch_size"])
    return float(rule["base"]) * LR_SCALES[rule["scale"]](ratio)


def _lr(rec: SweepRecords, tables: Tables) -> LrResult:
    rule = lr_rule(rec.config)
    rows = tables.headline_rows.sort_values("batch_size")
    rows = rows[rows["best_lr"].notna()]
    table = pd.DataFrame({"batch_size": rows["batch_size"].astype(int).to_numpy(),
                          "best_lr": rows["best_lr"].astype(float).to_numpy(),
                          "reached": (rows["status"] == REACHED).to_numpy()})
    table["rule_lr"] = rule_lr(rule, table["batch_size"]) if rule else math.nan
    table["best_over_rule"] = table["best_lr"] / table["rule_lr"]
    finished = rec.trials[rec.trials["status"].isin((Status.COMPLETED.value, *INFEASIBLE))]  # raced: not run out
    tried = finished[["batch_size", "lr", "status"]].drop_duplicates().reset_index(drop=True)
    return LrResult(rule, table, tried)
