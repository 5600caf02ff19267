"""Smoke test of bundles/ich_cam on phantoms: heatmaps on the CT grid, resumable."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from hemwsl.data.settings import InputSettings
from hemwsl.engines.bundle import run_bundle, validate_metadata
from hemwsl.errors import HemwslInputError

REPO = Path(__file__).resolve().parents[2]


def test_metadata():
    validate_metadata(REPO / "bundles" / "ich_cam" / "configs" / "metadata.json")


def test_cam_bundle_writes_aligned_heatmaps_and_resumes(synthetic_root, tmp_path):
    from monai.bundle import ConfigWorkflow

    kw = {"dataset_dir": str(synthetic_root), "output_dir": str(tmp_path), "backbone": "resnet10",
          "spatial_size": [32, 32], "n_folds": 4, "fold": 0, "epochs": 1, "samples_per_epoch": 16,
          "batch_size": 8, "cache_workers": 0}
    run_bundle(REPO / "bundles" / "ich_classifier", ["train"], **kw)
    files = [str(REPO / "bundles" / "ich_classifier" / "configs" / "train.yaml"),
             str(REPO / "bundles" / "ich_cam" / "configs" / "inference.yaml")]

    def run():
        wf = ConfigWorkflow(config_file=files, workflow_type=None,
                            cam_methods=["gradcam", "layercam", "cam", "saliency"], **kw)
        wf.initialize()
        wf.run()
        return wf

    run()
    cam_dir = tmp_path / "fold0" / "cam"
    parts = json.loads(json.dumps([p for p in (cam_dir / ".done").iterdir()], default=str))
    assert parts
    patient = Path(parts[0]).name.split(".")[0]
    ct = nib.load(str(next((synthetic_root / "ct_scans").glob(f"{patient}.nii*"))))
    for method, layer in [("gradcam", "layer2"), ("gradcam", "layer4"), ("layercam", "layer3"),
                          ("cam", "layer4"), ("saliency", "input")]:
        img = nib.load(str(cam_dir / method / layer / f"{patient}.nii.gz"))
        arr = np.asarray(img.dataobj)
        assert arr.shape == ct.shape
        np.testing.assert_allclose(img.affine, ct.affine)
        assert np.isfinite(arr).all() and arr.min() >= 0
    assert not (cam_dir / "cam" / "layer2").exists()  # CAM only where the pooled head follows
    before = {p: p.stat().st_mtime_ns for p in cam_dir.rglob("*.nii.gz")}
    run()  # resumed run: nothing recomputed
    assert {p: p.stat().st_mtime_ns for p in cam_dir.rglob("*.nii.gz")} == before


def test_unknown_method_is_named(synthetic_datalist, tmp_path):
    import torch

    from hemwsl.engines.cam import run_cam

    with pytest.raises(HemwslInputError, match="grad-cam"):
        run_cam(torch.nn.Linear(1, 1), synthetic_datalist[:1], tmp_path, methods=["grad-cam"])


def test_input_grid_heatmaps_are_world_aligned(synthetic_datalist, tmp_path):
    """grid='input' stores maps at the classifier's size; upsampled back they equal the CT-grid maps."""
    import torch

    from hemwsl.cam.base import upsample
    from hemwsl.engines.cam import run_cam
    from hemwsl.networks import build_network

    torch.manual_seed(0)
    net = build_network("resnet10", in_channels=3)
    entry = synthetic_datalist[:1]
    kw = dict(methods=["gradcam"], layers=["layer4"], inputs=InputSettings(windows=["brain"], spatial_size=(32, 32)),
              progress=False)
    (ct_file,) = run_cam(net, entry, tmp_path / "ct", grid="ct", **kw)
    (in_file,) = run_cam(net, entry, tmp_path / "in", grid="input", **kw)
    ct_img, in_img = nib.load(str(ct_file)), nib.load(str(in_file))
    ct, small = np.asarray(ct_img.dataobj), np.asarray(in_img.dataobj)
    assert small.shape[:2] == (32, 32) and small.shape[2] == ct.shape[2]
    up = upsample(torch.from_numpy(small).permute(2, 0, 1), ct.shape[:2]).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(up, ct, rtol=1e-5, atol=1e-6 * max(1.0, float(ct.max())))
    # the centre of the first input voxel lies at (s - 1) / 2 CT voxels, s = CT size / input size
    s = ct.shape[0] / 32
    np.testing.assert_allclose(in_img.affine @ [0, 0, 0, 1], ct_img.affine @ [(s - 1) / 2, (s - 1) / 2, 0, 1])
    np.testing.assert_allclose(in_img.affine @ [31, 31, 3, 1], ct_img.affine @ ([31 * s + (s - 1) / 2] * 2 + [3, 1]))
    with pytest.raises(HemwslInputError, match="grid"):
        run_cam(net, entry, tmp_path / "bad", grid="native", **kw)


