"""hemwsl quantify: scan-level call and mL against the truth, on phantoms whose true volumes are known."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from hemwsl.cli import main
from hemwsl.errors import HemwslInputError
from hemwsl.quantify import choose_scan_threshold, fit_calibration, run_quantify, scan_probabilities, scan_score


def test_scan_score_hand_values():
    p = [0.1, 0.6, 0.7, 0.2, 0.9]
    assert scan_score(p, "max") == pytest.approx(0.9)
    assert scan_score(p, "top3") == pytest.approx((0.9 + 0.7 + 0.6) / 3)
    assert scan_score(p, "noisy_or") == pytest.approx(1 - 0.9 * 0.4 * 0.3 * 0.8 * 0.1)
    assert scan_score(p, "run") == pytest.approx(2 / 3)  # slices 1-2 are the longest run >= 0.5
    assert scan_score([0.9] * 5, "run") == 1.0
    with pytest.raises(HemwslInputError, match="scan aggregation"):
        scan_score(p, "mean")
    with pytest.raises(HemwslInputError, match="without slice"):
        scan_score([], "max")


def test_choose_scan_threshold_keeps_the_sensitivity():
    scores = [0.9, 0.8, 0.3, 0.2, 0.7, 0.1]
    labels = [1, 1, 1, 0, 0, 0]
    assert choose_scan_threshold(scores, labels, 1.0) == pytest.approx(0.3)  # every positive kept
    assert choose_scan_threshold(scores, labels, 0.6) == pytest.approx(0.8)  # 2 of 3 suffice
    with pytest.raises(HemwslInputError, match="no positive"):
        choose_scan_threshold([0.1], [0])
    assert fit_calibration([1, 2, 3, 4], [3, 5, 7, 9]) == pytest.approx((2.0, 1.0))
    assert fit_calibration([1, 2], [3, 5]) == (1.0, 0.0)


def _setup(synthetic_datalist, tmp_path, fake_negative_ml=True):
    """Predicted masks = the true masks (plus blood in one hemorrhage-free scan), predictions separating
    positive from negative scans."""
    masks = tmp_path / "masks"
    masks.mkdir()
    rows = []
    neg = None
    for e in synthetic_datalist:
        img = nib.load(e["label"])
        m = (np.asarray(img.dataobj) > 0).astype(np.uint8)
        if not m.any() and neg is None and fake_negative_ml:
            neg = e["patient"]
            m[15:35, 15:35, 3:7] = 1  # 1,600 voxels: several mL
        nib.save(nib.Nifti1Image(m, img.affine, img.header), str(masks / f"{e['patient']}.nii.gz"))
        labels = e["slice_labels"]
        for z, lab in enumerate(labels):
            rows.append([e["patient"], z, int(lab), 0.95 if lab else 0.05])
    pred = tmp_path / "predictions.csv"
    with open(pred, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["patient", "slice", "label_any", "prob_any"])
        w.writerows(rows)
    return masks, pred, neg


def test_quantify_recovers_known_volumes_and_gives_zero_to_negative_scans(synthetic_datalist, tmp_path):
    from hemwsl.benchmark import cv_folds

    masks, pred, neg = _setup(synthetic_datalist, tmp_path)
    folds = cv_folds(synthetic_datalist, n_folds=4, seed=0)
    s = run_quantify(synthetic_datalist, masks, [pred], tmp_path / "q", folds, n_boot=50)
    a = s["agreement"]["estimate"]["all"]
    assert a["ccc"] == pytest.approx(1.0) and a["mae"] == pytest.approx(0.0, abs=1e-9)
    assert a["negatives_under_zero_ml"] == 1.0 and a["within_tol"] == 1.0
    assert all(v["auroc"] == 1.0 for v in s["scan"]["auroc_by_aggregation"].values())
    assert s["scan"]["sensitivity"] == 1.0 and s["scan"]["specificity"] == 1.0
    # without the scan call the fake blood of the hemorrhage-free scan counts
    raw = s["agreement"]["mask, no scan call"]["all"]
    assert raw["negatives_under_zero_ml"] < 1.0
    with open(tmp_path / "q" / "per_patient.csv") as f:
        rows = {r["patient"]: r for r in csv.DictReader(f)}
    assert float(rows[neg]["mask_ml"]) > 0 and float(rows[neg]["pred_ml"]) == 0.0 and rows[neg]["scan_call"] == "0"
    for e in synthetic_datalist:
        img = nib.load(e["label"])
        true_ml = float((np.asarray(img.dataobj) > 0).sum() * np.prod(img.header.get_zooms()[:3]) / 1000)
        assert float(rows[e["patient"]]["true_ml"]) == pytest.approx(true_ml, abs=1e-3)
    assert (tmp_path / "q" / "volume_agreement.png").stat().st_size > 0
    assert "Lin's CCC" in (tmp_path / "q" / "summary.md").read_text()
    assert json.loads((tmp_path / "q" / "summary.json").read_text())["settings"]["min_sensitivity"] == 0.9


def test_quantify_command_and_its_errors(synthetic_root, synthetic_datalist, tmp_path, capsys):
    masks, pred, _ = _setup(synthetic_datalist, tmp_path)
    args = ["quantify", "--dataset-dir", str(synthetic_root), "--masks", str(masks), "--predictions", str(pred),
            "--out", str(tmp_path / "q"), "--folds", "4", "--n-boot", "20", "--no-figures"]
    assert main(args) == 0
    assert "CCC 1.000" in capsys.readouterr().out
    assert main([*args[:4], str(tmp_path / "nope"), *args[5:]]) == 2
    assert "masks folder not found" in capsys.readouterr().err
    assert main([*args[:-2], "0", "--no-figures"]) == 2
    assert "--n-boot" in capsys.readouterr().err
    half = tmp_path / "half.csv"
    lines = pred.read_text().splitlines()
    half.write_text("\n".join(lines[: len(lines) // 2]) + "\n")
    assert main([*args[:6], str(half), *args[7:]]) == 2
    assert "no slice predictions for patient" in capsys.readouterr().err
    with pytest.raises(HemwslInputError, match="also in an earlier"):
        scan_probabilities([pred, pred])
    # masks in per-fold subfolders (an ablation row's pseudo/ folder) give the same table; one patient in two
    # fold folders is refused
    import shutil

    nested = tmp_path / "nested"
    files = sorted(masks.glob("*.nii.gz"))
    for i, f in enumerate(files):
        (nested / f"fold{i % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(f, nested / f"fold{i % 2}" / f.name)
    assert main([*args[:4], str(nested), *args[5:8], str(tmp_path / "q2"), *args[9:]]) == 0
    assert "CCC 1.000" in capsys.readouterr().out
    assert (tmp_path / "q2" / "per_patient.csv").read_text() == (tmp_path / "q" / "per_patient.csv").read_text()
    shutil.copy(files[0], nested / "fold1" / files[0].name)
    assert main([*args[:4], str(nested), *args[5:8], str(tmp_path / "q3"), *args[9:]]) == 2
    assert "masks in several fold folders" in capsys.readouterr().err


def test_quantify_chooses_the_thin_component_rule_on_selection_patients(synthetic_datalist, tmp_path):
    """A spurious one-slice blob added to every predicted mask: each fold's selection patients choose to drop
    components spanning fewer than 2 slices, which brings the volumes back to within the phantoms' own one-slice fragments."""
    from hemwsl.benchmark import cv_folds

    masks, pred, _ = _setup(synthetic_datalist, tmp_path, fake_negative_ml=False)
    for f in masks.glob("*.nii.gz"):
        img = nib.load(str(f))
        m = np.asarray(img.dataobj).copy()
        if m.any():
            m[2:12, 2:12, 0] = 1  # a corner blob on one slice, away from the lesion
        nib.save(nib.Nifti1Image(m, img.affine, img.header), str(f))
    folds = cv_folds(synthetic_datalist, n_folds=4, seed=0)
    kept = run_quantify(synthetic_datalist, masks, [pred], tmp_path / "q1", folds, n_boot=20, figures=False)
    chosen = run_quantify(synthetic_datalist, masks, [pred], tmp_path / "q2", folds, min_slices=[1, 2, 3], n_boot=20,
                          figures=False)
    # what remains after the rule are the phantoms' own one-slice lesion fragments
    assert kept["agreement"]["estimate"]["all"]["mae"] > 5 * chosen["agreement"]["estimate"]["all"]["mae"]
    assert {c["min_slices"] for c in chosen["choices"].values()} == {2}  # the smallest rule that works
    assert chosen["settings"]["min_slices"] == [1, 2, 3]
    with pytest.raises(HemwslInputError, match="min_slices"):
        run_quantify(synthetic_datalist, masks, [pred], tmp_path / "q3", folds, min_slices=[0])


