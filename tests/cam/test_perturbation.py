"""Ablation-CAM's closed form and suffix runs, Score-CAM's shortcuts, and the SuffixRunner."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from hemwsl.cam import CAMEngine, SuffixRunner, capture
from hemwsl.cam.methods import AblationCAM
from hemwsl.errors import HemwslInputError
from tests.cam.helpers import calibrated, hook_count, pgc_like, tiny_cnn


def _ablation(model, x, layer, **opts):
    engine = CAMEngine(model, [AblationCAM(**opts)], layers=[layer])
    return engine.feature_maps(x, 0)[("ablationcam", layer)], engine


def _ablation_weights(model, x, layer, **opts):
    """Ablation-CAM's (B, C) channel weights, read through a probe method."""
    out = {}

    class Probe:
        name, paper, needs_gradients, layerwise = "probe", "-", False, True

        def __call__(self, ctx):
            out["w"] = AblationCAM(**opts).weigh_context(ctx)
            return ctx.activations[:, 0]

    CAMEngine(model, [Probe()], layers=[layer]).feature_maps(x, 0)
    return out["w"]


def _brute_force_scores(model, x, layer, channels, target=0):
    """Scores with channel k of ``layer`` zeroed, re-running the WHOLE network."""
    module = model.get_submodule(layer)
    scores = {}
    for k in channels:
        def zero_k(m, i, o, k=k):
            o = o.clone()
            o[:, k] = 0
            return o

        h = module.register_forward_hook(zero_k)
        try:
            with torch.no_grad():
                scores[k] = model(x)[:, target]
        finally:
            h.remove()
    return scores


def test_closed_form_equals_suffix_reruns_at_head_layer(resnet64, batch):
    x = batch.double()
    closed, _ = _ablation(resnet64, x, "layer4", closed_form=True)
    generic, engine = _ablation(resnet64, x, "layer4", closed_form=False, batch_size=100)
    assert engine._runners["layer4"].mode_used == "suffix"
    torch.testing.assert_close(closed, generic, rtol=1e-8, atol=1e-10)
    # both equal brute force (the whole network re-run with channel k zeroed), on a sample of channels
    w = _ablation_weights(resnet64, x, "layer4", closed_form=True)
    with torch.no_grad():
        s = resnet64(x)[:, 0]
    for k, sk in _brute_force_scores(resnet64, x, "layer4", range(0, 512, 97)).items():
        torch.testing.assert_close(w[:, k], (s - sk) / s, rtol=1e-7, atol=1e-10)


def test_closed_form_is_used_only_where_valid(resnet, batch):
    with pytest.raises(HemwslInputError, match="closed-form"):
        _ablation(resnet, batch, "layer3", closed_form=True)
    with pytest.raises(HemwslInputError):
        AblationCAM(closed_form="yes")


def test_suffix_equals_full_network_reruns():
    model = tiny_cnn()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for layer in ("features.2", "features.5"):
        engine = CAMEngine(model, [AblationCAM(batch_size=5)], layers=[layer])
        fast = engine.feature_maps(x, 0)[("ablationcam", layer)]
        assert engine._runners[layer].mode_used == "suffix"
        assert engine._runners[layer].prefix == [f"features.{i}" for i in range(int(layer[-1]))]
        engine._runners[layer] = SuffixRunner(model, layer, mode="full")
        slow = engine.feature_maps(x, 0)[("ablationcam", layer)]
        torch.testing.assert_close(fast, slow, rtol=1e-8, atol=1e-10)
    assert hook_count(model) == 0


