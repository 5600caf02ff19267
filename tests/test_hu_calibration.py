"""Per-scan HU calibration of the intensity prior (``hu_reference``) through pseudo-labels, the model package and
``hemwsl predict``, and the commands' one-line errors: a scan stored a few HU denser (another scanner) gets the
masks of the original once calibrated."""

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
from hemwsl.networks import build_network
from hemwsl.predict import ModelPackage, Predictor, pack_model

SETTINGS = {"backbone": "resnet10", "spatial_size": [64, 64], "skull_strip": True, "windows": ["brain", "blood"],
            "num_slices": 3, "tta": False}
OFFSET = 12.0


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """The same phantom stored as is and 12 HU denser, and a constant heatmap of it."""
    p = make_phantom(7, shape=(64, 64, 8), spacing=(0.9, 0.9, 5.0))
    d = tmp_path_factory.mktemp("hucal")
    paths = {}
    for name, off in (("orig", 0.0), ("dense", OFFSET)):
        f = d / name / "ct_scans" / "p007.nii.gz"
        f.parent.mkdir(parents=True)
        nib.save(nib.Nifti1Image(p["image"].astype(np.float32) + off, p["affine"]), str(f))
        cam = d / name / "cam" / "m" / "l" / "p007.nii.gz"
        cam.parent.mkdir(parents=True)
        nib.save(nib.Nifti1Image(np.ones(p["image"].shape, dtype=np.float32), p["affine"]), str(cam))
        paths[name] = f
    return paths, p


def _masks_differ(a: np.ndarray, b: np.ndarray) -> int:
    return int((np.asarray(a, bool) ^ np.asarray(b, bool)).sum())


def test_pseudo_labels_of_a_denser_scan_match_once_calibrated(scans, tmp_path):
    from hemwsl.pseudo import make_pseudo_labels
    from hemwsl.thresholds import IntensityPrior

    paths, p = scans
    depth = p["image"].shape[2]
    masks = {}
    for name, ref in (("orig", None), ("dense", None), ("orig", 37.0), ("dense", 37.0)):
        f = paths[name]
        out = tmp_path / f"{name}_{ref}"
        entries = make_pseudo_labels(
            None, [{"image": str(f), "patient": "p007"}], f.parents[1] / "cam", out, "m", "l", mode="cam",
            threshold=IntensityPrior(hu_range=(50.0, 90.0), cam=None), prob_threshold=0.5,
            predictions_csv=_all_positive_csv(tmp_path / f"pred_{name}_{ref}.csv", depth), skull_strip=True,
            progress=False, hu_reference=ref)
        masks[(name, ref)] = np.asarray(nib.load(entries[0]["label"]).dataobj) > 0
        params = json.loads((out / "pseudo_params.json").read_text())
        assert params.get("hu_reference") == ref
    plain = _masks_differ(masks[("orig", None)], masks[("dense", None)])
    calibrated = _masks_differ(masks[("orig", 37.0)], masks[("dense", 37.0)])
    assert plain > 0 and calibrated < plain / 4
    with pytest.raises(HemwslInputError, match="hu_reference needs skull_strip"):
        make_pseudo_labels(None, [{"image": str(paths["orig"]), "patient": "p007"}], paths["orig"].parents[1] / "cam",
                           tmp_path / "nostrip", "m", "l", mode="cam", threshold=IntensityPrior(cam=None),
                           predictions_csv=_all_positive_csv(tmp_path / "p.csv", depth), hu_reference=37.0,
                           progress=False)
    with pytest.raises(HemwslInputError, match="other settings"):  # a folder made without calibration refuses it
        make_pseudo_labels(None, [{"image": str(paths["orig"]), "patient": "p007"}], paths["orig"].parents[1] / "cam",
                           tmp_path / "orig_None", "m", "l", mode="cam",
                           threshold=IntensityPrior(hu_range=(50.0, 90.0), cam=None), prob_threshold=0.5,
                           predictions_csv=_all_positive_csv(tmp_path / "pred_orig_None.csv", depth), skull_strip=True,
                           progress=False, hu_reference=37.0)


def _all_positive_csv(path: Path, depth: int) -> str:
    path.write_text("patient,slice,label_any,prob_any\n" + "".join(f"p007,{z},0,0.9\n" for z in range(depth)))
    return str(path)


def _fake_cv(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "cv_settings.json").write_text(json.dumps(SETTINGS))
    torch.manual_seed(0)
    net = build_network("resnet10", in_channels=6, num_classes=1)
    (root / "fold0" / "models").mkdir(parents=True)
    torch.save(net.state_dict(), root / "fold0" / "models" / "model.pt")
    return root


