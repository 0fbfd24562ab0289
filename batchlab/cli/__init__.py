"""The command line: the only place that prints and exits. Library errors become one line and exit code 2."""

from __future__ import annotations

import math
import shlex
import sys
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from tqdm import tqdm

from batchlab import api
from batchlab.cli.checks import Commands, directory, fail, finite_target, parse_bytes, parse_seconds
from batchlab.cli.display import Display, plan_table
from batchlab.errors import VALUE_CHARS, BatchlabError, BatchlabWarning, counted, short
from batchlab.fields import COUNT_MAX, MEASUREMENTS_MAX, PARALLEL_MAX, RETRIES_MAX
from batchlab.memory import mib
from batchlab.records import Status
from batchlab.processes import sigterm_as_interrupt

app = typer.Typer(cls=Commands, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="How batch size and learning rate change how fast and how well a PyTorch model trains.")

ConfigArg = Annotated[Path, typer.Argument(help="The YAML experiment, e.g. configs/quickstart.yaml.")]
SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", metavar="PATH=VALUE", help="Override a config field (value parsed as YAML), e.g. --set budget.epochs=2 "
    "--set 'sweep.batch_size=[64,256]'. Repeatable.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]


def _version(value: bool):
    if value:
        from batchlab.version import __version__

        typer.echo(f"batchlab {__version__}")
        raise typer.Exit()


@app.callback()
def _commands(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = False):
    """How batch size and learning rate change how fast and how well a PyTorch model trains."""


@contextmanager
def user_errors():
    """A user's mistake is one readable line and exit code 2, never a traceback; a warning from the library
    (BatchlabWarning) is one `warning: ...` line on stderr, shown as it happens."""
    shown = warnings.showwarning

    def show(message, category, *where, **kw):
        if issubclass(category, BatchlabWarning):
            typer.echo(f"warning: {short(str(message), 2000)}", err=True)
        else:
            shown(message, category, *where, **kw)

    with warnings.catch_warnings():  # restores the filters and showwarning afterwards
        warnings.simplefilter("always", BatchlabWarning)
        warnings.showwarning = show
        try:
            yield
        except BatchlabError as e:
            raise fail(str(e)) from None


def command_line(cfg: Path, overrides: list[str], extra: list[str], command: str = "sweep") -> str:
    parts = ["batchlab", command, str(cfg)] + [a for o in overrides for a in ("--set", o)] + extra
    return shlex.join(parts)


def torch_cuda_count() -> int:
    import torch

    return torch.cuda.device_count()


