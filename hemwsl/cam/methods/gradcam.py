"""Grad-CAM: channel weights are the spatially averaged gradients."""

from __future__ import annotations

from torch import Tensor

from hemwsl.cam.base import CAMMethod

__all__ = ["GradCAM"]


class GradCAM(CAMMethod):
    """Grad-CAM (Selvaraju et al. 2017).

    ``w_c = mean_ij dS/dA_cij``, map ``ReLU(sum_c w_c A_c)``; as pytorch-grad-cam's ``GradCAM`` and
    MONAI's ``GradCAM``.

    Reference:
        Selvaraju, Cogswell, Das, Vedantam, Parikh, Batra, "Grad-CAM: Visual Explanations from Deep
        Networks via Gradient-based Localization", ICCV 2017.
    """

    name = "gradcam"
    paper = "Selvaraju et al., Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization, ICCV 2017"
    needs_gradients = True

    def weigh(self, activations: Tensor, gradients: Tensor | None) -> Tensor:
        return gradients.mean(dim=(2, 3))
