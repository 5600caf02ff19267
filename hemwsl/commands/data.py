"""Data subcommands: ``synth``, ``datalist``, ``split``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["run_synth", "run_datalist", "run_split"]


def run_synth(args: argparse.Namespace) -> int:
    from hemwsl.data.synthetic import write_synthetic_ctich
    from hemwsl.errors import HemwslInputError

    if args.size < 32:
        raise HemwslInputError(f"--size must be >= 32 voxels (a head needs room), got {args.size}")
    if args.slices < 1:
        raise HemwslInputError(f"--slices must be >= 1, got {args.slices}")
    out = write_synthetic_ctich(
        args.out,
        n_patients=args.patients,
        seed=args.seed,
        shape=(args.size, args.size, args.slices),
        negative_fraction=args.negative_fraction,
    )
    print(f"wrote {args.patients} synthetic patients to {out}")
    return 0


def run_datalist(args: argparse.Namespace) -> int:
    from hemwsl.data.datalist import build_datalist, datalist_stats, save_datalist

    kw = {}
    if args.layout == "generic":
        kw = {"label_dir": args.labels, "slice_csv": args.slice_csv}
    datalist = build_datalist(args.layout, args.root, **kw)
    save_datalist(datalist, args.out)
    s = datalist_stats(datalist)
    print(f"patients={s['patients']} slices={s['slices']} positive_slices={s['positive_slices']}")
    return 0


def run_split(args: argparse.Namespace) -> int:
    from hemwsl.data.datalist import load_datalist
    from hemwsl.data.splits import kfold_patients, save_split, split_patients

    from hemwsl.errors import HemwslInputError

    out = Path(args.out)
    if out.exists() and Path(args.datalist).exists() and out.resolve() == Path(args.datalist).resolve():
        raise HemwslInputError(f"{out}: --out is the --datalist itself; refusing to overwrite the datalist")
    given = args.fractions is not None
    args.fractions = tuple(args.fractions) if given else (0.7, 0.15, 0.15)
    if args.folds and given:
        raise HemwslInputError("--fractions and --folds: give one (--fractions makes one train/val/test split, "
                               "--folds k-fold parts)")
    if out.exists():
        try:
            json.loads(out.read_text())
            is_split = True
        except (ValueError, UnicodeDecodeError, IsADirectoryError):
            is_split = False
        if out.is_dir() or not is_split:
            raise HemwslInputError(f"{out}: exists and is not a split JSON; refusing to overwrite it (--out)")
    if args.folds and args.folds < 2:
        raise HemwslInputError(f"--folds must be >= 2 (or 0 for one train/val/test split), got {args.folds}")
    if not args.folds and any(f == 0 for f in args.fractions):
        raise HemwslInputError(f"--fractions {' '.join(f'{f:g}' for f in args.fractions)}: train, val and test each "
                               "need a fraction > 0 (a part of 0 would be an empty split)")
    datalist = load_datalist(args.datalist)
    if args.folds:
        split = kfold_patients(datalist, n_folds=args.folds, seed=args.seed)
        desc = f"{args.folds} folds"
    else:
        split = split_patients(datalist, fractions=tuple(args.fractions), seed=args.seed)
        desc = " ".join(f"{k}={len(v)}" for k, v in split.items())
    save_split(split, args.out)
    print(f"wrote {desc} to {args.out}")
    return 0
