"""The LSE heatmap network of Chen & Kuo 2026: pooling, its gradient, the loss, the layout, two-stage init."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hemwsl.errors import HemwslInputError
from hemwsl.networks import build_network, get_network_spec, get_target_layers, target_layer_names
from hemwsl.networks.lse import LSE_LEVEL_LAYERS, LSEHeatmapLoss, LSEHeatmapNet, LSEPool, lse_pool


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------- pooling


def test_lse_pool_hand_values():
    x = torch.tensor([[[[0.0, 0.0], [0.0, 1.0]]]])  # (1, 1, 2, 2)
    assert float(lse_pool(x, 1.0)) == pytest.approx(math.log((3 + math.e) / 4))
    assert float(lse_pool(x, 2.0)) == pytest.approx(0.5 * math.log((3 + math.e**2) / 4))
    # between the mean and the max, tending to them as r -> 0 and r -> inf
    assert 0.25 < float(lse_pool(x, 3.0)) < 1.0
    assert float(lse_pool(x.double(), 1e-4)) == pytest.approx(0.25, abs=1e-4)
    assert float(lse_pool(x, 1e3)) == pytest.approx(1.0, abs=2e-3)
    # a constant map pools to its value whatever r and size; LSEPool keeps (B, K)
    c = torch.full((2, 3, 5, 7), -1.5)
    torch.testing.assert_close(LSEPool(3.0)(c), torch.full((2, 3), -1.5))


def test_lse_pool_gradient_is_the_softmax_of_r_x():
    """Chen & Kuo 2026 eq. 5: dLSE/dx_j = exp(r x_j) / sum_i exp(r x_i) (with the normalised form's 1/r)."""
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0]], dtype=torch.float64, requires_grad=True)
    r = 2.0
    lse_pool(x, r).backward()
    z = 3 + math.exp(2.0)
    expected = torch.tensor([[1 / z, 1 / z], [1 / z, math.exp(2.0) / z]], dtype=torch.float64)
    torch.testing.assert_close(x.grad, expected)
    y = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    lse_pool(y, 3.0).backward()
    torch.testing.assert_close(y.grad, torch.softmax(3.0 * y.detach().flatten(), 0).reshape(4, 6))


def test_lse_sum_form_is_eq4():
    """Chen & Kuo's eq. 4 as printed: log(sum exp(r x)) = r * (mean form) + log(n)."""
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    assert float(lse_pool(x, 3.0, "sum")) == pytest.approx(math.log(3 + math.exp(3.0)))
    y = torch.randn(3, 4, 5)
    torch.testing.assert_close(lse_pool(y, 2.0, "sum"), 2.0 * lse_pool(y, 2.0) + math.log(20))
    net = build_network("lse_resnet10", in_channels=3, lse_form="sum", decoder_channels=[8, 8, 8, 8])
    assert all(level.pool.form == "sum" for level in net.levels)
    with pytest.raises(HemwslInputError, match="LSE form"):
        LSEPool(3.0, "max")


@pytest.mark.parametrize("r", [0, -1, float("inf"), "x"])
def test_lse_pool_rejects_bad_r(r):
    with pytest.raises(HemwslInputError, match="lse_r"):
        LSEPool(r)
    with pytest.raises(HemwslInputError, match="lse_r"):
        lse_pool(torch.zeros(2, 2), r)


# ---------------------------------------------------------------------------------------------- loss


def test_loss_hand_values():
    f0 = torch.tensor([[1.0, 3.0, 0.0, 0.0], [5.0, 7.0, 0.0, 0.0], [0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0]])
    f0 = f0[None, None]  # AvgPool2 -> [[4, 0], [0, 2]]
    f1 = torch.zeros(1, 1, 2, 2)
    f2 = torch.full((1, 1, 1, 1), 0.5)
    f3 = torch.full((1, 1, 1, 1), -1.0)
    maps = [f0, f1, f2, f3]
    logits = [torch.tensor([[v]]) for v in (2.0, -1.0, 0.5, 0.0)]
    y = torch.tensor([[1.0]])
    loss = LSEHeatmapLoss()
    out = loss((maps, logits), y)

    def bce1(v):  # -log(sigmoid(v))
        return math.log1p(math.exp(-v))

    c = 2.0 * bce1(2.0) + 0.5 * bce1(-1.0) + 0.25 * bce1(0.5) + 0.125 * bce1(0.0)
    h = 0.5 * ((16 + 0 + 0 + 4) / 4) + 0.25 * ((0.0 - 0.5) ** 2) + 0.125 * ((0.5 + 1.0) ** 2)
    assert float(out) == pytest.approx(c + h, rel=1e-6)
    assert loss.last_terms["classification"] == pytest.approx(c, rel=1e-6)
    assert loss.last_terms["consistency"] == pytest.approx(h, rel=1e-6)
    # consistency off (the ablation) and pos_weight (BCE with pos_weight scales the positive term)
    assert float(LSEHeatmapLoss(consistency_weight=0.0)((maps, logits), y)) == pytest.approx(c, rel=1e-6)
    pw = LSEHeatmapLoss(pos_weight=torch.tensor([3.0]), consistency_weight=0.0)((maps, logits), y)
    assert float(pw) == pytest.approx(3 * c, rel=1e-6)
    # a negative label
    neg = LSEHeatmapLoss(consistency_weight=0.0)((maps, logits), torch.zeros(1, 1))
    assert float(neg) == pytest.approx(sum(a * math.log1p(math.exp(v)) for a, v in zip((2, 0.5, 0.25, 0.125), (2, -1, 0.5, 0))))


