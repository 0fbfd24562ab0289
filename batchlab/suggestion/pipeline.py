"""The suggest pipeline: scan, pilot, race, confirmation (see the package docstring), and the answer it gives."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from batchlab import registry, steptime
from batchlab.data import load_dataset
from batchlab.disk import write_atomic, write_json_atomic
from batchlab.machine import resolve_device
from batchlab.maxbatch import find_max_batch
from batchlab.records import SUGGEST, Status, SweepDir
from batchlab.reporting.decision import decide
from batchlab.reporting.measured_noise import b_simple_values
from batchlab.run import Hooks
from batchlab.schema import Experiment, LrRule, unreachable
from batchlab.suggestion.answer import Suggestion, listed, sentence
from batchlab.suggestion.plot import suggest_png
from batchlab.suggestion.predict import predict
from batchlab.recommend import yaml_line
from batchlab.suggestion.scan import Scan, first_pass, interleaved
from batchlab.suggestion.search import (CONFIRM_MOST, CONFIRM_SEEDS, CONFIRM_WITHIN, COSTS, Search, SuggestError,
                                        best_by_steps, between, confirm, neighbours, past_cut, progress,
                                        settle, unmeasured)
from batchlab.suggestion.schedule import END, START, around_each
from batchlab.suggestion.schedule import sentence as sentence_of
from batchlab.suggestion.schedule import race as race_schedule
from batchlab.train import hardest_target

BAND = (1.0, 16.0)  # B_crit between 1x and 16x the pilot's B_simple: McCandlish et al. (2018) find the critical
# batch near the noise scale B_noise >= B_simple; fitted on sweeps here, B_crit was 2-17x B_simple averaged to target
MARGIN = 0.2  # a candidate's predicted time is within 20% of the best at some end of the band
MOST = 4  # candidates raced at most, besides the pilot's batch size
FACTORS = (1.0, 0.5, 2.0)  # the lr search around a rule batchlab makes (the config's rule keeps its own factors)
MEASUREMENTS = 10  # noise measurements the pilot's B_simple rests on at least: one or two are mostly noise
NEIGHBOURS = 2  # scanned batch sizes on each side of the pilot's raced whatever B_simple predicts (it moves with
# the seed: the candidates, and so the answer's tie, moved with it when only one was taken)
EVAL_SUBSET = 2000  # eval.subset when the config sets none: the search reads only steps to the target, which the
# whole split still judges (evaluated whenever the subset is near it); evaluating all of Fashion-MNIST's 10,000
# test images at every evaluation was over half of what suggest spent there
NO_EVAL = 1e6  # epochs between evaluations of the noise run: it only measures, up to steps already known


def suggest(experiment: Experiment, out: Path, *, target: float | None = None, budget: float | None = None,
            code_dirs: tuple[str, ...] = (), command: str = "batchlab.suggest",
            on_stage: Callable[[str], None] = lambda text: None, hooks: Hooks = Hooks(),
            restart: bool = False, schedule: bool = False) -> Suggestion:
    """Scan, pilot, race and confirm for `experiment` (its model, data, optimizer, lr or lr rule, target and
    budget), recording the trials under out/<name>-suggest. `budget`: seconds for the whole search, everything
    counted (the scan, and each trial's training, evaluation and noise measurement): no trial starts once it is
    spent. `on_stage(text)` says what starts next. `restart`: delete the records under
    out/<name>-suggest first. `schedule`: then propose a batch-size schedule around the answer (when the noise
    run's B_simple(t) grows) and race it against the answer on its seeds (batchlab.suggestion.schedule)."""
    registry.make_importable(*code_dirs)
    cfg = _suggest_config(experiment, target)
    metric, goal = cfg.target.metric, hardest_target(cfg)
    if not restart:  # records of another config (another --target, say) are refused now, not after the scan
        SweepDir(out, cfg.name).check(cfg, {})
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    search = Search(cfg, out, command, code_dirs, hooks, budget, restart)
    notes: list[str] = []

    on_stage("scan: samples/s at batch sizes 1, 2, 4, ...")
    data = load_dataset(cfg.dataset, cfg.seed)
    n = len(data.train)
    sweep_sizes = cfg.sweep.get("batch_size")
    # the grid's largest batch size bounds the question; without a list, the training set does
    constants = [b for b in sweep_sizes if isinstance(b, int)] if isinstance(sweep_sizes, list) else []
    largest = min(n, max(constants)) if constants else n  # (a schedule in the list is no batch size to scan)
    if isinstance(sweep_sizes, list) and any(isinstance(b, dict) for b in sweep_sizes):
        notes.append("the batch-size schedules in sweep.batch_size are not raced: suggest races constant batch "
                     "sizes (with --schedule, and a schedule of its own; `batchlab sweep` compares yours)")
    if device.type == "cuda":  # memory is the limit there; on the CPU the training set is
        largest = min(largest, find_max_batch(cfg, code_dirs=code_dirs).batch_size)
    data = data.to(device)
    found = first_pass(cfg, data, device, largest)
    search.cost["scan"] = found.seconds
    sizes = list(found.speeds)

    # pilot: a batch size from the middle of the sweep's, the lrs the config gives it, chosen by steps
    first = pilot_batch(cfg, sizes)
    tries = [first] + [b for b in _neighbours(sizes, first)][:1]  # a miss is retried once at a neighbour
    pilot = None
    for b in tries:
        lrs = _pilot_lrs(cfg, b)
        on_stage(f"pilot: batch size {b}, lr {', '.join(f'{v:g}' for v in lrs)}, to {metric} {goal:g}")
        pilot = best_by_steps(search, "pilot", b, lrs, cfg.seed)
        if pilot is not None:
            break
    if pilot is None:
        trained_out = any(t["summary"]["status"] == Status.COMPLETED for t in search.trials.values())
        if search.stopped and not trained_out:  # (a pilot that trained its whole budget short of the target
            # needs another target, budget or lr, whatever --budget is)
            raise SuggestError(f"the budget ({budget:g} s) was spent before the pilot reached {metric} {goal:g}: "
                               "give a larger --budget")
        raise _missed(search, cfg, tries, metric, goal)
    pilot_b, pilot_lr, pilot_steps = pilot["batch_size"], pilot["lr"], search.steps(pilot)

    every = max(1, pilot_steps // MEASUREMENTS)
    on_stage(f"noise scale: B_simple at batch size {pilot_b} up to step {pilot_steps}, every {every} steps")
    values, noise_points = _noise(search, pilot_b, pilot_lr, pilot_steps, every, n)
    b_simple = float(values.mean()) if len(values) else None
    if b_simple is None:
        why = ("not measured: the budget was spent before the noise run" if search.stopped else
               f"no finite noise measurement up to step {pilot_steps}")
        notes.append(f"b_simple: {why}; the race takes every scanned batch size near the pilot's")
    rule = cfg.lr_rule or LrRule(base=pilot_lr, base_batch_size=pilot_b,
                                 scale="linear" if cfg.optimizer.name == "sgd" else "sqrt", factors=list(FACTORS))

    # race: candidates x lr factors, each stopped once its steps x seconds per step pass the best so far
    band = prediction = None
    if b_simple is not None:
        band = (BAND[0] * b_simple, BAND[1] * b_simple)
        prediction = predict(sizes, [found.speeds[b] for b in sizes], band, MARGIN, MOST)
        candidates = prediction.candidates
    else:
        candidates = sorted(sizes, key=lambda b: abs(math.log2(b / pilot_b)))[:MOST]
    # the pilot's batch size and its scanned neighbours too: the first pass's curve is a few short timings on
    # a machine others share, and the prediction alone moved from run to run
    i = sizes.index(pilot_b)
    candidates = list(dict.fromkeys([pilot_b, *sizes[max(0, i - NEIGHBOURS):i + NEIGHBOURS + 1], *candidates]))
    # a schedule trains from a quarter of the answer's batch size to twice it: the scanned sizes that span are timed
    timed = ([b for b in sizes if START * min(candidates) <= b <= END * max(candidates)] if schedule
             else candidates)
    on_stage(f"scan: seconds per step at batch sizes {', '.join(map(str, sorted(timed)))}, interleaved")
    found = interleaved(found, cfg, data, device, timed)
    search.cost["scan"] = found.seconds
    del data
    spb = found.seconds_per_step()
    if pilot_b not in spb:
        raise SuggestError(f"batch size {pilot_b} trained, but its steps could not be timed: "
                           + "; ".join(f"{r.batch_size}: {r.error}" for r in found.rates if r.error))
    for r in found.rates:
        if r.error:
            notes.append(f"batch size {r.batch_size} not raced: its step could not be timed ({r.error})")
    candidates = [b for b in candidates if b in spb]
    sweep_lrs = cfg.sweep.get("lr") if isinstance(cfg.sweep.get("lr"), list) else None
    on_stage(f"race: batch sizes {', '.join(map(str, candidates))} x "
             + (f"lrs {', '.join(f'{v:g}' for v in sweep_lrs)}" if sweep_lrs else
                f"lr factors {', '.join(f'{f:g}' for f in rule.factors)}") + ", by steps x seconds per step")
    best_lr: dict[int, tuple[float, int]] = {pilot_b: (pilot_lr, pilot_steps)}
    lead = 0  # the rule's factor the last batch size raced did best with: the likeliest best at the next one too
    cut: list[int] = []  # batch sizes none of whose lrs reached the target within the race's limit
    skipped: list[int] = []  # not raced: past a cut one (past_cut)

    def lrs_at(b: int) -> list[float]:
        # the config's list of lrs at every batch size, as its grid would; else the rule's factors. The likeliest
        # best first (the pilot's lr, else the last winner's factor), whose steps then cut the others short
        factors = [rule.factors[lead], *(f for i, f in enumerate(rule.factors) if i != lead)]
        lrs = [pilot_lr] if b == pilot_b or sweep_lrs else []
        return lrs + [v for v in (sweep_lrs or [rule.lr(b, f) for f in factors])
                      if not any(math.isclose(v, w) for w in lrs)]

    def race_skipped(b: int) -> tuple[float, int] | None:  # one the race skipped, needed beside the fastest after
        notes.append(f"batch size {b} trained after all: it is next to the fastest")  # all: its lrs, first seed
        chosen = best_by_steps(search, "confirmation", b, lrs_at(b), cfg.seed)
        return None if chosen is None else (chosen["lr"], search.steps(chosen))

    for b in list(candidates):
        fastest = min(best_lr, key=lambda c: (best_lr[c][1] * spb[c], c))
        if (beyond := past_cut(b, fastest, cut)) is not None:
            candidates.remove(b)
            skipped.append(b)
            notes.append(f"batch size {b} not raced: {beyond}, between it and {fastest}, the fastest so far, reached "
                         f"the target at none of its lrs within the race's limit on seed {cfg.seed}")
            continue
        lrs = lrs_at(b)
        # the best predicted seconds so far, with the margin within which other seeds may still make it a tie: a
        # setting that close must finish, or it could never be confirmed and named beside the fastest
        bar = CONFIRM_WITHIN * min(steps * spb[c] for c, (_, steps) in best_lr.items())
        chosen = best_by_steps(search, "race", b, lrs, cfg.seed, bar / spb[b])
        if chosen is not None:
            best_lr[b] = (chosen["lr"], search.steps(chosen))
            lead = min(range(len(rule.factors)),
                       key=lambda i: abs(math.log(rule.lr(b, rule.factors[i]) / chosen["lr"])))
        elif not search.stopped:  # a batch size the budget stopped was not cut by the race: it is not raced
            cut.append(b)
        if search.stopped:
            left = candidates[candidates.index(b) + 1:]
            notes.append(f"the budget was spent during the race at batch size {b}"
                         + (f"; not raced: {', '.join(map(str, left))}" if left else ""))
            break

    # confirmation on more seeds, then the decision on every seed's steps
    costs = found.costs()
    seeds = [cfg.seed + k for k in range(1, CONFIRM_SEEDS + 1)]

    def predicted(b: int) -> float:  # on the first seed
        return best_lr[b][1] * spb[b]

    ranking = sorted(best_lr, key=lambda b: (predicted(b), b))
    near = [b for b in ranking if predicted(b) <= CONFIRM_WITHIN * predicted(ranking[0])][:CONFIRM_MOST]
    near += between(search, candidates, best_lr, near, CONFIRM_MOST - len(near))  # cut by one seed's steps
    near.sort(key=lambda b: (predicted(b), b))
    ranking = sorted(best_lr, key=lambda b: (b not in near, predicted(b), b))  # the near ones are confirmed first
    on_stage(f"confirmation: the fastest on seed {cfg.seed} (batch size {ranking[0]}, lr {best_lr[ranking[0]][0]:g}) "
             f"and those within {CONFIRM_WITHIN:g}x of it or between them "
             f"({listed(near[1:]) if len(near) > 1 else 'none'}), "
             f"on seeds {listed(seeds)}")
    tried: set[int] = set()
    confirmed = confirm(search, ranking, best_lr, near, seeds, notes, tried)

    def decided(every: dict[int, list[int]]):
        return decide({b: np.array(v, dtype=float) for b, v in every.items()}, costs)

    neighbours(search, candidates + skipped, best_lr, confirmed, tried, seeds, notes,
               lambda every: decided(every).fastest, race_skipped)
    if confirmed and not search.stopped:  # the tie's edge on one more seed where three leave it to one seed
        settle(search, decided(confirmed), confirmed, best_lr, seeds[-1] + 1, notes)
    s = Suggestion(SweepDir(out, cfg.name).path, metric, goal, None, None, rates=found.rates,
                   throughput=found.speeds, candidates=[b for b in candidates if b in best_lr or b in cut],
                   stopped_by_budget=search.stopped)
    s.pilot = {"batch_size": pilot_b, "lr": pilot_lr, "steps": pilot_steps, "tries": tries[:tries.index(pilot_b) + 1]}
    s.b_simple, s.measurements, s.noise_every_steps = b_simple, len(values), every
    s.b_simple_range = (float(values.min()), float(values.max())) if len(values) else None
    if prediction is not None:
        s.band, s.predicted = band, prediction.best
    if confirmed:
        final = decided(confirmed)
        b = final.fastest
        s.batch_size, s.lr, s.steps, s.confirmed = b, best_lr[b][0], confirmed[b], True
        s.seeds = [cfg.seed, *seeds, seeds[-1] + 1][:len(confirmed[b])]  # a fourth when settle trained it
        s.seconds_per_step = spb[b]
        s.predicted_seconds, *interval = final.predicted[b]
        s.predicted_interval = tuple(interval)
        s.within_noise = [{"batch_size": o, "lr": best_lr[o][0], "steps": confirmed[o],
                           "predicted_seconds": final.predicted[o][0]} for o in final.within_noise]
        notes.extend(unmeasured(candidates + skipped, [b, *final.within_noise], tried, seeds, skipped))
    else:  # reached on one seed only, or not confirmed within the budget: named, but qualified
        b = ranking[0]
        s.batch_size, s.lr, s.seeds, s.steps = b, best_lr[b][0], [cfg.seed], [best_lr[b][1]]
        s.seconds_per_step, s.predicted_seconds = spb[b], predicted(b)
        s.unconfirmed = (f"no setting was confirmed: none tried reached {metric} {goal:g} on every seed of "
                         f"{listed([cfg.seed, *seeds])}" if not search.stopped else
                         f"it was not confirmed on seeds {listed(seeds)} within the budget")
    if schedule:
        s.schedule = _schedule(search, s, noise_points, sorted(spb), rule.scale, costs, notes, on_stage)
    s.notes = notes
    return _finish(s, search, found, pilot_b, pilot_steps)


def _schedule(search: Search, s: Suggestion, points: list, timed: list[int], scale: str, costs: dict,
              notes: list[str], on_stage: Callable[[str], None]) -> dict | None:
    """Race a schedule around the answer and around each constant within its noise, on the answer's seeds;
    the fastest predicted of those that reached the target on every seed (else the first) is suggest.json's."""
    if not s.confirmed:
        notes.append("no schedule raced: the answer was not confirmed")
        return None
    anchors = [(s.batch_size, s.lr), *((o["batch_size"], o["lr"]) for o in s.within_noise)]
    proposals, why = around_each(search, points, anchors, s.seeds, timed)
    for reason, sizes in why.items():
        notes.append(("no schedule raced: " if not proposals else "") + (  # a reason of some anchors names them
            f"around batch size {listed(sizes)}: " if len(sizes) < len(anchors) else "") + reason)
    raced = []
    for b, lr, proposed in proposals:
        on_stage(f"schedule: {yaml_line(proposed)} (around {b}) against batch size {s.batch_size}, on seeds "
                 f"{listed(s.seeds)}")
        raced.append(race_schedule(search, proposed, s.batch_size, s.lr, scale, s.seeds, s.steps, costs, (b, lr)))
    timed_ones = [r for r in raced if "predicted" in r]
    chosen = min(timed_ones, key=lambda r: r["predicted"][0]) if timed_ones else (raced[0] if raced else None)
    for r in raced:
        if r is not chosen:
            notes.append(f"also raced: {sentence_of(r)}")
    return chosen


def pilot_batch(cfg: Experiment, scanned: list[int]) -> int:
    """The scanned batch size nearest (in doublings) the middle of the sweep's batch sizes, or the config's
    batch size without a list: a batch size the grid would train, whose step time the scan measured."""
    sweep_sizes = cfg.sweep.get("batch_size")
    wanted = [b for b in sweep_sizes if isinstance(b, int)] if isinstance(sweep_sizes, list) else []
    middle = float(np.median(np.log2(wanted or [cfg.batch_size])))
    return min(scanned, key=lambda b: (abs(math.log2(b) - middle), b))


def _neighbours(scanned: list[int], b: int) -> list[int]:
    """Where a missed pilot is retried: the next smaller scanned batch size (more steps in the same epochs),
    else the next larger."""
    i = scanned.index(b)
    return ([scanned[i - 1]] if i > 0 else []) + ([scanned[i + 1]] if i + 1 < len(scanned) else [])


def _pilot_lrs(cfg: Experiment, batch_size: int) -> list[float]:
    if cfg.lr_rule:
        return [cfg.lr_rule.lr(batch_size)]
    lrs = cfg.sweep.get("lr")
    return list(lrs) if isinstance(lrs, list) and lrs else [cfg.lr]


def _noise(search: Search, b: int, lr: float, steps: int, every: int, n: int) -> tuple[np.ndarray, list]:
    """B_simple up to the pilot's steps to the target: the pilot's run again (same seed, so the same steps),
    measuring every `every` steps (the pilot's steps // MEASUREMENTS), evaluated only at its end. Recorded apart
    (<records>/noise-scale), so the search's records stay one trial per setting and seed. Returns the
    measurements, and (examples trained, B_simple) at each."""
    cfg = search.cfg
    per_epoch = n // b if cfg.drop_last else math.ceil(n / b)
    into = SweepDir(SweepDir(search.out, cfg.name).path, "noise-scale")
    summary = search.train(
        "pilot", b, lr, cfg.seed, into=into, derived={"budget.steps": steps, "noise.every": every / per_epoch},
        budget=cfg.budget.counting("steps", steps, stop_at_target=False),
        eval=cfg.eval.model_copy(update={"every": NO_EVAL}))
    if summary is None:
        return np.array([]), []
    frame = pd.read_csv(into.trial_dir(summary["trial_id"]) / "metrics.csv")
    measured = frame[(frame["step"] <= steps) & frame["noise_b_simple"].notna()]
    return b_simple_values(frame, steps), list(zip(measured["examples"], measured["noise_b_simple"]))


def _missed(search: Search, cfg: Experiment, tries: list[int], metric: str, goal: float) -> SuggestError:
    ran = [t["summary"] for t in search.trials.values()]
    closest = max(ran, key=lambda p: progress(p, metric))
    best = closest["final"].get(metric)
    last = "unknown" if best is None else f"{best:.4g}"
    lrs = ", ".join(f"{v:g}" for v in _pilot_lrs(cfg, tries[0]))
    unit = cfg.budget.length[0]  # the budget's own unit, as the config counts it
    trained = f"{closest[unit]:,} {unit}" if isinstance(closest.get(unit), int) else f"{closest['epochs']:g} epochs"
    return SuggestError(
        f"the pilot (batch size {' then '.join(map(str, tries))}, lr {lrs}) did not reach {metric} {goal:g} "
        f"(batch size {closest['batch_size']}, lr {closest['lr']:g} came closest: {closest['status']}, "
        f"{trained}, last {metric} {last}): "
        f"give a target it can reach (--target), a larger budget.{unit}, or an lr that trains (the pilot's records "
        f"are in {SweepDir(search.out, cfg.name).path})")


def _suggest_config(experiment: Experiment, target: float | None) -> Experiment:
    """The config every trial of the search starts from: its own name, stopping at the one target it times
    (--target, else the config's hardest: an easier one would only call for whole-split evaluations near it),
    periodic evaluations on a subset and no train-subset figures unless the config says otherwise (the search
    reads steps to the target alone), no noise measurement (only the noise run measures it)."""
    cfg = experiment
    if target is None and not cfg.target.value:
        raise SuggestError("suggest needs a target to time: give --target (e.g. --target 0.9) or target.value "
                           "in the config")
    goal = target if target is not None else hardest_target(cfg)
    if wrong := unreachable(cfg.target.metric, [goal]):
        raise SuggestError(f"--target {goal:g}: {wrong}")
    evaluation = {"subset": cfg.eval.subset or EVAL_SUBSET}
    if "train_subset" not in cfg.eval.model_fields_set:
        evaluation["train_subset"] = 0
    return cfg.model_copy(update={
        "name": f"{cfg.name}-suggest",
        "target": cfg.target.model_copy(update={"value": [goal]}),
        "budget": cfg.budget.model_copy(update={"stop_at_target": True}),
        "eval": cfg.eval.model_copy(update=evaluation),
        "noise": cfg.noise.model_copy(update={"every": None})})


def _finish(s: Suggestion, search: Search, found: Scan, pilot_b: int, pilot_steps: int) -> Suggestion:
    spb = found.seconds_per_step()
    runs = [(t, True) for t in search.replaced] + [(t, False) for t in search.trials.values()]
    for t, replaced in runs:
        summary = t["summary"]
        steps = None if t["noise_run"] else search.steps(summary)  # the noise run only measures
        per_step = None if t["phase"] == "schedule" else spb.get(summary["batch_size"])  # a schedule: several
        s.trials.append({"trial_id": summary["trial_id"], "phase": t["phase"], "noise_run": t["noise_run"],
                         "replaced": replaced, "batch_size": summary["batch_size"],
                         "lr": summary["lr"], "seed": summary["seed"], "status": summary["status"],
                         "steps": steps, "steps_run": summary["steps"],
                         **{k: summary.get(k) for k in COSTS},
                         "predicted_seconds": steps * per_step if steps is not None and per_step else None})
    s.cost = {**search.cost, "total": search.spent()}
    s.sentence = sentence(s)
    if found.times is not None and s.path.is_dir():  # the report on these records then decides on the same timings
        steptime.record(s.path / steptime.FILE, found.times, found.facts or {}, found.measured_at)
    write_json_atomic(s.path / SUGGEST, s.to_dict())
    figure = suggest_png(s, pilot_b, pilot_steps)
    write_atomic(s.path / "suggest.png", lambda f: f.write(figure), binary=True)
    return s
