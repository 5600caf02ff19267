"""``hemwsl seg-cv``: train and evaluate the 3D U-Net bundle on every fold, then summarise.

Each fold runs ``bundles/ich_unet3d`` train then evaluate. A fold whose ``summary_test.json`` exists
is skipped; a fold whose training finished (``.trained``) is only evaluated, and the evaluation
itself skips patients already predicted, so an interrupted run resumes. The folds are those of the
slice classifier (``hemwsl train-cv``). The summary over every test patient goes to
``seg_cv_summary.md`` / ``seg_cv_summary.json``.

Training on pseudo-labels: ``--datalist outputs/pseudo/datalist.json`` (training labels) with
``--dataset-dir`` the CT-ICH folder (true masks, used for the folds, validation and test). Fully
supervised upper bound: ``--dataset-dir`` alone.

``--gate-cv-dir <train-cv folder>`` also scores every finished fold with its predictions kept only on the
slices the out-of-fold slice classifier calls positive (:func:`hemwsl.engines.segmentation.gate_segmentation`;
no network is run): ``metrics_test_gated.csv`` per fold and ``seg_cv_summary_gated.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["add_seg_cv_arguments", "run_seg_cv"]


def add_seg_cv_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``seg-cv`` options to ``parser`` and return it."""
    parser.add_argument("--dataset-dir", default=None,
                        help="dataset in the CT-ICH layout with the TRUE masks (folds, validation, test)")
    parser.add_argument("--datalist", default=None,
                        help="JSON datalist of training labels, e.g. pseudo-labels ({image, label, patient}); "
                             "default: the true masks of --dataset-dir (fully supervised)")
    parser.add_argument("--eval-datalist", default=None,
                        help="JSON datalist of the true masks for validation/test instead of --dataset-dir")
    parser.add_argument("--out", required=True, help="output folder (fold<k>/ per fold, seg_cv_summary.md)")
    parser.add_argument("--folds", type=int, default=5, help="number of patient-level folds")
    parser.add_argument("--only", type=int, nargs="*", default=None, help="run only these folds")
    parser.add_argument("--bundle", default="ich_unet3d", help="bundle name or folder")
    parser.add_argument("--cache-dir", default=None, help="disk cache of preprocessed volumes, shared by folds")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="bundle config overrides, values parsed as JSON (e.g. 'spatial_size=[128,128]' epochs=50)")
    parser.add_argument("--gate-cv-dir", default=None,
                        help="train-cv folder of the slice classifier (same folds): also score the predictions kept "
                             "only on the slices it calls positive (seg_cv_summary_gated.md)")
    parser.add_argument("--gate-checkpoint", default="best", choices=["best", "last"],
                        help="which of its out-of-fold predictions: best (predictions_test.csv) or last "
                             "(predictions_test_last.csv)")
    parser.add_argument("--gate-threshold", type=float, default=0.5, help="slice probability kept (default: 0.5)")
    return parser


from hemwsl.engines.runs import SEG_RUN  # noqa: E402  (re-exported)


def _fingerprint(path: str | None) -> dict | None:
    """A datalist file by path and content (sha1): pseudo-labels remade into the same file count as other input."""
    from hemwsl.data.io import file_sha1
    from hemwsl.errors import HemwslInputError

    if not path:
        return None
    p = Path(path)
    if not p.is_file():
        raise HemwslInputError(f"{p}: datalist not found")
    return {"path": str(p.resolve()), "sha1": file_sha1(p)}


