"""The Python API: what the command line does, as functions that return data and never print.

    import batchlab
    result = batchlab.sweep("configs/my-cnn.yaml", out="runs", overrides={"budget.epochs": 2})
    result.trials                                   # a DataFrame, a row per trial
    batchlab.sweep({"name": "nb", "model": {"name": "mlp"}}, model=SmallCNN)   # a class from a notebook
    batchlab.sweep("configs/my-cnn.yaml", executor=dask_client, gpus_per_trial=1)   # on a Dask cluster
    batchlab.sweep("configs/my-cnn.yaml", overrides={"batch_size": {"schedule": [[0, 32], [20000, 128]]}})

A config is a YAML file's path, a dict of the same shape, or an Experiment (load_config). `overrides` are
`{"budget.epochs": 2}`, `["budget.epochs=2"]` or one `"budget.epochs=2"`. `model`, `dataset`, `loss`, `optimizer`
hand a callable straight from Python in place of the config's name (a class, a function, a lambda, a
functools.partial): it runs in this process; worker processes (and Dask workers) import it by its module path,
so a lambda, a partial or one defined in a notebook needs the default executor, one worker. A wrong argument is
an ArgumentError naming the function and the argument (batchlab.arguments), as the command line's options are
checked.
"""

from __future__ import annotations

import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from batchlab import arguments
from batchlab import config as config_file
from batchlab import maxbatch, registry
from batchlab.disk import check_writable
from batchlab.errors import BatchlabError, BatchlabWarning, ConfigError, DataError, RecordsError
from batchlab.executors import make_executor
from batchlab.fields import MEASUREMENTS_MAX, PARALLEL_MAX
from batchlab.grid import Trial, expand, overridden
from batchlab.maxbatch import MaxBatch
from batchlab.noise import check_sizes
from batchlab.noise_scale import noise_scale as measure_noise_scale
from batchlab.preflight import check_points, check_units
from batchlab.records import Status, SweepDir
from batchlab.run import Hooks, check_sweep, plan, resolve_max, run_sweep, smoke as smoke_config
from batchlab.schema import Experiment

Config = str | Path | dict | Experiment
KEY_PATH = re.compile(r"[a-z_]+(\.[a-z_]+)+")  # model.name, dataset.path, ...
Overrides = dict[str, Any] | list[str] | str | None
# What each part keeps of its section when a callable replaces its name; the rest configures the built-ins.
KEPT_WITH_A_CALLABLE = {"dataset": None, "model": ("args",), "loss": ("args", "label_smoothing"),
                        "optimizer": ("args", "grad_clip")}


@dataclass
class Source:
    """Where a config came from, to point an error at its line, and which directories its code imports from."""
    name: str  # the file, or "config" for a dict
    text: str | None  # the YAML text, when it came from a file
    code_dirs: tuple[str, ...]  # the config file's directory and the working directory
    overridden: bool = False  # --set overrides applied: the file's line may not hold the value at fault

    def locate(self, error: BatchlabError) -> BatchlabError:
        """A config or data error that starts with its key path (`model.name: ...`) or a top-level field
        (`batch_size: ...`), prefixed `file, line N: ` (named by config.source_name, as config.load names it)."""
        message = str(error)
        key = message.split(": ", 1)[0]
        a_key = KEY_PATH.fullmatch(key) or key in Experiment.model_fields  # model.name, or a top-level batch_size
        if not a_key or not isinstance(error, (ConfigError, DataError)):
            return error
        kind = DataError if isinstance(error, DataError) else ConfigError
        name = config_file.source_name(self.name, self.overridden)
        return kind(f"{config_file.where(name, self.text, key)}: {message}")

    def place(self, warning: str) -> str:
        """A warning about the config (`key: ...`), its file and line named as an error's are."""
        return str(self.locate(ConfigError(warning)))


def source_of(config: Config, overrides: Overrides = None) -> Source:
    if isinstance(config, (str, Path)):
        path = Path(config)
        try:
            text = config_file.read_text(path)
        except ConfigError:
            text = None  # load_config says why
        return Source(str(path), text, (str(path.resolve().parent), os.getcwd()), bool(overrides))
    return Source("config", None, (os.getcwd(),), bool(overrides))


