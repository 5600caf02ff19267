"""``hemwsl cam-cv`` (out-of-fold heatmaps of cross-validated classifiers) and ``hemwsl benchmark``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hemwsl.experiments.benchmark import BenchmarkConfig, check_made_from_run  # noqa: F401  (re-exported)
from hemwsl.engines.runs import (  # noqa: F401  (the run layout, re-exported for existing callers)
    SETTINGS,
    check_checkpoint_marker,
    cv_settings,
    fold_checkpoint,
    fold_predictions,
    resolve_cv_folds,
)

__all__ = ["resolve_cv_folds", "add_run_settings_argument", "apply_run_settings", "add_cam_cv_arguments",
           "add_cam_ensemble_arguments", "run_cam_ensemble", "add_benchmark_arguments", "run_cam_cv", "run_benchmark",
           "benchmark_config",
           "cv_settings", "check_made_from_run", "fold_checkpoint", "fold_predictions", "check_checkpoint_marker",
           "add_checkpoint_argument"]

#: Classifier settings a command can take from a train-cv run: argparse dest -> (bundle key, default without a run).
RUN_SETTINGS = {"backbone": ("backbone", "resnet18"), "windows": ("windows", ["brain", "subdural", "blood"]),
                "num_slices": ("num_slices", 3), "spatial_size": ("spatial_size", [256, 256]),
                "skull_strip": ("skull_strip", False), "num_classes": ("num_classes", 1)}


def add_run_settings_argument(p: argparse.ArgumentParser, dests: tuple[str, ...] = tuple(RUN_SETTINGS)) -> None:
    """``--cv-dir``: take the classifier settings (and folds) from a train-cv run instead of options."""
    p.add_argument("--cv-dir", default=None,
                   help="a train-cv run: its recorded settings (" + ", ".join(d.replace("_", "-") for d in dests)
                        + ", folds) are used; an option given as well must agree")


def apply_run_settings(args: argparse.Namespace, dests: tuple[str, ...] = tuple(RUN_SETTINGS),
                       fold_dests: tuple[str, str, str] | None = ("folds", "fold_seed", "val_fraction")) -> None:
    """Fill the classifier options of ``args`` left unset (``None``) from ``args.cv_dir``'s run (its bundle
    settings resolved) or from the defaults; a given option that contradicts the run is one line. The same
    for the fold options (``fold_dests``) through :func:`resolve_cv_folds`."""
    from hemwsl.errors import HemwslInputError

    cv = getattr(args, "cv_dir", None)
    run = None
    if cv:
        from hemwsl.predict import resolve_bundle_settings

        if not Path(cv).is_dir():
            raise HemwslInputError(f"{cv}: train-cv folder not found (--cv-dir)")
        run = resolve_bundle_settings(cv_settings(cv))
    for dest in dests:
        key, default = RUN_SETTINGS[dest]
        given = getattr(args, dest, None)
        if run is not None:
            have = run[key]
            if given is not None and given is not False and json.loads(json.dumps(given)) != have:
                raise HemwslInputError(f"--{dest.replace('_', '-')} {given!r} contradicts the train-cv run {cv} "
                                       f"({key} = {have!r}); leave the option out")
            setattr(args, dest, have)
        elif given is None:
            setattr(args, dest, default)
    if fold_dests is not None:
        f, sd, vf = fold_dests
        values = resolve_cv_folds(cv, getattr(args, f), getattr(args, sd), getattr(args, vf))
        for d, v in zip(fold_dests, values):
            setattr(args, d, v)


def add_checkpoint_argument(p: argparse.ArgumentParser, help: str | None = None) -> None:
    """``--checkpoint best|last``: which classifier weights of each fold (:func:`fold_checkpoint`)."""
    p.add_argument("--checkpoint", default="best", choices=["best", "last"],
                   help=help or "classifier weights of each fold: best (model.pt, best validation AUROC; default) or "
                                "last (model_last.pt, e.g. the final EMA weights) with its predictions_test[_last].csv")


def add_cam_cv_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset-dir", required=True, help="dataset root the classifiers were trained on")
    p.add_argument("--cv-dir", required=True, help="output folder of `hemwsl train-cv` (fold<k>/models/model.pt)")
    p.add_argument("--out", required=True, help="heatmap folder <method>/<layer>/<patient>.nii.gz (shared by folds)")
    p.add_argument("--folds", type=int, default=None, help="number of folds of the train-cv run (default: as it recorded)")
    from hemwsl.engines.cv import CAM_CV_METHODS

    p.add_argument("--methods", nargs="+", default=list(CAM_CV_METHODS), help="CAM/attribution methods")
    p.add_argument("--layers", nargs="*", default=None, help="target layers (default: the network's registered ones)")
    p.add_argument("--part", default="test", choices=["train", "val", "test"],
                   help="which part of each fold to explain (default: test)")
    p.add_argument("--grid", default="input", help="input (classifier size, world-aligned; default) or ct")
    p.add_argument("--cache-dir", default=None,
                   help="the disk cache of preprocessed volumes given to train-cv: volumes are read back from it "
                        "instead of skull stripped and resized again")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="classifier settings, when the train-cv run has no cv_settings.json")
    p.add_argument("--flip-tta", action="store_true",
                   help="each map the mean of the slice's and its in-plane flip's (flipped back): twice the time")
    p.add_argument("--storage", default="float32", choices=["float32", "uint16"],
                   help="how the heatmap files store values: float32 (default) or uint16 with the NIfTI scale factor "
                        "(each file quantised to 65,536 levels of its range: 3-4x smaller, written about 3x faster)")
    add_checkpoint_argument(p)


def add_cam_ensemble_arguments(p: argparse.ArgumentParser) -> None:
    from hemwsl.engines.ensemble import ENSEMBLE_NORMALISATIONS

    p.add_argument("--cam-dirs", nargs="+", required=True,
                   help="two or more cam-cv folders of runs on the same folds (e.g. one recipe trained with several "
                        "train_seed values)")
    p.add_argument("--out", required=True, help="folder of the mean heatmaps <method>/<layer>/<patient>.nii.gz")
    p.add_argument("--methods", nargs="+", default=None, help="only these methods (default: those of every member)")
    p.add_argument("--layers", nargs="+", default=None, help="only these layers (default: those of every member)")
    p.add_argument("--normalise", default="slice", choices=ENSEMBLE_NORMALISATIONS,
                   help="each member's map before the mean: slice (min-max per axial slice, as the benchmark scales "
                        "maps; default), volume (divided by the volume's maximum) or none (the stored values)")


def run_cam_ensemble(args: argparse.Namespace) -> int:
    """``hemwsl cam-ensemble``: :func:`hemwsl.engines.ensemble.ensemble_heatmaps` with the command's arguments."""
    from hemwsl.engines.ensemble import ensemble_heatmaps

    done = ensemble_heatmaps(args.cam_dirs, args.out, methods=args.methods, layers=args.layers,
                             normalise=args.normalise)
    print(f"mean of {len(args.cam_dirs)} members: {len(done['pairs'])} (method, layer) pairs x {done['patients']} "
          f"patients in {args.out} ({done['written']} written now)", flush=True)
    if done["predictions"]:
        print(f"the members' mean slice probabilities: {done['predictions']} (--predictions of benchmark, quantify)",
              flush=True)
    else:
        print(f"no mean slice probabilities: {done['no_predictions']}", flush=True)
    return 0


