"""DenseNet slice classifiers (Huang et al. 2017) built from torchvision, random init, any input channels.

G. Huang, Z. Liu, L. van der Maaten, K. Q. Weinberger, "Densely Connected Convolutional Networks",
CVPR 2017.

torchvision's DenseNet applies ``F.relu`` and ``F.adaptive_avg_pool2d`` functionally after
``features.norm5``, so no module holds the post-ReLU feature map nor the pooling. hemwsl's
:class:`HemwslDenseNet` makes both explicit without changing the parameters (state dicts stay
compatible with torchvision's): ``features.relu5`` (``nn.ReLU``, not in place, appended to
``features``) and ``avgpool`` (``nn.AdaptiveAvgPool2d(1)``), and wraps the classifier as
``classifier = Sequential(Dropout(p), Linear)``. Hence ``logits = classifier.1(mean_hw(features.relu5))``
in eval mode.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn
from torchvision.models.densenet import DenseNet

from hemwsl.networks.utils import replace_stem_conv

__all__ = [
    "DENSENET_TARGET_LAYERS",
    "DENSENET_HEAD",
    "DENSENET_STEM",
    "HemwslDenseNet",
    "build_densenet",
    "remap_densenet_state_dict",
]

DENSENET_TARGET_LAYERS: tuple[str, ...] = ("features.denseblock3", "features.denseblock4", "features.relu5")
DENSENET_HEAD: tuple[str, str] = ("avgpool", "classifier.1")
DENSENET_STEM = "features.conv0"

# (growth_rate, block_config, num_init_features) as in torchvision.
_CONFIGS: dict[str, tuple[int, tuple[int, int, int, int], int]] = {
    "densenet121": (32, (6, 12, 24, 16), 64),
    "densenet201": (32, (6, 12, 48, 32), 64),
}

# Legacy torchvision checkpoints name dense-layer children 'norm.1', 'conv.2', ... (see torchvision).
_LEGACY_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


class HemwslDenseNet(DenseNet):
    """torchvision DenseNet with explicit final ReLU (``features.relu5``) and pooling (``avgpool``).

    Args:
        dropout: dropout probability before the final Linear (``classifier.0``).
        **kwargs: passed to :class:`torchvision.models.densenet.DenseNet`.
    """

    def __init__(self, dropout: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.features.add_module("relu5", nn.ReLU(inplace=False))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), self.classifier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(B, num_classes)`` for images ``(B, C, H, W)``."""
        out = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(out, 1))


def build_densenet(
    variant: str, in_channels: int = 3, num_classes: int = 1, dropout: float = 0.0, **kwargs: Any
) -> nn.Module:
    """Build a randomly initialised DenseNet (Huang et al. 2017); never downloads weights.

    Args:
        variant: ``densenet121`` or ``densenet201``.
        in_channels: input channels; the stem ``features.conv0`` is replaced when it is not 3.
        num_classes: number of output logits.
        dropout: dropout probability before the final Linear.
        **kwargs: passed to torchvision's DenseNet (e.g. ``memory_efficient=True``, ``drop_rate``).

    Returns:
        A :class:`HemwslDenseNet`.
    """
    growth_rate, block_config, num_init_features = _CONFIGS[variant]
    model = HemwslDenseNet(
        dropout=dropout,
        growth_rate=growth_rate,
        block_config=block_config,
        num_init_features=num_init_features,
        num_classes=num_classes,
        **kwargs,
    )
    replace_stem_conv(model, DENSENET_STEM, in_channels)
    return model


def remap_densenet_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename legacy torchvision DenseNet keys (``denselayer1.norm.1.weight`` -> ``denselayer1.norm1.weight``).

    Args:
        state_dict: a DenseNet state dict.

    Returns:
        A new dict with legacy keys renamed, other keys unchanged.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        match = _LEGACY_KEY.match(key)
        out[match.group(1) + match.group(2) if match else key] = value
    return out