def _parts(function: str, parts: dict[str, Callable | None]) -> dict[str, Callable | None]:
    """A public function's **parts, checked: a misspelt keyword is a TypeError naming that function (it was
    load_config's, a name the user never called)."""
    for key in parts:
        if key not in KEPT_WITH_A_CALLABLE:
            raise TypeError(f"batchlab.{function}() got an unexpected keyword argument {key!r} (besides its own, it "
                            f"takes a callable for {', '.join(KEPT_WITH_A_CALLABLE)})")
    return parts


def load_config(config: Config, overrides: Overrides = None, *, model: Callable | None = None,
                dataset: Callable | None = None, loss: Callable | None = None,
                optimizer: Callable | None = None) -> Experiment:
    """A validated Experiment; raises ConfigError naming the file, line and key of a mistake."""
    experiment = config_file.load_config(config, arguments.overrides("load_config", overrides) or ())
    given = {"model": model, "dataset": dataset, "loss": loss, "optimizer": optimizer}
    if not any(given.values()):
        return experiment
    raw = experiment.model_dump(mode="json", exclude_unset=True)
    for part, obj in given.items():
        if obj is not None:
            keep = KEPT_WITH_A_CALLABLE[part]
            section = raw.get(part, {})
            raw[part] = {**({k: v for k, v in section.items() if k in keep} if keep else section),
                         "name": registry.give(f"{part}.name", obj)}
    return config_file.validate(raw, "config")


@dataclass
class Plan:
    """A sweep ready to run: its experiment, its trials and where their records go."""
    experiment: Experiment
    trials: list[Trial]
    sweep_dir: SweepDir
    source: Source
    notes: list[str] = field(default_factory=list)  # for the user: the values found for `max` / `auto`

    def statuses(self) -> list[tuple[Trial, Status | None]]:
        return plan(self.trials, self.sweep_dir)


def plan_sweep(config: Config, out: str | Path = "runs", overrides: Overrides = None, *, smoke: bool = False,
               threads: int | None = None, memory_limit: int | str | None = None, allow_many: bool = False,
               **parts: Callable | None) -> Plan:
    """Load, expand and resolve a sweep without training anything (what `--dry-run` shows)."""
    out, overrides, memory_limit = _sweep_args("plan_sweep", out, overrides, threads, memory_limit)
    source = source_of(config, overrides)
    overrides = _with_threads(overrides, threads)
    experiment = load_config(config, overrides, **_parts("plan_sweep", parts))
    if smoke:
        experiment = smoke_config(experiment)
    registry.make_importable(*source.code_dirs)
    try:
        experiment, notes = resolve_max(experiment, memory_limit, source.code_dirs)
    except BatchlabError as e:
        raise source.locate(e) from None
    try:
        trials = expand(experiment, allow_many=allow_many)
    except BatchlabError as e:
        raise source.locate(e) from None
    for warning in overridden(experiment, trials):  # the config's own value, never trained with: said once
        warnings.warn(source.place(warning), BatchlabWarning, stacklevel=2)
    if not experiment.target.value and not smoke:
        warnings.warn("no target.value: the trials train to their budget, and `batchlab report` needs a target to "
                      "time them (set one, e.g. target: {value: [0.9]}; with --restart once trials are recorded)",
                      BatchlabWarning, stacklevel=2)
    return Plan(experiment, trials, SweepDir(Path(out), experiment.name), source, notes)


def check_plan(plan: Plan, *, restart: bool = False, race: bool = False, executor: Any = None,
               workers: int | None = None, gpus: list[int] | None = None, scheduler: str | None = None,
               gpus_per_trial: float | None = None, retries: int | None = None) -> None:
    """Raise what `sweep` with these arguments would refuse before training, found without loading data,
    training or writing anything (what `--dry-run` checks beside showing the plan): the executor's options (no
    cluster is contacted), user code that does not import, a device this machine lacks, records of another
    experiment or of changed code."""
    arguments.executor("check_plan", workers, gpus, gpus_per_trial, retries)
    try:
        runner = make_executor(executor, workers=workers, gpus=gpus, scheduler=scheduler,
                               gpus_per_trial=gpus_per_trial, retries=retries)
        check_sweep(plan.experiment, plan.trials, plan.sweep_dir.path.parent, restart, race, plan.source.code_dirs,
                    here=runner.on_this_machine)
        for trial in plan.trials:
            check_units(trial.config, None, trial.axes)  # tokens on an image set, known from its name alone
            if trial.config.noise.every:
                check_sizes(trial.config, trial.axes)
        said = dict.fromkeys(filter(None, (check_points(t.config, None, t.axes) for t in plan.trials)))  # once each
        check_writable(plan.sweep_dir.path, access=False)  # a path through a file is a mistake; a read-only
        # disk is not, for a dry run, which reads only (the plan of records on a read-only mount)
    except BatchlabError as e:
        raise plan.source.locate(e) from None
    for warning in said:
        warnings.warn(plan.source.place(warning), BatchlabWarning, stacklevel=2)


