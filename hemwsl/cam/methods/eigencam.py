"""Eigen-CAM: projection of the activations on their first principal component (gradient-free)."""

from __future__ import annotations

import torch
from torch import Tensor

from hemwsl.cam.base import CAMMethod
from hemwsl.errors import check_choice

__all__ = ["EigenCAM", "first_component_projection", "top_eigenvector"]


def first_component_projection(t: Tensor, sign: str = "maxabs") -> Tensor:
    """Project each sample's ``(C, h, w)`` map on its first principal component.

    As pytorch-grad-cam's ``get_2d_projection``: the ``(h*w, C)`` matrix ``M`` (positions x channels) is
    centred per channel (mean over positions, NaN set to 0) and projected on its first right singular
    vector, ``p = M v_1``. Computed on the tensor's device in float64 from the top eigenvector of the
    smaller Gram matrix (``M^T M`` or ``M M^T``; ``p = sqrt(lambda_1) u_1`` in the latter case), batched:
    by power iteration (:func:`top_eigenvector`), which is a few batched matrix products where a batched
    ``eigh`` is slow on GPUs, with ``eigh`` for any sample whose iteration does not converge.

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
        vec, _ = top_eigenvector(m.transpose(1, 2) @ m)  # (B, C)
        proj = (m @ vec[:, :, None])[..., 0]  # (B, hw)
    else:
        vec, val = top_eigenvector(m @ m.transpose(1, 2))  # (B, hw)
        proj = vec * val[:, None].clamp_min(0).sqrt()
    if sign == "maxabs":
        flip = proj.amin(dim=1).abs() > proj.amax(dim=1).abs()
        proj = torch.where(flip[:, None], -proj, proj)
    return proj.reshape(b, h, w).to(t.dtype)


def top_eigenvector(g: Tensor, max_iter: int = 256, tol: float = 1e-11) -> tuple[Tensor, Tensor]:
    """Eigenvector and eigenvalue of the largest eigenvalue of each symmetric PSD matrix of ``g``.

    Power iteration on ``(G / tr G)^4`` from a fixed pseudo-random start, stopped when every sample's
    relative residual ``|G v - lambda v| / lambda`` is below ``tol``; samples that have not converged
    after ``max_iter`` products (nearly equal top eigenvalues) and all-zero matrices get
    ``torch.linalg.eigh``'s answer instead. The sign of the vector is arbitrary, as any eigen-solver's.

    Args:
        g: ``(B, n, n)`` symmetric positive semi-definite (a Gram matrix), float64 for CAM accuracy.
        max_iter: most products with ``(G / tr G)^4``.
        tol: relative residual accepted.

    Returns:
        ``(B, n)`` unit vectors and ``(B,)`` eigenvalues.
    """
    b, n, _ = g.shape
    trace = g.diagonal(dim1=1, dim2=2).sum(-1)  # >= lambda_1 >= 0
    ok = trace > 0
    gs = g / torch.where(ok, trace, torch.ones_like(trace))[:, None, None]
    g4 = gs @ gs
    g4 = g4 @ g4
    gen = torch.Generator(device=g.device).manual_seed(0)
    v = torch.rand(b, n, 1, generator=gen, device=g.device, dtype=g.dtype) + 0.5
    v = v / v.norm(dim=1, keepdim=True)
    done = torch.zeros(b, dtype=torch.bool, device=g.device)
    for i in range(max_iter):
        w = g4 @ v
        v = w / w.norm(dim=1, keepdim=True).clamp_min(torch.finfo(g.dtype).tiny)
        if i % 8 == 7 or i == max_iter - 1:
            gv = gs @ v
            lam = (v * gv).sum(dim=1, keepdim=True)
            res = (gv - lam * v).norm(dim=1)[:, 0] / lam[:, 0, 0].clamp_min(torch.finfo(g.dtype).tiny)
            done = ok & (res < tol)
            if bool(done.all()):
                break
    v = v[..., 0]
    val = (v * (g @ v[..., None])[..., 0]).sum(-1)
    redo = ~done
    if bool(redo.any()):
        vals, vecs = torch.linalg.eigh(g[redo])
        v = v.clone()
        v[redo] = vecs[:, :, -1]
        val = val.clone()
        val[redo] = vals[:, -1]
    return v, val


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
