"""``hemwsl pseudo`` command module (:mod:`hemwsl.commands.pseudo`)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from hemwsl.commands.pseudo import add_pseudo_arguments, run_pseudo
from hemwsl.errors import HemwslInputError


def _parse(argv):
    p = argparse.ArgumentParser()
    add_pseudo_arguments(p)
    return p.parse_args(argv)


def _one_patient(box_files, tmp_path, probs):
    """Datalist ``dl.json`` of the box CT with its true mask (the 70 HU half of the box, 32 pixels, slice 0 only)
    and a predictions CSV with slice probabilities ``probs``; returns ``(mask path, mask, CSV path)``."""
    from hemwsl.data.datalist import save_datalist
    from hemwsl.data.io import save_nifti

    ref = tmp_path / "masks" / "p1.nii.gz"
    truth = np.zeros((24, 24, 4), np.uint8)
    truth[6:14, 10:14, 0] = 1
    save_nifti(truth, np.diag([0.8, 0.8, 5.0, 1.0]), ref)
    save_datalist([{"image": str(box_files["ct"]), "label": str(ref), "patient": "p1", "slice_labels": [1, 0, 0, 0],
                    "subtype_labels": None, "spacing": [0.8, 0.8, 5.0], "num_slices": 4, "positive": 1}],
                  tmp_path / "dl.json")
    csv = tmp_path / "pred.csv"
    csv.write_text("patient,slice,label_any,prob_any\n"
                   + "".join(f"p1,{z},{int(z == 0)},{p}\n" for z, p in enumerate(probs)))
    return ref, truth, csv


def test_run_pseudo_cam_mode_from_predictions(box_files, tmp_path, capsys):
    from hemwsl.data.io import load_volume

    ref, truth, csv = _one_patient(box_files, tmp_path, probs=(0.9, 0.1, 0.2, 0.3))
    out = tmp_path / "pseudo"
    args = _parse(["--datalist", str(tmp_path / "dl.json"), "--cam-dir", str(box_files["cam_dir"]), "--out", str(out),
                   "--mode", "cam", "--predictions-csv", str(csv), "--windows", "brain", "--num-slices", "1",
                   "--evaluate", "--no-progress"])
    assert run_pseudo(args) == 0
    mask = load_volume(out / "p1.nii.gz", kind="mask").array
    np.testing.assert_array_equal(mask[..., 0], box_files["box"])
    assert mask[..., 1:].sum() == 0
    # Dice by hand: pseudo = 64-voxel box, truth = its 32-voxel half: 2 * 32 / (64 + 32) = 2/3
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scores["n"] == 1 and scores["mean_dice"] == pytest.approx(2 / 3)
    # diagnostics: half of the box is blood (precision 1/2), all the blood is labelled, on a labelled slice
    assert scores["mean_precision"] == pytest.approx(0.5)
    assert scores["mean_recall"] == pytest.approx(1.0) and scores["mean_slice_recall"] == pytest.approx(1.0)
    assert json.loads((out / "datalist.json").read_text())[0]["reference"] == str(ref)


def test_run_pseudo_bad_arguments(box_files, tmp_path):
    from hemwsl.data.datalist import save_datalist

    save_datalist([{"image": str(box_files["ct"]), "label": None, "patient": "p1", "slice_labels": None,
                    "subtype_labels": None, "spacing": [0.8, 0.8, 5.0], "num_slices": 4, "positive": 0}],
                  tmp_path / "dl.json")
    args = _parse(["--datalist", str(tmp_path / "dl.json"), "--cam-dir", str(box_files["cam_dir"]), "--out", "o"])
    with pytest.raises(HemwslInputError, match="--checkpoint is required for --mode cam_kmeans"):
        run_pseudo(args)
    args = _parse(["--datalist", "x.json", "--cam-dir", str(box_files["cam_dir"]), "--out", str(tmp_path / "o")])
    with pytest.raises(HemwslInputError, match="x.json: datalist file not found"):
        run_pseudo(args)
    args = _parse(["--dataset-dir", str(tmp_path), "--datalist", "x.json", "--cam-dir", "c", "--out", "o"])
    with pytest.raises(HemwslInputError, match="exactly one of --datalist and --dataset-dir"):
        run_pseudo(args)


def test_run_pseudo_prior_min_size_and_validation_threshold(box_files, tmp_path, capsys):
    """The intensity prior's HU range and the component size reach the threshold; --prob-threshold f1_max reads the
    classifier's validation report."""
    from hemwsl.commands.pseudo import _prob_threshold
    from hemwsl.data.io import load_volume

    ref, truth, csv = _one_patient(box_files, tmp_path, probs=(0.9, 0.1, 0.6, 0.3))
    report = tmp_path / "report_val.json"
    report.write_text(json.dumps({"any": {"f1_max": {"threshold": 0.75}, "youden": {"threshold": 0.55}}}))
    assert _prob_threshold("0.4", None) == (0.4, None) and _prob_threshold("youden", str(report)) == (0.55, "youden")
    with pytest.raises(HemwslInputError, match="--val-report"):
        _prob_threshold("f1_max", None)
    with pytest.raises(HemwslInputError, match="f1_max or youden"):
        _prob_threshold("best", str(report))
    common = ["--datalist", str(tmp_path / "dl.json"), "--cam-dir", str(box_files["cam_dir"]), "--mode", "cam",
              "--predictions-csv", str(csv), "--windows", "brain", "--num-slices", "1", "--evaluate", "--no-progress",
              "--threshold-strategy", "intensity", "--hu-range", "60", "90"]
    # slice 2 (p = 0.6) passes 0.5 but not the validation F1-max threshold 0.75
    assert run_pseudo(_parse(common + ["--out", str(tmp_path / "a"), "--prob-threshold", "f1_max",
                                       "--val-report", str(report)])) == 0
    mask = load_volume(tmp_path / "a" / "p1.nii.gz", kind="mask").array
    np.testing.assert_array_equal(mask, truth)  # CAM > 0.7 AND 60-90 HU: exactly the blood half
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["mean_dice"] == pytest.approx(1.0)
    # another fold's call into the same folder with its own validation threshold is accepted (the folder records
    # the rule; each volume its value)
    report2 = tmp_path / "report_val2.json"
    report2.write_text(json.dumps({"any": {"f1_max": {"threshold": 0.65}}}))
    assert run_pseudo(_parse(common + ["--out", str(tmp_path / "a"), "--prob-threshold", "f1_max",
                                       "--val-report", str(report2)])) == 0
    assert json.loads((tmp_path / "a" / "pseudo_params.json").read_text())["prob_threshold"] == "f1_max"
    assert json.loads((tmp_path / "a" / ".done" / "p1.json").read_text())["prob_threshold"] == 0.75
    with pytest.raises(HemwslInputError, match="prob_threshold"):  # a fixed value is not the same setting
        run_pseudo(_parse(common + ["--out", str(tmp_path / "a"), "--prob-threshold", "0.75"]))
    assert run_pseudo(_parse(common + ["--out", str(tmp_path / "p"), "--threshold", "none", "--prob-threshold",
                                       "0.8"])) == 0  # the prior alone: every 60-90 HU pixel of slice 0
    np.testing.assert_array_equal(load_volume(tmp_path / "p" / "p1.nii.gz", kind="mask").array, truth)
    capsys.readouterr()
    assert run_pseudo(_parse(common + ["--out", str(tmp_path / "b"), "--min-size", "33"])) == 0
    assert load_volume(tmp_path / "b" / "p1.nii.gz", kind="mask").array.sum() == 0  # 32-pixel components dropped
    with pytest.raises(HemwslInputError, match="--hu-range needs --threshold-strategy intensity"):
        run_pseudo(_parse(common[:-5] + ["--out", str(tmp_path / "c"), "--hu-range", "60", "90"]))


