"""A scan-level hemorrhage call from more than the slice probabilities.

Aggregating a slice classifier's probabilities (max, top-3 mean, noisy-OR, runs: :func:`scan_score`)
separates scans with and without blood poorly on CT-ICH (patient AUROC 0.52-0.64 out of fold), although the
same probabilities separate slices at 0.84. The slices called positive hold more evidence than their
probability: the hyperdense components on them. Blood is 50-90 HU, away from the inner skull table; its
look-alikes on blood-free scans are the partial-volume rim of the skull, the falx and calcifications.
:func:`scan_features` describes a scan by the probabilities and by the validated prior on the positive
slices (its mL, its largest component, its mean HU, its mean distance to the brain's edge).
:class:`ScanModel` is a standardised logistic regression on them, trained per fold on patients outside the
fold's test part; it is small enough to live in a model package as JSON numbers (no pickle).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hemwsl.errors import HemwslInputError, check_choice

__all__ = ["SCAN_AGGREGATIONS", "SCAN_FEATURES", "SCAN_FEATURE_PRIOR", "scan_score", "choose_scan_threshold", "choose_scan_call", "scan_features",
           "ScanModel", "fit_scan_model"]

#: Scan-level aggregations of slice probabilities.
SCAN_AGGREGATIONS: tuple[str, ...] = ("max", "top3", "noisy_or", "run")



def scan_score(probs: Sequence[float], how: str = "max", slice_threshold: float = 0.5) -> float:
    """One scan score in [0, 1] from the probabilities of its slices (in slice order).

    ``max``: the largest; ``top3``: the mean of the three largest (all of them when fewer); ``noisy_or``:
    ``1 - prod(1 - p)``; ``run``: the longest run of consecutive slices with ``p >= slice_threshold``,
    divided by 3 and capped at 1 (a bleed usually spans several adjacent slices).
    """
    check_choice("scan aggregation", how, SCAN_AGGREGATIONS)
    try:
        p = np.asarray(probs, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise HemwslInputError(f"slice probabilities must be numbers, got {probs!r}"[:200]) from None
    if p.size == 0:
        raise HemwslInputError("a scan without slice probabilities")
    bad = ~(np.isfinite(p) & (p >= -1e-6) & (p <= 1 + 1e-6))  # float round-off is clipped, other values refused
    if bad.any():
        raise HemwslInputError(f"slice probabilities must be in [0, 1], got {p[bad][0]:g} at slice "
                               f"{int(np.flatnonzero(bad)[0])}")
    if isinstance(slice_threshold, bool) or not isinstance(slice_threshold, (int, float, np.integer, np.floating)) \
            or not 0.0 <= slice_threshold <= 1.0:
        raise HemwslInputError(f"slice_threshold must be a probability in [0, 1], got {slice_threshold!r}")
    p = np.clip(p, 0.0, 1.0)
    if how == "max":
        return float(p.max())
    if how == "top3":
        return float(np.sort(p)[::-1][:3].mean())
    if how == "noisy_or":
        return float(1.0 - np.prod(1.0 - p))
    best = cur = 0
    for v in p >= slice_threshold:
        cur = cur + 1 if v else 0
        best = max(best, cur)
    return min(best / 3.0, 1.0)


def choose_scan_threshold(scores: Sequence[float], labels: Sequence[int], min_sensitivity: float = 0.9) -> float:
    """The highest threshold ``t`` (a scan is positive when ``score >= t``) whose sensitivity on these scans is
    at least ``min_sensitivity``: the most specific operating point that keeps the sensitivity.

    Raises:
        HemwslInputError: no positive scan to choose on.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    if s.shape != y.shape:
        raise HemwslInputError(f"{s.size} scores for {y.size} labels")
    if not y.any():
        raise HemwslInputError("no positive scan among the selection patients: cannot choose a scan threshold")
    if not 0 < min_sensitivity <= 1:
        raise HemwslInputError(f"min_sensitivity must be in (0, 1], got {min_sensitivity!r}")
    pos = np.sort(s[y])[::-1]
    need = int(np.ceil(min_sensitivity * len(pos) - 1e-9))
    return float(pos[max(need, 1) - 1])


