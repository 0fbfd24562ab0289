"""Compute, then write: analyse() reads the records and computes a SweepReport per sweep (tables,
science, the answer) without writing anything; SweepReport.write() puts the files on disk.
build_report() is the two together, for the command line."""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from rich.table import Table

from batchlab.errors import ConfigError, RecordsError, counted
from batchlab.reporting import display, schedule_display
from batchlab.reporting.answer import Recommendation, recommend
from batchlab.reporting.document import blocks
from batchlab.reporting.load import INCOMPLETE, SweepRecords, find_sweeps, read_sweeps
from batchlab.reporting.plots import make_plots
from batchlab.reporting.render import html_document, markdown
from batchlab.reporting.science import Science, build_science
from batchlab.reporting.schedule_plots import schedule_plots
from batchlab.reporting.science_plots import make_science_plots
from batchlab.reporting.tables import Tables, build_tables, status_counts
from batchlab.records import Status
from batchlab.schema import unreachable

FORMATS = frozenset({"md", "html", "csv", "png"})


@dataclass(repr=False)
class SweepReport:
    """One sweep's report, computed: the answer, the tables behind it, and write() for the files.

        [report] = analyse("runs/quickstart")
        report.recommendation.sentence     # "Use batch size 64 with lr 0.1: ..."
        report.time_to_accuracy            # the DataFrame behind time_to_accuracy.csv
        report.write()                     # -> [Path, ...] under runs/quickstart/report
    """

    name: str
    sweep_dir: Path
    warnings: list[str]  # damaged records, a sweep still running, an unknown target
    counts: dict[str, int]  # trials per status ("incomplete": no summary.json; "damaged": left out)
    target: float | None = None  # the headline target (None: no trial could be read)
    target_metric: str | None = None
    recommendation: Recommendation | None = None  # the answer (None: no trial could be read)
    records: SweepRecords | None = None
    tables: Tables | None = None
    science: Science | None = None  # frontier fit, noise scale, lr, generalisation gap
    out_dir: Path | None = None  # where write() last wrote
    files: list[Path] = field(default_factory=list)  # what it wrote

    @property
    def time_to_accuracy(self) -> pd.DataFrame:
        """A row per batch size and target (time_to_accuracy.csv); empty when nothing could be read."""
        return self.tables.time_to_accuracy if self.tables is not None else pd.DataFrame()

    def table(self) -> Table | None:
        """The headline target's deciding columns as a rich Table (what `batchlab report` prints); None where no
        constant batch size ran (a sweep of schedules alone)."""
        if self.tables is None or self.tables.headline_rows.empty:
            return None
        title = (f"{self.name}: time to {display.target_text(self.records, self.target)} "
                 f"({display.status_line(self.counts)})")
        return display.terminal_table(self.records, self.tables.headline_rows, title)

    def schedule_table(self) -> Table | None:
        """The batch-size schedules against the fastest constant batch size (None: no schedule ran)."""
        return schedule_display.terminal_table(self.tables.schedules) if self.tables is not None else None

    def write(self, out_dir: Path | str | None = None, formats: Iterable[str] = FORMATS) -> list[Path]:
        """Write the chosen formats (md, html, csv, png) to `out_dir` (default <sweep>/report) and
        return the files written. Raises RecordsError when the directory cannot be written."""
        formats = _check(formats)
        self.out_dir = Path(out_dir) if out_dir is not None else self.sweep_dir / "report"
        if self.tables is None:  # nothing could be read: the warnings say why
            self.files = []
            return []
        self.files = _write(self, self.out_dir, formats)
        return list(self.files)

    def __repr__(self) -> str:
        counts = display.status_line(self.counts)
        if self.recommendation is None:
            return f"<SweepReport {self.name}: {counts}; {'; '.join(self.warnings)}>"
        warned = f"; {counted(len(self.warnings), 'warning')}" if self.warnings else ""
        return f"<SweepReport {self.name}: {counts}{warned}\n {self.recommendation.sentence}>"

    def _repr_html_(self) -> str:
        """A notebook shows the answer and the deciding columns."""
        esc = html.escape
        parts = [f"<strong>{esc(self.name)}</strong>: {esc(display.status_line(self.counts))}"]
        if self.recommendation is not None:
            parts.append(f"<p><strong>{esc(self.recommendation.sentence)}</strong></p>")
            rows = display.time_to_accuracy(self.records, self.tables.headline_rows, compact=True)
            parts.append(rows.to_html(index=False, escape=True, border=0))
        parts += [f"<p>⚠ {esc(w)}</p>" for w in self.warnings]
        return "\n".join(parts)


