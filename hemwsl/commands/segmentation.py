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

The folds, checks, resume and gate are library code (:func:`hemwsl.experiments.segmentation.seg_cv`); this command
parses the arguments and calls it.
"""

from __future__ import annotations

import argparse

__all__ = ["add_seg_cv_arguments", "run_seg_cv", "SEG_RUN"]


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


def run_seg_cv(args: argparse.Namespace) -> int:
    """``hemwsl seg-cv``: :func:`hemwsl.experiments.segmentation.seg_cv` with the command's arguments."""
    from hemwsl.experiments.segmentation import seg_cv

    return seg_cv(args.dataset_dir, args.out, args.folds, list(args.set), datalist=args.datalist,
                  eval_datalist=args.eval_datalist, only=args.only, bundle=args.bundle, cache_dir=args.cache_dir,
                  gate_cv_dir=getattr(args, "gate_cv_dir", None),
                  gate_checkpoint=getattr(args, "gate_checkpoint", "best"),
                  gate_threshold=getattr(args, "gate_threshold", 0.5))
