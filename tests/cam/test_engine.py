"""The CAM engine: one pass, hook hygiene, targets, fusion, closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hemwsl.cam import (
    CAMEngine,
    ClassTarget,
    capture,
    fused_layer_name,
    list_methods,
    normalize_per_slice,
    resolve_targets,
)
from hemwsl.cam.registry import GRADIENT_METHODS
from hemwsl.errors import HemwslInputError
from tests.cam.helpers import hook_count

ONE_PASS = list(GRADIENT_METHODS) + ["eigencam", "cam"]  # 9 methods from one forward + one backward


class _Counter:
    def __init__(self, model, monkeypatch):
        self.forwards = 0
        self.grads = 0
        self.handle = model.register_forward_hook(self._hook)
        real = torch.autograd.grad

        def grad(*args, **kwargs):
            self.grads += 1
            return real(*args, **kwargs)

        def no_backward(*args, **kwargs):
            raise AssertionError("the engine must not call .backward()")

        monkeypatch.setattr(torch.autograd, "grad", grad)
        monkeypatch.setattr(torch.Tensor, "backward", no_backward)

    def _hook(self, *args):
        self.forwards += 1


def _state(model):
    return (model.training, [p.requires_grad for p in model.parameters()], [p.grad for p in model.parameters()])


def test_whole_gradient_grid_from_one_forward_and_one_grad(resnet, batch, monkeypatch):
    engine = CAMEngine(resnet, ONE_PASS, skip_inapplicable=True)
    assert len(engine.pairs) == 8 * 3 + 1  # CAM only at layer4
    base = hook_count(resnet)
    counter = _Counter(resnet, monkeypatch)
    out = engine(batch)
    assert counter.forwards == 1
    assert counter.grads == 1
    counter.handle.remove()
    assert hook_count(resnet) == base
    assert set(out) == set(engine.pairs)
    for key, m in out.items():
        assert m.shape == (2, 64, 64) and m.dtype == torch.float32, key
        assert bool((m >= 0).all()), key
        assert torch.isfinite(m).all(), key
    assert engine.last_logits.shape == (2, 1)


def test_gradient_free_methods_run_without_autograd(resnet, batch, monkeypatch):
    engine = CAMEngine(resnet, ["eigencam", "cam", "ablationcam"], layers=["layer4"])
    counter = _Counter(resnet, monkeypatch)
    engine(batch)
    assert counter.grads == 0
    assert counter.forwards == 1  # Ablation-CAM's closed form at layer4: no extra network call
    counter.handle.remove()


def test_model_state_untouched(resnet, batch):
    resnet.train()
    before = _state(resnet)
    base = hook_count(resnet)
    bn = resnet.bn1.running_mean.clone()
    CAMEngine(resnet, ["gradcam", "ablationcam", "eigencam"], layers=["layer3", "layer4"])(batch)
    assert _state(resnet) == before  # still training, same flags, .grad all None
    assert all(g is None for g in before[2])
    assert hook_count(resnet) == base
    torch.testing.assert_close(resnet.bn1.running_mean, bn)  # ran in eval mode
    resnet.eval()


def test_frozen_model_still_gets_gradients(batch):
    from tests.cam.helpers import calibrated

    model = calibrated()
    for p in model.parameters():
        p.requires_grad_(False)
    out = CAMEngine(model, ["gradcam"], layers=["layer4"])(batch)
    assert float(out[("gradcam", "layer4")].max()) > 0
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize(
    "bad",
    [
        dict(targets=3),  # class index out of range for a single logit
        dict(targets=[0]),  # wrong number of per-sample targets
        dict(targets=lambda logits: logits),  # callable returning (B, K)
        dict(targets="any"),
    ],
)
def test_hooks_removed_and_state_restored_when_a_call_raises(resnet, batch, bad):
    resnet.train()
    before = _state(resnet)
    base = hook_count(resnet)
    engine = CAMEngine(resnet, ["gradcam", "ablationcam"], layers=["layer3", "layer4"])
    with pytest.raises(HemwslInputError):
        engine(batch, **bad)
    assert hook_count(resnet) == base
    assert _state(resnet) == before
    resnet.eval()


def test_hooks_removed_when_a_method_raises_mid_call(resnet, batch):
    class Boom:
        name, paper, needs_gradients, layerwise = "boom", "-", True, True

        def __call__(self, ctx):
            raise RuntimeError("boom")

    base = hook_count(resnet)
    with pytest.raises(RuntimeError):
        CAMEngine(resnet, ["gradcam", Boom()])(batch)
    assert hook_count(resnet) == base
    assert not resnet.training


def test_construction_errors(resnet):
    with pytest.raises(HemwslInputError, match="accepted values: .*gradcam"):
        CAMEngine(resnet, ["gradcam", "nope"])
    with pytest.raises(HemwslInputError, match="not found"):
        CAMEngine(resnet, ["gradcam"], layers=["layer9"])
    with pytest.raises(HemwslInputError, match="only at the layer feeding"):
        CAMEngine(resnet, ["cam"])  # default layers include layer2, layer3
    with pytest.raises(HemwslInputError, match="fuse"):
        CAMEngine(resnet, ["gradcam"], fuse="sum")
    with pytest.raises(HemwslInputError, match="twice"):
        CAMEngine(resnet, ["gradcam", "gradcam"])
    with pytest.raises(HemwslInputError, match="not requested"):
        CAMEngine(resnet, ["gradcam"], method_options={"scorecam": {"batch_size": 2}})
    with pytest.raises(HemwslInputError, match="B, C, H, W"):
        CAMEngine(resnet, ["gradcam"])(torch.zeros(3, 64, 64))


def test_cam_equals_gradcam_times_hw_at_head_layer(resnet, batch):
    out = CAMEngine(resnet, ["cam", "gradcam"], layers=["layer4"]).feature_maps(batch)
    h, w = out[("cam", "layer4")].shape[-2:]
    torch.testing.assert_close(out[("cam", "layer4")], out[("gradcam", "layer4")] * h * w, rtol=1e-4, atol=1e-6)


def test_multilabel_targets_per_sample(resnet_multi):
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    engine = CAMEngine(resnet_multi, ["gradcam", "cam"], layers=["layer4"])
    joint = engine.feature_maps(x, [0, 3, 5])
    assert engine.last_target.indices.tolist() == [0, 3, 5]
    torch.testing.assert_close(engine.last_scores, engine.last_logits[[0, 1, 2], [0, 3, 5]])
    for i, k in enumerate([0, 3, 5]):
        single = engine.feature_maps(x[i : i + 1], ClassTarget(k))
        for key in joint:
            torch.testing.assert_close(joint[key][i], single[key][0], rtol=1e-4, atol=1e-6)
    # default target of a multi-output model: the argmax
    engine.feature_maps(x)
    assert engine.last_target.indices.tolist() == engine.last_logits.argmax(1).tolist()
    # different classes give different maps
    a = engine.feature_maps(x, 1)[("cam", "layer4")]
    b = engine.feature_maps(x, 2)[("cam", "layer4")]
    assert not torch.allclose(a, b)


def test_callable_target(resnet_multi):
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    engine = CAMEngine(resnet_multi, ["gradcam", "hirescam", "ablationcam"], layers=["layer3", "layer4"])
    # a linear callable: logit 1 + logit 4 -> gradients add up
    both = engine.feature_maps(x, lambda lg: lg[:, 1] + lg[:, 4])
    assert engine.last_target.indices is None
    e1 = CAMEngine(resnet_multi, ["hirescam"], layers=["layer3", "layer4"], relu=False)
    s = {k: v for k, v in e1.feature_maps(x, 1).items()}
    t = {k: v for k, v in e1.feature_maps(x, 4).items()}
    e2 = CAMEngine(resnet_multi, ["hirescam"], layers=["layer3", "layer4"], relu=False)
    u = e2.feature_maps(x, lambda lg: lg[:, 1] + lg[:, 4])
    for key in u:
        torch.testing.assert_close(u[key], s[key] + t[key], rtol=1e-4, atol=1e-6)
    assert set(both) == {(m, layer) for m in ("gradcam", "hirescam", "ablationcam") for layer in ("layer3", "layer4")}
    # a callable equal to a class target gives the same Ablation-CAM (generic path vs closed form)
    f = engine.feature_maps(x, lambda lg: lg[:, 2])
    g = engine.feature_maps(x, 2)
    for key in f:
        torch.testing.assert_close(f[key], g[key], rtol=1e-3, atol=1e-5)
    with pytest.raises(HemwslInputError, match="callable"):
        CAMEngine(resnet_multi, ["cam"], layers=["layer4"])(x, lambda lg: lg[:, 0])


def test_resolve_targets():
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.5]])
    assert resolve_targets(None, 2, 3, logits).indices.tolist() == [1, 0]
    assert resolve_targets(None, 2, 1).indices.tolist() == [0, 0]
    assert resolve_targets(2, 2, 3).indices.tolist() == [2, 2]
    assert resolve_targets(ClassTarget(1), 2, 3).indices.tolist() == [1, 1]
    assert resolve_targets([2, 0], 2, 3).indices.tolist() == [2, 0]
    assert resolve_targets(torch.tensor([1, 2]), 2, 3).indices.tolist() == [1, 2]
    assert resolve_targets(np.int64(1), 2, 3).indices.tolist() == [1, 1]
    t = resolve_targets(lambda lg: lg.sum(1), 2, 3)
    assert t.indices is None
    torch.testing.assert_close(t.scores(logits), logits.sum(1))
    torch.testing.assert_close(resolve_targets([2, 0], 2, 3).scores(logits), torch.tensor([-1.0, 3.0]))
    for bad in (3, -1, [0, 5], [0], 1.5, True, [0.0, 1.0], "x"):
        with pytest.raises(HemwslInputError):
            resolve_targets(bad, 2, 3)
    with pytest.raises(HemwslInputError):
        ClassTarget(-1)
    with pytest.raises(HemwslInputError, match="out of range"):
        ClassTarget(4)(logits)


def test_capture_single_backward_no_param_grads(resnet, batch):
    base = hook_count(resnet)
    with capture(resnet, ["layer2", "layer4"]) as cap:
        out = resnet(batch.clone().requires_grad_(True))
        cap.check()
        grads = cap.gradients(out[:, 0])
    assert set(grads) == {"layer2", "layer4"}
    assert grads["layer4"].shape == cap.activations["layer4"].shape
    assert all(p.grad is None for p in resnet.parameters())
    assert hook_count(resnet) == base
    with pytest.raises(ValueError):
        with capture(resnet, ["layer4"]):
            raise ValueError("inside")
    assert hook_count(resnet) == base


def test_fuse_and_output_size(resnet, batch):
    engine = CAMEngine(resnet, ["gradcam", "layercam"], output_size=(32, 48), fuse="max")
    out = engine(batch)
    key = ("gradcam", fused_layer_name("max"))
    assert key in out and ("layercam", "fused_max") in out
    assert out[("gradcam", "layer2")].shape == (2, 32, 48)
    stack = torch.stack([normalize_per_slice(out[("gradcam", layer)]) for layer in engine.layer_names])
    torch.testing.assert_close(out[key], stack.amax(0))
    assert len(CAMEngine(resnet, ["gradcam"])(batch)) == 3  # no fusion unless asked


def test_relu_false_gives_signed_maps(resnet, batch):
    raw = CAMEngine(resnet, ["gradcam"], relu=False).feature_maps(batch)
    rel = CAMEngine(resnet, ["gradcam"]).feature_maps(batch)
    for key in raw:
        torch.testing.assert_close(torch.relu(raw[key]), rel[key])
    assert any(float(v.min()) < 0 for v in raw.values())


def test_all_registered_methods_run(resnet, batch):
    # Score-CAM has its own (oracle) tests; lse_heatmap is defined on LSE heatmap networks only (tests/cam/test_lse_heatmap.py)
    methods = [m for m in list_methods() if m not in ("scorecam", "lse_heatmap")]
    out = CAMEngine(resnet, methods, skip_inapplicable=True, method_options={"ablationcam": {"batch_size": 200}})(batch)
    assert {m for m, _ in out} == set(methods)
