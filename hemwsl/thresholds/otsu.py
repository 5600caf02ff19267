"""Otsu threshold (``skimage.filters.threshold_otsu``) on the heatmap values of the map or of a region."""

from __future__ import annotations

from typing import Any

import numpy as np
from skimage.filters import threshold_otsu

from hemwsl.errors import HemwslInputError, check_choice
from hemwsl.thresholds.base import REGIONS, ThresholdStrategy, region_values

__all__ = ["OtsuThreshold"]


class OtsuThreshold(ThresholdStrategy):
    """Foreground where ``heatmap > threshold_otsu(values, nbins)`` (Otsu, IEEE TSMC 1979; scikit-image).

    Args:
        nbins: histogram bins (scikit-image's default 256).
        region: ``"map"``, ``"nonzero"`` or ``"brain"``, as for
            :class:`~hemwsl.thresholds.percentile.PercentileThreshold`. A constant or empty region gives an
            empty mask.
        min_size, restrict_to_brain, per_sample: see :class:`~hemwsl.thresholds.base.ThresholdStrategy`.
    """

    name = "otsu"

    def __init__(self, nbins: int = 256, region: str = "map", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if int(nbins) < 2:
            raise HemwslInputError(f"nbins must be >= 2, got {nbins}")
        check_choice("region", region, REGIONS)
        self.nbins = int(nbins)
        self.region = region

    def threshold_value(
        self, heatmap: np.ndarray, image_hu: np.ndarray | None = None, brain: np.ndarray | None = None
    ) -> float:
        values = region_values(heatmap, self.region, brain)
        if values.size == 0 or values.min() == values.max():
            return float("inf")
        return float(threshold_otsu(values, nbins=self.nbins))

    def _params(self) -> dict[str, Any]:
        return {"nbins": self.nbins, "region": self.region, **super()._params()}
