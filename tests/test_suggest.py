"""`batchlab suggest` end to end on digits: the answer is the least steps x interleaved seconds per step among the
settings confirmed on two more seeds, every batch size trained was timed, and what it cost adds up."""

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import batchlab.train
from batchlab.cli import app
from batchlab.suggestion.search import COSTS, Search
from report_fixtures import check_png

runner = CliRunner()
DIGITS = {"name": "tiny", "dataset": {"name": "digits"}, "model": {"name": "mlp", "hidden": [32]},
          "budget": {"epochs": 6}, "target": {"value": [0.9]}, "threads": 1,
          "sweep": {"lr": [0.3, 1.0]}}  # the pilot races these at its batch size, and the race at each candidate


def strict(text: str) -> dict:
    """JSON as the standard reads it: NaN or Infinity in it fail."""
    def refuse(constant):
        raise AssertionError(f"{constant} in strict JSON")
    return json.loads(text, parse_constant=refuse)


def summaries(folder: Path) -> list[dict]:
    return [json.loads((d / "summary.json").read_text()) for d in sorted((folder / "trials").iterdir())]


def steps_to(summary: dict) -> int | None:
    hit = summary["targets"]["0.9"]
    return hit["steps"] if hit else None


def test_suggest_answers_by_steps_x_seconds_per_step_confirmed_on_more_seeds(write_config, tmp_path):
    # batch size 100 is no power of two: the pilot once trained there, outside the scan, and suggest.json got a NaN
    result = runner.invoke(app, ["suggest", str(write_config({**DIGITS, "batch_size": 100})), "--out", str(tmp_path),
                                 "--json"])
    assert result.exit_code == 0, result.output
    answer = strict(result.output)
    records = tmp_path / "tiny-suggest"
    assert strict((records / "suggest.json").read_text()) == answer
    trials = summaries(records)
    scanned = [int(b) for b in answer["throughput"]]
    assert scanned == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 1437][:len(scanned)]
    # a step costs the median of its interleaved rounds (read on the thread's CPU clock here), as in the report
    per_step = {r["batch_size"]: statistics.median(r["rounds"]) for r in answer["rates"]}
    assert answer["pilot"]["batch_size"] == 128  # the scanned batch size nearest the config's
    assert {s["batch_size"] for s in trials} <= set(per_step) <= set(scanned)  # every batch size trained was timed

    # seed 0: each batch size's lr with the fewest steps; seeds 1 and 2: the confirmation (seed 3: a setting in
    fewest = {}  # the tie by the bootstrap alone, `settle`); of lrs tied on the fewest steps (read at
    for s in trials:  # evaluations, steps often tie) suggest keeps the first it trained: the one it confirmed
        if s["seed"] == 0 and steps_to(s) is not None:
            fewest[s["batch_size"]] = min(fewest.get(s["batch_size"], math.inf), steps_to(s))
    tied = {size: {s["lr"] for s in trials if (s["batch_size"], s["seed"]) == (size, 0) and steps_to(s) == steps}
            for size, steps in fewest.items()}
    best, confirmed = {}, {}
    for size, steps in fewest.items():
        for lr in tied[size]:
            later = [steps_to(s) for s in trials if (s["batch_size"], s["lr"]) == (size, lr) and s["seed"] in (1, 2, 3)]
            if len(later) >= 2 and None not in later:
                best[size] = (lr, steps)
                confirmed[size] = statistics.median([steps, *later]) * per_step[size]
        best.setdefault(size, (min(tied[size]), steps))
    assert answer["confirmed"] and answer["seeds"][:3] == [0, 1, 2]
    b = answer["batch_size"]
    assert answer["lr"] in tied[b] and answer["steps"][0] == fewest[b] and (answer["lr"], fewest[b]) == best[b]
    assert len(answer["steps"]) == len(answer["seeds"]) in (3, 4)
    assert answer["predicted_seconds"] == pytest.approx(confirmed[b])
    assert answer["seconds_per_step"] == pytest.approx(per_step[b])
    assert confirmed[b] == min(confirmed.values())  # the least predicted time among the confirmed
    # confirmed: every setting within 1.5x of the first seed's fastest (4 at most), whatever that seed's noise says
    first = {size: steps * per_step[size] for size, (_, steps) in best.items()}
    near = sorted((t, size) for size, t in first.items() if t <= 1.5 * min(first.values()))[:4]
    again = {s["batch_size"] for s in trials if s["seed"] in (1, 2)}
    assert {size for _, size in near} <= again and len(again) <= 4
    for d in (records / "trials").iterdir():  # periodic evaluations on a subset: the config set none
        assert json.loads((d / "config.json").read_text())["eval"]["subset"] == 2000
    for s in trials:  # a raced trial was cut by steps, never by its clock
        if s["status"] == "raced":
            assert s["deadline"] is None and s["steps"] == s["deadline_steps"] + 1

    # B_simple: the noise run's measurements up to the pilot's steps to the target, at least 10 of them
    [noise_dir] = (records / "noise-scale" / "trials").iterdir()
    rows = pd.read_csv(noise_dir / "metrics.csv")
    values = rows.loc[(rows["step"] <= answer["pilot"]["steps"]) & (rows["noise_b_simple"] > 0), "noise_b_simple"]
    assert answer["measurements"] == len(values) >= 10
    assert answer["b_simple"] == pytest.approx(values.mean())
    assert answer["band"] == pytest.approx([values.mean(), 16 * values.mean()])

    cost = answer["cost"]
    everything = trials + summaries(records / "noise-scale")
    assert cost["total"] == pytest.approx(cost["scan"] + cost["pilot"] + cost["race"] + cost["confirmation"])
    runs = answer["trials"]  # every run, a raced trial trained again in full twice (on disk: its last run)
    assert cost["pilot"] + cost["race"] + cost["confirmation"] == pytest.approx(
        sum(t[k] or 0 for t in runs for k in COSTS))
    kept = {t["trial_id"]: t for t in runs if not t["replaced"]}
    assert len(kept) == len(everything) and all(kept[s["trial_id"]][k] == s.get(k) for s in everything for k in COSTS)
    for t in runs:
        if t["replaced"]:  # its record was replaced by the run that trained it in full
            assert t["status"] == "raced" and kept[t["trial_id"]]["status"] != "raced"
    assert cost["scan"] > 0 and sum(s["eval_seconds"] for s in everything) > 0
    assert "nan" not in answer["sentence"].lower() and f"scan {cost['scan']:.3g}" in answer["sentence"]
    check_png(records / "suggest.png")
    report = runner.invoke(app, ["report", str(records)])  # the records are a sweep's like any other
    assert report.exit_code == 0, report.output
    # and the report reads suggest's interleaved step times (step_times.json), not each trial's own clock
    table = pd.read_csv(records / "report" / "time_to_accuracy.csv")
    table = table[table["status"] == "reached"]
    assert set(table["step_time_source"]) == {"interleaved"}
    assert dict(zip(table["batch_size"], table["seconds_per_step"])) == pytest.approx(
        {size: per_step[size] for size in table["batch_size"]})
    timed = json.loads((records / "step_times.json").read_text())["measured_at"]  # when the scan timed them:
    raced = [s["started_at"] for s in trials if s["trial_id"] in {t["trial_id"] for t in runs if t["phase"] == "race"}]
    assert raced and timed <= min(raced)  # before the race, not when suggest finished
    rerun = runner.invoke(app, ["suggest", str(write_config({**DIGITS, "batch_size": 100})), "--out", str(tmp_path)])
    assert rerun.exit_code == 0, rerun.output  # the trials read back, the steps timed again: the sentence, then
    again = strict((records / "suggest.json").read_text())  # each note on its own line
    assert rerun.output.splitlines()[-2 - len(again["notes"]):-1] == (
        [again["sentence"]] + [f"note: {n}" for n in again["notes"]])