def _cam_cv_settings(cv_dir: str, pairs: list[str]) -> dict:
    """The classifier settings of cam-cv from the run and ``--set`` pairs (:func:`hemwsl.engines.cv._cam_cv_settings`)."""
    from hemwsl.engines.cv import _cam_cv_settings as settings, parse_overrides

    return settings(cv_dir, parse_overrides(pairs))


def run_cam_cv(args: argparse.Namespace) -> int:
    """``hemwsl cam-cv``: :func:`hemwsl.engines.cv.cam_cv` with the command's arguments."""
    from hemwsl.engines.cv import cam_cv, parse_overrides

    return cam_cv(args.dataset_dir, args.cv_dir, args.out, folds=args.folds, methods=args.methods,
                  layers=args.layers, part=args.part, grid=args.grid, overrides=parse_overrides(args.set),
                  checkpoint=getattr(args, "checkpoint", "best"), cache_dir=getattr(args, "cache_dir", None),
                  flip_tta=bool(getattr(args, "flip_tta", False)), storage=getattr(args, "storage", "float32"))


def add_benchmark_arguments(p: argparse.ArgumentParser) -> None:
    from hemwsl.constants import BENCHMARK_THRESHOLDS as DEFAULT_GRID

    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset-dir", help="dataset root with masks (layout: --layout)")
    src.add_argument("--datalist", help="datalist JSON (from `hemwsl datalist`)")
    p.add_argument("--layout", default="ct-ich", help="layout of --dataset-dir (default: ct-ich)")
    p.add_argument("--cam-dir", required=True, help="heatmaps <method>/<layer>/<patient>.nii.gz (e.g. from cam-cv)")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--methods", nargs="*", default=None, help="only these methods (default: all found)")
    p.add_argument("--layers", nargs="*", default=None, help="only these layers (default: all found)")
    p.add_argument("--thresholds", nargs="+", default=list(DEFAULT_GRID),
                   help="threshold specs: fixed:V, percentile:Q, otsu, search, prior, prior+<spec>, priorcomp+<spec> "
                        f"(default: {' '.join(DEFAULT_GRID)})")
    p.add_argument("--split", default=None, help="a `hemwsl split` JSON: choose on val, score test (default: CV folds)")
    p.add_argument("--folds", type=int, default=None, help="CV folds (default: the --cv-dir run's, else 5)")
    p.add_argument("--seed", type=int, default=None, help="fold seed (default: the --cv-dir run's, else 0)")
    p.add_argument("--val-fraction", type=float, default=None, help="default: the --cv-dir run's, else 0.15")
    p.add_argument("--select", default="rest", help="selection patients of a fold: rest (default) or val")
    p.add_argument("--slices", default="gt", help="scored slices: gt (default), predicted or all")
    p.add_argument("--cv-dir", default=None, help="train-cv folder: its out-of-fold predictions_test.csv files are "
                                                  "used for --slices predicted and the PR/ROC figures")
    p.add_argument("--predictions", nargs="*", default=[], help="prediction CSVs (instead of --cv-dir)")
    add_checkpoint_argument(p)
    p.add_argument("--prob-threshold", type=float, default=0.5, help="slice called positive at this probability")
    p.add_argument("--hu-range", type=float, nargs=2, action="append", default=None, metavar=("LOW", "HIGH"),
                   help="hyperdense-blood range of the prior specs in HU (default: 45 90); repeat it to let the "
                        "selection patients choose among ranges")
    p.add_argument("--brain-erosion", type=int, nargs="+", default=[0],
                   help="erode the brain mask by this many pixels (default: 0); several values: chosen per fold on "
                        "the selection patients")
    p.add_argument("--min-size", type=int, nargs="+", default=[0],
                   help="drop predicted components under this many pixels (default: 0); several values: chosen per "
                        "fold on the selection patients")
    p.add_argument("--grow", type=int, nargs="+", default=[0],
                   help="grow each mask by this many pixels into 40-100 HU inside the brain, the edge of a bleed the "
                        "prior's range misses (default: 0); several values: chosen per fold on the selection patients")
    p.add_argument("--min-share", type=float, nargs="+", default=[0.0], metavar="SHARE",
                   help="keep, per slice, the components whose heat mass (the sum of the min-max scaled heatmap over "
                        "the component; its size for the prior alone) is at least this share of the slice's largest "
                        "component's, in [0, 1): a bleed is usually the largest, most strongly marked hyperdense "
                        "region of its slice, its look-alikes (the skull's rim, the falx) small (default: 0, every "
                        "component); several values: chosen per fold on the selection patients")
    p.add_argument("--hu-reference", type=float, nargs="+", default=None, metavar="HU",
                   help="shift each scan's HU so that its brain (median of the skull strip's 0-80 HU voxels) reads this "
                        "value before the prior's range applies, e.g. 37: scanners differ by several HU and a fixed "
                        "range otherwise takes in the cortex of denser scans. Two values LOW HIGH: a band, each brain "
                        "outside it shifted to the nearer end, the others left as stored (-100 37: lower the denser "
                        "scans only). Default: the HU as stored")
    p.add_argument("--candidates", type=float, nargs="+", default=None,
                   help="thresholds of the min-max normalised heatmap that `search` chooses from, each in [0, 1) "
                        "(default: 0.05 to 0.95 in steps of 0.05)")
    p.add_argument("--select-metric", default=None,
                   help="what selection patients maximise: dice (per slice; default with --slices gt) or global_dice")
    p.add_argument("--distance-metrics", action="store_true", help="also HD95 and surface Dice per volume (slower)")
    p.add_argument("--n-boot", type=int, default=1000,
                   help="bootstrap replicates of the 95%% CIs, at least 10 (default: 1000)")
    p.add_argument("--no-figures", action="store_true", help="skip the figures")