def test_the_rule_can_be_held_to_the_sensitivity_of_the_volumes(synthetic_datalist, tmp_path):
    """Every bleeding scan's mask gets a large one-slice false blob, and half of them keep their lesion on one slice
    only: the smallest error drops one-slice components and with them those bleeds (0 mL, though the scan call says
    positive). ``rule_keeps_sensitivity`` keeps the rule that leaves every bleeding scan a volume; the report says how
    many bleeding scans were given one either way."""
    from hemwsl.benchmark import cv_folds

    masks, pred, _ = _setup(synthetic_datalist, tmp_path, fake_negative_ml=False)
    positives = 0
    for f in sorted(masks.glob("*.nii.gz")):
        img = nib.load(str(f))
        m = np.asarray(img.dataobj).copy()
        if m.any():
            if positives % 2 == 0:  # the lesion on its largest slice only
                z = int(np.argmax(m.reshape(-1, m.shape[2]).sum(0)))
                m[..., [i for i in range(m.shape[2]) if i != z]] = 0
            m[0:40, 0:40, 0 if m[..., 0].sum() == 0 else 1] = 1  # the false blob, on a slice of its own
            positives += 1
        nib.save(nib.Nifti1Image(m, img.affine, img.header), str(f))
    folds = cv_folds(synthetic_datalist, n_folds=4, seed=0)
    by_error = run_quantify(synthetic_datalist, masks, [pred], tmp_path / "q1", folds, min_slices=[1, 2], n_boot=20,
                            figures=False)
    held = run_quantify(synthetic_datalist, masks, [pred], tmp_path / "q2", folds, min_slices=[1, 2], n_boot=20,
                        figures=False, rule_keeps_sensitivity=True)
    assert {c["min_slices"] for c in by_error["choices"].values()} == {2}
    assert {c["min_slices"] for c in held["choices"].values()} == {1}
    assert by_error["scan"]["sensitivity"] == held["scan"]["sensitivity"] == 1.0  # the calls do not see it
    a, b = by_error["agreement"]["estimate"]["all"], held["agreement"]["estimate"]["all"]
    assert a["positives_given_volume"] == pytest.approx(0.5, abs=0.1) and b["positives_given_volume"] == 1.0
    assert a["mae"] < b["mae"]
    assert all("selection_volume_sensitivity_by_min_slices" in c for c in held["choices"].values())
    assert held["settings"]["rule_keeps_sensitivity"] is True and "rule_keeps_sensitivity" not in by_error["settings"]
    with pytest.raises(HemwslInputError, match="rule_keeps_sensitivity"):  # a report of the other settings
        run_quantify(synthetic_datalist, masks, [pred], tmp_path / "q2", folds, min_slices=[1, 2], n_boot=20,
                     figures=False)
    assert "| with hemorrhage > 0 mL |" in (tmp_path / "q2" / "summary.md").read_text()
