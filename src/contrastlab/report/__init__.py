"""Reports: figures from stored results (:mod:`~contrastlab.report.figures`), the runs merged
by their swept keys (:mod:`~contrastlab.report.grouping`), the answer the runs give on accuracy
vs k (:mod:`~contrastlab.report.answer`) and one self-contained HTML report of an output
directory (:func:`write_report`; the pages' shared style: :mod:`~contrastlab.report.style`)."""

from __future__ import annotations

from contrastlab.report.html import write_report

__all__ = ["write_report"]
