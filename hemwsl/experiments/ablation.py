"""Ramananda & Sundaresan 2023's ablation on cross-validated classifiers, as library code (``hemwsl ablation``
parses its arguments into an :class:`AblationConfig` and calls :func:`run_ablation_experiment`; so does
``hemwsl pipeline``).

Pseudo-labels (CAM only; CAM + K-means; and, given a benchmark report, the hyperdense-blood prior with the
post-processing each fold's selection patients chose there, that prior with its components filtered by a classifier
trained on the other patients' slice labels, and the heatmap recipe the benchmark validated) of every patient from
its out-of-fold heatmap and classifier, 3D U-Nets (``bundles/ich_unet3d``,
:func:`hemwsl.experiments.segmentation.seg_cv`) trained on each kind of pseudo-label and on the true masks, and the
ablation table with paired tests between consecutive rows (``ablation.md``, ``ablation.json``).

The U-Net of fold ``k`` trains on the pseudo-labels of fold ``k``'s training patients; those were made with heatmaps
of other folds' classifiers, which saw the slice labels (never the masks) of fold ``k``'s test patients. Masks of
test patients are used only to score.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ROWS", "PRIOR_ROWS", "FILTER_ROWS", "HEATMAP_ROWS", "GATED", "ORDER", "ROW_KINDS", "AblationConfig",
           "run_ablation_experiment", "prior_choices", "heatmap_choices", "benchmark_hu_reference"]

ROWS = ("CAM only", "CAM + K-means", "CAM + U-Net", "CAM + K-means + U-Net", "fully supervised U-Net")
PRIOR_ROWS = ("HU prior (no CAM), validated post-processing", "HU prior + U-Net")
#: The prior's components filtered by a classifier trained on slice labels only (hemwsl.pseudo.components).
FILTER_ROWS = ("HU prior + component filter (slice labels)", "HU prior + component filter + U-Net")
#: The heatmap row the benchmark validated for ``method`` (e.g. ``priorcomp+search``: the prior's components the
#: heatmap touches), with each fold's chosen layer, threshold and post-processing.
HEATMAP_ROWS = ("heatmap, validated benchmark recipe", "heatmap, validated benchmark recipe + U-Net")
GATED = ", gated by the classifier"  # suffix of a U-Net row whose predictions are kept on classifier-positive slices
#: Table order of every row (rows that were not run are left out); each gated row follows its U-Net row.
ORDER = (ROWS[0], ROWS[1], PRIOR_ROWS[0], FILTER_ROWS[0], HEATMAP_ROWS[0], ROWS[2], ROWS[2] + GATED, ROWS[3],
         ROWS[3] + GATED, PRIOR_ROWS[1], PRIOR_ROWS[1] + GATED, FILTER_ROWS[1], FILTER_ROWS[1] + GATED,
         HEATMAP_ROWS[1], HEATMAP_ROWS[1] + GATED, ROWS[4])

#: The row kinds of ``hemwsl ablation --rows`` (:attr:`AblationConfig.rows`).
ROW_KINDS = ("cam", "cam_kmeans", "prior", "prior_filtered", "heatmap", "true")


@dataclass(frozen=True)
class AblationConfig:
    """The settings of one ablation run: ``hemwsl ablation``'s options (same names; ``overrides`` for ``--set``)
    with its defaults. Nothing is checked here: :func:`run_ablation_experiment` checks every value, before the first
    file is written, with the command's one-line messages.

    Attributes:
        dataset_dir: dataset root (CT-ICH layout) with the true masks.
        cv_dir: train-cv folder (``fold<k>/models/model.pt``, ``cv_settings.json``).
        cam_dir: out-of-fold heatmaps (from cam-cv).
        out: output folder (``pseudo/``, ``unet_*/``, ``ablation.md``).
        layer: CAM layer of the pseudo-labels (e.g. the benchmark's best).
        folds: folds of the train-cv run (default: as it recorded).
        unet_folds: folds the U-Net rows are trained on (default: all; empty: no U-Net).
        method: CAM method of the pseudo-labels.
        threshold: CAM threshold on min-max maps, in [0, 1).
        prob_threshold: slices are labelled from this probability of the out-of-fold classifier.
        cache_dir: disk cache of the U-Net's preprocessed volumes.
        overrides: U-Net bundle settings: a mapping, or ``KEY=VALUE`` strings as ``--set`` takes them.
        checkpoint: classifier weights of each fold: ``best`` or ``last``.
        rows: pseudo-label rows to make (and their U-Nets), of :data:`ROW_KINDS`; ``prior``, ``prior_filtered`` and
            ``heatmap`` need ``benchmark_dir``; ``true`` is the fully supervised U-Net.
        benchmark_dir: a ``hemwsl benchmark`` report of the same folds (its per-fold choices).
        predictions: one predictions CSV with every patient's out-of-fold slice probabilities (e.g. the members'
            mean that ``hemwsl cam-ensemble`` writes), for the slice calls of the prior and heatmap rows instead of
            the ``cv_dir`` run's ``fold<k>/predictions_test[_last].csv``; not with U-Net folds (their gate takes the
            run's calls).
    """

    dataset_dir: str | os.PathLike
    cv_dir: str | os.PathLike
    cam_dir: str | os.PathLike
    out: str | os.PathLike
    layer: str
    folds: int | None = None
    unet_folds: tuple[int, ...] | None = None
    method: str = "gradcam"
    threshold: float = 0.7
    prob_threshold: float = 0.5
    cache_dir: str | os.PathLike | None = None
    overrides: Mapping[str, Any] | Sequence[str] = ()
    checkpoint: str = "best"
    rows: tuple[str, ...] = ROW_KINDS
    benchmark_dir: str | os.PathLike | None = None
    predictions: str | os.PathLike | None = None


def _fold_network(cv_dir: Path, k: int, settings: dict, which: str = "best"):
    from hemwsl.engines.classifier import load_weights
    from hemwsl.engines.runs import fold_checkpoint
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
    from hemwsl.benchmark.runner import benchmark_share_grid, check_spec_in_grid

    grid = benchmark_share_grid(benchmark_dir)  # each fold's chosen share is one the report validated
    for k, spec in chosen.items():
        check_spec_in_grid(spec, grid, f"{f}: fold {k} (prior)")
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


def _prior_kwargs(config: AblationConfig, settings: dict, k: int, spec) -> dict:
    """The :func:`~hemwsl.pseudo.make_pseudo_labels` arguments of fold ``k``'s prior rows: the HU prior with the
    post-processing ``spec`` the fold's selection patients chose (and the benchmark's HU calibration), on the
    out-of-fold classifier's positive slices (``settings``: a
    :class:`~hemwsl.pseudo.PseudoLabelSettings`; ``inputs``: the run's input settings, skull stripped)."""
    from hemwsl.data.settings import InputSettings
    from hemwsl.engines.runs import fold_predictions
    from hemwsl.pseudo import PseudoLabelSettings
    from hemwsl.thresholds import IntensityPrior

    prior = IntensityPrior(hu_range=spec.hu_range, cam=None, min_size=spec.min_size, grow=spec.grow,
                           min_share=spec.min_share)
    return dict(settings=PseudoLabelSettings(mode="cam", threshold=prior, prob_threshold=config.prob_threshold,
                                             brain_erosion=spec.erosion,
                                             hu_reference=benchmark_hu_reference(config.benchmark_dir)),
                inputs=dataclasses.replace(InputSettings.from_settings(settings), skull_strip=True),
                predictions_csv=str(config.predictions or fold_predictions(config.cv_dir, k, config.checkpoint)),
                progress=False)


