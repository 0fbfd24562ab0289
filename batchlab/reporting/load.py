"""Read the records a sweep leaves on disk (batchlab.records declares them) into pandas frames.

Only this module reads the records for a report. It never trusts them: every damaged file becomes a
warning naming its path, and the trial (or just its curves) is left out. A summary written by another
run of the trial than the one that last started there (its run token differs) counts as incomplete.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from batchlab import batches, steptime
from batchlab.errors import RecordsError
from batchlab.records import SUGGEST, Status, SweepDir
from batchlab.records import FINISHED as FINISHED_STATUSES
from batchlab.records import INFEASIBLE as INFEASIBLE_STATUSES
from batchlab.readback import Damaged, is_number, read_trial
from batchlab.summary import Summary

# As the frames hold them: plain strings. A trial that ran to an end we can judge (FINISHED) counts a missing
# target as missed; an interrupted or incomplete one stopped early and counts as neither.
INCOMPLETE = Status.INCOMPLETE.value
FINISHED = tuple(s.value for s in FINISHED_STATUSES)


def same_target(values, target: float):
    """Which of `values` (the records' target column) are the target value `target`: equal up to float rounding,
    without numpy's absolute tolerance of 1e-8, which makes two loss targets below it one."""
    return np.isclose(values, target, rtol=1e-9, atol=1e-12)
INFEASIBLE = tuple(s.value for s in INFEASIBLE_STATUSES)
SUMMARY_NUMBERS = ("steps", "budget_steps", "epochs", "examples", "steps_per_epoch", "train_size",
                   "train_seconds", "eval_seconds", "noise_seconds", "samples_per_second", "peak_memory_bytes",
                   "tokens", "context", "tokens_per_second")  # the last three: sequence tasks
TO_TARGET = ("seconds", "steps", "epochs", "examples")
# hits also hold `tokens` (sequence tasks): the record's own at the target, else its examples x its trial's context
# summary.json "noise" {g2, trace, b_simple, measurements}, or null: trials columns noise_<key>.
NOISE_NUMBERS = ("g2", "trace", "b_simple", "measurements")


@dataclass
class SweepRecords:
    """Everything read from one sweep directory."""

    sweep_dir: Path
    name: str
    trials: pd.DataFrame  # one row per readable trial, indexed by position; column trial_id
    hits: pd.DataFrame  # trial_id, target, seconds, steps, epochs, examples, tokens (inf = missed; tokens NaN:
    # not a sequence task)
    metrics: dict[str, pd.DataFrame]  # trial_id -> metrics.csv rows (numeric core columns)
    config: dict  # config.json of the first trial: the settings the whole sweep shares
    target_metric: str
    targets: list[float]
    extra_axes: list[str]  # sweep axes besides batch_size, lr and seed (e.g. optimizer.momentum)
    sweep_yaml: str | None
    step_times: pd.DataFrame | None  # step_times.json's timings: batch_size, cost_key, round, seconds_per_step
    step_facts: dict  # what they were measured on, and when (step_times.json less its timings)
    running: bool  # a sweep held the lock: it was still running
    warnings: list[str] = field(default_factory=list)
    damaged: int = 0  # trials left out because a record was damaged
    # Trials whose batch size followed a schedule, as `trials` (batch_size: the starting one) with the columns
    # schedule (its name, one per distinct schedule: batches.names) and lr_scale: apart, so that every table
    # grouped by batch size holds constant ones.
    scheduled: pd.DataFrame = field(default_factory=pd.DataFrame)
    batch_changes: dict[str, list[dict]] = field(default_factory=dict)  # trial_id -> Summary.batch_changes

    @property
    def all_trials(self) -> pd.DataFrame:
        """Every trial, constant and scheduled (column schedule: NaN for a constant batch size)."""
        return pd.concat([self.trials, self.scheduled], ignore_index=True) if len(self.scheduled) else self.trials

    @property
    def regression(self) -> bool:
        return self.target_metric == "test_loss"

    @property
    def sequence(self) -> bool:
        """A sequence task (its trials record a context): its tables state tokens beside examples."""
        return "context" in self.all_trials and bool(self.all_trials["context"].notna().any())

    @property
    def suggested(self) -> dict | None:
        """suggest.json where `batchlab suggest` made these records (it races by design, and measures B_simple in
        a run of its own, recorded apart in noise-scale/), else None (also where it cannot be read)."""
        try:
            found = json.loads((self.sweep_dir / SUGGEST).read_text())
        except (OSError, ValueError):
            return None
        return found if isinstance(found, dict) else None

    @property
    def context(self) -> int | None:
        """Tokens per example where every trial shares one (None for other tasks, and where a swept dataset.context
        makes them differ: a figure in tokens then takes its own setting's context, and a figure over several
        settings, B_crit or B_simple, none)."""
        values = self.all_trials["context"].dropna().unique() if self.sequence else []
        return int(values[0]) if len(values) == 1 else None


def find_sweeps(path: Path) -> tuple[list[Path], bool]:
    """The sweep directories under `path`, and whether `path` is a records root."""
    path = Path(path)
    if not path.exists():
        raise RecordsError(f"{path} does not exist")
    if not path.is_dir():
        raise RecordsError(f"{path} is not a directory of sweep records")
    if _is_sweep(path):
        return [path], False
    sweeps = sorted(p for p in path.iterdir() if p.is_dir() and _is_sweep(p))
    if not sweeps:
        raise RecordsError(f"{path} holds no sweeps (no directory with a trials/ folder)")
    return sweeps, True


def read_sweeps(path: Path) -> list[tuple[Path, SweepRecords | None, str | None]]:
    """Every sweep under `path`, read: (its directory, its records, None), or under a records root (its
    directory, None, why it could not be read), since one unreadable sweep must not hide the others.
    Raises RecordsError for a single sweep that cannot be read, or when no sweep under a root can."""
    sweep_dirs, is_root = find_sweeps(path)
    read = []
    for sweep_dir in sweep_dirs:
        try:
            read.append((sweep_dir, load_sweep(sweep_dir), None))
        except RecordsError as exc:
            if not is_root:
                raise
            read.append((sweep_dir, None, str(exc)))
    if all(records is None for _, records, _ in read):
        raise RecordsError(f"nothing could be read under {path}: " + "; ".join(why for _, _, why in read))
    return read


def _is_sweep(path: Path) -> bool:
    return (path / "trials").is_dir() or (path / "sweep.yaml").is_file()


def load_sweep(sweep_dir: Path) -> SweepRecords:
    """Read every trial of one sweep. Raises RecordsError when no trial could be read."""
    trials_dir = sweep_dir / "trials"
    trial_dirs = sorted(p for p in trials_dir.iterdir()
                        if p.is_dir() and not p.name.startswith(".")) if trials_dir.is_dir() else []
    if not trial_dirs:
        raise RecordsError(f"{sweep_dir} holds no trials yet ({trials_dir} is missing or empty)")

    warnings: list[str] = []
    rows, hits, metrics, configs, changes = [], [], {}, [], {}
    damaged = 0
    for trial_dir in trial_dirs:
        try:
            record = read_trial(trial_dir)  # the same reading decides whether a resumed sweep trains it again
        except Damaged as exc:
            warnings.append(f"{exc}; trial skipped")
            damaged += 1
            continue
        warnings += record.notes
        if record.curves_lost:
            warnings.append(f"{record.curves_lost}; its curves are left out")
        config, summary = record.config, record.summary
        row, trial_hits = _trial_row(trial_dir, config, summary)
        row.update(record.schedule)
        rows.append(row)
        if summary is not None and summary.batch_changes:
            changes[row["trial_id"]] = summary.batch_changes
        hits.extend(trial_hits)
        configs.append(config)
        if record.metrics is not None:
            metrics[row["trial_id"]] = record.metrics

    if not rows:
        raise RecordsError(f"no trial in {trials_dir} could be read: " + "; ".join(warnings))

    config = configs[0]
    target_metric, targets = _sweep_targets(configs, warnings)
    extra_axes = sorted({axis_column(k) for c in configs for k in c.get("axes", {})
                         if k not in ("batch_size", "lr", "seed")})
    everything = _trials_frame(rows, extra_axes)
    constant = everything["schedule"].isna()
    trials = everything[constant].drop(columns=["schedule", "lr_scale"]).reset_index(drop=True)
    scheduled = everything[~constant].reset_index(drop=True)
    # A name per distinct schedule (one to one with its key): every table groups by it and shows it.
    scheduled["schedule"] = scheduled["schedule"].map(batches.names(scheduled["schedule"]))
    hits_frame = pd.DataFrame(hits, columns=["trial_id", "target", *TO_TARGET, "tokens"])
    hits_frame = hits_frame.astype({c: float for c in ("target", *TO_TARGET, "tokens")})
    names = Counter(c.get("name") for c in configs if isinstance(c.get("name"), str))
    return SweepRecords(
        sweep_dir=sweep_dir,
        name=names.most_common(1)[0][0] if names else sweep_dir.name,
        trials=trials,
        hits=hits_frame,
        metrics=metrics,
        config=config,
        target_metric=target_metric,
        targets=targets,
        extra_axes=extra_axes,
        sweep_yaml=_read_text(sweep_dir / "sweep.yaml"),
        **_step_times(sweep_dir / steptime.FILE, warnings),
        running=SweepDir(sweep_dir.parent, sweep_dir.name).is_running(),
        warnings=warnings,
        damaged=damaged,
        scheduled=scheduled,
        batch_changes=changes,
    )


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def axis_column(key: str) -> str:
    """The trials column for a sweep axis: its dotted path, unless that clashes with ours."""
    reserved = {"trial_id", "status", "setting", *SUMMARY_NUMBERS, *(f"noise_{k}" for k in NOISE_NUMBERS),
                "device", "device_name", "threads",
                "precision", "torch_version", "command", "error", "started_at", "finished_at"}
    return f"axis:{key}" if key in reserved or key.startswith("final_") else key


def _number(value) -> float:
    """A summary figure as float; null or anything odd becomes NaN (not measured)."""
    return float(value) if is_number(value) else math.nan


def _axis_value(value):
    # Lists (e.g. hidden sizes) cannot be grouped on; their JSON text can.
    return value if isinstance(value, (int, float, str, bool)) or value is None else json.dumps(value)


def _trial_row(trial_dir: Path, config: dict, record: Summary | None) -> tuple[dict, list[dict]]:
    trial_id = trial_dir.name
    row = {
        "trial_id": trial_id,
        "status": record.status.value if record else INCOMPLETE,
        "batch_size": int(config["batch_size"]),
        "lr": float(config["lr"]),
        "seed": int(config["seed"]),
    }
    for key, value in config.get("axes", {}).items():
        if key not in ("batch_size", "lr", "seed"):
            row[axis_column(key)] = _axis_value(value)
    row["cost_key"] = steptime.cost_key(config.get("axes", {}))  # which step time is this trial's
    summary = {k: v for k, v in vars(record).items()} if record else {}
    for key in SUMMARY_NUMBERS:
        row[key] = _number(summary.get(key))
    final = summary.get("final") if isinstance(summary.get("final"), dict) else {}
    for key in ("train_loss", "test_loss", "test_accuracy", "test_perplexity"):
        row[f"final_{key}"] = _number(final.get(key))
    noise = summary.get("noise") if isinstance(summary.get("noise"), dict) else {}
    for key in NOISE_NUMBERS:
        row[f"noise_{key}"] = _number(noise.get(key))  # null (JSON has no NaN) or absent: NaN
    for key in ("device", "device_name", "threads", "precision", "torch_version", "command",
                "error", "started_at", "finished_at"):
        value = summary.get(key)
        row[key] = value if isinstance(value, (str, int)) and not isinstance(value, bool) else None

    hits = []
    recorded = summary.get("targets", {})
    for value in _target_values(config):
        key = f"{value:g}"
        if key not in recorded:
            continue  # not recorded: unknown, neither reached nor missed
        reached = recorded[key]
        hit = {"trial_id": trial_id, "target": float(value)}
        for what in TO_TARGET:
            hit[what] = _number(reached.get(what)) if reached else math.inf
        hit["tokens"] = _number(reached.get("tokens")) if reached else math.nan
        if math.isnan(hit["tokens"]):  # missed (inf), a record from before tokens at targets, or not a sequence task
            hit["tokens"] = hit["examples"] * row["context"]  # (its context NaN: NaN)
        hits.append(hit)
    return row, hits


def _step_times(path: Path, warnings: list[str]) -> dict:
    """step_times and step_facts from step_times.json; None and {} when there is none (or it is damaged:
    then a warning, and the report falls back on each trial's own clock)."""
    if not path.exists():
        return {"step_times": None, "step_facts": {}}
    try:
        recorded = json.loads(path.read_text())
        frame = pd.DataFrame([{"batch_size": int(t["batch_size"]), "cost_key": steptime.cost_key(t["axes"]),
                               "round": int(t["round"]), "seconds_per_step": float(t["seconds"]) / int(t["steps"])}
                              for t in recorded["timings"]],
                             columns=["batch_size", "cost_key", "round", "seconds_per_step"])
        facts = {k: v for k, v in recorded.items() if k != "timings"}
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError) as exc:
        warnings.append(f"{path}: damaged ({type(exc).__name__}); seconds per step are taken from each trial's "
                        "own clock instead")
        return {"step_times": None, "step_facts": {}}
    if isinstance(facts.get("rounds"), int) and facts["rounds"] < steptime.ROUNDS:
        again = ("`batchlab suggest` again (it reads its trials back)" if (path.parent / SUGGEST).exists()
                 else "`batchlab sweep` again, not on Dask, to time the steps anew (nothing is trained again)")
        warnings.append(f"{path}: {facts['rounds']} timing rounds, from an earlier batchlab (it takes {steptime.ROUNDS}"
                        f" now); run the same {again}")
    return {"step_times": frame, "step_facts": facts}


