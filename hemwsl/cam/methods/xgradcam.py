"""XGrad-CAM: gradients weighted by the normalised activations."""

from __future__ import annotations

from torch import Tensor

from hemwsl.cam.base import CAMMethod

__all__ = ["XGradCAM"]


class XGradCAM(CAMMethod):
    """XGrad-CAM (Fu et al. 2020).

    ``w_c = sum_ij g_cij A_cij / (sum_ab A_cab + eps)``, map ``ReLU(sum_c w_c A_c)``; exactly
    pytorch-grad-cam's ``XGradCAM`` (``eps = 1e-7``).

    Reference:
        Fu, Hu, Dong, Li, Wang, "Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation
        of CNNs", BMVC 2020.
    """

    name = "xgradcam"
    paper = "Fu et al., Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation of CNNs, BMVC 2020"
    needs_gradients = True

    def __init__(self, eps: float = 1e-7) -> None:
        self.eps = float(eps)

    def weigh(self, activations: Tensor, gradients: Tensor | None) -> Tensor:
        sum_a = activations.sum(dim=(2, 3), keepdim=True)
        return (gradients * activations / (sum_a + self.eps)).sum(dim=(2, 3))
