"""``hemwsl self-train``: fine-tune an LSE heatmap network's folds on the confident pixels of its own validated
recipe (:mod:`hemwsl.pseudo.selftrain`).

For every fold of a ``train-cv`` run of an ``lse_*`` network and the ``hemwsl benchmark`` report of its heatmaps:

1. the fold's network explains the fold's training patients (``--method`` at the layer the fold's selection
   patients chose);
2. the recipe the benchmark validated for that fold (threshold spec, value, post-processing) turns those heatmaps,
   on the slices labelled positive, into self-training targets (blood, unknown, background);
3. ``train-cv`` fine-tunes the fold's network from its weights with ``lse_pixel`` > 0 and ``pseudo_masks`` set, on
   the same folds, into ``--out``; ``cam-cv`` and ``benchmark`` then score it like any run.

The test patients of a fold are never explained by that fold's network here, and no mask is read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hemwsl.commands.benchmark import add_checkpoint_argument

__all__ = ["add_self_train_arguments", "run_self_train"]


def add_self_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset-dir", required=True, help="dataset root (CT-ICH layout) with slice labels")
    p.add_argument("--cv-dir", required=True, help="train-cv folder of an lse_* network (the starting weights)")
    p.add_argument("--benchmark-dir", required=True,
                   help="`hemwsl benchmark` report of that run's heatmaps: each fold's validated recipe")
    p.add_argument("--out", required=True, help="the new train-cv folder (targets/ inside it)")
    p.add_argument("--method", default="lse_heatmap", help="heatmap method of the recipe (default: lse_heatmap)")
    p.add_argument("--pixel-weight", type=float, default=1.0, help="lse_pixel of the fine-tuning (default: 1.0)")
    p.add_argument("--cache-dir", default=None, help="disk cache of preprocessed volumes")
    add_checkpoint_argument(p)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="overrides of the fine-tuning on top of --cv-dir's settings, e.g. epochs=5 learning_rate=0.0005")


def run_self_train(args: argparse.Namespace) -> int:
    from hemwsl.engines.runs import cv_settings, fold_checkpoint, resolve_cv_folds
    from hemwsl.engines.cv import check_train_overrides, parse_overrides, train_cv
    from hemwsl.experiments.ablation import heatmap_choices
    from hemwsl.data.datalist import build_datalist
    from hemwsl.engines.bundle import run_cam_bundle
    from hemwsl.engines.classifier import fold_datalists, is_heatmap_network
    from hemwsl.errors import HemwslInputError
    from hemwsl.pseudo.selftrain import self_training_targets

    if not 0 < args.pixel_weight < float("inf"):
        raise HemwslInputError(f"--pixel-weight must be > 0 and finite (the weight of the self-training term), got "
                               f"{args.pixel_weight}")
    from hemwsl.engines.runs import check_dataset_matches_run, check_outside_run, check_writable_dir
    from hemwsl.experiments.benchmark import check_benchmark_checkpoint

    cv_dir, out = Path(args.cv_dir), Path(args.out)
    if not cv_dir.is_dir():
        raise HemwslInputError(f"{cv_dir}: train-cv folder not found (--cv-dir)")
    check_outside_run(out, cv_dir)  # the new run's folds and targets must not land among the run's files
    settings = cv_settings(cv_dir)
    backbone = settings.get("backbone", "resnet18")
    if not is_heatmap_network(backbone):
        raise HemwslInputError(f"{cv_dir}: self-training needs an lse_* heatmap network, the run trained {backbone!r}")
    folds = resolve_cv_folds(str(cv_dir), None)[0]
    which = getattr(args, "checkpoint", "best")
    ckpts = [fold_checkpoint(cv_dir, k, which) for k in range(folds)]
    check_benchmark_checkpoint(args.benchmark_dir, which)  # the recipe was validated on that checkpoint's maps
    chosen = heatmap_choices(args.benchmark_dir, folds, args.method)
    if chosen is None:
        raise HemwslInputError(f"{args.benchmark_dir}: the report has no row of {args.method!r}")
    overrides = parse_overrides(args.set)
    fine = {**settings, "pretrained_path": str(cv_dir / "fold{fold}" / "models" / Path(ckpts[0]).name),
            "pseudo_masks": str(out / "targets" / "fold{fold}"), "lse_pixel": float(args.pixel_weight), **overrides}
    check_train_overrides(fine)  # the fine-tuning's settings before any heatmap or target is made
    datalist = build_datalist(settings.get("layout", "ct-ich"), args.dataset_dir)
    check_dataset_matches_run(cv_dir, datalist, args.dataset_dir, "--dataset-dir", folds)  # the run's scans
    check_writable_dir(out)  # before any heatmap is made (a read-only --out failed deep inside the bundle)
    seed, val_fraction = settings.get("seed", 0), settings.get("val_fraction", 0.15)
    for k in range(folds):
        c = chosen[k]
        cam_dir = out / "targets" / "cam" / f"fold{k}"
        run_cam_bundle(**{**settings, "dataset_dir": args.dataset_dir, "output_dir": str(cv_dir), "n_folds": folds,
                          "fold": k, "checkpoint": str(ckpts[k]), "cam_dir": str(cam_dir), "cam_part": "train",
                          "cam_methods": [args.method], "cam_layers": [c["layer"]], "cam_grid": "input"})
        train = fold_datalists(datalist, n_folds=folds, fold=k, seed=seed, val_fraction=val_fraction)["train"]
        self_training_targets(train, cam_dir, args.method, c["layer"], c["spec"].strategy(c["value"], per_sample=False),
                              out / "targets" / f"fold{k}", brain_erosion=c["spec"].erosion)
        print(f"fold {k}: self-training targets of its {len(train)} training patients", flush=True)
    return train_cv(args.dataset_dir, out, folds, json.loads(json.dumps(fine)), cache_dir=args.cache_dir)
