"""Smoke test of bundles/ich_cam on phantoms: heatmaps on the CT grid, resumable."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

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
    patient = Path(parts[0]).name
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
