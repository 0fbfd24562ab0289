"""build_report: records on disk -> tables, plots and documents on disk, one report per sweep."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from batchlab.errors import RecordsError
from batchlab.reporting import display
from batchlab.reporting.document import blocks, html_document, markdown
from batchlab.reporting.load import SweepRecords, find_sweeps, load_sweep
from batchlab.reporting.plots import make_plots
from batchlab.reporting.science import Science, build_science
from batchlab.reporting.science_plots import make_science_plots
from batchlab.reporting.tables import Tables, build_tables, status_counts

FORMATS = frozenset({"md", "html", "csv", "png"})


@dataclass
class SweepReport:
    """What build_report made for one sweep; the CLI prints it."""

    sweep_dir: Path
    out_dir: Path
    headline: pd.DataFrame  # time to the headline target per batch size, as text for the terminal
    warnings: list[str]
    files: list[Path]
    counts: dict[str, int]  # trials per status ("incomplete": no summary.json; "damaged": left out)
    name: str = ""
    target: float | None = None  # the headline target value (None: no trial could be read)
    tables: Tables | None = field(default=None, repr=False)  # the numeric tables behind the files
    # Plain-language advice, each statement with its evidence (also atop report.md / report.html).
    recommendation: list[str] = field(default_factory=list)
    science: Science | None = field(default=None, repr=False)  # frontier fit, noise scale, lr, gap


def build_report(path: Path, out: Path | None = None, target: float | None = None,
                 formats: Iterable[str] = FORMATS) -> list[SweepReport]:
    """Report on one sweep directory, or on every sweep under a records root.

    Default output: <sweep>/report/. With `out`: `out` itself for a sweep directory, and
    out/<sweep directory name>/ for a records root (whatever the number of sweeps in it).
    `target` keeps only that target value in the time-to-accuracy table and headlines it; by
    default the table has every recorded target and the headline (lr grids, plots, terminal
    table) is the hardest target some batch size reached, or the first listed if none was.
    A target that is not recorded adds a warning and the default applies.
    Raises RecordsError when `path` does not exist, holds no sweep or trial, or nothing in it
    could be read; a damaged record only adds a warning to its sweep's report.
    """
    formats = set(formats)
    if formats - FORMATS:
        raise ValueError(f"unknown report format(s) {sorted(formats - FORMATS)}; choose from {sorted(FORMATS)}")
    path = Path(path)
    sweeps, is_root = find_sweeps(path)
    reports, failures = [], []
    for sweep_dir in sweeps:
        out_dir = sweep_dir / "report" if out is None else Path(out) / sweep_dir.name if is_root else Path(out)
        try:
            records = load_sweep(sweep_dir)
        except RecordsError as exc:
            if not is_root:
                raise
            # One empty sweep under a root must not hide the others; it reports why it is empty.
            failures.append(str(exc))
            reports.append(SweepReport(sweep_dir, out_dir, pd.DataFrame(), [str(exc)], [], {},
                                       name=sweep_dir.name))
            continue
        reports.append(_report(records, out_dir, target, formats))
    if len(failures) == len(sweeps):
        raise RecordsError(f"nothing could be read under {path}: " + "; ".join(failures))
    return reports


def _report(rec: SweepRecords, out_dir: Path, target: float | None, formats: set[str]) -> SweepReport:
    if rec.running:
        rec.warnings.insert(0, f"{rec.sweep_dir / '.lock'} exists: the sweep was still running, "
                               "so these figures may change")
    tables = build_tables(rec, target)
    science = build_science(rec, tables)
    counts = status_counts(rec)
    # The HTML embeds the images, so they are drawn whenever either format wants them.
    plots = make_plots(rec, tables, science) + make_science_plots(rec, tables, science) \
        if formats & {"png", "html"} else []
    files = _write(rec, tables, science, counts, plots, out_dir, formats)
    return SweepReport(rec.sweep_dir, out_dir, display.headline(rec, tables), rec.warnings, files, counts,
                       name=rec.name, target=tables.target, tables=tables,
                       recommendation=list(science.recommendation), science=science)


def _write(rec: SweepRecords, tables: Tables, science: Science, counts: dict[str, int], plots, out_dir: Path,
           formats: set[str]) -> list[Path]:
    files: list[Path] = []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if "csv" in formats:
            files += _write_csvs(tables, science, out_dir)
        if "png" in formats:
            for plot in plots:
                (out_dir / plot.filename).write_bytes(plot.png)
                files.append(out_dir / plot.filename)
        parts = blocks(rec, tables, counts, plots, science)
        if "md" in formats:
            files.append(out_dir / "report.md")
            files[-1].write_text(markdown(parts, with_images="png" in formats), encoding="utf-8")
        if "html" in formats:
            files.append(out_dir / "report.html")
            files[-1].write_text(html_document(parts, f"batchlab report: {rec.name}"), encoding="utf-8")
    except OSError as exc:
        raise RecordsError(f"cannot write the report to {out_dir}: {exc.strerror or exc}") from exc
    return files


def _write_csvs(tables: Tables, science: Science, out_dir: Path) -> list[Path]:
    written = {
        "time_to_accuracy.csv": tables.time_to_accuracy,
        "trials.csv": tables.trials,
        "frontier.csv": science.frontier.table(),
    }
    if science.noise is not None:
        written["noise_scale.csv"] = science.noise.table(science.frontier)
    if science.gap is not None:
        written["generalisation_gap.csv"] = science.gap.table
    for name, frame in written.items():
        frame.to_csv(out_dir / name, index=False)
    grids = {"lr_by_batch_size.csv": tables.lr_grid, "lr_by_batch_size_steps.csv": tables.steps_grid,
             "lr_by_batch_size_final.csv": tables.final_grid}
    for name, frame in grids.items():
        frame.to_csv(out_dir / name, index=True)
    return [out_dir / name for name in [*written, *grids]]
