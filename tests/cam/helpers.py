"""Helpers of the CAM tests: small BatchNorm-calibrated networks, hook counting, pytorch-grad-cam scaling.

Random-weight networks can give near-zero deep activations; a few train-mode forwards on random data
calibrate the BatchNorm running statistics so that every stage has unit-scale activations.
"""

from __future__ import annotations

import torch
from torch import nn

from hemwsl.cam import normalize_per_slice, upsample
from hemwsl.networks import build_network

SIZE = 64


def calibrated(name: str = "resnet10", in_channels: int = 3, num_classes: int = 1, size: int = SIZE,
               seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    model = build_network(name, in_channels=in_channels, num_classes=num_classes)
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(8, in_channels, size, size))
    model.eval()
    return model.to(dtype)


def hook_count(model: nn.Module) -> int:
    """Hooks and patched forwards left on any submodule."""
    n = 0
    for m in model.modules():
        n += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        n += len(getattr(m, "_backward_pre_hooks", {})) + ("forward" in m.__dict__)
    return n


class TinyCNN(nn.Module):
    """A small CNN ending in global average pooling + Linear (not from the registry)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 1, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def tiny_cnn(dtype: torch.dtype = torch.float64, seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    model = TinyCNN(**kwargs)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, model.features[0].in_channels, 32, 32))
    return model.eval().to(dtype)




def pgc_like(raw: torch.Tensor, size: int = SIZE):
    """pytorch-grad-cam's scaling pipeline (min-max, bilinear resize, min-max) on hemwsl's raw (B, h, w) maps."""
    return normalize_per_slice(upsample(normalize_per_slice(raw), size)).numpy()
