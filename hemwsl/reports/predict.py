"""The one-page figure of ``hemwsl predict``: the slices that matter, in radiological convention."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

__all__ = ["radiological_slices", "plot_scan_report"]


def radiological_slices(volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Reorient an ``(X, Y, Z)`` volume so that ``out[:, :, z]`` shown with ``imshow`` is an axial slice in
    radiological convention: anterior at the top, the patient's right on the viewer's left, and ``z`` from
    inferior to superior (whatever the voxel order of the file)."""
    import nibabel as nib

    ornt = nib.orientations.ornt_transform(nib.orientations.io_orientation(affine),
                                           nib.orientations.axcodes2ornt(("P", "L", "S")))
    return nib.orientations.apply_orientation(np.asarray(volume), ornt)


def plot_scan_report(hu: np.ndarray, affine: np.ndarray, mask: np.ndarray, heatmap: np.ndarray | None,
                     probs: Sequence[float], path: str | os.PathLike, *, title: str = "", slice_threshold: float = 0.5,
                     max_slices: int = 8, window: tuple[float, float] = (40.0, 80.0)) -> None:
    """A montage of up to ``max_slices`` slices (those with mask voxels, else the most probable ones): the CT
    in a brain window, the heatmap over it and the mask outline, with an L/R marker, and the per-slice
    probability curve under it. Written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hemwsl.reports.curves import save_figure

    probs = np.asarray(probs, dtype=float)
    area = np.asarray(mask).reshape(-1, mask.shape[2]).sum(0)
    zs = list(np.flatnonzero(area))
    if len(zs) > max_slices:
        zs = sorted(sorted(zs, key=lambda z: -area[z])[:max_slices])
    if not zs:
        zs = sorted(np.argsort(-probs)[: min(4, len(probs))].tolist())
    import nibabel as nib

    t = nib.orientations.ornt_transform(nib.orientations.io_orientation(affine),
                                        nib.orientations.axcodes2ornt(("P", "L", "S")))
    if int(t[2, 0]) == 2:  # Z stays the slice axis (an axial scan): show it in radiological convention
        ct, mk = radiological_slices(hu, affine), radiological_slices(mask.astype(np.uint8), affine)
        hm = radiological_slices(heatmap, affine) if heatmap is not None else None
        rz = [(hu.shape[2] - 1 - z) if t[2, 1] < 0 else z for z in zs]
    else:  # not axial along Z: the file's own order, without an L/R claim
        ct, mk, hm, rz = hu, mask.astype(np.uint8), heatmap, zs
    marker = int(t[2, 0]) == 2
    level, width = window
    cols = min(4, len(zs))
    rows = int(np.ceil(len(zs) / cols))
    fig = plt.figure(figsize=(3.2 * cols, 3.2 * rows + 2.2))
    grid = fig.add_gridspec(rows + 1, cols, height_ratios=[3.2] * rows + [1.6])
    for i, (z, r) in enumerate(zip(zs, rz)):
        ax = fig.add_subplot(grid[i // cols, i % cols])
        ax.imshow(ct[:, :, r], cmap="gray", vmin=level - width / 2, vmax=level + width / 2, interpolation="nearest")
        if hm is not None:
            h = hm[:, :, r]
            h = (h - h.min()) / (h.max() - h.min()) if h.max() > h.min() else np.zeros_like(h)
            ax.imshow(h, cmap="jet", alpha=0.25, vmin=0, vmax=1, interpolation="bilinear")
        if mk[:, :, r].any():
            ax.contour(mk[:, :, r], levels=[0.5], colors="red", linewidths=0.8)
        if marker:
            ax.text(0.02, 0.5, "R", color="yellow", transform=ax.transAxes, fontsize=11, va="center", weight="bold")
            ax.text(0.98, 0.5, "L", color="yellow", transform=ax.transAxes, fontsize=11, va="center", ha="right",
                    weight="bold")
        ax.set_title(f"slice {z}: p = {probs[z]:.2f}", fontsize=9)
        ax.axis("off")
    ax = fig.add_subplot(grid[rows, :])
    ax.plot(np.arange(len(probs)), probs, color="k", lw=1)
    ax.axhline(slice_threshold, color="gray", ls="--", lw=0.8)
    ax.fill_between(np.arange(len(probs)), 0, area / max(area.max(), 1), color="red", alpha=0.3, step="mid",
                    label="mask area (scaled)")
    ax.set_xlim(0, len(probs) - 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("slice (file order)")
    ax.set_ylabel("P(hemorrhage)")
    ax.legend(loc="upper right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
