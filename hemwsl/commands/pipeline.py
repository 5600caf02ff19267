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
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hemwsl.commands.benchmark import add_checkpoint_argument
from hemwsl.thresholds.intensity import hu_reference_text

__all__ = ["add_ablation_arguments", "run_ablation", "add_pipeline_arguments", "run_pipeline"]

ROWS = ("CAM only", "CAM + K-means", "CAM + U-Net", "CAM + K-means + U-Net", "fully supervised U-Net")
PRIOR_ROWS = ("HU prior (no CAM), validated post-processing", "HU prior + U-Net")
#: The prior's components filtered by a classifier trained on slice labels only (hemwsl.pseudo.components).
FILTER_ROWS = ("HU prior + component filter (slice labels)", "HU prior + component filter + U-Net")
#: The heatmap row the benchmark validated for ``--method`` (e.g. ``priorcomp+search``: the prior's components the
#: heatmap touches), with each fold's chosen layer, threshold and post-processing.
HEATMAP_ROWS = ("heatmap, validated benchmark recipe", "heatmap, validated benchmark recipe + U-Net")
GATED = ", gated by the classifier"  # suffix of a U-Net row whose predictions are kept on classifier-positive slices
#: Table order of every row (rows that were not run are left out); each gated row follows its U-Net row.
ORDER = (ROWS[0], ROWS[1], PRIOR_ROWS[0], FILTER_ROWS[0], HEATMAP_ROWS[0], ROWS[2], ROWS[2] + GATED, ROWS[3],
         ROWS[3] + GATED, PRIOR_ROWS[1], PRIOR_ROWS[1] + GATED, FILTER_ROWS[1], FILTER_ROWS[1] + GATED,
         HEATMAP_ROWS[1], HEATMAP_ROWS[1] + GATED, ROWS[4])


#: The row kinds of ``hemwsl ablation --rows``.
ROW_KINDS = ("cam", "cam_kmeans", "prior", "prior_filtered", "heatmap", "true")


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
    p.add_argument("--cache-dir", default=None, help="disk cache of the U-Net's preprocessed volumes")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="U-Net bundle overrides")
    add_checkpoint_argument(p)
    p.add_argument("--rows", nargs="+", default=list(ROW_KINDS), choices=ROW_KINDS, metavar="ROW",
                   help=f"pseudo-label rows to make (and their U-Nets): {', '.join(ROW_KINDS)} (default: all; prior, "
                        "prior_filtered and heatmap need --benchmark-dir; true is the fully supervised U-Net)")
    p.add_argument("--benchmark-dir", default=None,
                   help="a `hemwsl benchmark` report of the same folds: adds the rows of the hyperdense-blood prior "
                        "(no CAM) with the post-processing each fold's selection patients chose there")


def _fold_network(cv_dir: Path, k: int, settings: dict, which: str = "best"):
    from hemwsl.engines.runs import fold_checkpoint
    from hemwsl.engines.classifier import load_weights
    from hemwsl.networks import build_network

    windows = settings.get("windows", ["brain", "subdural", "blood"])
    net = build_network(settings.get("backbone", "resnet18"), in_channels=len(windows) * settings.get("num_slices", 3),
                        num_classes=1)
    return load_weights(net, str(fold_checkpoint(cv_dir, k, which)), device="cpu")


def _has_predictions(cv_dir: Path, k: int, which: str) -> bool:
    from hemwsl.engines.runs import fold_predictions
    from hemwsl.errors import HemwslInputError

    try:
        fold_predictions(cv_dir, k, which)
    except HemwslInputError:
        return False
    return True


