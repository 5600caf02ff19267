"""``hemwsl slice-context``: out-of-fold slice context for a train-cv run (:mod:`hemwsl.slice_context`)."""

from __future__ import annotations

import argparse

__all__ = ["add_slice_context_arguments", "run_slice_context"]


def add_slice_context_arguments(p: argparse.ArgumentParser) -> None:
    from hemwsl.slice_context import DEFAULT_SIGMAS

    p.add_argument("--cv-dir", required=True, help="a train-cv run: its fold<k>/predictions_test[_last].csv")
    p.add_argument("--out", required=True,
                   help="output folder: fold<k>/predictions_test[_last].csv (smoothed), predictions_test.csv (every "
                        "patient), slice_context.json (each fold's choice)")
    p.add_argument("--sigmas", type=float, nargs="+", default=list(DEFAULT_SIGMAS), metavar="SLICES",
                   help="candidate widths of the Gaussian along z, in slices (0: none); each fold's selection patients "
                        f"choose one by pooled slice AUROC (default: {' '.join(f'{s:g}' for s in DEFAULT_SIGMAS)})")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"],
                   help="which predictions of the run: best (predictions_test.csv) or last (predictions_test_last.csv)")


def run_slice_context(args: argparse.Namespace) -> int:
    """Run ``hemwsl slice-context``; prints each fold's choice and the pooled AUROC before and after."""
    from hemwsl.slice_context import smooth_cv_predictions

    rec = smooth_cv_predictions(args.cv_dir, args.out, sigmas=args.sigmas, checkpoint=args.checkpoint)
    auc = rec["pooled_auroc"]
    print("sigma chosen per fold: " + ", ".join(f"fold {k}: {v:g}" for k, v in rec["chosen"].items()))
    print(f"pooled out-of-fold slice AUROC: {auc['before']:.4f} -> {auc['after']:.4f}; predictions in {args.out}")
    return 0