@app.command()
def sweep(
    config: ConfigArg,
    set_: SetOpt = None,
    out: Annotated[Optional[str], typer.Option("--out", help="Records root; the sweep goes to OUT/<name>. "
                                                "(default: runs, or a temporary directory with --smoke)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check the options, that user code imports and that "
                                          "--out is a folder and existing records can be extended, print the "
                                          "expanded trial table; load no data, train nothing (but `max` in the "
                                          "batch-size axis and micro_batch_size: auto are found first, by the "
                                          "max-batch search).")] = False,
    smoke: Annotated[bool, typer.Option("--smoke", help="Every trial a few steps on a slice of the data, on CPU; "
                                        "fails if any trial fails. For a project's CI.")] = False,
    restart: Annotated[bool, typer.Option("--restart", help="Delete this sweep's trials and start over.")] = False,
    race: Annotated[bool, typer.Option("--race", help="Stop each trial once its training time passes the best time "
                                       "to the target measured so far for its seed: the fastest (batch size, lr) is "
                                       "found at a fraction of the cost; the others are only known to be slower.")]
    = False,
    yes: Annotated[bool, typer.Option("--yes", help=f"Run grids over {10_000:,} trials.")] = False,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, max=PARALLEL_MAX, help="torch CPU threads (recorded; "
                                                   "results are bit-identical only at the same count).")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", min=1, max=PARALLEL_MAX, help="Trials run at once in separate "
                                                   "processes, each with CPU cores / N threads unless the config "
                                                   "sets threads; with --executor dask, the local cluster's "
                                                   "processes. (default: 1; dask: one per CPU core)")] = None,
    executor: Annotated[str, typer.Option("--executor", help="Where trials run: local (this machine) or dask (a "
                                          "Dask cluster: a local one on 127.0.0.1, or --scheduler's).")] = "local",
    scheduler: Annotated[Optional[str], typer.Option("--scheduler", metavar="ADDRESS", help="With --executor dask: "
                                                     "the cluster's scheduler, e.g. tcp://head:8786.")] = None,
    gpus_per_trial: Annotated[Optional[float], typer.Option("--gpus-per-trial", metavar="K", help="With --executor "
                                                            "dask: each trial asks for the worker resource GPU=K "
                                                            "(workers started with --resources GPU=1).")] = None,
    retries: Annotated[Optional[int], typer.Option("--retries", metavar="N", min=0, max=RETRIES_MAX, help="With --executor dask: a trial "
                                                   "whose worker is lost runs again up to N times, then is "
                                                   "recorded failed. (default: 1)")] = None,
    memory_limit: Annotated[Optional[str], typer.Option("--memory-limit", help="For `max` in the batch-size axis "
                                                        "and micro_batch_size: auto (see max-batch).")] = None,
    gpus: Annotated[Optional[str], typer.Option("--gpus", metavar="IDS", help="Comma-separated CUDA device ids, "
                                                "e.g. 0,1: one worker process per GPU.")] = None,
    time_steps: Annotated[bool, typer.Option("--time-steps/--no-time-steps", help="After the trials, time a step at "
                                             "every batch size, interleaved (a few seconds): the report multiplies "
                                             "steps to the target by these. Not on Dask.")] = True,
    quiet: QuietOpt = False,
):
    """Expand a YAML experiment into trials, train each, and record everything under OUT/<name>."""
    try:
        gpu_ids = [int(g) for g in gpus.split(",")] if gpus else None
        if gpu_ids and not all(0 <= g < PARALLEL_MAX for g in gpu_ids):
            raise ValueError
    except ValueError:
        raise fail(f"--gpus {short(repr(gpus), VALUE_CHARS)}: expected comma-separated device ids, "
                   "e.g. --gpus 0,1") from None
    if gpus_per_trial is not None and not 0 < gpus_per_trial <= PARALLEL_MAX:  # NaN too
        raise fail(f"--gpus-per-trial {gpus_per_trial}: expected a number of GPUs above 0, at most {PARALLEL_MAX}")
    if gpu_ids and (available := torch_cuda_count()) < len(gpu_ids):
        raise fail(f"--gpus {gpus}: {available} CUDA device(s) available here")
    out = directory("--out", out)
    root = out or (Path(tempfile.mkdtemp(prefix="batchlab-smoke-")) if smoke else Path("runs"))
    with user_errors():
        plan = api.plan_sweep(config, root, list(set_ or []), smoke=smoke, threads=threads,
                              memory_limit=parse_bytes(memory_limit), allow_many=yes)
    for line in plan.notes:
        typer.echo(line)
    if dry_run:
        with user_errors():
            api.check_plan(plan, restart=restart, race=race, executor=executor, workers=workers,
                           gpus=gpu_ids, scheduler=scheduler, gpus_per_trial=gpus_per_trial, retries=retries)
        show_plan(plan, restart)
        return
    display = Display(len(plan.trials), quiet)
    sigterm_as_interrupt()
    extra = ((["--smoke"] if smoke else []) + (["--race"] if race else []) + (["--out", str(out)] if out else [])
             + (["--threads", str(threads)] if threads else []))
    try:
        with user_errors(), display:  # the display closes first: an error line never lands on a progress bar
            result = api.sweep(config, plan=plan, command=command_line(config, list(set_ or []), extra),
                               restart=restart, smoke=smoke, race=race, workers=workers, gpus=gpu_ids,
                               executor=executor, scheduler=scheduler, gpus_per_trial=gpus_per_trial,
                               retries=retries, time_steps=time_steps, on_trial_start=display.trial_start,
                               on_trial_end=display.trial_end, on_steps_timed=display.steps_timed)
    except KeyboardInterrupt:
        raise fail(f"interrupted: any trial that was running is recorded as interrupted in {plan.sweep_dir.path}; "
                   "run the same command again to resume", code=130) from None
    typer.echo(display.finished(result, time_steps and executor != "dask"))  # Dask's workers time no steps
    failed = [f"{s['trial_id']}: {s['error']}" for s in result.summaries if s["status"] == Status.FAILED]
    if failed and (smoke or len(failed) == len(result.summaries)):  # nothing came of it: a script must see that
        raise fail("smoke run failed: " + "; ".join(failed) if smoke else
                   f"every trial that ran failed ({len(failed)}), e.g. {failed[0]} (trials/*/error.txt)", code=1)


