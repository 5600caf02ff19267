"""Eigen-Grad-CAM: first principal component of gradient x activation."""

from __future__ import annotations

from torch import Tensor

from hemwsl.cam.base import CAMMethod
from hemwsl.cam.methods.eigencam import first_component_projection
from hemwsl.errors import check_choice

__all__ = ["EigenGradCAM"]


class EigenGradCAM(CAMMethod):
    """Eigen-Grad-CAM: Eigen-CAM (Muhammad & Yeasin 2020) applied to ``gradients * activations``.

    Class-specific variant introduced by pytorch-grad-cam (``EigenGradCAM``); same sign rule as
    :class:`~hemwsl.cam.methods.eigencam.EigenCAM`.

    Args:
        sign: ``"maxabs"`` (default) or ``"none"``.

    Reference:
        Muhammad, Yeasin, "Eigen-CAM: Class Activation Map using Principal Components", IJCNN 2020;
        Gildenblat et al., pytorch-grad-cam, 2021.
    """

    name = "eigengradcam"
    paper = "Muhammad & Yeasin, Eigen-CAM, IJCNN 2020 (on gradients x activations, as in pytorch-grad-cam)"
    needs_gradients = True

    def __init__(self, sign: str = "maxabs") -> None:
        check_choice("eigen sign rule", sign, ("maxabs", "none"))
        self.sign = sign

    def compute(self, activations: Tensor, gradients: Tensor | None) -> Tensor:
        return first_component_projection(gradients * activations, self.sign)