def choose_scan_call(scores: Mapping[str, Sequence[float]], labels: Sequence[int], min_sensitivity: float = 0.9
                     ) -> tuple[str, float, float]:
    """``(candidate, threshold, AUROC)``: of several scan scores of the same scans (``{name: scores}``), the one
    with the largest AUROC against ``labels`` (ties and NaN: the first given), at the most specific threshold
    that keeps ``min_sensitivity`` (:func:`choose_scan_threshold`)."""
    from hemwsl.metrics.classification import compute_auroc

    names = list(scores)
    aucs = {a: compute_auroc(labels, np.asarray(scores[a], dtype=np.float64)) for a in names}
    best = max(names, key=lambda a: (np.nan_to_num(aucs[a], nan=-1.0), -names.index(a)))
    return best, choose_scan_threshold(scores[best], labels, min_sensitivity), aucs[best]

#: The prior :func:`scan_features` measures by default (``hemwsl quantify`` fits its scan models on these; a model
#: package records them with each scan model, so that ``hemwsl predict`` computes the same features).
SCAN_FEATURE_PRIOR: dict[str, object] = {"slice_threshold": 0.5, "hu_range": [50.0, 90.0], "brain_erosion": 4,
                                         "min_size": 50}

#: Columns of :func:`scan_features`.
SCAN_FEATURES: tuple[str, ...] = (
    "max", "top3", "run", "n_positive", "mean", "log_prior_ml", "log_largest_ml", "prior_hu_mean",
    "prior_edge_mm",
)


def scan_features(probs: Sequence[float], hu: np.ndarray, brain: np.ndarray, spacing: Sequence[float], *,
                  slice_threshold: float = 0.5, hu_range: Sequence[float] = (50.0, 90.0), brain_erosion: int = 4,
                  min_size: int = 50) -> np.ndarray:
    """:data:`SCAN_FEATURES` of one scan.

    Args:
        probs: ``(Z,)`` slice probabilities of "any hemorrhage".
        hu: ``(X, Y, Z)`` CT in HU.
        brain: ``(X, Y, Z)`` brain mask (skull stripping), not eroded.
        spacing: voxel size in mm.
        slice_threshold: slices at or above it are "positive".
        hu_range, brain_erosion, min_size: the prior (as the benchmark validated it): voxels in ``hu_range``
            inside the brain eroded by ``brain_erosion`` pixels per slice, 2D components under ``min_size``
            pixels dropped.
    """
    from scipy import ndimage

    from hemwsl.thresholds.postprocess import remove_small_components

    p = np.asarray(probs, dtype=np.float64).ravel()
    hu = np.asarray(hu, dtype=np.float32)
    brain = np.asarray(brain, dtype=bool)
    if hu.ndim != 3 or brain.shape != hu.shape or p.size != hu.shape[2]:
        raise HemwslInputError(f"scan features need (X, Y, Z) hu and brain of one shape and Z probabilities; got "
                               f"{hu.shape}, {brain.shape}, {p.size}")
    sp = np.asarray(spacing if spacing is not None else (), dtype=object).ravel()
    try:
        sx, sy, sz = (float(s) for s in sp) if sp.size == 3 else (np.nan,) * 3
    except (TypeError, ValueError):
        sx = sy = sz = np.nan
    if not all(np.isfinite(v) and v > 0 for v in (sx, sy, sz)):
        raise HemwslInputError(f"scan features: spacing must be 3 positive voxel sizes in mm (x, y, z), got {spacing!r}")
    voxel_ml = sx * sy * sz / 1000.0
    total = largest = 0.0
    hu_sum = edge_sum = 0.0
    for z in np.flatnonzero(p >= slice_threshold):
        b = brain[:, :, z]
        if not b.any():
            continue
        inner = ndimage.binary_erosion(b, iterations=int(brain_erosion)) if brain_erosion > 0 else b
        region = (hu[:, :, z] >= hu_range[0]) & (hu[:, :, z] <= hu_range[1]) & inner
        region = remove_small_components(region, int(min_size), connectivity=2)
        n = int(region.sum())
        if not n:
            continue
        labels, k = ndimage.label(region, structure=np.ones((3, 3), dtype=bool))
        largest = max(largest, float(np.bincount(labels.ravel())[1:].max()) * voxel_ml)
        total += n * voxel_ml
        hu_sum += float(hu[:, :, z][region].sum())
        edge_sum += float(ndimage.distance_transform_edt(b, sampling=(sx, sy))[region].sum())
    n_vox = total / voxel_ml if total else 0.0
    return np.array([
        p.max(), np.sort(p)[::-1][:3].mean(), scan_score(p, "run", slice_threshold), float((p >= slice_threshold).sum()),
        p.mean(), np.log1p(total), np.log1p(largest), hu_sum / n_vox if n_vox else 0.0,
        edge_sum / n_vox if n_vox else 0.0,
    ], dtype=np.float64)