def _prior_pseudo_labels(config: AblationConfig, tests: dict, settings: dict, out: Path, choices: dict) -> list:
    """Pseudo-labels of the prior row, fold by fold (each with its fold's chosen post-processing ``choices``)."""
    from hemwsl.data.datalist import save_datalist
    from hemwsl.pseudo import make_pseudo_labels

    entries = []
    for k in range(config.folds):
        entries += make_pseudo_labels(None, tests[k], config.cam_dir, out / "pseudo" / "prior" / f"fold{k}",
                                      config.method, config.layer, **_prior_kwargs(config, settings, k, choices[k]))
    save_datalist(entries, out / "pseudo" / "prior" / "datalist.json")
    return entries


def _filtered_prior_pseudo_labels(config: AblationConfig, parts: dict, settings: dict, out: Path,
                                  choices: dict) -> list | None:
    """Pseudo-labels of the prior row with its components filtered (:mod:`hemwsl.pseudo.components`): per fold,
    the filter is trained on the slice labels of the fold's training and validation patients, with the fold's
    chosen post-processing. ``None`` (row left out) when those patients' components all lie on slices of one
    label."""
    import re

    from hemwsl.data.datalist import save_datalist
    from hemwsl.pseudo import component_filter_at, make_pseudo_labels
    from hemwsl.pseudo.components import OneClassError
    from hemwsl.thresholds.intensity import hu_reference_text

    root = out / "pseudo" / "prior_filtered"
    entries = []
    for k in range(config.folds):
        spec, kw = choices[k], _prior_kwargs(config, settings, k, choices[k])
        ref = kw["settings"].hu_reference
        cal = "" if ref is None else f"_cal{hu_reference_text(ref)}"
        try:  # features are cached per post-processing, so the folds share them
            flt = component_filter_at(
                root / "component_filter" / f"fold{k}.pkl", parts[k]["train"] + parts[k]["val"], config.cam_dir,
                config.method, config.layer, kw["settings"].threshold, skull_strip=True, brain_erosion=spec.erosion,
                progress=False, hu_reference=ref,
                cache_dir=root / "component_filter" / "features" / re.sub(r"[^A-Za-z0-9.-]+", "_", spec.text + cal))
        except OneClassError as err:
            print(f"component filter of fold {k}: {err}; row left out", flush=True)
            return None
        entries += make_pseudo_labels(
            None, parts[k]["test"], config.cam_dir, root / f"fold{k}", config.method, config.layer, **kw,
            component_filter=flt,
            component_filter_rule="on the slice labels of the fold's training and validation patients")
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


