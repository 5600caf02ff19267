"""Evaluation metrics (slice-classifier metrics in :mod:`hemwsl.metrics.classification`)."""

from __future__ import annotations

from hemwsl.metrics.classification import (
    AveragePrecisionMetric,
    bootstrap_ci,
    classification_report,
    compute_auroc,
    compute_average_precision,
    compute_average_precision_multi,
    compute_prf,
    f1_max_threshold,
    multilabel_report,
    precision_recall_curve,
    roc_curve,
    topk_mean_sd,
    youden_threshold,
)

__all__ = [
    "AveragePrecisionMetric",
    "bootstrap_ci",
    "classification_report",
    "compute_auroc",
    "compute_average_precision",
    "compute_average_precision_multi",
    "compute_prf",
    "f1_max_threshold",
    "multilabel_report",
    "precision_recall_curve",
    "roc_curve",
    "topk_mean_sd",
    "youden_threshold",
]
