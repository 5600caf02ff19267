"""Fixtures of the trust tests: one torch thread (small shared CI machine) and a linear model."""

from __future__ import annotations

import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Linear(nn.Module):
    """``logit = sum(w * x) + bias``: removing a set of pixels (zero baseline) lowers the logit by
    exactly the sum of ``w * x`` over that set."""

    def __init__(self, w: torch.Tensor, bias: float = 0.0) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.bias = float(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.w).sum(dim=(1, 2, 3))[:, None] + self.bias


@pytest.fixture()
def linear_case():
    """A float64 linear model on 2 x 12 x 10 inputs (10 is not a multiple of the 4-pixel patches)."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(2, 12, 10, generator=g, dtype=torch.float64)
    x = torch.randn(3, 2, 12, 10, generator=g, dtype=torch.float64)
    return Linear(w).double(), x, w
