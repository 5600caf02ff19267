"""hemwsl's Grad-CAM, Grad-CAM++ and CAM against MONAI's ``monai.visualize`` implementations.

MONAI's default post-processing maps max -> 0 and min -> 1, so MONAI runs with an identity
``postprocessing`` and raw maps are compared (both upsample with ``F.interpolate`` bilinear,
``align_corners=False``). MONAI registers hooks it never removes, so it gets a copy of the model.
"""

from __future__ import annotations

import copy

import pytest
import torch

from hemwsl.cam import CAMEngine, normalize_per_slice

monai_vis = pytest.importorskip("monai.visualize")

LAYERS = ("layer2", "layer3", "layer4")


def _identity(x):
    return x


def test_gradcam_raw_maps_match_monai(resnet64, batch):
    x = batch.double()
    ours = CAMEngine(resnet64, ["gradcam"])(x, 0)
    for layer in LAYERS:
        ref = monai_vis.GradCAM(copy.deepcopy(resnet64), layer, postprocessing=_identity)(x, class_idx=0)[:, 0].detach()
        assert float(ref.max()) > 0
        torch.testing.assert_close(ours[("gradcam", layer)], ref, rtol=1e-7, atol=1e-9 * float(ref.max()))


def test_gradcampp_matches_monai_at_the_head_layer(resnet64, batch):
    """MONAI's GradCAMpp: batch 1 only (its exp(score) factor breaks for B > 1) and its alpha sums
    ``A * g^3`` over space; that equals the paper's ``sum(A) * g^3`` (hemwsl, pytorch-grad-cam) where the
    gradient is spatially constant, i.e. at ``layer4`` which feeds global average pooling + Linear.
    MONAI also scales by ``exp(S)``: compare after min-max normalisation, with MONAI's eps."""
    engine = CAMEngine(resnet64, ["gradcampp"], layers=["layer4"], method_options={"gradcampp": {"eps": 1e-7}})
    for b in range(batch.shape[0]):
        x = batch[b : b + 1].double()
        ref = monai_vis.GradCAMpp(copy.deepcopy(resnet64), "layer4", postprocessing=_identity)(x, class_idx=0)[:, 0].detach()
        ours = engine(x, 0)[("gradcampp", "layer4")]
        torch.testing.assert_close(normalize_per_slice(ours), normalize_per_slice(ref), rtol=0, atol=1e-6)


def test_cam_matches_monai_cam_plus_bias(resnet64, batch):
    """Zhou et al.'s CAM has no bias; MONAI's CAM evaluates the whole Linear at each position."""
    x = batch.double()
    ours = CAMEngine(resnet64, ["cam"], layers=["layer4"], relu=False)(x, 0)[("cam", "layer4")]
    ref = monai_vis.CAM(copy.deepcopy(resnet64), "layer4", fc_layers="fc.1", postprocessing=_identity)(x)[:, 0].detach()
    bias = resnet64.fc[1].bias[0].item()
    torch.testing.assert_close(ours + bias, ref, rtol=1e-9, atol=1e-9)
