"""Grad-CAM element-wise: HiResCAM with a ReLU inside the channel sum."""

from __future__ import annotations

import torch
from torch import Tensor

from hemwsl.cam.base import CAMMethod

__all__ = ["GradCAMElementWise"]


class GradCAMElementWise(CAMMethod):
    """Element-wise Grad-CAM (pytorch-grad-cam's ``GradCAMElementWise``).

    Map ``sum_c ReLU(g_c * A_c)`` (then the engine's ReLU, a no-op here). A variant of HiResCAM
    (Draelos & Carin 2020) introduced by pytorch-grad-cam; it has no paper of its own.

    Reference:
        Gildenblat and contributors, "PyTorch library for CAM methods", github.com/jacobgil/pytorch-grad-cam,
        2021; Draelos & Carin, arXiv:2011.08891, 2020.
    """

    name = "gradcam_elementwise"
    paper = "Gildenblat et al., PyTorch library for CAM methods (pytorch-grad-cam), 2021; variant of HiResCAM (Draelos & Carin 2020)"
    needs_gradients = True

    def compute(self, activations: Tensor, gradients: Tensor | None) -> Tensor:
        return torch.relu(gradients * activations).sum(dim=1)
