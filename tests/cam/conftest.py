"""Fixtures of the CAM tests (networks from :mod:`tests.cam.helpers`)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tests.cam.helpers import SIZE, calibrated

@pytest.fixture(autouse=True)
def _one_thread():
    """The CI machine is small and shared: one intra-op thread is faster than two competing ones."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def resnet() -> nn.Module:
    """resnet10, 3 channels, one logit, float32."""
    return calibrated()


@pytest.fixture(scope="session")
def resnet64(resnet) -> nn.Module:
    """The same network in float64 (oracle comparisons free of float32 rounding)."""
    return copy.deepcopy(resnet).double()


@pytest.fixture(scope="session")
def resnet_multi() -> nn.Module:
    """resnet10 with 6 logits (any + five subtypes)."""
    return calibrated(num_classes=6, seed=1)


@pytest.fixture(scope="session")
def batch() -> torch.Tensor:
    return torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
