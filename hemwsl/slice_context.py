"""Slice context from a trained slice classifier's own predictions: each scan's slice logits smoothed along z.

A bleed spans several adjacent 5 mm slices and a slice's neighbours carry evidence about it. Ramananda &
Sundaresan 2023 give each slice that context with an LSTM over the slice sequence (``seq_<backbone>``,
``docs/slice_context.md``). On CT-ICH's 55 patients the LSTM learns scan-level offsets that do not transfer;
the simplest context does not need learning: the logits of a scan's slices, ``log(p / (1 - p))``, filtered along
z with a Gaussian of width ``sigma`` slices (``scipy.ndimage.gaussian_filter1d``, the edge slices replicated),
and back to probabilities. ``sigma = 0`` is the classifier as it is.

:func:`smooth_cv_predictions` does it out of fold for a ``hemwsl train-cv`` run (``hemwsl slice-context``): for
each fold, ``sigma`` is chosen among candidates on the fold's selection patients (every patient outside its test
part, scored by the other folds' classifiers, as the benchmark and ``hemwsl quantify`` choose), by the pooled slice
AUROC of output 0, and applied to the fold's test patients. The output folder has the layout of a train-cv run's
predictions (``fold<k>/predictions_test[_last].csv``, ``cv_run.json``), so ``scripts/compare_classifiers.py`` compares
it with the run, and one CSV of every patient (``predictions_test.csv``) goes to ``--predictions`` of ``hemwsl
ablation`` and ``hemwsl quantify``.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hemwsl.errors import HemwslInputError

__all__ = ["DEFAULT_SIGMAS", "smooth_slice_probabilities", "choose_sigma", "smooth_cv_predictions", "check_sigmas"]

#: Candidate widths (slices) of the Gaussian, 0 = no smoothing.
DEFAULT_SIGMAS: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
_RECORD = "slice_context.json"
_EPS = 1e-6


def check_sigmas(sigmas: Any) -> list[float]:
    """Candidate widths: one number or a list of finite numbers >= 0, sorted without repeats; else one line."""
    vals = [sigmas] if isinstance(sigmas, (int, float)) and not isinstance(sigmas, bool) else sigmas
    if isinstance(vals, (str, bytes)) or not isinstance(vals, (Sequence, np.ndarray)) or len(vals) == 0:
        raise HemwslInputError(f"sigmas: give one or more widths in slices (numbers >= 0), got {sigmas!r}")
    out = set()
    for v in vals:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v) \
                or v < 0:
            raise HemwslInputError(f"sigmas: {v!r} is not a width in slices (a finite number >= 0)")
        out.add(float(v))
    return sorted(out)


def smooth_slice_probabilities(probs: Any, sigma: float) -> np.ndarray:
    """``probs`` (one scan's slices in order, ``(Z,)`` or ``(Z, C)``) with each output's logits filtered along z by a
    Gaussian of ``sigma`` slices (edges replicated); ``sigma = 0`` returns them unchanged (as float64). Probabilities
    are clipped to ``[1e-6, 1 - 1e-6]`` before the logit."""
    from scipy.ndimage import gaussian_filter1d

    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.integer, np.floating)):
        raise HemwslInputError(f"sigma: one width in slices (a finite number >= 0), got {sigma!r}")
    try:
        p = np.asarray(probs, dtype=np.float64)
    except (TypeError, ValueError):
        raise HemwslInputError("probs: one scan's slice probabilities, numbers in [0, 1]") from None
    if p.ndim not in (1, 2) or p.shape[0] == 0:
        raise HemwslInputError(f"probs: one scan's slice probabilities, (Z,) or (Z, C), got shape {p.shape}")
    if not np.isfinite(p).all() or p.min() < 0 or p.max() > 1:
        raise HemwslInputError("probs: probabilities must be finite and in [0, 1]")
    sigma = check_sigmas(sigma)[0]
    if sigma == 0:
        return p.copy()
    q = np.clip(p, _EPS, 1 - _EPS)
    logit = gaussian_filter1d(np.log(q / (1 - q)), sigma, axis=0, mode="nearest")
    return 1.0 / (1.0 + np.exp(-logit))


def choose_sigma(probs: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
                 sigmas: Sequence[float] = DEFAULT_SIGMAS) -> tuple[float, dict[float, float]]:
    """The candidate with the largest pooled slice AUROC over the scans of ``probs`` (``{patient: (Z,)}``, slices in
    order; ``labels`` the same shapes, 0/1). Ties go to the smallest width. Returns ``(sigma, {sigma: AUROC})``."""
    from hemwsl.metrics.classification import compute_auroc

    sigmas = check_sigmas(sigmas)
    if not isinstance(probs, Mapping) or not isinstance(labels, Mapping):
        raise HemwslInputError(f"probs and labels: give {{patient: slices}} mappings, got {type(probs).__name__} and "
                               f"{type(labels).__name__}")
    patients = sorted(probs)
    if not patients:
        raise HemwslInputError("no scans to choose the smoothing on")
    if set(map(str, labels)) != set(map(str, probs)):
        diff = sorted(set(map(str, probs)) ^ set(map(str, labels)))
        raise HemwslInputError(f"labels: not the patients of probs (patient {diff[0]} is in one only)")
    for p in patients:
        lab, pr = np.asarray(labels[p]).reshape(-1), np.asarray(probs[p])
        if lab.shape[0] != (pr.shape[0] if pr.ndim else 1):
            raise HemwslInputError(f"labels: patient {p} has {lab.shape[0]} labels for {pr.shape[0] if pr.ndim else 1} "
                                   "slices")
        if not np.isin(lab, (0, 1)).all():
            raise HemwslInputError(f"labels: patient {p} holds values other than 0 and 1")
    y = np.concatenate([np.asarray(labels[p]).reshape(-1) for p in patients])
    if y.min() == y.max():
        raise HemwslInputError("the scans to choose the smoothing on hold slices of one label only")
    aucs = {s: float(compute_auroc(y, np.concatenate([smooth_slice_probabilities(probs[p], s) for p in patients])))
            for s in sigmas}
    best = max(sigmas, key=lambda s: (aucs[s], -s))
    return best, aucs


def _by_patient(pred: dict) -> dict[str, np.ndarray]:
    """``{patient: row indices in slice order}`` of a read predictions CSV; a repeated slice is one line."""
    rows: dict[str, list[int]] = {}
    for i, p in enumerate(pred["patient"]):
        rows.setdefault(str(p), []).append(i)
    out = {}
    for p, idx in rows.items():
        idx = np.asarray(idx)
        order = idx[np.argsort(pred["slice"][idx], kind="stable")]
        sl = pred["slice"][order]
        if len(np.unique(sl)) != len(sl):
            raise HemwslInputError(f"patient {p}: a slice is listed twice in the predictions")
        out[p] = order
    return out


def smooth_cv_predictions(cv_dir: str | os.PathLike, out: str | os.PathLike, *,
                          sigmas: Sequence[float] = DEFAULT_SIGMAS, checkpoint: str = "best") -> dict:
    """Out-of-fold slice context for the train-cv run ``cv_dir`` (``hemwsl slice-context``, module docstring).

    Args:
        cv_dir: a train-cv run with ``fold<k>/predictions_test[_last].csv`` of every fold.
        out: output folder: ``fold<k>/predictions_test[_last].csv`` (the smoothed probabilities, the same rows and
            labels), ``predictions_test.csv`` (every patient), ``cv_run.json`` (the run's folds), and
            ``slice_context.json`` (the run, the candidates, each fold's choice and its selection AUROCs, the pooled
            out-of-fold AUROC of output 0 before and after).
        sigmas: candidate widths in slices (0: no smoothing).
        checkpoint: which predictions of the run: ``best`` or ``last``.

    Returns:
        The record written to ``slice_context.json``. A folder that holds a record of other inputs is refused.
    """
    from hemwsl.data.io import atomic_write_text, read_json_file
    from hemwsl.engines.runs import check_outside_run, fold_predictions, read_predictions_csv, resolve_cv_folds
    from hemwsl.errors import check_choice

    check_choice("checkpoint", checkpoint, ("best", "last"))
    sigmas = check_sigmas(sigmas)
    check_outside_run(out, cv_dir)
    folds = resolve_cv_folds(cv_dir)[0]
    files = [fold_predictions(cv_dir, k, checkpoint) for k in range(folds)]
    preds = [read_predictions_csv(f) for f in files]
    owner: dict[str, int] = {}
    for k, pred in enumerate(preds):
        for p in np.unique(pred["patient"]):
            if str(p) in owner:
                raise HemwslInputError(f"{files[k]}: patient {p} is also a test patient of fold {owner[str(p)]}; the "
                                       "folds of a train-cv run do not share patients")
            owner[str(p)] = k
    rows = [_by_patient(pred) for pred in preds]
    probs = {p: preds[k]["prob"][rows[k][p], 0] for k in range(folds) for p in rows[k]}
    labels = {p: preds[k]["label"][rows[k][p], 0] for k in range(folds) for p in rows[k]}
    record: dict[str, Any] = {"cv_dir": str(Path(cv_dir).resolve()), "checkpoint": checkpoint, "sigmas": sigmas,
                              "folds": folds}
    out = Path(out)
    marker = out / _RECORD
    if marker.exists() or marker.is_symlink():
        old = read_json_file(marker, "slice-context record")
        diff = [k for k in record if not isinstance(old, dict) or old.get(k) != record[k]]
        if diff:
            raise HemwslInputError(f"{out}: holds slice context of other inputs ({', '.join(diff)} differ; {marker}); "
                                   "use another --out")
    chosen, selection = {}, {}
    for k in range(folds):
        sel = [p for p in sorted(probs) if owner[p] != k]
        chosen[k], aucs = choose_sigma({p: probs[p] for p in sel}, {p: labels[p] for p in sel}, sigmas)
        selection[k] = {f"{s:g}": round(a, 6) for s, a in aucs.items()}
    from hemwsl.metrics.classification import compute_auroc

    name = files[0].name
    every = io.StringIO()
    written = []  # output 0 as the files hold it (6 decimals), for the pooled AUROC after
    for k, pred in enumerate(preds):
        smoothed = pred["prob"].copy()
        for p, idx in rows[k].items():
            smoothed[idx] = smooth_slice_probabilities(pred["prob"][idx], chosen[k])
        written.append([float(f"{v:.6f}") for v in smoothed[:, 0]])
        text = _csv(pred, smoothed)
        atomic_write_text(out / f"fold{k}" / name, text)
        every.write(text if k == 0 else text.split("\n", 1)[1])
    atomic_write_text(out / "predictions_test.csv", every.getvalue())
    src_run = Path(cv_dir) / "cv_run.json"
    if src_run.is_file():  # the folds of the run, so that the folder reads as its predictions
        atomic_write_text(out / "cv_run.json", src_run.read_text())
    y = np.concatenate([pred["label"][:, 0] for pred in preds])
    record.update(chosen={str(k): v for k, v in chosen.items()}, selection_auroc={str(k): v for k, v in selection.items()},
                  pooled_auroc={"before": compute_auroc(y, np.concatenate([pred["prob"][:, 0] for pred in preds])),
                                "after": compute_auroc(y, np.concatenate(written))})
    atomic_write_text(marker, json.dumps(record, indent=1) + "\n")
    return record


def _csv(pred: dict, probs: np.ndarray) -> str:
    """A predictions CSV (the columns :meth:`hemwsl.engines.handlers.PredictionCollector.to_csv` writes) of ``pred``'s
    rows with ``probs``."""
    names = pred["names"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["patient", "slice"] + [f"label_{n}" for n in names] + [f"prob_{n}" for n in names])
    for p, s, lab, pr in zip(pred["patient"], pred["slice"], pred["label"], probs):
        w.writerow([p, int(s)] + [int(v) for v in lab] + [f"{v:.6f}" for v in pr])
    return buf.getvalue()
