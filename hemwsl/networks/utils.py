"""Helpers shared by the backbone builders: stem replacement and stem-weight adaptation."""

from __future__ import annotations

import torch
from torch import nn

from hemwsl.errors import HemwslInputError

__all__ = ["replace_stem_conv", "adapt_stem_weight", "check_positive_int", "check_dropout"]


def check_positive_int(name: str, value: int) -> int:
    """Return ``value`` as ``int`` or raise :class:`HemwslInputError` unless it is a positive integer.

    Args:
        name: argument name used in the message.
        value: the value given.

    Returns:
        ``int(value)``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise HemwslInputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_dropout(value: float) -> float:
    """Return ``value`` as ``float`` or raise :class:`HemwslInputError` unless ``0 <= value < 1``.

    Args:
        value: the dropout probability given.

    Returns:
        ``float(value)``.
    """
    try:
        p = float(value)
    except (TypeError, ValueError):
        raise HemwslInputError(f"dropout must be a number in [0, 1), got {value!r}") from None
    if not 0.0 <= p < 1.0:
        raise HemwslInputError(f"dropout must be in [0, 1), got {value!r}")
    return p


def replace_stem_conv(model: nn.Module, path: str, in_channels: int) -> nn.Conv2d:
    """Replace the stem ``nn.Conv2d`` at module path ``path`` by one taking ``in_channels`` inputs.

    Kernel size, stride, padding, dilation, groups, bias, padding mode, device and dtype are kept;
    the new weight is Kaiming-normal initialised (fan-out, as torchvision does for ResNet and
    EfficientNet). Nothing happens when the stem already has ``in_channels`` inputs, so the
    initialisation of 3-channel models is exactly torchvision's.

    Args:
        model: the network, modified in place.
        path: dotted module path of the stem convolution (``model.get_submodule(path)``).
        in_channels: number of input channels wanted.

    Returns:
        The stem convolution now in ``model``.
    """
    old = model.get_submodule(path)
    if not isinstance(old, nn.Conv2d):
        raise TypeError(f"stem {path!r} is a {type(old).__name__}, expected nn.Conv2d")
    if old.in_channels == in_channels:
        return old
    if old.groups != 1:
        raise TypeError(f"stem {path!r} is a grouped convolution; cannot change its input channels")
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        kernel_size=old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        dilation=old.dilation,
        groups=1,
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, attr, new)
    return new


def adapt_stem_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt a pretrained stem kernel ``(O, c, kh, kw)`` to ``in_channels`` = k input channels.

    The kernel is averaged over its input (e.g. RGB) dimension and repeated k times, scaled by
    ``c / k``: ``w_new[:, j] = mean_i(w[:, i]) * c / k`` for every ``j``. A constant image then
    gives the same stem response whatever k is (the usual recipe for reusing ImageNet weights on
    grey or multi-window CT inputs).

    Args:
        weight: pretrained stem weight of shape ``(O, c, kh, kw)``.
        in_channels: number of input channels k of the target model.

    Returns:
        A tensor of shape ``(O, k, kh, kw)``; ``weight`` itself when ``c == k``.
    """
    if weight.ndim != 4:
        raise HemwslInputError(f"stem weight must be 4D (O, C, kh, kw), got shape {tuple(weight.shape)}")
    c = weight.shape[1]
    if c == in_channels:
        return weight
    mean = weight.mean(dim=1, keepdim=True)
    return (mean * (c / in_channels)).repeat(1, in_channels, 1, 1).contiguous()
