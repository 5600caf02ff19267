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
    wf = run_bundle(BUNDLE, ["train"], **kw)
    fold_dir = out / "fold1"
    assert (fold_dir / "models" / "model.pt").is_file()
    # ema_decay 0 (default): the live network is validated and checkpointed, model_last.pt is its final state
    network = wf.parser.get_parsed_content("network")
    assert wf.parser.get_parsed_content("validate#evaluator").network is network
    assert wf.parser.get_parsed_content("ema").ema_model is None
    import torch

    last = torch.load(fold_dir / "models" / "model_last.pt", weights_only=True)
    assert all(torch.equal(last[k], v) for k, v in network.state_dict().items())
    history = json.loads((fold_dir / "history.json").read_text())
    assert [h["epoch"] for h in history["epochs"]] == [1]
    assert any(p.name.startswith("events.out.tfevents") for p in fold_dir.iterdir())
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    tags = set()  # TensorBoard shows AP and F1 beside AUROC and the loss
    for f in fold_dir.glob("events.out.tfevents*"):
        mux = EventMultiplexer({"run": str(f)}).Reload()
        tags |= set(mux.Runs()["run"].get("scalars", []))
    assert {"val_auc", "val_ap", "val_f1", "train_loss"} <= tags, tags

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


def test_ema_train_evaluate_best_and_last(synthetic_root, tmp_path):
    """ema_decay > 0: validation and both checkpoints use the EMA weights; evaluate.yaml scores either."""
    import torch

    out = tmp_path / "ema"
    kw = {**_tiny(synthetic_root, out), "ema_decay": 0.9}
    wf = run_bundle(BUNDLE, ["train"], **kw)
    ema = wf.parser.get_parsed_content("ema")
    network = wf.parser.get_parsed_content("network")
    assert ema.num_updates == 4  # 32 samples / batch 8
    assert wf.parser.get_parsed_content("validate#evaluator").network is ema.ema_model
    models = out / "fold1" / "models"
    best = torch.load(models / "model.pt", weights_only=True)
    last = torch.load(models / "model_last.pt", weights_only=True)
    ema_state, live_state = ema.ema_model.state_dict(), network.state_dict()
    assert list(best) == list(live_state)
    for k, v in ema_state.items():  # one epoch: the best validation epoch is the last one
        assert torch.equal(best[k], v) and torch.equal(last[k], v), k
    assert any(not torch.equal(ema_state[k], live_state[k]) for k in ema_state if ema_state[k].is_floating_point())

    # evaluate.yaml with eval_checkpoint=last (best: test_train_evaluate_infer); ema_decay passed on as
    # train-cv does: the checkpoint is loaded into the plain network, no EMA copy at evaluation
    run_bundle(BUNDLE, ["train", "evaluate"], **{**kw, "eval_checkpoint": "last"})
    fold_dir = out / "fold1"
    rep_last = json.loads((fold_dir / "report_test_last.json").read_text())
    assert rep_last["name"] == "test_last" and rep_last["n_slices"] > 0
    assert rep_last["any"]["chosen_on"] == "validation"  # thresholds from predictions_val_last.csv
    assert not (fold_dir / "report_test.json").exists()
    # the evaluated probabilities are those of the EMA weights
    with open(fold_dir / "predictions_val_last.csv") as f:
        rows = list(csv.DictReader(f))
    val_ds = wf.parser.get_parsed_content("validate#dataset")
    x = torch.stack([val_ds[i]["image"] for i in range(4)])
    with torch.no_grad():
        want = torch.sigmoid(ema.ema_model.eval()(x))[:, 0].numpy()
    np.testing.assert_allclose([float(r["prob_any"]) for r in rows[:4]], want, atol=1e-4)


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

    settings = ["backbone=resnet10", "spatial_size=[32,32]", "epochs=1", "samples_per_epoch=16", "cache_workers=0",
                "batch_size=8"]
    args = ["train-cv", "--dataset-dir", str(synthetic_root), "--out", str(tmp_path / "cv"), "--folds", "2",
            "--cache-dir", str(tmp_path / "cache"), "--set", *settings]
    assert main(args) == 0
    summary = json.loads((tmp_path / "cv" / "cv_summary.json").read_text())
    assert [r["fold"] for r in summary["folds"]] == [0, 1]
    n_test = sum(r["n"] for r in summary["folds"])
    assert n_test == summary["pooled_out_of_fold"]["n"] == 8 * 12  # every slice scored once, out of fold
    lo, hi = summary["pooled_out_of_fold"]["auroc_ci95"]  # patient-level bootstrap CI around the pooled AUROC
    assert lo <= summary["pooled_out_of_fold"]["auroc"] <= hi
    assert "pooled out-of-fold" in (tmp_path / "cv" / "cv_summary.md").read_text() and f"[{lo:.3f}, {hi:.3f}]" in (
        tmp_path / "cv" / "cv_summary.md").read_text()
    capsys.readouterr()
    assert main(args) == 0  # second run: every fold is skipped
    assert capsys.readouterr().out.count("done, skipped") == 2

    # eval_checkpoint=last: the trained folds are only evaluated, with models/model_last.pt, beside the best
    assert main(args + ["eval_checkpoint=last"]) == 0
    assert capsys.readouterr().out.count("test_last AUROC") == 2
    last = json.loads((tmp_path / "cv" / "cv_summary_last.json").read_text())
    assert last["name"] == "test_last" and last["pooled_out_of_fold"]["n"] == 8 * 12
    assert json.loads((tmp_path / "cv" / "cv_summary.json").read_text()) == summary  # untouched
    assert "eval_checkpoint" not in json.loads((tmp_path / "cv" / "cv_settings.json").read_text())


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


