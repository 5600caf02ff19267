"""HiResCAM: element-wise gradient x activation, summed over channels."""

from __future__ import annotations

from torch import Tensor

from hemwsl.cam.base import CAMMethod

__all__ = ["HiResCAM"]


class HiResCAM(CAMMethod):
    """HiResCAM (Draelos & Carin 2020).

    Map ``ReLU(sum_c g_c * A_c)`` (element-wise, no spatial averaging of the gradient); exactly
    pytorch-grad-cam's ``HiResCAM``. Faithful for networks ending in global pooling + Linear.

    Reference:
        Draelos, Carin, "Use HiResCAM instead of Grad-CAM for faithful explanations of convolutional
        neural networks", arXiv:2011.08891, 2020.
    """

    name = "hirescam"
    paper = "Draelos & Carin, Use HiResCAM instead of Grad-CAM for faithful explanations of convolutional neural networks, arXiv:2011.08891, 2020"
    needs_gradients = True

    def compute(self, activations: Tensor, gradients: Tensor | None) -> Tensor:
        return (gradients * activations).sum(dim=1)
