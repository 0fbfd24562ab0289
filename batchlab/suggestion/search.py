"""The suggest search's trials: one at a time into one sweep directory, with what each phase spends; an lr
chosen by steps at a batch size; the confirmation of the settings near the fastest on more seeds."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

from batchlab.errors import BatchlabError
from batchlab.grid import expand
from batchlab.records import Status, SweepDir, read_summary
from batchlab.reporting.decision import TIE
from batchlab.run import Hooks, run_sweep
from batchlab.schema import Experiment
from batchlab.suggestion.answer import PHASES, listed
from batchlab.train import hardest_target

CONFIRM_MOST = 4  # settings confirmation takes at most: the winner, those within CONFIRM_WITHIN of it, the next
# if one missed (the fastest's neighbours are confirmed after it whatever this says: `neighbours`)
CONFIRM_WITHIN = 1.5  # a setting this much slower than the fastest on the first seed may still tie it over three:
# one seed's steps to the target differed by 1.8x at batch size 64 here (658 and 1,175; Fashion-MNIST), so the
# race lets such settings finish and confirmation takes them all, not the first seed's nearest few
CONFIRM_SEEDS = 2  # more seeds each is trained on: steps to the target varied by 20% over seeds here (256 @ 0.1
# on Fashion-MNIST: 216 and 276), more than the tie margin, and two seeds left the answer moving with the seed


COSTS = ("train_seconds", "eval_seconds", "noise_seconds", "compile_seconds")  # what a trial spent, by its summary


class SuggestError(BatchlabError):
    """A suggestion cannot be made (no target, or one the pilot cannot reach)."""


class Search:
    """Runs the search's trials one at a time into one sweep directory, and counts what each phase spends."""

    def __init__(self, cfg: Experiment, out: Path, command: str, code_dirs: tuple[str, ...], hooks: Hooks,
                 budget: float | None, restart: bool = False):
        self.cfg, self.out, self.command, self.code_dirs, self.hooks, self.budget = (
            cfg, out, command, code_dirs, hooks, budget)
        self.restart = restart  # the first trial run into each of the search's directories (its trials, the noise
        self.restarted: set[Path] = set()  # run's) deletes that directory's earlier records
        self.key = f"{hardest_target(cfg):g}"
        self.cost = dict.fromkeys(PHASES, 0.0)
        self.trials: dict[str, dict] = {}  # trial id -> {phase, summary, noise_run}, in the order first used
        self.replaced: list[dict] = []  # earlier runs of a trial run again (a raced one trained again in full):
        # their seconds are in the cost, their records were replaced by the later run's
        self.stopped = False

    def spent(self) -> float:
        return sum(self.cost.values())

    def train(self, phase: str, batch_size: int | dict, lr: float, seed: int, deadline_steps: int | None = None,
              into: SweepDir | None = None, derived: dict | None = None, **update) -> dict | None:
        """One trial (or its record, when already run): its summary. None, and nothing run, once the budget is
        spent. `batch_size`: a constant one, or a schedule (`{schedule: ..., lr_scale: ...}`). `update`: config
        sections replaced (the noise run's). `derived`: config keys set from what the search found (the noise
        run's steps and cadence, from its pilot), made axes of the trial: another pilot's run is another trial
        of the same records, not another experiment."""
        if self.budget is not None and self.spent() >= self.budget:
            self.stopped = True
            return None
        sweep = into or SweepDir(self.out, self.cfg.name)
        axes = {"batch_size": [batch_size], "lr": [lr], "seed": [seed], **{k: [v] for k, v in (derived or {}).items()}}
        grid = self.cfg.model_copy(update={"sweep": axes, "name": sweep.path.name, **update})
        [trial] = expand(grid)
        restart = self.restart and sweep.path not in self.restarted
        self.restarted.add(sweep.path)
        run_sweep(grid, [trial], sweep.path.parent, self.command, restart=restart, hooks=self.hooks,
                  code_dirs=self.code_dirs, time_steps=False, deadline_steps=deadline_steps)
        summary = read_summary(sweep.trial_dir(trial.id))
        if summary is None:
            raise SuggestError(f"the trial {trial.id} left no readable summary in {sweep.path}")
        known = self.trials.get(trial.id)
        if known is None or known["summary"].get("run_token") != summary.get("run_token"):  # run now (a raced
            # trial trained again in full counts again)
            self.cost[phase] += sum(summary.get(k) or 0.0 for k in COSTS)
            if known is not None:
                self.replaced.append(known)
            self.trials[trial.id] = {"phase": phase, "summary": summary, "noise_run": into is not None}
        return summary

    def hit(self, summary: dict | None) -> dict | None:
        """The (hardest) target's record in a summary: steps, examples, seconds; None where it was not reached."""
        return (summary or {}).get("targets", {}).get(self.key)

    def steps(self, summary: dict | None) -> int | None:
        """Steps to the (hardest) target, None where it was not reached."""
        hit = self.hit(summary)
        return hit["steps"] if hit else None

    def constant_summaries(self, batch_size: int, seed: int) -> list[dict]:
        """The summaries of the trials the search ran at a constant batch size on a seed (not the noise run)."""
        return [t["summary"] for t in self.trials.values()
                if not t["noise_run"] and t["summary"].get("batch_schedule") is None
                and t["summary"]["batch_size"] == batch_size and t["summary"]["seed"] == seed]

    def trial_summary(self, batch_size: int, lr: float, seed: int) -> dict | None:
        """The summary of a constant batch size's trial the search ran (not the noise run), if any."""
        return next((s for s in self.constant_summaries(batch_size, seed) if math.isclose(s["lr"], lr)), None)

    def examples(self, batch_size: int, lr: float, seed: int) -> int | None:
        """The examples a constant batch size's trial needed to reach the target; None: not run or not reached."""
        return (self.hit(self.trial_summary(batch_size, lr, seed)) or {}).get("examples")