def prior_choices(benchmark_dir: str | Path, folds: int) -> dict:
    """Per fold, the heatmap-free prior spec (:class:`~hemwsl.benchmark.specs.ThresholdSpec`, with its erosion,
    HU range and component size) the benchmark's selection patients chose (its ``choices.csv``); a row that cannot
    be read is one line naming the file and the line."""
    from hemwsl.benchmark.specs import parse_threshold_spec
    from hemwsl.errors import HemwslInputError
    from hemwsl.predict import _read_csv

    f = Path(benchmark_dir) / "choices.csv"
    if not f.is_file():
        raise HemwslInputError(f"{f}: not found (run `hemwsl benchmark` with a prior threshold first)")
    rows = _read_csv(f)
    _check_choice_columns(f, rows, ("fold", "method", "threshold"))
    chosen = {}
    for i, r in enumerate(rows):
        if r["method"] != "-":
            continue
        try:
            fold = int(r["fold"])
        except (TypeError, ValueError):
            raise HemwslInputError(f"{f}: line {i + 2}: fold {r['fold']!r} is not a number") from None
        try:
            chosen[fold] = parse_threshold_spec(r["threshold"] or "")
        except HemwslInputError as err:
            raise HemwslInputError(f"{f}: line {i + 2}: {err}") from None
    missing = [k for k in range(folds) if k not in chosen]
    if missing:
        raise HemwslInputError(f"{f}: no prior row chosen for fold(s) {missing} (benchmark a `prior` threshold)")
    return chosen


def _check_choice_columns(f: Path, rows: list[dict], need: tuple[str, ...]) -> None:
    """A benchmark ``choices.csv`` read by :func:`hemwsl.predict._read_csv` has the columns ``need`` (one line naming
    the file and the missing ones)."""
    from hemwsl.errors import HemwslInputError

    missing = [c for c in need if rows and c not in rows[0]]
    if missing:
        raise HemwslInputError(f"{f}: not a benchmark choices table (no column(s) {', '.join(missing)}; columns "
                               f"{', '.join(need)} expected)")


def benchmark_hu_reference(benchmark_dir: str | Path | None) -> float | list | None:
    """The HU calibration (``hu_reference``) a benchmark report was made with, ``None`` when it had none; an
    unreadable ``config.json`` or a value that is no HU calibration is one line naming the file."""
    from hemwsl.data.io import read_json_file
    from hemwsl.thresholds.intensity import check_hu_reference

    if not benchmark_dir:
        return None
    f = Path(benchmark_dir) / "config.json"
    if not (f.exists() or f.is_symlink()):
        return None
    ref = check_hu_reference(read_json_file(f, "benchmark config").get("hu_reference"), f"{f}: hu_reference")
    return list(ref) if isinstance(ref, tuple) else ref


def _prior_kwargs(args: argparse.Namespace, settings: dict, k: int, spec) -> dict:
    """The :func:`~hemwsl.pseudo.make_pseudo_labels` arguments of fold ``k``'s prior rows: the HU prior with the
    post-processing ``spec`` the fold's selection patients chose (and the benchmark's HU calibration), on the
    out-of-fold classifier's positive slices."""
    from hemwsl.engines.runs import fold_predictions
    from hemwsl.thresholds import IntensityPrior

    return dict(mode="cam", hu_reference=benchmark_hu_reference(getattr(args, "benchmark_dir", None)), threshold=IntensityPrior(hu_range=spec.hu_range, cam=None, min_size=spec.min_size,
                                                     grow=spec.grow),
                prob_threshold=args.prob_threshold, brain_erosion=spec.erosion, skull_strip=True,
                predictions_csv=str(fold_predictions(args.cv_dir, k, getattr(args, "checkpoint", "best"))),
                windows=tuple(settings.get("windows", ["brain", "subdural", "blood"])),
                num_slices=settings.get("num_slices", 3), spatial_size=tuple(settings.get("spatial_size", [256, 256])),
                progress=False)


