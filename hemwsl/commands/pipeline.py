"""``hemwsl ablation`` (Ramananda & Sundaresan 2023's ablation on cross-validated classifiers) and
``hemwsl pipeline`` (everything).

``hemwsl pipeline`` runs, in order and each step resumable:

1. ``train-cv``: the slice classifier on every fold (``bundles/ich_classifier``);
2. ``cam-cv``: heatmaps of every patient from the fold that did not train on it (``bundles/ich_cam``);
3. ``benchmark``: thresholds, localisation metrics, CIs and paired tests of every method and layer, with
   the post-processing (brain erosion 0/4 px, HU range 45-90/50-90, components >= 0/50 px) chosen per fold
   on the selection patients;
4. ``ablation``: pseudo-labels (CAM only; CAM + K-means; and, given the benchmark's folder, the
   hyperdense-blood prior with the post-processing each fold's selection patients chose there, and that prior
   with its components filtered by a classifier trained on the other patients' slice labels) of every
   patient from its out-of-fold heatmap and classifier, 3D U-Nets (``bundles/ich_unet3d``) trained on
   each kind of pseudo-label and on the true masks, and the ablation table with paired tests between
   consecutive rows.

The U-Net of fold ``k`` trains on the pseudo-labels of fold ``k``'s training patients; those were made
with heatmaps of other folds' classifiers, which saw the slice labels (never the masks) of fold ``k``'s
test patients. Masks of test patients are used only to score.

Every step is a library call with explicit parameters (:func:`hemwsl.engines.cv.train_cv`,
:func:`~hemwsl.engines.cv.cam_cv`, :func:`hemwsl.experiments.benchmark.run_benchmark_experiment`,
:func:`hemwsl.experiments.ablation.run_ablation_experiment`); these commands only parse arguments.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hemwsl.commands.benchmark import add_checkpoint_argument
from hemwsl.experiments.ablation import (  # noqa: F401  (the ablation's library code, re-exported for existing callers)
    FILTER_ROWS,
    GATED,
    HEATMAP_ROWS,
    ORDER,
    PRIOR_ROWS,
    ROW_KINDS,
    ROWS,
    AblationConfig,
    benchmark_hu_reference,
    heatmap_choices,
    prior_choices,
)

__all__ = ["add_ablation_arguments", "ablation_config", "run_ablation", "add_pipeline_arguments", "run_pipeline",
           "prior_choices", "heatmap_choices", "benchmark_hu_reference", "AblationConfig", "ROWS", "PRIOR_ROWS",
           "FILTER_ROWS", "HEATMAP_ROWS", "GATED", "ORDER", "ROW_KINDS"]


def add_ablation_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset-dir", required=True, help="dataset root (CT-ICH layout) with the true masks")
    p.add_argument("--cv-dir", required=True, help="train-cv folder (fold<k>/models/model.pt, cv_settings.json)")
    p.add_argument("--cam-dir", required=True, help="out-of-fold heatmaps (from cam-cv)")
    p.add_argument("--out", required=True, help="output folder (pseudo/, unet_*/, ablation.md)")
    p.add_argument("--folds", type=int, default=None, help="folds of the train-cv run (default: as it recorded)")
    p.add_argument("--unet-folds", type=int, nargs="*", default=None,
                   help="folds the U-Net rows are trained on (default: all)")
    p.add_argument("--method", default="gradcam", help="CAM method of the pseudo-labels (default: gradcam)")
    p.add_argument("--layer", required=True, help="CAM layer of the pseudo-labels (e.g. the benchmark's best)")
    p.add_argument("--threshold", type=float, default=0.7, help="CAM threshold on min-max maps (default: 0.7)")
    p.add_argument("--prob-threshold", type=float, default=0.5, help="slices labelled from this probability")
    p.add_argument("--predictions", default=None,
                   help="one predictions CSV of every patient's out-of-fold slice probabilities (e.g. cam-ensemble's "
                        "predictions_test.csv) for the prior and heatmap rows' slice calls, instead of --cv-dir's "
                        "(with --unet-folds and no folds)")
    p.add_argument("--cache-dir", default=None, help="disk cache of the U-Net's preprocessed volumes")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="U-Net bundle overrides")
    add_checkpoint_argument(p)
    p.add_argument("--rows", nargs="+", default=list(ROW_KINDS), choices=ROW_KINDS, metavar="ROW",
                   help=f"pseudo-label rows to make (and their U-Nets): {', '.join(ROW_KINDS)} (default: all; prior, "
                        "prior_filtered and heatmap need --benchmark-dir; true is the fully supervised U-Net)")
    p.add_argument("--benchmark-dir", default=None,
                   help="a `hemwsl benchmark` report of the same folds: adds the rows of the hyperdense-blood prior "
                        "(no CAM) with the post-processing each fold's selection patients chose there")


def ablation_config(args: argparse.Namespace) -> AblationConfig:
    """The :class:`~hemwsl.experiments.ablation.AblationConfig` of ``hemwsl ablation``'s arguments."""
    return AblationConfig(
        dataset_dir=args.dataset_dir, cv_dir=args.cv_dir, cam_dir=args.cam_dir, out=args.out, layer=args.layer,
        folds=args.folds, unet_folds=None if args.unet_folds is None else tuple(args.unet_folds), method=args.method,
        threshold=args.threshold, prob_threshold=args.prob_threshold, cache_dir=args.cache_dir,
        overrides=tuple(args.set), checkpoint=getattr(args, "checkpoint", "best"),
        rows=tuple(getattr(args, "rows", None) or ROW_KINDS), benchmark_dir=getattr(args, "benchmark_dir", None),
        predictions=getattr(args, "predictions", None))


