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
    from hemwsl.data.settings import InputSettings
    from hemwsl.pseudo import PseudoLabelSettings, make_pseudo_labels
    from hemwsl.thresholds import IntensityPrior

    paths, p = scans
    depth = p["image"].shape[2]
    masks = {}
    for name, ref in (("orig", None), ("dense", None), ("orig", 37.0), ("dense", 37.0)):
        f = paths[name]
        out = tmp_path / f"{name}_{ref}"
        entries = make_pseudo_labels(
            None, [{"image": str(f), "patient": "p007"}], f.parents[1] / "cam", out, "m", "l",
            PseudoLabelSettings(mode="cam", threshold=IntensityPrior(hu_range=(50.0, 90.0), cam=None),
                                prob_threshold=0.5, hu_reference=ref),
            inputs=InputSettings(skull_strip=True),
            predictions_csv=_all_positive_csv(tmp_path / f"pred_{name}_{ref}.csv", depth), progress=False)
        masks[(name, ref)] = np.asarray(nib.load(entries[0]["label"]).dataobj) > 0
        params = json.loads((out / "pseudo_params.json").read_text())
        assert params.get("hu_reference") == ref
    plain = _masks_differ(masks[("orig", None)], masks[("dense", None)])
    calibrated = _masks_differ(masks[("orig", 37.0)], masks[("dense", 37.0)])
    assert plain > 0 and calibrated < plain / 4
    with pytest.raises(HemwslInputError, match="hu_reference needs skull_strip"):
        make_pseudo_labels(None, [{"image": str(paths["orig"]), "patient": "p007"}], paths["orig"].parents[1] / "cam",
                           tmp_path / "nostrip", "m", "l",
                           PseudoLabelSettings(mode="cam", threshold=IntensityPrior(cam=None), hu_reference=37.0),
                           predictions_csv=_all_positive_csv(tmp_path / "p.csv", depth), progress=False)
    with pytest.raises(HemwslInputError, match="other settings"):  # a folder made without calibration refuses it
        make_pseudo_labels(None, [{"image": str(paths["orig"]), "patient": "p007"}], paths["orig"].parents[1] / "cam",
                           tmp_path / "orig_None", "m", "l",
                           PseudoLabelSettings(mode="cam", threshold=IntensityPrior(hu_range=(50.0, 90.0), cam=None),
                                               prob_threshold=0.5, hu_reference=37.0),
                           inputs=InputSettings(skull_strip=True),
                           predictions_csv=_all_positive_csv(tmp_path / "pred_orig_None.csv", depth), progress=False)


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


def _prior_report(bench: Path, hu_reference) -> Path:
    """A one-fold benchmark report that chose the prior (e2, 50-90 HU, components >= 5 px), calibrated to
    ``hu_reference``."""
    bench.mkdir()
    spec = "prior[e2,hu50-90,min5]"
    (bench / "choices.csv").write_text(f"fold,method,layer,threshold,selection_dice\n0,gradcam,layer4,\"{spec}\",0.4\n"
                                       f"0,-,-,\"{spec}\",0.4\n")
    (bench / "thresholds.csv").write_text("fold,method,layer,threshold,value,selection_dice,selection_patients,"
                                          "selection_slices,selection_metric\n")
    (bench / "config.json").write_text(json.dumps({"prob_threshold": 0.5, "hu_range": [50.0, 90.0], "brain_erosion": 2,
                                                   "min_size": 5, "hu_reference": hu_reference}))
    return bench


def test_package_carries_the_benchmarks_calibration_and_predict_applies_it(scans, tmp_path):
    paths, p = scans
    cv = _fake_cv(tmp_path / "cv")
    bench = _prior_report(tmp_path / "bench", 37.0)
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


# --- a band of brain HU: only the scans whose brain reads outside it are shifted (to the nearer end) ---------------