def test_brain_erosion_restricts_the_labels(box_files, tmp_path):
    from hemwsl.data.io import save_nifti
    from hemwsl.data.settings import InputSettings
    from hemwsl.pseudo import PseudoLabelSettings, pseudo_label_volume
    from tests.pseudo.conftest import AFFINE, box_volume

    hu, cam, _, _ = box_volume()
    for edge in (2, 3, 20, 21):  # a 100 HU skull ring around the head: the brain is rows/cols 4..19
        hu[edge, 2:22], hu[2:22, edge] = 100.0, 100.0
    ct = tmp_path / "skull.nii.gz"
    save_nifti(hu, AFFINE, ct)
    kw = dict(probabilities=np.array([0.9, 0.2, 0.6, 0.5]),
              inputs=InputSettings(windows=("brain",), num_slices=1, spatial_size=None, skull_strip=True))
    plain, _, _ = pseudo_label_volume(ct, cam, None, PseudoLabelSettings(mode="cam"), **kw)
    eroded, _, _ = pseudo_label_volume(ct, cam, None, PseudoLabelSettings(mode="cam", brain_erosion=5), **kw)
    assert plain.sum() > 0 and (eroded <= plain).all() and eroded.sum() < plain.sum()
    with pytest.raises(HemwslInputError, match="brain_erosion"):
        pseudo_label_volume(box_files["ct"], box_files["cam"], None, PseudoLabelSettings(mode="cam", brain_erosion=2),
                            **{**kw, "inputs": InputSettings(windows=("brain",), num_slices=1, spatial_size=None,
                                                             skull_strip=False)})


def test_evaluate_pseudo_labels_diagnostics(tmp_path):
    """Precision, recall and slice recall by hand; an empty pseudo mask has no precision and is left out of its mean."""
    from hemwsl.data.io import save_nifti
    from hemwsl.pseudo import evaluate_pseudo_labels

    aff = np.eye(4)
    truth = np.zeros((8, 8, 3), np.uint8)
    truth[1:3, 1:3, 0] = 1  # 4 voxels on slice 0
    truth[1:3, 1:3, 2] = 1  # 4 voxels on slice 2
    pseudo = np.zeros_like(truth)
    pseudo[1:3, 1:4, 0] = 1  # 6 voxels, 4 of them blood; slice 2 unlabelled
    for name, arr in (("gt", truth), ("a", pseudo), ("b", np.zeros_like(truth))):
        save_nifti(arr, aff, tmp_path / f"{name}.nii.gz")
    dl = [{"label": str(tmp_path / "a.nii.gz"), "reference": str(tmp_path / "gt.nii.gz"), "patient": "a"},
          {"label": str(tmp_path / "b.nii.gz"), "reference": str(tmp_path / "gt.nii.gz"), "patient": "b"}]
    out = evaluate_pseudo_labels(dl)
    a, b = out["diagnostics"]["per_patient"]["a"], out["diagnostics"]["per_patient"]["b"]
    assert a == pytest.approx({"precision": 4 / 6, "recall": 4 / 8, "slice_recall": 4 / 8})
    assert np.isnan(b["precision"]) and b["recall"] == 0 and b["slice_recall"] == 0
    assert out["diagnostics"]["mean"] == pytest.approx({"precision": 4 / 6, "recall": 0.25, "slice_recall": 0.25})
    assert out["per_patient"]["a"] == pytest.approx(2 * 4 / (6 + 8))
