"""Gradient attribution methods against hand-written references on tiny networks."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hemwsl.cam.attribution import (
    ATTRIBUTION_CLASSES,
    ATTRIBUTION_METHODS,
    GUIDED_ACTIVATIONS,
    AttributionMethod,
    GradientShap,
    InputXGradient,
    get_attribution_method,
    gradient_shap,
    guided_activations,
    guided_backprop,
    guided_gradcam,
    input_x_gradient,
    reduce_channels,
    saliency,
    smoothgrad,
)
from hemwsl.errors import HemwslInputError

C, H, W = 3, 5, 6


class LinearModel(nn.Module):
    """y = W . flatten(x) + b, K outputs."""

    def __init__(self, k: int = 1) -> None:
        super().__init__()
        self.fc = nn.Linear(C * H * W, k)

    def forward(self, x):
        return self.fc(x.flatten(1))

    def weight(self, k: int = 0) -> torch.Tensor:
        return self.fc.weight[k].detach().reshape(C, H, W)


class TanhModel(nn.Module):
    """A smooth non-linear single-logit model."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(C * H * W, 8)
        self.fc2 = nn.Linear(8, 1)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x.flatten(1))))


class ConvNet(nn.Module):
    """conv - act - conv - act - GAP - linear, activations as modules."""

    def __init__(self, act: type[nn.Module] = nn.ReLU, k: int = 3, inplace: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(C, 4, 3, padding=1)
        self.act1 = act(inplace=inplace) if act in (nn.ReLU, nn.ReLU6) else act()
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
        self.act2 = act(inplace=inplace) if act in (nn.ReLU, nn.ReLU6) else act()
        self.fc = nn.Linear(5, k)

    def forward(self, x):
        a = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.fc(a.mean(dim=(2, 3)))


class BNNet(nn.Module):
    """Conv net with batch norm and dropout: batch-coupled and random in training mode."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(C, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.drop(self.relu(self.bn(self.conv(x))).mean(dim=(2, 3))))


class RaisingNet(ConvNet):
    def forward(self, x):
        self.act1(self.conv1(x))
        raise RuntimeError("boom")


def _seed(n: int = 0) -> None:
    torch.manual_seed(n)


def _x(b: int = 4, seed: int = 1, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, C, H, W, generator=g, dtype=dtype)


def _no_param_grads(model: nn.Module) -> bool:
    return all(p.grad is None for p in model.parameters())


# ------------------------------------------------------------------------------- linear model (a)


def test_saliency_of_linear_model_is_abs_weight_max_over_channels():
    _seed()
    model = LinearModel(k=1).double()
    x = _x()
    sal = saliency(model, x)
    assert sal.shape == (4, H, W) and sal.dtype == torch.float64
    expected = model.weight().abs().amax(dim=0)
    torch.testing.assert_close(sal, expected.expand(4, H, W), rtol=0, atol=1e-12)
    raw = saliency(model, x, reduce="none", absolute=False)
    torch.testing.assert_close(raw, model.weight().expand(4, C, H, W), rtol=0, atol=1e-12)
    torch.testing.assert_close(saliency(model, x, reduce="sum"), model.weight().abs().sum(0).expand(4, H, W))
    assert _no_param_grads(model)


def test_input_x_gradient_of_linear_model_is_w_times_x():
    _seed()
    model = LinearModel(k=1).double()
    x = _x()
    ixg = input_x_gradient(model, x, reduce="none")
    torch.testing.assert_close(ixg, model.weight() * x, rtol=0, atol=1e-12)
    summed = input_x_gradient(model, x)  # default: signed channel sum
    torch.testing.assert_close(summed, (model.weight() * x).sum(1), rtol=0, atol=1e-12)
    assert (summed < 0).any()  # signed
    # completeness for a bias-free linear model
    with torch.no_grad():
        f = model(x)[:, 0] - model.fc.bias[0]
    torch.testing.assert_close(summed.sum(dim=(1, 2)), f)
    torch.testing.assert_close(input_x_gradient(model, x, absolute=True), (model.weight() * x).abs().sum(1))


def test_smoothgrad_of_linear_model_is_the_gradient():
    _seed()
    model = LinearModel(k=1).double()
    x = _x()
    sg = smoothgrad(model, x, n_samples=7, noise_level=0.3, reduce="none", absolute=False, batch_size=5)
    torch.testing.assert_close(sg, model.weight().expand(4, C, H, W), rtol=0, atol=1e-12)
    torch.testing.assert_close(smoothgrad(model, x, n_samples=3), saliency(model, x), rtol=0, atol=1e-12)


def test_gradient_shap_zero_baseline_linear_model_is_w_times_x():
    _seed()
    model = LinearModel(k=1).double()
    x = _x()
    gs = gradient_shap(model, x, n_samples=4, reduce="none")
    torch.testing.assert_close(gs, model.weight() * x, rtol=0, atol=1e-12)
    # constant baseline: w * (x - b) exactly, completeness f(x) - f(b) exactly
    gs = gradient_shap(model, x, baselines=0.5, n_samples=3)
    with torch.no_grad():
        diff = model(x)[:, 0] - model(torch.full_like(x, 0.5))[:, 0]
    torch.testing.assert_close(gs.sum(dim=(1, 2)), diff)


def test_gradient_shap_completeness_with_noise_and_baseline_distribution():
    _seed()
    model = LinearModel(k=1).double()
    x = _x(b=2)
    n = 4000
    # noise: E[w * (x + s eps)] = w * x, Monte-Carlo error ~ s |w| sqrt(D / n)
    gs = gradient_shap(model, x, n_samples=n, stdevs=0.2, batch_size=None, reduce="none")
    with torch.no_grad():
        f = model(x)[:, 0] - model.fc.bias[0]
    tol = 4 * 0.2 * model.weight().norm().item() / n**0.5
    assert torch.allclose(gs.sum(dim=(1, 2, 3)), f, atol=tol)
    assert (gs - model.weight() * x).abs().max() < 0.05
    # baseline distribution: sum -> f(x) - E_b f(b)
    base = torch.randn(6, C, H, W, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    gs = gradient_shap(model, x, baselines=base, n_samples=n, batch_size=None)
    with torch.no_grad():
        expected = model(x)[:, 0] - model(base)[:, 0].mean()
        spread = model(base)[:, 0].std()
    assert torch.allclose(gs.sum(dim=(1, 2)), expected, atol=4 * spread.item() / n**0.5)


def test_gradient_shap_completeness_nonlinear_model():
    _seed(3)
    model = TanhModel().double()
    x = _x(b=2)
    gs = gradient_shap(model, x, n_samples=3000, batch_size=1000)
    with torch.no_grad():
        expected = model(x)[:, 0] - model(torch.zeros_like(x))[:, 0]
    assert torch.allclose(gs.sum(dim=(1, 2)), expected, atol=0.02 * expected.abs().max().item() + 1e-3)


def test_random_methods_are_seeded():
    _seed(3)
    model = TanhModel().double()
    x = _x(b=2)
    a = smoothgrad(model, x, n_samples=5, seed=1)
    torch.testing.assert_close(a, smoothgrad(model, x, n_samples=5, seed=1), rtol=0, atol=0)
    assert not torch.allclose(a, smoothgrad(model, x, n_samples=5, seed=2))
    b = gradient_shap(model, x, n_samples=5, stdevs=0.1, seed=1)
    torch.testing.assert_close(b, gradient_shap(model, x, n_samples=5, stdevs=0.1, seed=1), rtol=0, atol=0)
    assert not torch.allclose(b, gradient_shap(model, x, n_samples=5, stdevs=0.1, seed=2))


def test_smoothgrad_matches_explicit_loop():
    _seed(3)
    model = TanhModel().double()
    x = _x(b=2)
    n, level, seed = 6, 0.2, 7
    got = smoothgrad(model, x, n_samples=n, noise_level=level, seed=seed, reduce="none", absolute=False)
    noise = torch.randn((n, C, H, W), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    for i in range(2):
        sigma = level * (x[i].max() - x[i].min())
        xs = (x[i] + sigma * noise).requires_grad_(True)
        (g,) = torch.autograd.grad(model(xs)[:, 0].sum(), xs)
        torch.testing.assert_close(got[i], g.mean(0))


# ------------------------------------------------------------------------------- guided backprop (b)


class _RefGuidedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x > 0).to(grad.dtype) * (grad > 0).to(grad.dtype)


class _RefGuidedModule(nn.Module):
    def forward(self, x):
        return _RefGuidedReLU.apply(x)


def _manual_guided(model: ConvNet, x: torch.Tensor, target: int, derivative) -> torch.Tensor:
    """Explicit backward pass of ConvNet with the guided rule ``max(dy, 0) * act'(z)``."""
    from torch.nn.grad import conv2d_input

    with torch.no_grad():
        z1 = model.conv1(x)
        a1 = model.act1(z1.clone())  # clone: the activation may be in place
        z2 = model.conv2(a1)
        hw = z2.shape[2] * z2.shape[3]
        d_a2 = (model.fc.weight[target] / hw)[None, :, None, None].expand_as(z2)
        d_z2 = d_a2.clamp(min=0) * derivative(z2)
        d_a1 = conv2d_input(x.shape[:1] + z1.shape[1:], model.conv2.weight, d_z2, padding=1)
        d_z1 = d_a1.clamp(min=0) * derivative(z1)
        return conv2d_input(x.shape, model.conv1.weight, d_z1, padding=1)


def _sign_mixed_convnet(act=nn.ReLU, k=3, inplace=False) -> ConvNet:
    _seed(11)
    model = ConvNet(act, k=k, inplace=inplace).double()
    with torch.no_grad():  # negative last-layer weights so that the guided clamp matters
        model.fc.weight.copy_(torch.randn_like(model.fc.weight))
    return model


def test_guided_backprop_relu_matches_manual_backward_and_function_reference():
    model = _sign_mixed_convnet(inplace=True)
    x = _x(b=3)
    got = guided_backprop(model, x, target=1, reduce="none", absolute=False)
    manual = _manual_guided(model, x, 1, lambda z: (z > 0).double())
    torch.testing.assert_close(got, manual)
    # reference through a hand-written autograd Function on a copy
    ref_model = copy.deepcopy(model)
    ref_model.act1, ref_model.act2 = _RefGuidedModule(), _RefGuidedModule()
    xr = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(ref_model(xr)[:, 1].sum(), xr)
    torch.testing.assert_close(got, ref)
    # differs from the plain gradient, and the reduced map is max |.| over channels
    assert not torch.allclose(got, saliency(model, x, target=1, reduce="none", absolute=False))
    torch.testing.assert_close(guided_backprop(model, x, target=1), got.abs().amax(1))
    assert _no_param_grads(model)


@pytest.mark.parametrize(
    "act, derivative",
    [
        (nn.SiLU, lambda z: torch.sigmoid(z) * (1 + z * (1 - torch.sigmoid(z)))),
        (nn.ReLU6, lambda z: ((z > 0) & (z < 6)).double()),
    ],
)
def test_guided_backprop_silu_relu6_rule(act, derivative):
    model = _sign_mixed_convnet(act)
    with torch.no_grad():
        model.conv1.weight.mul_(8)  # push some pre-activations above 6 for ReLU6
    x = _x(b=2)
    got = guided_backprop(model, x, target=2, reduce="none", absolute=False)
    torch.testing.assert_close(got, _manual_guided(model, x, 2, derivative))


def test_guided_backprop_matches_pytorch_grad_cam():
    pgc = pytest.importorskip("pytorch_grad_cam")
    model = _sign_mixed_convnet().float()
    x = _x(b=1, dtype=torch.float32)
    ours = guided_backprop(model, x, target=2, reduce="none", absolute=False)[0]
    theirs = pgc.GuidedBackpropReLUModel(copy.deepcopy(model), device="cpu")(x.clone(), target_category=2)
    np.testing.assert_allclose(ours.permute(1, 2, 0).numpy(), theirs, rtol=1e-5, atol=1e-7)


def test_guided_activations_patches_and_restores():
    model = _sign_mixed_convnet()
    with guided_activations(model) as n:
        assert n == 2
        assert "forward" in model.act1.__dict__
    assert "forward" not in model.act1.__dict__ and "forward" not in model.act2.__dict__
    with pytest.raises(HemwslInputError, match="no guided rule"):
        with guided_activations(model, (nn.GELU,)):
            pass
    # only ReLU selected on a SiLU net -> nothing patched, plain gradient with a warning
    silu = _sign_mixed_convnet(nn.SiLU)
    x = _x(b=2)
    with pytest.warns(UserWarning, match="plain gradient"):
        got = guided_backprop(silu, x, activations=(nn.ReLU,), reduce="none", absolute=False)
    torch.testing.assert_close(got, saliency(silu, x, reduce="none", absolute=False))
    assert set(GUIDED_ACTIVATIONS) == {nn.ReLU, nn.ReLU6, nn.SiLU}


# ------------------------------------------------------------------------------- batch independence (c)


@pytest.mark.parametrize("name", sorted(ATTRIBUTION_METHODS))
def test_batch_equals_per_sample(name):
    _seed(5)
    model = BNNet().double().train()  # batch norm in training mode would couple the samples
    x = _x(b=3)
    kwargs = {"n_samples": 5} if name in ("smoothgrad", "gradient_shap") else {}
    if name == "gradient_shap":
        kwargs["stdevs"] = 0.1
    fn = ATTRIBUTION_METHODS[name]
    whole = fn(model, x, target=[0, 1, 1], **kwargs)
    chunked = fn(model, x, target=[0, 1, 1], batch_size=2, **kwargs)
    single = torch.cat([fn(model, x[i : i + 1], target=[t], **kwargs) for i, t in enumerate([0, 1, 1])])
    torch.testing.assert_close(whole, single)
    torch.testing.assert_close(whole, chunked)
    assert model.training and model.bn.training and model.drop.training
    assert _no_param_grads(model)


# ------------------------------------------------------------------------------- state (d)


@pytest.mark.parametrize("name", sorted(ATTRIBUTION_METHODS))
def test_params_training_flags_and_requires_grad_untouched(name):
    _seed(5)
    model = BNNet().double()
    model.train()
    model.drop.eval()  # mixed flags must come back exactly
    x = _x(b=2)
    kwargs = {"n_samples": 2} if name in ("smoothgrad", "gradient_shap") else {}
    out = ATTRIBUTION_METHODS[name](model, x, **kwargs)
    assert out.shape == (2, H, W) and not out.requires_grad
    assert _no_param_grads(model)
    assert all(p.requires_grad for p in model.parameters())
    assert model.training and model.conv.training and model.bn.training and not model.drop.training
    assert not x.requires_grad and x.grad is None


def test_eval_mode_false_keeps_training_behaviour():
    _seed(5)
    model = BNNet().double().train()
    x = _x(b=3)
    a = saliency(model, x, eval_mode=False)
    b = saliency(model, x, eval_mode=False)
    assert not torch.allclose(a, b)  # dropout active
    assert model.training


def test_modules_restored_after_exception_in_forward():
    _seed(0)
    model = RaisingNet().double()
    model.train()
    model.act2.eval()
    with pytest.raises(RuntimeError, match="boom"):
        guided_backprop(model, _x(b=2))
    for module in model.modules():
        assert "forward" not in module.__dict__
    assert model.training and model.act1.training and not model.act2.training
    assert _no_param_grads(model)
    # the activation behaves as a normal ReLU again: plain gradient through it
    z = torch.tensor([-1.0, 2.0], requires_grad=True)
    (g,) = torch.autograd.grad((model.act1(z) * torch.tensor([1.0, -3.0])).sum(), z)
    torch.testing.assert_close(g, torch.tensor([0.0, -3.0]))
    for name in ("saliency", "smoothgrad", "gradient_shap"):
        with pytest.raises(RuntimeError, match="boom"):
            ATTRIBUTION_METHODS[name](model, _x(b=2))
        assert model.training and not model.act2.training


def test_preexisting_instance_forward_is_restored():
    model = _sign_mixed_convnet()
    marker = model.act1.forward  # bound method stored as an instance attribute

    def custom(inp):
        return marker(inp)

    model.act1.forward = custom
    guided_backprop(model, _x(b=1))
    assert model.act1.__dict__["forward"] is custom
    assert "forward" not in model.act2.__dict__


def test_works_under_no_grad_and_inference_mode():
    _seed()
    model = LinearModel(k=1).double()
    x = _x(b=2)
    expected = input_x_gradient(model, x)
    with torch.no_grad():
        torch.testing.assert_close(input_x_gradient(model, x), expected)
    with torch.inference_mode():
        xi = x.clone()
        torch.testing.assert_close(input_x_gradient(model, xi), expected)
        torch.testing.assert_close(gradient_shap(model, xi, n_samples=2), expected)
        assert smoothgrad(model, xi, n_samples=2).shape == (2, H, W)


# ------------------------------------------------------------------------------- targets (e)


def _grad(model, x, score_fn):
    xs = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(score_fn(model(xs)).sum(), xs)
    return g


def test_targets_int_list_tensor_argmax_callable():
    model = _sign_mixed_convnet(k=3)
    x = _x(b=4)
    with torch.no_grad():
        logits = model(x)
    rows = torch.arange(4)
    argmax = logits.argmax(1)
    raw = dict(reduce="none", absolute=False)
    for target, idx in [
        (2, torch.full((4,), 2)),
        ([0, 2, 1, 0], torch.tensor([0, 2, 1, 0])),
        (torch.tensor([1, 1, 0, 2]), torch.tensor([1, 1, 0, 2])),
        (torch.tensor(1), torch.full((4,), 1)),
        (None, argmax),
    ]:
        expected = _grad(model, x, lambda z, idx=idx: z[rows, idx])
        torch.testing.assert_close(saliency(model, x, target, **raw), expected)
        torch.testing.assert_close(smoothgrad(model, x, target, noise_level=0.0, n_samples=2, **raw), expected)
    fn = lambda z: z[:, 1] - z[:, 0]  # noqa: E731
    torch.testing.assert_close(saliency(model, x, fn, **raw), _grad(model, x, fn))
    torch.testing.assert_close(
        smoothgrad(model, x, fn, noise_level=0.0, n_samples=3, batch_size=5, **raw), _grad(model, x, fn)
    )
    torch.testing.assert_close(
        input_x_gradient(model, x, fn, reduce="none"), x * _grad(model, x, fn)
    )


def test_argmax_target_for_noisy_methods_is_taken_on_clean_input():
    model = _sign_mixed_convnet(k=3)
    x = _x(b=3)
    with torch.no_grad():
        idx = model(x).argmax(1).tolist()
    kw = dict(n_samples=4, noise_level=0.5, seed=2)
    torch.testing.assert_close(smoothgrad(model, x, **kw), smoothgrad(model, x, target=idx, **kw))
    kw = dict(n_samples=4, stdevs=0.5, seed=2)
    torch.testing.assert_close(gradient_shap(model, x, **kw), gradient_shap(model, x, target=idx, **kw))


def test_single_logit_and_1d_output_default_target():
    _seed()
    lin = LinearModel(k=1).double()

    class Squeezed(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = lin

        def forward(self, x):
            return self.inner(x)[:, 0]

    x = _x(b=2)
    torch.testing.assert_close(saliency(Squeezed(), x), saliency(lin, x))
    torch.testing.assert_close(saliency(lin, x, target=0), saliency(lin, x))


@pytest.mark.parametrize(
    "target, match",
    [
        (3, "out of range"),
        ([0, 1], "2 logit indices for a batch of 4"),
        ("a", "target must be"),
        (torch.tensor([0.5, 1.0, 1.0, 1.0]), "integer"),
        (lambda z: z, "callable target"),
        (True, "target must be"),
    ],
)
def test_bad_targets(target, match):
    model = _sign_mixed_convnet(k=3)
    with pytest.raises(HemwslInputError, match=match):
        saliency(model, _x(b=4), target)


def test_bad_arguments():
    model = _sign_mixed_convnet(k=3)
    x = _x(b=2)
    with pytest.raises(HemwslInputError, match="reduce"):
        saliency(model, x, reduce="median")
    with pytest.raises(HemwslInputError, match="n_samples"):
        smoothgrad(model, x, n_samples=0)
    with pytest.raises(HemwslInputError, match="batch_size"):
        saliency(model, x, batch_size=0)
    with pytest.raises(HemwslInputError, match="batch"):
        saliency(model, x[0, 0])
    with pytest.raises(HemwslInputError, match="baselines"):
        gradient_shap(model, x, baselines=torch.zeros(2, 2, 2, 2))
    with pytest.raises(HemwslInputError, match="noise_level"):
        smoothgrad(model, x, noise_level=-1.0)


# ------------------------------------------------------------------------------- misc


def test_output_device_dtype_and_integer_input():
    _seed()
    model = LinearModel(k=1)
    x = (torch.rand(2, C, H, W) * 10).to(torch.int64)
    out = input_x_gradient(model, x)
    assert out.dtype == torch.float32 and out.device == x.device
    torch.testing.assert_close(out, (model.weight() * x.float()).sum(1))


def test_reduce_channels():
    a = torch.tensor([[[[1.0]], [[-3.0]]]])  # (1, 2, 1, 1)
    assert reduce_channels(a, "max").item() == 1.0
    assert reduce_channels(a, "max", absolute=True).item() == 3.0
    assert reduce_channels(a, "sum").item() == -2.0
    assert reduce_channels(a, "mean", absolute=True).item() == 2.0
    assert reduce_channels(a, "none") is a


def test_guided_gradcam_product_and_upsampling():
    guided = torch.rand(2, 3, 8, 8) - 0.5
    cam = torch.rand(2, 4, 4)
    out = guided_gradcam(guided, cam)
    up = F.interpolate(cam[:, None], size=(8, 8), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(out, guided.abs().amax(1) * up)
    same = guided_gradcam(guided.sum(1), up[:, None])
    torch.testing.assert_close(same, guided.sum(1) * up)
    with pytest.raises(HemwslInputError):
        guided_gradcam(guided, torch.rand(3, 4, 4))
    # end to end with a guided map of a conv net
    model = _sign_mixed_convnet()
    x = _x(b=2)
    gb = guided_backprop(model, x)
    assert guided_gradcam(gb, torch.ones(2, 1, 1)).shape == (2, H, W)


def test_registry_and_classes():
    assert set(ATTRIBUTION_METHODS) == set(ATTRIBUTION_CLASSES) == {
        "saliency",
        "input_x_gradient",
        "smoothgrad",
        "gradient_shap",
        "guided_backprop",
    }
    for name, cls in ATTRIBUTION_CLASSES.items():
        assert issubclass(cls, AttributionMethod) and cls.name == name
        assert cls.needs_gradients is True and cls.paper
    assert InputXGradient.signed and GradientShap.signed
    assert not ATTRIBUTION_CLASSES["saliency"].signed and not ATTRIBUTION_CLASSES["guided_backprop"].signed
    assert not ATTRIBUTION_CLASSES["smoothgrad"].signed
    method = get_attribution_method("smoothgrad", n_samples=3, seed=4)
    model = _sign_mixed_convnet()
    x = _x(b=2)
    torch.testing.assert_close(method(model, x, 1), smoothgrad(model, x, 1, n_samples=3, seed=4))
    assert not get_attribution_method("input_x_gradient", absolute=True).signed
    with pytest.raises(HemwslInputError, match="unknown option"):
        get_attribution_method("saliency", n_samples=3)
    with pytest.raises(HemwslInputError, match="attribution method"):
        get_attribution_method("lime")