def _flat_brain(value: float) -> tuple[np.ndarray, np.ndarray]:
    """A 40 x 40 x 2 CT whose 'brain' (the inner 30 x 30) reads ``value`` HU (surrounded by -20 HU)."""
    hu = np.full((40, 40, 2), -20.0, dtype=np.float32)
    brain = np.zeros(hu.shape, dtype=bool)
    brain[5:35, 5:35] = True
    hu[brain] = value
    return hu, brain


@pytest.mark.parametrize("brain_hu, reference, shift", [
    (40.0, 37.0, 3.0),            # one value: every scan shifted to it
    (30.0, 37.0, -7.0),
    (40.0, (-100.0, 37.0), 3.0),  # a band: a denser brain lowered to its upper end
    (30.0, (-100.0, 37.0), 0.0),  # inside the band: as stored
    (30.0, (32.0, 37.0), -2.0),   # below the band: raised to its lower end
    (37.0, [37.0], 0.0),          # a one-element list, as a command line gives it
])
def test_calibrate_hu_band_hand_values(brain_hu, reference, shift):
    from hemwsl.thresholds import calibrate_hu

    hu, brain = _flat_brain(brain_hu)
    out, got = calibrate_hu(hu, brain, reference)
    assert got == pytest.approx(shift)
    np.testing.assert_allclose(out[brain], brain_hu - shift)
    np.testing.assert_allclose(out[~brain], -20.0 - shift)


def test_check_hu_reference_forms_and_errors():
    from hemwsl.thresholds import check_hu_reference, hu_reference_text, same_hu_reference

    assert check_hu_reference([37]) == 37.0 and check_hu_reference((37, 37)) == 37.0
    assert check_hu_reference([-100, 37]) == (-100.0, 37.0)
    assert check_hu_reference(np.array([30.0, 37.0])) == (30.0, 37.0)
    assert hu_reference_text([-100, 37]) == "-100..37" and hu_reference_text(37) == "37"
    assert hu_reference_text(None) == "none"
    assert same_hu_reference([-100, 37], (-100.0, 37.0)) and same_hu_reference(None, None)
    assert not same_hu_reference([-100, 37], 37.0) and not same_hu_reference(None, 37)
    for bad, match in (([40, 30], "low <= high"), ([1, 2, 3], "one brain HU or a band"), ([], "one brain HU"),
                       ([True, 37], "number of HU"), ([30, 1e4], "between -100 and 200"), (["x"], "number of HU")):
        with pytest.raises(HemwslInputError, match=match):
            check_hu_reference(bad, "--hu-reference")


def _brain_hu_of(path: Path) -> float:
    from hemwsl.pseudo.volume import _brain_mask
    from hemwsl.thresholds import brain_reference_hu

    hu = np.asarray(nib.load(path).dataobj, dtype=np.float32)
    return brain_reference_hu(hu, _brain_mask(str(path), hu))


def test_band_lowers_the_denser_scan_only(scans, tmp_path):
    """With the band [-100, the original's brain HU], the original is left as stored (its pseudo-labels exactly the
    uncalibrated ones) and the scan stored 12 HU denser is lowered onto it (its skull strip, on other HU, is not
    quite the original's: a few pixels differ). The band is recorded as a list, and a folder made with the same band
    (given as a tuple) resumes."""
    from hemwsl.data.settings import InputSettings
    from hemwsl.pseudo import PseudoLabelSettings, make_pseudo_labels
    from hemwsl.thresholds import IntensityPrior

    paths, p = scans
    depth = p["image"].shape[2]
    ref = _brain_hu_of(paths["orig"])
    assert _brain_hu_of(paths["dense"]) > ref + OFFSET / 2
    band = [-100.0, ref]

    def labels(name, hu_reference, out):
        entries = make_pseudo_labels(
            None, [{"image": str(paths[name]), "patient": "p007"}], paths[name].parents[1] / "cam", out, "m", "l",
            PseudoLabelSettings(mode="cam", threshold=IntensityPrior(hu_range=(50.0, 90.0), cam=None),
                                prob_threshold=0.5, hu_reference=hu_reference),
            inputs=InputSettings(skull_strip=True),
            predictions_csv=_all_positive_csv(tmp_path / f"pred_{out.name}.csv", depth), progress=False)
        return np.asarray(nib.load(entries[0]["label"]).dataobj) > 0

    plain = labels("orig", None, tmp_path / "plain")
    moved = _masks_differ(labels("dense", None, tmp_path / "dense_plain"), plain)
    assert plain.any() and moved > 0
    assert _masks_differ(labels("orig", band, tmp_path / "orig_band"), plain) == 0
    lowered = _masks_differ(labels("dense", band, tmp_path / "dense_band"), plain)
    assert lowered < moved / 4
    assert json.loads((tmp_path / "dense_band" / "pseudo_params.json").read_text())["hu_reference"] == band
    assert _masks_differ(labels("dense", tuple(band), tmp_path / "dense_band"), plain) == lowered  # resumes


