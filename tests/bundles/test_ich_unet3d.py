"""Smoke tests of bundles/ich_unet3d: train -> evaluate -> inference on tiny phantoms, pseudo-label
training with true-mask evaluation through the seg-cv command, the command line and torchrun."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from hemwsl.data.io import load_volume, save_nifti
from hemwsl.engines.bundle import check_bundle, config_files, run_bundle, validate_metadata
from hemwsl.engines.classifier import fold_datalists
from hemwsl.engines.segmentation import read_metrics_csv
from hemwsl.metrics.volume import lesion_volume_ml, volume_metrics

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "ich_unet3d"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_metadata_is_valid_offline():
    meta = validate_metadata(BUNDLE / "configs" / "metadata.json")
    assert meta["network_data_format"]["inputs"]["image"]["num_channels"] == 3
    assert meta["network_data_format"]["outputs"]["pred"]["num_channels"] == 1


def test_standard_properties_present():
    assert check_bundle(BUNDLE) == []


def _tiny(root, out, **kw):
    return {
        "dataset_dir": str(root),
        "output_dir": str(out),
        "spatial_size": [32, 32],
        "features": [8, 16, 32],
        "patch_size": [32, 32, 8],
        "samples_per_volume": 2,
        "batch_size": 2,
        "n_folds": 4,
        "fold": 1,
        "epochs": 1,
        "cache_workers": 0,
        **kw,
    }


def test_train_evaluate_infer(synthetic_root, synthetic_datalist, tmp_path):
    out = tmp_path / "unet"
    kw = _tiny(synthetic_root, out, epochs=2)
    run_bundle(BUNDLE, ["train"], **kw)
    fold_dir = out / "fold1"
    assert (fold_dir / "models" / "model.pt").is_file()
    history = json.loads((fold_dir / "history.json").read_text())["epochs"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(h["time_s"] > 0 and np.isfinite(h["train_loss"]) and "val_mean_dice" in h for h in history)
    assert any(p.name.startswith("events.out.tfevents") for p in fold_dir.iterdir())

    run_bundle(BUNDLE, ["train", "evaluate"], **kw)
    test_part = fold_datalists(synthetic_datalist, n_folds=4, fold=1, seed=0, val_fraction=0.15)["test"]
    rows = read_metrics_csv(fold_dir / "metrics_test.csv")
    assert [r["patient"] for r in rows] == [e["patient"] for e in test_part]
    for r, e in zip(rows, test_part):
        pred = load_volume(fold_dir / "predictions_test" / f"{e['patient']}.nii.gz", kind="mask")
        gt = load_volume(e["label"], kind="mask")
        assert pred.shape == gt.shape and np.allclose(pred.affine, gt.affine)  # back on the CT grid
        ref = volume_metrics(pred.array, gt.array, gt.spacing)
        for k, v in ref.items():
            assert (math.isnan(v) and math.isnan(r[k])) or r[k] == pytest.approx(v, rel=1e-4, abs=1e-9), k
    summary = json.loads((fold_dir / "summary_test.json").read_text())
    assert summary["n_patients"] == len(rows) and summary["n_positive"] == sum(r["gt_positive"] for r in rows)

    # inference on one held-out volume reproduces the evaluation's mask and reports its volume
    e = test_part[0]
    run_bundle(BUNDLE, ["train", "inference"], images=[e["image"]], **kw)
    stem = Path(e["image"]).name.split(".")[0]
    mask = load_volume(out / "inference" / f"{stem}_mask.nii.gz", kind="mask")
    evaluated = load_volume(fold_dir / "predictions_test" / f"{e['patient']}.nii.gz", kind="mask")
    np.testing.assert_array_equal(mask.array, evaluated.array)
    info = json.loads((out / "inference" / f"{stem}_volume.json").read_text())
    assert info["volume_ml"] == pytest.approx(lesion_volume_ml(mask.array, mask.spacing))


def test_seg_cv_on_pseudo_labels_scores_true_masks_and_resumes(synthetic_root, synthetic_datalist, tmp_path, capsys):
    from hemwsl.commands.segmentation import add_seg_cv_arguments, run_seg_cv

    # "pseudo-labels": the true masks dilated in-plane, so they differ from what evaluation must use
    pseudo = []
    for e in synthetic_datalist:
        gt = load_volume(e["label"], kind="mask")
        dil = ndimage.binary_dilation(gt.array > 0, structure=np.ones((3, 3, 1), bool)).astype(np.uint8)
        path = tmp_path / "pseudo" / f"{e['patient']}.nii.gz"
        save_nifti(dil, gt.affine, path)
        pseudo.append({"image": e["image"], "label": str(path), "patient": e["patient"]})
    (tmp_path / "pseudo" / "datalist.json").write_text(json.dumps(pseudo))

    parser = add_seg_cv_arguments(argparse.ArgumentParser())
    tiny = _tiny(synthetic_root, tmp_path / "cv")
    fixed = ("dataset_dir", "output_dir", "n_folds", "fold")
    sets = [f"{k}={json.dumps(v)}" for k, v in tiny.items() if k not in fixed]
    pseudo_file = str(tmp_path / "pseudo" / "datalist.json")
    argv = ["--dataset-dir", str(synthetic_root), "--datalist", pseudo_file, "--out", str(tmp_path / "cv"),
            "--folds", "4", "--only", "0", "1", "--set", *sets]
    args = parser.parse_args(argv)
    assert run_seg_cv(args) == 0
    summary = json.loads((tmp_path / "cv" / "seg_cv_summary.json").read_text())
    assert [f["fold"] for f in summary["folds"]] == [0, 1]
    true_ml = {e["patient"]: lesion_volume_ml(load_volume(e["label"], kind="mask").array, e["spacing"])
               for e in synthetic_datalist}
    n = 0
    for k in (0, 1):
        for r in read_metrics_csv(tmp_path / "cv" / f"fold{k}" / "metrics_test.csv"):
            assert r["gt_ml"] == pytest.approx(true_ml[r["patient"]], rel=1e-4)  # the true mask, not the pseudo-label
            n += 1
    assert summary["all"]["n_patients"] == n
    assert "| **all folds** |" in (tmp_path / "cv" / "seg_cv_summary.md").read_text()
    capsys.readouterr()
    assert run_seg_cv(args) == 0  # second run: both folds are skipped
    assert capsys.readouterr().out.count("done, skipped") == 2

    # gated by a "classifier" whose out-of-fold predictions are the true slice labels (folds 0-1 only)
    from hemwsl.engines.classifier import fold_datalists

    gate_cv = tmp_path / "classifier"
    truth = {e["patient"]: e for e in synthetic_datalist}
    for k in (0, 1):
        test = fold_datalists(synthetic_datalist, n_folds=4, fold=k, seed=0, val_fraction=0.15)["test"]
        rows = [f"{e['patient']},{z},{lab},{float(lab)}\n" for e in test for z, lab in enumerate(truth[e["patient"]]["slice_labels"])]
        (gate_cv / f"fold{k}").mkdir(parents=True)
        (gate_cv / f"fold{k}" / "predictions_test_last.csv").write_text("patient,slice,label_any,prob_any\n" + "".join(rows))
    gated_args = parser.parse_args([*argv, "--gate-cv-dir", str(gate_cv), "--gate-checkpoint", "last"])
    capsys.readouterr()
    assert run_seg_cv(gated_args) == 0
    out = capsys.readouterr().out
    assert "gated by predictions_test_last.csv" in out and "| **all folds** |" in out
    gated = json.loads((tmp_path / "cv" / "seg_cv_summary_gated.json").read_text())
    assert gated["all"]["n_patients"] == n
    assert gated["all"]["negative"]["with_false_positive"] == 0  # no prediction on a slice without blood
    for k in (0, 1):
        for r in read_metrics_csv(tmp_path / "cv" / f"fold{k}" / "metrics_test_gated.csv"):
            assert r["gt_ml"] == pytest.approx(true_ml[r["patient"]], rel=1e-4)
    assert json.loads((tmp_path / "cv" / "seg_cv_summary.json").read_text()) == summary  # ungated summary untouched


def test_monai_bundle_command_line(synthetic_root, tmp_path):
    """The documented `python -m monai.bundle run` entry point works from a clean process."""
    kw = _tiny(synthetic_root, tmp_path / "cli")
    args = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_files(BUNDLE, ["train"])[0]]
    for k, v in kw.items():
        args += [f"--{k}", json.dumps(v) if isinstance(v, list) else str(v)]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    res = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (tmp_path / "cli" / "fold1" / "models" / "model.pt").is_file()


@pytest.mark.slow
def test_multi_process_training_with_torchrun(synthetic_root, tmp_path):
    """multi_gpu_train.yaml runs under torchrun with 2 CPU processes (gloo); rank 0 checkpoints."""
    files = config_files(BUNDLE, ["train", "multi_gpu_train"])
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
            "-m", "monai.bundle", "run", "--config_file", json.dumps(files).replace('"', "'")]
    for k, v in _tiny(synthetic_root, tmp_path / "ddp", epochs=2).items():
        args += [f"--{k}", json.dumps(v) if isinstance(v, list) else str(v)]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    res = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    fold_dir = tmp_path / "ddp" / "fold1"
    history = json.loads((fold_dir / "history.json").read_text())["epochs"]
    assert [h["epoch"] for h in history] == [1, 2]
    import torch

    state = torch.load(fold_dir / "models" / "model.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in state)  # saved unwrapped, loadable by evaluate/inference
