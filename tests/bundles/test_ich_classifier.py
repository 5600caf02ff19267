"""Smoke test of bundles/ich_classifier: train + evaluate + inference for one tiny epoch on phantoms."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from hemwsl.engines.bundle import check_bundle, config_files, run_bundle, validate_metadata
from hemwsl.errors import HemwslInputError

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "ich_classifier"


def test_metadata_is_valid_offline():
    meta = validate_metadata(BUNDLE / "configs" / "metadata.json")
    assert meta["network_data_format"]["inputs"]["image"]["num_channels"] == 9


def test_bad_metadata_is_reported(tmp_path):
    bad = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    del bad["task"]
    p = tmp_path / "metadata.json"
    p.write_text(json.dumps(bad))
    with pytest.raises(HemwslInputError, match="task"):
        validate_metadata(p)
    p.write_text("{not json")
    with pytest.raises(HemwslInputError, match="not valid JSON"):
        validate_metadata(p)


def test_standard_properties_present():
    assert check_bundle(BUNDLE) == []


def _tiny(root, out):
    return {
        "dataset_dir": str(root),
        "output_dir": str(out),
        "backbone": "resnet10",
        "spatial_size": [48, 48],
        "n_folds": 4,
        "fold": 1,
        "epochs": 1,
        "samples_per_epoch": 32,
        "batch_size": 8,
        "cache_workers": 0,
    }


def test_train_evaluate_infer(synthetic_root, tmp_path):
    out = tmp_path / "clf"
    kw = _tiny(synthetic_root, out)
    run_bundle(BUNDLE, ["train"], **kw)
    fold_dir = out / "fold1"
    assert (fold_dir / "models" / "model.pt").is_file()
    history = json.loads((fold_dir / "history.json").read_text())
    assert [h["epoch"] for h in history["epochs"]] == [1]
    assert any(p.name.startswith("events.out.tfevents") for p in fold_dir.iterdir())

    run_bundle(BUNDLE, ["train", "evaluate"], **kw)
    report = json.loads((fold_dir / "report_test.json").read_text())
    with open(fold_dir / "predictions_test.csv") as f:
        rows = list(csv.DictReader(f))
    y = np.array([float(r["label_any"]) for r in rows])
    p = np.array([float(r["prob_any"]) for r in rows])
    assert report["n_slices"] == len(rows) > 0
    if 0 < y.sum() < len(y):
        assert report["any"]["auroc"] == pytest.approx(roc_auc_score(y, p), abs=1e-4)
        assert report["any"]["ap"] == pytest.approx(average_precision_score(y, p), abs=1e-4)
        assert (fold_dir / "roc_test.png").stat().st_size > 1000
    assert report["any"]["chosen_on"] == "validation"

    # inference on one held-out volume reproduces the evaluator's probabilities
    patient = rows[0]["patient"]
    image = next((synthetic_root / "ct_scans").glob(f"{patient}.nii*"))
    run_bundle(BUNDLE, ["train", "inference"], images=[str(image)], **kw)
    probs = json.loads((out / "inference" / f"{patient}_probs.json").read_text())["probabilities"]
    evaluated = {int(r["slice"]): float(r["prob_any"]) for r in rows if r["patient"] == patient}
    for z, prob in evaluated.items():
        assert probs[z][0] == pytest.approx(prob, abs=1e-4)


def test_monai_bundle_command_line(synthetic_root, tmp_path):
    """The documented `python -m monai.bundle run` entry point works from a clean process."""
    kw = _tiny(synthetic_root, tmp_path / "cli")
    args = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_files(BUNDLE, ["train"])[0]]
    for k, v in kw.items():
        args += [f"--{k}", json.dumps(v) if isinstance(v, list) else str(v)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (tmp_path / "cli" / "fold1" / "models" / "model.pt").is_file()


def test_train_cv_command_resumes(synthetic_root, tmp_path, capsys):
    from hemwsl.cli import main

    args = ["train-cv", "--dataset-dir", str(synthetic_root), "--out", str(tmp_path / "cv"), "--folds", "2",
            "--set", "backbone=resnet10", "spatial_size=[32,32]", "epochs=1", "samples_per_epoch=16",
            "cache_workers=0", "batch_size=8", "--cache-dir", str(tmp_path / "cache")]
    assert main(args) == 0
    summary = json.loads((tmp_path / "cv" / "cv_summary.json").read_text())
    assert [r["fold"] for r in summary["folds"]] == [0, 1]
    n_test = sum(r["n"] for r in summary["folds"])
    assert n_test == summary["pooled_out_of_fold"]["n"] == 8 * 12  # every slice scored once, out of fold
    capsys.readouterr()
    assert main(args) == 0  # second run: every fold is skipped
    assert capsys.readouterr().out.count("done, skipped") == 2


def test_multi_process_training_with_torchrun(synthetic_root, tmp_path):
    """multi_gpu_train.yaml runs under torchrun with 2 CPU processes (gloo); rank 0 checkpoints."""
    files = config_files(BUNDLE, ["train", "multi_gpu_train"])
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
            "-m", "monai.bundle", "run", "--config_file", json.dumps(files).replace('"', "'")]
    kw = _tiny(synthetic_root, tmp_path / "ddp")
    kw.update(epochs=2, samples_per_epoch=32)
    for k, v in kw.items():
        args += [f"--{k}", json.dumps(v) if isinstance(v, list) else str(v)]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    res = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    fold_dir = tmp_path / "ddp" / "fold1"
    assert (fold_dir / "models" / "model.pt").is_file()
    history = json.loads((fold_dir / "history.json").read_text())
    assert [h["epoch"] for h in history["epochs"]] == [1, 2]
    import torch

    state = torch.load(fold_dir / "models" / "model.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in state)  # saved unwrapped, loadable by evaluate/inference


def test_multilabel_head_selects_on_any_and_reports_subtypes(synthetic_root, tmp_path):
    kw = _tiny(synthetic_root, tmp_path / "ml")
    kw.update(multilabel=True, epochs=2)
    wf = run_bundle(BUNDLE, ["train"], **kw)
    # the key metric is the AUROC of the "any" output: finite although most subtypes have no positives
    assert np.isfinite(wf.parser.get_parsed_content("validate#evaluator").state.best_metric)
    fold_dir = tmp_path / "ml" / "fold1"
    assert (fold_dir / "models" / "model.pt").is_file()
    run_bundle(BUNDLE, ["train", "evaluate"], **kw)
    report = json.loads((fold_dir / "report_test.json").read_text())
    assert list(report["multilabel"]["per_class"]) == ["any", "intraventricular", "intraparenchymal",
                                                        "subarachnoid", "epidural", "subdural"]
    with open(fold_dir / "predictions_test.csv") as f:
        header = f.readline().strip().split(",")
    assert header[2:8] == ["label_any", "label_intraventricular", "label_intraparenchymal", "label_subarachnoid",
                           "label_epidural", "label_subdural"]
