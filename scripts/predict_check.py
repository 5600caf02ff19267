"""Real-data check of ``hemwsl predict``: every patient predicted by the fold member that never saw it.

For each member ``k`` of a model package (made with ``hemwsl package --dataset-dir``, which records each
fold's test patients), its test patients are predicted with ``--members k`` alone; the volume of the
predicted mask is compared with the true mask's (Pearson r, Lin's CCC, Bland-Altman bias and 95% limits,
share within 5 mL, hemorrhage-free scans under 1 mL), the ABC/2 estimate of the true mask is given beside
it, and the per-slice AUROC of the probabilities is pooled over patients. Prints a Markdown table and
writes ``per_patient.csv`` and ``summary.json`` to ``--out``.

    python scripts/predict_check.py --model MODEL --dataset-dir DATA --out outputs/predict_check
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset-dir", required=True, help="CT-ICH layout: ct_scans/, masks/")
    ap.add_argument("--out", required=True)
    ap.add_argument("--limit", type=int, default=None, help="at most this many patients per member (a quick look)")
    args = ap.parse_args(argv)

    import nibabel as nib
    from sklearn.metrics import roc_auc_score

    from hemwsl.data.io import atomic_write_text
    from hemwsl.metrics.agreement import abc2_volume_ml, lins_ccc, volume_agreement
    from hemwsl.predict import ModelPackage, Predictor

    from hemwsl.errors import HemwslInputError

    if args.limit is not None and args.limit < 1:
        raise HemwslInputError(f"--limit must be at least 1 patient per member, got {args.limit}")
    pkg = ModelPackage.load(args.model)
    for m in pkg.members:  # every scan and true mask is there before the first prediction
        for patient in (m.get("test_patients") or [])[: args.limit]:
            for sub in ("ct_scans", "masks"):
                f = Path(args.dataset_dir) / sub / f"{patient}.nii.gz"
                if not f.is_file():
                    raise HemwslInputError(f"--dataset-dir {args.dataset_dir}: no {sub}/{f.name} of member {m['fold']}'s "
                                           "test patient (give the dataset the package was made from)")
    out = Path(args.out)
    rows, y_all, p_all = [], [], []
    for m in pkg.members:
        if not m.get("test_patients"):
            print(f"member {m['fold']}: no test patients recorded (pack with --dataset-dir)", file=sys.stderr)
            return 2
        pred = Predictor(pkg, members=[int(m["fold"])])
        for patient in m["test_patients"][: args.limit]:
            ct = Path(args.dataset_dir) / "ct_scans" / f"{patient}.nii.gz"
            gt_img = nib.load(str(Path(args.dataset_dir) / "masks" / f"{patient}.nii.gz"))
            gt = np.asarray(gt_img.dataobj) > 0
            spacing = [float(s) for s in gt_img.header.get_zooms()[:3]]
            t0 = time.perf_counter()
            rep = pred.predict(ct, out / "scans", figures=False)
            seconds = time.perf_counter() - t0
            probs = np.loadtxt(out / "scans" / rep["stem"] / "probabilities.csv", delimiter=",", skiprows=1)[:, 1]
            y = gt.any(axis=(0, 1)).astype(int)
            y_all.append(y)
            p_all.append(probs)
            mask = np.asarray(nib.load(str(out / "scans" / rep["stem"] / "mask.nii.gz")).dataobj) > 0
            inter = float((mask & gt).sum())
            rows.append({"patient": patient, "fold": int(m["fold"]),
                         "true_ml": float(gt.sum() * np.prod(spacing) / 1000),
                         "pred_ml": rep["volume"]["ml"], "abc2_true_mask_ml": abc2_volume_ml(gt, spacing) if gt.any() else 0.0,
                         "abc2_pred_ml": rep["volume"]["abc2_ml"], "scan_positive": int(rep["scan"]["positive"]),
                         "dice": 2 * inter / (mask.sum() + gt.sum()) if (mask.sum() + gt.sum()) else 1.0,
                         "scan_score": float(rep["scan"]["member_scores"][0]),
                         "seconds": seconds})
            print(f"{patient} (fold {m['fold']}): true {rows[-1]['true_ml']:.1f} mL, predicted {rows[-1]['pred_ml']:.1f} mL, "
                  f"Dice {rows[-1]['dice']:.3f}, {seconds:.1f} s", flush=True)
    t = np.array([r["true_ml"] for r in rows])
    p = np.array([r["pred_ml"] for r in rows])
    a = np.array([r["abc2_true_mask_ml"] for r in rows])
    agree = volume_agreement(t, p)
    abc = volume_agreement(t, a)
    y, s = np.concatenate(y_all), np.concatenate(p_all)
    pos = t > 0
    summary = {
        "model": str(pkg.root), "recipe": pkg.recipe, "n_patients": len(rows), "n_positive": int(pos.sum()),
        "predict": agree, "abc2_on_true_mask": abc, "abc2_on_true_mask_ccc": lins_ccc(t, a),
        "slice_auroc": float(roc_auc_score(y, s)) if len(np.unique(y)) == 2 else float("nan"),
        "scan_auroc": float(roc_auc_score(pos, [r["scan_score"] for r in rows])) if 0 < pos.sum() < len(pos) else None,
        "scan_sensitivity": float(np.mean([r["scan_positive"] for r in rows if r["true_ml"] > 0])) if pos.any() else None,
        "scan_specificity": float(np.mean([1 - r["scan_positive"] for r in rows if r["true_ml"] == 0]))
        if (~pos).any() else None,
        "volume_dice_positive_mean": float(np.mean([r["dice"] for r in rows if r["true_ml"] > 0])) if pos.any() else None,
        "seconds_per_scan_median": float(np.median([r["seconds"] for r in rows])),
    }
    fields = list(rows[0])
    atomic_write_text(out / "per_patient.csv", "\n".join(
        [",".join(fields)] + [",".join(f"{r[f]:.4f}" if isinstance(r[f], float) else str(r[f]) for f in fields)
                              for r in rows]) + "\n")
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1, default=float) + "\n")

    def line(name, g):
        return (f"| {name} | {g['pearson_r']:.3f} | {g['ccc']:.3f} | {g['bias']:+.2f} [{g['loa_low']:.1f}, {g['loa_high']:.1f}] | "
                f"{g['mae']:.2f} | {g['within_tol']:.2f} | {g['negatives_under_zero_ml']:.2f} |")

    print(f"\n{len(rows)} patients ({int(pos.sum())} with hemorrhage), each predicted by the member that never saw it; "
          f"slice AUROC {summary['slice_auroc']:.3f}; scan AUROC {summary['scan_auroc']:.3f}; scan sensitivity {summary['scan_sensitivity']:.2f}, "
          f"specificity {summary['scan_specificity']:.2f}; mean volume Dice (positive) "
          f"{summary['volume_dice_positive_mean']:.3f}; median {summary['seconds_per_scan_median']:.1f} s/scan\n")
    print("| estimate | Pearson r | Lin's CCC | bias mL [95% LoA] | MAE mL | within 5 mL | hemorrhage-free < 1 mL |")
    print("|---|---|---|---|---|---|---|")
    print(line("hemwsl predict (mask mL)", agree))
    print(line("ABC/2 of the true mask", abc))
    return 0


if __name__ == "__main__":
    from hemwsl.reports.text import run_script

    sys.exit(run_script(main))