def best_by_steps(search: Search, phase: str, b: int, lrs: list[float], seed: int,
                  bar: float | None = None) -> dict | None:
    """Train batch size `b` at each lr; each trial stops once past the fewest steps to the target so far at
    this batch size, or past `bar` steps (the best predicted time elsewhere over this batch size's seconds per
    step). The summary with the fewest steps to the target (None: none reached it)."""
    best = None
    for lr in lrs:
        limits = [x for x in (bar, search.steps(best)) if x is not None]
        limit = math.floor(min(limits)) if limits else None
        summary = search.train(phase, b, lr, seed, limit)
        if summary is None:
            break
        steps = search.steps(summary)  # past the limit only where a record trained in full was read back (a rerun
        # of a search whose confirmation had trained a cut trial again): still cut, as the first run found it
        if steps is not None and (limit is None or steps <= limit) and (best is None or steps < search.steps(best)):
            best = summary
    return best


def past_cut(b: int, fastest: int, cut: list[int]) -> int | None:
    """A batch size in `cut` (none of its lrs reached the target within the race's limit) between `b` and the
    fastest so far, if any: then `b` is not raced. The time to the target has one minimum in B, so beyond a batch
    size slower than the race's limit b is slower still: on Fashion-MNIST the race cut every lr at 1024 and then
    at 2048 (3.3 s of training and 1 s of evaluation, a tenth of suggest's cost)."""
    return next((c for c in sorted(cut) if min(b, fastest) < c < max(b, fastest)), None)


def again(search: Search, b: int, best_lr: dict[int, tuple[float, int]]) -> tuple[float, int] | None:
    """Batch size `b`, which the race cut on the first seed, trained there again to the target, unraced, at the lr
    of its cut trials that the best lrs of the batch sizes on either side point to (`interpolated`), else the one
    that came closest (their last evaluated figure: noisy, a subset's): (lr, steps), or None when it missed or
    was not trained (the budget). Measured: at 263 steps 256 @ lr 0.05 read closer than 256 @ lr 0.1, which then
    took 312 steps against 276; the best lrs at 128 and 512, 0.0707 and 0.141, point to 0.1."""
    cfg = search.cfg
    summaries = search.constant_summaries(b, cfg.seed)
    cut = [s for s in summaries if s["status"] == Status.RACED]
    # a rerun reads back what an earlier run trained again: a finished record that reached the target (past the
    # race's limit, or best_by_steps would have taken it)
    again_before = [s for s in summaries if s["status"] != Status.RACED and search.steps(s) is not None]
    pointed = interpolated(b, best_lr)
    if again_before:
        lr = min(again_before, key=search.steps)["lr"]
    elif cut and pointed is not None:
        lr = min(cut, key=lambda s: abs(math.log(s["lr"] / pointed)))["lr"]
    elif cut:
        lr = max(cut, key=lambda s: progress(s, cfg.target.metric))["lr"]
    else:
        return None
    summary = search.train("confirmation", b, lr, cfg.seed)
    steps = None if summary is None else search.steps(summary)
    return None if steps is None else (lr, steps)


