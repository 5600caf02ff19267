"""The CAM localisation benchmark (which method, at which layer and threshold, localises hemorrhage best).

:func:`run_benchmark` scores cross-validated heatmaps against the masks and writes one report folder
(``per_case.csv``, ``summary.md`` with CIs and paired tests, ``summary.csv``, figures); threshold specs are
described in :mod:`hemwsl.benchmark.specs`, the protocol in :mod:`hemwsl.benchmark.runner`.
"""

from __future__ import annotations

from hemwsl.benchmark.runner import (
    SLICE_METRICS,
    SLICE_MODES,
    VOLUME_METRICS,
    candidate_counts,
    candidate_dice,
    component_counts,
    counts_dice,
    cv_folds,
    discover_keys,
    load_heatmap,
    load_patient,
    run_benchmark,
    slice_rows,
    split_folds,
)
from hemwsl.benchmark.specs import DEFAULT_CANDIDATES, DEFAULT_GRID, ThresholdSpec, parse_threshold_grid, parse_threshold_spec
from hemwsl.benchmark.summary import aggregate, holm, paired_test, read_rows

__all__ = [
    "SLICE_METRICS",
    "SLICE_MODES",
    "VOLUME_METRICS",
    "DEFAULT_CANDIDATES",
    "DEFAULT_GRID",
    "ThresholdSpec",
    "aggregate",
    "candidate_counts",
    "candidate_dice",
    "component_counts",
    "counts_dice",
    "cv_folds",
    "discover_keys",
    "holm",
    "load_heatmap",
    "load_patient",
    "paired_test",
    "parse_threshold_grid",
    "parse_threshold_spec",
    "read_rows",
    "run_benchmark",
    "slice_rows",
    "split_folds",
]