def test_area_penalty_hand_values():
    """hemwsl's optional area term: the mean sigmoid of f_0 over the positive (sample, class) pairs."""
    f0 = torch.zeros(2, 1, 2, 2)
    f0[0, 0, 0, 0] = 100.0  # sample 0 (positive): one of four positions lit -> share 0.25 + 3 * 0.5 / 4
    maps = [f0, torch.zeros(2, 1, 1, 1), torch.zeros(2, 1, 1, 1), torch.zeros(2, 1, 1, 1)]
    logits = [torch.zeros(2, 1)] * 4
    y = torch.tensor([[1.0], [0.0]])
    base = LSEHeatmapLoss()((maps, logits), y)
    loss = LSEHeatmapLoss(area_weight=2.0)
    out = loss((maps, logits), y)
    assert loss.last_terms["area"] == pytest.approx((1.0 + 3 * 0.5) / 4)
    assert float(out - base) == pytest.approx(2.0 * (1.0 + 3 * 0.5) / 4)
    with pytest.raises(HemwslInputError, match="lse_area"):
        LSEHeatmapLoss(area_weight=-1)


def test_loss_refuses_plain_logits():
    with pytest.raises(HemwslInputError, match="levels=True"):
        LSEHeatmapLoss()(torch.zeros(2, 1), torch.zeros(2, 1))
    with pytest.raises(HemwslInputError, match="4 alpha"):
        LSEHeatmapLoss(alpha=(1.0, 1.0))


# ------------------------------------------------------------------------------------------- network


@pytest.mark.parametrize("backbone", ["resnet10", "efficientnet_v2_b0", "densenet121", "efficientnet_v2_s"])
def test_layout_shapes_and_forward(backbone):
    net = build_network("lse_" + backbone, in_channels=9, num_classes=6)
    assert isinstance(net, LSEHeatmapNet) and net.hemwsl_name == "lse_" + backbone
    assert target_layer_names(net) == list(LSE_LEVEL_LAYERS)
    spec = get_network_spec("lse_" + backbone)
    assert spec.family == "lse_heatmap" and not spec.gap_linear_head and "Chen & Kuo 2026" in spec.reference
    net.eval()
    x = torch.randn(2, 9, 64, 64)
    with torch.no_grad():
        feats = net.encode(x)
        maps, logits = net(x, levels=True)
        l0 = net(x)
    # encoder stages at strides 4, 8, 16, 32; score maps of every level; heatmap at 1/4 of the input
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 2]
    assert [tuple(m.shape) for m in maps] == [(2, 6, 16, 16), (2, 6, 8, 8), (2, 6, 4, 4), (2, 6, 2, 2)]
    for m, lg in zip(maps, logits):
        torch.testing.assert_close(lg, lse_pool(m, 3.0))
    torch.testing.assert_close(l0, logits[0])
    # the classifier head of the backbone is gone (DDP needs every parameter used)
    assert all(p.grad is None for p in net.parameters())
    net.train()
    maps, logits = net(torch.randn(2, 9, 64, 64), levels=True)
    sum(lg.sum() for lg in logits).backward()
    assert [n for n, p in net.named_parameters() if p.grad is None] == []


@pytest.mark.parametrize("backbone", ["resnet10", "efficientnet_v2_b0", "densenet121"])
def test_encoder_plan_reproduces_the_backbone(backbone, tmp_path):
    """Chen & Kuo's two stages: the encoder loads the trained classifier and its deepest stage equals the
    classifier's last feature map (the plan runs the backbone's modules in order)."""
    torch.manual_seed(0)
    clf = build_network(backbone, in_channels=3, num_classes=1)
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in clf.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "clf.pt"
    torch.save(clf.state_dict(), path)
    net = build_network("lse_" + backbone, in_channels=3, num_classes=1, pretrained_path=path).eval()
    clf.eval()
    x = torch.randn(2, 3, 64, 64)
    deepest = get_target_layers(clf)[target_layer_names(clf)[-1]]
    acts = {}
    h = deepest.register_forward_hook(lambda _m, _i, o: acts.__setitem__("a", o))
    with torch.no_grad():
        clf(x)
        feats = net.encode(x)
    h.remove()
    torch.testing.assert_close(feats[-1], acts["a"])
    # a whole LSE checkpoint loads as a whole
    full = tmp_path / "lse.pt"
    torch.save({"model": net.state_dict()}, full)
    again = build_network("lse_" + backbone, in_channels=3, num_classes=1, pretrained_path=full).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x), net(x))