def show_plan(plan: api.Plan, restart: bool) -> None:
    table, todo = plan_table(plan.statuses(), restart)
    typer.echo(table)
    n = len(plan.trials)
    typer.echo(f"{counted(n, 'trial')}, {todo} to run; records in {plan.sweep_dir.path}")


@app.command()
def report(
    path: Annotated[Path, typer.Argument(help="A records root (runs/, every sweep in it) or one sweep (runs/mnist).")],
    target: Annotated[Optional[float], typer.Option("--target", help="The target value to headline, e.g. 0.98. "
                                                    "(default: the hardest target some batch size reached)")] = None,
    out: Annotated[Optional[str], typer.Option("--out", help="Output directory. (default: <sweep>/report)")] = None,
    formats: Annotated[str, typer.Option("--format", help="Comma-separated: md, html, csv, png.")] = "md,html,csv,png",
    as_json: Annotated[bool, typer.Option("--json", help="Print only a JSON list, one object per sweep: name, "
                                          "target, recommendation, warnings.")] = False,
):
    """Turn a sweep's records into the answer (which batch size, and why), time-to-accuracy tables, plots,
    report.md and report.html."""
    import json

    from rich.console import Console

    from batchlab.reporting import FORMATS, build_report

    finite_target(target)
    out = directory("--out", out)
    chosen = {f.strip() for f in formats.split(",") if f.strip()}
    if not chosen or chosen - FORMATS:
        raise fail(f"--format {short(repr(formats), VALUE_CHARS)}: choose from {', '.join(sorted(FORMATS))}")
    if not path.exists():
        raise fail(f"{path}: no such directory")
    with user_errors():
        reports = build_report(path, out=out, target=target, formats=chosen)
    for r in reports:
        for warning in r.warnings:
            typer.echo(f"warning: {warning}", err=True)
    if as_json:
        typer.echo(json.dumps([{
            "name": r.name, "sweep_dir": str(r.sweep_dir), "report_dir": str(r.out_dir), "target": r.target,
            "target_metric": r.target_metric, "counts": r.counts,
            "recommendation": r.recommendation.to_dict() if r.recommendation else None,
            "warnings": r.warnings} for r in reports], indent=2, allow_nan=False))
        return
    console = Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 120)
    for i, r in enumerate(reports):
        if r.recommendation is None:
            continue
        if i:
            typer.echo()
        if len(reports) > 1:  # which sweep the answer below is about
            typer.echo(f"== {r.name} ==")
        typer.echo(r.recommendation.sentence)
        for line in r.recommendation.why:
            typer.echo(f"- {line}")
        for table in (r.table(), r.schedule_table()):
            if table is not None:
                console.print(table)
        where = r.out_dir / "report.html" if "html" in chosen else r.out_dir
        answer = r.recommendation
        typer.echo(f"In short: {answer.in_short()}; report: {where}"
                   if answer.in_short() is not None else f"report: {where}")  # the answer again, last on screen