def test_lse_heatmap_network_two_stages(synthetic_root, tmp_path):
    """Chen & Kuo 2026's two stages through the bundles: the fold's classifier, then the LSE heatmap network
    whose encoder starts from it ('{fold}' in pretrained_path), trained with the deep-supervision +
    consistency loss, evaluated, and explained by the CAM bundle at its decoder levels."""
    import nibabel as nib
    import torch
    from monai.bundle import ConfigWorkflow

    from hemwsl.engines.bundle import run_cam_bundle
    from hemwsl.networks.lse import LSEHeatmapLoss, LSEHeatmapNet

    clf_out = tmp_path / "clf"
    run_bundle(BUNDLE, ["train"], **_tiny(synthetic_root, clf_out))
    clf_ckpt = clf_out / "fold1" / "models" / "model_last.pt"
    out = tmp_path / "lse"
    kw = {**_tiny(synthetic_root, out), "backbone": "lse_resnet10", "spatial_size": [64, 64],
          "pretrained_path": str(clf_out / "fold{fold}" / "models" / "model_last.pt"),
          "network_options": {"lse_r": 3.0, "decoder_channels": [16, 32, 64, 64]}}
    # before training: the encoder holds the classifier's weights
    wf = ConfigWorkflow(config_file=config_files(BUNDLE, ["train"]), workflow_type=None, **kw)
    wf.initialize()
    net = wf.parser.get_parsed_content("network_def")
    assert isinstance(net, LSEHeatmapNet) and net.decoder_channels == [16, 32, 64, 64]
    clf_state = torch.load(clf_ckpt, weights_only=True)
    enc = net.encoder.state_dict()
    assert all(torch.equal(enc[k].cpu(), v) for k, v in clf_state.items() if not k.startswith("fc."))
    assert isinstance(wf.parser.get_parsed_content("loss"), LSEHeatmapLoss)

    run_bundle(BUNDLE, ["train"], **kw)
    run_bundle(BUNDLE, ["train", "evaluate"], **kw)
    report = json.loads((out / "fold1" / "report_test.json").read_text())
    assert 0.0 <= report["any"]["auroc"] <= 1.0
    history = json.loads((out / "fold1" / "history.json").read_text())
    assert [h["epoch"] for h in history["epochs"]] == [1]

    run_cam_bundle(**kw, cam_methods=["lse_heatmap", "gradcam"], cam_grid="input")
    cam_dir = out / "fold1" / "cam"
    files = sorted((cam_dir / "lse_heatmap" / "levels.0.conv").glob("*.nii.gz"))
    assert files and (cam_dir / "gradcam" / "levels.0.conv").is_dir()
    arr = np.asarray(nib.load(str(files[0])).dataobj)
    assert arr.shape[:2] == (64, 64) and np.isfinite(arr).all() and 0.0 <= arr.min() and arr.max() <= 1.0


