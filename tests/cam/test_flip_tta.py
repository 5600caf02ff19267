"""Flip test-time augmentation of heatmaps (``explain_volume(flip_tta=True)``, ``cam-cv --flip-tta``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hemwsl.cam import CAMEngine, explain_volume
from hemwsl.errors import HemwslInputError

Z = 4


@pytest.fixture(scope="module")
def stack():
    return torch.randn(Z, 3, 48, 40, generator=torch.Generator().manual_seed(11))


@pytest.fixture
def engine(resnet):
    return CAMEngine(resnet, ["gradcam", "eigencam"], layers=["layer3", "layer4"])


def test_the_mean_of_the_slice_and_its_flip_by_hand(engine, stack):
    vols, prob = explain_volume(engine, stack, batch_size=3, flip_tta=True, gate_with_probability=True,
                                return_probabilities=True)
    plain = explain_volume(engine, stack, batch_size=3)
    flipped = explain_volume(engine, stack.flip(-1), batch_size=3)
    with torch.no_grad():
        p = (torch.sigmoid(engine.model(stack)[:, 0]) + torch.sigmoid(engine.model(stack.flip(-1))[:, 0])) / 2
    np.testing.assert_allclose(prob, p.numpy(), rtol=1e-5)
    for key, vol in vols.items():
        want = (plain[key] + flipped[key][:, ::-1, :]) / 2 * prob[None, None, :]  # (X, Y, Z): Y is the flipped axis
        np.testing.assert_allclose(vol, want, rtol=1e-4, atol=1e-6)


def test_the_map_no_longer_depends_on_the_side(engine, stack):
    a = explain_volume(engine, stack, batch_size=4, flip_tta=True)
    b = explain_volume(engine, stack.flip(-1), batch_size=4, flip_tta=True)
    plain_a = explain_volume(engine, stack, batch_size=4)
    plain_b = explain_volume(engine, stack.flip(-1), batch_size=4)
    for key in a:
        np.testing.assert_allclose(a[key], b[key][:, ::-1, :], rtol=1e-4, atol=1e-6)
        assert not np.allclose(plain_a[key], plain_b[key][:, ::-1, :], atol=1e-4)  # without it, it does


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_flip_tta_must_be_a_boolean(engine, stack, value):
    with pytest.raises(HemwslInputError, match="flip_tta must be true or false"):
        explain_volume(engine, stack, flip_tta=value)


def test_run_cam_with_flip_tta_is_its_own_run(synthetic_datalist, tmp_path):
    """run_cam(flip_tta=True) writes the flipped mean; a folder done without it is computed again with it, and the
    cam-cv record of such a folder names it, so plain and flipped maps never mix."""
    import nibabel as nib

    from hemwsl.data.settings import InputSettings
    from hemwsl.engines.cam import run_cam
    from hemwsl.engines.runs import check_checkpoint_marker
    from hemwsl.networks import build_network

    torch.manual_seed(0)
    net = build_network("resnet10", in_channels=3)
    kw = dict(methods=["layercam"], layers=["layer4"], inputs=InputSettings(windows=["brain"], spatial_size=(32, 32)),
              progress=False, grid="input")
    plain = run_cam(net, synthetic_datalist[:1], tmp_path, **kw)
    before = np.asarray(nib.load(str(plain[0])).dataobj)
    tta = run_cam(net, synthetic_datalist[:1], tmp_path, flip_tta=True, **kw)
    after = np.asarray(nib.load(str(tta[0])).dataobj)
    assert before.any() and tta == plain and not np.allclose(before, after)  # recomputed, not taken as done
    assert len(list((tmp_path / ".done").iterdir())) == 2
    with pytest.raises(HemwslInputError, match="flip_tta must be true or false"):
        run_cam(net, synthetic_datalist[:1], tmp_path, flip_tta="yes", **kw)
    check_checkpoint_marker(tmp_path / "cams", tmp_path / "cv", "last", "heatmaps", settings={"grid": "input"})
    with pytest.raises(HemwslInputError, match="flip_tta"):
        check_checkpoint_marker(tmp_path / "cams", tmp_path / "cv", "last", "heatmaps",
                                settings={"grid": "input", "flip_tta": True})
