"""The method registry, and room for input-attribution methods."""

from __future__ import annotations

import pytest
import torch

from hemwsl.cam import (
    CAM_METHODS,
    INPUT_LAYER,
    CAMEngine,
    CAMMethod,
    get_method,
    list_methods,
    register_method,
    resolve_targets,
)
from hemwsl.cam.registry import PGC_METHODS
from hemwsl.errors import HemwslInputError

EXPECTED = ["cam", "gradcam", "gradcampp", "xgradcam", "hirescam", "gradcam_elementwise", "layercam",
            "eigencam", "eigengradcam", "ablationcam", "scorecam", "fasterscorecam", "groupcam", "reciprocam", "lse_heatmap"]


ATTRIBUTION = ["saliency", "input_x_gradient", "smoothgrad", "gradient_shap", "guided_backprop"]


def test_names_and_metadata():
    assert list_methods(layerwise=True) == EXPECTED
    assert list_methods(layerwise=False) == ATTRIBUTION  # one registry for CAM and attribution methods
    assert list_methods() == EXPECTED + ATTRIBUTION
    assert set(PGC_METHODS) <= set(CAM_METHODS)
    for name in EXPECTED:
        cls = CAM_METHODS[name]
        assert issubclass(cls, CAMMethod) and cls.name == name
        assert cls.paper and isinstance(cls.needs_gradients, bool)
        assert cls.__doc__ and "Reference" in cls.__doc__
    assert not get_method("eigencam").needs_gradients
    assert not get_method("scorecam").needs_gradients
    assert get_method("layercam").needs_gradients
    with pytest.raises(HemwslInputError, match="accepted values: cam, gradcam"):
        get_method("gradcam++")


def test_register_an_input_attribution_method(resnet, batch):
    class Saliency:
        name = "test_saliency"
        paper = "Simonyan et al., ICLR Workshop 2014"
        needs_gradients = True
        layerwise = False

        def attribute(self, model, x, target):
            x = x.clone().requires_grad_(True)
            with torch.enable_grad():
                logits = model(x)
                scores = resolve_targets(target, x.shape[0], logits.shape[1], logits).scores(logits)
                (g,) = torch.autograd.grad(scores.sum(), x)
            return g.abs().amax(dim=1)

    register_method(Saliency)
    try:
        assert "test_saliency" in list_methods(layerwise=False)
        assert "test_saliency" not in list_methods(layerwise=True)
        out = CAMEngine(resnet, ["gradcam", "test_saliency"], layers=["layer4"])(batch)
        assert out[("test_saliency", INPUT_LAYER)].shape == (2, 64, 64)
        assert ("gradcam", "layer4") in out
        with pytest.raises(HemwslInputError, match="already registered"):
            register_method(type("Other", (Saliency,), {}), name="test_saliency")
    finally:
        CAM_METHODS.pop("test_saliency", None)
    class CallStyle:  # the __call__ flavour of the same interface
        name, paper, needs_gradients, layerwise = "test_ones", "-", False, False

        def __call__(self, model, x, target):
            return torch.ones(x.shape[0], *x.shape[2:], device=x.device)

    register_method(CallStyle)
    try:
        out = CAMEngine(resnet, ["test_ones"])(batch)
        assert torch.equal(out[("test_ones", INPUT_LAYER)], torch.ones(2, 64, 64))
    finally:
        CAM_METHODS.pop("test_ones", None)
    with pytest.raises(HemwslInputError, match="class"):
        register_method(CallStyle())
    # the attribution classes of hemwsl.cam.attribution are registered by default
    from hemwsl.cam import attribution

    assert CAM_METHODS["saliency"] is attribution.Saliency
    engine = CAMEngine(resnet, ["gradcam", "saliency"], layers=["layer4"])
    out = engine(batch, [0, 0])
    expected = attribution.saliency(resnet, batch, torch.tensor([0, 0]))
    torch.testing.assert_close(out[("saliency", INPUT_LAYER)], expected)
    with pytest.raises(HemwslInputError, match="attribute"):
        register_method(type("Bad", (), {"name": "bad", "paper": "-", "needs_gradients": False, "layerwise": False}))
