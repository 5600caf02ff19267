"""The ``lse_heatmap`` CAM method: the LSE network's own score maps, and every other method at its levels."""

from __future__ import annotations

import pytest
import torch

from hemwsl.cam import CAMEngine
from hemwsl.errors import HemwslInputError
from hemwsl.networks import build_network
from hemwsl.networks.lse import LSE_LEVEL_LAYERS


@pytest.fixture(scope="module")
def lse_net():
    torch.manual_seed(0)
    net = build_network("lse_resnet10", in_channels=3, num_classes=6, decoder_channels=[8, 16, 32, 64])
    net.train()
    with torch.no_grad():  # calibrate BatchNorm statistics
        for _ in range(3):
            net(torch.randn(4, 3, 64, 64))
    return net.eval()


def test_lse_heatmap_is_the_sigmoid_of_each_level_score_map(lse_net):
    x = torch.randn(3, 3, 64, 64)
    engine = CAMEngine(lse_net, ["lse_heatmap"], output_size=(64, 64))
    raw = engine.feature_maps(x, targets=[0, 2, 5])
    with torch.no_grad():
        maps = lse_net.score_maps(x)
    for i, layer in enumerate(LSE_LEVEL_LAYERS[::-1]):  # levels.0.conv is f_0
        expected = torch.sigmoid(maps[i][torch.arange(3), torch.tensor([0, 2, 5])])
        torch.testing.assert_close(raw[("lse_heatmap", layer)], expected)
    # the engine's logits are the finest level's LSE logits
    torch.testing.assert_close(engine.last_logits, lse_net(x).detach())
    assert raw[("lse_heatmap", "levels.0.conv")].shape == (3, 16, 16)  # 1/4 of the input


def test_gradient_methods_run_at_the_decoder_levels(lse_net):
    x = torch.randn(2, 3, 64, 64)
    out = CAMEngine(lse_net, ["gradcam", "layercam", "lse_heatmap"], output_size=(64, 64))(x, targets=0)
    assert {k for k in out} == {(m, layer) for m in ("gradcam", "layercam", "lse_heatmap") for layer in LSE_LEVEL_LAYERS}
    assert all(v.shape == (2, 64, 64) and torch.isfinite(v).all() for v in out.values())


def test_lse_heatmap_elsewhere_is_named_or_skipped(lse_net):
    plain = build_network("resnet10", in_channels=3).eval()
    with pytest.raises(HemwslInputError, match="LSE heatmap network"):
        CAMEngine(plain, ["lse_heatmap"])
    engine = CAMEngine(plain, ["gradcam", "lse_heatmap"], skip_inapplicable=True)
    assert {m for m, _ in engine.pairs} == {"gradcam"}
    with pytest.raises(HemwslInputError, match="decoder levels"):
        CAMEngine(lse_net, ["lse_heatmap"], layers=["encoder.layer4"])