def _heatmap_pseudo_labels(config: AblationConfig, tests: dict, settings: dict, out: Path, chosen: dict) -> list:
    """Pseudo-labels of the heatmap row: fold by fold, ``method``'s heatmap at the fold's chosen layer with the
    threshold, value and post-processing its selection patients chose in the benchmark, on the out-of-fold
    classifier's positive slices."""
    from hemwsl.data.datalist import save_datalist
    from hemwsl.pseudo import make_pseudo_labels

    entries = []
    for k in range(config.folds):
        c = chosen[k]
        kw = _prior_kwargs(config, settings, k, c["spec"])
        kw["settings"] = dataclasses.replace(kw["settings"], threshold=c["spec"].strategy(c["value"], per_sample=False))
        entries += make_pseudo_labels(None, tests[k], config.cam_dir, out / "pseudo" / "heatmap" / f"fold{k}",
                                      config.method, c["layer"], **kw)
    save_datalist(entries, out / "pseudo" / "heatmap" / "datalist.json")
    return entries


def _scores(evaluation: dict) -> tuple[dict, dict]:
    """Per-patient Dice and mean diagnostics of :func:`hemwsl.pseudo.evaluate_pseudo_labels`."""
    return evaluation["per_patient"], evaluation["diagnostics"]["mean"]


def _diagnostics_markdown(diagnostics: dict[str, dict[str, float]]) -> str:
    lines = ["| row | precision | recall | blood on labelled slices |", "|---|---|---|---|"]
    lines += [f"| {r} | {d['precision']:.3f} | {d['recall']:.3f} | {d['slice_recall']:.3f} |"
              for r, d in diagnostics.items()]
    return "\n".join(lines) + "\n"


