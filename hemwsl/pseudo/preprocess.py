"""Inputs of the pseudo-label steps: contrast enhanced slices for K-means, classifier inputs for scoring.

* :func:`enhance_slices` -- skull-stripped HU slices -> a CT window, then histogram equalisation over
  the brain (or CLAHE): the "skull stripping and contrast enhancement before clustering" of
  Ramananda & Sundaresan (arXiv:2309.16627, 2023).
* :class:`ClassifierInput` -- HU slice stacks on the CT grid -> the classifier's input exactly as
  :class:`hemwsl.data.SliceDataset` builds it (in-plane resize, then the CT windows, window-major), so
  that "cluster removed" slices are scored like the slices the classifier was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from hemwsl.errors import HemwslInputError, check_choice

__all__ = ["ENHANCEMENTS", "enhance_slices", "ClassifierInput"]

#: Contrast enhancements before clustering.
ENHANCEMENTS: tuple[str, ...] = ("global", "clahe", "none")


def enhance_slices(
    hu: np.ndarray,
    brain: np.ndarray | None = None,
    window: str | tuple[float, float] = "brain",
    method: str = "global",
    num_bins: int = 256,
) -> np.ndarray:
    """Window and contrast-enhance axial slices for clustering.

    Args:
        hu: ``(n, X, Y)`` slices in HU.
        brain: optional bool ``(n, X, Y)`` brain masks; equalisation uses the brain pixels as
            reference and pixels outside the brain are set to 0.
        window: CT window (name of :data:`hemwsl.constants.WINDOWS` or ``(level, width)``) mapping HU
            to [0, 1].
        method: ``"global"`` (histogram equalisation, :class:`hemwsl.transforms.HistogramEqualize`),
            ``"clahe"`` or ``"none"`` (window only).
        num_bins: histogram bins.

    Returns:
        float32 ``(n, X, Y)`` in [0, 1].
    """
    from hemwsl.transforms.array import HistogramEqualize, Window, resolve_window

    check_choice("enhancement", method, ENHANCEMENTS)
    hu = np.asarray(hu, dtype=np.float32)
    if hu.ndim != 3:
        raise HemwslInputError(f"hu must be (n, X, Y) slices, got shape {hu.shape}")
    if brain is not None:
        brain = np.asarray(brain, dtype=bool)
        if brain.shape != hu.shape:
            raise HemwslInputError(f"brain has shape {brain.shape}, expected {hu.shape} (the slices')")
    win = Window(*resolve_window(window))
    out = np.asarray(win(hu[None])[0], dtype=np.float32)
    if method != "none":
        eq = HistogramEqualize(num_bins=num_bins, method=method)
        for i in range(out.shape[0]):
            m = None if brain is None else brain[i]
            if m is not None and not m.any():
                continue
            if method == "global":
                out[i] = np.asarray(eq(out[i][None], mask=None if m is None else m[None])[0])
            else:
                out[i] = np.asarray(eq(out[i][None])[0])
    if brain is not None:
        out = np.where(brain, out, 0.0).astype(np.float32)
    return out


class ClassifierInput(torch.nn.Module):
    """``(B, k, X, Y)`` HU stacks on the CT grid -> ``(B, k * len(windows), H, W)`` classifier input.

    The same operations as :class:`hemwsl.data.dataset.LoadCTVolumed` + :class:`hemwsl.data.SliceDataset`:
    each slice resized to ``spatial_size`` (bilinear, antialiased, ``align_corners=False``), then the CT
    windows applied, window-major (:class:`hemwsl.transforms.batch.BatchWindows`). Skull stripping (fill
    outside the brain with the volume's minimum HU) is done by the caller on the whole volume, as there.

    Args:
        windows: the classifier's CT windows.
        spatial_size: its in-plane size, or ``None`` for the CT grid.
    """

    def __init__(self, windows: Sequence = ("brain",), spatial_size: Sequence[int] | None = (256, 256)) -> None:
        super().__init__()
        from hemwsl.transforms.batch import BatchWindows

        if spatial_size is not None and (len(spatial_size) != 2 or min(spatial_size) < 8):
            raise HemwslInputError(f"spatial_size must be two ints >= 8 or None, got {spatial_size!r}")
        self.spatial_size = tuple(int(s) for s in spatial_size) if spatial_size is not None else None
        self.windows = BatchWindows(list(windows))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x).float()
        if x.ndim != 4:
            raise HemwslInputError(f"expected (B, k, X, Y) HU stacks, got shape {tuple(x.shape)}")
        b, k = x.shape[:2]
        if self.spatial_size is not None and tuple(x.shape[-2:]) != self.spatial_size:
            x = F.interpolate(x.reshape(b * k, 1, *x.shape[-2:]), size=self.spatial_size, mode="bilinear",
                              align_corners=False, antialias=True).reshape(b, k, *self.spatial_size)
        return self.windows(x)
