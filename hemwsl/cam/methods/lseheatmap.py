"""The heatmap of an LSE heatmap network: its own score map at a decoder level (Chen & Kuo 2026)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hemwsl.cam.base import CAMMethod, LayerContext
from hemwsl.errors import HemwslInputError

__all__ = ["LSEHeatmap"]


class LSEHeatmap(CAMMethod):
    """Score map of an LSE heatmap network (:class:`hemwsl.networks.lse.LSEHeatmapNet`).

    At target layer ``levels.i.conv`` the map of class ``k`` is ``sigmoid(f_i[k])``, the level's
    classification conv applied to the layer's features: the per-position probability whose LSE pooling
    is the level's logit (Chen & Kuo 2026, "heatmaps are generated just before the top LSE pooling
    layer"; level 0 is the finest, 1/4 of the input). Gradient-free, no ReLU (already in [0, 1]); needs
    class-index targets. Every other CAM method (GradCAM on the decoder's last level, as Chen & Kuo
    also use) runs at the same layers.

    Reference:
        Chen & Kuo 2026, U-shaped LSE heatmap network (section 3.1).
    """

    name = "lse_heatmap"
    paper = "Chen & Kuo 2026, U-shaped network with Log-Sum-Exp pooling (score maps before LSE pooling)"
    needs_gradients = False
    relu = False

    def inapplicable(self, model: nn.Module, layer: str) -> str:
        from hemwsl.networks.lse import LSE_LEVEL_LAYERS

        if not callable(getattr(model, "level_classifier", None)):
            return f"it needs an LSE heatmap network (an lse_* registry name), not {type(model).__name__}"
        if layer not in LSE_LEVEL_LAYERS:
            return f"it is defined at the decoder levels {', '.join(LSE_LEVEL_LAYERS)}"
        return ""

    def __call__(self, ctx: LayerContext) -> Tensor:
        why = self.inapplicable(ctx.model, ctx.layer)
        if why:
            raise HemwslInputError(f"lse_heatmap at {ctx.layer!r}: {why}")
        head = ctx.model.level_classifier
        if ctx.target.indices is None:
            raise HemwslInputError("lse_heatmap needs class-index targets (int, ClassTarget or one int per sample)")
        conv = head(ctx.layer)
        scores = conv(ctx.activations)  # (B, K, h, w)
        idx = ctx.target.indices.to(scores.device)
        return torch.sigmoid(scores[torch.arange(scores.shape[0], device=scores.device), idx])
