"""Where does an explanation put its weight? Named anatomical regions and the attribution inside them.

:func:`region_masks` splits a slice into four disjoint regions from the hemorrhage mask, the brain
mask and the in-plane pixel spacing:

* ``hemorrhage``: the lesion mask (kept also where skull stripping cut it: extra-axial bleeds touch
  the skull);
* ``perihematomal``: brain pixels outside the lesion within ``ring_mm`` millimetres of it (Euclidean
  distance transform with the pixel spacing), a stand-in for perihematomal edema when no edema mask
  exists (edema extends a few millimetres to about a centimetre around an intracerebral hemorrhage;
  e.g. Volbers et al., Neurology 2018);
* ``brain``: the rest of the brain mask;
* ``background``: everything else (skull, scalp, air).

:func:`region_importance` gives the mean attribution inside each region and its *relative* value:
the region mean divided by the mean absolute attribution over the whole slice (``1`` = the slice's
average, scale-free, so methods and slices can be compared; for non-negative maps this is the
region's mean over the slice's mean). Empty region policy: NaN (an empty mask has no mean), the same
for an all-zero map's relative values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import Tensor

from hemwsl.errors import HemwslInputError

__all__ = ["REGIONS", "region_masks", "region_importance", "RegionImportance", "scaled_spacing"]

#: Region names, in report order.
REGIONS: tuple[str, ...] = ("hemorrhage", "perihematomal", "brain", "background")


def _np2d(a: Any, name: str) -> np.ndarray:
    if isinstance(a, Tensor):
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    a = np.squeeze(a) if a.ndim > 2 else a
    if a.ndim != 2:
        raise HemwslInputError(f"{name} must be a 2D (H, W) mask, got shape {a.shape}")
    return a > 0


def scaled_spacing(spacing: Sequence[float], native_shape: Sequence[int], shape: Sequence[int]) -> tuple[float, float]:
    """In-plane pixel spacing in mm after resizing an ``native_shape`` grid to ``shape``."""
    if len(spacing) < 2 or len(native_shape) < 2 or len(shape) < 2:
        raise HemwslInputError(f"spacing/shapes need two in-plane values, got {spacing}, {native_shape}, {shape}")
    return (float(spacing[0]) * native_shape[0] / shape[0], float(spacing[1]) * native_shape[1] / shape[1])


def region_masks(
    lesion: Any, brain: Any, spacing: Sequence[float] = (1.0, 1.0), ring_mm: float = 5.0
) -> dict[str, np.ndarray]:
    """Four disjoint boolean ``(H, W)`` region masks covering the slice (see the module docstring).

    Args:
        lesion: ``(H, W)`` hemorrhage mask (non-zero = lesion).
        brain: ``(H, W)`` brain mask.
        spacing: in-plane pixel size ``(dy, dx)`` in mm, along the two axes of the masks.
        ring_mm: width of the perihematomal ring in mm (``> 0``).

    Returns:
        ``{name: bool (H, W)}`` for the names of :data:`REGIONS`.
    """
    from scipy.ndimage import distance_transform_edt

    les = _np2d(lesion, "lesion")
    br = _np2d(brain, "brain")
    if les.shape != br.shape:
        raise HemwslInputError(f"lesion {les.shape} and brain {br.shape} masks differ in shape")
    if not ring_mm > 0:
        raise HemwslInputError(f"ring_mm must be > 0, got {ring_mm!r}")
    sp = tuple(float(s) for s in spacing)[:2]
    if len(sp) != 2 or min(sp) <= 0:
        raise HemwslInputError(f"spacing must be two positive values in mm, got {spacing!r}")
    if les.any():
        dist = distance_transform_edt(~les, sampling=sp)
        ring = (dist <= ring_mm) & ~les & br
    else:
        ring = np.zeros_like(les)
    rest = br & ~les & ~ring
    background = ~(les | ring | rest)
    return {"hemorrhage": les, "perihematomal": ring, "brain": rest, "background": background}


def region_importance(attribution: Any, regions: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Mean and relative attribution of one ``(H, W)`` map in each region.

    Args:
        attribution: ``(H, W)`` map (any sign).
        regions: ``{name: bool (H, W)}``, e.g. from :func:`region_masks`.

    Returns:
        ``{"mean": {region: float}, "relative": {region: float}, "pixels": {region: int}}``;
        ``relative = mean / mean(|attribution|)`` over the slice. NaN for an empty region (and for
        ``relative`` of an all-zero map).
    """
    a = attribution.detach().cpu().numpy() if isinstance(attribution, Tensor) else np.asarray(attribution)
    a = np.squeeze(a).astype(np.float64) if a.ndim > 2 else a.astype(np.float64)
    if a.ndim != 2:
        raise HemwslInputError(f"attribution must be a 2D (H, W) map, got shape {a.shape}")
    scale = float(np.abs(a).mean())
    mean, rel, pix = {}, {}, {}
    for name, m in regions.items():
        m = np.asarray(m, dtype=bool)
        if m.shape != a.shape:
            raise HemwslInputError(f"region {name!r} has shape {m.shape}, the map {a.shape}")
        n = int(m.sum())
        pix[name] = n
        mean[name] = float(a[m].mean()) if n else float("nan")
        rel[name] = mean[name] / scale if n and scale > 0 else float("nan")
    return {"mean": mean, "relative": rel, "pixels": pix}


class RegionImportance:
    """Region masks with bound ``ring_mm`` and the importance of many maps of one slice.

    Args:
        ring_mm: width of the perihematomal ring in mm.
    """

    def __init__(self, ring_mm: float = 5.0) -> None:
        self.ring_mm = float(ring_mm)

    def __call__(self, maps: Mapping[Any, Any], lesion: Any, brain: Any,
                 spacing: Sequence[float] = (1.0, 1.0)) -> dict[Any, dict[str, dict[str, float]]]:
        regions = region_masks(lesion, brain, spacing, self.ring_mm)
        return {k: region_importance(v, regions) for k, v in maps.items()}
