"""Common machinery of the threshold strategies: input/output types, normalisation, post-processing.

A strategy turns a heatmap (a CAM, 2D or 3D) into a binary mask. Every strategy is a
:class:`ThresholdStrategy` with a ``name`` and ``__call__(heatmap, image_hu=None, brain=None)`` that returns
a bool mask of the heatmap's shape and type (numpy in, numpy out; torch in, torch out on the same device).
Conventions shared by all strategies:

* a voxel is foreground when its (normalised) value is strictly above the threshold, ``map > t``, as in
  scikit-image's Otsu example; a constant map thus gives an empty mask with every data-driven threshold;
* the threshold is computed on the whole array given, or per item of the first axis with
  ``per_sample=True`` (a batch ``(B, H, W)`` of slices, each with its own threshold and components);
* post-processing, in this order: keep only voxels inside ``brain`` when a brain mask is passed (and
  ``restrict_to_brain``), then drop connected components smaller than ``min_size`` voxels (full
  connectivity: 8 in 2D, 26 in 3D), then keep the components whose mass (the sum of the min-max scaled heatmap
  over the component; its size without a heatmap) is at least ``min_share`` times the largest one's, then grow
  the mask by ``grow`` voxels (full connectivity) into the voxels of ``grow_hu`` HU inside the brain: the blood a
  hyperdense prior misses at a lesion's edge (partial volume, 40-50 HU) is next to the part it finds (hemwsl's
  prior-ceiling analysis).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from hemwsl.errors import HemwslInputError, check_choice
from hemwsl.thresholds.postprocess import check_min_share, keep_dominant_components, remove_small_components

__all__ = ["GROW_HU_RANGE", "NORMALISATIONS", "REGIONS", "ThresholdStrategy", "normalise_map", "apply_threshold",
           "region_values", "grow_into", "grow_region"]

#: HU range a mask grows into with ``grow > 0``: the edge of a bleed, down to partial volume with brain.
GROW_HU_RANGE: tuple[float, float] = (40.0, 100.0)

#: Named normalisations of a heatmap before a fixed threshold is applied.
NORMALISATIONS: tuple[str, ...] = ("none", "minmax", "max")
#: Which values a data-driven threshold (percentile, Otsu) is computed from.
REGIONS: tuple[str, ...] = ("map", "nonzero", "brain")


# --------------------------------------------------------------------------------------------- types
def to_numpy(x: Any, name: str) -> tuple[np.ndarray, Callable[[np.ndarray], Any]]:
    """Return ``x`` as a numpy array and a function converting a result back to ``x``'s type."""
    if isinstance(x, torch.Tensor):
        device = x.device
        return x.detach().cpu().numpy(), lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)
    a = np.asarray(x)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise HemwslInputError(f"{name} must be a numeric array, got dtype {a.dtype}")
    return a, lambda r: r


def _float_map(x: Any, name: str) -> tuple[np.ndarray, Callable[[np.ndarray], Any]]:
    a, back = to_numpy(x, name)
    a = a.astype(np.float64, copy=False)
    if np.isnan(a).any():
        raise HemwslInputError(f"{name} contains NaN")
    return a, back