def analyse(path: Path | str, target: float | None = None) -> list[SweepReport]:
    """Read one sweep directory, or every sweep under a records root, and compute its report.
    Writes nothing.

    `target` headlines that target value and keeps only it in the time-to-accuracy table; by
    default the table has every recorded target and the headline (the answer, lr grids, plots) is
    the hardest target some batch size or batch-size schedule reached, or the first listed if none
    was. A target that is not recorded, or that a sweep's metric cannot meet (an accuracy of 5) under
    a records root of several, adds a warning and the default applies. Raises ConfigError for a target that no sweep's
    metric can meet, RecordsError when `path` does not exist, holds no sweep or trial, or nothing in it
    could be read; a damaged record only adds a warning to its sweep's report, and under a records
    root a sweep with nothing readable is a report with a warning and no answer.
    """
    sweeps = read_sweeps(Path(path))
    if target is not None:
        reasons = [unreachable(records.target_metric, [target]) for _, records, _ in sweeps if records]
        if reasons and all(reasons):
            raise ConfigError(f"target {target:g}: {reasons[0]}")
    return [_analyse(records, target) if records else SweepReport(sweep_dir.name, sweep_dir, [why], {})
            for sweep_dir, records, why in sweeps]


def build_report(path: Path | str, out: Path | str | None = None, target: float | None = None,
                 formats: Iterable[str] = FORMATS) -> list[SweepReport]:
    """analyse() then write() each report. Default output: <sweep>/report/. With `out`: `out`
    itself for a sweep directory, and out/<sweep directory name>/ for a records root (whatever
    the number of sweeps in it)."""
    formats = _check(formats)
    reports = analyse(path, target)
    _, is_root = find_sweeps(Path(path))
    for report in reports:
        out_dir = None if out is None else Path(out) / report.sweep_dir.name if is_root else Path(out)
        report.write(out_dir, formats)
    return reports


def _check(formats: Iterable[str]) -> set[str]:
    formats = set(formats)
    if formats - FORMATS:
        raise ValueError(f"unknown report format(s) {sorted(formats - FORMATS)}; choose from {sorted(FORMATS)}")
    return formats


def _analyse(rec: SweepRecords, target: float | None) -> SweepReport:
    if rec.running:
        rec.warnings.insert(0, f"{rec.sweep_dir / '.lock'} exists: the sweep was still running, "
                               "so these figures may change")
    counts = status_counts(rec)
    unfinished = counts.get(Status.INTERRUPTED.value, 0) + counts.get(INCOMPLETE, 0)
    if unfinished and not rec.running:  # (while it runs, the warning above says the figures may change)
        are, them = ("is", "it") if unfinished == 1 else ("are", "them")
        rec.warnings.append(f"{counted(unfinished, 'trial')} did not finish (interrupted or killed) and {are} left "
                            f"out of these figures, the answer included: run the sweep again to finish {them}")
    tables = build_tables(rec, target)
    science = build_science(rec, tables)
    return SweepReport(rec.name, rec.sweep_dir, rec.warnings, counts, target=tables.target,
                       target_metric=rec.target_metric, recommendation=recommend(rec, tables, science),
                       records=rec, tables=tables, science=science)


def _write(report: SweepReport, out_dir: Path, formats: set[str]) -> list[Path]:
    rec, tables, science, answer = report.records, report.tables, report.science, report.recommendation
    # The HTML embeds the images, so they are drawn whenever either format wants them, and never else.
    plots = []
    if formats & {"png", "html"}:
        if len(rec.trials):  # a sweep of batch-size schedules alone has only their figure
            plots = make_plots(rec, tables, science, answer) + make_science_plots(rec, tables, science)
        plots += schedule_plots(rec, tables)
    files: list[Path] = []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if "csv" in formats:
            files += _write_csvs(tables, science, out_dir)
        if "png" in formats:
            for plot in plots:
                (out_dir / plot.filename).write_bytes(plot.png)
                files.append(out_dir / plot.filename)
        parts = blocks(rec, tables, report.counts, plots, science, answer)
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
    if tables.schedules is not None:
        written["schedules.csv"] = tables.schedules.table
        written["schedule_seeds.csv"] = tables.schedules.seeds
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
