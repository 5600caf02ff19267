"""Group-CAM: Grad-CAM maps of channel groups scored by the input they reveal over a blurred baseline."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from hemwsl.cam.base import CAMMethod, LayerContext
from hemwsl.errors import HemwslInputError

__all__ = ["GroupCAM"]


def _gaussian_blur(x: Tensor, kernel: int, sigma: float) -> Tensor:
    """torchvision's Gaussian blur of ``(B, C, H, W)`` (reflect padding, as the authors' ``GaussianBlur(51, 50)``),
    the kernel cut to the largest odd size the image can reflect-pad (``< 2 * min(H, W)``)."""
    from torchvision.transforms.functional import gaussian_blur

    k = min(int(kernel), 2 * min(int(x.shape[-2]), int(x.shape[-1])) - 1)
    k -= 1 - k % 2
    return x if k <= 1 else gaussian_blur(x, [k, k], [sigma, sigma])


class GroupCAM(CAMMethod):
    """Group-CAM (Zhang, Rao & Yang 2021).

    1. Grad-CAM weights ``alpha_c = mean_hw(dS/dA_c)``; the channels are split into ``groups`` consecutive
       groups (``torch.chunk``) and each group's map is ``M_g = ReLU(sum_{c in g} alpha_c A_c)``;
    2. denoising: values of ``M_g`` at or below its ``percentile`` (70) are set to 0;
    3. ``M_g`` is upsampled to the input (bilinear) and min-max scaled to ``N_g``; the network scores the input
       revealed by it over a blurred copy ``X_b`` (Gaussian, kernel 51, sigma 50, as the authors' code):
       ``X_g = X * N_g + X_b * (1 - N_g)``;
    4. ``w_g = ReLU(p(X_g) - p(X_b))`` with ``p`` the target's probability (the sigmoid of its logit: hemwsl's
       heads are sigmoid heads, where the paper takes the softmax), and the map is ``ReLU(sum_g w_g M_g)``
       (at the layer's resolution: upsampling is linear, so this is the paper's input-size sum, downsampled).

    Groups whose map is constant are skipped (weight 0), as in the authors' code. ``groups + 1`` forwards per
    slice instead of Score-CAM's ``C``.

    Args:
        groups: channel groups (the paper's default 32).
        percentile: denoising percentile of each group map (the paper's 70; 0 keeps every positive value).
        blur_kernel, blur_sigma: the baseline's Gaussian blur (cut to the largest odd size below the input
            size for small inputs).
        batch_size: revealed inputs per forward.

    Reference:
        Zhang, Rao, Yang, "Group-CAM: Group Score-Weighted Visual Explanations for Deep Convolutional Networks",
        arXiv 2103.13859, 2021.
    """

    name = "groupcam"
    paper = "Zhang, Rao & Yang, Group-CAM: Group Score-Weighted Visual Explanations for Deep Convolutional Networks, arXiv 2021"
    needs_gradients = True

    def __init__(self, groups: int = 32, percentile: float = 70.0, blur_kernel: int = 51, blur_sigma: float = 50.0,
                 batch_size: int = 32) -> None:
        for key, value in (("groups", groups), ("blur_kernel", blur_kernel), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise HemwslInputError(f"{key} must be a positive int, got {value!r}")
        if not 0.0 <= float(percentile) < 100.0:
            raise HemwslInputError(f"percentile must be in [0, 100), got {percentile!r}")
        if not float(blur_sigma) > 0:
            raise HemwslInputError(f"blur_sigma must be > 0, got {blur_sigma!r}")
        self.groups, self.percentile = groups, float(percentile)
        self.blur_kernel, self.blur_sigma, self.batch_size = blur_kernel, float(blur_sigma), batch_size

    def group_maps(self, ctx: LayerContext) -> Tensor:
        """``(B, G, h, w)`` denoised group maps ``M_g``."""
        a, g = ctx.activations, ctx.gradients
        weighted = g.mean(dim=(2, 3), keepdim=True) * a
        maps = torch.relu(torch.stack([chunk.sum(1) for chunk in weighted.chunk(self.groups, dim=1)], dim=1))
        if self.percentile > 0:
            thr = torch.quantile(maps.flatten(2).float(), self.percentile / 100.0, dim=2).to(maps.dtype)
            maps = torch.where(maps > thr[..., None, None], maps, torch.zeros_like(maps))
        return maps

    def __call__(self, ctx: LayerContext) -> Tensor:
        x = ctx.inputs
        maps = self.group_maps(ctx)
        b_, g_ = maps.shape[:2]
        size = (int(x.shape[-2]), int(x.shape[-1]))
        blurred = _gaussian_blur(x, self.blur_kernel, self.blur_sigma)
        rows = torch.arange(b_, device=x.device)
        base = torch.sigmoid(ctx.target.row_scores(ctx.run_model(blurred), rows))
        flat = maps.flatten(2)
        live = (flat.amax(dim=2) > flat.amin(dim=2)).nonzero()  # (n, 2): (slice, group) with a non-constant map
        weights = torch.zeros(b_, g_, dtype=maps.dtype, device=x.device)
        for chunk in live.split(self.batch_size):
            b, k = chunk[:, 0], chunk[:, 1]
            up = F.interpolate(maps[b, k][:, None], size=size, mode="bilinear", align_corners=False)
            mn = up.flatten(1).amin(dim=1)[:, None, None, None]
            mx = up.flatten(1).amax(dim=1)[:, None, None, None]
            norm = (up - mn) / (mx - mn).clamp_min(1e-12)
            revealed = x[b] * norm + blurred[b] * (1 - norm)
            p = torch.sigmoid(ctx.target.row_scores(ctx.run_model(revealed), b))
            weights[b, k] = torch.relu(p - base[b]).to(maps.dtype)
        return torch.relu(torch.einsum("bg,bghw->bhw", weights, maps))