def _check_ablation_options(config: AblationConfig, kinds: set) -> None:
    """The options of ``hemwsl ablation`` that need no file: rows, U-Net folds and U-Net settings, thresholds."""
    from hemwsl.engines.bundle import check_bundle_settings
    from hemwsl.engines.cv import check_cache_dir, check_override_keys
    from hemwsl.errors import HemwslInputError, check_choice
    from hemwsl.experiments.segmentation import bundle_overrides

    unknown = sorted(kinds - set(ROW_KINDS))  # the command line's choices, for callers from Python
    if unknown:
        raise HemwslInputError(f"--rows: unknown row kind(s) {unknown}; accepted: {', '.join(ROW_KINDS)}")
    check_choice("checkpoint", config.checkpoint, ("best", "last"))
    if kinds & {"prior", "prior_filtered", "heatmap"} and not config.benchmark_dir:
        raise HemwslInputError("--rows prior, prior_filtered and heatmap need --benchmark-dir "
                               "(the benchmark's choices)")
    bad = [k for k in (config.unet_folds or []) if not 0 <= k < config.folds]
    if bad:
        raise HemwslInputError(f"--unet-folds: fold(s) {bad} not in [0, {config.folds - 1}] (the train-cv run has "
                               f"{config.folds} folds)")
    if not 0.0 <= config.threshold < 1.0:
        raise HemwslInputError(f"--threshold must be in [0, 1) (a fraction of the per-slice min-max map), "
                               f"got {config.threshold}")
    if not 0.0 <= config.prob_threshold <= 1.0:
        raise HemwslInputError(f"--prob-threshold must be a probability in [0, 1], got {config.prob_threshold}")
    overrides = bundle_overrides(config.overrides)
    check_override_keys(overrides, "ich_unet3d")
    check_bundle_settings("ich_unet3d", overrides)  # the U-Net's values too, before any pseudo-label is made
    check_cache_dir(config.cache_dir)
    if config.predictions is not None:
        if config.unet_folds is None or config.unet_folds:
            raise HemwslInputError("--predictions: for the pseudo-label rows only; give --unet-folds without folds "
                                   "(a U-Net's gate takes the --cv-dir run's slice calls)")
        if kinds & {"cam", "cam_kmeans"}:
            raise HemwslInputError("--predictions: for the prior, prior_filtered and heatmap rows (--rows); the cam "
                                   "rows label slices with the fold's classifier")


def _check_predictions(path, entries: list) -> None:
    """The ``--predictions`` CSV gives a probability for every slice of every patient it will label."""
    from hemwsl.errors import HemwslInputError
    from hemwsl.pseudo.volume import _entry_stem
    from hemwsl.quantify import check_slice_coverage, read_scan_probabilities

    if not Path(path).is_file():
        raise HemwslInputError(f"--predictions {path}: not found")
    # its columns, probabilities in [0, 1] and each slice once (read_predictions_csv), then every slice of each scan
    _, slice_index, source = read_scan_probabilities(path, labels=False)
    have = set(slice_index)
    missing = sorted({_entry_stem(e) for e in entries} - have)
    if missing:
        raise HemwslInputError(f"--predictions {path}: no slice probabilities of patient(s) {', '.join(missing[:5])}"
                               f"{' ...' if len(missing) > 5 else ''} (it must cover every test patient)")
    check_slice_coverage({_entry_stem(e): e for e in entries}, slice_index, source)  # every slice of each scan


def _check_same_slice_calls(out: Path, predictions) -> None:
    """Pseudo-labels made on the run's slice calls and on a ``--predictions`` file never share a folder."""
    from hemwsl.data.io import read_json_file
    from hemwsl.errors import HemwslInputError

    marker = Path(out) / "cam_checkpoint.json"
    if not marker.is_file():
        return
    old = (read_json_file(marker, "record of the run that made the pseudo-labels").get("settings") or {})
    old = old.get("predictions") if isinstance(old, dict) else None
    new = None if predictions is None else str(Path(predictions).resolve())
    if old != new:
        raise HemwslInputError(f"{out}: holds pseudo-labels made on the slice calls of {old or 'the --cv-dir run'}, "
                               f"not of {new or 'the --cv-dir run'} ({marker}); use another output folder")


def _check_heatmaps(config: AblationConfig, entries: list) -> None:
    """The heatmap of every patient at ``method`` / ``layer`` (the pseudo-labels of the cam and prior rows)."""
    from hemwsl.errors import HemwslInputError
    from hemwsl.pseudo.volume import _entry_stem, _heatmap_file

    folder = Path(config.cam_dir) / config.method / config.layer
    if not folder.is_dir():
        root = Path(config.cam_dir) / config.method
        found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise HemwslInputError(f"--method {config.method} --layer {config.layer}: no heatmaps in {folder} "
                               f"(layers there: {', '.join(found) if found else 'none'})")
    for e in entries:
        _heatmap_file(config.cam_dir, _entry_stem(e), config.method, config.layer)


