"""``hemwsl pseudo``: CAM heatmaps of a trained slice classifier -> pseudo-label NIfTIs + a training datalist.

Runs :func:`hemwsl.pseudo.make_pseudo_labels` (resumable) on a datalist, or on the test part of one
cross-validation fold (``--fold``), and optionally prints the Dice of the pseudo-labels against the
true masks (``--evaluate``). Example (after ``run_cam`` wrote ``<cams>/gradcam/<layer>/*.nii.gz``)::

    hemwsl pseudo --dataset-dir data/ct-ich --fold 0 --folds 5 --cam-dir outputs/cams \\
        --checkpoint outputs/cls/fold0/models/model.pt --backbone efficientnet_v2_b0 \\
        --windows brain subdural blood --spatial-size 128 128 --skull-strip \\
        --method gradcam --mode cam_kmeans --context --out outputs/pseudo/fold0 --evaluate
"""

from __future__ import annotations

import argparse
import json

__all__ = ["add_pseudo_arguments", "run_pseudo"]


def add_pseudo_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``hemwsl pseudo``."""
    src = p.add_argument_group("volumes")
    src.add_argument("--datalist", default=None, help="datalist JSON (from `hemwsl datalist`)")
    src.add_argument("--dataset-dir", default=None, help="dataset folder, instead of --datalist")
    src.add_argument("--layout", default="ct-ich", help="layout of --dataset-dir (default: ct-ich)")
    src.add_argument("--fold", type=int, default=None, help="only the test patients of this cross-validation fold")
    src.add_argument("--folds", type=int, default=None, help="number of folds of --fold (default: --cv-dir's, else 5)")
    src.add_argument("--fold-seed", type=int, default=None, help="split seed of --fold (default: --cv-dir's, else 0)")
    src.add_argument("--val-fraction", type=float, default=None,
                     help="validation fraction of --fold (default: --cv-dir's, else 0.15)")

    cam = p.add_argument_group("heatmaps and pseudo-labels")
    cam.add_argument("--cam-dir", required=True,
                     help="heatmap root written by run_cam (<cam-dir>/<method>/<layer>/<patient>.nii.gz)")
    cam.add_argument("--method", default="gradcam", help="CAM method folder (default: gradcam)")
    cam.add_argument("--layer", default=None, help="layer folder (default: the only one under <cam-dir>/<method>)")
    cam.add_argument("--out", required=True, help="output folder: <patient>.nii.gz + datalist.json")
    cam.add_argument("--mode", default="cam_kmeans", help="cam or cam_kmeans (default: cam_kmeans)")
    cam.add_argument("--context", action="store_true",
                     help="use slice context (neighbouring slices' CAMs and 2.5D clustering)")
    cam.add_argument("--context-slices", type=int, default=None,
                     help="with --context: slices of the context window (default: 3)")
    cam.add_argument("--select", default="differential", help="cluster choice: differential or brightest")
    cam.add_argument("--k", type=int, default=4, help="K-means clusters (default: 4)")
    cam.add_argument("--enhance", default="global", help="contrast enhancement before clustering: global, clahe, none")
    cam.add_argument("--enhance-window", default="brain", help="CT window before the enhancement (default: brain)")
    cam.add_argument("--threshold-strategy", default="fixed", help="strategy of hemwsl.thresholds (default: fixed)")
    cam.add_argument("--threshold", type=_number_or_none, default=0.7,
                     help="fixed: threshold of the per-slice min-max CAM (default 0.7); percentile: q; intensity: the "
                          "CAM threshold ANDed with the HU range, or none for the HU prior alone (no heatmap)")
    cam.add_argument("--prob-threshold", default="0.5",
                     help="slices with probability >= this get labels: a number (default: 0.5), or f1_max / youden "
                          "to take the threshold the classifier's validation report chose (--val-report)")
    cam.add_argument("--val-report", default=None,
                     help="report_val.json of the classifier's fold (for --prob-threshold f1_max or youden)")
    cam.add_argument("--min-size", type=int, default=0, help="drop pseudo-label components under this many pixels")
    cam.add_argument("--hu-range", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                     help="HU range of --threshold-strategy intensity (default: 45 90)")
    cam.add_argument("--brain-erosion", type=int, default=0,
                     help="with --skull-strip: erode the brain mask the labels are restricted to (pixels)")
    cam.add_argument("--hu-reference", type=float, nargs="+", default=None, metavar="HU",
                     help="with --skull-strip: shift each scan's HU so that its brain reads this value (or into this "
                          "band LOW HIGH) before the intensity prior applies, e.g. 37 (as `hemwsl benchmark "
                          "--hu-reference`)")
    cam.add_argument("--component-filter", action="store_true",
                     help="drop the region's components that a classifier trained on slice labels only (of the "
                          "fold's training and validation patients, or of --filter-datalist) scores below "
                          "--component-threshold; kept in <out>/component_filter/")
    cam.add_argument("--component-threshold", type=float, default=None,
                     help="decision threshold of --component-filter (default: 0.5, the class-balanced point)")
    cam.add_argument("--filter-datalist", default=None,
                     help="datalist JSON of the patients --component-filter trains on when no --fold is given")
    cam.add_argument("--predictions-csv", nargs="+", default=None,
                     help="classifier predictions CSV(s) (patient, slice, prob_any) instead of recomputing them")

    net = p.add_argument_group("classifier (as trained by its bundle)")
    net.add_argument("--checkpoint", default=None, help="model.pt of the classifier bundle")
    from hemwsl.commands.benchmark import add_run_settings_argument

    add_run_settings_argument(net, ("backbone", "windows", "num_slices", "spatial_size", "skull_strip"))
    net.add_argument("--backbone", default=None, help="registry name of the network (default: --cv-dir's, else resnet18)")
    net.add_argument("--windows", nargs="+", default=None, help="CT windows (default: --cv-dir's, else brain subdural blood)")
    net.add_argument("--num-slices", type=int, default=None, help="2.5D slices per input (default: --cv-dir's, else 3)")
    net.add_argument("--spatial-size", type=int, nargs=2, default=None, help="in-plane size (default: --cv-dir's, else 256 256)")
    net.add_argument("--skull-strip", action="store_true", default=None,
                     help="the classifier was trained on skull-stripped slices (default: --cv-dir's, else no)")
    net.add_argument("--batch-size", type=int, default=8, help="slices per forward pass (default: 8)")
    net.add_argument("--device", default="cpu")
    net.add_argument("--seed", type=int, default=0, help="K-means seed")
    p.add_argument("--evaluate", action="store_true", help="print the Dice against the true masks (positive patients)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _datalist(args: argparse.Namespace) -> tuple[list[dict], dict | None]:
    """The volumes to label (the test part with ``--fold``) and, with ``--fold``, all the fold's parts."""
    from hemwsl.data.datalist import build_datalist, load_datalist
    from hemwsl.errors import HemwslInputError

    if (args.datalist is None) == (args.dataset_dir is None):
        raise HemwslInputError("give exactly one of --datalist and --dataset-dir")
    datalist = load_datalist(args.datalist) if args.datalist else build_datalist(args.layout, args.dataset_dir)
    if args.fold is None:
        return datalist, None
    from hemwsl.engines.classifier import fold_datalists

    parts = fold_datalists(datalist, n_folds=args.folds, fold=args.fold, seed=args.fold_seed,
                           val_fraction=args.val_fraction)
    return parts["test"], parts


