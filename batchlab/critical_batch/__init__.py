"""`batchlab cbs`: the critical batch size measured as training goes, by branching (Merrill et al. 2025,
"Critical batch size revisited"), beside the gradient noise scale B_simple over the same run.

The procedure:
- A reference run: the config at its batch size B0 (the lr its sweep's lr rule gives B0, else its lr; the
  first seed of its sweep), its state kept at K points geometric in examples over the budget, where B_simple is
  measured at fixed parameters (batchlab.noise_scale.at_fixed_parameters).
- From each point, a branch for every batch size B of a ladder and every lr of its small search (the rule's
  factors at B; without a rule, the sweep's lr values or the config's lr), each evaluated on the same held-out
  examples.
- The definition. The loss level L* is what the smallest batch of the ladder reaches after a window of W
  examples (its best lr). E_B is the examples batch B needs to reach L* (its best lr; interpolated between
  evaluations, one step at least; a branch runs at most (1 + tolerance) W examples). The critical batch size
  CBS(t) is the batch at which E_B = 2 E_min (McCandlish et al. 2018: twice the examples of the small-batch
  limit), from E_B = E_min (1 + B / B_crit) fitted across the ladder (batchlab.frontier): `cbs` (`cbs_fit`).
  Beside it, Merrill et al.'s "largest batch within tolerance": the largest batch of the ladder with
  E_B <= (1 + tolerance) E_ref, E_ref the smallest batch's (`cbs_tolerance`).
Defaults (points, window, tolerance, ladder): batchlab.cbs_defaults, with their reasons.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from batchlab import registry
from batchlab.cbs_defaults import (CBS_EVAL_EXAMPLES, CBS_EVALS, CBS_FIRST, CBS_LADDER, CBS_MEASUREMENTS, CBS_POINTS,
                                   CBS_POINTS_MAX, CBS_TOLERANCE, CBS_TOLERANCE_MAX, CBS_WINDOW)
from batchlab.critical_batch import analysis
from batchlab.critical_batch.branching import Diverged, Parts, branch, examples_to, failed, reference
from batchlab.data import load_dataset
from batchlab.errors import BatchlabError, ConfigError, OptionError, TrainingError, described
from batchlab.fields import MEASUREMENTS_MAX
from batchlab.machine import machine_facts, resolve_device
from batchlab.preflight import check_units
from batchlab.recommend import recommend, yaml_line
from batchlab.schema import Experiment
from batchlab.train import budget_steps

SOURCES = ("branching", "noise")
MEASURES = {"fit": "cbs", "tolerance": "cbs_tolerance"}  # --by: the point's figure a schedule is recommended from
Progress = Callable[[str, int, int], None]  # (stage: "reference" | "branches", done, total)


def folder(out: Path, name: str, source: str) -> Path:
    """Where a measurement's files go: OUT/<name>/cbs, or cbs-noise for B_simple alone (so that a cheap noise-only
    run never overwrites the branches of a long one)."""
    return Path(out) / name / ("cbs" if source == "branching" else "cbs-noise")


@dataclass
class Cbs:
    """What `batchlab cbs` measured: per point (`points`) and per branch (`branches`), the recommended
    schedule, and the cost in training seconds."""
    name: str
    source: str  # branching: CBS(t) by branching; noise: B_simple(t) alone
    batch_size: int  # B0, the reference's
    lr: float  # the reference's
    seed: int
    ladder: list[int]
    lrs: dict[str, list[float]]  # each batch size's lr search
    window: int  # W, examples
    tolerance: float
    budget_examples: int
    context: int | None  # sequence tasks: tokens per example
    points: list[dict] = field(default_factory=list)
    branches: list[dict] = field(default_factory=list)
    points_asked: int = 0  # more than len(points) where several fell within one step of the reference
    reference_note: str | None = None  # where the reference run diverged, past the points kept
    by: str = "fit"  # the schedule's measure (MEASURES; B_simple with source noise)
    fraction: float = 1.0  # the schedule trains at this fraction of it
    schedule: list[list[int]] | None = None
    schedule_line: str | None = None
    schedule_note: str | None = None  # why there is none
    schedule_late: list[list[int]] = field(default_factory=list)  # changes at the budget's end, left out
    reference_seconds: float = 0.0
    branch_seconds: float = 0.0
    interrupted: bool = False
    machine: dict = field(default_factory=dict)
    path: str | None = None  # where the files went

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Setup:
    """The validated plan: the reference config, the ladder and each batch size's lrs, the points, the window."""
    cfg: Experiment
    ladder: list[int]
    lrs: dict[int, list[float]]
    at: list[int]  # examples of the points
    window: int
    tolerance: float
    budget_examples: int
    total_steps: int
    evals: int = CBS_EVALS