def interpolated(b: int, best_lr: dict[int, tuple[float, int]]) -> float | None:
    """The best lr at `b` interpolated from the nearest batch sizes below and above it in `best_lr` (log lr linear
    in log batch size, as lr rules scale it); None without one on each side."""
    below = max((c for c in best_lr if c < b), default=None)
    above = min((c for c in best_lr if c > b), default=None)
    if below is None or above is None:
        return None
    t = math.log(b / below) / math.log(above / below)
    return math.exp((1 - t) * math.log(best_lr[below][0]) + t * math.log(best_lr[above][0]))


def between(search: Search, candidates: list[int], best_lr: dict[int, tuple[float, int]],
            near: list[int], room: int) -> list[int]:
    """The raced batch sizes between the smallest and the largest of `near` that the race cut on the first seed,
    each trained there again (`again`); those that reached the target join `best_lr` (`room` of them at most:
    confirmation takes no more). Returned in order.
    The time to the target, S_min (B + B_crit) / throughput(B), has one minimum in B, so a batch size between
    two settings near the fastest is near it too: one seed's steps (256 @ lr 0.1 on Fashion-MNIST: 276, then 216
    and 216) had cut it by 3 steps, and the answer's tie moved with the seed."""
    added = []
    for b in sorted(candidates):
        if len(added) >= room or search.stopped:
            break
        if min(near) < b < max(near) and b not in best_lr and (found := again(search, b, best_lr)) is not None:
            best_lr[b] = found
            added.append(b)
    return added


def neighbours(search: Search, candidates: list[int], best_lr: dict[int, tuple[float, int]],
               confirmed: dict[int, list[int]], tried: set[int], seeds: list[int], notes: list[str],
               fastest: Callable[[dict[int, list[int]]], int],
               race: Callable[[int], tuple[float, int] | None] | None = None) -> None:
    """Until the fastest of `confirmed` (by `fastest`, the decision over every seed) has both its neighbours among
    the race's batch sizes confirmed too, or they cannot be (missed the target on some seed, or the budget): each
    missing neighbour not `tried` by confirmation yet trained on the first seed (`again`, if the race cut it;
    `race`, (lr, steps) or None, if the race skipped it past a cut one) and on `seeds`, into `confirmed`. Not
    capped by CONFIRM_MOST: at most the candidates.
    T(B) has one minimum, so a batch size is named fastest only beside both its neighbours measured on the same
    seeds: on seed 1 of Fashion-MNIST, 128 was fastest by its first seed's steps, and the race had cut 256 there
    (276 steps, then 216 and 216 on the next seeds); the answer was 128 alone where the other seeds said 256."""
    ladder = sorted(candidates)
    while confirmed and not search.stopped:
        best = fastest(confirmed)
        if best not in ladder:
            return
        i = ladder.index(best)
        missing = [b for b in ladder[max(0, i - 1):i + 2] if b not in tried]
        if not missing:
            return
        for b in missing:
            tried.add(b)
            if b not in best_lr:
                skipped = race is not None and not search.constant_summaries(b, search.cfg.seed)
                if (found := race(b) if skipped else again(search, b, best_lr)) is not None:
                    best_lr[b] = found
            if b in best_lr:
                confirmed.update(confirm(search, [b], best_lr, [b], seeds, notes, tried))


