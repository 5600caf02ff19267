"""Compare slice classifiers trained by `hemwsl train-cv` on the same folds, out of fold, with paired tests.

For each run: slice AUROC per fold (mean +- sd), the pooled out-of-fold AUROC with a patient-level bootstrap
95% CI, AP, and the patient-level AUROC of the most probable slice. Against the first run (the reference):
the pooled AUROC difference with a paired patient-level bootstrap (95% CI and two-sided p), the folds where
the run is higher, and a paired t-test over the folds' AUROCs. Every slice is scored by the fold that did not
train on its patient; the runs must share their folds (the same dataset, --folds and seed).

    python scripts/compare_classifiers.py --runs outputs/ctich_lite0_128 outputs/ctich_seq_lite0_128 \
        --checkpoint last --out outputs/compare_seq.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.stats import ttest_rel

from hemwsl.engines.runs import fold_predictions, read_predictions_csv, resolve_cv_folds
from hemwsl.errors import HemwslInputError
from hemwsl.metrics.classification import (bootstrap_ci, compute_auroc, compute_average_precision,
                                           paired_auroc_difference)
from hemwsl.reports.text import emit, run_script


def load_run(cv_dir: str, checkpoint: str) -> dict:
    """``{(patient, slice): (label, prob, fold)}`` of a train-cv run's out-of-fold test predictions."""
    folds = resolve_cv_folds(cv_dir)[0]
    out = {}
    for k in range(folds):
        pred = read_predictions_csv(fold_predictions(cv_dir, k, checkpoint))
        for p, z, y, s in zip(pred["patient"], pred["slice"], pred["label"][:, 0], pred["prob"][:, 0]):
            out[(str(p), int(z))] = (int(y), float(s), k)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="+", required=True, help="train-cv folders; the first is the reference")
    ap.add_argument("--names", nargs="+", help="a name per run (default: the folder names)")
    ap.add_argument("--checkpoint", default="last", choices=["best", "last"])
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--out", help="also write the tables to this Markdown file")
    args = ap.parse_args(argv)
    names = args.names or [Path(r).name for r in args.runs]
    if len(names) != len(args.runs):
        raise HemwslInputError(f"--names has {len(names)} entries for {len(args.runs)} runs")
    runs = [load_run(r, args.checkpoint) for r in args.runs]
    keys = sorted(runs[0])
    for r, name in zip(runs[1:], names[1:]):
        if sorted(r) != keys or any(r[k][0] != runs[0][k][0] or r[k][2] != runs[0][k][2] for k in keys):
            raise HemwslInputError(f"{name}: its out-of-fold slices, labels or folds differ from {names[0]}'s")
    y = np.array([runs[0][k][0] for k in keys])
    fold = np.array([runs[0][k][2] for k in keys])
    patients = np.array([k[0] for k in keys])
    scores = [np.array([r[k][1] for k in keys]) for r in runs]
    upat = sorted(set(patients))
    ypat = np.array([y[patients == p].max() for p in upat])
    folds = sorted(set(fold))

    lines = [f"Out-of-fold slice predictions ({args.checkpoint} weights): {len(y)} slices ({int(y.sum())} positive), "
             f"{len(upat)} patients ({int(ypat.sum())} with hemorrhage), {len(folds)} folds.", "",
             "| run | slice AUROC per fold, mean +- sd | pooled AUROC [95% CI] | AP | patient AUROC (max slice) |",
             "|---|---|---|---|---|"]
    per_fold = []
    for name, s in zip(names, scores):
        f_auc = np.array([compute_auroc(y[fold == k], s[fold == k]) for k in folds])
        per_fold.append(f_auc)
        lo, hi = bootstrap_ci(compute_auroc, y, s, groups=patients, n_boot=args.n_boot, seed=0)
        smax = np.array([s[patients == p].max() for p in upat])
        lines.append(f"| {name} | {f_auc.mean():.3f} +- {f_auc.std(ddof=1):.3f} ({' / '.join(f'{a:.3f}' for a in f_auc)}) "
                     f"| {compute_auroc(y, s):.3f} [{lo:.3f}, {hi:.3f}] | {compute_average_precision(y, s):.3f} "
                     f"| {compute_auroc(ypat, smax):.3f} |")
    if len(runs) > 1:
        lines += ["", f"Against {names[0]} (paired: the same slices; bootstrap over patients, {args.n_boot} resamples):", "",
                  "| run | pooled AUROC difference [95% CI] | bootstrap p | folds higher | paired t-test over folds p |",
                  "|---|---|---|---|---|"]
        for name, s, f_auc in zip(names[1:], scores[1:], per_fold[1:]):
            r = paired_auroc_difference(y, s, scores[0], groups=patients, n_boot=args.n_boot, seed=0)
            t = ttest_rel(f_auc, per_fold[0]).pvalue
            lines.append(f"| {name} | {r['diff']:+.3f} [{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}] | {r['p']:.4f} "
                         f"| {int((f_auc > per_fold[0]).sum())} / {len(folds)} | {t:.4f} |")
    emit("\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
