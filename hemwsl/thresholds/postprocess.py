"""Mask post-processing shared by the threshold strategies: component-size filtering and brain restriction."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy import ndimage

from hemwsl.errors import HemwslInputError
from hemwsl.metrics.localisation import nonzero_box  # noqa: F401  (re-exported; it lives with the box metrics)

__all__ = ["remove_small_components", "restrict_to_mask", "nonzero_box"]




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
