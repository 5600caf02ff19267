"""The 3D U-Net on every fold, as library code (``hemwsl seg-cv`` parses its arguments and calls :func:`seg_cv`; so
does :func:`hemwsl.experiments.ablation.run_ablation_experiment`).

Each fold runs ``bundles/ich_unet3d`` train then evaluate. A fold whose ``summary_test.json`` exists is skipped; a
fold whose training finished (``.trained``) is only evaluated, and the evaluation itself skips patients already
predicted, so an interrupted run resumes. The folds are those of the slice classifier (``hemwsl train-cv``). The
summary over every test patient goes to ``seg_cv_summary.md`` / ``seg_cv_summary.json``; a folder made with other
settings or training labels is refused (``seg_cv_run.json``).

With ``gate_cv_dir`` (a train-cv folder of the slice classifier, same folds) every finished fold is also scored
with its predictions kept only on the slices the out-of-fold classifier calls positive
(:func:`hemwsl.engines.segmentation.gate_segmentation`; no network is run): ``metrics_test_gated.csv`` per fold
and ``seg_cv_summary_gated.md``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hemwsl.engines.runs import SEG_RUN

__all__ = ["bundle_overrides", "seg_cv"]


def bundle_overrides(overrides: Mapping[str, Any] | Sequence[str] | None) -> dict:
    """Bundle settings given as a mapping, or as the ``KEY=VALUE`` strings of a ``--set`` option (values parsed as
    JSON: :func:`hemwsl.engines.cv.parse_overrides`, which names a malformed pair) -> a new dict."""
    from hemwsl.engines.cv import parse_overrides

    if isinstance(overrides, Mapping):
        return dict(overrides)
    return parse_overrides(list(overrides or []))


def _fingerprint(path: str | os.PathLike | None) -> dict | None:
    """A datalist file by path and content (sha1): pseudo-labels remade into the same file count as other input."""
    from hemwsl.data.io import file_sha1
    from hemwsl.errors import HemwslInputError

    if not path:
        return None
    p = Path(path)
    if not p.is_file():
        raise HemwslInputError(f"{p}: datalist not found")
    return {"path": str(p.resolve()), "sha1": file_sha1(p)}


def seg_cv(dataset_dir: str | os.PathLike | None, out: str | os.PathLike, folds: int = 5,
           overrides: Mapping[str, Any] | Sequence[str] | None = None, *, datalist: str | os.PathLike | None = None,
           eval_datalist: str | os.PathLike | None = None, only: Sequence[int] | None = None,
           bundle: str = "ich_unet3d", cache_dir: str | os.PathLike | None = None,
           gate_cv_dir: str | os.PathLike | None = None, gate_checkpoint: str = "best",
           gate_threshold: float = 0.5) -> int:
    """Train and evaluate the U-Net ``bundle`` on every fold of a ``folds``-fold patient-level split, in
    ``out/fold<k>``, then summarise (``hemwsl seg-cv``); returns the exit status (0).

    Args:
        dataset_dir: dataset in the CT-ICH layout with the true masks (folds, validation, test); ``None`` with
            ``datalist`` / ``eval_datalist``.
        out: the run folder.
        folds: number of patient-level folds.
        overrides: bundle settings, a mapping or ``--set`` ``KEY=VALUE`` strings (:func:`bundle_overrides`).
        datalist: JSON datalist of the training labels, e.g. pseudo-labels (default: the true masks of
            ``dataset_dir``, fully supervised).
        eval_datalist: JSON datalist of the true masks for validation and test instead of ``dataset_dir``.
        only: run only these folds.
        bundle: bundle name or folder.
        cache_dir: disk cache of preprocessed volumes, shared by the folds.
        gate_cv_dir: train-cv folder of the slice classifier (same folds): also score the predictions kept only on
            the slices it calls positive (``seg_cv_summary_gated.md``).
        gate_checkpoint: which of its out-of-fold predictions: ``best`` or ``last``.
        gate_threshold: slice probability kept by the gate.

    Every setting, the gate's predictions and the datalists are checked before the run record is written and the
    first fold trains; each bad input is one line (:class:`~hemwsl.errors.HemwslInputError`).
    """
    from hemwsl.engines.bundle import check_bundle_settings
    from hemwsl.engines.cv import check_cache_dir, check_cv_run, check_override_keys, run_cv_fold
    from hemwsl.engines.segmentation import segmentation_datalists, summarize_seg_cv
    from hemwsl.errors import HemwslInputError

    if not (dataset_dir or datalist or eval_datalist):
        raise HemwslInputError("give --dataset-dir (true masks), --datalist and/or --eval-datalist")
    settings = bundle_overrides(overrides)
    check_override_keys(settings, bundle)
    check_bundle_settings(bundle, settings)  # patch_size, samples_per_volume...: before the run record is written
    check_cache_dir(cache_dir)
    if not 0.0 <= gate_threshold <= 1.0:
        raise HemwslInputError(f"--gate-threshold must be a probability in [0, 1], got {gate_threshold}")
    def text(path):  # the bundle's settings hold paths as text
        return None if path is None else str(path)

    kw = {**settings, "dataset_dir": text(dataset_dir), "datalist_file": text(datalist),
          "eval_datalist_file": text(eval_datalist), "output_dir": str(out), "n_folds": folds}
    if cache_dir:
        kw["cache_dir"] = str(cache_dir)
    if only is not None and not list(only):  # `--only` with no fold: nothing would run, without a word
        raise HemwslInputError("--only: give the fold numbers to run (e.g. --only 0 1), or leave the option out to "
                               "run every fold")
    run_folds = list(range(folds)) if only is None else list(only)
    bad = [k for k in run_folds if not 0 <= k < folds]
    if bad:
        raise HemwslInputError(f"--only: fold(s) {bad} not in [0, {folds - 1}]")
    from hemwsl.data.datalist import resolve_dataset_dir

    record = {"bundle": str(bundle), "folds": int(folds), "settings": dict(settings),
              "dataset_dir": str(resolve_dataset_dir(dataset_dir)) if dataset_dir else None,
              "datalist": _fingerprint(datalist), "eval_datalist": _fingerprint(eval_datalist)}
    check_cv_run(out, record, command="seg-cv", file=SEG_RUN)
    if gate_cv_dir:  # before any training: the gate's predictions of every fold exist
        from hemwsl.engines.runs import fold_predictions

        if not Path(gate_cv_dir).is_dir():
            raise HemwslInputError(f"--gate-cv-dir {gate_cv_dir}: train-cv folder not found")
        for k in run_folds:
            fold_predictions(gate_cv_dir, k, gate_checkpoint)
    # the datalists (keys, patients, the dataset) are named now, not by the first fold's bundle (its warnings come
    # then, once)
    import logging

    seg_logger = logging.getLogger("hemwsl.engines.segmentation")
    level = seg_logger.level
    seg_logger.setLevel(logging.ERROR)
    try:
        segmentation_datalists(dataset_dir=dataset_dir, layout=kw.get("layout", "ct-ich"), datalist_file=datalist,
                               eval_datalist_file=eval_datalist, n_folds=folds,
                               fold=run_folds[0] if run_folds else 0, seed=kw.get("seed", 0),
                               val_fraction=kw.get("val_fraction", 0.15))
    finally:
        seg_logger.setLevel(level)
    from hemwsl.data.io import atomic_write_text

    atomic_write_text(Path(out) / SEG_RUN, json.dumps(record, indent=1) + "\n")
    for k in run_folds:
        fold_dir = Path(out) / f"fold{k}"
        if not run_cv_fold(bundle, fold_dir, k, "summary_test.json", **kw):
            continue
        s = json.loads((fold_dir / "summary_test.json").read_text())
        d = s["positive"]["dice"]
        print(f"fold {k}: test Dice {d['mean']:.3f} +- {d['sd']:.3f} on {s['n_positive']} positive patients "
              f"(pooled {s['pooled']['dice']:.3f})", flush=True)
    done = [k for k in range(folds) if (Path(out) / f"fold{k}" / "summary_test.json").exists()]
    if done:
        summarize_seg_cv(out, done)
        print((Path(out) / "seg_cv_summary.md").read_text())
    if done and gate_cv_dir:
        _gate_folds(out, kw, done, gate_cv_dir, gate_checkpoint, gate_threshold)
    return 0


def _gate_folds(out: str | os.PathLike, kw: dict, folds: list[int], gate_cv_dir: str | os.PathLike,
                which: str, threshold: float) -> None:
    """The finished folds' test predictions gated by the classifier's slice calls, and their summary (``kw``: the
    bundle settings of the run, with its dataset, datalists and folds)."""
    from hemwsl.engines.runs import fold_predictions
    from hemwsl.engines.segmentation import gate_segmentation, segmentation_datalists, summarize_seg_cv
    from hemwsl.pseudo import read_slice_probabilities

    csvs = {k: fold_predictions(gate_cv_dir, k, which) for k in folds}  # every file before any work
    for k in folds:
        test = segmentation_datalists(dataset_dir=kw["dataset_dir"], layout=kw.get("layout", "ct-ich"),
                                      datalist_file=kw["datalist_file"], eval_datalist_file=kw["eval_datalist_file"],
                                      n_folds=kw["n_folds"], fold=k, seed=kw.get("seed", 0),
                                      val_fraction=kw.get("val_fraction", 0.15))["test"]
        s = gate_segmentation(test, Path(out) / f"fold{k}", read_slice_probabilities(csvs[k]),
                              prob_threshold=threshold, tolerance_mm=float(kw.get("tolerance_mm", 2.0)))
        print(f"fold {k}: gated by {csvs[k].name} (p >= {threshold}): test Dice "
              f"{s['positive']['dice']['mean']:.3f}, negatives with a false positive "
              f"{s['negative']['with_false_positive']}/{s['negative']['n']}", flush=True)
    summarize_seg_cv(out, folds, name="test_gated")
    print((Path(out) / "seg_cv_summary_gated.md").read_text())