def test_the_race_goes_by_steps_x_seconds_per_step_not_by_the_trials_clocks(write_config, tmp_path, monkeypatch):
    """Every trial outside the pilot's batch size runs on a clock 1000x slow: by the clocks, the pilot's batch
    size would be fastest and every other trial cut; by steps x the scan's seconds per step, it is not."""
    slow = [1.0]

    class SlowClock(batchlab.train.Clock):  # the trainer's clock only: the scan keeps the real one
        def stop(self):
            return super().stop() * slow[0]

        def peek(self):
            return super().peek() * slow[0]

    train = batchlab.train.train

    def slow_train(cfg, *args, **kwargs):
        slow[0] = 1.0 if cfg.batch_size == 8 else 1000.0
        return train(cfg, *args, **kwargs)

    monkeypatch.setattr(batchlab.train, "Clock", SlowClock)
    monkeypatch.setattr(batchlab.train, "train", slow_train)
    # 12 epochs: room for the larger batch sizes to reach the target on both seeds (6 left 256 short on seed 1)
    result = runner.invoke(app, ["suggest", str(write_config({**DIGITS, "batch_size": 8, "budget": {"epochs": 12}})),
                                 "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    answer = strict(result.output)
    trials = summaries(tmp_path / "tiny-suggest")
    by_clock = min((s for s in trials if s["seed"] == 0 and steps_to(s)), key=lambda s: s["targets"]["0.9"]["seconds"])
    assert by_clock["batch_size"] == 8 and answer["pilot"]["batch_size"] == 8
    assert answer["batch_size"] != 8  # 8 takes several times the steps of the larger batches, at about the same s/step
    reached = [s for s in trials if s["batch_size"] != 8 and steps_to(s)]
    assert reached and all(s["train_seconds"] > 100 * by_clock["train_seconds"] for s in reached)


def test_a_token_budget_suggests_too_the_noise_run_counting_the_pilots_steps(tmp_path):
    """A language model's budget in tokens: the noise run trains the pilot's steps instead (it had kept the
    tokens beside them, and the config refused the two)."""
    import batchlab
    from test_sequence import TOY

    answer = batchlab.suggest({**TOY, "budget": {"tokens": 16384}, "sweep": {"batch_size": [8, 16, 32, 64]},
                               "target": {"metric": "test_loss", "value": [1.5]}}, tmp_path)
    assert answer.confirmed and answer.batch_size in (8, 16, 32, 64)
    [noise] = summaries(tmp_path / "seq-suggest" / "noise-scale")
    assert noise["steps"] == answer.pilot["steps"] and noise["budget_steps"] == answer.pilot["steps"]
    assert noise["tokens"] == noise["examples"] * 8


def test_a_budget_spent_in_the_race_lists_as_raced_only_the_batch_sizes_that_trained(write_config, tmp_path,
                                                                                      monkeypatch):
    from batchlab.suggestion.search import Search

    train, raced = Search.train, []

    def budget_spent_after_one_race_trial(self, phase, batch_size, *args, **kw):
        if phase == "race" and raced and batch_size not in raced:
            self.budget = self.spent()  # as if the last trial had spent it: nothing more starts
        summary = train(self, phase, batch_size, *args, **kw)
        if phase == "race" and summary is not None:
            raced.append(batch_size)
        return summary
    monkeypatch.setattr(Search, "train", budget_spent_after_one_race_trial)
    result = runner.invoke(app, ["suggest", str(write_config(DIGITS)), "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    [note] = [n for n in answer["notes"] if n.startswith("the budget was spent during the race")]
    left = [int(b) for b in note.split("not raced: ")[1].split(", ")]
    assert left and not set(left) & set(answer["candidates"])
    assert set(answer["candidates"]) <= {answer["pilot"]["batch_size"], *raced}
    assert f"raced {', '.join(map(str, answer['candidates']))};" in answer["sentence"]


def test_a_budget_spent_before_the_noise_run_says_so(write_config, tmp_path, monkeypatch):
    from batchlab.suggestion.search import Search

    train = Search.train

    def budget_spent_by_the_pilot(self, phase, batch_size, *args, into=None, **kw):
        if into is not None:  # the noise run: the pilot spent the budget
            self.budget = self.spent()
        return train(self, phase, batch_size, *args, into=into, **kw)
    monkeypatch.setattr(Search, "train", budget_spent_by_the_pilot)
    result = runner.invoke(app, ["suggest", str(write_config(DIGITS)), "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    notes = json.loads(result.output)["notes"]
    assert "b_simple: not measured: the budget was spent before the noise run; the race takes every scanned batch " \
           "size near the pilot's" in notes
    assert not (tmp_path / "tiny-suggest" / "noise-scale").exists()


def test_the_budget_counts_evaluation_and_stops_the_search(tmp_path):
    from batchlab.run import Hooks
    from batchlab.schema import Experiment
    from batchlab.suggestion.pipeline import _suggest_config
    from batchlab.suggestion.search import Search

    cfg = _suggest_config(Experiment.model_validate({**DIGITS, "eval": {"every": 0.05}}), None)
    search = Search(cfg, tmp_path, "test", (), Hooks(), budget=1e9)
    summary = search.train("race", 64, 0.3, 0)
    assert summary["eval_seconds"] > 0
    assert search.cost["race"] == pytest.approx(sum(summary.get(k) or 0 for k in COSTS))
    assert search.cost["race"] > summary["train_seconds"]  # evaluation counted
    before = search.cost["race"]
    again = search.train("race", 64, 0.3, 0)  # recorded already: read back, counted once
    assert again["trial_id"] == summary["trial_id"] and search.cost["race"] == before
    cut = search.train("race", 32, 0.3, 0, deadline_steps=2)  # raced, then trained again in full: counted again
    assert cut["status"] == "raced"
    before = search.cost["race"] + search.cost["confirmation"]
    whole = search.train("confirmation", 32, 0.3, 0)
    assert whole["trial_id"] == cut["trial_id"] and whole["status"] == "completed" and whole["steps"] > cut["steps"]
    assert search.cost["race"] + search.cost["confirmation"] == pytest.approx(
        before + sum(whole.get(k) or 0 for k in COSTS))
    search.budget = search.spent()
    assert search.train("confirmation", 64, 0.3, 1) is None and search.stopped
    assert len(list((tmp_path / "tiny-suggest" / "trials").iterdir())) == 2  # nothing more started


def test_suggest_says_so_when_the_pilot_cannot_reach_the_target_at_two_batch_sizes(write_config, tmp_path):
    result = runner.invoke(app, ["suggest", str(write_config({**DIGITS, "budget": {"steps": 3}})), "--target", "0.99",
                                 "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "error: the pilot (batch size 128 then 64, lr 0.3, 1) did not reach test_accuracy 0.99" in result.output
    assert "give a target it can reach (--target), a larger budget.steps, or an lr" in result.output
    assert "came closest: completed, 3 steps, last test_accuracy" in result.output and "Traceback" not in result.output
    assert {s["batch_size"] for s in summaries(tmp_path / "tiny-suggest")} == {128, 64}  # retried at a neighbour


def test_a_pilot_that_trained_its_whole_budget_short_of_the_target_is_said_so_whatever_the_search_budget(
        write_config, tmp_path, monkeypatch):
    """--budget spent by then, the line blamed it ('give a larger --budget'), which would not have helped."""
    train = Search.train

    def spending_it_all(self, *args, **kwargs):  # the search's budget is spent by the first trial it trains
        summary = train(self, *args, **kwargs)
        self.budget = self.spent() if summary is not None else self.budget
        return summary

    monkeypatch.setattr(Search, "train", spending_it_all)
    result = runner.invoke(app, ["suggest", str(write_config({**DIGITS, "budget": {"examples": 300}})), "--target",
                                 "0.99", "--budget", "1h", "--out", str(tmp_path)])
    assert result.exit_code == 2
    [line] = [x for x in result.output.splitlines() if x.startswith("error: ")]
    assert line.startswith("error: the pilot (batch size 128") and "did not reach test_accuracy 0.99" in line, line
    assert "a larger budget.examples, or an lr that trains" in line and "--budget" not in line, line


@pytest.mark.parametrize("args, expected", [([], "suggest needs a target to time"),
                                            (["--budget", "soon"], "--budget 'soon': expected a duration"),
                                            (["--budget", "5M"], "--budget '5M': expected a duration such as 5m"),
                                            (["--budget", "0s"], "--budget '0s': nothing could run in it")])
def test_suggest_bad_input_is_one_line(write_config, tmp_path, args, expected):
    cfg = write_config({**DIGITS, "target": {"value": []}}) if not args else write_config(DIGITS)
    result = runner.invoke(app, ["suggest", str(cfg), "--out", str(tmp_path), *args])
    assert result.exit_code == 2 and expected in result.output
    assert result.output.count("\n") == 1


def fake_search(first_seed, steps, recorded, budget_trials=None):
    """A search whose trials are `steps[(batch size, seed)]` (absent: missed the target), with the trials in
    `recorded` already run ((batch size, lr, seed, status[, last accuracy[, steps to the target]])), that stops
    after `budget_trials` trainings."""
    from types import SimpleNamespace

    from batchlab.suggestion.search import Search

    def summary(b, lr, seed, status, accuracy=0.83, hit=None):
        return {"batch_size": b, "lr": lr, "seed": seed, "batch_schedule": None, "status": status,
                "final": {"test_accuracy": accuracy}, "targets": {"0.84": {"steps": hit} if hit else None}}

    class Fake:
        cfg = SimpleNamespace(seed=first_seed, target=SimpleNamespace(metric="test_accuracy"))
        key, stopped = "0.84", False
        trials = {f"t{i}": {"noise_run": False, "summary": summary(*args)} for i, args in enumerate(recorded)}
        constant_summaries = Search.constant_summaries

        def __init__(self):
            self.calls = []

        def train(self, phase, b, lr, seed):
            if budget_trials is not None and len(self.calls) >= budget_trials:
                self.stopped = True
                return None
            self.calls.append((phase, b, lr, seed))
            return summary(b, lr, seed, "completed", hit=steps.get((b, seed)))

        def steps(self, s):
            return (s["targets"]["0.84"] or {}).get("steps")

    return Fake()


def test_a_batch_size_the_race_cut_between_two_near_settings_is_trained_again_and_confirmed():
    """128 and 512 are near the fastest on the first seed; 256, between them, was cut by that seed's steps: T(B)
    has one minimum, so it is trained again in full (at the lr of its cut trials that 128's and 512's best lrs
    point to, which also came closest) and confirmed too. 1024, outside them, is not."""
    from batchlab.suggestion.search import between

    recorded = [(256, 0.05, 3, "raced", 0.71), (256, 0.1, 3, "raced", 0.86), (256, 0.2, 3, "raced", 0.52),
                (1024, 0.2, 3, "raced", 0.8),
                (256, 0.4, 3, "completed", 0.88)]  # ran its whole budget and missed: no lr to try again
    fake = lambda: fake_search(3, {(256, 3): 276}, recorded)  # noqa: E731
    best_lr = {128: (0.07, 299), 512: (0.14, 150), 64: (0.05, 658)}
    search = fake()
    assert between(fake(), [512, 128, 256, 1024, 64], dict(best_lr), near=[128, 64, 512], room=0) == []
    assert between(search, [512, 128, 256, 1024, 64], best_lr, near=[128, 64, 512], room=1) == [256]
    assert search.calls == [("confirmation", 256, 0.1, 3)]  # on the first seed
    assert best_lr[256] == (0.1, 276)
    assert between(fake(), [512, 128, 256], {128: (0.07, 299), 256: (0.1, 216)}, near=[128, 256], room=2) == []


SECONDS = {64: 0.00129, 128: 0.00194, 256: 0.00326, 512: 0.00596, 1024: 0.0113, 2048: 0.0224}


def fastest(every):  # median steps over the seeds x seconds a step
    return min(every, key=lambda b: statistics.median(every[b]) * SECONDS[b])


def test_the_fastest_is_named_only_beside_both_its_neighbours_confirmed_on_the_same_seeds():
    """Seed 1's race made 128 the fastest and cut 256 (276 steps there); confirmed on seeds 2 and 3, 256 (216,
    216) beats 128 (391, 437), so 256's other neighbour, 512, is confirmed too; then 256's neighbours are both in
    and the search stops: 1024 and 2048 are never trained again."""
    from batchlab.suggestion.search import neighbours

    steps = {(256, 1): 276, (256, 2): 216, (256, 3): 216, (512, 2): 120, (512, 3): 180}
    search = fake_search(1, steps, [(256, 0.1, 1, "raced"), (1024, 0.2, 1, "raced")])
    best_lr = {128: (0.0707, 299), 64: (0.05, 658), 512: (0.141, 150), 2048: (0.28, 39)}
    confirmed, notes = {128: [299, 391, 437], 64: [658, 799, 1128]}, []
    neighbours(search, [512, 128, 256, 1024, 2048, 64], best_lr, confirmed, {128, 64}, [2, 3], notes, fastest)
    assert search.calls == [("confirmation", 256, 0.1, 1), ("confirmation", 256, 0.1, 2),
                            ("confirmation", 256, 0.1, 3), ("confirmation", 512, 0.141, 2),
                            ("confirmation", 512, 0.141, 3)]
    assert confirmed == {128: [299, 391, 437], 64: [658, 799, 1128], 256: [276, 216, 216], 512: [150, 120, 180]}
    assert best_lr[256] == (0.1, 276) and fastest(confirmed) == 256 and notes == []


def test_a_batch_size_the_race_skipped_is_raced_when_the_fastest_needs_it_as_a_neighbour():
    """Seed 1 cut 256 (276 steps) and the race skipped 512 past it; confirmed, 256 is the fastest, so 512, its
    neighbour with no trial on the first seed, is raced there (the callback: its lrs) and confirmed, not silently
    left out of the ladder."""
    from batchlab.suggestion.search import neighbours

    steps = {(256, 1): 276, (256, 2): 216, (256, 3): 216, (512, 1): 150, (512, 2): 120, (512, 3): 180}
    search = fake_search(1, steps, [(256, 0.1, 1, "raced")])
    raced = []

    def race(b):
        raced.append(b)
        return 0.141, search.steps(search.train("confirmation", b, 0.141, 1))

    best_lr = {128: (0.0707, 299), 64: (0.05, 658)}
    confirmed = {128: [299, 391, 437], 64: [658, 799, 1128]}
    neighbours(search, [128, 256, 64, 512], best_lr, confirmed, {128, 64}, [2, 3], [], fastest, race)
    assert raced == [512] and confirmed[512] == [150, 120, 180] and best_lr[512] == (0.141, 150)
    assert fastest(confirmed) == 256 and ("confirmation", 256, 0.1, 1) in search.calls  # 256 via again()


def test_a_neighbour_that_misses_or_a_spent_budget_leaves_the_answer_as_confirmed():
    """512 reaches the target on seed 2 but not on seed 3: not confirmed, said once; a neighbour confirmation
    tried (and missed) is not tried again. With the budget spent after one trial, the search stops where it is."""
    from batchlab.suggestion.search import neighbours

    steps = {(256, 2): 216, (256, 3): 216, (512, 2): 120}
    search = fake_search(1, steps, [])
    best_lr = {128: (0.0707, 299), 256: (0.1, 276), 512: (0.141, 150)}
    confirmed, notes = {128: [299, 391, 437]}, []
    neighbours(search, [128, 256, 512], best_lr, confirmed, {128, 512}, [2, 3], notes, fastest)
    assert confirmed == {128: [299, 391, 437], 256: [276, 216, 216]}  # 512 was tried by confirmation already
    assert [c[1] for c in search.calls] == [256, 256]
    search = fake_search(1, steps, [])
    confirmed, notes = {128: [299, 391, 437]}, []
    neighbours(search, [128, 256, 512], best_lr, confirmed, {128}, [2, 3], notes, fastest)
    assert confirmed == {128: [299, 391, 437], 256: [276, 216, 216]}
    assert notes == ["batch size 512 with lr 0.141 reached test_accuracy 0.84 on seed 1 but not on seed 3"]
    search = fake_search(1, steps, [], budget_trials=1)
    confirmed, notes = {128: [299, 391, 437]}, []
    neighbours(search, [128, 256, 512], best_lr, confirmed, {128}, [2, 3], notes, fastest)
    assert confirmed == {128: [299, 391, 437]} and search.stopped
    assert notes == ["the budget was spent before batch size 256 was confirmed on seed 3"]


def test_a_batch_size_beyond_one_the_race_cut_is_not_raced():
    """256 is the fastest so far and the race cut 1024: 2048, past it, is slower still (one minimum in B); 64,
    on the other side, and 512, between the fastest and the cut one, are raced."""
    from batchlab.suggestion.search import past_cut

    assert past_cut(2048, 256, [1024]) == 1024 and past_cut(4096, 256, [2048, 1024]) == 1024
    assert past_cut(64, 256, [1024]) is None and past_cut(512, 256, [1024]) is None
    assert past_cut(16, 256, [64, 1024]) == 64 and past_cut(2048, 256, []) is None


def test_the_answer_says_which_batch_sizes_beside_its_tie_were_not_measured():
    """Seed 0's race cut 64 and 1024; confirmation trained 128, 256 and 512, and 128 and 512 tie with 256: their
    outer neighbours were never trained on seeds 1 and 2, and the answer says so. A neighbour confirmation tried
    (it missed, or was measured outside the noise) is not named; nor is one next to no member of the answer."""
    from batchlab.suggestion.search import unmeasured

    ladder = [512, 128, 256, 1024, 2048, 64]
    assert unmeasured(ladder, [256, 128, 512], {128, 256, 512}, [1, 2]) == [
        "batch size 64, next to 128 in the answer, was not trained on seeds 1 and 2: whether it is within the "
        "noise too was not measured",
        "batch size 1024, next to 512 in the answer, was not trained on seeds 1 and 2: whether it is within the "
        "noise too was not measured"]
    assert unmeasured(ladder, [256, 128, 512], {64, 128, 256, 512, 1024}, [1, 2]) == []
    assert unmeasured(ladder, [256], {128, 256}, [3]) == [
        "batch size 512, next to 256 in the answer, was not trained on seed 3: whether it is within the noise too "
        "was not measured"]


def test_a_rerun_reads_back_the_batch_size_an_earlier_run_trained_again():
    """The first run trained 256 again in full at lr 0.1 (the cut trial that came closest); a rerun finds that
    record finished (276 steps, past the race's limit) beside the other lrs' cut ones, and takes the same lr."""
    from batchlab.suggestion.search import again

    search = fake_search(1, {(256, 1): 276}, [(256, 0.1, 1, "completed", 0.84, 276), (256, 0.05, 1, "raced")])
    assert again(search, 256, {}) == (0.1, 276)
    assert search.calls == [("confirmation", 256, 0.1, 1)]


def test_a_cut_batch_size_is_trained_again_at_the_lr_its_neighbours_point_to():
    """Cut at 263 steps, 256 @ lr 0.05 read higher (0.86) than 256 @ lr 0.1 (0.84): one evaluation's figure. The
    best lrs at 128 and 512 (0.0707, 0.1414) interpolate to 0.1 at 256 (log lr linear in log batch size): that
    one is trained again. With a neighbour on one side only, the closest figure decides."""
    from batchlab.suggestion.search import again, interpolated

    assert interpolated(256, {128: (0.0707, 299), 512: (0.1414, 150)}) == pytest.approx(0.1, rel=1e-3)
    assert interpolated(256, {128: (0.02, 1), 1024: (0.16, 1)}) == pytest.approx(0.04)  # 1/3 of the way in log
    assert interpolated(256, {512: (0.1, 1)}) is None
    cut = [(256, 0.05, 1, "raced", 0.86), (256, 0.1, 1, "raced", 0.84), (256, 0.2, 1, "raced", 0.52)]
    search = fake_search(1, {(256, 1): 276}, cut)
    assert again(search, 256, {128: (0.0707, 299), 512: (0.1414, 150)}) == (0.1, 276)
    search.calls.clear()
    assert again(search, 256, {512: (0.1414, 150)}) == (0.05, 276)
    assert search.calls == [("confirmation", 256, 0.05, 1)]


def test_suggest_trials_time_one_target_on_a_subset_without_train_figures_unless_the_config_says_so(write_config):
    """suggest times the hardest target (or --target): an easier one would only call for whole-split
    evaluations near it. The train subset is off unless the config sets it; eval.subset 2,000 unless it sets one."""
    from batchlab.config import load_config
    from batchlab.suggestion.pipeline import EVAL_SUBSET, _suggest_config

    cfg = _suggest_config(load_config(write_config({"target": {"metric": "test_accuracy", "value": [0.5, 0.9]}})),
                          None)
    assert (cfg.target.value, cfg.eval.train_subset, cfg.eval.subset) == ([0.9], 0, EVAL_SUBSET)
    cfg = _suggest_config(load_config(write_config({"target": {"metric": "test_loss", "value": [2.4, 2.0]},
                                                    "eval": {"train_subset": 1000, "subset": 50}})), 2.2)
    assert (cfg.target.value, cfg.eval.train_subset, cfg.eval.subset) == ([2.2], 1000, 50)
    cfg = _suggest_config(load_config(write_config({"target": {"metric": "test_loss", "value": [2.4, 2.0]}})), None)
    assert cfg.target.value == [2.0]


def test_restart_starts_the_noise_run_over_too(write_config, tmp_path):
    """A changed config with --restart: the noise run's own records (<name>-suggest/noise-scale) are of the old
    config too, and are started over with the trials', not refused as another experiment's."""
    cfg = write_config(DIGITS)

    def suggest(*args):
        return runner.invoke(app, ["suggest", str(cfg), "--out", str(tmp_path), "--quiet", *args])

    assert suggest().exit_code == 0
    other = runner.invoke(app, ["suggest", str(cfg), "--out", str(tmp_path), "--target", "0.8"])
    assert other.exit_code == 2 and "holds trials of a different experiment: target.value changed" in other.output
    assert other.output.count("\n") == 1  # refused before the scan, not after it and the pilot
    result = suggest("--set", "model.hidden=[16]", "--restart")
    assert result.exit_code == 0, result.output
    noise = tmp_path / "tiny-suggest" / "noise-scale" / "trials"
    [trial] = noise.iterdir()
    assert json.loads((trial / "config.json").read_text())["model"]["hidden"] == [16]


def test_a_rerun_with_another_pilot_adds_its_noise_run_beside_the_first(write_config, tmp_path):
    """Another sweep.batch_size gives another pilot, whose noise run counts other steps at another cadence: it was
    refused after the pilot had trained ("noise-scale holds trials of a different experiment: budget.steps,
    noise.every changed"), naming fields the user never set. It is another trial of the same records."""
    cfg = write_config(DIGITS)

    def suggest(*args):
        return runner.invoke(app, ["suggest", str(cfg), "--out", str(tmp_path), "--quiet", *args])

    first = suggest()
    assert first.exit_code == 0, first.output
    noise = tmp_path / "tiny-suggest" / "noise-scale" / "trials"
    [before] = [json.loads((t / "summary.json").read_text()) for t in noise.iterdir()]
    pilot = before["batch_size"]
    result = suggest("--set", f"sweep.batch_size=[{pilot * 2}, {pilot * 4}, {pilot * 8}]")  # the pilot moves
    assert result.exit_code == 0, result.output
    after = {json.loads((t / "summary.json").read_text())["batch_size"]: t.name for t in noise.iterdir()}
    assert len(after) == 2 and pilot in after
    for trial_id in after.values():
        config = json.loads((noise / trial_id / "config.json").read_text())
        assert f"-steps{config['budget']['steps']}-" in trial_id  # the derived steps name the run


def test_a_trial_run_again_counts_both_runs_and_keeps_the_first_as_replaced(write_config, tmp_path, monkeypatch):
    """A raced trial trained again in full is one trial on disk (its last run) but two runs in the cost: the
    earlier run is kept among the search's runs as replaced, so suggest.json's runs add up to the cost (CI once
    found the cost 0.974 s against 0.936 s summed over the records on disk)."""
    from batchlab import config
    from batchlab.suggestion import search as module
    from batchlab.suggestion.search import Search

    runs = iter([{"run_token": "a", "status": "raced", "train_seconds": 1.0, "eval_seconds": 0.25},
                 {"run_token": "b", "status": "completed", "train_seconds": 2.0, "eval_seconds": 0.5}])
    monkeypatch.setattr(module, "run_sweep", lambda *args, **kw: None)
    monkeypatch.setattr(module, "read_summary", lambda trial_dir: next(runs))
    search = Search(config.load(write_config()), tmp_path, "test", (), None, None)
    search.train("race", 64, 0.1, 0, deadline_steps=10)
    search.train("confirmation", 64, 0.1, 0)
    assert search.cost["race"] == 1.25 and search.cost["confirmation"] == 2.5
    assert [t["summary"]["run_token"] for t in search.replaced] == ["a"]
    assert [t["summary"]["run_token"] for t in search.trials.values()] == ["b"]


def test_a_setting_in_the_tie_by_the_bootstrap_alone_is_trained_on_one_more_seed():
    """Seeds 1-3 of Fashion-MNIST: 64's fast seed (658 steps) puts it in the tie although its median is 1.46x the
    fastest's; 512 is in at 1.27x. Both get seed 4; 128, within TIE (1.08x), does not. On four seeds 64 is out and
    512 stays: the tie of the runs on seeds 0-2 and 2-4."""
    from batchlab.reporting.decision import StepCost, decide
    from batchlab.suggestion.search import settle

    costs = {b: StepCost("interleaved", np.full(5, SECONDS[b])) for b in SECONDS}

    def decided(every):
        return decide({b: np.array(v, dtype=float) for b, v in every.items()}, costs)

    confirmed = {256: [276, 216, 216], 128: [299, 391, 437], 512: [150, 120, 180], 64: [658, 799, 1128]}
    before = decided(confirmed)
    assert before.fastest == 256 and before.within_noise == [128, 512, 64]
    search, notes = fake_search(1, {(512, 4): 150, (64, 4): 893}, []), []
    best_lr = {256: (0.1, 276), 128: (0.0707, 299), 512: (0.141, 150), 64: (0.05, 658)}
    settle(search, before, confirmed, best_lr, 4, notes)
    assert search.calls == [("confirmation", 512, 0.141, 4), ("confirmation", 64, 0.05, 4)]
    assert confirmed[512] == [150, 120, 180, 150] and confirmed[64] == [658, 799, 1128, 893]
    after = decided(confirmed)
    assert after.fastest == 256 and after.within_noise == [128, 512]
    assert notes == ["batch sizes 512 and 64, within the noise by the bootstrap over three seeds alone, trained on "
                     "seed 4 too"]
    missed = {256: [276, 216, 216], 64: [658, 799, 1128]}  # 64 misses on seed 4: it leaves the confirmed
    settle(fake_search(1, {}, []), decided(missed), missed, best_lr, 4, notes := [])
    assert missed == {256: [276, 216, 216]} and notes[0].startswith("batch size 64 with lr 0.05 did not reach")


def test_a_schedule_in_the_sweeps_batch_sizes_is_said_not_raced(write_config, tmp_path):
    sizes = [32, 64, {"schedule": [[0, 32], [500, 64]]}]
    result = runner.invoke(app, ["suggest", str(write_config({**DIGITS, "sweep": {**DIGITS["sweep"],
                                                                                  "batch_size": sizes}})),
                                 "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert "the batch-size schedules in sweep.batch_size are not raced" in " ".join(answer["notes"])
    assert {s["batch_schedule"] for s in summaries(tmp_path / "tiny-suggest")} == {None}  # none trained
