"""Percentile threshold: keep the values above the q-th percentile (Q90, Q95) of the map or of a region."""

from __future__ import annotations

from typing import Any

import numpy as np

from hemwsl.errors import HemwslInputError, check_choice
from hemwsl.thresholds.base import REGIONS, ThresholdStrategy, region_values

__all__ = ["PercentileThreshold"]


class PercentileThreshold(ThresholdStrategy):
    """Foreground where ``heatmap > numpy.percentile(values, q)``.

    Args:
        q: percentile in [0, 100] (90 for Q90, 95 for Q95); ``numpy.percentile``'s default (linear)
            interpolation.
        region: values the percentile is taken over: ``"map"`` (all), ``"nonzero"`` (non-zero heatmap
            values, so that a mostly-zero CAM does not put the threshold at 0) or ``"brain"`` (inside
            the brain mask given to the call). An empty region gives an empty mask.
        min_size, restrict_to_brain, per_sample: see :class:`~hemwsl.thresholds.base.ThresholdStrategy`.
    """

    name = "percentile"

    def __init__(self, q: float = 95.0, region: str = "map", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= float(q) <= 100.0:
            raise HemwslInputError(f"q must be in [0, 100], got {q}")
        check_choice("region", region, REGIONS)
        self.q = float(q)
        self.region = region

    def threshold_value(
        self, heatmap: np.ndarray, image_hu: np.ndarray | None = None, brain: np.ndarray | None = None
    ) -> float:
        values = region_values(heatmap, self.region, brain)
        return float(np.percentile(values, self.q)) if values.size else float("inf")

    def _params(self) -> dict[str, Any]:
        return {"q": self.q, "region": self.region, **super()._params()}