@app.command()
def export(
    path: Annotated[Path, typer.Argument(help="A records root (runs/, every sweep in it) or one sweep (runs/mnist).")],
    dest: Annotated[str, typer.Argument(metavar="DEST", help="tensorboard: a log directory; mlflow: a tracking "
                                        "URI (sqlite:///mlflow.db, file:/path) or a directory (mlruns/).")],
    to: Annotated[str, typer.Option("--to", help="tensorboard or mlflow.")],
):
    """Export every trial to TensorBoard (scalars and hparams) or MLflow (params, metrics, tags): one run each."""
    import logging

    from batchlab.export import DESTINATIONS
    from batchlab.export import export as export_records

    directory("DEST", dest)
    if to not in DESTINATIONS:
        raise fail(f"--to {short(repr(to), VALUE_CHARS)}: choose from {', '.join(DESTINATIONS)}")
    if not path.exists():
        raise fail(f"{path}: no such directory")
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # not its database set-up chatter
    bar = tqdm(desc="export", unit="trial", file=sys.stdout) if sys.stdout.isatty() else None

    def progress(done: int, total: int):
        bar.total = total
        bar.update(done - bar.n)

    try:
        with user_errors():
            results, warnings = export_records(path, to, dest, progress if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    for warning in warnings:
        typer.echo(f"warning: {warning}", err=True)
    for r in results:
        if to == "tensorboard":
            typer.echo(f"{r.sweep}: {counted(r.written, 'trial')} -> {r.where}")
        else:
            report = ", report/ as artifacts of the run 'report'" if r.report else ""
            typer.echo(f"{r.sweep}: {counted(r.written, 'run')} written, {r.unchanged} unchanged{report} "
                       f"-> experiment '{r.where}' in {dest}")
    typer.echo(f"view: tensorboard --logdir {dest}" if to == "tensorboard" else
               f"view: mlflow ui --backend-store-uri {dest}   (the full mlflow package)")


@app.command()
def suggest(
    config: ConfigArg,
    set_: SetOpt = None,
    target: Annotated[Optional[float], typer.Option("--target", help="The target to time, e.g. 0.85 "
                                                    "(default: the config's hardest target)")] = None,
    budget: Annotated[Optional[str], typer.Option("--budget", help="Seconds for the whole search, e.g. 5m: the "
                                                  "scan and every trial's training, evaluation and noise "
                                                  "measurement; no trial starts once it is spent.")] = None,
    out: Annotated[str, typer.Option("--out", help="Records root; the trials go to OUT/<name>-suggest.")] = "runs",
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, max=PARALLEL_MAX, help="torch CPU threads (recorded).")] = None,
    restart: Annotated[bool, typer.Option("--restart", help="Delete the trials under OUT/<name>-suggest and start "
                                          "over.")] = False,
    schedule: Annotated[bool, typer.Option("--schedule", help="Then propose a batch-size schedule around the "
                                           "answer B* (B*/4 at the start, doubling per 4x examples, 2B* from a "
                                           "quarter of B*'s examples) and race it against the answer on its "
                                           "seeds.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the answer as one JSON object.")] = False,
    quiet: QuietOpt = False,
):
    """Suggest the time-optimal batch size and lr: a scan of seconds per step, a pilot measuring the noise scale,
    a race of the candidates by steps x seconds per step, and the winner confirmed on two more seeds, at a
    fraction of a sweep's cost."""
    import json

    finite_target(target)
    out = directory("--out", out)
    seconds = parse_seconds(budget)
    display = Display(0, quiet or as_json)
    stage = (lambda text: None) if quiet or as_json else (lambda text: typer.echo(f"suggest: {text}"))
    sigterm_as_interrupt()
    extra = ((["--target", str(target)] if target is not None else []) + (["--budget", budget] if budget else [])
             + ["--out", str(out)] + (["--threads", str(threads)] if threads else [])
             + (["--schedule"] if schedule else []))
    try:
        with user_errors(), display:
            answer = api.suggest(config, out, list(set_ or []), target=target, budget=seconds, threads=threads,
                                 restart=restart, schedule=schedule,
                                 command=command_line(config, list(set_ or []), extra, "suggest"), on_stage=stage,
                                 on_trial_start=display.trial_start, on_trial_end=display.trial_end)
    except KeyboardInterrupt:
        raise fail("interrupted: a trial that was running is recorded as interrupted; run the same command again "
                   "to resume",
                   code=130) from None
    if as_json:
        typer.echo(json.dumps(answer.to_dict(), default=str))
        return
    typer.echo(answer.sentence)
    for note in answer.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"records: {answer.path} (batchlab report {answer.path}); figure: {answer.path / 'suggest.png'}")