def _prior_pseudo_labels(args: argparse.Namespace, tests: dict, settings: dict, out: Path, choices: dict) -> list:
    """Pseudo-labels of the prior row, fold by fold (each with its fold's chosen post-processing ``choices``)."""
    from hemwsl.data.datalist import save_datalist
    from hemwsl.pseudo import make_pseudo_labels

    entries = []
    for k in range(args.folds):
        entries += make_pseudo_labels(None, tests[k], args.cam_dir, out / "pseudo" / "prior" / f"fold{k}", args.method,
                                      args.layer, **_prior_kwargs(args, settings, k, choices[k]))
    save_datalist(entries, out / "pseudo" / "prior" / "datalist.json")
    return entries


def _filtered_prior_pseudo_labels(args: argparse.Namespace, parts: dict, settings: dict, out: Path,
                                  choices: dict) -> list | None:
    """Pseudo-labels of the prior row with its components filtered (:mod:`hemwsl.pseudo.components`): per fold,
    the filter is trained on the slice labels of the fold's training and validation patients, with the fold's
    chosen post-processing. ``None`` (row left out) when those patients' components all lie on slices of one
    label."""
    import re

    from hemwsl.data.datalist import save_datalist
    from hemwsl.pseudo import component_filter_at, make_pseudo_labels
    from hemwsl.pseudo.components import OneClassError

    root = out / "pseudo" / "prior_filtered"
    entries = []
    for k in range(args.folds):
        spec, kw = choices[k], _prior_kwargs(args, settings, k, choices[k])
        try:  # features are cached per post-processing, so the folds share them
            flt = component_filter_at(
                root / "component_filter" / f"fold{k}.pkl", parts[k]["train"] + parts[k]["val"], args.cam_dir,
                args.method, args.layer, kw["threshold"], skull_strip=True, brain_erosion=spec.erosion, progress=False,
                hu_reference=kw["hu_reference"],
                cache_dir=root / "component_filter" / "features" / re.sub(
                    r"[^A-Za-z0-9.-]+", "_", spec.text + ("" if kw["hu_reference"] is None else f"_cal{hu_reference_text(kw['hu_reference'])}")))
        except OneClassError as err:
            print(f"component filter of fold {k}: {err}; row left out", flush=True)
            return None
        entries += make_pseudo_labels(
            None, parts[k]["test"], args.cam_dir, root / f"fold{k}", args.method, args.layer, **kw,
            component_filter=flt, component_filter_rule="on the slice labels of the fold's training and validation patients")
    save_datalist(entries, root / "datalist.json")
    return entries


def heatmap_choices(benchmark_dir: str | Path, folds: int, method: str) -> dict | None:
    """Per fold, the (layer, :class:`~hemwsl.benchmark.specs.ThresholdSpec`, threshold value) the benchmark's
    selection patients chose for ``method`` (its ``choices.csv`` and ``thresholds.csv``); ``None`` when the report
    has no row of ``method``."""
    from hemwsl.benchmark.specs import parse_threshold_spec
    from hemwsl.errors import HemwslInputError
    from hemwsl.predict import _read_csv, _recipe_from_benchmark

    bench = Path(benchmark_dir)
    if (bench / "choices.csv").is_file():
        rows = _read_csv(bench / "choices.csv")
        _check_choice_columns(bench / "choices.csv", rows, ("fold", "method", "layer", "threshold", "selection_dice"))
        if not any(r["method"] == method for r in rows):
            return None
    _, per_fold = _recipe_from_benchmark(bench, list(range(folds)), methods=[method])
    out = {}
    for k, c in per_fold.items():
        spec = parse_threshold_spec(c["threshold"])
        if spec.needs_fit and c["cam_threshold"] is None:
            raise HemwslInputError(f"{bench / 'thresholds.csv'}: no value of {c['threshold']} chosen for fold {k}")
        out[k] = {"layer": c["layer"], "spec": spec, "value": c["cam_threshold"]}
    return out


