"""Mask post-processing shared by the threshold strategies: component-size filtering, the dominant components, and
brain restriction."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy import ndimage

from hemwsl.errors import HemwslInputError
from hemwsl.metrics.localisation import nonzero_box  # noqa: F401  (re-exported; it lives with the box metrics)

__all__ = ["remove_small_components", "keep_dominant_components", "check_min_share", "component_mass", "restrict_to_mask", "nonzero_box"]




def _as_bool(x: Any, name: str) -> tuple[np.ndarray, Any]:
    if isinstance(x, torch.Tensor):
        device = x.device
        a = x.detach().cpu().numpy()
        back = lambda r: torch.from_numpy(np.ascontiguousarray(r)).to(device)  # noqa: E731
    else:
        a = np.asarray(x)
        back = lambda r: r  # noqa: E731
    if a.dtype != bool:
        if a.size and not np.all((a == 0) | (a == 1)):
            raise HemwslInputError(f"{name} must be a binary mask (bool or 0/1)")
        a = a.astype(bool)
    return a, back


def remove_small_components(mask: Any, min_size: int, connectivity: int | None = None) -> Any:
    """Drop the connected components with fewer than ``min_size`` voxels.

    Args:
        mask: binary mask (2D or 3D), numpy or torch.
        min_size: smallest component size kept, in voxels (0 or 1 keeps everything).
        connectivity: ``scipy.ndimage.generate_binary_structure`` connectivity; ``None`` is full
            connectivity (8 in 2D, 26 in 3D).

    Returns:
        Bool mask of the input's shape and type.
    """
    m, back = _as_bool(mask, "mask")
    if min_size < 0:
        raise HemwslInputError(f"min_size must be >= 0, got {min_size}")
    if min_size <= 1 or not m.any():
        return back(m.copy())
    structure = ndimage.generate_binary_structure(m.ndim, m.ndim if connectivity is None else connectivity)
    box = nonzero_box(m)
    labels, n = ndimage.label(m[box], structure=structure)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_size
    keep[0] = False
    out = np.zeros_like(m)
    out[box] = keep[labels]
    return back(out)


def check_min_share(value: Any, name: str = "min_share") -> float:
    """``value`` as a share in ``[0, 1)``; one line naming ``name`` otherwise (a bool, NaN, 1 or more: at 1 only the
    largest component could be kept, and only when no other ties with it, which is not a filter a user means)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value) or not 0.0 <= float(value) < 1.0:
        raise HemwslInputError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def keep_dominant_components(mask: Any, min_share: float, weights: Any = None, connectivity: int | None = None) -> Any:
    """Keep the connected components whose mass is at least ``min_share`` times the largest component's mass.

    A component's mass is the sum of ``weights`` over its voxels (its size when ``weights`` is ``None``). With a
    heatmap scaled to [0, 1] as the weights, the mass is size x mean heat: a bleed is usually the largest and
    most strongly marked hyperdense region of its slice, and the small look-alikes beside it (the partial-volume
    rim of the skull, the falx, calcifications) are dropped. hemwsl's measurement on CT-ICH: within the slices
    with blood, the size of a prior component separates blood from look-alikes at AUROC 0.79, size x mean heat
    of the LSE heatmap network's 8 x 8 level likewise (docs/heatmap_network.md, eighth round).

    Args:
        mask: binary mask (2D or 3D), numpy or torch.
        min_share: in ``[0, 1)``; 0 keeps everything.
        weights: non-negative values of the mask's shape (e.g. a min-max scaled heatmap), or ``None``.
        connectivity: as :func:`remove_small_components` (``None``: full connectivity).

    Returns:
        Bool mask of the input's shape and type.
    """
    m, back = _as_bool(mask, "mask")
    share = check_min_share(min_share)
    if share == 0.0 or not m.any():
        return back(m.copy())
    w = None
    if weights is not None:
        w = weights.detach().cpu().numpy() if isinstance(weights, torch.Tensor) else np.asarray(weights)
        if w.shape != m.shape:
            raise HemwslInputError(f"weights have shape {w.shape}, expected {m.shape} (the mask's)")
        w = w.astype(np.float64, copy=False)
        if not np.isfinite(w).all() or (w < 0).any():
            raise HemwslInputError("weights must be finite and non-negative (e.g. a heatmap scaled to [0, 1])")
    structure = ndimage.generate_binary_structure(m.ndim, m.ndim if connectivity is None else connectivity)
    box = nonzero_box(m)
    labels, n = ndimage.label(m[box], structure=structure)
    mass = component_mass(labels, n, None if w is None else w[box])
    keep = np.zeros(n + 1, dtype=bool)
    keep[1:] = mass >= share * mass.max()
    out = np.zeros_like(m)
    out[box] = keep[labels]
    return back(out)


def component_mass(labels: np.ndarray, n: int, weights: np.ndarray | None = None) -> np.ndarray:
    """``(n,)`` mass of components ``1..n`` of ``labels``: the sum of ``weights`` over each (its size without them),
    summed in raster order (the benchmark's fast path sums the same way, so both keep the same components)."""
    if weights is None:
        return np.bincount(labels.ravel(), minlength=n + 1)[1:].astype(np.float64)
    return np.bincount(labels.ravel(), weights=np.asarray(weights, dtype=np.float64).ravel(), minlength=n + 1)[1:]


def restrict_to_mask(mask: Any, region: Any) -> Any:
    """``mask & region`` (e.g. a brain mask), of ``mask``'s type.

    Args:
        mask: binary mask, numpy or torch.
        region: binary mask of the same shape.
    """
    m, back = _as_bool(mask, "mask")
    r, _ = _as_bool(region, "region")
    if r.shape != m.shape:
        raise HemwslInputError(f"region has shape {r.shape}, expected {m.shape} (the mask's)")
    return back(m & r)