def settle(search: Search, decision, confirmed: dict[int, list[int]], best_lr: dict[int, tuple[float, int]],
           seed: int, notes: list[str]) -> None:
    """One more seed, `seed`, for each setting `decision` (reporting.decision.decide over `confirmed`) names within
    the noise of the fastest by its bootstrap alone (its median more than TIE slower), into `confirmed`; one that
    misses the target there leaves `confirmed`. With three seeds the bootstrap of a median spans their range, so
    one extreme seed decided the tie's edge: on Fashion-MNIST 64 joined "128, 256 or 512" on seeds 1-3 (658 steps
    on seed 1, 799-1,128 on the others) and not on seeds 0-2 or 2-4; on four seeds, 0-3 and 1-4 alike, it does
    not (replayed on those steps)."""
    fastest = decision.predicted[decision.fastest][0]
    doubtful = [b for b in decision.within_noise if decision.predicted[b][0] > TIE * fastest]
    for b in doubtful:
        lr = best_lr[b][0]
        summary = search.train("confirmation", b, lr, seed)
        if summary is None:
            notes.append(f"the budget was spent before batch size {b} was trained on seed {seed}")
            return
        if (steps := search.steps(summary)) is None:
            notes.append(f"batch size {b} with lr {lr:g} did not reach {search.cfg.target.metric} {search.key} on "
                         f"seed {seed}")
            del confirmed[b]
        else:
            confirmed[b].append(steps)
    if doubtful:
        notes.append(f"{'batch size' if len(doubtful) == 1 else 'batch sizes'} {listed(doubtful)}, within the noise "
                     f"by the bootstrap over three seeds alone, trained on seed {seed} too")


def unmeasured(candidates: list[int], named: list[int], tried: set[int], seeds: list[int],
               skipped: list[int] = ()) -> list[str]:
    """Notes on the batch sizes of the race (`candidates`: raced, or skipped past a cut one) next to those the
    answer names (the fastest and those within the noise of it) that confirmation never trained on `seeds`:
    whether they are within the noise too was not measured. The
    neighbours of the fastest are confirmed (`neighbours`), those of a tie's other members are not: on
    Fashion-MNIST, 64 joined "128, 256 or 512" on seeds 1-3 (658 steps on seed 1) and not on seeds 2-4, and a run
    whose race cut 64 on seed 0 could not say."""
    ladder = sorted(candidates)
    notes = []
    for i, b in enumerate(ladder):
        beside = [n for n in ladder[max(0, i - 1):i + 2] if n in named and n != b]
        if b not in named and b not in tried and beside:
            trained = ("was not trained (the race skipped it past a cut one)" if b in skipped else
                       f"was not trained on seed{'s' if len(seeds) > 1 else ''} {listed(seeds)}")
            notes.append(f"batch size {b}, next to {listed(beside)} in the answer, {trained}: whether it is within "
                         f"the noise too was not measured")
    return notes


def confirm(search: Search, ranking: list[int], best_lr: dict[int, tuple[float, int]], near: list[int],
            seeds: list[int], notes: list[str], tried: set[int] | None = None) -> dict[int, list[int]]:
    """Train the settings `near` the fastest of the first seed (`ranking`'s first, by predicted seconds) on
    `seeds`; while none has reached the target on every seed, the next in `ranking` too (CONFIRM_MOST settings
    at most). Returns {batch size: steps on the first seed and on each of `seeds`} of those that reached it on
    all; each batch size taken is added to `tried`."""
    wanted = set(near)
    metric, goal = search.cfg.target.metric, search.key
    every: dict[int, list[int]] = {}
    count = 0
    for b in ranking:
        if count >= CONFIRM_MOST or (every and b not in wanted):
            break
        count += 1
        if tried is not None:
            tried.add(b)
        lr, steps = best_lr[b]
        found = [steps]
        for seed in seeds:
            again = search.train("confirmation", b, lr, seed)
            if again is None:
                notes.append(f"the budget was spent before batch size {b} was confirmed on seed {seed}")
                return every
            if search.steps(again) is None:
                notes.append(f"batch size {b} with lr {lr:g} reached {metric} {goal} on seed {search.cfg.seed} but "
                             f"not on seed {seed}")
                break
            found.append(search.steps(again))
        else:
            every[b] = found
    return every


def progress(summary: dict, metric: str) -> float:
    """How near a trial came to the target: its last accuracy, or minus its last loss."""
    value = summary["final"].get(metric)
    return -math.inf if value is None else value if metric == "test_accuracy" else -value
