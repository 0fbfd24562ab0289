"""`batchlab cbs`: the critical batch size as training goes (batchlab.critical_batch), on the command line."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from tqdm import tqdm

from batchlab import api
from batchlab.cli import ConfigArg, QuietOpt, SetOpt, app, user_errors
from batchlab.cbs_defaults import CBS_EVAL_EXAMPLES, CBS_MEASUREMENTS, CBS_POINTS, CBS_POINTS_MAX, CBS_TOLERANCE
from batchlab.cli.checks import directory, fail
from batchlab.errors import VALUE_CHARS, OptionError, short
from batchlab.fields import COUNT_MAX, MEASUREMENTS_MAX
from batchlab.processes import sigterm_as_interrupt

Size = Optional[int]


def batch_list(text: str | None) -> list[int] | None:
    """'16,64,256' as [16, 64, 256]."""
    if text is None:
        return None
    try:
        sizes = [int(part) for part in text.split(",")]
        if not all(1 <= s <= COUNT_MAX for s in sizes):
            raise ValueError
    except ValueError:
        raise fail(f"--batch-sizes {short(repr(text), VALUE_CHARS)}: expected comma-separated batch sizes "
                   "from 1, e.g. 16,64,256,1024") from None
    return sizes


FLAGS = {"source": "--from", "overrides": "--set"}  # the options not named --<argument-with-dashes>


@contextmanager
def flags_for_options():
    """An argument the procedure refused, named by its option as typed here (`--points 0`), not as the Python
    API's keyword (`batchlab.cbs(points=0)`)."""
    try:
        yield
    except OptionError as e:
        raise fail(e.worded(FLAGS)) from None


def figure(value, digits: str = ",.0f") -> str:
    return "-" if value is None else format(value, digits)


@app.command("cbs")
def cbs(
    config: ConfigArg,
    set_: SetOpt = None,
    out: Annotated[str, typer.Option("--out", help="Records root; the files go to OUT/<name>/cbs (--from noise: "
                                    "cbs-noise).")] = "runs",
    batch_sizes: Annotated[Optional[str], typer.Option(
        "--batch-sizes", metavar="B1,B2,...", help="The ladder branched at each point, e.g. 16,64,256,1024. "
        "(default: the config's batch_size B0 x 2^k, k from -2 to 3)")] = None,
    points: Annotated[int, typer.Option("--points", min=1, max=CBS_POINTS_MAX, help="Points of the reference run "
                                        "branched from, geometric in examples over its budget.")] = CBS_POINTS,
    window: Annotated[Size, typer.Option("--window", min=1, max=COUNT_MAX, help="W, examples: the smallest batch "
                                         "trains W to set the loss level L* (--from branching only). (default: "
                                         "1/16 of the budget, at least the largest batch of the ladder)")] = None,
    tolerance: Annotated[float, typer.Option("--tolerance", help="A batch is within tolerance when it needs at "
                                             "most (1 + this) x the smallest batch's examples to reach L*; "
                                             "branches run (1 + this) W at most (--from branching only).")] = CBS_TOLERANCE,
    source: Annotated[str, typer.Option("--from", help="branching: CBS(t) by branching; noise: B_simple(t) "
                                        "alone, no branches (cheap), the schedule from it.")] = "branching",
    by: Annotated[str, typer.Option("--by", help="The schedule's measure: fit (CBS, where E_B = 2 E_min) or "
                                    "tolerance (the largest batch within tolerance); --from branching only.")] = "fit",
    fraction: Annotated[float, typer.Option("--fraction", help="The schedule trains at this fraction of the "
                                            "measured batch: 1 at it (about twice the small-batch examples, by "
                                            "the definition); 0.5 half of it, nearer a constant batch size's "
                                            "examples.")] = 1.0,
    min_batch: Annotated[Size, typer.Option("--min-batch", min=1, max=COUNT_MAX, help="The schedule's smallest "
                                            "batch. (default: the ladder's)")] = None,
    max_batch: Annotated[Size, typer.Option("--max-batch", min=1, max=COUNT_MAX, help="The schedule's largest "
                                            "batch. (default: the ladder's)")] = None,
    eval_examples: Annotated[int, typer.Option("--eval-examples", min=1, max=COUNT_MAX, help="Held-out examples "
                                               "every branch is evaluated on (eval.subset overrides).")]
    = CBS_EVAL_EXAMPLES,
    measurements: Annotated[int, typer.Option("--measurements", min=2, max=MEASUREMENTS_MAX, help="Noise-scale "
                                              "draws averaged at each point.")] = CBS_MEASUREMENTS,
    as_json: Annotated[bool, typer.Option("--json", help="Print cbs.json's content instead of the table.")] = False,
    quiet: QuietOpt = False,
):
    """Measure the critical batch size as training goes, by branching (Merrill et al. 2025), beside B_simple.

    One reference run at the config's batch size B0 is kept at several points; from each, every batch size of a
    ladder trains (its lrs from the config's lr rule, the best kept) and is evaluated on fixed held-out examples.
    L* is the loss the smallest batch reaches after W examples; E_B the examples batch B needs to reach L*;
    CBS is the batch where E_B = 2 E_min, from E_B = E_min (1 + B / B_crit) fitted across the ladder
    (McCandlish et al. 2018); beside it the largest batch with E_B <= (1 + tolerance) E_smallest. Prints the
    table, the cost in training seconds, and the recommended batch-size schedule as a config line.
    """
    out_dir = directory("--out", out)
    sizes = batch_list(batch_sizes)
    bars: dict[str, tqdm] = {}
    show = not quiet and not as_json and sys.stdout.isatty()

    def progress(stage: str, done: int, total: int):
        if not show:
            return
        if stage not in bars:
            unit = "example" if stage == "reference" else "branch"
            bars[stage] = tqdm(total=total, desc=stage, unit=unit, file=sys.stdout, leave=False)
        bars[stage].update(done - bars[stage].n)

    sigterm_as_interrupt()
    try:
        with user_errors(), flags_for_options():
            try:
                result = api.cbs(config, out_dir, list(set_ or []), batch_sizes=sizes, points=points, window=window,
                                 tolerance=tolerance, source=source, min_batch=min_batch, max_batch=max_batch,
                                 by=by, fraction=fraction,
                                 eval_examples=eval_examples, measurements=measurements, on_progress=progress)
            finally:
                for bar in bars.values():
                    bar.close()
    except KeyboardInterrupt:
        from batchlab.critical_batch import folder

        name = api.load_config(config, list(set_ or [])).name
        raise fail(f"interrupted: what was measured so far is in {folder(Path(out_dir), name, source) / 'cbs.json'}",
                   code=130) from None
    if as_json:
        from batchlab.disk import strict_json

        typer.echo(json.dumps(strict_json(result.to_dict())))
        return
    show_table(result)


