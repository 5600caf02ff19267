"""Eigen-CAM: projection of the activations on their first principal component (gradient-free)."""

from __future__ import annotations

import torch
from torch import Tensor

from hemwsl.cam.base import CAMMethod
from hemwsl.errors import check_choice

__all__ = ["EigenCAM", "first_component_projection"]


def first_component_projection(t: Tensor, sign: str = "maxabs") -> Tensor:
    """Project each sample's ``(C, h, w)`` map on its first principal component.

    As pytorch-grad-cam's ``get_2d_projection``: the ``(h*w, C)`` matrix ``M`` (positions x channels) is
    centred per channel (mean over positions, NaN set to 0) and projected on its first right singular
    vector, ``p = M v_1``. Computed on the tensor's device in float64 from the eigen-decomposition of the
    smaller Gram matrix (``M^T M`` or ``M M^T``; ``p = sqrt(lambda_1) u_1`` in the latter case), batched.

    The sign of a singular vector is arbitrary (pytorch-grad-cam leaves it to LAPACK). With
    ``sign="maxabs"`` the projection is flipped when ``|min| > |max|`` so that the dominant response is
    positive (Chung & Ying, Seg-Eigen-CAM, Appl. Sci. 2025, Eq. 13; pytorch-grad-cam's
    ``get_2d_projection_with_sign_correction``); ``sign="none"`` keeps the eigen-solver's sign.

    Args:
        t: ``(B, C, h, w)``.
        sign: ``"maxabs"`` or ``"none"``.

    Returns:
        ``(B, h, w)`` projections, dtype of ``t``.
    """
    check_choice("eigen sign rule", sign, ("maxabs", "none"))
    b, c, h, w = t.shape
    m = torch.nan_to_num(t, nan=0.0).reshape(b, c, h * w).transpose(1, 2).double()  # (B, hw, C)
    m = m - m.mean(dim=1, keepdim=True)
    if h * w >= c:
        _, vecs = torch.linalg.eigh(m.transpose(1, 2) @ m)  # (B, C, C), ascending eigenvalues
        proj = m @ vecs[:, :, -1:]  # (B, hw, 1)
        proj = proj[..., 0]
    else:
        vals, vecs = torch.linalg.eigh(m @ m.transpose(1, 2))  # (B, hw, hw)
        proj = vecs[:, :, -1] * vals[:, -1:].clamp_min(0).sqrt()
    if sign == "maxabs":
        flip = proj.amin(dim=1).abs() > proj.amax(dim=1).abs()
        proj = torch.where(flip[:, None], -proj, proj)
    return proj.reshape(b, h, w).to(t.dtype)


class EigenCAM(CAMMethod):
    """Eigen-CAM (Muhammad & Yeasin 2020): gradient-free, class-agnostic.

    Map ``ReLU(first-principal-component projection of the activations)``, see
    :func:`first_component_projection`; pytorch-grad-cam's ``EigenCAM`` up to the sign of the singular
    vector (which it leaves arbitrary; hemwsl fixes it with ``sign="maxabs"``).

    Args:
        sign: ``"maxabs"`` (default) or ``"none"``.

    Reference:
        Muhammad, Yeasin, "Eigen-CAM: Class Activation Map using Principal Components", IJCNN 2020.
    """

    name = "eigencam"
    paper = "Muhammad & Yeasin, Eigen-CAM: Class Activation Map using Principal Components, IJCNN 2020"
    needs_gradients = False

    def __init__(self, sign: str = "maxabs") -> None:
        check_choice("eigen sign rule", sign, ("maxabs", "none"))
        self.sign = sign

    def compute(self, activations: Tensor, gradients: Tensor | None) -> Tensor:
        return first_component_projection(activations, self.sign)