def test_package_and_predict_with_a_band(scans, tmp_path):
    """A benchmark report calibrated with a band packs it into the recipe (as a list) and predict applies it: the
    denser scan gets the original's mask; a quantify report with the same band (as JSON gives it) is accepted."""
    paths, p = scans
    cv = _fake_cv(tmp_path / "cv")
    ref = _brain_hu_of(paths["orig"])
    bench = _prior_report(tmp_path / "bench", [-100.0, ref])
    post = {"slice_threshold": 0.0}
    pkg = ModelPackage.load(pack_model(cv, tmp_path / "pkg", benchmark_dir=bench, scan_call="none",
                                       post_processing=post))
    assert pkg.recipe["hu_reference"] == [-100.0, ref]
    plain = ModelPackage.load(pack_model(cv, tmp_path / "pkg0", benchmark_dir=bench, scan_call="none",
                                         post_processing={**post, "hu_reference": None}))

    def mask(package, name):
        hu = np.asarray(nib.load(paths[name]).dataobj, dtype=np.float32)
        return Predictor(package).predict_arrays(hu, (0.9, 0.9, 5.0))["mask"]

    want = mask(plain, "orig")
    moved = _masks_differ(mask(plain, "dense"), want)
    assert want.any() and moved > 0
    assert _masks_differ(mask(pkg, "orig"), want) == 0 and _masks_differ(mask(pkg, "dense"), want) < moved / 4

    from hemwsl.scanmodel import SCAN_FEATURES, fit_scan_model

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, len(SCAN_FEATURES)))
    model = fit_scan_model(x, (x[:, 0] > 0).astype(int), 0.9)
    quant = tmp_path / "quant"
    quant.mkdir()
    summary = {"settings": {"hu_reference": [-100.0, ref]},
               "choices": {"0": {"aggregation": "model", "threshold": 0.3, "min_slices": 1, "model": model.to_dict()}}}
    (quant / "summary.json").write_text(json.dumps(summary))
    assert ModelPackage.load(pack_model(cv, tmp_path / "pkg2", benchmark_dir=bench, quantify_dir=quant,
                                        post_processing=post)).members[0]["scan_aggregation"] == "model"
    summary["settings"]["hu_reference"] = ref  # the band's upper end alone is another calibration
    (quant / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(HemwslInputError, match="hu_reference"):
        pack_model(cv, tmp_path / "pkg3", benchmark_dir=bench, quantify_dir=quant, post_processing=post)


def test_benchmark_command_records_the_band(tmp_path, capsys):
    """`--hu-reference LOW HIGH` is checked before any file is read: a reversed band is one line."""
    args = ["benchmark", "--dataset-dir", str(tmp_path), "--cam-dir", str(tmp_path), "--out", str(tmp_path / "o"),
            "--hu-reference", "40", "30"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--hu-reference" in err[0] and "low <= high" in err[0]