def run_ablation(args: argparse.Namespace) -> int:
    """``hemwsl ablation``: :func:`hemwsl.experiments.ablation.run_ablation_experiment` with the command's
    arguments."""
    from hemwsl.experiments.ablation import run_ablation_experiment

    return run_ablation_experiment(ablation_config(args))


def add_pipeline_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset-dir", required=True, help="dataset root (CT-ICH layout) with masks")
    p.add_argument("--out", required=True, help="output folder: classifier/, cam/, benchmark/, ablation/")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--cache-dir", default=None, help="disk cache of preprocessed volumes")
    p.add_argument("--methods", nargs="+", default=["gradcam", "gradcampp", "xgradcam", "hirescam", "layercam",
                                                   "eigencam"], help="CAM methods of cam-cv and the benchmark")
    p.add_argument("--layer", default=None, help="pseudo-label layer (default: the network's deepest CAM layer)")
    p.add_argument("--unet-folds", type=int, nargs="*", default=None, help="folds of the U-Net rows (default: all)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="classifier bundle overrides")
    p.add_argument("--unet-set", nargs="*", default=[], metavar="KEY=VALUE", help="U-Net bundle overrides")
    add_checkpoint_argument(p, help="classifier weights every later step uses: best (best validation AUROC; "
                                    "default) or last (the weights at the end of training, the EMA weights with "
                                    "--set ema_decay=...)")


def _check_pipeline_options(args: argparse.Namespace) -> str:
    """Every option of ``hemwsl pipeline`` before its first step: the classifier and U-Net settings (``--set``,
    ``--unet-set``), ``--methods`` (the CAM registry), ``--layer`` (the backbone's CAM target layers, those cam-cv
    writes), ``--unet-folds``. Returns the pseudo-label layer (default: the deepest target layer)."""
    from hemwsl.commands.classifier import check_cache_dir, check_override_keys, parse_overrides
    from hemwsl.engines.cam import check_cam_request, layer_network
    from hemwsl.errors import HemwslInputError
    from hemwsl.networks import target_layer_names
    from hemwsl.predict import resolve_bundle_settings

    overrides = parse_overrides(args.set)
    check_override_keys(overrides, "ich_classifier")
    check_override_keys(parse_overrides(args.unet_set), "ich_unet3d", option="--unet-set")
    check_cache_dir(args.cache_dir)
    check_cam_request(list(args.methods))
    if args.folds < 2:
        raise HemwslInputError(f"--folds must be >= 2 (each fold tests on patients the others train on), "
                               f"got {args.folds}")
    bad = [k for k in (args.unet_folds or []) if not 0 <= k < args.folds]
    if bad:
        raise HemwslInputError(f"--unet-folds: fold(s) {bad} not in [0, {args.folds - 1}]")
    s = resolve_bundle_settings(overrides)
    layers = target_layer_names(layer_network(s))
    if args.layer is not None and args.layer not in layers:
        raise HemwslInputError(f"--layer {args.layer!r}: not a CAM target layer of {s['backbone']} (cam-cv writes "
                               f"heatmaps of {', '.join(layers)})")
    return args.layer if args.layer is not None else layers[-1]


def run_pipeline(args: argparse.Namespace) -> int:
    from hemwsl.constants import BENCHMARK_THRESHOLDS
    from hemwsl.data.datalist import resolve_dataset_dir
    from hemwsl.data.io import check_run_record
    from hemwsl.engines.cv import cam_cv, parse_overrides, train_cv
    from hemwsl.engines.runs import cv_settings
    from hemwsl.experiments.ablation import run_ablation_experiment
    from hemwsl.experiments.benchmark import BenchmarkConfig, run_benchmark_experiment

    out = Path(args.out)
    cv = out / "classifier"
    which = getattr(args, "checkpoint", "best")
    layer = _check_pipeline_options(args)
    # the run record (more U-Net folds later are a resume, not another run)
    check_run_record(out / "pipeline_run.json", {
        "dataset_dir": str(resolve_dataset_dir(args.dataset_dir)), "folds": int(args.folds),
        "methods": list(args.methods),
        "layer": args.layer, "set": list(args.set), "unet_set": list(args.unet_set), "checkpoint": which,
    }, "a pipeline run")
    extra = {"eval_checkpoint": "last"} if which == "last" else {}
    train_cv(args.dataset_dir, cv, args.folds, {**parse_overrides(args.set), **extra}, cache_dir=args.cache_dir)
    cam_cv(args.dataset_dir, cv, out / "cam", folds=args.folds, methods=args.methods, checkpoint=which,
           cache_dir=args.cache_dir)
    run_benchmark_experiment(BenchmarkConfig(
        cam_dir=str(out / "cam"), out=str(out / "benchmark"), dataset_dir=args.dataset_dir, layout="ct-ich",
        thresholds=tuple(BENCHMARK_THRESHOLDS), folds=args.folds, seed=cv_settings(cv).get("seed", 0),
        val_fraction=cv_settings(cv).get("val_fraction", 0.15), select="rest", slices="gt", cv_dir=str(cv),
        checkpoint=which, prob_threshold=0.5, hu_range=((45.0, 90.0), (50.0, 90.0)), brain_erosion=(0, 4),
        min_size=(0, 50), grow=(0,), n_boot=1000, figures=True))
    return run_ablation_experiment(AblationConfig(
        dataset_dir=args.dataset_dir, cv_dir=str(cv), cam_dir=str(out / "cam"), out=str(out / "ablation"),
        layer=layer, folds=args.folds, unet_folds=None if args.unet_folds is None else tuple(args.unet_folds),
        method="gradcam", threshold=0.7, prob_threshold=0.5, cache_dir=args.cache_dir,
        overrides=tuple(args.unet_set), checkpoint=which, benchmark_dir=str(out / "benchmark")))