def test_a_new_method_set_in_the_same_folder_is_computed(synthetic_datalist, tmp_path):
    """Resume markers are per (methods, layers): adding a method later into the same folder computes it."""
    import torch

    from hemwsl.engines.cam import run_cam
    from hemwsl.networks import build_network

    torch.manual_seed(0)
    net = build_network("resnet10", in_channels=3)
    kw = dict(layers=["layer4"], inputs=InputSettings(windows=["brain"], spatial_size=(32, 32)), progress=False,
              grid="input")
    first = run_cam(net, synthetic_datalist[:1], tmp_path, methods=["gradcam"], **kw)
    again = run_cam(net, synthetic_datalist[:1], tmp_path, methods=["gradcam"], **kw)
    assert again == first
    added = run_cam(net, synthetic_datalist[:1], tmp_path, methods=["layercam"], **kw)
    assert [p.parts[-3] for p in added] == ["layercam"] and added[0].is_file()


def test_cache_and_background_writer_give_the_same_files(synthetic_datalist, tmp_path):
    """run_cam with the preprocessed-volume cache and its background writer: the same heatmaps, in datalist order,
    as without the cache; a volume whose writing fails raises and leaves no marker (it is computed again)."""
    import nibabel as nib
    import torch

    import hemwsl.engines.cam as cam_engine
    from hemwsl.networks import build_network

    torch.manual_seed(0)
    net = build_network("resnet10", in_channels=3)
    kw = dict(methods=["gradcam"], layers=["layer4"],
              inputs=InputSettings(windows=["brain"], spatial_size=(32, 32), skull_strip=True), progress=False,
              grid="input")
    entries = synthetic_datalist[:3]
    plain = cam_engine.run_cam(net, entries, tmp_path / "plain", **kw)
    cached = cam_engine.run_cam(net, entries, tmp_path / "cached", cache_dir=tmp_path / "cache", **kw)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 3
    again = cam_engine.run_cam(net, entries, tmp_path / "cached2", cache_dir=tmp_path / "cache", **kw)
    assert [p.name for p in plain] == [p.name for p in cached] == [p.name for p in again] == \
        [f"{e['patient']}.nii.gz" for e in entries]
    for a, b in zip(plain, again):
        np.testing.assert_array_equal(np.asarray(nib.load(str(a)).dataobj), np.asarray(nib.load(str(b)).dataobj))

    import hemwsl.cam as cam_pkg

    calls = []

    def failing(maps, affine, out, stem, **kw):
        calls.append(stem)
        if len(calls) == 2:
            raise OSError("disk full")
        return cam_pkg.volume.save_heatmaps(maps, affine, out, stem, **kw)

    orig = cam_pkg.save_heatmaps
    cam_pkg.save_heatmaps = failing
    try:
        with pytest.raises(OSError, match="disk full"):
            cam_engine.run_cam(net, entries, tmp_path / "broken", **kw)
    finally:
        cam_pkg.save_heatmaps = orig
    done = sorted(p.name.split(".")[0] for p in (tmp_path / "broken" / ".done").iterdir())
    assert done == [entries[0]["patient"]]  # the failed volume has no marker
    resumed = cam_engine.run_cam(net, entries, tmp_path / "broken", **kw)
    assert [p.name for p in resumed] == [p.name for p in plain]
