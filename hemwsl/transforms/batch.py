"""Batched, on-device geometric augmentation for training.

The per-sample MONAI preset (:func:`hemwsl.transforms.augmentation_preset`) resamples every slice on
the CPU in the data loader, which bounds training throughput on small machines. :class:`BatchRandAffine`
draws the same family of transforms (flips, rotation, isotropic scale, shift) independently per sample
and applies them to a whole batch with one ``affine_grid`` + ``grid_sample`` on the batch's device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hemwsl.errors import HemwslInputError

__all__ = ["BatchRandAffine", "BatchWindows", "random_affine_matrices"]


def random_affine_matrices(
    batch: int,
    prob: float = 0.5,
    rotate_range_deg: float = 15.0,
    shift: float = 0.1,
    scale: float = 0.1,
    flips: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(B, 2, 3) matrices for ``F.affine_grid`` (normalised coordinates), each part applied with ``prob``.

    Per sample: flip along each axis (prob each), rotation by U(-r, r) degrees, isotropic scale by
    U(1 - scale, 1 + scale), shift by U(-shift, shift) of the image size per axis.
    """
    def draw(*shape):
        return torch.rand(*shape, generator=generator)

    def gate():
        return (draw(batch) < prob).float()

    angle = (draw(batch) * 2 - 1) * math.radians(rotate_range_deg) * gate()
    zoom = 1 + (draw(batch) * 2 - 1) * scale * gate()
    move = (draw(batch, 2) * 2 - 1) * 2 * shift * gate()[:, None]  # normalised coords span 2
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    theta[:, :, 2] = move
    if flips:
        fx = 1 - 2 * gate()
        fy = 1 - 2 * gate()
        theta[:, :, 0] *= fx[:, None]
        theta[:, :, 1] *= fy[:, None]
    return theta


class BatchRandAffine(torch.nn.Module):
    """Random flips, rotation, scale and shift per sample of a (B, C, H, W) batch, on its device.

    Args:
        prob: probability of each part (flip per axis, rotation, scale, shift).
        rotate_range_deg: maximum rotation in degrees.
        shift: maximum shift as a fraction of the image size.
        scale: maximum relative zoom.
        flips: enable flips.
        seed: seed of the CPU generator drawing the parameters (deterministic runs).

    ``forward(images, masks=None)`` returns the transformed images (bilinear, zero padding), and the
    masks transformed by the same draw (nearest) when given.
    """

    def __init__(self, prob: float = 0.5, rotate_range_deg: float = 15.0, shift: float = 0.1, scale: float = 0.1,
                 flips: bool = True, seed: int = 0) -> None:
        super().__init__()
        if not 0.0 <= prob <= 1.0:
            raise HemwslInputError(f"prob must be in [0, 1], got {prob}")
        if rotate_range_deg < 0 or shift < 0 or not 0 <= scale < 1:
            raise HemwslInputError(
                f"rotate_range_deg and shift must be >= 0 and scale in [0, 1), got {rotate_range_deg}, {shift}, {scale}"
            )
        self.prob, self.rotate_range_deg, self.shift, self.scale, self.flips = prob, rotate_range_deg, shift, scale, flips
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, images: torch.Tensor, masks: torch.Tensor | None = None):
        if images.ndim != 4:
            raise HemwslInputError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
        theta = random_affine_matrices(images.shape[0], self.prob, self.rotate_range_deg, self.shift, self.scale,
                                       self.flips, self.generator).to(images.device, torch.float32)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out = out.to(images.dtype)
        if masks is None:
            return out
        m = F.grid_sample(masks.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
        return out, m.to(masks.dtype)


class BatchWindows(torch.nn.Module):
    """CT windows of a (B, k, H, W) HU batch on its device -> (B, k * len(windows), H, W), window-major
    (the channel order of :class:`hemwsl.transforms.MultiWindow`)."""

    def __init__(self, windows) -> None:
        super().__init__()
        from hemwsl.transforms.array import Window, resolve_window

        if not windows:
            raise HemwslInputError("windows must name at least one CT window")
        self.windows = [Window(*resolve_window(w)) for w in windows]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.as_tensor(w(x.float())) for w in self.windows], dim=1)