def _layer(args: argparse.Namespace) -> str:
    from pathlib import Path

    from hemwsl.errors import HemwslInputError

    if args.layer:
        return args.layer
    folder = Path(args.cam_dir) / args.method
    layers = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if len(layers) != 1:
        raise HemwslInputError(f"{folder}: give --layer; found layer folders {layers}")
    return layers[0]


def _number_or_none(text: str) -> float | None:
    if str(text).lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or none") from None


def _prob_threshold(value: str, report: str | None) -> tuple[float, str | None]:
    """A number, or the ``f1_max`` / ``youden`` threshold of a classifier ``report_val.json`` (its ``any`` output).

    Returns:
        ``(threshold, rule)``: ``rule`` is ``None`` for a number, else the rule's name.
    """
    from pathlib import Path

    from hemwsl.errors import HemwslInputError

    try:
        return float(value), None
    except ValueError:
        pass
    if value not in ("f1_max", "youden"):
        raise HemwslInputError(f"--prob-threshold {value!r}: give a number, f1_max or youden")
    if not report:
        raise HemwslInputError(f"--prob-threshold {value} needs --val-report (report_val.json)")
    if not Path(report).is_file():
        what = "a folder" if Path(report).is_dir() else "not found"
        raise HemwslInputError(f"--val-report {report}: {what}; give the report_val.json file of the classifier's fold "
                               f"(for --prob-threshold {value})")
    from hemwsl.data.io import read_json_file

    rep = read_json_file(report, "classifier validation report (--val-report)")
    try:
        return float(rep["any"][value]["threshold"]), value
    except (KeyError, TypeError, ValueError) as err:
        raise HemwslInputError(f"{report}: no 'any' -> {value!r} -> 'threshold' in it ({err})") from err


