"""The 3D U-Net as a self-describing model: ``hemwsl package --seg-cv-dir`` and ``hemwsl predict`` on it."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from hemwsl.cli import main
from hemwsl.data.synthetic import make_phantom
from hemwsl.errors import HemwslInputError
from hemwsl.predict import ModelPackage, Predictor
from hemwsl.predict_unet import SEG_MODEL_KIND, SegmentationPredictor, pack_segmentation

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SET = {"spatial_size": [32, 32], "features": [8, 16, 32], "patch_size": [32, 32, 8], "windows": ["brain", "blood"],
       "threshold": 0.5}


def _fake_seg_cv(root: Path, folds=(0, 1)) -> Path:
    """A seg-cv folder with random-init U-Nets (the packaging and the plumbing are under test, not accuracy)."""
    from hemwsl.predict_unet import _parser

    root.mkdir(parents=True)
    (root / "seg_cv_run.json").write_text(json.dumps({"bundle": "ich_unet3d", "folds": 5, "dataset_dir": None,
                                                      "settings": {**SET, "epochs": 3, "dataset_dir": "x"},
                                                      "datalist": None, "eval_datalist": None}))
    for k in folds:
        torch.manual_seed(k)
        net = _parser("ich_unet3d", SET).get_parsed_content("network_def", lazy=False)
        (root / f"fold{k}" / "models").mkdir(parents=True)
        torch.save(net.state_dict(), root / f"fold{k}" / "models" / "model.pt")
    return root


@pytest.fixture(scope="module")
def unet_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("unet")
    return pack_segmentation(_fake_seg_cv(root / "cv"), root / "pkg")


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    p = make_phantom(7, shape=(48, 48, 10), spacing=(0.9, 0.9, 5.0), subtypes=["intraparenchymal"])
    f = tmp_path_factory.mktemp("scan") / "p007.nii.gz"
    nib.save(nib.Nifti1Image(p["image"].astype(np.float32), p["affine"]), str(f))
    return f, p


def test_unet_package_describes_itself(unet_model):
    pkg = ModelPackage.load(unet_model, kind=SEG_MODEL_KIND)
    s = pkg.settings
    # the run's overrides and the bundle's own defaults, resolved; training-only overrides left out
    assert s["spatial_size"] == [32, 32] and s["features"] == [8, 16, 32] and s["patch_size"] == [32, 32, 8]
    assert s["windows"] == ["brain", "blood"] and s["skull_strip"] is True and s["resample"] == "bilinear"
    assert s["n_folds"] == 5 and "dataset_dir" not in pkg.meta["overrides"] and "epochs" in pkg.meta["overrides"]
    assert [m["fold"] for m in pkg.members] == [0, 1] and all(len(m["sha1"]) == 40 for m in pkg.members)
    # one kind is not mistaken for the other, with one line naming the file
    with pytest.raises(HemwslInputError, match="another kind"):
        ModelPackage.load(unet_model)
    with pytest.raises(HemwslInputError, match="another kind"):
        Predictor(unet_model)
    with pytest.raises(HemwslInputError, match="already holds a model package"):
        pack_segmentation(Path(pkg.meta["seg_cv"]), unet_model)


def test_unet_package_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(HemwslInputError, match="not a seg-cv run"):
        pack_segmentation(tmp_path, tmp_path / "pkg")
    cv = _fake_seg_cv(tmp_path / "cv", folds=(0,))
    with pytest.raises(HemwslInputError, match=r"fold\(s\) \[3\]"):
        pack_segmentation(cv, tmp_path / "pkg", folds=[3])


def test_unet_predict_equals_the_members_and_resumes(unet_model, scan, tmp_path, capsys):
    from hemwsl.constants import IMAGE, PATIENT
    from hemwsl.engines.segmentation import predict_mask

    f, p = scan
    assert main(["predict", "--model", str(unet_model), "--input", str(f), "--out", str(tmp_path)]) == 0
    assert "U-Net volume" in capsys.readouterr().out
    out = tmp_path / "p007"
    assert {x.name for x in out.iterdir()} == {"mask.nii.gz", "probability.nii.gz", "report.json", "report.png"}
    rep = json.loads((out / "report.json").read_text())
    mask = nib.load(str(out / "mask.nii.gz"))
    assert mask.shape == p["image"].shape and np.allclose(mask.affine, p["affine"])
    m = np.asarray(mask.dataobj) > 0
    assert rep["volume"]["ml"] == pytest.approx(m.sum() * 0.9 * 0.9 * 5.0 / 1000)
    # the ensemble is the mean of the members' probabilities, each member exactly the bundle's own inference
    pred = SegmentationPredictor(unet_model)
    probs = [predict_mask(net, {IMAGE: str(f), PATIENT: "p007"}, pred.transform, pred.inferer)[1] for net in pred.networks]
    prob = np.asarray(nib.load(str(out / "probability.nii.gz")).dataobj)
    np.testing.assert_allclose(prob, np.mean(probs, axis=0), atol=1e-6)
    np.testing.assert_array_equal(m, np.mean(probs, axis=0) > 0.5)
    # finished: skipped; another member set: refused without --overwrite
    assert pred.predict(f, tmp_path) == rep
    with pytest.raises(HemwslInputError, match="another model"):
        SegmentationPredictor(unet_model, members=[1]).predict(f, tmp_path)
    with pytest.raises(HemwslInputError, match=r"fold\(s\) \[4\]"):
        SegmentationPredictor(unet_model, members=[4])
    assert main(["predict", "--model", str(unet_model), "--input", str(f), "--out", str(tmp_path),
                 "--spatial-size", "64", "64"]) == 2
    assert "contradicts the model" in capsys.readouterr().err


def test_package_command_packs_a_seg_cv_run(tmp_path, capsys):
    cv = _fake_seg_cv(tmp_path / "cv", folds=(0,))
    assert main(["package", "--seg-cv-dir", str(cv), "--out", str(tmp_path / "pkg")]) == 0
    assert "3D U-Net, 1 member(s)" in capsys.readouterr().out
    assert ModelPackage.load(tmp_path / "pkg", kind=SEG_MODEL_KIND).members[0]["fold"] == 0
