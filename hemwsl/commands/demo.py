"""``hemwsl demo``: the whole pipeline on built-in synthetic phantoms, on a laptop CPU in minutes.

Steps (each skipped when its output already exists, so an interrupted demo resumes):
1. write synthetic head-CT phantoms in the CT-ICH layout;
2. build the datalist and a patient-level k-fold split;
3. train the slice classifier of ``bundles/ich_classifier`` on fold 0 (MONAI bundle, ignite);
4. evaluate it on the held-out patients (AUROC, AP, F1; predictions CSV, ROC/PR curves).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

__all__ = ["run_demo"]

logger = logging.getLogger(__name__)


def run_demo(args: argparse.Namespace) -> int:
    from hemwsl.data.datalist import build_datalist, datalist_stats, save_datalist
    from hemwsl.data.splits import kfold_patients, save_split
    from hemwsl.data.synthetic import write_synthetic_ctich
    from hemwsl.engines.bundle import run_bundle

    out = Path(args.out)
    t0 = time.time()
    data_dir = out / "synthetic"
    if not (data_dir / "hemorrhage_diagnosis_raw_ct.csv").exists():
        write_synthetic_ctich(data_dir, n_patients=args.patients, seed=args.seed, shape=(args.size, args.size, 24))
    datalist = build_datalist("ct-ich", data_dir)
    save_datalist(datalist, out / "datalist.json")
    s = datalist_stats(datalist)
    print(f"[1/4] data: patients={s['patients']} slices={s['slices']} positive_slices={s['positive_slices']}")
    n_folds = 4
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
        print(f"[2/4] training {common['backbone']} for {args.epochs} epochs (fold 0 of {n_folds}) ...")
        run_bundle("ich_classifier", ["train"], epochs=args.epochs, samples_per_epoch=256, learning_rate=2e-3, **common)
    history = json.loads((fold_dir / "history.json").read_text())
    print(f"[2/4] trained: best validation AUROC {history['summary']['best_auroc']:.3f}")
    print("[3/4] evaluating on held-out patients ...")
    run_bundle("ich_classifier", ["train", "evaluate"], **common)
    report = json.loads((fold_dir / "report_test.json").read_text())
    a = report["any"]
    print(f"[3/4] test slices={report['n_slices']} positive={report['n_positive']} "
          f"AUROC={a['auroc']:.3f} AP={a['ap']:.3f} F1@0.5={a['at_threshold']['0.5']['f1']:.3f}")
    print(f"[4/4] done in {time.time() - t0:.0f} s; outputs in {out}")
    return 0
