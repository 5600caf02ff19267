"""Report figures (ROC and precision-recall curves in :mod:`hemwsl.reports.curves`)."""

from __future__ import annotations

from hemwsl.reports.curves import plot_pr, plot_roc

__all__ = ["plot_pr", "plot_roc"]
