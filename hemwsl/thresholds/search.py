"""Grid search of a fixed threshold on validation maps, to be applied unchanged to test maps.

Protocol: ``t = search_threshold(maps_val, masks_val, candidates)`` on the validation split only, then
``apply_threshold(maps_test, t)`` (or ``FixedThreshold(t, ...)``) on the test split; choosing the threshold
on the test split itself is optimistic. :class:`SearchedThreshold` wraps both steps as a strategy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from hemwsl.errors import HemwslInputError, check_choice
from hemwsl.metrics.localisation import (
    bounding_box_mask,
    compute_box_dice,
    compute_box_iou,
    compute_dice,
    compute_global_dice,
    compute_global_iou,
    compute_hit,
    compute_iou,
)
from hemwsl.thresholds.base import NORMALISATIONS, ThresholdStrategy, to_numpy
from hemwsl.thresholds.fixed import FixedThreshold

__all__ = ["SEARCH_METRICS", "SEARCH_REDUCTIONS", "threshold_scores", "search_threshold", "SearchedThreshold"]

#: Metrics a threshold can be tuned for.
SEARCH_METRICS: tuple[str, ...] = ("dice", "iou", "box_dice", "box_iou", "hit")
#: ``"per_slice"``: NaN-aware mean of per-slice scores; ``"global"``: pooled over all pixels.
SEARCH_REDUCTIONS: tuple[str, ...] = ("per_slice", "global")

_PER_SLICE = {
    "dice": compute_dice,
    "iou": compute_iou,
    "box_dice": compute_box_dice,
    "box_iou": compute_box_iou,
    "hit": compute_hit,
}


def _stack(x: Any, name: str) -> np.ndarray:
    if isinstance(x, (list, tuple)):
        arrays = [to_numpy(a, name)[0] for a in x]
        if not arrays:
            raise HemwslInputError(f"{name} is empty")
        if len({a.shape for a in arrays}) != 1:
            raise HemwslInputError(f"{name} must hold maps of one shape, got {sorted({a.shape for a in arrays})}")
        a = np.stack(arrays)
    else:
        a = to_numpy(x, name)[0]
    if a.ndim == 2:
        a = a[None]
    if a.ndim < 3 or a.shape[0] == 0:
        raise HemwslInputError(f"{name} must be a non-empty stack of maps (N, H, W[, D]), got shape {a.shape}")
    return a


def _score(pred: np.ndarray, gt: np.ndarray, metric: str, reduction: str) -> float:
    p, g = torch.from_numpy(pred), torch.from_numpy(gt)
    if p.ndim > 3 and metric.startswith("box_"):
        raise HemwslInputError(f"metric {metric!r} is defined on 2D slices, got maps of shape {tuple(p.shape[1:])}")
    if p.ndim > 3:  # volumes: score each as a flattened slice, pixels pooled within the volume
        p, g = p.reshape(p.shape[0], 1, -1), g.reshape(g.shape[0], 1, -1)
    if reduction == "global" and metric != "hit":
        if metric.startswith("box_"):
            p, g = bounding_box_mask(p), bounding_box_mask(g)
        return compute_global_dice(p, g) if metric.endswith("dice") else compute_global_iou(p, g)
    values = _PER_SLICE[metric](p, g)
    values = values[~torch.isnan(values)]
    return float(values.mean()) if values.numel() else float("nan")


def threshold_scores(
    maps_val: Any,
    masks_val: Any,
    candidates: Sequence[float],
    metric: str = "dice",
    reduction: str = "per_slice",
    normalisation: str = "none",
    min_size: int = 0,
    brains_val: Any = None,
) -> np.ndarray:
    """Score of every candidate threshold on the validation maps.

    Args:
        maps_val: validation heatmaps, a stack ``(N, H, W)`` or a list of equally shaped maps.
        masks_val: their ground-truth masks, same layout.
        candidates: thresholds to try, in normalised units.
        metric: one of :data:`SEARCH_METRICS`.
        reduction: one of :data:`SEARCH_REDUCTIONS` (``"global"`` is the per-slice mean for ``"hit"``).
        normalisation: applied to each map before thresholding (see ``normalise_map``).
        min_size: component filtering applied to each thresholded map, as at test time.
        brains_val: optional brain masks, same layout; predictions are restricted to them.

    Returns:
        float64 array of one score per candidate (higher is better), following the empty-mask policy of
        :mod:`hemwsl.metrics.localisation`.
    """
    check_choice("metric", metric, SEARCH_METRICS)
    check_choice("reduction", reduction, SEARCH_REDUCTIONS)
    check_choice("normalisation", normalisation, NORMALISATIONS)
    cands = [float(c) for c in candidates]
    if not cands or any(math.isnan(c) for c in cands):
        raise HemwslInputError("candidates must be a non-empty sequence of numbers (no NaN)")
    maps = _stack(maps_val, "maps_val").astype(np.float64)
    masks = _stack(masks_val, "masks_val")
    if masks.shape != maps.shape:
        raise HemwslInputError(f"masks_val has shape {masks.shape}, expected {maps.shape} (the maps')")
    if masks.dtype != bool:
        if not np.all((masks == 0) | (masks == 1)):
            raise HemwslInputError("masks_val must be binary (bool or 0/1)")
        masks = masks.astype(bool)
    brains = None if brains_val is None else _stack(brains_val, "brains_val")
    scores = np.empty(len(cands), dtype=np.float64)
    for i, t in enumerate(cands):
        strategy = FixedThreshold(t, normalisation=normalisation, min_size=min_size, per_sample=True)
        pred = strategy(maps, brain=brains)
        scores[i] = _score(pred, masks, metric, reduction)
    return scores


def search_threshold(
    maps_val: Any,
    masks_val: Any,
    candidates: Sequence[float],
    metric: str = "dice",
    reduction: str = "per_slice",
    normalisation: str = "none",
    min_size: int = 0,
    brains_val: Any = None,
) -> float:
    """Threshold maximising ``metric`` on the validation maps (arguments as :func:`threshold_scores`).

    Among equally good candidates the first one, in the order given, wins. Apply the result unchanged to
    the test maps with :func:`~hemwsl.thresholds.base.apply_threshold` (same ``normalisation``) or
    ``FixedThreshold(t, normalisation=..., min_size=...)``.

    Returns:
        The chosen candidate.

    Raises:
        HemwslInputError: when every candidate scores NaN (e.g. no lesion at all for a NaN-prone metric).
    """
    scores = threshold_scores(
        maps_val, masks_val, candidates, metric, reduction, normalisation, min_size=min_size, brains_val=brains_val
    )
    if np.isnan(scores).all():
        raise HemwslInputError("every candidate threshold scored NaN on the validation maps")
    best = int(np.nanargmax(scores))  # first maximum
    return float(list(candidates)[best])


class SearchedThreshold(ThresholdStrategy):
    """Fixed threshold chosen by :meth:`fit` on validation maps (:func:`search_threshold`).

    Args:
        candidates: thresholds to try (default 0.05, 0.10, ..., 0.95).
        metric: one of :data:`SEARCH_METRICS`.
        reduction: one of :data:`SEARCH_REDUCTIONS`.
        normalisation: normalisation of the maps (``"minmax"`` by default, as :class:`FixedThreshold`).
        value: an already chosen threshold (skips :meth:`fit`).
        min_size, restrict_to_brain, per_sample: see :class:`~hemwsl.thresholds.base.ThresholdStrategy`;
            ``min_size`` is also applied during the search.
    """

    name = "search"

    def __init__(
        self,
        candidates: Sequence[float] | None = None,
        metric: str = "dice",
        reduction: str = "per_slice",
        normalisation: str = "minmax",
        value: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_choice("metric", metric, SEARCH_METRICS)
        check_choice("reduction", reduction, SEARCH_REDUCTIONS)
        check_choice("normalisation", normalisation, NORMALISATIONS)
        default = [round(0.05 * k, 2) for k in range(1, 20)]
        self.candidates = default if candidates is None else [float(c) for c in candidates]
        self.metric = metric
        self.reduction = reduction
        self.normalisation = normalisation
        self.value = None if value is None else float(value)

    def fit(self, maps_val: Any, masks_val: Any, brains_val: Any = None) -> SearchedThreshold:
        """Choose the threshold on validation maps and masks; returns ``self``."""
        self.value = search_threshold(
            maps_val,
            masks_val,
            self.candidates,
            metric=self.metric,
            reduction=self.reduction,
            normalisation=self.normalisation,
            min_size=self.min_size,
            brains_val=brains_val if self.restrict_to_brain else None,
        )
        return self

    def threshold_value(
        self, heatmap: np.ndarray, image_hu: np.ndarray | None = None, brain: np.ndarray | None = None
    ) -> float:
        if self.value is None:
            raise HemwslInputError("SearchedThreshold has no threshold yet: call fit(maps_val, masks_val) first")
        return self.value

    def _params(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "reduction": self.reduction,
            "normalisation": self.normalisation,
            "value": self.value,
            **super()._params(),
        }
