"""CAM: the closed-form class activation map of a global-average-pooling + Linear head."""

from __future__ import annotations

import torch
from torch import Tensor

from hemwsl.cam.base import CAMMethod, LayerContext
from hemwsl.errors import HemwslInputError

__all__ = ["CAM"]


class CAM(CAMMethod):
    """CAM (Zhou et al. 2016).

    For a network ending in ``logits = W mean_hw(A) + b``, the map of class ``k`` is
    ``sum_c W[k, c] A_c`` (no bias, as in the paper; MONAI's ``CAM`` adds the bias, a constant that
    min-max normalisation removes). Gradient-free: the weights are the final Linear's
    (:func:`hemwsl.networks.classifier_head`). Defined only at the layer feeding the pooling (the
    model's deepest target layer) and for class-index targets; the engine verifies on each batch that
    ``logits == Linear(mean_hw(A))``. At that layer Grad-CAM equals ``ReLU(CAM) / (h * w)``.

    Reference:
        Zhou, Khosla, Lapedriza, Oliva, Torralba, "Learning Deep Features for Discriminative
        Localization", CVPR 2016.
    """

    name = "cam"
    paper = "Zhou et al., Learning Deep Features for Discriminative Localization, CVPR 2016"
    needs_gradients = False
    head_only = True

    def __call__(self, ctx: LayerContext) -> Tensor:
        if ctx.head_linear is None:
            raise HemwslInputError(
                f"cam (Zhou et al. 2016) needs the layer feeding global average pooling + Linear; "
                f"not available at {ctx.layer!r}: {ctx.head_note}"
            )
        if ctx.target.indices is None:
            raise HemwslInputError("cam needs class-index targets (int, ClassTarget or one int per sample), not a callable")
        weights = ctx.head_linear.weight[ctx.target.indices.to(ctx.activations.device)]  # (B, C)
        return torch.einsum("bc,bchw->bhw", weights.to(ctx.activations.dtype), ctx.activations)
