"""`batchlab report`: turn the records of sweeps into an answer, tables, plots and documents.

    [report] = analyse("runs/quickstart")        # computes; writes nothing
    report.recommendation.sentence                # "Use batch size 64 with lr 0.1: ..."
    report.write()                                # report.md, report.html, CSVs, PNGs
    reports = build_report("runs", target=0.98, formats={"csv", "md"})   # both, every sweep under runs/

Modules: load (records -> frames; each trial read by batchlab.readback, as a resumed sweep reads it), tables
(pandas tables), decision (steps x seconds per step, the interval and ties), schedules (batch-size schedules
against the constant batch sizes), science and measured_noise (frontier, B_simple, lr, generalisation gap), answer,
answer_details and answer_schedules (the recommendation), figures (the plotting toolkit), plots, science_plots and
schedule_plots (PNG figures), display and schedule_display (text), document and science_sections (what the
documents say), render (Markdown, and HTML from templates/), build (analyse, SweepReport).
"""

from batchlab.reporting.answer import Recommendation
from batchlab.reporting.build import FORMATS, SweepReport, analyse, build_report

__all__ = ["FORMATS", "Recommendation", "SweepReport", "analyse", "build_report"]