def _sweep_args(function: str, out: Any, overrides: Any, threads: Any, memory_limit: Any):
    """`out`, `overrides` and `memory_limit` as plan_sweep uses them, checked as `batchlab sweep` checks --out,
    --set, --threads and --memory-limit, in the name of the function called."""
    arguments.whole(function, "threads", threads, 1, PARALLEL_MAX)
    return (arguments.path(function, "out", out), arguments.overrides(function, overrides),
            arguments.memory_limit(function, memory_limit))


def _with_threads(overrides: Overrides, threads: int | None) -> Overrides:
    if threads is None:
        return overrides
    if isinstance(overrides, dict) or overrides is None:
        return {**(overrides or {}), "threads": threads}
    return [*overrides, f"threads={threads}"]


@dataclass
class SweepResult:
    """What a sweep call did. `summaries`: the trials it ran (summary.json each); `path`: the records."""
    path: Path
    summaries: list[dict]
    skipped: int  # trials already recorded as completed or diverged

    @property
    def counts(self) -> dict[str, int]:
        """Every trial of the sweep's records by the status its summary.json says, as `trials` holds them: those
        run now and those already recorded (a rerun's are not left out; a summary the report calls damaged is
        counted as it says). `ran`: those run now."""
        return dict(Counter(s["status"] for s in SweepDir(self.path.parent, self.path.name).summaries()))

    @property
    def ran(self) -> dict[str, int]:
        """The trials this call ran, by status (the CLI's `2 completed (4 already recorded)`)."""
        return dict(Counter(s["status"] for s in self.summaries))

    @property
    def trials(self):
        """Every trial of the sweep's records (not only those run now): its summary.json as a DataFrame row
        (nested figures flattened: final.test_accuracy, targets.0.97.seconds, ...)."""
        import pandas as pd

        return pd.json_normalize(SweepDir(self.path.parent, self.path.name).summaries())


def sweep(config: Config, out: str | Path = "runs", overrides: Overrides = None, *, workers: int | None = None,
          gpus: list[int] | None = None, executor: Any = None, scheduler: str | None = None,
          gpus_per_trial: float | None = None, retries: int | None = None, restart: bool = False,
          smoke: bool = False, race: bool = False, threads: int | None = None, memory_limit: int | str | None = None,
          allow_many: bool = False, command: str | None = None, on_trial_start: Callable | None = None,
          on_trial_end: Callable | None = None, time_steps: bool = True, on_steps_timed: Callable | None = None,
          plan: Plan | None = None, **parts: Callable | None) -> SweepResult:
    """Train every trial of the sweep not already recorded as completed or diverged, into out/<name>.

    Where trials run: `executor` "local" (default: one after another here, or `workers` processes, or one per
    GPU id in `gpus`), "dask" (the cluster at `scheduler`, else a LocalCluster of `workers` processes on
    127.0.0.1; `gpus_per_trial` asks each trial for the worker resource GPU=K; a trial whose worker is lost
    runs again up to `retries` times, default 1), or a dask.distributed Client.
    on_trial_start(trial, i, n) may return a progress callback (step, total_steps, row), called for trials that
    run one after another here; on_trial_end(trial, summary) is called as each trial ends. Ctrl-C records the
    running trials as interrupted and raises KeyboardInterrupt; run the same call again to resume. `race`: each
    trial stops once its training time passes the best time to the target already measured for its seed (it
    cannot be the fastest); the fastest (batch size, lr) of each seed is the same as without racing, the others
    are only known to be slower. `time_steps`: once the trials have run, a step at every batch size is timed
    interleaved into step_times.json (a few seconds; the report multiplies steps to the target by these; not on
    Dask); on_steps_timed(done, rounds) follows it.
    """
    parts = _parts("sweep", parts)
    arguments.executor("sweep", workers, gpus, gpus_per_trial, retries)
    if plan is None:  # (a plan given was checked by plan_sweep)
        out, overrides, memory_limit = _sweep_args("sweep", out, overrides, threads, memory_limit)
    plan = plan or plan_sweep(config, out, overrides, smoke=smoke, threads=threads, memory_limit=memory_limit,
                              allow_many=allow_many, **parts)
    hooks = Hooks(on_trial_start or Hooks.trial_start, on_trial_end or Hooks.trial_end,
                  on_steps_timed or Hooks.steps_timed)
    command = command or f"batchlab.sweep({str(config) if isinstance(config, (str, Path)) else '<config>'!r})"
    try:
        with make_executor(executor, workers=workers, gpus=gpus, scheduler=scheduler, gpus_per_trial=gpus_per_trial,
                           retries=retries) as runner:
            summaries = run_sweep(plan.experiment, plan.trials, plan.sweep_dir.path.parent, command,
                                  restart=restart, hooks=hooks, smoke=smoke, executor=runner,
                                  code_dirs=plan.source.code_dirs, race=race, time_steps=time_steps,
                                  place=plan.source.place)
    except BatchlabError as e:
        raise plan.source.locate(e) from None
    return SweepResult(plan.sweep_dir.path, summaries, len(plan.trials) - len(summaries))


