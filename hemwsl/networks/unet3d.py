"""Anisotropic 3D U-Net (MONAI ``DynUNet``) for thick-slice head CT.

Head CT volumes such as CT-ICH have about 0.5 mm in-plane pixels and 5 mm slices. Following the
nnU-Net rule for anisotropic data (Isensee et al., "nnU-Net: a self-configuring method for deep
learning-based biomedical image segmentation", Nature Methods 2021), the first levels use in-plane
kernels (3 x 3 x 1) and in-plane down-sampling (2 x 2 x 1) only, until the voxels are about
isotropic; deeper levels use 3 x 3 x 3 kernels and down-sample all three axes. Used by
``bundles/ich_unet3d`` (the 3D U-Net of Ramananda and Sundaresan's weakly supervised ICH
segmentation, trained on CAM pseudo-labels).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hemwsl.errors import HemwslInputError

__all__ = ["anisotropic_layout", "patch_divisor", "anisotropic_dynunet"]


def anisotropic_layout(
    n_levels: int, z_stride_from: int = 2, z_kernel_from: int = 1
) -> tuple[list[list[int]], list[list[int]]]:
    """Kernel sizes and strides of an ``n_levels`` DynUNet for (X, Y, Z) volumes with thick Z.

    Level 0 keeps the input resolution (stride 1). Level ``i >= 1`` halves X and Y, and halves Z only
    from level ``z_stride_from`` on. Kernels are 3 x 3 x 1 below level ``z_kernel_from`` and
    3 x 3 x 3 from it on.

    Example: ``anisotropic_layout(4, 2, 1)`` gives kernels ``[[3,3,1],[3,3,3],[3,3,3],[3,3,3]]`` and
    strides ``[[1,1,1],[2,2,1],[2,2,2],[2,2,2]]``.
    """
    if n_levels < 2:
        raise HemwslInputError(f"a U-Net needs at least 2 levels (features: at least 2 channel counts, e.g. "
                               f"[16, 32, 64]), got {n_levels}")
    if z_stride_from < 1:
        raise HemwslInputError(f"z_stride_from must be >= 1, got {z_stride_from}")
    if z_kernel_from < 0:
        raise HemwslInputError(f"z_kernel_from must be >= 0, got {z_kernel_from}")
    kernels = [[3, 3, 3 if i >= z_kernel_from else 1] for i in range(n_levels)]
    strides = [[1, 1, 1]] + [[2, 2, 2 if i >= z_stride_from else 1] for i in range(1, n_levels)]
    return kernels, strides


def patch_divisor(n_levels: int, z_stride_from: int = 2) -> tuple[int, int, int]:
    """What every (X, Y, Z) input size of :func:`anisotropic_dynunet` must be a multiple of."""
    _, strides = anisotropic_layout(n_levels, z_stride_from)
    out = [1, 1, 1]
    for s in strides:
        out = [o * v for o, v in zip(out, s)]
    return tuple(out)  # type: ignore[return-value]


def anisotropic_dynunet(
    in_channels: int,
    out_channels: int = 1,
    filters: Sequence[int] = (16, 32, 64, 128, 256),
    z_stride_from: int = 2,
    z_kernel_from: int = 1,
    dropout: float | None = None,
    norm_name: str | tuple = ("INSTANCE", {"affine": True}),
    patch_size: Sequence[int] | None = None,
) -> torch.nn.Module:
    """A MONAI ``DynUNet`` with the :func:`anisotropic_layout` of ``len(filters)`` levels.

    Args:
        in_channels: input channels (one per CT window).
        out_channels: output channels (1: one foreground logit, for a sigmoid).
        filters: feature maps per level.
        z_stride_from: first level that halves Z.
        z_kernel_from: first level with 3 x 3 x 3 kernels.
        dropout: dropout probability (``None``: none).
        norm_name: normalisation layer.
        patch_size: when given, checked to be a multiple of :func:`patch_divisor`.
    """
    from monai.networks.nets import DynUNet

    filters = [int(f) for f in filters]
    kernels, strides = anisotropic_layout(len(filters), z_stride_from, z_kernel_from)
    if patch_size is not None:
        div = patch_divisor(len(filters), z_stride_from)
        if len(patch_size) != 3 or any(int(p) % d for p, d in zip(patch_size, div)):
            raise HemwslInputError(
                f"patch_size must be 3 sizes that are multiples of {list(div)} for {len(filters)} levels "
                f"(z_stride_from={z_stride_from}), got {list(patch_size)}"
            )
    return DynUNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=kernels,
        strides=strides,
        upsample_kernel_size=strides[1:],
        filters=filters,
        dropout=dropout,
        norm_name=norm_name,
        res_block=True,
    )
