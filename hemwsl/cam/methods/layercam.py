"""LayerCAM: activations weighted by their positive gradients, element-wise."""

from __future__ import annotations

import torch
from torch import Tensor

from hemwsl.cam.base import CAMMethod

__all__ = ["LayerCAM"]


class LayerCAM(CAMMethod):
    """LayerCAM (Jiang et al. 2021).

    Map ``ReLU(sum_c ReLU(g_c) * A_c)``; exactly pytorch-grad-cam's ``LayerCAM``. Designed for shallow
    layers as well as deep ones.

    Reference:
        Jiang, Zhang, Hou, Cheng, Wei, "LayerCAM: Exploring Hierarchical Class Activation Maps for
        Localization", IEEE Transactions on Image Processing 30, 2021.
    """

    name = "layercam"
    paper = "Jiang et al., LayerCAM: Exploring Hierarchical Class Activation Maps for Localization, IEEE TIP 2021"
    needs_gradients = True

    def compute(self, activations: Tensor, gradients: Tensor | None) -> Tensor:
        return (torch.relu(gradients) * activations).sum(dim=1)