def report(path: str | Path, target: float | None = None):
    """The report of one sweep's records, computed and not written: `.recommendation` (the answer, as data),
    `.time_to_accuracy` (the table the CLI writes, a DataFrame), `.write(out_dir)` for the files.

    `path` is a sweep directory (runs/<name>), or a records root holding exactly one sweep. `target` headlines that
    target (one not recorded: a warning, and the default); ConfigError for one the metric cannot meet (accuracy 5).
    """
    from batchlab.reporting import analyse  # matplotlib: imported when a report is asked for, not with batchlab

    arguments.real("report", "target", target)
    reports = analyse(arguments.path("report", "path", path), target=target)
    if len(reports) > 1:
        names = ", ".join(r.name for r in reports)
        raise RecordsError(f"{path} holds {len(reports)} sweeps ({names}): give one, e.g. {Path(path) / reports[0].name}")
    return reports[0]


@dataclass
class Records:
    """A sweep's records as DataFrames: `trials` (a row per trial: axes, status, summary figures; a trial whose batch
    size followed a schedule: its starting batch_size, the schedule named in the column schedule) and `metrics`
    (every metrics.csv row, with its trial_id). `warnings` name records that were damaged and left out."""
    trials: Any
    metrics: Any
    warnings: list[str]


def load_records(path: str | Path) -> Records:
    """Read one sweep's records (runs/<name>) for a notebook."""
    import pandas as pd

    from batchlab.reporting.load import load_sweep

    records = load_sweep(arguments.path("load_records", "path", path))
    metrics = [frame.assign(trial_id=trial_id) for trial_id, frame in records.metrics.items()]
    metrics = pd.concat(metrics, ignore_index=True) if metrics else pd.DataFrame(columns=["trial_id"])
    return Records(records.all_trials, metrics[["trial_id", *[c for c in metrics.columns if c != "trial_id"]]],
                   list(records.warnings))


def suggest(config: Config, out: str | Path = "runs", overrides: Overrides = None, *, target: float | None = None,
            budget: float | None = None, threads: int | None = None, command: str | None = None,
            on_stage: Callable[[str], None] | None = None, on_trial_start: Callable | None = None,
            on_trial_end: Callable | None = None, restart: bool = False, schedule: bool = False,
            **parts: Callable | None):
    """The time-optimal batch size for the config's model on this hardware (batchlab.suggest): seconds per step
    scanned interleaved, a pilot measuring the noise scale, a race of the candidates by steps x seconds per
    step, and the winner confirmed on two more seeds. `target` overrides the config's; `budget`: seconds for the
    whole search, everything counted; `restart`: delete the earlier records under
    out/<name>-suggest and start over; `schedule`: then propose a batch-size schedule around the answer (B*/4
    doubling per 4x examples to 2B*, when the measured noise scale grows) and race it against the answer
    (Suggestion.schedule). Returns a Suggestion; the trials are recorded under out/<name>-suggest."""
    from batchlab.suggestion import suggest as search  # matplotlib, for its figure

    out, overrides, _ = _sweep_args("suggest", out, overrides, threads, None)
    arguments.real("suggest", "target", target)
    arguments.real("suggest", "budget", budget, above=0)  # (0 s: nothing could run in it)
    source = source_of(config, overrides)
    experiment = load_config(config, _with_threads(overrides, threads), **_parts("suggest", parts))
    hooks = Hooks(on_trial_start or Hooks.trial_start, on_trial_end or Hooks.trial_end)
    try:
        return search(experiment, Path(out), target=target, budget=budget, code_dirs=source.code_dirs,
                      command=command or f"batchlab.suggest({str(config) if isinstance(config, (str, Path)) else '<config>'!r})",
                      on_stage=on_stage or (lambda text: None), hooks=hooks, restart=restart,
                      schedule=schedule)
    except BatchlabError as e:
        raise source.locate(e) from None