def run_seg_cv(args: argparse.Namespace) -> int:
    """Run the folds (resumable) and write the cross-validation summary; returns the exit status."""
    from hemwsl.commands.classifier import (check_cache_dir, check_cv_run, check_override_keys, parse_overrides,
                                            run_cv_fold)
    from hemwsl.engines.segmentation import segmentation_datalists, summarize_seg_cv
    from hemwsl.errors import HemwslInputError

    if not (args.dataset_dir or args.datalist or args.eval_datalist):
        raise HemwslInputError("give --dataset-dir (true masks), --datalist and/or --eval-datalist")
    overrides = parse_overrides(args.set)
    check_override_keys(overrides, args.bundle)
    from hemwsl.engines.bundle import check_bundle_settings

    check_bundle_settings(args.bundle, overrides)  # patch_size, samples_per_volume...: before the run record is written
    check_cache_dir(args.cache_dir)
    gate_threshold = getattr(args, "gate_threshold", 0.5)
    if not 0.0 <= gate_threshold <= 1.0:
        raise HemwslInputError(f"--gate-threshold must be a probability in [0, 1], got {gate_threshold}")
    overrides.update({"dataset_dir": args.dataset_dir, "datalist_file": args.datalist,
                      "eval_datalist_file": args.eval_datalist, "output_dir": args.out, "n_folds": args.folds})
    if args.cache_dir:
        overrides["cache_dir"] = args.cache_dir
    folds = list(range(args.folds)) if args.only is None else list(args.only)
    bad = [k for k in folds if not 0 <= k < args.folds]
    if bad:
        raise HemwslInputError(f"--only: fold(s) {bad} not in [0, {args.folds - 1}]")
    from hemwsl.data.datalist import resolve_dataset_dir

    record = {"bundle": str(args.bundle), "folds": int(args.folds), "settings": parse_overrides(args.set),
              "dataset_dir": str(resolve_dataset_dir(args.dataset_dir)) if args.dataset_dir else None,
              "datalist": _fingerprint(args.datalist), "eval_datalist": _fingerprint(args.eval_datalist)}
    check_cv_run(args.out, record, command="seg-cv", file=SEG_RUN)
    if getattr(args, "gate_cv_dir", None):  # before any training: the gate's predictions of every fold exist
        from hemwsl.engines.runs import fold_predictions

        if not Path(args.gate_cv_dir).is_dir():
            raise HemwslInputError(f"--gate-cv-dir {args.gate_cv_dir}: train-cv folder not found")
        for k in folds:
            fold_predictions(args.gate_cv_dir, k, getattr(args, "gate_checkpoint", "best"))
    # the datalists (keys, patients, the dataset) are named now, not by the first fold's bundle (its warnings come
    # then, once)
    import logging

    seg_logger = logging.getLogger("hemwsl.engines.segmentation")
    level = seg_logger.level
    seg_logger.setLevel(logging.ERROR)
    try:
        segmentation_datalists(dataset_dir=args.dataset_dir, layout=overrides.get("layout", "ct-ich"),
                               datalist_file=args.datalist, eval_datalist_file=args.eval_datalist, n_folds=args.folds,
                               fold=folds[0] if folds else 0, seed=overrides.get("seed", 0),
                               val_fraction=overrides.get("val_fraction", 0.15))
    finally:
        seg_logger.setLevel(level)
    from hemwsl.data.io import atomic_write_text

    atomic_write_text(Path(args.out) / SEG_RUN, json.dumps(record, indent=1) + "\n")
    for k in folds:
        fold_dir = Path(args.out) / f"fold{k}"
        if not run_cv_fold(args.bundle, fold_dir, k, "summary_test.json", **overrides):
            continue
        s = json.loads((fold_dir / "summary_test.json").read_text())
        d = s["positive"]["dice"]
        print(f"fold {k}: test Dice {d['mean']:.3f} +- {d['sd']:.3f} on {s['n_positive']} positive patients "
              f"(pooled {s['pooled']['dice']:.3f})", flush=True)
    done = [k for k in range(args.folds) if (Path(args.out) / f"fold{k}" / "summary_test.json").exists()]
    if done:
        summarize_seg_cv(args.out, done)
        print((Path(args.out) / "seg_cv_summary.md").read_text())
    if done and getattr(args, "gate_cv_dir", None):
        _gate_folds(args, overrides, done)
    return 0


def _gate_folds(args: argparse.Namespace, overrides: dict, folds: list[int]) -> None:
    """The finished folds' test predictions gated by the classifier's slice calls, and their summary."""
    from hemwsl.engines.runs import fold_predictions
    from hemwsl.engines.segmentation import gate_segmentation, segmentation_datalists, summarize_seg_cv
    from hemwsl.pseudo import read_slice_probabilities

    which = getattr(args, "gate_checkpoint", "best")
    csvs = {k: fold_predictions(args.gate_cv_dir, k, which) for k in folds}  # every file before any work
    for k in folds:
        test = segmentation_datalists(dataset_dir=args.dataset_dir, layout=overrides.get("layout", "ct-ich"),
                                      datalist_file=args.datalist, eval_datalist_file=args.eval_datalist,
                                      n_folds=args.folds, fold=k, seed=overrides.get("seed", 0),
                                      val_fraction=overrides.get("val_fraction", 0.15))["test"]
        s = gate_segmentation(test, Path(args.out) / f"fold{k}", read_slice_probabilities(csvs[k]),
                              prob_threshold=args.gate_threshold,
                              tolerance_mm=float(overrides.get("tolerance_mm", 2.0)))
        print(f"fold {k}: gated by {csvs[k].name} (p >= {args.gate_threshold}): test Dice "
              f"{s['positive']['dice']['mean']:.3f}, negatives with a false positive "
              f"{s['negative']['with_false_positive']}/{s['negative']['n']}", flush=True)
    summarize_seg_cv(args.out, folds, name="test_gated")
    print((Path(args.out) / "seg_cv_summary_gated.md").read_text())
