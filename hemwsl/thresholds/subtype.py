"""The subtype rule of seed paper 001: per-class decision thresholds, per-class mask thresholds, argmax.

A multi-label classifier (any + five subtypes) and one heatmap per subtype give a label map:

1. a subtype is *present* on a slice when its probability reaches its class threshold, chosen per class
   on validation data by Youden's J (:func:`hemwsl.metrics.youden_threshold`);
2. each present subtype's heatmap is normalised (per slice) and thresholded at the mask threshold;
3. a pixel claimed by several present subtypes takes the one with the largest normalised map (argmax),
   a pixel claimed by none is background (label 0); subtype ``k`` is label ``k + 1``.

The label maps feed the class-wise IoU / mIoU of :mod:`hemwsl.metrics.localisation`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hemwsl.errors import HemwslInputError, check_choice
from hemwsl.thresholds.base import NORMALISATIONS, normalise_map

__all__ = ["SubtypeRule"]


class SubtypeRule:
    """Label maps from subtype probabilities and subtype heatmaps (Chen & Kuo 2026).

    Args:
        class_thresholds: one probability threshold per subtype (or call :meth:`fit`).
        mask_threshold: threshold on the normalised heatmaps (one value, or one per subtype).
        normalisation: ``"minmax"`` (default, per slice and subtype), ``"max"`` or ``"none"``.
        names: subtype names (for messages and reports).
    """

    def __init__(
        self,
        class_thresholds: Sequence[float] | None = None,
        mask_threshold: float | Sequence[float] = 0.5,
        normalisation: str = "minmax",
        names: Sequence[str] | None = None,
    ) -> None:
        check_choice("normalisation", normalisation, NORMALISATIONS)
        self.class_thresholds = None if class_thresholds is None else np.asarray(class_thresholds, dtype=np.float64)
        self.mask_threshold = np.atleast_1d(np.asarray(mask_threshold, dtype=np.float64))
        self.normalisation = normalisation
        self.names = list(names) if names is not None else None

    def fit(self, y_val: Any, p_val: Any) -> SubtypeRule:
        """Choose each class threshold by Youden's J on validation labels ``(N, K)`` and probabilities."""
        from hemwsl.metrics import youden_threshold

        y, p = np.asarray(y_val, dtype=np.float64), np.asarray(p_val, dtype=np.float64)
        if y.ndim != 2 or y.shape != p.shape:
            raise HemwslInputError(f"y_val and p_val must both be (N, K), got {y.shape} and {p.shape}")
        self.class_thresholds = np.array([youden_threshold(y[:, k], p[:, k])[0] for k in range(y.shape[1])])
        return self

    def __call__(self, probs: Any, cams: Any, brain: Any = None) -> np.ndarray:
        """Label maps ``(N, H, W)`` (int64; 0 background, ``k + 1`` subtype ``k``).

        Args:
            probs: subtype probabilities ``(N, K)``.
            cams: one heatmap per subtype ``(N, K, H, W)``.
            brain: optional brain masks ``(N, H, W)``; labels outside are 0.
        """
        if self.class_thresholds is None:
            raise HemwslInputError("SubtypeRule has no class thresholds: pass class_thresholds or call fit()")
        p = np.asarray(probs, dtype=np.float64)
        c = np.asarray(cams, dtype=np.float64)
        if p.ndim != 2 or c.ndim != 4 or c.shape[:2] != p.shape:
            raise HemwslInputError(f"probs must be (N, K) and cams (N, K, H, W) with the same N, K; got {p.shape} "
                                   f"and {c.shape}")
        k = p.shape[1]
        if self.class_thresholds.shape != (k,):
            raise HemwslInputError(f"{self.class_thresholds.size} class thresholds for {k} subtypes")
        mt = self.mask_threshold if self.mask_threshold.size == k else np.full(k, float(self.mask_threshold[0]))
        if mt.shape != (k,):
            raise HemwslInputError(f"mask_threshold needs 1 or {k} values, got {self.mask_threshold.size}")
        return self.label_normalised(p, self.normalise(c), brain)

    def normalise(self, cams: Any) -> np.ndarray:
        """Step 2's per-slice, per-subtype normalisation of ``(N, K, H, W)`` heatmaps."""
        c = np.asarray(cams, dtype=np.float64)
        return np.stack([[normalise_map(c[i, j], self.normalisation) for j in range(c.shape[1])]
                         for i in range(len(c))]) if len(c) else c

    def label_normalised(self, probs: Any, norm: Any, brain: Any = None) -> np.ndarray:
        """Steps 1 and 3 on heatmaps already normalised (e.g. once for several mask thresholds)."""
        p, norm = np.asarray(probs, dtype=np.float64), np.asarray(norm)
        k = p.shape[1]
        if self.class_thresholds is None:
            raise HemwslInputError("SubtypeRule has no class thresholds: pass class_thresholds or call fit()")
        mt = self.mask_threshold if self.mask_threshold.size == k else np.full(k, float(self.mask_threshold[0]))
        present = p >= self.class_thresholds[None, :]
        claim = present[:, :, None, None] & (norm > mt[None, :, None, None])
        score = np.where(claim, norm, -np.inf)
        label = np.argmax(score, axis=1) + 1
        label[~claim.any(axis=1)] = 0
        if brain is not None:
            b = np.asarray(brain).astype(bool)
            if b.shape != label.shape:
                raise HemwslInputError(f"brain has shape {b.shape}, expected {label.shape}")
            label[~b] = 0
        return label.astype(np.int64)