class SkipNet(nn.Module):
    """The prefix's output is also used after the target layer: suffix-only runs would be wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        s = self.stem(x)
        return self.fc((self.block(s) + s).mean(dim=(2, 3)))


def test_suffix_runner_falls_back_to_full_runs():
    torch.manual_seed(0)
    model = SkipNet().double().eval()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    engine = CAMEngine(model, [AblationCAM(batch_size=3)], layers=["block"])
    out = engine.feature_maps(x, 1)[("ablationcam", "block")]
    assert engine._runners["block"].mode_used == "full"
    # brute force
    with torch.no_grad(), capture(model, ["block"]) as cap:
        s = model(x)[:, 1]
        a = cap.activations["block"].clone()
    brute = _brute_force_scores(model, x, "block", range(a.shape[1]), target=1)
    w = torch.stack([(s - brute[k]) / s for k in range(a.shape[1])], dim=1)
    expected = torch.relu(torch.einsum("bc,bchw->bhw", w, a))
    torch.testing.assert_close(out, expected, rtol=1e-8, atol=1e-10)
    with pytest.raises(HemwslInputError, match="cannot run the network"):
        runner = SuffixRunner(model, "block", mode="suffix")
        runner.prepare(x, a, model(x).detach())
    assert hook_count(model) == 0


def test_suffix_runner_restores_forwards_on_error(resnet, batch):
    with capture(resnet, ["layer3"]) as cap, torch.no_grad():
        logits = resnet(batch)
    runner = SuffixRunner(resnet, "layer3")
    runner.prepare(batch, cap.activations["layer3"], logits)
    assert runner.mode_used == "suffix"
    with pytest.raises(RuntimeError):
        runner.run(torch.zeros(2, 7, 4, 4), torch.tensor([0, 1]), batch)  # wrong channel count
    assert hook_count(resnet) == 0
    torch.testing.assert_close(resnet(batch), logits)


def test_scorecam_skips_constant_channels_exactly():
    model = tiny_cnn()
    with torch.no_grad():  # kill half of the last layer's channels: ReLU(negative constant) == 0
        model.features[7].weight[::2] = 0
        model.features[7].bias[::2] = -1
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    calls = []
    h = model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    engine = CAMEngine(model, ["scorecam"], layers=["features.8"], method_options={"scorecam": {"batch_size": 64}})
    out = engine.feature_maps(x, 0)[("scorecam", "features.8")]
    h.remove()
    # 1 main forward (2) + 1 all-zero input (1) + the 2 x 16 live channels in one batch (32)
    assert sorted(calls) == [1, 2, 32]
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    mm = copy.deepcopy(model)
    with pgc.ScoreCAM(mm, [mm.features[8]]) as cam:
        cam.batch_size = 64
        ref = cam(x, [ClassifierOutputTarget(0)] * 2)
    np.testing.assert_allclose(pgc_like(out, 32), ref, atol=1e-5)


def test_faster_scorecam_is_scorecam_on_each_slices_top_k_channels():
    """Faster Score-CAM: with top_k >= C it is exact Score-CAM; with top_k < C each slice's map is Score-CAM's
    softmax over that slice's top_k channels by spatial variance (scored with the same masked inputs), the other
    channels weighing 0, and it runs B x top_k masked forwards."""
    from hemwsl.cam.methods import FasterScoreCAM, ScoreCAM

    model = tiny_cnn()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    layer = "features.8"
    exact = CAMEngine(model, [ScoreCAM(batch_size=8)], layers=[layer]).feature_maps(x, 0)[("scorecam", layer)]
    full = CAMEngine(model, [FasterScoreCAM(top_k=1000, batch_size=5)], layers=[layer]).feature_maps(x, 0)
    torch.testing.assert_close(full[("fasterscorecam", layer)], exact, rtol=1e-9, atol=1e-12)

    k = 5
    calls = []
    h = model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    got = CAMEngine(model, [FasterScoreCAM(top_k=k, batch_size=64)], layers=[layer]).feature_maps(x, 0)
    h.remove()
    assert sum(calls) == 2 + 2 * k  # the main forward + one masked forward per (slice, chosen channel)
    with capture(model, [layer]) as cap, torch.no_grad():
        model(x)
        a = cap.activations[layer]
    for b in range(2):  # by hand: the top-k channels of slice b, their masked-input scores, softmax, weighted sum
        top = a[b].flatten(1).var(dim=1).topk(k).indices
        up = torch.nn.functional.interpolate(a[b, top][:, None], size=(32, 32), mode="bilinear", align_corners=True)
        mn, mx = up.flatten(1).amin(1)[:, None, None, None], up.flatten(1).amax(1)[:, None, None, None]
        with torch.no_grad():
            scores = model(x[b:b + 1] * (up - mn) / (mx - mn + 1e-8))[:, 0]
        want = torch.einsum("c,chw->hw", torch.softmax(scores, 0), a[b, top])
        torch.testing.assert_close(got[("fasterscorecam", layer)][b], want, rtol=1e-9, atol=1e-12)
    with pytest.raises(HemwslInputError, match="top_k"):
        FasterScoreCAM(top_k=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet_v2_s", "efficientnet_v2_b0", "densenet121", "resnet18"])
def test_suffix_mode_on_registered_backbones(name):
    model = calibrated(name, in_channels=3, size=64)
    x = torch.randn(2, 3, 64, 64)
    engine = CAMEngine(model, [AblationCAM(closed_form=False, batch_size=512)])
    with torch.no_grad():
        engine.feature_maps(x)
    for layer in engine.layer_names:
        assert engine._runners[layer].mode_used == "suffix", (name, layer)
    assert hook_count(model) == 0


def _groupcam_by_hand(model, x, layer, groups, percentile=70.0):
    """Group-CAM as the authors' code computes it, one slice at a time, at the input size: Grad-CAM-weighted
    channel groups, the percentile denoising, the revealed input over torchvision's GaussianBlur(51, 50)."""
    import torchvision

    module = model.get_submodule(layer)
    blur = torchvision.transforms.GaussianBlur(51, 50.0)
    out = []
    for b in range(x.shape[0]):
        xb = x[b:b + 1]
        store = {}
        h = module.register_forward_hook(lambda m, i, o: store.update(a=o))
        score = model(xb)[0, 0]
        h.remove()
        grad = torch.autograd.grad(score, store["a"])[0]
        act = (grad.mean(dim=(2, 3), keepdim=True) * store["a"]).detach()
        size = xb.shape[-2:]
        with torch.no_grad():
            base = torch.sigmoid(model(blur(xb))[0, 0])
            total = torch.zeros(1, 1, *size, dtype=x.dtype)
            for chunk in act.chunk(groups, 1):
                m = torch.relu(chunk.sum(1, keepdim=True))
                thr = float(np.percentile(m.numpy(), percentile))
                m = torch.where(m > thr, m, torch.zeros_like(m))
                m = torch.nn.functional.interpolate(m, size=size, mode="bilinear", align_corners=False)
                if m.max() == m.min():
                    continue
                n = (m - m.min()) / (m.max() - m.min())
                p = torch.sigmoid(model(xb * n + blur(xb) * (1 - n))[0, 0])
                total += torch.relu(p - base) * m
        out.append(torch.relu(total)[0, 0])
    return torch.stack(out)


