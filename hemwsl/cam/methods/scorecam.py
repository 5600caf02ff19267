"""Score-CAM: channel weights from the scores of the input masked by each upsampled channel."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from hemwsl.cam.base import CAMMethod, LayerContext
from hemwsl.errors import HemwslInputError

__all__ = ["FasterScoreCAM", "ScoreCAM"]


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
        a = ctx.activations
        b_, c_ = a.shape[:2]
        chans = torch.arange(c_, device=a.device) if channels is None else torch.as_tensor(channels, device=a.device)
        bb, jj = torch.meshgrid(torch.arange(b_, device=a.device), torch.arange(len(chans), device=a.device), indexing="ij")
        return self.pair_scores(ctx, bb.reshape(-1), chans[jj.reshape(-1)]).view(b_, len(chans))

    def pair_scores(self, ctx: LayerContext, slices: Tensor, channels: Tensor) -> Tensor:
        """``(n,)`` scores of slice ``slices[i]`` masked by its channel ``channels[i]``, for explicit pairs (the
        variants that score a different channel subset per slice use it)."""
        a, x = ctx.activations, ctx.inputs
        bs = self._batch_size(x.device)
        size = (int(x.shape[-2]), int(x.shape[-1]))
        bb, cc = slices.to(a.device), channels.to(a.device)
        out = torch.empty(len(bb), dtype=a.dtype, device=a.device)
        # Channels constant over the feature map may still upsample to exactly-constant maps (mask 0):
        # check those on the upsampled map, as pytorch-grad-cam's normalisation sees it.
        flat = a[bb, cc].flatten(1)
        maybe = (flat.amax(dim=1) == flat.amin(dim=1)).nonzero()[:, 0]
        constant = torch.zeros(len(bb), dtype=torch.bool, device=a.device)
        for chunk in maybe.split(bs):
            constant[chunk] = self._masks(a[bb[chunk], cc[chunk]], size)[1]
        if constant.any():
            idx = constant.nonzero()[:, 0]
            zero_logits = ctx.run_model(torch.zeros_like(x[:1]))
            out[idx] = ctx.target.row_scores(zero_logits.expand(len(idx), -1), bb[idx]).to(a.dtype)
        live = (~constant).nonzero()[:, 0]
        for chunk in live.split(bs):
            b, c = bb[chunk], cc[chunk]
            masks, _ = self._masks(a[b, c], size)
            logits = ctx.run_model(x[b] * masks)
            out[chunk] = ctx.target.row_scores(logits, b).to(a.dtype)
        return out

    def __call__(self, ctx: LayerContext) -> Tensor:
        weights = torch.softmax(self.channel_scores(ctx), dim=-1)
        return torch.einsum("bc,bchw->bhw", weights, ctx.activations)


class FasterScoreCAM(ScoreCAM):
    """Faster Score-CAM: Score-CAM on each slice's ``top_k`` channels of largest spatial variance.

    A documented approximation of :class:`ScoreCAM`, never a silent substitute: per slice, the ``top_k``
    channels of the layer whose activation maps vary most over positions are scored (input masked by each, one
    forward per channel as in Score-CAM); their softmax weights form the map and every other channel weighs 0.
    It costs ``top_k / C`` of exact Score-CAM. ``top_k >= C`` is exact Score-CAM (tested).

    Args:
        top_k: channels scored per slice (default 32).
        batch_size: masked inputs per forward (see :class:`ScoreCAM`).

    Reference:
        Wang et al. 2020 (Score-CAM, CVPR Workshops); the "Faster Score-CAM" variant of the Score-CAM authors'
        public code, which keeps the channels of largest variance.
    """

    name = "fasterscorecam"
    paper = "Wang et al. 2020, Score-CAM, CVPR Workshops; Faster Score-CAM: its top-k channels by variance"
    needs_gradients = False

    def __init__(self, top_k: int = 32, batch_size: int | None = None) -> None:
        super().__init__(batch_size=batch_size)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise HemwslInputError(f"top_k must be a positive int, got {top_k!r}")
        self.top_k = top_k

    def __call__(self, ctx: LayerContext) -> Tensor:
        a = ctx.activations
        b_, c_ = a.shape[:2]
        k = min(self.top_k, c_)
        top = a.flatten(2).float().var(dim=2).topk(k, dim=1).indices  # (B, k)
        slices = torch.arange(b_, device=a.device).repeat_interleave(k)
        scores = self.pair_scores(ctx, slices, top.reshape(-1)).view(b_, k)
        weights = torch.zeros(b_, c_, dtype=a.dtype, device=a.device)
        weights.scatter_(1, top, torch.softmax(scores, dim=-1).to(a.dtype))
        return torch.einsum("bc,bchw->bhw", weights, a)
