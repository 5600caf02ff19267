"""Score-CAM: channel weights from the scores of the input masked by each upsampled channel."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from hemwsl.cam.base import CAMMethod, LayerContext
from hemwsl.errors import HemwslInputError

__all__ = ["ScoreCAM"]


class ScoreCAM(CAMMethod):
    """Score-CAM (Wang et al. 2020).

    Each channel ``A_c`` is upsampled to the input size (bilinear, ``align_corners=True``), min-max
    scaled to ``M_c`` (``(u - min) / (max - min + 1e-8)``), and the network scores the masked input
    ``x * M_c``; ``w = softmax_c(S(x * M_c))``, map ``ReLU(sum_c w_c A_c)``. Exactly
    pytorch-grad-cam's ``ScoreCAM``.

    The input itself is masked, so nothing of the original forward can be reused: Score-CAM costs one
    full forward per (slice, channel). hemwsl batches them over channels and slices
    (``batch_size`` masked inputs per forward, built chunk by chunk so memory stays bounded) and runs
    channels whose upsampled map is constant (mask exactly 0, e.g. dead ReLU channels) as ONE forward
    of an all-zero input.

    Args:
        batch_size: masked inputs per forward; default 32 on CPU (larger batches were slower per
            image on a small CPU) and 64 on accelerators.

    Reference:
        Wang, Wang, Du, Yang, Zhang, Ding, Mardziel, Hu, "Score-CAM: Score-Weighted Visual Explanations
        for Convolutional Neural Networks", CVPR Workshops 2020.
    """

    name = "scorecam"
    paper = "Wang et al., Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural Networks, CVPR Workshops 2020"
    needs_gradients = False

    def __init__(self, batch_size: int | None = None) -> None:
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
            raise HemwslInputError(f"batch_size must be a positive int, got {batch_size!r}")
        self.batch_size = batch_size

    def _batch_size(self, device: torch.device) -> int:
        if self.batch_size is not None:
            return self.batch_size
        return 32 if device.type == "cpu" else 64

    @staticmethod
    def _masks(a: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """``(n, 1, H, W)`` normalised masks of ``(n, h, w)`` maps, and which are constant."""
        up = F.interpolate(a[:, None], size=size, mode="bilinear", align_corners=True)
        flat = up.flatten(1)
        mn = flat.amin(dim=1)[:, None, None, None]
        mx = flat.amax(dim=1)[:, None, None, None]
        return (up - mn) / (mx - mn + 1e-8), (mx == mn).flatten()

    def channel_scores(self, ctx: LayerContext, channels: Sequence[int] | Tensor | None = None) -> Tensor:
        """``(B, n_channels)`` scores of the input masked by each channel (all channels by default)."""
        a, x = ctx.activations, ctx.inputs
        bs = self._batch_size(x.device)
        b_, c_ = a.shape[:2]
        size = (int(x.shape[-2]), int(x.shape[-1]))
        chans = torch.arange(c_, device=a.device) if channels is None else torch.as_tensor(channels, device=a.device)
        out = torch.empty(b_, len(chans), dtype=a.dtype, device=a.device)
        bb, jj = torch.meshgrid(torch.arange(b_, device=a.device), torch.arange(len(chans), device=a.device), indexing="ij")
        bb, jj = bb.reshape(-1), jj.reshape(-1)
        # Channels constant over the feature map may still upsample to exactly-constant maps (mask 0):
        # check those on the upsampled map, as pytorch-grad-cam's normalisation sees it.
        flat = a[bb, chans[jj]].flatten(1)
        maybe = (flat.amax(dim=1) == flat.amin(dim=1)).nonzero()[:, 0]
        constant = torch.zeros(len(bb), dtype=torch.bool, device=a.device)
        for chunk in maybe.split(bs):
            constant[chunk] = self._masks(a[bb[chunk], chans[jj[chunk]]], size)[1]
        if constant.any():
            idx = constant.nonzero()[:, 0]
            zero_logits = ctx.run_model(torch.zeros_like(x[:1]))
            out[bb[idx], jj[idx]] = ctx.target.row_scores(zero_logits.expand(len(idx), -1), bb[idx]).to(a.dtype)
        live = (~constant).nonzero()[:, 0]
        for chunk in live.split(bs):
            b, j = bb[chunk], jj[chunk]
            masks, _ = self._masks(a[b, chans[j]], size)
            logits = ctx.run_model(x[b] * masks)
            out[b, j] = ctx.target.row_scores(logits, b).to(a.dtype)
        return out

    def __call__(self, ctx: LayerContext) -> Tensor:
        weights = torch.softmax(self.channel_scores(ctx), dim=-1)
        return torch.einsum("bc,bchw->bhw", weights, ctx.activations)
