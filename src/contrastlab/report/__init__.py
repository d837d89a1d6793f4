"""Reports: figures from stored results (:mod:`~contrastlab.report.figures`) and one
self-contained HTML report of an output directory (:func:`write_report`)."""

from __future__ import annotations

from contrastlab.report.html import write_report

__all__ = ["write_report"]
