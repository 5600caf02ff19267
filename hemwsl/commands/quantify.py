"""``hemwsl quantify``: scan-level call + hemorrhage volume (mL) of every patient, out of fold, against the truth."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_quantify_arguments", "run_quantify"]


def add_quantify_arguments(p: argparse.ArgumentParser) -> None:
    from hemwsl.commands.benchmark import add_checkpoint_argument
    from hemwsl.quantify import SCAN_CALLS

    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset-dir", help="dataset root with the true masks (layout: --layout)")
    src.add_argument("--datalist", help="datalist JSON (from `hemwsl datalist`)")
    p.add_argument("--layout", default="ct-ich", help="layout of --dataset-dir (default: ct-ich)")
    p.add_argument("--masks", required=True,
                   help="predicted masks <patient>.nii.gz on the CT grid, directly or in fold<k>/ subfolders (e.g. `hemwsl "
                        "pseudo --threshold none` output, or a row of `hemwsl ablation`'s pseudo/)")
    pred = p.add_mutually_exclusive_group(required=True)
    pred.add_argument("--cv-dir", help="train-cv folder: its out-of-fold predictions_test[_last].csv give the slice "
                                       "probabilities")
    pred.add_argument("--predictions", nargs="+", help="prediction CSVs covering every patient (instead of --cv-dir)")
    add_checkpoint_argument(p)
    p.set_defaults(checkpoint=None)  # best, for --cv-dir; given with --predictions it would change nothing
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--folds", type=int, default=None, help="CV folds (default: the --cv-dir run's, else 5)")
    p.add_argument("--fold-seed", type=int, default=None, help="fold seed (default: the --cv-dir run's, else 0)")
    p.add_argument("--val-fraction", type=float, default=None, help="default: the --cv-dir run's, else 0.15")
    p.add_argument("--select", default="rest", choices=["rest", "val"],
                   help="selection patients of a fold: rest (every patient outside its test part; default) or val")
    p.add_argument("--aggregations", nargs="+", default=list(SCAN_CALLS), choices=list(SCAN_CALLS),
                   help="scan-score candidates, chosen per fold on its selection patients (default: all): the slice "
                        "probabilities' max, top3, noisy_or, run, and model, a scan model (hemwsl.scanmodel) trained "
                        "on the selection patients (probabilities + the prior on the positive slices)")
    p.add_argument("--min-sensitivity", type=float, default=0.9,
                   help="scan-level sensitivity kept on the selection patients (default: 0.9)")
    p.add_argument("--calibrate", action="store_true",
                   help="fit true = a * mask mL + b on each fold's positive selection patients")
    p.add_argument("--min-slices", type=int, nargs="+", default=[1],
                   help="drop the predicted masks' 3D components spanning fewer slices (default: 1, keep all); several "
                        "values: each fold's selection patients choose the one with the smallest mL error")
    p.add_argument("--rule-keeps-sensitivity", action="store_true",
                   help="choose the --min-slices rule only among those that leave --min-sensitivity of the selection "
                        "patients' bleeding scans a volume (> 0 mL after the scan call); the smallest mL error among "
                        "them (none: the most sensitive rule)")
    p.add_argument("--hu-reference", type=float, nargs="+", default=None, metavar="HU",
                   help="the scan model's prior features on HU shifted so that each scan's brain reads this value, or "
                        "into this band LOW HIGH (give the masks' own, as `hemwsl benchmark --hu-reference`; default: "
                        "the HU as stored)")
    p.add_argument("--n-boot", type=int, default=2000,
                   help="bootstrap replicates of the 95%% CIs, at least 10 (default: 2000)")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")


def run_quantify(args: argparse.Namespace) -> int:
    from hemwsl.benchmark import cv_folds
    from hemwsl.engines.runs import fold_predictions, resolve_cv_folds
    from hemwsl.data.datalist import build_datalist, load_datalist
    from hemwsl.errors import HemwslInputError
    from hemwsl.quantify import run_quantify as quantify

    from hemwsl.metrics.classification import check_n_boot

    check_n_boot(args.n_boot)
    from hemwsl.thresholds import check_hu_reference

    args.hu_reference = check_hu_reference(args.hu_reference, "--hu-reference")
    if args.hu_reference is not None and "model" not in args.aggregations:
        raise HemwslInputError("--hu-reference calibrates the scan model's prior features, and --aggregations "
                               f"{' '.join(args.aggregations)} has no model: give model among them, or leave it out")
    if args.predictions and args.checkpoint is not None:
        raise HemwslInputError(f"--checkpoint {args.checkpoint} picks --cv-dir's predictions; with --predictions it "
                               "changes nothing: leave it out")
    args.checkpoint = args.checkpoint or "best"
    if args.min_sensitivity is not None and not 0.0 < args.min_sensitivity <= 1.0:  # the scan model's range
        raise HemwslInputError(f"--min-sensitivity must be in (0, 1], got {args.min_sensitivity}")
    datalist = build_datalist(args.layout, args.dataset_dir) if args.dataset_dir else load_datalist(args.datalist)
    args.folds, args.fold_seed, args.val_fraction = resolve_cv_folds(args.cv_dir, args.folds, args.fold_seed,
                                                                     args.val_fraction)
    if args.cv_dir:  # the run's scans: another dataset under the same ids would be scored with its probabilities
        from hemwsl.engines.runs import check_dataset_matches_run

        check_dataset_matches_run(args.cv_dir, datalist, args.dataset_dir or args.datalist,
                                  "--dataset-dir" if args.dataset_dir else "--datalist", args.folds)
    preds = args.predictions or [str(fold_predictions(args.cv_dir, k, args.checkpoint)) for k in range(args.folds)]
    folds = cv_folds(datalist, n_folds=args.folds, seed=args.fold_seed, val_fraction=args.val_fraction,
                     select=args.select)
    s = quantify(datalist, args.masks, preds, args.out, folds, aggregations=args.aggregations,
                 min_sensitivity=args.min_sensitivity, calibrate=args.calibrate,
                 min_slices=args.min_slices, n_boot=args.n_boot,
                 rule_keeps_sensitivity=bool(getattr(args, "rule_keeps_sensitivity", False)),
                 figures=not args.no_figures, hu_reference=args.hu_reference)
    print((Path(args.out) / "summary.md").read_text())
    a = s["agreement"]["estimate"]["all"]
    print(f"CCC {a['ccc']:.3f}, MAE {a['mae']:.1f} mL, hemorrhage-free scans under 1 mL: "
          f"{a['negatives_under_zero_ml']:.2f}, scans with hemorrhage given a volume: "
          f"{a['positives_given_volume']:.2f}; report in {args.out}")
    return 0