def test_groupcam_equals_the_authors_algorithm():
    from hemwsl.cam.methods import GroupCAM

    model = tiny_cnn()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    layer = "features.8"  # 32 channels at 8 x 8
    for groups in (4, 32):
        got = CAMEngine(model, [GroupCAM(groups=groups, batch_size=3)], layers=[layer]).feature_maps(x, 0)[("groupcam", layer)]
        up = torch.nn.functional.interpolate(got[:, None], size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
        torch.testing.assert_close(up, _groupcam_by_hand(model, x, layer, groups), rtol=1e-9, atol=1e-12)
    with pytest.raises(HemwslInputError, match="percentile"):
        GroupCAM(percentile=100)


def test_reciprocam_equals_whole_network_reruns_on_each_mosaic():
    """Recipro-CAM through the suffix runner equals the authors' way: the whole network re-run with the layer's
    output replaced by each mosaic (one position kept, or its 3 x 3 Gaussian spread), the sigmoid of the score."""
    from hemwsl.cam.methods import ReciproCAM

    model = tiny_cnn()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    layer = "features.5"  # 16 x 16 positions
    module = model.get_submodule(layer)
    with capture(model, [layer]) as cap, torch.no_grad():
        model(x)
        a = cap.activations[layer]
    gauss = torch.tensor([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=torch.float64) / 16
    for kernel in (False, True):
        got = CAMEngine(model, [ReciproCAM(kernel=kernel, batch_size=50)], layers=[layer]).feature_maps(x, 0)[("reciprocam", layer)]
        _, c, h, w = a.shape
        for b in range(2):
            want = torch.empty(h, w, dtype=torch.float64)
            for i in range(h):
                for j in range(w):
                    mosaic = torch.zeros(1, c, h, w, dtype=torch.float64)
                    if kernel:
                        for di in (-1, 0, 1):
                            for dj in (-1, 0, 1):
                                if 0 <= i + di < h and 0 <= j + dj < w:
                                    mosaic[0, :, i + di, j + dj] = a[b, :, i, j] * gauss[di + 1, dj + 1]
                    else:
                        mosaic[0, :, i, j] = a[b, :, i, j]
                    hd = module.register_forward_hook(lambda m, inp, o, s=mosaic: s)
                    with torch.no_grad():
                        want[i, j] = torch.sigmoid(model(x[b:b + 1])[0, 0])
                    hd.remove()
            torch.testing.assert_close(got[b], want, rtol=1e-9, atol=1e-12)
    assert hook_count(model) == 0