def test_options_reach_the_builder_and_bad_options_are_named():
    net = build_network("lse_resnet10", in_channels=3, options={"lse_r": 5.0, "decoder_channels": [8, 16, 32, 64]})
    assert net.r == 5.0 and net.decoder_channels == [8, 16, 32, 64]
    assert all(level.pool.r == 5.0 for level in net.levels)
    with pytest.raises(HemwslInputError, match="decoder_channels"):
        build_network("lse_resnet10", decoder_channels=[8, 16])
    with pytest.raises(HemwslInputError, match="level"):
        net.level_classifier("encoder.layer4")
    with pytest.raises(HemwslInputError, match="not found"):
        build_network("lse_resnet10", pretrained_path="/nonexistent/model.pt")


def test_decoder_without_the_se_gate_is_position_wise():
    """``se_gate=False`` (hemwsl's ablation): no squeeze-and-excitation module, and a decoder block's output
    at one position depends on that position's features only; with Chen & Kuo's gate a change anywhere
    reaches every position through the slice-wide statistics."""
    from monai.networks.blocks import ChannelSELayer

    torch.manual_seed(0)
    gated = build_network("lse_resnet10", in_channels=3)
    plain = build_network("lse_resnet10", in_channels=3, options={"se_gate": False})
    assert any(isinstance(m, ChannelSELayer) for m in gated.modules())
    assert not any(isinstance(m, ChannelSELayer) for m in plain.modules())
    assert plain.se_gate is False and gated.se_gate is True
    for net, local in ((plain, True), (gated, False)):
        block = net.levels[0].conv.eval()
        x = torch.randn(1, block[0].in_channels, 8, 8)
        y = x.clone()
        y[..., 0, 0] += 5.0
        with torch.no_grad():
            diff = (block(y) - block(x)).abs().amax(dim=1)[0]
        changed = diff > 1e-6
        assert changed[0, 0]
        assert bool(changed.sum() == 1) is local
    maps, logits = plain(torch.randn(2, 3, 64, 64), levels=True)
    assert [tuple(m.shape) for m in maps] == [(2, 1, 16, 16), (2, 1, 8, 8), (2, 1, 4, 4), (2, 1, 2, 2)]
    with pytest.raises(HemwslInputError, match="se_gate"):
        build_network("lse_resnet10", options={"se_gate": "no"})


# ------------------------------------------------------------------------------------------ Algorithm 1


def test_algorithm1_subtype_masks_hand_values(monkeypatch):
    """Chen & Kuo 2026's Algorithm 1: present subtypes (probability >= class threshold) claim the pixels
    where their heatmap passes the mask threshold; overlaps go to the larger map; the rest is background."""
    from hemwsl.networks.lse import lse_subtype_masks, subtype_volumes_ml
    from hemwsl.thresholds import SubtypeRule

    net = build_network("lse_resnet10", in_channels=1, num_classes=6, decoder_channels=[4, 4, 4, 4])
    f0 = torch.full((1, 6, 2, 2), -10.0)
    f0[0, 1] = torch.tensor([[3.0, 1.0], [-10.0, -10.0]])  # subtype 0: present, claims (0,0) and (0,1)
    f0[0, 2] = torch.tensor([[1.0, 2.0], [2.0, -10.0]])  # subtype 1: present, wins (0,1), alone at (1,0)
    f0[0, 3] = torch.tensor([[5.0, 5.0], [5.0, 5.0]])  # subtype 2: absent (probability below its threshold)
    logits = torch.tensor([[2.0, 1.0, 1.0, -3.0, -3.0, -3.0]])
    monkeypatch.setattr(net, "forward", lambda x, levels=False: ([f0, f0[..., :1, :1], f0[..., :1, :1], f0[..., :1, :1]],
                                                                 [logits] * 4))
    rule = SubtypeRule(class_thresholds=[0.5] * 5, mask_threshold=0.5, normalisation="none")
    labels, probs = lse_subtype_masks(net, torch.zeros(1, 1, 2, 2), rule)  # input 2x2: no resampling
    torch.testing.assert_close(probs, torch.sigmoid(logits[:, 1:]))
    assert labels.tolist() == [[[1, 2], [2, 0]]]
    vols = subtype_volumes_ml(labels[0, :, :, None], spacing=(10.0, 10.0, 5.0))
    assert vols["intraventricular"] == pytest.approx(0.5) and vols["intraparenchymal"] == pytest.approx(1.0)
    assert vols["any"] == pytest.approx(1.5) and vols["subdural"] == 0.0
    with pytest.raises(HemwslInputError, match="6 outputs"):
        lse_subtype_masks(build_network("lse_resnet10", num_classes=1), torch.zeros(1, 3, 32, 32), rule)
