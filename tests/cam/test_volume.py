"""Volume assembly and NIfTI heatmaps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hemwsl.cam import CAMEngine, explain_volume, heatmap_path, save_heatmaps, volume_done
from hemwsl.constants import IMAGE, PATIENT, SLICE_INDEX
from hemwsl.errors import HemwslInputError

Z = 5


@pytest.fixture(scope="module")
def stack():
    return torch.randn(Z, 3, 64, 64, generator=torch.Generator().manual_seed(7))


@pytest.fixture
def engine(resnet):
    return CAMEngine(resnet, ["gradcam", "eigencam"], layers=["layer3", "layer4"])


def test_maps_at_the_right_z(engine, stack):
    vols = explain_volume(engine, stack, batch_size=2)
    assert set(vols) == set(engine.pairs)
    for key, vol in vols.items():
        assert vol.shape == (64, 64, Z) and vol.dtype == np.float32
    for z in range(Z):
        single = engine(stack[z : z + 1])
        for key, vol in vols.items():
            np.testing.assert_allclose(vol[:, :, z], single[key][0].numpy(), rtol=1e-4, atol=1e-6)


def test_dataset_samples_with_slice_index_gating_and_grid(engine, stack):
    order = [3, 0, 4]  # served out of order, slices 1 and 2 missing
    samples = [{IMAGE: stack[z], SLICE_INDEX: z, PATIENT: "p1"} for z in order]
    vols, prob = explain_volume(engine, samples, batch_size=2, depth=Z, gate_with_probability=True,
                                grid_shape=(96, 80), return_probabilities=True)
    ungated = explain_volume(engine, samples, batch_size=3, depth=Z, grid_shape=(96, 80))
    assert np.isnan(prob[1]) and np.isnan(prob[2])
    for key, vol in vols.items():
        assert vol.shape == (96, 80, Z)
        assert not vol[:, :, 1].any() and not vol[:, :, 2].any()
        for z in order:
            np.testing.assert_allclose(vol[:, :, z], ungated[key][:, :, z] * prob[z], rtol=1e-4, atol=1e-7)
    with torch.no_grad():
        logits = engine.model(stack[order])[:, 0]
    np.testing.assert_allclose(prob[order], torch.sigmoid(logits).numpy(), rtol=1e-5)


def test_normalize_volume_option(engine, stack):
    vols = explain_volume(engine, stack, batch_size=5, normalize="volume")
    for vol in vols.values():
        assert vol.max() == pytest.approx(1.0, abs=1e-5) and vol.min() >= 0
    sl = explain_volume(engine, stack, batch_size=5, normalize="slice")
    for vol in sl.values():
        for z in range(Z):
            assert vol[:, :, z].max() == pytest.approx(1.0, abs=1e-4) or vol[:, :, z].max() == 0


def test_errors(engine, stack):
    with pytest.raises(HemwslInputError, match="several volumes"):
        explain_volume(engine, [{IMAGE: stack[0], PATIENT: "a"}, {IMAGE: stack[1], PATIENT: "b"}])
    with pytest.raises(HemwslInputError, match="depth"):
        explain_volume(engine, stack, depth=2)
    with pytest.raises(HemwslInputError):
        explain_volume(engine, stack[0])
    with pytest.raises(HemwslInputError):
        explain_volume(engine, stack, batch_size=0)


def test_save_read_back_and_resume(engine, stack, tmp_path):
    nib = pytest.importorskip("nibabel")
    affine = np.diag([0.45, 0.45, 5.0, 1.0])
    affine[:3, 3] = [-100.0, -120.0, 30.0]
    keys = list(engine.pairs)
    assert not volume_done(tmp_path, "049", keys)
    vols = explain_volume(engine, stack, batch_size=4)
    paths = save_heatmaps(vols, affine, tmp_path, "049")
    assert volume_done(tmp_path, "049", keys)
    assert not volume_done(tmp_path, "050", keys)
    for key, path in paths.items():
        assert path == heatmap_path(tmp_path, "049", key)
        assert path.parent.parent.name == key[0] and path.parent.name == key[1]
        img = nib.load(str(path))
        np.testing.assert_allclose(img.affine, affine)
        np.testing.assert_allclose(np.asarray(img.dataobj), vols[key])
    assert not list(tmp_path.rglob(".tmp-*"))  # atomic writes leave nothing behind
    paths[keys[0]].unlink()
    assert not volume_done(tmp_path, "049", keys)
    with pytest.raises(HemwslInputError):
        save_heatmaps({keys[0]: np.zeros((2, 2))}, affine, tmp_path, "x")