def _component_filter(args: argparse.Namespace, threshold, parts: dict | None):
    """The trained component filter of ``--component-filter`` (loaded when an earlier call trained it), and
    how it was trained; ``parts`` are the ``--fold`` parts of :func:`_datalist`."""
    from pathlib import Path

    from hemwsl.data.datalist import load_datalist
    from hemwsl.errors import HemwslInputError
    from hemwsl.pseudo import component_filter_at

    if args.context:
        raise HemwslInputError("--component-filter scores single slices' components: drop --context")
    folder = Path(args.out) / "component_filter"
    if parts is not None:
        if args.filter_datalist:
            raise HemwslInputError("--filter-datalist: with --fold the filter trains on the fold's other patients")
        train, path = parts["train"] + parts["val"], folder / f"fold{args.fold}.pkl"
        rule = "per fold, on the slice labels of its training and validation patients"
    else:
        if not args.filter_datalist:
            raise HemwslInputError("--component-filter needs --fold or --filter-datalist (the patients to train on)")
        train, path = load_datalist(args.filter_datalist), folder / "filter.pkl"
        rule = f"on the slice labels of {args.filter_datalist}"
    flt = component_filter_at(path, train, args.cam_dir, args.method, _layer(args), threshold,
                              filter_threshold=args.component_threshold, skull_strip=args.skull_strip,
                              brain_erosion=args.brain_erosion, cache_dir=folder / "features", seed=args.seed,
                              progress=not args.no_progress, hu_reference=getattr(args, "hu_reference", None))
    return flt, rule


def _check_made_from_cv_dir(args: argparse.Namespace) -> None:
    """``--cam-dir`` made from the ``--cv-dir`` run (its ``cam_checkpoint.json``, as ``hemwsl benchmark`` checks),
    and each ``--predictions-csv`` that is a train-cv run's out-of-fold file of that run (or of a copy of it: the
    same probabilities): one line naming the option otherwise."""
    from pathlib import Path

    from hemwsl.data.io import read_json_file
    from hemwsl.engines.runs import CHECKPOINTS, check_predictions_of_run
    from hemwsl.experiments.benchmark import check_made_from_run

    marker = Path(args.cam_dir) / "cam_checkpoint.json"
    if marker.is_file():
        rec = read_json_file(marker, "record of the run that made the heatmaps")
        which = rec.get("checkpoint", "best") if isinstance(rec, dict) else "best"
        check_made_from_run(args.cam_dir, args.cv_dir, which if which in CHECKPOINTS else "best", "heatmaps",
                            "--cam-dir")
    check_predictions_of_run(args.predictions_csv or [], args.cv_dir, "--predictions-csv")