def lr_search(experiment: Experiment, batch: int) -> list[float]:
    """The lrs tried at `batch`: the lr rule's at every factor; else the sweep's lr values; else the config's."""
    rule = experiment.lr_rule
    if rule is not None:
        return [rule.lr(batch, f) for f in rule.factors]
    values = experiment.sweep.get("lr")
    return [float(v) for v in values] if isinstance(values, list) else [experiment.lr]


def first_seed(experiment: Experiment) -> int:
    """The reference's seed: the first of the sweep's seed axis, else the config's."""
    seeds = experiment.sweep.get("seed")
    return int(seeds[0]) if isinstance(seeds, list) else experiment.seed


def plan(experiment: Experiment, n: int, batch_sizes: list[int] | None, points: int, window: int | None,
         tolerance: float, tokens_per_example: int = 1) -> Setup:
    """Check the options against the config and the data; raise ConfigError with the reason."""
    seed = first_seed(experiment)
    rule = experiment.lr_rule
    b0 = experiment.batch_size
    schedule = experiment.schedule
    if rule is not None and rule.warmup_epochs is not None:
        schedule = schedule.model_copy(update={"warmup_epochs": rule.warmup_epochs})
    cfg = experiment.model_copy(update={"sweep": {}, "seed": seed, "schedule": schedule,
                                        "lr": rule.lr(b0) if rule else experiment.lr})
    if b0 > n:
        raise ConfigError(f"batch_size: {b0} is larger than the training set ({n:,} examples)")
    if experiment.batch_schedule is not None:  # the reference run is the constant batch the ladder is built on
        raise ConfigError(f"batch_size: a schedule; the reference run needs a constant batch size "
                          f"(e.g. --set batch_size={b0})")
    if batch_sizes:
        ladder = sorted(set(batch_sizes))
    else:
        ladder = [b0 * 2 ** k if k >= 0 else b0 // 2 ** -k for k in range(CBS_LADDER[0], CBS_LADDER[1] + 1)]
        ladder = sorted({b for b in ladder if 1 <= b <= n})
    if ladder[0] < 1 or ladder[-1] > n:
        raise OptionError("cbs", "batch_sizes", batch_sizes, f"each must be from 1 to the training set's {n:,} "
                                                              "examples")
    if len(ladder) < 2:
        raise OptionError("cbs", "batch_sizes", batch_sizes or ladder, "branching compares batch sizes, give at "
                                                                        "least two")
    spe = n // b0 if cfg.drop_last else math.ceil(n / b0)
    total_steps = budget_steps(cfg, spe, b0, tokens_per_example)
    unit, amount = cfg.budget.length
    epoch = spe * b0 if cfg.drop_last else n  # the examples an epoch trains (its last batch may be short)
    full, rest = divmod(total_steps, spe)
    budget = int(amount) if unit == "examples" else full * epoch + min(rest * b0, n)  # what those steps train
    window = window if window is not None else max(ladder[-1], round(budget * CBS_WINDOW))
    if window > max(budget, n):
        steps = window // epoch * spe + math.ceil(window % epoch / b0)  # the fewest that train `window` examples
        longer = {"epochs": math.ceil(window / epoch), "steps": steps, "examples": window,
                  "tokens": steps * b0 * (tokens_per_example or 1)}[unit]  # a budget in its own unit that holds it
        raise OptionError("cbs", "window", window, f"longer than both the reference run's budget ({budget:,} "
                          f"examples) and an epoch ({n:,}); give {{window={max(budget, n)}}} at most, or a budget "
                          f"that holds it ({{overrides=['budget.{unit}={longer}']}})")
    if (1 + tolerance) * window < ladder[-1]:
        raise OptionError("cbs", "window", window, f"the largest batch of the ladder ({ladder[-1]:,}) takes no "
                          "step in (1 + tolerance) windows; give a longer window or smaller batch sizes")
    at = sorted({max(b0, int(round(e))) for e in np.geomspace(budget * CBS_FIRST, budget, points)}
                if points > 1 else {budget})
    return Setup(cfg, ladder, {b: lr_search(experiment, b) for b in ladder}, at, window, tolerance, budget,
                 total_steps)


def measure(experiment: Experiment, out: Path, *, batch_sizes: list[int] | None = None, points: int = CBS_POINTS,
            window: int | None = None, tolerance: float = CBS_TOLERANCE, source: str = "branching",
            min_batch: int | None = None, max_batch: int | None = None, eval_examples: int = CBS_EVAL_EXAMPLES,
            measurements: int = CBS_MEASUREMENTS, evals: int = CBS_EVALS, progress: Progress | None = None,
            code_dirs: tuple[str, ...] = (), by: str = "fit", fraction: float = 1.0) -> Cbs:
    """Run the procedure and write `folder(...)` (cbs.json, cbs.csv, branches.csv, cbs.png). Ctrl-C keeps
    what was measured: the files are written with the points finished so far, then KeyboardInterrupt goes on."""
    from batchlab.critical_batch.files import write

    if source not in SOURCES:
        raise OptionError("cbs", "source", source, f"choose from {', '.join(SOURCES)}")
    if by not in MEASURES:
        raise OptionError("cbs", "by", by, f"choose from {', '.join(MEASURES)}")
    if not 0 < fraction <= 1:  # NaN too
        raise OptionError("cbs", "fraction", fraction, "expected a number above 0, at most 1, e.g. 0.5 (half the "
                                                       "measured batch)")
    if not 0 < tolerance <= CBS_TOLERANCE_MAX:  # NaN too
        raise OptionError("cbs", "tolerance", tolerance, f"expected a number above 0, at most {CBS_TOLERANCE_MAX}, "
                                                         "e.g. 1 (twice the examples)")
    for name, value, low, high in (("points", points, 1, CBS_POINTS_MAX), ("window", window, 1, None),
                                   ("eval_examples", eval_examples, 1, None), ("min_batch", min_batch, 1, None),
                                   ("max_batch", max_batch, 1, None),
                                   ("measurements", measurements, 2, MEASUREMENTS_MAX)):
        if value is not None and not (isinstance(value, numbers.Integral) and not isinstance(value, bool)
                                      and low <= value <= (high or value)):
            raise OptionError("cbs", name, value, f"expected a whole number from {low}"
                              + (f" to {high}" if high else ""))
    if batch_sizes is not None and (isinstance(batch_sizes, (str, bytes)) or not all(
            isinstance(b, numbers.Integral) and not isinstance(b, bool) and b >= 1 for b in batch_sizes)):
        raise OptionError("cbs", "batch_sizes", batch_sizes, "expected whole numbers from 1, e.g. [16, 64, 256, "
                                                             "1024]")
    if min_batch and max_batch and min_batch > max_batch:
        raise OptionError("cbs", "min_batch", min_batch, f"above {{max_batch={max_batch}}}")
    branching_only = [(name, value) for name, value, given in (
        ("window", window, window is not None), ("tolerance", tolerance, tolerance != CBS_TOLERANCE),
        ("by", by, by != "fit")) if given]
    if source == "noise" and branching_only:  # they would be ignored, and the user would think them used
        names, values = zip(*branching_only)
        raise OptionError("cbs", names, values, "only with {source='branching'}; {source='noise'} measures "
                                                "B_simple alone, with no branches")
    registry.make_importable(*code_dirs)
    device = resolve_device(experiment.device)
    if experiment.threads:
        torch.set_num_threads(experiment.threads)
    data = load_dataset(experiment.dataset, first_seed(experiment)).to(device)
    check_units(experiment, data)  # tokens only where the data has them
    setup = plan(experiment, len(data.train), batch_sizes, points, window, tolerance, data.tokens_per_example)
    setup.evals = evals
    cfg = setup.cfg
    result = Cbs(cfg.name, source, cfg.batch_size, cfg.lr, cfg.seed, setup.ladder,
                 {str(b): lrs for b, lrs in setup.lrs.items()}, setup.window, tolerance, setup.budget_examples,
                 data.context, by=by, fraction=fraction, machine=machine_facts(device))
    result.path = str(folder(out, cfg.name, source))
    result.points_asked = points
    parts = Parts(cfg, data, device, eval_examples, measurements)
    report = progress or (lambda stage, done, total: None)
    try:
        try:
            kept, result.reference_seconds = reference(
                parts, setup.at, setup.total_steps, lambda e: report("reference", min(e, setup.at[-1]), setup.at[-1]))
        except Diverged as e:
            what = f"the reference run (batch size {cfg.batch_size}, lr {cfg.lr:g}) diverged: {e}"
            if not e.points:
                raise TrainingError(f"{what}; nothing before it to measure from: give a smaller lr ("
                                    + ("sweep.lr's base: its rule gives the reference its lr)" if experiment.lr_rule
                                       else "the config's lr)")) from None
            kept, result.reference_seconds = e.points, e.seconds
            result.reference_note = (f"{what}: {len(e.points)} of {len(setup.at)} points measured, the ones "
                                     "before it")
        except (KeyboardInterrupt, BatchlabError):
            raise
        except Exception as e:  # noqa: BLE001 -- the user's code (or memory) failed: no point to branch from
            raise TrainingError(f"the reference run (batch size {cfg.batch_size}, lr {cfg.lr:g}) failed, nothing "
                                f"was measured: {described(e)}") from None
        for p in kept:
            result.points.append({"point": p.index, "examples": p.examples, "steps": p.steps,
                                  **({"tokens": p.examples * data.context} if data.context else {}),
                                  "loss": p.loss, "b_simple": p.noise["b_simple"], "noise": p.noise})
        if source == "branching":
            total = len(kept) * sum(len(v) for v in setup.lrs.values())
            for p, figures in zip(kept, result.points):
                figures.update(branches_at(parts, setup, p, result, lambda: report("branches",
                                                                                  len(result.branches), total)))
    except KeyboardInterrupt:
        result.interrupted = True
        finish(result, setup, min_batch, max_batch)
        write(result, Path(result.path))
        raise
    finish(result, setup, min_batch, max_batch)
    write(result, Path(result.path))
    return result


def branches_at(parts: Parts, setup: Setup, point, result: Cbs, done: Callable[[], None]) -> dict:
    """Every branch from one point, the smallest batch first (it sets L*); the point's figures."""
    smallest, *others = setup.ladder
    mine: list[dict] = []

    def run(batch: int, target: float | None):
        for lr in setup.lrs[batch]:
            try:
                figures = branch(parts, point, batch, lr, setup.window,
                                 math.ceil((1 + setup.tolerance) * setup.window), setup.evals, target)
            except (KeyboardInterrupt, BatchlabError):
                raise
            except Exception as e:  # noqa: BLE001 -- e.g. out of memory at the ladder's largest batch: that
                figures = failed(point, batch, lr, described(e))  # branch, not the rest
            mine.append(figures)
            result.branches.append(figures)
            result.branch_seconds += figures["train_seconds"]
            done()

    run(smallest, None)
    target = analysis.level(mine)
    for batch in others:
        run(batch, target)
    for figures in mine:
        figures["examples_to_target"] = examples_to(figures, target) if target is not None else None
    found = analysis.critical(mine, setup.tolerance)
    return {**found, "cbs": found["cbs_fit"]}


def finish(result: Cbs, setup: Setup, min_batch: int | None, max_batch: int | None) -> None:
    """Each point's ratio CBS / B_simple, and the schedule recommended from CBS(t) (or B_simple(t))."""
    for p in result.points:
        cbs, b_simple = p.get("cbs"), p.get("b_simple")
        p["ratio"] = cbs / b_simple if cbs and b_simple and math.isfinite(b_simple) and b_simple > 0 else None
    key = MEASURES[result.by] if result.source == "branching" else "b_simple"
    low, high = min_batch or setup.ladder[0], max_batch or setup.ladder[-1]
    try:
        result.schedule = recommend([(p["examples"], p[key] * result.fraction if p.get(key) else None)
                                     for p in result.points], low, high)
    except ValueError as e:
        result.schedule_note = str(e)
        return
    late = [change for change in result.schedule[1:] if change[0] >= result.budget_examples]
    if late:  # measured at the budget's end (the last point): a run of that budget never trains at it
        result.schedule = [change for change in result.schedule if change not in late]
        result.schedule_late = late
    if len(result.schedule) == 1:  # one batch size throughout: a constant one, not a schedule
        before = [p for p in result.points if not late or p["examples"] < late[0][0]]
        measured = sum(1 for p in before if p.get(key) and math.isfinite(p[key]) and p[key] > 0)
        result.schedule_note = (f"the measured batch gives {result.schedule[0][1]} at every point measured "
                                f"({measured} of {len(before)}; the schedule is held to {low}-{high})"
                                + (" before the budget's end" if late else "") + ": a constant batch size, not a "
                                "schedule")
        return
    result.schedule_line = yaml_line(result.schedule)
