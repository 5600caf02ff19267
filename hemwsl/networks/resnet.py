"""ResNet slice classifiers (He et al. 2016) built from torchvision, random init, any input channels.

K. He, X. Zhang, S. Ren, J. Sun, "Deep Residual Learning for Image Recognition", CVPR 2016.

Layout (torchvision names): ``conv1`` (stem) - ``bn1`` - ``relu`` - ``maxpool`` - ``layer1`` ..
``layer4`` - ``avgpool`` - flatten - ``fc``. hemwsl wraps the classifier as
``fc = Sequential(Dropout(p), Linear)`` so the head path is ``fc.1`` whatever ``p`` is; nothing lies
between ``layer4`` and ``avgpool``, so ``logits = fc.1(mean_hw(layer4))`` in eval mode.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn
from torchvision.models import resnet as tv_resnet

from hemwsl.networks.utils import replace_stem_conv

__all__ = ["RESNET_TARGET_LAYERS", "RESNET_HEAD", "RESNET_STEM", "build_resnet", "resnet10"]

RESNET_TARGET_LAYERS: tuple[str, ...] = ("layer2", "layer3", "layer4")
RESNET_HEAD: tuple[str, str] = ("avgpool", "fc.1")
RESNET_STEM = "conv1"


def resnet10(**kwargs: Any) -> tv_resnet.ResNet:
    """A small torchvision-style ResNet-10 (BasicBlock, ``[1, 1, 1, 1]``), fast enough for CPU training.

    Args:
        **kwargs: passed to :class:`torchvision.models.resnet.ResNet` (e.g. ``num_classes``).

    Returns:
        The randomly initialised network.
    """
    return tv_resnet.ResNet(tv_resnet.BasicBlock, [1, 1, 1, 1], **kwargs)


_FACTORIES: dict[str, Callable[..., tv_resnet.ResNet]] = {
    "resnet10": resnet10,
    "resnet18": lambda **kw: tv_resnet.resnet18(weights=None, progress=False, **kw),
    "resnet34": lambda **kw: tv_resnet.resnet34(weights=None, progress=False, **kw),
    "resnet50": lambda **kw: tv_resnet.resnet50(weights=None, progress=False, **kw),
    "resnet101": lambda **kw: tv_resnet.resnet101(weights=None, progress=False, **kw),
    "resnet152": lambda **kw: tv_resnet.resnet152(weights=None, progress=False, **kw),
}


def build_resnet(
    variant: str, in_channels: int = 3, num_classes: int = 1, dropout: float = 0.0, **kwargs: Any
) -> nn.Module:
    """Build a randomly initialised ResNet (He et al. 2016); never downloads weights.

    Args:
        variant: one of ``resnet10``, ``resnet18``, ``resnet34``, ``resnet50``, ``resnet101``,
            ``resnet152``.
        in_channels: input channels; the stem ``conv1`` is replaced when it is not 3.
        num_classes: number of output logits.
        dropout: dropout probability before the final Linear (``fc.0``).
        **kwargs: passed to torchvision's ResNet (e.g. ``zero_init_residual=True``).

    Returns:
        The network; its classifier is ``fc = Sequential(Dropout, Linear)``.
    """
    model = _FACTORIES[variant](num_classes=num_classes, **kwargs)
    replace_stem_conv(model, RESNET_STEM, in_channels)
    model.fc = nn.Sequential(nn.Dropout(dropout), model.fc)
    return model
