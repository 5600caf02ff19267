"""Recipro-CAM: the score of the network's tail on the layer's activation kept at one position at a time."""

from __future__ import annotations

import torch
from torch import Tensor

from hemwsl.cam.base import CAMMethod, LayerContext
from hemwsl.errors import HemwslInputError

__all__ = ["ReciproCAM"]

#: The 3 x 3 Gaussian of the authors' code (centre 1/4).
_GAUSSIAN = torch.tensor([[1 / 16, 1 / 8, 1 / 16], [1 / 8, 1 / 4, 1 / 8], [1 / 16, 1 / 8, 1 / 16]])


class ReciproCAM(CAMMethod):
    """Recipro-CAM (Byun & Lee 2022; CVPR Workshops 2024), gradient-free.

    For every position ``(i, j)`` of the layer's ``h x w`` activation ``A``, the network's tail (everything after
    the layer) scores the "mosaic" activation that keeps only that position: ``A * E_ij`` (``E_ij`` one at
    ``(i, j)``, zero elsewhere), or with ``kernel=True`` the authors' Gaussian variant, the position's feature
    vector spread over its 3 x 3 neighbourhood with weights 1/4 (centre), 1/8, 1/16. The map at ``(i, j)`` is the
    target's probability on that mosaic (the sigmoid of its logit: hemwsl's heads are sigmoid heads, where the
    paper takes the softmax). ``h * w`` runs of the tail per slice, batched; the tail runs from the layer on
    (:class:`hemwsl.cam.suffix.SuffixRunner`), so the layers before it are not recomputed.

    Args:
        kernel: the Gaussian variant instead of the single position.
        batch_size: mosaics per run of the tail.

    Reference:
        Byun & Lee, "Recipro-CAM: Fast gradient-free visual explanations for convolutional neural networks",
        arXiv 2209.14074, 2022 (CVPR Workshops 2024, "ReciproCAM: Lightweight Gradient-free Class Activation Map
        for Post-hoc Explanations").
    """

    name = "reciprocam"
    paper = "Byun & Lee, Recipro-CAM: Fast gradient-free visual explanations for convolutional neural networks, arXiv 2022"
    needs_gradients = False

    def __init__(self, kernel: bool = False, batch_size: int = 64) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise HemwslInputError(f"batch_size must be a positive int, got {batch_size!r}")
        if not isinstance(kernel, bool):
            raise HemwslInputError(f"kernel must be true or false, got {kernel!r}")
        self.kernel, self.batch_size = kernel, batch_size

    def mosaics(self, a: Tensor) -> Tensor:
        """``(h * w, C, h, w)`` mosaic activations of one slice's ``(C, h, w)`` activation, position-major."""
        c, h, w = a.shape
        out = torch.zeros(h * w, c, h, w, dtype=a.dtype, device=a.device)
        pos = torch.arange(h * w, device=a.device)
        ii, jj = pos // w, pos % w
        if not self.kernel:
            out[pos, :, ii, jj] = a[:, ii, jj].T
            return out
        g = _GAUSSIAN.to(a.dtype).to(a.device)
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                ti, tj = ii + di, jj + dj
                ok = (ti >= 0) & (ti < h) & (tj >= 0) & (tj < w)
                out[pos[ok], :, ti[ok], tj[ok]] = a[:, ii[ok], jj[ok]].T * g[di + 1, dj + 1]
        return out

    def __call__(self, ctx: LayerContext) -> Tensor:
        a = ctx.activations
        b_, _, h, w = a.shape
        runner = ctx.suffix_runner()
        out = torch.empty(b_, h * w, dtype=a.dtype, device=a.device)
        for b in range(b_):
            mosaic = self.mosaics(a[b])
            for start in range(0, h * w, self.batch_size):
                sub = mosaic[start:start + self.batch_size]
                rows = torch.full((len(sub),), b, dtype=torch.long, device=a.device)
                logits = runner.run(sub, rows, ctx.inputs)
                out[b, start:start + len(sub)] = torch.sigmoid(ctx.target.row_scores(logits, rows)).to(a.dtype)
        return out.view(b_, h, w)