def noise_scale(config: Config, overrides: Overrides = None, steps: int = 0, measurements: int = 20,
                **parts: Callable | None) -> dict:
    """B_simple = tr(Sigma)/|G|^2 of the config's model at initialisation or after `steps` training steps,
    averaged over `measurements` draws (at least 2: one draw has no spread to give a standard error)."""
    overrides = arguments.overrides("noise_scale", overrides)
    arguments.whole("noise_scale", "steps", steps, 0)
    arguments.whole("noise_scale", "measurements", measurements, 2, MEASUREMENTS_MAX)
    source = source_of(config, overrides)
    experiment = load_config(config, overrides, **_parts("noise_scale", parts))
    try:
        return measure_noise_scale(experiment, steps, measurements, code_dirs=source.code_dirs)
    except BatchlabError as e:
        raise source.locate(e) from None


def cbs(config: Config, out: str | Path = "runs", overrides: Overrides = None, *,
        batch_sizes: list[int] | None = None, points: int | None = None, window: int | None = None,
        tolerance: float | None = None, source: str = "branching", min_batch: int | None = None,
        max_batch: int | None = None, eval_examples: int | None = None, measurements: int | None = None,
        by: str = "fit", fraction: float = 1.0, on_progress: Callable[[str, int, int], None] | None = None,
        **parts: Callable | None):
    """The critical batch size measured as training goes, by branching from one reference run (Merrill et al.
    2025), beside B_simple at the same points, and a batch-size schedule recommended from it (batchlab.
    critical_batch states the definition). `source="noise"`: B_simple(t) alone, no branches. The schedule
    trains at `fraction` of the CBS fit (`by="fit"`) or of the largest batch within tolerance
    (`by="tolerance"`). Writes out/<name>/cbs/ (cbs-noise/ for source="noise") and returns a
    batchlab.critical_batch.Cbs (`.to_dict()`: what cbs.json holds)."""
    from batchlab import critical_batch as procedure
    from batchlab.cbs_defaults import CBS_EVAL_EXAMPLES, CBS_MEASUREMENTS, CBS_POINTS, CBS_TOLERANCE

    out, overrides, _ = _sweep_args("cbs", out, overrides, None, None)
    for name, value in (("tolerance", tolerance), ("fraction", fraction)):
        arguments.number("cbs", name, value)  # its bounds are measure's, as for `batchlab cbs`
    source_file = source_of(config, overrides)
    experiment = load_config(config, overrides, **_parts("cbs", parts))
    try:
        check_writable(procedure.folder(Path(out), experiment.name, source))  # before the measurement, not after
        return procedure.measure(
            experiment, Path(out), batch_sizes=batch_sizes, points=CBS_POINTS if points is None else points,
            window=window, tolerance=CBS_TOLERANCE if tolerance is None else tolerance, source=source,
            min_batch=min_batch, max_batch=max_batch,
            eval_examples=CBS_EVAL_EXAMPLES if eval_examples is None else eval_examples,
            measurements=CBS_MEASUREMENTS if measurements is None else measurements, progress=on_progress,
            code_dirs=source_file.code_dirs, by=by, fraction=fraction)
    except BatchlabError as e:
        raise source_file.locate(e) from None


def find_max_batch(config: Config, overrides: Overrides = None, memory_limit: int | str | None = None,
                   max_batch: int | None = None, **parts: Callable | None) -> MaxBatch:
    """The largest batch size the config's model trains at without running out of memory (see max-batch).
    `memory_limit`: bytes, or a size as --memory-limit takes it ('512MiB', '2GiB')."""
    overrides = arguments.overrides("find_max_batch", overrides)
    memory_limit = arguments.memory_limit("find_max_batch", memory_limit)
    arguments.whole("find_max_batch", "max_batch", max_batch, 1)
    source = source_of(config, overrides)
    experiment = load_config(config, overrides, **_parts("find_max_batch", parts))
    try:
        return maxbatch.find_max_batch(experiment, memory_limit=memory_limit, max_batch=max_batch, code_dirs=source.code_dirs)
    except BatchlabError as e:
        raise source.locate(e) from None
