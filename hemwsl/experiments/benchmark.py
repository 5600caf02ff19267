"""The validated CAM benchmark of cross-validated heatmaps, as library code (``hemwsl benchmark`` parses its
arguments into a :class:`BenchmarkConfig` and calls :func:`run_benchmark_experiment`; so does ``hemwsl pipeline``).

:func:`run_benchmark_experiment` checks the settings, checks that the heatmaps were made from the train-cv run whose
predictions score them (:func:`check_made_from_run`), reads the dataset, makes the folds (those of the train-cv
run, or a split file) and reads the out-of-fold predictions, then runs :func:`hemwsl.benchmark.run_benchmark` (the
protocol, the report folder, the resume and the refusal of a folder made with other settings).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from hemwsl.benchmark.runner import check_benchmark_checkpoint  # noqa: F401  (re-exported)
from hemwsl.constants import BENCHMARK_THRESHOLDS

__all__ = ["BenchmarkConfig", "run_benchmark_experiment", "check_made_from_run", "check_benchmark_checkpoint"]


@dataclass(frozen=True)
class BenchmarkConfig:
    """The settings of one benchmark report: ``hemwsl benchmark``'s options (same names, ``figures`` for
    ``--no-figures``) with its defaults.

    Attributes:
        cam_dir: heatmaps ``<method>/<layer>/<patient>.nii.gz`` (e.g. from cam-cv).
        out: the report folder.
        dataset_dir: dataset root with masks (layout ``layout``); or ``datalist``, a datalist JSON (one of the two).
        methods, layers: only these (default: all found).
        thresholds: threshold specs (:mod:`hemwsl.benchmark.specs`).
        split: a ``hemwsl split`` JSON: choose on its val patients, score its test patients (default: CV folds).
        folds, seed, val_fraction: the CV folds (default: the ``cv_dir`` run's, else 5, 0, 0.15).
        select: the selection patients of a fold: ``rest`` or ``val``.
        slices: scored slices: ``gt``, ``predicted`` or ``all``.
        cv_dir: a train-cv folder: its out-of-fold predictions (of ``checkpoint``) and folds.
        predictions: prediction CSVs (instead of, or besides, ``cv_dir``'s).
        checkpoint: ``best`` or ``last``: which predictions of ``cv_dir``.
        prob_threshold: a slice is called positive at this probability.
        hu_range: hyperdense-blood ranges of the prior specs, ``(low, high)`` pairs (default: 45-90 HU).
        brain_erosion, min_size, grow, min_share: post-processing values; several: chosen per fold on the selection
            patients.
        hu_reference: brain HU each scan is shifted to (one value, or a band of two); ``None``: as stored.
        candidates: thresholds ``search`` chooses from, each in [0, 1) (default: 0.05 to 0.95 by 0.05).
        select_metric: ``dice`` or ``global_dice`` (default: by ``slices``).
        distance_metrics: also HD95 and surface Dice per volume.
        n_boot: bootstrap replicates of the 95% CIs (at least 10).
        figures: write the figures.
    """

    cam_dir: str | os.PathLike
    out: str | os.PathLike
    dataset_dir: str | os.PathLike | None = None
    datalist: str | os.PathLike | None = None
    layout: str = "ct-ich"
    methods: tuple[str, ...] | None = None
    layers: tuple[str, ...] | None = None
    thresholds: tuple[str, ...] = BENCHMARK_THRESHOLDS
    split: str | os.PathLike | None = None
    folds: int | None = None
    seed: int | None = None
    val_fraction: float | None = None
    select: str = "rest"
    slices: str = "gt"
    cv_dir: str | os.PathLike | None = None
    predictions: tuple[str | os.PathLike, ...] = ()
    checkpoint: str = "best"
    prob_threshold: float = 0.5
    hu_range: tuple[tuple[float, float], ...] | None = None
    brain_erosion: tuple[int, ...] = (0,)
    min_size: tuple[int, ...] = (0,)
    grow: tuple[int, ...] = (0,)
    min_share: tuple[float, ...] = (0.0,)
    hu_reference: float | tuple[float, ...] | None = None
    candidates: tuple[float, ...] | None = None
    select_metric: str | None = None
    distance_metrics: bool = False
    n_boot: int = 1000
    figures: bool = True


def _same_weights(a: Path, b: Path, which: str) -> bool | None:
    """Whether fold 0's ``which`` checkpoint is the same file content in runs ``a`` and ``b`` (``None``: one of them
    is missing, nothing to compare)."""
    from hemwsl.data.io import file_sha1
    from hemwsl.engines.runs import checkpoint_file

    fa, fb = (Path(checkpoint_file(r / "fold0" / "models", which)) for r in (a, b))
    if not (fa.is_file() and fb.is_file()):
        return None
    return fa.stat().st_size == fb.stat().st_size and file_sha1(fa) == file_sha1(fb)


def check_made_from_run(folder: str | Path, cv_dir: str | Path, which: str = "best", what: str = "heatmaps",
                        option: str = "--cam-dir") -> None:
    """``folder`` (e.g. a ``--cam-dir``) holds outputs of the train-cv run ``cv_dir`` with checkpoint ``which``, as
    its ``cam_checkpoint.json`` (written by :func:`check_checkpoint_marker`) records: outputs of another run (other
    settings or folds, other weights, another checkpoint) scored with this run's predictions would be wrong without
    any error. One line naming both runs; a folder without the record (made by a bundle, or by hand) is not checked.
    A run that was moved or copied (another path, the same settings and weights) is accepted."""
    from hemwsl.data.io import read_json_file, record_value
    from hemwsl.engines.runs import check_recorded_settings, cv_settings, resolve_cv_folds
    from hemwsl.errors import HemwslInputError

    marker = Path(folder) / "cam_checkpoint.json"
    if not (marker.exists() or marker.is_symlink()):
        return
    rec = read_json_file(marker, f"record of the run that made the {what}")
    seen = rec.get("checkpoint", "best")
    if seen != which:
        raise HemwslInputError(f"{option} {folder}: {what} of the {seen} checkpoints ({marker}), not of --checkpoint "
                               f"{which}")
    if "members" in rec:  # a `hemwsl cam-ensemble` folder: the folds of any member's run are the ensemble's
        members = record_value(rec, "members", marker, "list")
        runs = [m.get("cv_dir") for m in members if isinstance(m, dict)]
        mine = Path(cv_dir).resolve()
        if not any(isinstance(r, str) and (Path(r) == mine or _same_weights(Path(r), mine, which)) for r in runs):
            raise HemwslInputError(f"{option} {folder}: {what} of an ensemble of the train-cv runs "
                                   f"{', '.join(map(str, runs))} ({marker}), not of --cv-dir {cv_dir}; "
                                   "give one of them")
        return
    diffs: list[str] = []
    made, mine = rec.get("cv_dir"), Path(cv_dir).resolve()
    if made is not None and not isinstance(made, str):
        raise HemwslInputError(f"{marker}: cv_dir must be the path of a train-cv run, got {made!r}")
    if made and Path(made) != mine:
        if rec.get("settings") is not None:
            record_value(rec, "settings", marker, "dict")
            record_value(rec["settings"], "folds", f"{marker}: settings", "int", default=None, minimum=2)
            from hemwsl.engines.bundle import SETTING_KEYS, resolve_bundle_settings

            theirs = check_recorded_settings({k: v for k, v in rec["settings"].items() if k not in ("grid", "folds")},
                                             f"{marker}: settings")
            a, b = resolve_bundle_settings(theirs), resolve_bundle_settings(cv_settings(mine))
            diffs += [f"{k} {json.dumps(a[k])} -> {json.dumps(b[k])}" for k in SETTING_KEYS
                      if k != "n_folds" and a.get(k) != b.get(k)]
            if "folds" in rec["settings"] and (mine / "cv_run.json").is_file():
                folds = resolve_cv_folds(mine)[0]
                if int(rec["settings"]["folds"]) != folds:
                    diffs.append(f"folds {rec['settings']['folds']} -> {folds}")
        if not diffs and _same_weights(Path(made), mine, which) is False:
            diffs.append(f"fold 0's {which} weights differ")
    if diffs:
        raise HemwslInputError(f"{option} {folder}: {what} made from the train-cv run {made} ({marker}), not from "
                               f"--cv-dir {cv_dir} ({'; '.join(diffs[:4])}); give the run they were made from")


def _predictions(files: list[str]):
    """The slice predictions of ``files`` (``read_predictions_csv``), concatenated; ``None`` without files."""
    import numpy as np

    from hemwsl.engines.runs import read_predictions_csv
    from hemwsl.errors import HemwslInputError

    parts = []
    for f in files:
        if not Path(f).is_file():
            raise HemwslInputError(f"{f}: predictions CSV not found")
        parts.append(read_predictions_csv(f))
    if not parts:
        return None
    return {k: np.concatenate([p[k] for p in parts]) for k in ("patient", "slice", "label", "prob")}


def _values(value):
    """A config's sequence as the list the runner records (``None`` stays ``None``)."""
    return None if value is None else list(value)


def run_benchmark_experiment(config: BenchmarkConfig) -> Path:
    """Score the heatmaps of ``config.cam_dir`` against the masks on every fold's test patients, with every choice
    made on the fold's selection patients, and write the report folder ``config.out`` (``hemwsl benchmark``). Prints
    the summary's first part and returns the report folder. Every setting is checked first; each bad input is one
    line (:class:`~hemwsl.errors.HemwslInputError`)."""
    from hemwsl.benchmark import cv_folds, run_benchmark, split_folds
    from hemwsl.data.datalist import build_datalist, load_datalist
    from hemwsl.data.splits import load_split
    from hemwsl.engines.runs import fold_predictions, resolve_cv_folds
    from hemwsl.errors import HemwslInputError
    from hemwsl.metrics.classification import check_n_boot
    from hemwsl.thresholds.intensity import check_hu_reference

    c = config
    if (c.dataset_dir is None) == (c.datalist is None):  # the command line's two exclusive options
        raise HemwslInputError("give one of --dataset-dir (a dataset with masks) and --datalist (a datalist JSON)")
    check_n_boot(c.n_boot)
    hu_reference = check_hu_reference(_values(c.hu_reference) if isinstance(c.hu_reference, tuple)
                                      else c.hu_reference, "--hu-reference")
    if not 0.0 <= c.prob_threshold <= 1.0:
        raise HemwslInputError(f"--prob-threshold must be a probability in [0, 1], got {c.prob_threshold}")
    candidates = _values(c.candidates)
    if candidates is not None:
        bad = [v for v in candidates if not 0.0 <= v < 1.0]
        if bad or len(set(candidates)) != len(candidates):
            raise HemwslInputError(f"--candidates must be distinct values in [0, 1) (thresholds of the min-max "
                                   f"normalised heatmap), got {candidates}")
        candidates = sorted(candidates)
    if c.cv_dir:  # heatmaps of another run (or checkpoint) than the predictions they are scored with
        check_made_from_run(c.cam_dir, c.cv_dir, c.checkpoint)
    datalist = load_datalist(c.datalist) if c.datalist else build_datalist(c.layout, c.dataset_dir)
    n_folds, seed, val_fraction = resolve_cv_folds(c.cv_dir, c.folds, c.seed, c.val_fraction)
    if c.split:
        folds = split_folds(load_split(c.split))
    else:
        folds = cv_folds(datalist, n_folds=n_folds, seed=seed, val_fraction=val_fraction, select=c.select)
    files = [str(f) for f in c.predictions]
    if c.cv_dir:
        files += [str(fold_predictions(c.cv_dir, k, c.checkpoint)) for k in range(n_folds)]
    predictions = _predictions(files)
    if c.slices == "predicted":  # every scored patient's slice calls, before the first patient is scored
        if predictions is None:
            raise HemwslInputError("--slices predicted scores the slices the classifier calls positive: give --cv-dir "
                                   "or --predictions")
        scored = set(folds[0]) | {p for sel in folds[1].values() for p in sel}
        missing = sorted(scored - {str(p) for p in predictions["patient"]})
        if missing:
            raise HemwslInputError(f"{'--predictions' if c.predictions else '--cv-dir'} {', '.join(files[:2])}"
                                   f"{' ...' if len(files) > 2 else ''}: no slice probabilities of patient(s) "
                                   f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} (--slices predicted "
                                   "scores the slices they call)")
    hu_range = [list(r) for r in c.hu_range] if c.hu_range else [45.0, 90.0]
    out = run_benchmark(datalist, c.cam_dir, c.out, methods=_values(c.methods), layers=_values(c.layers),
                        thresholds=list(c.thresholds), folds=folds, slices=c.slices, predictions=predictions,
                        prob_threshold=c.prob_threshold, distance_metrics=c.distance_metrics, n_boot=c.n_boot,
                        figures=c.figures, hu_range=hu_range, brain_erosion=_values(c.brain_erosion),
                        min_size=_values(c.min_size), grow=_values(c.grow), min_share=_values(c.min_share),
                        hu_reference=hu_reference,
                        select_metric=c.select_metric, **({} if candidates is None else {"candidates": candidates}))
    print((Path(out) / "summary.md").read_text().split("\n## Threshold")[0])
    return Path(out)
