"""``hemwsl demo``: the whole pipeline on built-in synthetic phantoms, on a laptop CPU in minutes.

Steps (each skipped when its output already exists, so an interrupted demo resumes):
1. write synthetic head-CT phantoms in the CT-ICH layout, build the datalist and a patient-level
   k-fold split;
2. train the slice classifier of ``bundles/ich_classifier`` on fold 0 (MONAI bundle, ignite);
3. evaluate it on the held-out patients (AUROC, AP, F1; predictions CSV, ROC/PR curves);
4. train the U-shaped LSE heatmap network of Chen & Kuo 2026 (``lse_resnet10``) on the same fold, its
   encoder initialised from that classifier (the paper's two stages), and evaluate it;
5. explain the classifier with several CAM methods at two layers (``bundles/ich_cam``: NIfTI heatmaps)
   and the heatmap network by its own score maps (``lse_heatmap``) at its two finest levels;
6. run the localisation benchmark (:mod:`hemwsl.benchmark`): thresholds and each method's (layer,
   threshold) chosen on the validation patients, scored on the held-out positive slices;
7. turn the GradCAM maps into pseudo-labels (:mod:`hemwsl.pseudo`: CAM only, and CAM + K-means with
   differential prediction, Ramananda & Sundaresan 2023);
8. train the 3D U-Net of ``bundles/ich_unet3d`` on the CAM + K-means pseudo-labels of the training
   patients and score it against the true masks of the held-out patients; print the ablation table;
9. pack the heatmap network with the recipe the benchmark validated (``hemwsl package``) and run
   ``hemwsl predict`` on one held-out scan, as NIfTI and as a DICOM series (which also gets a DICOM SEG).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

__all__ = ["run_demo"]

logger = logging.getLogger(__name__)

#: The demo's cross-validation folds, and the fewest patients that fill them.
N_FOLDS, MIN_PATIENTS = 4, 8


def run_demo(args: argparse.Namespace) -> int:
    from hemwsl.data.datalist import build_datalist, datalist_stats, save_datalist
    from hemwsl.data.splits import kfold_patients, save_split
    from hemwsl.data.synthetic import write_synthetic_ctich
    from hemwsl.engines.bundle import run_bundle
    from hemwsl.engines.classifier import check_train_settings
    from hemwsl.errors import HemwslInputError

    # before any data is written: the demo's 4 folds need 2 patients each (a test patient with hemorrhage, ...)
    if args.patients < MIN_PATIENTS:
        raise HemwslInputError(f"--patients must be >= {MIN_PATIENTS} (the demo's {N_FOLDS} folds of at least 2 "
                               f"patients), got {args.patients}")
    if args.size < 32:
        raise HemwslInputError(f"--size must be >= 32 voxels (a head needs room), got {args.size}")
    if isinstance(args.epochs, int) and args.epochs < 1:
        raise HemwslInputError(f"--epochs must be >= 1, got {args.epochs}")
    check_train_settings(epochs=args.epochs, learning_rate=2e-3, batch_size=16)
    out = Path(args.out)
    t0 = time.time()
    data_dir = out / "synthetic"
    if not (data_dir / "hemorrhage_diagnosis_raw_ct.csv").exists():
        write_synthetic_ctich(data_dir, n_patients=args.patients, seed=args.seed, shape=(args.size, args.size, 24))
    datalist = build_datalist("ct-ich", data_dir)
    save_datalist(datalist, out / "datalist.json")
    s = datalist_stats(datalist)
    print(f"[1/9] data: patients={s['patients']} slices={s['slices']} positive_slices={s['positive_slices']}")
    n_folds = N_FOLDS
    save_split(kfold_patients(datalist, n_folds=n_folds, seed=args.seed), out / "split.json")

    common = {
        "dataset_dir": str(data_dir),
        "output_dir": str(out / "ich_classifier"),
        "backbone": "resnet10",
        "spatial_size": [args.size, args.size],
        "n_folds": n_folds,
        "fold": 0,
        "seed": args.seed,
        "batch_size": 16,
        "cache_workers": 0,
    }
    fold_dir = out / "ich_classifier" / "fold0"
    if not (fold_dir / "models" / "model.pt").exists():
        print(f"[2/9] training {common['backbone']} for {args.epochs} epochs (fold 0 of {n_folds}) ...")
        run_bundle("ich_classifier", ["train"], epochs=args.epochs, samples_per_epoch=256, learning_rate=2e-3, **common)
    history = json.loads((fold_dir / "history.json").read_text())
    print(f"[2/9] trained: best validation AUROC {history['summary']['best_auroc']:.3f}")
    print("[3/9] evaluating on held-out patients ...")
    if not (fold_dir / "report_test.json").exists():
        run_bundle("ich_classifier", ["train", "evaluate"], **common)
    report = json.loads((fold_dir / "report_test.json").read_text())
    a = report["any"]
    print(f"[3/9] test slices={report['n_slices']} positive={report['n_positive']} "
          f"AUROC={a['auroc']:.3f} AP={a['ap']:.3f} F1@0.5={a['at_threshold']['0.5']['f1']:.3f}")
    lse = _heatmap_network(args, out, common, fold_dir)
    print("[5/9] CAM heatmaps of every patient of fold 0 (bundles/ich_cam), and the heatmap network's score maps ...")
    methods = ["gradcam", "gradcampp", "hirescam", "layercam", "eigencam"]
    layers = ["layer3", "layer4"]
    for part in ("train", "val", "test"):  # train: for the pseudo-labels the U-Net trains on
        _run_cam(common, methods, layers, part)
    for part in ("val", "test"):  # into the same heatmap folder: one more method for the benchmark
        _run_cam({**lse, "cam_dir": str(fold_dir / "cam")}, ["lse_heatmap"], ["levels.1.conv", "levels.0.conv"], part)
    print("[6/9] localisation benchmark: thresholds chosen on the validation patients, scored on the held-out "
          "positive slices ...")
    from hemwsl.benchmark import run_benchmark, split_folds
    from hemwsl.engines.classifier import fold_datalists

    parts = fold_datalists(datalist, n_folds=n_folds, fold=0, seed=args.seed)
    folds = split_folds({k: [e["patient"] for e in v] for k, v in parts.items()})
    report = run_benchmark(datalist, fold_dir / "cam", out / "benchmark", folds=folds, n_boot=200, progress=False,
                           thresholds=["fixed:200/255", "percentile:95", "otsu", "search", "prior", "prior+search",
                                       "priorcomp+search"])
    print((report / "summary.md").read_text().split("\n## Threshold")[0].split("## Each method")[1].split("\n", 1)[1])
    print(f"[6/9] report: {report / 'summary.md'} (per-case CSV, tables per threshold and layer, figures)")
    _weakly_supervised_segmentation(args, out, datalist, parts, common, n_folds)
    _predict_one_scan(out, lse, parts)
    print(f"done in {time.time() - t0:.0f} s; outputs in {out}")
    return 0


def _heatmap_network(args: argparse.Namespace, out: Path, common: dict, clf_dir: Path) -> dict:
    """Step 5: Chen & Kuo 2026's LSE heatmap network on fold 0, its encoder from the fold's classifier."""
    from hemwsl.engines.bundle import train_evaluate_fold
    from hemwsl.networks.registry import LSE_PREFIX

    lse = {**common, "backbone": LSE_PREFIX + common["backbone"], "output_dir": str(out / "ich_lse"),
           "pretrained_path": str(clf_dir / "models" / "model.pt")}
    lse_dir = out / "ich_lse" / "fold0"
    if not (lse_dir / "report_test.json").exists():
        print(f"[4/9] training the LSE heatmap network (Chen & Kuo 2026) {lse['backbone']} for {args.epochs} epochs, "
              "encoder from the classifier ...")
    train_evaluate_fold("ich_classifier", lse_dir, lse["fold"], "report_test.json", epochs=args.epochs,
                        samples_per_epoch=256, learning_rate=2e-3, **{k: v for k, v in lse.items() if k != "fold"})
    a = json.loads((lse_dir / "report_test.json").read_text())["any"]
    print(f"[4/9] heatmap network: test AUROC={a['auroc']:.3f} AP={a['ap']:.3f} (heatmaps at 1/4 of the input)")
    return lse


def _predict_one_scan(out: Path, lse: dict, parts: dict) -> None:
    """Step 9: the heatmap network packed with its validated recipe, then `hemwsl predict` on one held-out scan,
    as NIfTI and as a DICOM series (which also gets a DICOM SEG)."""
    import nibabel as nib

    from hemwsl.data.dicom import write_dicom_series
    from hemwsl.predict import MODEL_FILE, Predictor, pack_model

    model = out / "model"
    if not (model / MODEL_FILE).is_file():
        keys = ("backbone", "spatial_size", "windows", "num_slices", "skull_strip", "n_folds", "seed")
        pack_model(lse["output_dir"], model, benchmark_dir=out / "benchmark", methods=["lse_heatmap"], folds=[0],
                   overrides={k: lse[k] for k in keys if k in lse})
    entry = next(e for e in parts["test"] if any(e.get("slice_labels") or [])) if parts["test"] else None
    entry = entry or parts["test"][0]
    img = nib.load(entry["image"])
    dicom = out / "dicom" / f"{entry['patient']}_dicom"
    if not dicom.is_dir():
        write_dicom_series(np.asarray(img.dataobj, dtype=np.float32), img.affine, dicom, patient_id=entry["patient"])
    predictor = Predictor(model)
    print(f"[9/9] hemwsl predict --model {model} --input {entry['image']} {dicom}")
    for src in (entry["image"], dicom):
        rep = predictor.predict(src, out / "predict")
        v = rep["volume"]
        true_ml = float((np.asarray(nib.load(entry["label"]).dataobj) > 0).sum()) * float(np.prod(img.header.get_zooms()[:3])) / 1000
        print(f"[9/9] {Path(src).name}: {'hemorrhage' if rep['scan']['positive'] else 'no hemorrhage'}, "
              f"{v['ml']:.1f} mL (true {true_ml:.1f} mL), ABC/2 {v['abc2_ml']:.1f} mL; "
              f"{', '.join(sorted(rep['files'].values()))} in {out / 'predict' / rep['stem']}")


def _weakly_supervised_segmentation(args: argparse.Namespace, out: Path, datalist: list, parts: dict, common: dict,
                                    n_folds: int) -> None:
    """Steps 7-8: pseudo-labels from the CAMs (Ramananda & Sundaresan 2023), a 3D U-Net on them, the ablation table."""
    import torch

    from hemwsl.data.settings import InputSettings
    from hemwsl.engines.bundle import run_bundle
    from hemwsl.engines.classifier import load_weights
    from hemwsl.networks import build_network
    from hemwsl.pseudo import PseudoLabelSettings, evaluate_pseudo_labels, make_pseudo_labels
    from hemwsl.reports.ablation import ablation_markdown, ablation_rows, read_seg_metrics

    fold_dir = out / "ich_classifier" / "fold0"
    print("[7/9] pseudo-labels: GradCAM (layer3) > 0.7, then K-means + differential prediction (Ramananda & Sundaresan 2023) ...")
    net = build_network(common["backbone"], in_channels=9, num_classes=1)
    net = load_weights(net, str(fold_dir / "models" / "model.pt"), device="cpu")
    test = {e["patient"] for e in parts["test"]}
    per_row: dict[str, dict[str, float]] = {}
    pseudo = {}
    for mode, name in (("cam", "CAM only"), ("cam_kmeans", "CAM + K-means")):
        with torch.no_grad():
            entries = make_pseudo_labels(net, datalist, fold_dir / "cam", out / "pseudo" / mode, "gradcam", "layer3",
                                         PseudoLabelSettings(mode=mode, seed=args.seed),
                                         inputs=InputSettings(windows=("brain", "subdural", "blood"), num_slices=3,
                                                              spatial_size=tuple(common["spatial_size"])),
                                         progress=False)
        pseudo[mode] = out / "pseudo" / mode / "datalist.json"
        per_row[name] = {p: d for p, d in evaluate_pseudo_labels(entries)["per_patient"].items() if p in test}
    print("[8/9] 3D U-Net (bundles/ich_unet3d) trained on the CAM + K-means pseudo-labels of fold 0's training "
          "patients, scored against the true masks of its held-out patients ...")
    seg = {"dataset_dir": common["dataset_dir"], "datalist_file": str(pseudo["cam_kmeans"]), "n_folds": n_folds,
           "fold": 0, "seed": args.seed, "output_dir": str(out / "ich_unet3d"), "spatial_size": [64, 64],
           "features": [8, 16, 32, 64], "patch_size": [48, 48, 16], "epochs": max(2, args.epochs),
           "samples_per_volume": 2, "batch_size": 2, "val_interval": max(2, args.epochs), "cache_workers": 0,
           "learning_rate": 3e-3}
    seg_dir = out / "ich_unet3d" / "fold0"
    if not (seg_dir / "models" / "model.pt").exists():
        run_bundle("ich_unet3d", ["train"], **seg)
    if not (seg_dir / "summary_test.json").exists():
        run_bundle("ich_unet3d", ["train", "evaluate"], **seg)
    per_row["CAM + K-means + U-Net"] = read_seg_metrics([seg_dir / "metrics_test.csv"])
    table = ablation_markdown(ablation_rows(per_row, n_boot=500))
    (out / "ablation.md").write_text("# Weakly supervised segmentation, fold 0 held-out positive patients\n\n"
                                     + table)
    print(table, end="")


def _run_cam(common: dict, methods: list[str], layers: list[str], part: str = "test") -> None:
    from hemwsl.engines.bundle import run_cam_bundle

    run_cam_bundle(cam_methods=methods, cam_layers=layers, cam_part=part, **common)
