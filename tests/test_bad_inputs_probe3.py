"""Bad inputs of the third robustness probe (cases named by their ids): each ends in one line naming the file or
argument at fault (a :class:`~hemwsl.errors.HemwslInputError`; ``hemwsl <command>: error: ...``, exit 2), before any
costly work and before any output is written.

Inputs are built here from the small phantoms of :mod:`tests.test_bad_inputs` and the fake (untrained) train-cv run
and model package of :mod:`tests.test_bad_inputs_data`; nothing is trained.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests import test_bad_inputs as shared
from tests import test_bad_inputs_data as runs
from tests.test_bad_inputs import _first
from hemwsl.cli import main
from tests.test_bad_inputs_data import _parser, one_line, raises_named

data = shared.data  # 4 phantoms (48 x 48 x 6) in the CT-ICH layout, and <data>/../dl.json
work = runs.work  # an empty folder that must stay empty
two_fold_run = runs.two_fold_run  # a fake 2-fold train-cv run of resnet10 at 32 x 32 on `data`
model = runs.model  # a model package of that run
predictions = runs.predictions  # a valid predictions CSV of every slice of `data`

TRAIN = runs.TRAIN


# --------------------------------------------------------------------------------------------- package: quantify report
def _choice(threshold=0.5, aggregation="max", min_slices=1) -> dict:
    return {"aggregation": aggregation, "threshold": threshold, "selection_auroc": 1.0, "calibration": [1.0, 0.0],
            "min_slices": min_slices}


def _quantify_report(folder: Path, text: str | None = None, choices: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if text is None:
        choices = {"0": _choice(), "1": _choice()} if choices is None else choices
        text = json.dumps({"choices": choices, "settings": {"hu_reference": None}})
    (folder / "summary.json").write_text(text)
    return folder


@pytest.mark.parametrize("spoil, named", [
    (lambda q: _quantify_report(q, text="[1, 2]"), "corrupt quantify report (a JSON object expected"),   # G_qlist
    (lambda q: _quantify_report(q, text='{"choices": {"0": {"aggr'), "corrupt quantify report"),           # G_qtrunc
    (lambda q: _quantify_report(q, choices={"0": _choice(aggregation="bogus"), "1": _choice()}),
     "fold 0: unknown scan aggregation 'bogus'"),                                                         # G_qagg
    (lambda q: _quantify_report(q, choices={"0": _choice(), "1": _choice(threshold=float("nan"))}),
     "fold 1: scan threshold must be a probability in [0, 1]"),                                           # G_qthrnan
    (lambda q: _quantify_report(q, choices={"0": _choice(), "1": _choice(threshold=7.5)}),
     "fold 1: scan threshold must be a probability in [0, 1], got 7.5"),                                 # G_qthr75
    (lambda q: _quantify_report(q, choices={"0": _choice()}), "no scan call chosen for fold(s) [1]"),      # G_qnofold1
    (lambda q: _quantify_report(q, choices={"0": _choice(min_slices=-3), "1": _choice()}),
     "fold 0: min_slices must be an integer >= 1, got -3"),                                               # G_qminslices
], ids=["G_qlist", "G_qtrunc", "G_qagg", "G_qthrnan", "G_qthr75", "G_qnofold1", "G_qminslices"])
def test_package_checks_the_quantify_report(spoil, named, two_fold_run, tmp_path, work, capsys):
    from hemwsl.predict import pack_model

    q = spoil(tmp_path / "q")
    f = q / "summary.json"
    raises_named(lambda: pack_model(two_fold_run, work / "m", quantify_dir=q), f"{f}: ")
    raises_named(lambda: pack_model(two_fold_run, work / "m", quantify_dir=q), named)
    one_line(["package", "--cv-dir", two_fold_run, "--out", work / "m", "--quantify-dir", q], str(f), capsys, work)


def test_package_takes_a_sound_quantify_report(two_fold_run, tmp_path):
    from hemwsl.predict import MODEL_FILE, pack_model

    root = pack_model(two_fold_run, tmp_path / "m", quantify_dir=_quantify_report(tmp_path / "q"))
    meta = json.loads((root / MODEL_FILE).read_text())
    assert [(m["scan_aggregation"], m["scan_threshold"]) for m in meta["members"]] == [("max", 0.5)] * 2


# --------------------------------------------------------------------------------------------- package: benchmark report
def _benchmark_report(folder: Path, rows: list[str], config: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "choices.csv").write_text("\n".join(["fold,method,layer,threshold,selection_dice", *rows]) + "\n")
    (folder / "thresholds.csv").write_text("fold,method,layer,threshold,value,selection_dice,selection_patients,"
                                           "selection_slices,selection_metric\n")
    (folder / "config.json").write_text(config if config is not None else json.dumps(
        {"hu_range": [50, 90], "brain_erosion": 4, "min_size": 50, "grow": 0, "prob_threshold": 0.5}))
    return folder


GOOD = ["0,gradcam,layer4,fixed:0.7,0.07", "1,gradcam,layer2,fixed:0.7,0.05"]


@pytest.mark.parametrize("rows, config, file, named", [
    (["0,gradcam,layer9,fixed:0.7,0.07", GOOD[1]], None, "choices.csv", "fold 0: layer 'layer9' is not in resnet10"),
    ([*GOOD, "0,gradcam,layer3,fixed:0.7,0.01"], None, "choices.csv", "line 4: a second choice of gradcam for fold 0"),
    (["0,gradcam,layer4,fixed:abc,0.07", GOOD[1]], None, "choices.csv", "fold 0 (gradcam): threshold 'fixed:abc'"),
    (GOOD, '{\n "hu_range": [50, 90],\n "bra', "config.json", "corrupt benchmark config"),
], ids=["G_blayer", "G_bdupfold", "G_bthr", "G_bcfgtrunc"])
def test_package_checks_the_benchmark_report(rows, config, file, named, two_fold_run, tmp_path, work, capsys):
    from hemwsl.predict import pack_model

    b = _benchmark_report(tmp_path / "b", rows, config)
    f = b / file
    message = raises_named(lambda: pack_model(two_fold_run, work / "m", benchmark_dir=b, scan_call="none"), f"{f}: ")
    assert named in message, message
    one_line(["package", "--cv-dir", two_fold_run, "--out", work / "m", "--benchmark-dir", b, "--scan-call", "none"],
             named, capsys, work)


def test_package_takes_a_sound_benchmark_report(two_fold_run, tmp_path):
    from hemwsl.predict import MODEL_FILE, pack_model

    root = pack_model(two_fold_run, tmp_path / "m", benchmark_dir=_benchmark_report(tmp_path / "b", GOOD),
                      scan_call="none")
    assert [m["layer"] for m in json.loads((root / MODEL_FILE).read_text())["members"]] == ["layer4", "layer2"]


# --------------------------------------------------------------------------------------------- package: loading
@pytest.mark.parametrize("key, value, named", [("scan_aggregation", "bogus", "unknown scan aggregation 'bogus'"),
                                               ("scan_threshold", float("nan"), "scan threshold must be a probability")],
                         ids=["R_qagg", "M01"])
def test_package_member_scan_call_checked_on_load(key, value, named, model, data, work, capsys):
    from hemwsl.predict import MODEL_FILE, ModelPackage

    f = model / MODEL_FILE
    meta = json.loads(f.read_text())
    meta["members"][1][key] = value
    f.write_text(json.dumps(meta))
    message = raises_named(lambda: ModelPackage.load(model), f"{f}: corrupt model description (member fold1: ")
    assert named in message
    one_line(["predict", "--model", model, "--no-figures", "--input", _first(data), "--out", work / "p"], str(f),
             capsys, work)


def test_R_blayer_package_layer_named_with_the_package(model):
    from hemwsl.predict import MODEL_FILE, Predictor

    f = model / MODEL_FILE
    meta = json.loads(f.read_text())
    meta["recipe"].update(method="gradcam", threshold="fixed:0.7")
    meta["members"][0]["layer"] = "layer9"
    f.write_text(json.dumps(meta))
    raises_named(lambda: Predictor(model), f"{f}: member fold0: target layer 'layer9' not found")


# --------------------------------------------------------------------------------------------- training settings
@pytest.mark.parametrize("options, named", [('{"se_gate": "yes"}', "network_options: option 'se_gate'"),
                                            ('{"bogus_key": 1}', "network_options: option 'bogus_key'")],
                         ids=["T01", "T02"])
def test_train_cv_network_options_checked_before_any_fold(options, named, data, work, capsys):
    one_line(["train-cv", "--dataset-dir", data, "--out", work / "cv", "--folds", "2", *TRAIN, "epochs=1",
              f"network_options={options}"], named, capsys, work)


def test_network_options_checked_by_the_bundle_and_the_registry(tmp_path):
    from hemwsl.networks.registry import check_network_options

    raises_named(lambda: check_network_options("lse_resnet10", {"se_gate": "yes"}, in_channels=9),
                 "network_options: option 'se_gate' = 'yes'")
    raises_named(lambda: check_network_options("resnet10", [1, 2]), "network_options must be a mapping")
    check_network_options("resnet10", {})  # nothing to check
    parser = _parser("ich_classifier", ["train"], output_dir=str(tmp_path / "o"), backbone="resnet10",
                     network_options={"bogus_key": 1})
    raises_named(lambda: parser.get_parsed_content("initialize#0"), "network_options: option 'bogus_key'")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("setting, value, named", [("aug_prob", 1.5, "aug_prob must be in [0, 1]"),
                                                   ("pos_weight", -2, "pos_weight must be > 0")], ids=["T06", "T09"])
def test_train_settings_aug_prob_and_pos_weight(setting, value, named, data, work, capsys):
    from hemwsl.engines.classifier import check_train_settings

    raises_named(lambda: check_train_settings(**{setting: value}), named)
    one_line(["train-cv", "--dataset-dir", data, "--out", work / "cv", "--folds", "2", *TRAIN, "epochs=1",
              f"{setting}={value}"], named, capsys, work)


@pytest.mark.parametrize("setting, value, named", [("samples_per_volume", 0, "samples_per_volume must be >= 1"),
                                                   ("pos", -1, "pos must be >= 0")], ids=["X06_M08", "M09"])
def test_unet_settings_samples_per_volume_and_pos(setting, value, named, data, tmp_path, work, capsys):
    for configs in (["train"], ["train", "multi_gpu_train"]):
        parser = _parser("ich_unet3d", configs, output_dir=str(tmp_path / "o"), **{setting: value})
        raises_named(lambda: parser.get_parsed_content("initialize#0"), named)
    one_line(["seg-cv", "--dataset-dir", data, "--out", work / "seg", "--folds", "2", "--set", "spatial_size=[32,32]",
              "epochs=1", f"{setting}={value}"], named, capsys, work)


def test_X05_seg_cv_settings_checked_before_the_run_record(data, work, capsys):
    one_line(["seg-cv", "--dataset-dir", data, "--out", work / "seg", "--folds", "2", "--set", "spatial_size=[32,32]",
              "epochs=1", "patch_size=[16,16]"], "patch_size must be 3 sizes", capsys, work)


# --------------------------------------------------------------------------------------------- quantify
def _quantify(data, masks, preds, work, *extra) -> list:
    return ["quantify", "--dataset-dir", data, "--masks", masks, "--predictions", *preds, "--out", work / "q",
            "--folds", "2", "--no-figures", "--n-boot", "10", *extra]


def _edit_csv(src: Path, dst: Path, edit) -> Path:
    lines = src.read_text().splitlines()
    dst.write_text("\n".join(edit(lines)) + "\n")
    return dst


def _set_prob(value):
    def edit(lines):
        row = lines[2].split(",")
        row[-1] = value
        return [*lines[:2], ",".join(row), *lines[3:]]
    return edit


@pytest.mark.parametrize("edit, named", [
    (_set_prob("nan"), "line 3: probability nan"),                                               # Q02
    (_set_prob("1.7"), "line 3: probability 1.7"),                                               # Q03
    (_set_prob("-0.3"), "line 3: probability -0.3"),                                             # Q04
    (lambda lines: [*lines, lines[1][:-1] + "9"], "slice 0 repeats line 2"),                     # Q06
    (lambda lines: [*lines, f"{lines[1].split(',')[0]},99,0,0.5"], "slice 99 is outside its scan's 6 slices"),  # Q07
    (lambda lines: [lines[0], *lines[2:]], "no prediction for slice(s) 0 of its 6"),            # Q08
    (lambda lines: lines[:1], "no prediction rows (a header only)"),                             # Q12
], ids=["Q02", "Q03", "Q04", "Q06", "Q07", "Q08", "Q12"])
def test_quantify_checks_the_predictions_csv_first(edit, named, data, predictions, tmp_path, work, capsys):
    bad = _edit_csv(predictions, tmp_path / "bad.csv", edit)
    line = one_line(_quantify(data, data / "masks", [bad], work), f"{bad}: ", capsys, work)
    assert named in line, line


def test_Q05_missing_patient_names_the_csv(data, predictions, tmp_path, work, capsys):
    pat = predictions.read_text().splitlines()[1].split(",")[0]
    bad = _edit_csv(predictions, tmp_path / "bad.csv", lambda lines: [ln for ln in lines if not ln.startswith(pat + ",")])
    one_line(_quantify(data, data / "masks", [bad], work), f"no slice predictions for patient(s) {pat} in {bad}",
             capsys, work)


def test_Q15_mask_of_another_voxel_grid_is_named(data, predictions, tmp_path, work, capsys):
    masks = tmp_path / "pred"
    shutil.copytree(data / "masks", masks)
    bad = _first(masks, ".")
    img = nib.load(str(bad))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), np.diag([5.0, 5.0, 20.0, 1.0])), str(bad))
    line = one_line(_quantify(data, masks, [predictions], work), f"{bad}: the mask's voxel grid", capsys, work)
    assert "(5.0, 5.0, 20.0)" in line


def test_Q23_min_slices_above_every_scan(data, predictions, work, capsys):
    one_line(_quantify(data, data / "masks", [predictions], work, "--min-slices", "500"),
             "min_slices 500 exceeds the slices of every scan (at most 6)", capsys, work)


def test_Q26_no_positive_selection_patient_names_the_options(data, predictions, work, capsys):
    line = one_line(_quantify(data, data / "masks", [predictions], work, "--select", "val", "--val-fraction", "0"),
                    "folds: the 0 selection patient(s) of fold 0 hold no scan with hemorrhage", capsys, work)
    assert "--select" in line and "--val-fraction" in line


def test_Q30_masks_given_as_a_file(data, predictions, work, capsys):
    one_line(_quantify(data, predictions, [predictions], work), f"{predictions}: a file, not the masks folder", capsys,
             work)


def test_run_quantify_api_arguments(data, predictions, tmp_path):
    """A35 (empty datalist), A36 (one CSV as a str), A37 (min_slices an int), A38 (folds of one patient)."""
    from hemwsl.benchmark import cv_folds
    from hemwsl.data.datalist import build_datalist
    from hemwsl.quantify import run_quantify

    dl = build_datalist("ct-ich", data)
    folds = cv_folds(dl, n_folds=2)
    raises_named(lambda: run_quantify([], data / "masks", [predictions], tmp_path / "a35", ({}, {})), "datalist: no patients")
    raises_named(lambda: run_quantify(dl, data / "masks", [predictions], tmp_path / "a38", ({dl[0]["patient"]: 0}, {0: set()})),
                 "folds: patient(s)")
    raises_named(lambda: run_quantify(dl, data / "masks", [predictions], tmp_path / "a37", folds, min_slices="3"),
                 "min_slices must be an integer >= 1 or a list of them")
    assert not any(tmp_path.glob("a3*"))
    s = run_quantify(dl, data / "masks", str(predictions), tmp_path / "q", folds, n_boot=10, figures=False, min_slices=2)
    assert s["settings"]["min_slices"] == [2] and s["scan"]["n"] == len(dl)


def test_scan_probabilities_of_no_csv():  # A33
    from hemwsl.quantify import scan_probabilities

    raises_named(lambda: scan_probabilities([]), "prediction_csvs: no predictions CSV given")


# --------------------------------------------------------------------------------------------- API
def test_scan_score_refuses_probabilities_outside_0_1():  # A07, A08, A09
    from hemwsl.quantify import scan_score

    raises_named(lambda: scan_score([0.2, float("nan"), 0.9], "max"), "slice probabilities must be in [0, 1], got nan")
    raises_named(lambda: scan_score([0.2, 5.0], "max"), "got 5 at slice 1")
    raises_named(lambda: scan_score([0.2, 0.9], "run", slice_threshold=-1), "slice_threshold must be a probability")
    assert scan_score([0.2, 1.0 + 1e-9], "max") == 1.0  # round-off clipped


def test_scan_model_inputs_named_as_given():  # A14, A16
    from hemwsl.scanmodel import SCAN_FEATURES, fit_scan_model, scan_features

    raises_named(lambda: fit_scan_model(np.full((8, 3), np.nan), [0, 1] * 4), "got (8, 3) and (8,)")
    x = np.random.default_rng(0).random((8, len(SCAN_FEATURES)))
    x[0, 0] = np.nan
    raises_named(lambda: fit_scan_model(x, [0, 1] * 4), "1 NaN/inf feature value(s)")
    b = np.ones((4, 4, 3), bool)
    raises_named(lambda: scan_features([0.5] * 3, np.zeros((4, 4, 3)), b, spacing=(1, 1)),
                 "spacing must be 3 positive voxel sizes")


def test_paired_auroc_difference_n_boot():  # A29
    from hemwsl.metrics.classification import paired_auroc_difference

    raises_named(lambda: paired_auroc_difference([0, 1, 0, 1], [.1, .9, .2, .8], [.1, .9, .2, .8], n_boot=-5),
                 "n_boot must be >= 10")


def test_calibrate_hu_inputs():  # A01, A03, A04
    from hemwsl.thresholds.intensity import calibrate_hu

    b = np.ones((4, 4, 3), bool)
    raises_named(lambda: calibrate_hu(np.full((4, 4, 3), np.nan), b), "calibrate_hu: the CT holds 48 NaN/inf voxel(s)")
    raises_named(lambda: calibrate_hu(np.zeros((0,)), np.zeros((0,), bool)), "calibrate_hu: an empty CT")
    raises_named(lambda: calibrate_hu(np.full((4, 4, 3), 30.0), b, reference="abc"), "reference must be a number")
    assert calibrate_hu(np.full((4, 4, 3), 30.0), b, None)[1] == 0.0


def test_agreement_strata_and_calibration_inputs():  # A22, A31
    from hemwsl.metrics.agreement import agreement_by_size
    from hemwsl.quantify import fit_calibration

    raises_named(lambda: agreement_by_size([1, 2], [1, 2], strata=[("x", 5, 1)]), "strata[0] must be (name, low mL")
    raises_named(lambda: fit_calibration([1, 2, 3], [1, 2]), "fit_calibration: 3 predicted and 2 true volumes")
    assert fit_calibration([], []) == (1.0, 0.0)  # documented: no recalibration with fewer than 3 scans


def test_run_cam_method_string_and_gate_flag():  # M05, M07
    import torch

    from hemwsl.engines.cam import run_cam

    net = torch.nn.Identity()
    raises_named(lambda: run_cam(net, [], "unused", "gradcam"), "datalist is empty")  # not 'unknown CAM method g'
    raises_named(lambda: run_cam(net, [], "unused", ["gradcam"], gate_with_probability="maybe"),
                 "gate_with_probability must be true or false")


# --------------------------------------------------------------------------------------------- predict input
def _with_grid(data: Path, tmp: Path, name: str, zooms, size=None) -> Path:
    img = nib.load(str(_first(data)))
    arr = np.asarray(img.dataobj)
    if size is not None:  # the middle of the head
        c = arr.shape[0] // 2 - size // 2
        arr = arr[c:c + size, c:c + size]
    out = tmp / name
    nib.save(nib.Nifti1Image(arr, np.diag([*zooms, 1.0])), str(out))
    return out


@pytest.mark.parametrize("zooms, size, named", [((60.0, 60.0, 100.0), None, "the in-plane spacing 60 mm is outside"),
                                                ((0.001, 0.001, 0.001), None, "the in-plane spacing 0.001 mm"),
                                                ((0.9, 0.9, 5.0), 8, "field of view of 8 x 8 pixels")],
                         ids=["R_hugesp", "R_tinysp", "R_tiny8"])
def test_predict_refuses_an_implausible_voxel_grid(zooms, size, named, model, data, tmp_path, work, capsys):
    bad = _with_grid(data, tmp_path, "odd.nii.gz", zooms, size)
    one_line(["predict", "--model", model, "--no-figures", "--input", bad, "--out", work / "p"], f"{bad}: ", capsys,
             work)
    one_line(["predict", "--model", model, "--no-figures", "--input", bad, _first(data), "--out", work / "p"], named,
             capsys, work)


def test_M04_predict_folder_that_is_a_file(data):
    from hemwsl.predict import find_scans

    raises_named(lambda: find_scans(_first(data)), f"{_first(data)}: a file, not a folder of scans")


# --------------------------------------------------------------------------------------------- DICOM
def _series(data: Path, folder: Path, edit=None, patient_id="ANON", seed=0) -> Path:
    import pydicom

    from hemwsl.data.dicom import write_dicom_series
    from hemwsl.data.io import load_volume

    vol = load_volume(_first(data))
    files = write_dicom_series(vol.array, vol.affine, folder, patient_id=patient_id, seed=seed)
    if edit is not None:
        for f in files:
            ds = pydicom.dcmread(str(f))
            edit(ds)
            ds.save_as(str(f))
    return folder


def _no_intercept(ds):
    del ds.RescaleIntercept
    del ds.RescaleSlope


def _bad_orient(ds):
    ds.ImageOrientationPatient = [1, 0, 0, 1, 0, 0]


def _zero_spacing(ds):
    ds.PixelSpacing = [0, 0]


@pytest.mark.parametrize("edit, named", [(_no_intercept, "has no RescaleIntercept"),
                                         (_bad_orient, "is not two orthogonal unit vectors"),
                                         (_zero_spacing, "PixelSpacing [0.0, 0.0] must be two positive numbers")],
                         ids=["R_dcm_nointercept", "R_dcm_badorient", "R_dcm_zerospacing"])
def test_dicom_header_faults_are_named(edit, named, data, tmp_path):
    from hemwsl.data.dicom import read_dicom_series

    folder = _series(data, tmp_path / "dcm", edit)
    message = raises_named(lambda: read_dicom_series(folder), str(folder))
    assert named in message, message


def test_R_dcm_two_series_of_equal_size_refused(data, tmp_path, model, work, capsys):
    from hemwsl.data.dicom import read_dicom_series

    folder = tmp_path / "two"
    _series(data, folder / "a", patient_id="A", seed=1)
    _series(data, folder / "b", patient_id="B", seed=2)
    raises_named(lambda: read_dicom_series(folder), f"{folder}: 2 CT series of 6 slices each")
    one_line(["predict", "--model", model, "--no-figures", "--input", folder, "--out", work / "p"],
             "which one is the scan?", capsys, work)


def test_Q09_patient_spelt_without_padding(data, predictions, tmp_path, work, capsys):
    """A numeric patient written ``3`` for the dataset's ``003`` is that patient; written both ways in the same
    predictions it is one line naming the CSV."""
    lines = predictions.read_text().splitlines()
    pat = lines[1].split(",")[0]
    assert pat.isdigit() and pat != str(int(pat))
    mixed = _edit_csv(predictions, tmp_path / "mixed.csv",
                      lambda ls: [ls[0], ls[1].replace(pat + ",", str(int(pat)) + ",", 1), *ls[2:]])
    one_line(_quantify(data, data / "masks", [mixed], work), f"{mixed}: patient {pat} is written both", capsys, work)
    unpadded = _edit_csv(predictions, tmp_path / "unpadded.csv",
                         lambda ls: [ls[0], *[(str(int(pat)) + ln[len(pat):]) if ln.startswith(pat + ",") else ln
                                              for ln in ls[1:]]])
    assert main([str(a) for a in _quantify(data, data / "masks", [unpadded], tmp_path / "ok")]) == 0