def _target_values(config: dict) -> list[float]:
    values = config["target"]["value"]
    return [float(v) for v in (values if isinstance(values, list) else [values])]


def _sweep_targets(configs: list[dict], warnings: list[str]) -> tuple[str, list[float]]:
    metrics = Counter(c["target"]["metric"] for c in configs)
    metric = metrics.most_common(1)[0][0]
    if len(metrics) > 1:
        warnings.append(f"trials disagree on the target metric ({', '.join(metrics)}); using {metric}")
    targets: list[float] = []
    for config in configs:
        if config["target"]["metric"] == metric:
            targets += [v for v in _target_values(config) if v not in targets]
    return metric, targets


def _trials_frame(rows: list[dict], extra_axes: list[str]) -> pd.DataFrame:
    trials = pd.DataFrame(rows)
    for axis in extra_axes:
        if axis not in trials:
            trials[axis] = None
    # A "setting" is everything we tune at a batch size: the lr plus any other swept axis.
    # One text key per setting keeps grouping simple (missing axis values would vanish in groupby).
    keys = trials[["lr", *extra_axes]].astype(object).where(trials[["lr", *extra_axes]].notna(), None)
    trials["setting"] = [json.dumps(list(values), default=str) for values in keys.itertuples(index=False)]
    return trials