def test_slice_sequence_network_two_stages(synthetic_root, tmp_path):
    """Ramananda & Sundaresan 2023 through the bundles: the fold's slice classifier, then the slice-context network
    (its encoder and slice head start from it) trained on sequences of consecutive slices with the sequence + slice
    loss, evaluated on whole volumes (every test slice once, the same slices as the slice classifier's), predicted
    by the inference config as the evaluator did, and explained by the CAM bundle at the encoder's layers."""
    import torch
    from monai.bundle import ConfigWorkflow

    from hemwsl.data.dataset import SliceSequences
    from hemwsl.engines.bundle import run_cam_bundle
    from hemwsl.networks.sequence import SequenceLoss, SliceSequenceNet

    clf_out = tmp_path / "clf"
    run_bundle(BUNDLE, ["train"], **_tiny(synthetic_root, clf_out))
    run_bundle(BUNDLE, ["train", "evaluate"], **_tiny(synthetic_root, clf_out))
    clf_ckpt = clf_out / "fold1" / "models" / "model_last.pt"
    out = tmp_path / "seq"
    kw = {**_tiny(synthetic_root, out), "backbone": "seq_resnet10", "sequence_length": 4, "batch_size": 2,
          "samples_per_epoch": 6, "pretrained_path": str(clf_out / "fold{fold}" / "models" / "model_last.pt"),
          "network_options": {"context": "lstm", "hidden": 16}}
    wf = ConfigWorkflow(config_file=config_files(BUNDLE, ["train"]), workflow_type=None, **kw)
    wf.initialize()
    net = wf.parser.get_parsed_content("network_def")
    assert isinstance(net, SliceSequenceNet)
    clf_state = torch.load(clf_ckpt, weights_only=True)
    enc = net.encoder.state_dict()
    assert all(torch.equal(enc[k].cpu(), v) for k, v in clf_state.items())  # the slice head too
    assert isinstance(wf.parser.get_parsed_content("loss"), SequenceLoss)
    samples = wf.parser.get_parsed_content("train#dataset")
    assert isinstance(samples, SliceSequences) and len(samples[0]["patient"]) == 4

    run_bundle(BUNDLE, ["train"], **kw)
    run_bundle(BUNDLE, ["train", "evaluate"], **kw)
    with open(out / "fold1" / "predictions_test.csv") as f:
        rows = list(csv.DictReader(f))
    with open(clf_out / "fold1" / "predictions_test.csv") as f:
        clf_rows = list(csv.DictReader(f))
    key = lambda r: (r["patient"], int(r["slice"]))  # noqa: E731
    assert sorted(map(key, rows)) == sorted(map(key, clf_rows))
    assert all(r["label_any"] == c["label_any"] for r, c in zip(sorted(rows, key=key), sorted(clf_rows, key=key)))

    patient = rows[0]["patient"]
    image = next((synthetic_root / "ct_scans").glob(f"{patient}.nii*"))
    run_bundle(BUNDLE, ["train", "inference"], images=[str(image)], **kw)
    probs = json.loads((out / "inference" / f"{patient}_probs.json").read_text())["probabilities"]
    evaluated = {int(r["slice"]): float(r["prob_any"]) for r in rows if r["patient"] == patient}
    assert len(probs) == len(evaluated)
    for z, prob in evaluated.items():
        assert probs[z][0] == pytest.approx(prob, abs=1e-4)

    run_cam_bundle(**kw, cam_methods=["gradcam"], cam_grid="input")
    assert sorted((out / "fold1" / "cam" / "gradcam").iterdir())[0].name.startswith("encoder.")
