"""``hemwsl subtypes``: Chen & Kuo 2026's Algorithm 1 scored out of fold (hand values, plumbing, resume)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hemwsl.subtypes import _dice, _labels, run_subtype_benchmark
from hemwsl.cli import main
from hemwsl.errors import HemwslInputError
from hemwsl.networks import build_network
from hemwsl.predict import pack_model
from hemwsl.thresholds import SubtypeRule

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SETTINGS = {"backbone": "lse_resnet10", "spatial_size": [64, 64], "skull_strip": True, "windows": ["brain", "blood"],
            "num_slices": 3, "tta": True, "multilabel": True}


def test_labels_by_hand():
    """Subtypes present by their class thresholds claim pixels over the mask threshold; the larger map wins; slices
    where no subtype is present are skipped and stay 0."""
    rule = SubtypeRule(class_thresholds=[0.5, 0.5, 0.5, 0.5, 0.5], normalisation="max")
    probs = np.array([[0.9, 0.8, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.1, 0.1]])
    norm = np.zeros((2, 5, 2, 2))
    norm[0, 0] = [[1.0, 0.6], [0.2, 0.0]]
    norm[0, 1] = [[0.5, 1.0], [0.1, 0.0]]  # each map already peaks at 1
    norm[0, 2] = 1.0  # absent subtype: never claims
    norm[1] = 1.0  # nothing present on slice 1
    brain = np.ones((2, 2, 2), dtype=bool)
    lab = _labels(rule, probs, norm, brain, 0.4)
    assert lab[0].tolist() == [[1, 2], [0, 0]] and not lab[1].any()
    assert _labels(rule, probs, norm, brain, 0.55)[0].tolist() == [[1, 2], [0, 0]]
    assert _labels(rule, probs, norm, brain, 0.15)[0].tolist() == [[1, 2], [1, 0]]
    assert rule(probs, norm, brain).shape == (2, 2, 2)  # the full call agrees on normalised input
    rule.mask_threshold = np.array([0.95])
    np.testing.assert_array_equal(rule.label_normalised(probs, rule.normalise(norm), brain),
                                  _labels(rule, probs, norm, brain, 0.95))
    assert _dice(np.array([1, 1, 0], bool), np.array([1, 0, 0], bool)) == pytest.approx(2 / 3)
    assert _dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0


def _six_output_cv(root: Path, folds=range(5)) -> Path:
    root.mkdir(parents=True)
    (root / "cv_settings.json").write_text(json.dumps(SETTINGS))
    for k in folds:
        torch.manual_seed(k)
        net = build_network("lse_resnet10", in_channels=6, num_classes=6)
        (root / f"fold{k}" / "models").mkdir(parents=True)
        torch.save(net.state_dict(), root / f"fold{k}" / "models" / "model.pt")
    return root


def test_algorithm1_out_of_fold_on_phantoms(synthetic_root, tmp_path, capsys):
    pkg = pack_model(_six_output_cv(tmp_path / "cv"), tmp_path / "pkg", dataset_dir=synthetic_root, scan_call="none")
    out = tmp_path / "out"
    assert main(["subtypes", "--model", str(pkg), "--dataset-dir", str(synthetic_root), "--out", str(out),
                 "--mask-thresholds", "0.3", "0.7"]) == 0
    assert "algorithm1: Dice per slice" in capsys.readouterr().out
    s = json.loads((out / "subtypes.json").read_text())
    assert set(s["variants"]) == {"algorithm1", "algorithm1+prior"}
    assert set(s["chosen_mask_threshold"].values()) <= {0.3, 0.7}
    rows = list(csv.DictReader((out / "per_slice.csv").open()))
    # every ground-truth-positive slice of every patient is scored once per variant, by its own fold's rule
    from hemwsl.data.datalist import build_datalist

    n_gt = sum(int(np.sum(e["slice_labels"])) for e in build_datalist("ct-ich", synthetic_root))
    for v in ("algorithm1", "algorithm1+prior"):
        vr = [r for r in rows if r["variant"] == v]
        assert len(vr) == n_gt == s["variants"][v]["slices"]
        assert s["variants"][v]["dice_per_slice"] == pytest.approx(np.mean([float(r["dice"]) for r in vr]))
    # the prior variant keeps a subset of the heatmap-only labels: never more predicted mL
    pat = list(csv.DictReader((out / "per_patient.csv").open()))
    by = {(r["patient"], r["variant"], r["threshold"]): float(r["pred_ml"]) for r in pat}
    for (p, v, t), ml in by.items():
        if v == "algorithm1+prior":
            assert ml <= by[(p, "algorithm1", t)] + 1e-9
    assert "| algorithm1 |" in (out / "subtypes.md").read_text()
    # resume: the cached outputs are reused; other settings in the same folder are refused
    before = {f.name: f.stat().st_mtime_ns for f in (out / "outputs").iterdir()}
    run_subtype_benchmark(pkg, synthetic_root, out, mask_thresholds=[0.3, 0.7], log=lambda *_: None)
    assert {f.name: f.stat().st_mtime_ns for f in (out / "outputs").iterdir()} == before
    with pytest.raises(HemwslInputError, match="level"):
        run_subtype_benchmark(pkg, synthetic_root, out, level=1, mask_thresholds=[0.3, 0.7])


def test_algorithm1_refuses_a_one_output_model(synthetic_root, tmp_path):
    cv = tmp_path / "cv"
    cv.mkdir()
    (cv / "cv_settings.json").write_text(json.dumps({**SETTINGS, "multilabel": False}))
    (cv / "fold0" / "models").mkdir(parents=True)
    torch.save(build_network("lse_resnet10", in_channels=6, num_classes=1).state_dict(), cv / "fold0" / "models" / "model.pt")
    pkg = pack_model(cv, tmp_path / "pkg", dataset_dir=synthetic_root, scan_call="none")
    with pytest.raises(HemwslInputError, match="6 outputs"):
        run_subtype_benchmark(pkg, synthetic_root, tmp_path / "out")
    with pytest.raises(HemwslInputError, match="mask-thresholds"):
        run_subtype_benchmark(pkg, synthetic_root, tmp_path / "out", mask_thresholds=[0.0])


def test_selection_union_equals_the_labels_union():
    """The selection rows score the union as the largest normalised map of the present subtypes over the mask
    threshold: the same pixels as the label map's foreground."""
    rng = np.random.default_rng(0)
    rule = SubtypeRule(class_thresholds=[0.3, 0.5, 0.7, 0.2, 0.9], normalisation="max")
    probs = rng.random((6, 5))
    norm = rng.random((6, 5, 8, 8))
    brain = rng.random((6, 8, 8)) > 0.2
    for t in (0.1, 0.5, 0.8):
        present = probs >= rule.class_thresholds[None, :]
        peak = np.where(present[:, :, None, None], norm, -np.inf).max(1)
        peak[~brain] = -np.inf
        np.testing.assert_array_equal(peak > t, _labels(rule, probs, norm, brain, t) > 0)