def _heatmap_pseudo_labels(args: argparse.Namespace, tests: dict, settings: dict, out: Path, chosen: dict) -> list:
    """Pseudo-labels of the heatmap row: fold by fold, ``--method``'s heatmap at the fold's chosen layer with the
    threshold, value and post-processing its selection patients chose in the benchmark, on the out-of-fold
    classifier's positive slices."""
    from hemwsl.data.datalist import save_datalist
    from hemwsl.pseudo import make_pseudo_labels

    entries = []
    for k in range(args.folds):
        c = chosen[k]
        kw = _prior_kwargs(args, settings, k, c["spec"])
        kw["threshold"] = c["spec"].strategy(c["value"], per_sample=False)
        entries += make_pseudo_labels(None, tests[k], args.cam_dir, out / "pseudo" / "heatmap" / f"fold{k}",
                                      args.method, c["layer"], **kw)
    save_datalist(entries, out / "pseudo" / "heatmap" / "datalist.json")
    return entries


def _scores(evaluation: dict) -> tuple[dict, dict]:
    """Per-patient Dice and mean diagnostics of :func:`hemwsl.pseudo.evaluate_pseudo_labels`."""
    return evaluation["per_patient"], evaluation["diagnostics"]["mean"]


def _diagnostics_markdown(diagnostics: dict[str, dict[str, float]]) -> str:
    lines = ["| row | precision | recall | blood on labelled slices |", "|---|---|---|---|"]
    lines += [f"| {r} | {d['precision']:.3f} | {d['recall']:.3f} | {d['slice_recall']:.3f} |" for r, d in diagnostics.items()]
    return "\n".join(lines) + "\n"


def _check_ablation_options(args: argparse.Namespace, kinds: set) -> None:
    """The options of ``hemwsl ablation`` that need no file: rows, U-Net folds and U-Net settings, thresholds."""
    from hemwsl.commands.classifier import check_cache_dir, check_override_keys, parse_overrides
    from hemwsl.errors import HemwslInputError

    if kinds & {"prior", "prior_filtered", "heatmap"} and not getattr(args, "benchmark_dir", None):
        raise HemwslInputError("--rows prior, prior_filtered and heatmap need --benchmark-dir (the benchmark's choices)")
    bad = [k for k in (args.unet_folds or []) if not 0 <= k < args.folds]
    if bad:
        raise HemwslInputError(f"--unet-folds: fold(s) {bad} not in [0, {args.folds - 1}] (the train-cv run has "
                               f"{args.folds} folds)")
    if not 0.0 <= args.threshold < 1.0:
        raise HemwslInputError(f"--threshold must be in [0, 1) (a fraction of the per-slice min-max map), "
                               f"got {args.threshold}")
    if not 0.0 <= args.prob_threshold <= 1.0:
        raise HemwslInputError(f"--prob-threshold must be a probability in [0, 1], got {args.prob_threshold}")
    overrides = parse_overrides(args.set)
    check_override_keys(overrides, "ich_unet3d")
    from hemwsl.engines.bundle import check_bundle_settings

    check_bundle_settings("ich_unet3d", overrides)  # the U-Net's values too, before any pseudo-label is made
    check_cache_dir(args.cache_dir)


def _check_heatmaps(args: argparse.Namespace, entries: list) -> None:
    """The heatmap of every patient at ``--method`` / ``--layer`` (the pseudo-labels of the cam and prior rows)."""
    from hemwsl.errors import HemwslInputError
    from hemwsl.pseudo.volume import _entry_stem, _heatmap_file

    folder = Path(args.cam_dir) / args.method / args.layer
    if not folder.is_dir():
        root = Path(args.cam_dir) / args.method
        found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise HemwslInputError(f"--method {args.method} --layer {args.layer}: no heatmaps in {folder} "
                               f"(layers there: {', '.join(found) if found else 'none'})")
    for e in entries:
        _heatmap_file(args.cam_dir, _entry_stem(e), args.method, args.layer)


