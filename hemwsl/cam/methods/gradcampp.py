"""Grad-CAM++: channel weights from second/third-order gradient terms (exponential score)."""

from __future__ import annotations

import torch
from torch import Tensor

from hemwsl.cam.base import CAMMethod

__all__ = ["GradCAMPlusPlus"]


class GradCAMPlusPlus(CAMMethod):
    """Grad-CAM++ (Chattopadhay et al. 2018), Eq. 19 with the exponential of the score.

    ``alpha_cij = g_cij^2 / (2 g_cij^2 + (sum_ab A_cab) g_cij^3 + eps)`` (0 where ``g_cij == 0``),
    ``w_c = sum_ij alpha_cij ReLU(g_cij)``, map ``ReLU(sum_c w_c A_c)`` with ``g = dS/dA``; exactly
    pytorch-grad-cam's ``GradCAMPlusPlus`` (``eps = 1e-6``).

    MONAI's ``GradCAMpp`` sums ``A * g^3`` over space instead of multiplying ``sum A`` by the local
    ``g^3`` and scales by ``exp(S)``; both agree (up to scale) where the gradient is spatially constant,
    i.e. at the layer feeding global average pooling, and differ at earlier layers.

    Args:
        eps: added to the denominator of ``alpha`` (pytorch-grad-cam: 1e-6, MONAI: 1e-7).

    Reference:
        Chattopadhay, Sarkar, Howlader, Balasubramanian, "Grad-CAM++: Generalized Gradient-based
        Visual Explanations for Deep Convolutional Networks", WACV 2018.
    """

    name = "gradcampp"
    paper = "Chattopadhay et al., Grad-CAM++: Generalized Gradient-based Visual Explanations for Deep Convolutional Networks, WACV 2018"
    needs_gradients = True

    def __init__(self, eps: float = 1e-6) -> None:
        self.eps = float(eps)

    def weigh(self, activations: Tensor, gradients: Tensor | None) -> Tensor:
        g = gradients
        g2 = g * g
        g3 = g2 * g
        sum_a = activations.sum(dim=(2, 3), keepdim=True)
        alpha = g2 / (2 * g2 + sum_a * g3 + self.eps)
        alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
        return (torch.relu(g) * alpha).sum(dim=(2, 3))