def test_package_carries_the_benchmarks_calibration_and_predict_applies_it(scans, tmp_path):
    paths, p = scans
    cv = _fake_cv(tmp_path / "cv")
    bench = tmp_path / "bench"
    bench.mkdir()
    spec = "prior[e2,hu50-90,min5]"
    (bench / "choices.csv").write_text(f"fold,method,layer,threshold,selection_dice\n0,gradcam,layer4,\"{spec}\",0.4\n"
                                       f"0,-,-,\"{spec}\",0.4\n")
    (bench / "thresholds.csv").write_text("fold,method,layer,threshold,value,selection_dice,selection_patients,"
                                          "selection_slices,selection_metric\n")
    (bench / "config.json").write_text(json.dumps({"prob_threshold": 0.5, "hu_range": [50.0, 90.0], "brain_erosion": 2,
                                                   "min_size": 5, "hu_reference": 37.0}))
    post = {"slice_threshold": 0.0}  # every slice positive: the mask is the prior itself
    cal = ModelPackage.load(pack_model(cv, tmp_path / "pkg", benchmark_dir=bench, scan_call="none",
                                       post_processing=post))
    assert cal.recipe["hu_reference"] == 37.0
    plain = ModelPackage.load(pack_model(cv, tmp_path / "pkg0", benchmark_dir=bench, scan_call="none",
                                         post_processing={**post, "hu_reference": None}))
    assert plain.recipe.get("hu_reference") is None

    def mask(pkg, name):
        hu = np.asarray(nib.load(paths[name]).dataobj, dtype=np.float32)
        return Predictor(pkg).predict_arrays(hu, (0.9, 0.9, 5.0))["mask"]

    moved = _masks_differ(mask(plain, "orig"), mask(plain, "dense"))
    assert moved > 0 and _masks_differ(mask(cal, "orig"), mask(cal, "dense")) < moved / 4
    # a hand-edited package with a meaningless reference is one line naming the file
    meta = json.loads((tmp_path / "pkg" / "hemwsl_model.json").read_text())
    meta["recipe"]["hu_reference"] = "dense"
    (tmp_path / "pkg" / "hemwsl_model.json").write_text(json.dumps(meta))
    with pytest.raises(HemwslInputError, match="hu_reference"):
        ModelPackage.load(tmp_path / "pkg")


@pytest.mark.parametrize("command", [
    ["benchmark", "--dataset-dir", "{d}", "--cam-dir", "{d}", "--out", "{o}", "--hu-reference", "1e4"],
    ["quantify", "--dataset-dir", "{d}", "--masks", "{d}", "--predictions", "x.csv", "--out", "{o}", "--hu-reference", "nan"],
])
def test_bad_hu_reference_is_one_line(command, tmp_path, capsys):
    args = [a.format(d=tmp_path, o=tmp_path / "out") for a in command]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "hu-reference" in err[0].replace("hu_reference", "hu-reference")


def test_package_takes_the_scan_model_a_quantify_report_chose(tmp_path):
    """A quantify report whose fold chose the scan model holds the fitted model; the package packs that model (with
    the report's threshold and rule), and refuses a report whose HU calibration is not the recipe's."""
    from hemwsl.scanmodel import SCAN_FEATURES, fit_scan_model

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, len(SCAN_FEATURES)))
    y = (x[:, 0] + 0.5 * rng.normal(size=40) > 0).astype(int)
    model = fit_scan_model(x, y, 0.9)
    cv = _fake_cv(tmp_path / "cv")
    quant = tmp_path / "quant"
    quant.mkdir()
    summary = {"settings": {"hu_reference": None},
               "choices": {"0": {"aggregation": "model", "threshold": 0.3, "min_slices": 4, "model": model.to_dict()}}}
    (quant / "summary.json").write_text(json.dumps(summary))
    pkg = ModelPackage.load(pack_model(cv, tmp_path / "pkg", quantify_dir=quant))
    m = pkg.members[0]
    assert m["scan_aggregation"] == "model" and m["scan_threshold"] == 0.3 and m["min_slices"] == 4
    assert m["scan_model"] == model.to_dict()
    summary["settings"]["hu_reference"] = 37.0
    (quant / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(HemwslInputError, match="hu_reference"):
        pack_model(cv, tmp_path / "pkg2", quantify_dir=quant)
    del summary["choices"]["0"]["model"]
    (quant / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(HemwslInputError, match="does not hold it"):
        pack_model(cv, tmp_path / "pkg3", quantify_dir=quant)