def show_table(result) -> None:
    branching = result.source == "branching"
    context = result.context  # a sequence task's: its progress in tokens too, as its budget counts
    window = f"{result.window:,} examples" + (f" ({result.window * context:,} tokens)" if context else "")
    typer.echo(f"{result.name}: reference at batch {result.batch_size}, lr {result.lr:g}, seed {result.seed}; "
               + (f"ladder {', '.join(map(str, result.ladder))}, window {window}, tolerance "
                  f"{result.tolerance:g}" if branching else "B_simple only (--from noise)"))
    head = (f"{'point':>5}  {'examples':>10}  " + (f"{'tokens':>12}  " if context else "")
            + f"{'loss':>8}  {'B_simple':>8}")
    if branching:
        head += f"  {'CBS':>8}  {'within tol':>10}  {'CBS/B_simple':>12}"
    typer.echo(head)
    for p in result.points:
        line = (f"{p['point']:>5}  {p['examples']:>10,}  " + (f"{p['examples'] * context:>12,}  " if context else "")
                + f"{figure(p['loss'], '.4f'):>8}  {figure(p['b_simple']):>8}")
        if branching:
            line += (f"  {figure(p.get('cbs')):>8}  {figure(p.get('cbs_tolerance'), ','):>10}  "
                     f"{figure(p.get('ratio'), '.2f'):>12}")
        typer.echo(line)
    for p in result.points:
        if p.get("note"):
            typer.echo(f"point {p['point']}: no CBS: {p['note']}")
    if result.reference_note:
        typer.echo(result.reference_note)
    elif len(result.points) < result.points_asked and not result.interrupted:
        typer.echo(f"{len(result.points)} points of the {result.points_asked} asked: some fell within one step "
                   f"({result.batch_size} examples) of another and were kept once; fewer --points, or a longer budget")
    errors = [b for b in result.branches if b.get("error")]
    if errors:
        typer.echo(f"{len(errors)} branch{'es' * (len(errors) != 1)} failed (branches.csv, column error), e.g. "
                   f"batch {errors[0]['batch_size']} at lr {errors[0]['lr']:g}: {errors[0]['error']}")
    cost = f"cost: reference {result.reference_seconds:,.1f} s of training"
    if branching:
        cost += f", {len(result.branches)} branches {result.branch_seconds:,.1f} s"
    typer.echo(cost)
    measure = ({"fit": "CBS", "tolerance": "the largest batch within tolerance"}[result.by] if branching
               else "B_simple")
    measure = measure if result.fraction == 1 else f"{result.fraction:g} x {measure}"
    typer.echo(f"recommended schedule (from {measure}): {result.schedule_line}" if result.schedule_line
               else f"no schedule recommended: {result.schedule_note}")
    for progress, batch in result.schedule_late:
        typer.echo(f"left out: batch {batch} from {progress:,} examples, measured at the budget's end, where a run "
                   "of this budget stops (a longer budget's cbs measures past it)")
    typer.echo(f"files: {result.path}/cbs.json, cbs.csv, branches.csv, cbs.png")
