"""`batchlab report`: turn the records of sweeps into tables, plots and documents.

    reports = build_report(Path("runs"))          # every sweep under runs/
    reports = build_report(Path("runs/mnist"), target=0.98, formats={"csv", "md"})

Modules: load (records -> frames), tables (pandas tables), plots (PNG figures), display (text
formatting), document (report.md / report.html), build (build_report itself).
"""

from batchlab.reporting.build import FORMATS, SweepReport, build_report

__all__ = ["FORMATS", "SweepReport", "build_report"]
