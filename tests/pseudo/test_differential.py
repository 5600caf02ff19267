"""Differential prediction (:mod:`hemwsl.pseudo.differential`) on a hand-built network."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hemwsl.errors import HemwslInputError
from hemwsl.pseudo import differential_prediction, removal_candidates


class RegionMeanNet(torch.nn.Module):
    """logit = mean intensity of channel 0 in columns 0..3 (the "region" the network looks at)."""

    def __init__(self) -> None:
        super().__init__()
        self.batch_sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batch_sizes.append(int(x.shape[0]))
        return x[:, 0, :, :4].mean(dim=(1, 2))[:, None]


def _batch():
    """Two 8 x 8 slices. Slice 0: columns 0..3 hold 16 pixels of 10 (cluster 0) and 16 of 60 (cluster 1,
    the "blood"); 8 pixels of 30 right of the region are cluster 2. Slice 1: only clusters 0 and 2."""
    x = torch.full((2, 1, 8, 8), 30.0)
    maps = torch.full((2, 8, 8), -1, dtype=torch.long)
    x[0, 0, :4, :4], maps[0, :4, :4] = 10.0, 0
    x[0, 0, 4:, :4], maps[0, 4:, :4] = 60.0, 1
    maps[0, :, 4] = 2
    x[1, 0, :, :4], maps[1, :, :4] = 10.0, 0
    maps[1, :, 5] = 2
    return x, maps


def test_largest_drop_is_the_blood_cluster():
    x, maps = _batch()
    net = RegionMeanNet()
    res = differential_prediction(net, x, maps, num_clusters=3, fill=20.0)
    assert net.batch_sizes == [2 * 4]  # one forward: 2 slices x (original + 3 candidates)
    # slice 0 by hand: base (16*10 + 16*60)/32 = 35; without cluster 0: (16*20 + 16*60)/32 = 40;
    # without cluster 1: (16*10 + 16*20)/32 = 15; without cluster 2 (outside the region): 35
    np.testing.assert_allclose(res.base.numpy(), [35.0, 10.0])
    np.testing.assert_allclose(res.logits[0].numpy(), [40.0, 15.0, 35.0])
    np.testing.assert_allclose(res.drops[0].numpy(), [-5.0, 20.0, 0.0])
    # slice 1: base 10; without cluster 0: 20 (drop -10); cluster 1 absent; cluster 2: drop 0
    np.testing.assert_allclose(res.logits[1, [0, 2]].numpy(), [20.0, 10.0])
    assert math.isnan(float(res.logits[1, 1])) and float(res.drops[1, 1]) == float("-inf")
    assert res.chosen.tolist() == [1, 2]


def test_candidates_and_per_slice_fill():
    x, maps = _batch()
    cand = removal_candidates(x, maps, 3, fill=torch.tensor([20.0, -5.0]))
    assert cand.shape == (2, 4, 1, 8, 8)
    torch.testing.assert_close(cand[:, 0], x)
    expected = x[0, 0].clone()
    expected[4:, :4] = 20.0
    torch.testing.assert_close(cand[0, 2, 0], expected)
    expected = x[1, 0].clone()
    expected[:, :4] = -5.0
    torch.testing.assert_close(cand[1, 1, 0], expected)
    torch.testing.assert_close(cand[1, 2], x[1])  # absent cluster: unchanged


def test_preprocess_and_multi_logit_target():
    x, maps = _batch()

    def two_logits(t):
        return torch.stack([t[:, 0, :, :4].mean(dim=(1, 2)), -t[:, 0].mean(dim=(1, 2))], 1)

    res = differential_prediction(two_logits, x, maps, 3, 20.0, preprocess=lambda t: t * 2, target=0)
    np.testing.assert_allclose(res.drops[0].numpy(), [-10.0, 40.0, 0.0])
    with pytest.raises(HemwslInputError, match="target"):
        differential_prediction(two_logits, x, maps, 3, 20.0, target=5)


def test_bad_inputs():
    x, maps = _batch()
    with pytest.raises(HemwslInputError, match="cluster_maps has shape"):
        differential_prediction(RegionMeanNet(), x, maps[:, :4], 3, 20.0)
    with pytest.raises(HemwslInputError, match="num_clusters"):
        removal_candidates(x, maps, 0, 20.0)
    with pytest.raises(HemwslInputError, match="fill"):
        removal_candidates(x, maps, 3, torch.zeros(3))