def run_ablation_experiment(config: AblationConfig) -> int:
    """Make the ablation's pseudo-labels, train and score the U-Nets, and write ``ablation.md`` and
    ``ablation.json`` in ``config.out`` (``hemwsl ablation``); prints the table and returns the exit status (0).

    Every input is checked before the first file is written (the options, each fold's checkpoint and predictions,
    the heatmaps, the benchmark's choices and HU calibration, the folder's record of the run that made it); each
    bad input is one line (:class:`~hemwsl.errors.HemwslInputError`). Pseudo-labels and U-Net folds are resumed.
    """
    import torch

    from hemwsl.data.datalist import build_datalist
    from hemwsl.data.io import atomic_write_text
    from hemwsl.data.settings import InputSettings
    from hemwsl.engines.classifier import fold_datalists
    from hemwsl.engines.runs import (check_checkpoint_marker, cv_settings, fold_checkpoint, fold_predictions,
                                     resolve_cv_folds)
    from hemwsl.experiments.segmentation import seg_cv
    from hemwsl.pseudo import PseudoLabelSettings, evaluate_pseudo_labels, make_pseudo_labels
    from hemwsl.reports.ablation import ablation_markdown, ablation_rows, read_seg_metrics

    cv_dir, out = Path(config.cv_dir), Path(config.out)
    which = config.checkpoint
    # every input first, before the first file is written: a bad option, a missing checkpoint, predictions file or
    # heatmap is named at once
    folds, seed, val_fraction = resolve_cv_folds(cv_dir, config.folds)
    config = dataclasses.replace(config, folds=folds)
    kinds = set(config.rows or ROW_KINDS)
    _check_ablation_options(config, kinds)
    for k in range(folds):
        fold_checkpoint(cv_dir, k, which)
        if config.benchmark_dir and config.predictions is None:
            fold_predictions(cv_dir, k, which)
    settings = cv_settings(cv_dir)
    datalist = build_datalist(settings.get("layout", "ct-ich"), config.dataset_dir)
    parts = {k: fold_datalists(datalist, n_folds=folds, fold=k, seed=seed, val_fraction=val_fraction)
             for k in range(folds)}
    tests = {k: v["test"] for k, v in parts.items()}
    if config.predictions is not None:
        _check_predictions(config.predictions, [e for k in range(folds) for e in tests[k]])
    if kinds & {"cam", "cam_kmeans", "prior", "prior_filtered"}:
        _check_heatmaps(config, [e for k in range(folds) for e in tests[k]])
    choices = heatmap_chosen = None
    if config.benchmark_dir:  # a report of this run's folds (each fold's recipe chosen on its selection patients)
        from hemwsl.benchmark.runner import check_benchmark_of_run

        check_benchmark_of_run(config.benchmark_dir, cv_dir, folds)
    if config.benchmark_dir and kinds & {"prior", "prior_filtered"}:
        choices = prior_choices(config.benchmark_dir, folds)
    if config.benchmark_dir and "heatmap" in kinds:
        heatmap_chosen = heatmap_choices(config.benchmark_dir, folds, config.method)
    benchmark_hu_reference(config.benchmark_dir)  # its config.json is read (checked) before any file
    _check_same_slice_calls(out, config.predictions)
    check_checkpoint_marker(out, cv_dir, which, "pseudo-labels", settings=None if config.predictions is None else
                            {"predictions": str(Path(config.predictions).resolve())})
    per_row: dict[str, dict[str, float]] = {}
    diagnostics: dict[str, dict[str, float]] = {}
    pseudo_lists = {}
    for mode, row in (("cam", ROWS[0]), ("cam_kmeans", ROWS[1])):
        if mode not in kinds:
            continue
        entries = []
        for k in range(folds):
            net = _fold_network(cv_dir, k, settings, which)
            with torch.no_grad():
                entries += make_pseudo_labels(
                    net, tests[k], config.cam_dir, out / "pseudo" / mode, config.method, config.layer,
                    PseudoLabelSettings(mode=mode, threshold=config.threshold, prob_threshold=config.prob_threshold,
                                        seed=seed),
                    inputs=InputSettings.from_settings(settings), progress=False)
            print(f"pseudo-labels {mode}: fold {k} done", flush=True)
        per_row[row], diagnostics[row] = _scores(evaluate_pseudo_labels(entries))
        pseudo_lists[mode] = out / "pseudo" / mode / "datalist.json"
    prior_text = ""
    if config.benchmark_dir and "prior" in kinds:
        used = ", ".join(f"`{t}`" for t in sorted({choices[k].text for k in range(folds)}))
        entries = _prior_pseudo_labels(config, tests, settings, out, choices)
        per_row[PRIOR_ROWS[0]], diagnostics[PRIOR_ROWS[0]] = _scores(evaluate_pseudo_labels(entries))
        pseudo_lists["prior"] = out / "pseudo" / "prior" / "datalist.json"
        prior_text = (" Prior row: voxels in the hyperdense-blood range inside the eroded brain on the same slices, "
                      "no heatmap, with the post-processing the benchmark's selection patients chose per fold "
                      f"({used}).")
        print("pseudo-labels prior: done", flush=True)
    if config.benchmark_dir and "prior_filtered" in kinds:
        filtered = _filtered_prior_pseudo_labels(config, parts, settings, out, choices)
        if filtered is not None:
            per_row[FILTER_ROWS[0]], diagnostics[FILTER_ROWS[0]] = _scores(evaluate_pseudo_labels(filtered))
            pseudo_lists["prior_filtered"] = out / "pseudo" / "prior_filtered" / "datalist.json"
            prior_text += (" Component-filter row: the prior's components scored by a classifier trained per fold on "
                           "the slice labels (no masks) of the fold's other patients; those under 0.5 dropped.")
            print("pseudo-labels prior + component filter: done", flush=True)
    if config.benchmark_dir and "heatmap" in kinds:
        chosen = heatmap_chosen
        if chosen is not None:
            entries = _heatmap_pseudo_labels(config, tests, settings, out, chosen)
            per_row[HEATMAP_ROWS[0]], diagnostics[HEATMAP_ROWS[0]] = _scores(evaluate_pseudo_labels(entries))
            pseudo_lists["heatmap"] = out / "pseudo" / "heatmap" / "datalist.json"
            used = "; ".join(f"fold {k}: `{c['layer']}` `{c['spec'].text}`"
                             + ("" if c["value"] is None else f" at {c['value']:g}") for k, c in sorted(chosen.items()))
            prior_text += (f" Heatmap row: {config.method} with the layer, threshold and post-processing the "
                           f"benchmark's selection patients chose per fold ({used}), on the same slices.")
            print("pseudo-labels heatmap recipe: done", flush=True)
    unet_folds = list(range(folds)) if config.unet_folds is None else list(config.unet_folds)
    runs = [(m, row, str(pseudo_lists[m])) for m, row in (("cam", ROWS[2]), ("cam_kmeans", ROWS[3]))
            if m in pseudo_lists]
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
            seg_cv(config.dataset_dir, str(seg_out), folds, config.overrides, datalist=datalist_file,
                   eval_datalist=None, only=unet_folds, bundle="ich_unet3d", cache_dir=config.cache_dir,
                   gate_cv_dir=str(cv_dir) if gated else None, gate_checkpoint=which,
                   gate_threshold=config.prob_threshold)
            per_row[row] = read_seg_metrics([seg_out / f"fold{k}" / "metrics_test.csv" for k in unet_folds])
            if gated:
                per_row[row + GATED] = read_seg_metrics([seg_out / f"fold{k}" / "metrics_test_gated.csv"
                                                         for k in unet_folds])
    held = {e["patient"] for k in unet_folds for e in tests[k]}
    pseudo_rows = [r for r in ORDER if r in per_row and "U-Net" not in r]
    all_rows = ablation_rows({r: per_row[r] for r in pseudo_rows})
    same = ablation_rows({r: {p: v for p, v in per_row[r].items() if p in held} for r in ORDER if r in per_row})
    text = (
        "# Weakly supervised segmentation: the ablation of Ramananda & Sundaresan 2023 on cross-validated "
        "classifiers\n\n"
        f"Pseudo-labels: {config.method} at `{config.layer}` > {config.threshold} (min-max per slice) on the slices "
        f"the out-of-fold classifier calls positive (p >= {config.prob_threshold}); volume Dice against the true "
        "masks on ground-truth-positive patients. Tests: paired t-test and Wilcoxon against the previous row; "
        f"CI: bootstrap of the mean over patients.{prior_text}"
        + (f" Rows \"{GATED[2:]}\": the U-Net's predictions kept only on the slices the out-of-fold classifier "
           f"calls positive (p >= {config.prob_threshold}), as its training labels were." if gate else "") + "\n\n"
        f"## Pseudo-labels, every positive patient ({folds} folds)\n\n" + ablation_markdown(all_rows)
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