def run_pseudo(args: argparse.Namespace) -> int:
    """Run ``hemwsl pseudo``; returns the exit status."""
    from hemwsl.cam.volume import check_heatmap_sizes
    from hemwsl.errors import HemwslInputError
    from hemwsl.pseudo import (build_threshold, check_heatmaps_readable, check_pseudo_params, evaluate_pseudo_labels,
                               make_pseudo_labels, read_slice_probabilities)

    from hemwsl.commands.benchmark import apply_run_settings

    apply_run_settings(args, ("backbone", "windows", "num_slices", "spatial_size", "skull_strip"))
    # every setting before any work or file: a folder records them (pseudo_params.json) and refuses others later
    if args.component_threshold is not None and not args.component_filter:
        raise HemwslInputError("--component-threshold is the decision threshold of --component-filter: give "
                               "--component-filter too, or leave it out")
    if args.component_filter and args.context:
        raise HemwslInputError("--component-filter scores single slices' components: drop --context")
    if getattr(args, "hu_reference", None) is not None:
        from hemwsl.thresholds import check_hu_reference

        args.hu_reference = check_hu_reference(args.hu_reference, "--hu-reference")
        if not args.skull_strip:
            raise HemwslInputError("--hu-reference needs --skull-strip (the brain's HU is measured inside the brain mask)")
    if args.context_slices is not None and not args.context:
        raise HemwslInputError("--context-slices is the window of --context: give --context too, or leave it out")
    if args.context_slices is None:
        args.context_slices = 3
    if args.component_threshold is None:
        args.component_threshold = 0.5
    if not 0.0 <= args.component_threshold <= 1.0:
        raise HemwslInputError(f"--component-threshold must be a probability in [0, 1], got {args.component_threshold}")
    if args.threshold_strategy in ("fixed", "intensity") and args.threshold is not None \
            and not 0.0 <= args.threshold < 1.0:
        raise HemwslInputError(f"--threshold {args.threshold:g}: a threshold of the per-slice min-max heatmap must be "
                               "in [0, 1)")
    if args.threshold_strategy == "percentile" and args.threshold is not None and not 0.0 <= args.threshold <= 100.0:
        raise HemwslInputError(f"--threshold {args.threshold:g}: the percentile of --threshold-strategy percentile "
                               "must be in [0, 100]")
    if args.batch_size < 1:
        raise HemwslInputError(f"--batch-size must be >= 1 (slices per forward pass), got {args.batch_size}")
    from hemwsl.predict import resolve_device

    resolve_device(args.device, "--device")  # before a checkpoint is loaded onto it
    prob_threshold, rule = _prob_threshold(args.prob_threshold, args.val_report)
    if not 0.0 <= prob_threshold <= 1.0:
        raise HemwslInputError(f"--prob-threshold must be a probability in [0, 1], got {prob_threshold:g}")
    check_pseudo_params(mode=args.mode, select=args.select, k=args.k, context=args.context,
                        context_slices=args.context_slices, prob_threshold=prob_threshold,
                        brain_erosion=args.brain_erosion, skull_strip=bool(args.skull_strip), enhance=args.enhance,
                        enhance_window=args.enhance_window, component_filter=args.component_filter)
    for csv in args.predictions_csv or []:  # a file that is no predictions CSV is named now
        read_slice_probabilities(csv)
    if args.cv_dir:  # heatmaps and slice probabilities of the --cv-dir run, not of another run's folds
        _check_made_from_cv_dir(args)
    datalist, parts = _datalist(args)
    check_heatmap_sizes(args.cam_dir, args.method, lambda: _layer(args), [str(e["patient"]) for e in datalist])
    network = None
    if args.checkpoint:
        from hemwsl.engines.classifier import load_weights
        from hemwsl.networks import build_network

        network = build_network(args.backbone, in_channels=args.num_slices * len(args.windows), num_classes=1)
        network = load_weights(network, args.checkpoint, device=args.device)
    elif args.predictions_csv is None or (args.mode == "cam_kmeans" and args.select == "differential"):
        raise HemwslInputError(f"--checkpoint is required for --mode {args.mode} --select {args.select}"
                               + ("" if args.predictions_csv else " (or without --predictions-csv)"))
    kw = {"min_size": args.min_size} if args.min_size else {}
    if args.hu_range is not None:
        if args.threshold_strategy != "intensity":
            raise HemwslInputError("--hu-range needs --threshold-strategy intensity")
        kw["hu_range"] = tuple(args.hu_range)
    threshold = build_threshold(args.threshold_strategy, args.threshold, **kw)
    check_heatmaps_readable(args.cam_dir, args.method, _layer(args), datalist)  # before the first label is written
    component_filter, filter_rule = _component_filter(args, threshold, parts) if args.component_filter else (None, None)
    from hemwsl.data.settings import InputSettings
    from hemwsl.pseudo import PseudoLabelSettings

    result = make_pseudo_labels(
        network, datalist, args.cam_dir, args.out, args.method, _layer(args),
        PseudoLabelSettings(mode=args.mode, threshold=threshold, context=args.context,
                            context_slices=args.context_slices, select=args.select, k=args.k, enhance=args.enhance,
                            enhance_window=args.enhance_window, prob_threshold=prob_threshold,
                            brain_erosion=args.brain_erosion, seed=args.seed,
                            hu_reference=getattr(args, "hu_reference", None)),
        inputs=InputSettings(windows=args.windows, num_slices=args.num_slices, spatial_size=args.spatial_size,
                             skull_strip=bool(args.skull_strip)),
        predictions_csv=args.predictions_csv, batch_size=args.batch_size, device=args.device,
        progress=not args.no_progress, prob_threshold_rule=rule, component_filter=component_filter,
        component_filter_rule=filter_rule)
    n_pos = sum(e["positive"] for e in result)
    print(f"{len(result)} pseudo-label volumes ({n_pos} non-empty) in {args.out}; datalist: {args.out}/datalist.json")
    if args.evaluate:
        scores = evaluate_pseudo_labels(result)
        print(json.dumps({**{k: scores[k] for k in ("n", "mean_dice", "median_dice")},
                          **{f"mean_{k}": v for k, v in scores["diagnostics"]["mean"].items()}}))
    return 0