class ScanModel:
    """Standardised logistic regression on :data:`SCAN_FEATURES` (scikit-learn), with a decision threshold.

    Args:
        C: inverse L2 strength (default 0.3: 55 patients do not carry more).
        threshold: the scan is called positive at ``probability >= threshold``.
    """

    def __init__(self, C: float = 0.3, threshold: float = 0.5) -> None:
        self.C = float(C)
        self.threshold = float(threshold)
        self.mean: np.ndarray | None = None
        self.scale: np.ndarray | None = None
        self.coef: np.ndarray | None = None
        self.intercept = 0.0

    def fit(self, x: np.ndarray, y: Sequence[int]) -> ScanModel:
        from sklearn.linear_model import LogisticRegression

        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y).astype(int)
        if x.ndim != 2 or x.shape[1] != len(SCAN_FEATURES) or len(x) != len(y):
            raise HemwslInputError(f"scan model: features must be (N, {len(SCAN_FEATURES)}) with N labels, "
                                   f"got {x.shape} and {y.shape}")
        if len(np.unique(y)) != 2:
            raise HemwslInputError("scan model: needs scans with and without hemorrhage to train on")
        self.mean = x.mean(0)
        self.scale = np.where(x.std(0) > 0, x.std(0), 1.0)
        lr = LogisticRegression(C=self.C, max_iter=2000).fit((x - self.mean) / self.scale, y)
        self.coef, self.intercept = lr.coef_[0].astype(np.float64), float(lr.intercept_[0])
        return self

    def probability(self, x: np.ndarray) -> np.ndarray:
        if self.coef is None:
            raise HemwslInputError("scan model: not trained")
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        return 1.0 / (1.0 + np.exp(-(((x - self.mean) / self.scale) @ self.coef + self.intercept)))

    def to_dict(self) -> dict:
        return {"features": list(SCAN_FEATURES), "C": self.C, "threshold": self.threshold,
                "mean": self.mean.tolist(), "scale": self.scale.tolist(), "coef": self.coef.tolist(),
                "intercept": self.intercept}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ScanModel:
        if list(d.get("features", [])) != list(SCAN_FEATURES):
            raise HemwslInputError(f"scan model of other features ({d.get('features')}); this hemwsl uses "
                                   f"{list(SCAN_FEATURES)}")
        m = cls(d["C"], d["threshold"])
        m.mean, m.scale, m.coef = (np.asarray(d[k], dtype=np.float64) for k in ("mean", "scale", "coef"))
        m.intercept = float(d["intercept"])
        return m


def fit_scan_model(x: np.ndarray, y: Sequence[int], min_sensitivity: float = 0.9, C: float = 0.3,
                   inner_folds: int = 4, seed: int = 0, return_oof: bool = False):
    """A :class:`ScanModel` on all of ``x``, at the most specific threshold that keeps ``min_sensitivity`` on
    cross-fitted probabilities (``inner_folds`` stratified folds: no scan scores itself); with ``return_oof``
    also those cross-fitted probabilities (e.g. to compare the model with other scan scores fairly)."""
    from sklearn.model_selection import StratifiedKFold


    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    if x.ndim != 2 or x.shape[1] != len(SCAN_FEATURES) or y.ndim != 1 or len(x) != len(y):
        raise HemwslInputError(f"scan model: features must be (N, {len(SCAN_FEATURES)}) with N labels, "
                               f"got {x.shape} and {y.shape}")
    if not np.all(np.isfinite(x)):
        raise HemwslInputError(f"scan model: {int((~np.isfinite(x)).sum())} NaN/inf feature value(s)")
    if not np.isin(y, (0, 1)).all():
        raise HemwslInputError("scan model: labels must be 0 or 1")
    y = y.astype(int)
    counts = np.bincount(y, minlength=2)
    if counts.min() < 2:
        raise HemwslInputError(f"scan model: needs at least 2 scans with and 2 without hemorrhage to choose its "
                               f"threshold, got {counts[1]} and {counts[0]}")
    n_splits = max(2, min(int(inner_folds), int(counts.min())))
    oof = np.zeros(len(y))
    for tr, te in StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(x, y):
        oof[te] = ScanModel(C).fit(x[tr], y[tr]).probability(x[te])
    model = ScanModel(C).fit(x, y)
    model.threshold = choose_scan_threshold(oof, y, min_sensitivity)
    return (model, oof) if return_oof else model
