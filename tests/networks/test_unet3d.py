"""The anisotropic 3D U-Net layout (hemwsl.networks.unet3d)."""

from __future__ import annotations

import pytest
import torch

from hemwsl.errors import HemwslInputError
from hemwsl.networks.unet3d import anisotropic_dynunet, anisotropic_layout, patch_divisor


def test_anisotropic_layout_and_network():
    kernels, strides = anisotropic_layout(4, z_stride_from=2, z_kernel_from=1)
    assert kernels == [[3, 3, 1], [3, 3, 3], [3, 3, 3], [3, 3, 3]]
    assert strides == [[1, 1, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2]]
    assert patch_divisor(4, 2) == (8, 8, 4)
    assert patch_divisor(5, 2) == (16, 16, 8)
    net = anisotropic_dynunet(in_channels=2, filters=(4, 8, 16), patch_size=(16, 16, 4))
    assert net(torch.rand(1, 2, 16, 16, 4)).shape == (1, 1, 16, 16, 4)
    with pytest.raises(HemwslInputError, match="patch_size"):
        anisotropic_dynunet(in_channels=2, filters=(4, 8, 16), patch_size=(16, 16, 5))
    with pytest.raises(HemwslInputError, match="levels"):
        anisotropic_layout(1)