def _bool_map(x: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    a, _ = to_numpy(x, name)
    if a.shape != shape:
        raise HemwslInputError(f"{name} has shape {a.shape}, expected {shape} (the heatmap's)")
    if a.dtype != bool:
        if a.size and not np.all((a == 0) | (a == 1)):
            raise HemwslInputError(f"{name} must be a binary mask (bool or 0/1)")
        a = a.astype(bool)
    return a


# --------------------------------------------------------------------------------------------- helpers
def normalise_map(heatmap: np.ndarray, normalisation: str = "none") -> np.ndarray:
    """Normalise one heatmap.

    Args:
        heatmap: float array.
        normalisation: ``"none"`` (as is, e.g. a sigmoid output in [0, 1]), ``"minmax"``
            (``(x - min) / (max - min)``, all zeros for a constant map) or ``"max"`` (``x / max``, all
            zeros when ``max <= 0``). A fixed threshold of 200/255 on ``"minmax"`` is the usual
            "200 on the 8-bit rendered CAM".
    """
    check_choice("normalisation", normalisation, NORMALISATIONS)
    h = np.asarray(heatmap, dtype=np.float64)
    if normalisation == "none" or h.size == 0:
        return h
    hi = float(h.max())
    if normalisation == "max":
        return h / hi if hi > 0 else np.zeros_like(h)
    lo = float(h.min())
    return (h - lo) / (hi - lo) if hi > lo else np.zeros_like(h)


def apply_threshold(heatmap: Any, threshold: float, normalisation: str = "none", per_sample: bool = False) -> Any:
    """Binarise ``heatmap`` as ``normalise_map(heatmap) > threshold``.

    The function to apply a threshold chosen on validation maps, unchanged, to test maps.

    Args:
        heatmap: numpy array or torch tensor.
        threshold: threshold in the units of the normalised map.
        normalisation: see :func:`normalise_map`.
        per_sample: normalise each item of the first axis separately.

    Returns:
        Bool mask of the heatmap's shape and type.
    """
    h, back = _float_map(heatmap, "heatmap")
    if per_sample:
        out = np.stack([normalise_map(x, normalisation) > threshold for x in h]) if len(h) else h.astype(bool)
    else:
        out = normalise_map(h, normalisation) > threshold
    return back(out)


def region_values(heatmap: np.ndarray, region: str, brain: np.ndarray | None) -> np.ndarray:
    """Heatmap values a data-driven threshold is computed from: all, the nonzero ones, or those in ``brain``."""
    check_choice("region", region, REGIONS)
    if region == "map":
        return heatmap.ravel()
    if region == "nonzero":
        return heatmap[heatmap != 0]
    if brain is None:
        raise HemwslInputError("region='brain' needs a brain mask (brain=...)")
    return heatmap[brain]


def grow_region(image_hu: np.ndarray, brain: np.ndarray | None = None,
                hu_range: tuple[float, float] = GROW_HU_RANGE) -> np.ndarray:
    """Where a mask may grow: the voxels of ``hu_range`` HU (inclusive), inside ``brain`` when one is given."""
    region = (image_hu >= hu_range[0]) & (image_hu <= hu_range[1])
    return region if brain is None else region & brain


def grow_into(mask: np.ndarray, region: np.ndarray, grow: int) -> np.ndarray:
    """``mask`` grown by ``grow`` steps of full-connectivity dilation, each step only into ``region`` (a
    geodesic dilation; ``mask`` itself is kept whole). Dilation of a union is the union of the dilations, so
    growing components one by one and OR-ing gives the same mask."""
    if grow <= 0 or not mask.any():
        return mask
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    return mask | ndimage.binary_dilation(mask, structure=structure, iterations=int(grow), mask=region)


# --------------------------------------------------------------------------------------------- base class
class ThresholdStrategy:
    """Base class: heatmap -> bool mask, with the shared post-processing.

    Subclasses implement :meth:`threshold_value` (a scalar threshold on the normalised map) or override
    :meth:`_mask` entirely.

    Args:
        min_size: drop connected components with fewer voxels (0 keeps all).
        restrict_to_brain: keep only voxels inside the brain mask when one is passed.
        per_sample: treat the first axis as a batch (one threshold and one component analysis per item).
        min_share: after the size filter, keep the components whose mass is at least this share of the largest
            component's (:func:`hemwsl.thresholds.postprocess.keep_dominant_components`; the mass is the sum of the
            item's min-max scaled heatmap over the component, or its size when the strategy has no heatmap). 0
            (default) keeps every component.
        grow: after the other steps, grow the mask by this many voxels into ``grow_hu`` (inside the brain
            mask when one is passed); needs ``image_hu``. 0 (default) does nothing.
        grow_hu: inclusive HU range the mask grows into (default :data:`GROW_HU_RANGE`).
    """

    name = "base"
    normalisation = "none"
    needs_heatmap = True

    def __init__(self, *, min_size: int = 0, restrict_to_brain: bool = True, per_sample: bool = False,
                 grow: int = 0, grow_hu: tuple[float, float] = GROW_HU_RANGE, min_share: float = 0.0) -> None:
        if int(min_size) < 0:
            raise HemwslInputError(f"min_size must be >= 0, got {min_size}")
        if float(grow) != int(grow) or int(grow) < 0:
            raise HemwslInputError(f"grow must be a non-negative integer, got {grow!r}")
        low, high = (float(v) for v in grow_hu)
        if not low <= high:
            raise HemwslInputError(f"grow_hu must be (low, high) with low <= high, got {grow_hu}")
        self.min_size = int(min_size)
        self.restrict_to_brain = restrict_to_brain
        self.per_sample = per_sample
        self.grow = int(grow)
        self.grow_hu = (low, high)
        self.min_share = check_min_share(min_share)

    def threshold_value(
        self, heatmap: np.ndarray, image_hu: np.ndarray | None = None, brain: np.ndarray | None = None
    ) -> float:
        """Threshold for one (normalised) map; ``+inf`` means an empty mask."""
        raise NotImplementedError

    def _mask(self, heatmap: np.ndarray | None, image_hu: np.ndarray | None, brain: np.ndarray | None) -> np.ndarray:
        """Raw mask of one map, before post-processing."""
        h = normalise_map(heatmap, self.normalisation)
        return h > self.threshold_value(h, image_hu, brain)

    def __call__(self, heatmap: Any = None, image_hu: Any = None, brain: Any = None) -> Any:
        """Binarise ``heatmap`` (with ``image_hu`` and ``brain`` of the same shape where the strategy uses them).

        Returns:
            Bool mask of the heatmap's shape, numpy or torch as the heatmap (as ``image_hu`` when the
            strategy needs no heatmap and none is given).
        """
        if heatmap is None and self.needs_heatmap:
            raise HemwslInputError(f"threshold strategy {self.name!r} needs a heatmap")
        ref = heatmap if heatmap is not None else image_hu
        if ref is None:
            raise HemwslInputError(f"threshold strategy {self.name!r} needs a heatmap or image_hu")
        h, back = _float_map(ref, "heatmap" if heatmap is not None else "image_hu")
        shape = h.shape
        if heatmap is None:
            h = None
        hu = None
        if image_hu is not None:
            hu, _ = _float_map(image_hu, "image_hu")
            if hu.shape != shape:
                raise HemwslInputError(f"image_hu has shape {hu.shape}, expected {shape} (the heatmap's)")
        br = None if brain is None else _bool_map(brain, "brain", shape)
        if self.per_sample:
            if len(shape) < 2:
                raise HemwslInputError(f"per_sample needs a batch axis, got shape {shape}")
            items = [
                self._one(None if h is None else h[i], None if hu is None else hu[i], None if br is None else br[i])
                for i in range(shape[0])
            ]
            out = np.stack(items) if items else np.zeros(shape, dtype=bool)
        else:
            out = self._one(h, hu, br)
        return back(out.astype(bool, copy=False))

    def _one(self, h: np.ndarray | None, hu: np.ndarray | None, br: np.ndarray | None) -> np.ndarray:
        mask = np.asarray(self._mask(h, hu, br), dtype=bool)
        if br is not None and self.restrict_to_brain:
            mask = mask & br
        if self.min_size > 1:
            mask = remove_small_components(mask, self.min_size)
        if self.min_share:
            mask = keep_dominant_components(mask, self.min_share, None if h is None else normalise_map(h, "minmax"))
        if self.grow:
            if hu is None:
                raise HemwslInputError(f"threshold strategy {self.name!r} with grow={self.grow} needs image_hu (the CT in HU)")
            region = grow_region(hu, br if self.restrict_to_brain else None, self.grow_hu)
            mask = grow_into(mask, region, self.grow)
        return mask

    def _params(self) -> dict[str, Any]:
        grow = {"grow": self.grow, "grow_hu": self.grow_hu} if self.grow else {}
        share = {"min_share": self.min_share} if self.min_share else {}
        return {"min_size": self.min_size, "restrict_to_brain": self.restrict_to_brain, "per_sample": self.per_sample,
                **share, **grow}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({args})"