def benchmark_config(args: argparse.Namespace) -> BenchmarkConfig:
    """The :class:`~hemwsl.experiments.benchmark.BenchmarkConfig` of ``hemwsl benchmark``'s arguments."""

    def seq(value):
        return None if value is None else tuple(value)

    return BenchmarkConfig(
        cam_dir=args.cam_dir, out=args.out, dataset_dir=args.dataset_dir, datalist=args.datalist, layout=args.layout,
        methods=seq(args.methods), layers=seq(args.layers), thresholds=tuple(args.thresholds), split=args.split,
        folds=args.folds, seed=args.seed, val_fraction=args.val_fraction, select=args.select, slices=args.slices,
        cv_dir=args.cv_dir, predictions=tuple(args.predictions), checkpoint=getattr(args, "checkpoint", "best"),
        prob_threshold=args.prob_threshold,
        hu_range=None if args.hu_range is None else tuple(tuple(r) for r in args.hu_range),
        brain_erosion=tuple(args.brain_erosion), min_size=tuple(args.min_size), grow=tuple(args.grow),
        min_share=tuple(args.min_share), hu_reference=seq(getattr(args, "hu_reference", None)), candidates=seq(getattr(args, "candidates", None)),
        select_metric=args.select_metric, distance_metrics=args.distance_metrics, n_boot=args.n_boot,
        figures=not args.no_figures)


def run_benchmark(args: argparse.Namespace) -> int:
    """``hemwsl benchmark``: :func:`hemwsl.experiments.benchmark.run_benchmark_experiment` with the command's
    arguments."""
    from hemwsl.experiments.benchmark import run_benchmark_experiment

    run_benchmark_experiment(benchmark_config(args))
    return 0
