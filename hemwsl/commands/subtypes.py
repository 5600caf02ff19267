"""``hemwsl subtypes``: Chen & Kuo 2026's Algorithm 1 (subtype masks of a six-output LSE heatmap network) scored out
of fold against the masks and per-slice subtype labels of a dataset (:mod:`hemwsl.subtypes`)."""

from __future__ import annotations

import argparse

__all__ = ["add_subtypes_arguments", "run_subtypes"]


def add_subtypes_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help="model package (`hemwsl package --dataset-dir ...`) of a six-output lse_* train-cv run")
    p.add_argument("--dataset-dir", required=True, help="dataset root with masks and per-slice subtype labels")
    p.add_argument("--out", required=True, help="output folder (subtypes.md/.json, per_slice.csv, per_patient.csv)")
    p.add_argument("--level", type=int, default=0, help="decoder level of the score maps (default: 0, the finest)")
    p.add_argument("--mask-thresholds", type=float, nargs="+", default=None,
                   help="grid of mask thresholds on the normalised maps (default: 25..200 of 255 in steps of 25)")
    p.add_argument("--normalisation", default="max", choices=("max", "minmax", "none"),
                   help="per-slice normalisation of each subtype map (default: max, as Chen & Kuo)")
    p.add_argument("--layout", default="ct-ich", help="dataset layout (default: ct-ich)")
    p.add_argument("--device", default="cpu")


def run_subtypes(args: argparse.Namespace) -> int:
    from hemwsl.subtypes import DEFAULT_MASK_THRESHOLDS, run_subtype_benchmark

    summary = run_subtype_benchmark(args.model, args.dataset_dir, args.out, level=args.level,
                                    mask_thresholds=args.mask_thresholds or DEFAULT_MASK_THRESHOLDS,
                                    normalisation=args.normalisation, layout=args.layout, device=args.device)
    for variant, s in summary["variants"].items():
        print(f"{variant}: Dice per slice {s['dice_per_slice']:.3f} [{s['dice_ci'][0]:.3f}, {s['dice_ci'][1]:.3f}] on "
              f"{s['slices']} slices, volume Dice {s['volume_dice']:.3f}")
    print(f"report: {args.out}/subtypes.md")
    return 0
