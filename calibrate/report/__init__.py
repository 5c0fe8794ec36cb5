"""Figures and reports of a calibration.

* :mod:`calibrate.report.figures` - matplotlib Display objects per label: score
  histograms, error rates with exact bands, expected cost, DET curves, and overlays of
  model versions.
* :mod:`calibrate.report.html` - :func:`write_report`: one self-contained HTML file, a
  Markdown summary and every figure as PNG and SVG.

matplotlib and jinja2 are imported only when these modules are used.
"""

from calibrate.report.figures import (
    DetCurveDisplay,
    ErrorRatesDisplay,
    ExpectedCostDisplay,
    ReliabilityDisplay,
    ScoreHistogramDisplay,
    ScoreMeaningDisplay,
    plot_version_comparison,
)
from calibrate.report.html import ReportResult, write_report

__all__ = [
    "DetCurveDisplay",
    "ErrorRatesDisplay",
    "ExpectedCostDisplay",
    "ReliabilityDisplay",
    "ReportResult",
    "ScoreHistogramDisplay",
    "ScoreMeaningDisplay",
    "plot_version_comparison",
    "write_report",
]