@app.command("max-batch")
def max_batch(
    config: ConfigArg,
    set_: SetOpt = None,
    memory_limit: Annotated[Optional[str], typer.Option("--memory-limit", help="Memory a try may use above the "
                                                        "baseline, e.g. 512MiB. (default: CPU: half the available "
                                                        "RAM; CUDA: the card)")] = None,
    largest: Annotated[Optional[int], typer.Option("--max", min=1, max=COUNT_MAX, help="Largest batch size tried. "
                                                   "(default: the training set size)")] = None,
):
    """Find the largest batch size that trains without running out of memory (doubling, then bisection)."""
    limit = parse_bytes(memory_limit)
    with user_errors():
        result = api.find_max_batch(config, list(set_ or []), memory_limit=limit, max_batch=largest)
    per = result.context or 1
    typer.echo(f"{'batch size':>10}  {'fits':>4}  {'peak memory':>11}  {'samples/s':>10}"
               + (f"  {'tokens/s':>10}" if result.context else ""))
    for t in result.tries:
        speed = f"{t.samples_per_second:,.0f}" if t.samples_per_second else "-"
        tokens = f"  {t.samples_per_second * per:>10,.0f}" if t.samples_per_second else f"  {'-':>10}"
        typer.echo(f"{t.batch_size:>10}  {'yes' if t.fits else 'no':>4}  {mib(t.peak_memory_bytes):>11}  {speed:>10}"
                   + (tokens if result.context else ""))
    cap = " (the largest tried)" if result.batch_size == result.max_batch else ""
    limit_text = f"a limit of {mib(result.limit_bytes)}" if result.limit_bytes else "the device's memory"
    in_tokens = f" sequences of {per} tokens ({result.batch_size * per:,} tokens)" if result.context else ""
    typer.echo(f"largest batch size that fits in {limit_text} on {result.device}: {result.batch_size}{in_tokens}{cap}")


@app.command()
def noise(
    config: ConfigArg,
    set_: SetOpt = None,
    steps: Annotated[int, typer.Option("--steps", min=0, max=COUNT_MAX, help="Train this many steps (the config's batch size "
                                       "and lr) before measuring; 0 measures at initialisation.")] = 0,
    measurements: Annotated[int, typer.Option("--measurements", min=2, max=MEASUREMENTS_MAX, help="Independent draws averaged.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
):
    """Estimate the gradient noise scale B_simple = tr(Sigma)/|G|^2 (McCandlish et al. 2018)."""
    import json

    with user_errors():
        experiment = api.load_config(config, list(set_ or []))
        result = api.noise_scale(config, list(set_ or []), steps, measurements)
    if as_json:
        typer.echo(json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                               for k, v in result.items()}))
        return
    swept = {"batch_size", "lr"} & set(experiment.sweep)  # the top-level ones train, not the sweep's axes
    trained = (f"after {steps} steps at {'the top-level ' * bool(swept)}batch size {result['batch_size']} and lr "
               f"{result['lr']:g}" if steps else "at initialisation")
    typer.echo(f"gradient noise scale of {experiment.name} {trained} "
               f"({measurements} measurements, B_small={result['b_small']}, B_big={result['b_big']}):")
    typer.echo(f"  |G|^2      {result['g2']:.4g} ± {result['g2_stderr']:.2g}")
    typer.echo(f"  tr(Sigma)  {result['trace']:.4g} ± {result['trace_stderr']:.2g}")
    diverged = not (math.isfinite(result["g2"]) and math.isfinite(result["trace"]))
    typer.echo(f"  B_simple   {result['b_simple']:.4g}   " + (
        "(the gradients were not finite: did training diverge? a smaller lr, or fewer --steps)" if diverged else
        "(batches well below it waste steps, well above it examples)" if math.isfinite(result["b_simple"]) else
        "(|G|^2 came out at or below 0: more --measurements)"))
    if result.get("b_simple_tokens") is not None:
        typer.echo(f"             {result['b_simple_tokens']:.4g} tokens ({result['context']} tokens per sequence)")


from batchlab.cli import cbs as _cbs  # noqa: E402,F401 -- registers `batchlab cbs` on the app


def main():
    app()
