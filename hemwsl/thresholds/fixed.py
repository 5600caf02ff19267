"""Fixed threshold on a named normalisation of the heatmap (e.g. 200/255 or 225/255 of min-max, 0.7)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hemwsl.errors import HemwslInputError, check_choice
from hemwsl.thresholds.base import NORMALISATIONS, ThresholdStrategy

__all__ = ["FixedThreshold"]


class FixedThreshold(ThresholdStrategy):
    """Foreground where ``normalise_map(heatmap, normalisation) > value``.

    Args:
        value: threshold in normalised units, e.g. ``200 / 255`` or ``225 / 255`` for the 8-bit rendered
            CAM of the seed papers, or ``0.7``.
        normalisation: ``"minmax"`` (default), ``"max"`` or ``"none"`` (see
            :func:`hemwsl.thresholds.base.normalise_map`).
        min_size, restrict_to_brain, per_sample: see :class:`~hemwsl.thresholds.base.ThresholdStrategy`.
    """

    name = "fixed"

    def __init__(self, value: float, normalisation: str = "minmax", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        value = float(value)
        if math.isnan(value):
            raise HemwslInputError("threshold value is NaN")
        check_choice("normalisation", normalisation, NORMALISATIONS)
        self.value = value
        self.normalisation = normalisation

    def threshold_value(
        self, heatmap: np.ndarray, image_hu: np.ndarray | None = None, brain: np.ndarray | None = None
    ) -> float:
        return self.value

    def _params(self) -> dict[str, Any]:
        return {"value": self.value, "normalisation": self.normalisation, **super()._params()}