def run_ablation(args: argparse.Namespace) -> int:
    import torch

    from hemwsl.engines.runs import (check_checkpoint_marker, cv_settings, fold_checkpoint, fold_predictions,
                                     resolve_cv_folds)
    from hemwsl.commands.segmentation import run_seg_cv
    from hemwsl.data.datalist import build_datalist
    from hemwsl.data.io import atomic_write_text
    from hemwsl.engines.classifier import fold_datalists
    from hemwsl.pseudo import evaluate_pseudo_labels, make_pseudo_labels
    from hemwsl.reports.ablation import ablation_markdown, ablation_rows, read_seg_metrics

    cv_dir, out = Path(args.cv_dir), Path(args.out)
    which = getattr(args, "checkpoint", "best")
    # every input first, before the first file is written: a bad option, a missing checkpoint, predictions file or
    # heatmap is named at once
    args.folds, seed, val_fraction = resolve_cv_folds(cv_dir, args.folds)
    kinds = set(getattr(args, "rows", None) or ROW_KINDS)
    _check_ablation_options(args, kinds)
    for k in range(args.folds):
        fold_checkpoint(cv_dir, k, which)
        if getattr(args, "benchmark_dir", None):
            fold_predictions(cv_dir, k, which)
    settings = cv_settings(cv_dir)
    datalist = build_datalist(settings.get("layout", "ct-ich"), args.dataset_dir)
    parts = {k: fold_datalists(datalist, n_folds=args.folds, fold=k, seed=seed, val_fraction=val_fraction)
             for k in range(args.folds)}
    tests = {k: v["test"] for k, v in parts.items()}
    if kinds & {"cam", "cam_kmeans", "prior", "prior_filtered"}:
        _check_heatmaps(args, [e for k in range(args.folds) for e in tests[k]])
    choices = heatmap_chosen = None
    if getattr(args, "benchmark_dir", None) and kinds & {"prior", "prior_filtered"}:
        choices = prior_choices(args.benchmark_dir, args.folds)
    if getattr(args, "benchmark_dir", None) and "heatmap" in kinds:
        heatmap_chosen = heatmap_choices(args.benchmark_dir, args.folds, args.method)
    benchmark_hu_reference(getattr(args, "benchmark_dir", None))  # its config.json is read (checked) before any file
    check_checkpoint_marker(out, cv_dir, which, "pseudo-labels")
    per_row: dict[str, dict[str, float]] = {}
    diagnostics: dict[str, dict[str, float]] = {}
    pseudo_lists = {}
    for mode, row in (("cam", ROWS[0]), ("cam_kmeans", ROWS[1])):
        if mode not in kinds:
            continue
        entries = []
        for k in range(args.folds):
            net = _fold_network(cv_dir, k, settings, which)
            with torch.no_grad():
                entries += make_pseudo_labels(
                    net, tests[k], args.cam_dir, out / "pseudo" / mode, args.method, args.layer, mode=mode,
                    threshold=args.threshold, prob_threshold=args.prob_threshold,
                    windows=tuple(settings.get("windows", ["brain", "subdural", "blood"])),
                    num_slices=settings.get("num_slices", 3), spatial_size=tuple(settings.get("spatial_size", [256, 256])),
                    skull_strip=bool(settings.get("skull_strip", False)), seed=seed, progress=False)
            print(f"pseudo-labels {mode}: fold {k} done", flush=True)
        per_row[row], diagnostics[row] = _scores(evaluate_pseudo_labels(entries))
        pseudo_lists[mode] = out / "pseudo" / mode / "datalist.json"
    prior_text = ""
    if getattr(args, "benchmark_dir", None) and "prior" in kinds:
        used = ", ".join(f"`{t}`" for t in sorted({choices[k].text for k in range(args.folds)}))
        entries = _prior_pseudo_labels(args, tests, settings, out, choices)
        per_row[PRIOR_ROWS[0]], diagnostics[PRIOR_ROWS[0]] = _scores(evaluate_pseudo_labels(entries))
        pseudo_lists["prior"] = out / "pseudo" / "prior" / "datalist.json"
        prior_text = (f" Prior row: voxels in the hyperdense-blood range inside the eroded brain on the same slices, no "
                      f"heatmap, with the post-processing the benchmark's selection patients chose per fold ({used}).")
        print("pseudo-labels prior: done", flush=True)
    if getattr(args, "benchmark_dir", None) and "prior_filtered" in kinds:
        filtered = _filtered_prior_pseudo_labels(args, parts, settings, out, choices)
        if filtered is not None:
            per_row[FILTER_ROWS[0]], diagnostics[FILTER_ROWS[0]] = _scores(evaluate_pseudo_labels(filtered))
            pseudo_lists["prior_filtered"] = out / "pseudo" / "prior_filtered" / "datalist.json"
            prior_text += (" Component-filter row: the prior's components scored by a classifier trained per fold on "
                           "the slice labels (no masks) of the fold's other patients; those under 0.5 dropped.")
            print("pseudo-labels prior + component filter: done", flush=True)
    if getattr(args, "benchmark_dir", None) and "heatmap" in kinds:
        chosen = heatmap_chosen
        if chosen is not None:
            entries = _heatmap_pseudo_labels(args, tests, settings, out, chosen)
            per_row[HEATMAP_ROWS[0]], diagnostics[HEATMAP_ROWS[0]] = _scores(evaluate_pseudo_labels(entries))
            pseudo_lists["heatmap"] = out / "pseudo" / "heatmap" / "datalist.json"
            used = "; ".join(f"fold {k}: `{c['layer']}` `{c['spec'].text}`"
                             + ("" if c["value"] is None else f" at {c['value']:g}") for k, c in sorted(chosen.items()))
            prior_text += (f" Heatmap row: {args.method} with the layer, threshold and post-processing the benchmark's "
                           f"selection patients chose per fold ({used}), on the same slices.")
            print("pseudo-labels heatmap recipe: done", flush=True)
    unet_folds = list(range(args.folds)) if args.unet_folds is None else list(args.unet_folds)
    runs = [(m, row, str(pseudo_lists[m])) for m, row in (("cam", ROWS[2]), ("cam_kmeans", ROWS[3])) if m in pseudo_lists]
    if "prior" in pseudo_lists:
        runs.append(("prior", PRIOR_ROWS[1], str(pseudo_lists["prior"])))
    if "prior_filtered" in pseudo_lists:
        runs.append(("prior_filtered", FILTER_ROWS[1], str(pseudo_lists["prior_filtered"])))
    if "heatmap" in pseudo_lists:
        runs.append(("heatmap", HEATMAP_ROWS[1], str(pseudo_lists["heatmap"])))
    if "true" in kinds:
        runs.append(("true", ROWS[4], None))
    # the weakly supervised U-Nets are also scored gated by the classifier's out-of-fold slice calls, when its
    # predictions of every U-Net fold are there (train-cv writes them)
    gate = bool(unet_folds) and all(_has_predictions(cv_dir, k, which) for k in unet_folds)
    for name, row, datalist_file in runs:
        seg_out = out / f"unet_{name}"
        if unet_folds:
            gated = gate and datalist_file is not None
            run_seg_cv(argparse.Namespace(dataset_dir=args.dataset_dir, datalist=datalist_file, eval_datalist=None,
                                          out=str(seg_out), folds=args.folds, only=unet_folds, bundle="ich_unet3d",
                                          cache_dir=args.cache_dir, set=list(args.set),
                                          gate_cv_dir=str(cv_dir) if gated else None, gate_checkpoint=which,
                                          gate_threshold=args.prob_threshold))
            per_row[row] = read_seg_metrics([seg_out / f"fold{k}" / "metrics_test.csv" for k in unet_folds])
            if gated:
                per_row[row + GATED] = read_seg_metrics([seg_out / f"fold{k}" / "metrics_test_gated.csv"
                                                         for k in unet_folds])
    held = {e["patient"] for k in unet_folds for e in tests[k]}
    pseudo_rows = [r for r in ORDER if r in per_row and "U-Net" not in r]
    all_rows = ablation_rows({r: per_row[r] for r in pseudo_rows})
    same = ablation_rows({r: {p: v for p, v in per_row[r].items() if p in held} for r in ORDER if r in per_row})
    text = (
        "# Weakly supervised segmentation: the ablation of Ramananda & Sundaresan 2023 on cross-validated classifiers\n\n"
        f"Pseudo-labels: {args.method} at `{args.layer}` > {args.threshold} (min-max per slice) on the slices "
        f"the out-of-fold classifier calls positive (p >= {args.prob_threshold}); volume Dice against the true "
        "masks on ground-truth-positive patients. Tests: paired t-test and Wilcoxon against the previous row; "
        f"CI: bootstrap of the mean over patients.{prior_text}"
        + (f" Rows \"{GATED[2:]}\": the U-Net's predictions kept only on the slices the out-of-fold classifier "
           f"calls positive (p >= {args.prob_threshold}), as its training labels were." if gate else "") + "\n\n"
        f"## Pseudo-labels, every positive patient ({args.folds} folds)\n\n" + ablation_markdown(all_rows)
        + "\nWhere the pseudo-labels lose Dice (means over the same patients; precision over patients with any "
        "pseudo-label):\n\n" + _diagnostics_markdown({r: diagnostics[r] for r in pseudo_rows})
        + (f"\n## All rows, positive test patients of the U-Net folds {unet_folds}\n\n" + ablation_markdown(same)
           if unet_folds else "")
    )
    atomic_write_text(out / "ablation.md", text)
    atomic_write_text(out / "ablation.json", json.dumps({"rows": per_row, "pseudo_label_diagnostics": diagnostics,
                                                         "unet_folds": unet_folds}, indent=1) + "\n")
    print(text)
    return 0


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
        raise HemwslInputError(f"--folds must be >= 2 (each fold tests on patients the others train on), got {args.folds}")
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
    from hemwsl.engines.runs import cv_settings
    from hemwsl.commands.benchmark import run_benchmark
    from hemwsl.engines.cv import cam_cv, parse_overrides, train_cv

    from hemwsl.data.io import check_run_record

    out = Path(args.out)
    cv = out / "classifier"
    which = getattr(args, "checkpoint", "best")
    layer = _check_pipeline_options(args)
    from hemwsl.data.datalist import resolve_dataset_dir

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
    from hemwsl.constants import BENCHMARK_THRESHOLDS

    run_benchmark(argparse.Namespace(dataset_dir=args.dataset_dir, datalist=None, layout="ct-ich",
                                     cam_dir=str(out / "cam"), out=str(out / "benchmark"), methods=None, layers=None,
                                     thresholds=list(BENCHMARK_THRESHOLDS), split=None, folds=args.folds,
                                     seed=cv_settings(cv).get("seed", 0), val_fraction=cv_settings(cv).get("val_fraction", 0.15),
                                     select="rest", slices="gt", cv_dir=str(cv), predictions=[], prob_threshold=0.5,
                                     distance_metrics=False, n_boot=1000, no_figures=False,
                                     hu_range=[[45.0, 90.0], [50.0, 90.0]], brain_erosion=[0, 4], min_size=[0, 50], grow=[0],
                                     select_metric=None, checkpoint=which))
    return run_ablation(argparse.Namespace(dataset_dir=args.dataset_dir, cv_dir=str(cv), cam_dir=str(out / "cam"),
                                           out=str(out / "ablation"), folds=args.folds, unet_folds=args.unet_folds,
                                           method="gradcam", layer=layer, threshold=0.7, prob_threshold=0.5,
                                           cache_dir=args.cache_dir, set=args.unet_set,
                                           benchmark_dir=str(out / "benchmark"), checkpoint=which))
