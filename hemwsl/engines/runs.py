"""The layout of a ``hemwsl train-cv`` run folder, read by every later step (library code: commands, scripts and
bundles call these, never another command).

``<run>/cv_settings.json`` (the bundle overrides), ``<run>/cv_run.json`` (folds, seed, validation fraction, the
dataset), ``<run>/fold<k>/models/model.pt`` / ``model_last.pt`` (best validation AUROC / end of training) and
``<run>/fold<k>/predictions_test[_last].csv`` (out-of-fold predictions). Output folders made from a run record which
run and weights made them (``cam_checkpoint.json``). A ``hemwsl seg-cv`` run records itself in ``seg_cv_run.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from hemwsl.errors import HemwslInputError

__all__ = ["SETTINGS", "SEG_RUN", "CHECKPOINTS", "checkpoint_file", "report_name", "cv_settings", "resolve_cv_folds", "fold_checkpoint", "fold_predictions",
           "check_checkpoint_marker", "check_outside_run", "read_predictions_csv"]

SETTINGS = "cv_settings.json"
SEG_RUN = "seg_cv_run.json"
#: A fold's checkpoints: best validation AUROC, and the weights at the end of training.
CHECKPOINTS = {"best": "model.pt", "last": "model_last.pt"}


def checkpoint_file(ckpt_dir: str | os.PathLike, which: str = "best") -> str:
    """Path of the ``best`` or ``last`` checkpoint of a fold (``<ckpt_dir>/model.pt`` / ``model_last.pt``)."""
    if which not in CHECKPOINTS:
        raise HemwslInputError(f"eval_checkpoint must be one of {sorted(CHECKPOINTS)}, got {which!r}")
    return str(Path(ckpt_dir) / CHECKPOINTS[which])


def report_name(part: str, which: str = "best") -> str:
    """Name of the reports of ``part`` evaluated with checkpoint ``which``: ``test`` for the best checkpoint
    (the historical names), ``test_last`` for the last one."""
    if which not in CHECKPOINTS:
        raise HemwslInputError(f"eval_checkpoint must be one of {sorted(CHECKPOINTS)}, got {which!r}")
    return part if which == "best" else f"{part}_{which}"


def cv_settings(cv_dir: str | Path) -> dict:
    """The bundle overrides a ``train-cv`` run used (``<cv_dir>/cv_settings.json``; empty when absent)."""

    f = Path(cv_dir) / SETTINGS
    if not f.exists():
        return {}
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError as err:
        raise HemwslInputError(f"{f}: not valid JSON ({err})") from err


def resolve_cv_folds(cv_dir: str | Path | None, folds: int | None = None, seed: int | None = None,
                     val_fraction: float | None = None) -> tuple[int, int, float]:
    """``(folds, seed, val_fraction)`` of a ``train-cv`` run: what its ``cv_run.json`` recorded, unless given;
    a given value that contradicts the record is one line naming both (outputs scored on other folds would be
    wrong without any error). Without a record: the given values, else 5 / 0 / 0.15 (the bundle's defaults)."""

    rec = {}
    f = Path(cv_dir) / "cv_run.json" if cv_dir else None
    if f is not None and f.is_file():
        try:
            r = json.loads(f.read_text())
        except json.JSONDecodeError as err:
            raise HemwslInputError(f"{f}: not valid JSON ({err})") from err
        s = r.get("settings", {})
        rec = {"folds": int(r["folds"]), "seed": int(s.get("seed", 0)), "val_fraction": float(s.get("val_fraction", 0.15))}
    out = {}
    for key, given, default in (("folds", folds, 5), ("seed", seed, 0), ("val_fraction", val_fraction, 0.15)):
        if given is not None and key in rec and given != rec[key]:
            raise HemwslInputError(f"{f}: the train-cv run used {key} = {rec[key]}, not {given}; leave the option out")
        out[key] = given if given is not None else rec.get(key, default)
    return int(out["folds"]), int(out["seed"]), float(out["val_fraction"])


def fold_checkpoint(cv_dir: str | Path, k: int, which: str = "best") -> Path:
    """Fold ``k``'s classifier checkpoint of a ``train-cv`` run: ``best`` (``models/model.pt``, best validation
    AUROC) or ``last`` (``models/model_last.pt``, the weights at the end of training, EMA weights when
    ``ema_decay`` > 0). Raises :class:`~hemwsl.errors.HemwslInputError` naming the file when it is missing."""

    ckpt = Path(checkpoint_file(Path(cv_dir) / f"fold{k}" / "models", which))
    if not ckpt.is_file():
        raise HemwslInputError(f"{ckpt}: {which} checkpoint of fold {k} not found (train it with `hemwsl train-cv`)")
    return ckpt


def fold_predictions(cv_dir: str | Path, k: int, which: str = "best") -> Path:
    """Fold ``k``'s out-of-fold test predictions made with checkpoint ``which`` (``predictions_test.csv`` /
    ``predictions_test_last.csv``, the latter from ``train-cv --set eval_checkpoint=last``)."""

    f = Path(cv_dir) / f"fold{k}" / f"predictions_{report_name('test', which)}.csv"
    if not f.is_file():
        hint = " (run `hemwsl train-cv ... --set eval_checkpoint=last`)" if which == "last" else ""
        raise HemwslInputError(f"{f}: test predictions of fold {k} ({which} checkpoint) not found{hint}")
    return f


def check_outside_run(out: str | Path, run_dir: str | Path, out_name: str = "--out", run_name: str = "--cv-dir",
                      what: str = "train-cv run") -> None:
    """An output folder must not be a run folder or inside it (its files would be written among the run's, and
    later steps would take them for the run's): one line naming both, before anything is written."""
    o, r = Path(out).resolve(), Path(run_dir).resolve()
    if o == r or r in o.parents:
        where = "is" if o == r else "is inside"
        raise HemwslInputError(f"{out_name} {out} {where} the {what} {run_dir} ({run_name}); give an output folder "
                               "outside it")


def check_checkpoint_marker(out: str | Path, cv_dir: str | Path, which: str, what: str,
                            settings: dict | None = None) -> None:
    """Keep one run's outputs per folder: outputs are resumed file by file, so maps or pseudo-labels of the
    ``best`` and ``last`` weights, of another train-cv run or of other input settings must never mix. The
    first run records them in ``<out>/cam_checkpoint.json``; a later run that differs gets one line naming
    what differs."""
    from hemwsl.data.io import atomic_write_text

    marker = Path(out) / "cam_checkpoint.json"
    record = {"cv_dir": str(Path(cv_dir).resolve()), "checkpoint": which,
              **({"settings": json.loads(json.dumps(settings))} if settings is not None else {})}
    if marker.is_file():
        old = json.loads(marker.read_text())
        seen = old.get("checkpoint", "best")
        if seen != which:
            raise HemwslInputError(f"{out}: holds {what} of the {seen} checkpoints ({marker}); "
                                   f"use another output folder for --checkpoint {which}")
        diffs = [f"{k} {json.dumps(old[k])} -> {json.dumps(record[k])}" for k in ("cv_dir", "settings")
                 if k in old and k in record and old[k] != record[k]]
        if diffs:
            raise HemwslInputError(f"{out}: holds {what} of another run ({'; '.join(diffs)}); use another output folder")
        return
    Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write_text(marker, json.dumps(record, indent=1) + "\n")


def read_predictions_csv(path: str | os.PathLike, labels: bool = True) -> dict:
    """Read a predictions CSV (``fold<k>/predictions_<part>.csv``, written by
    :meth:`hemwsl.engines.handlers.PredictionCollector.to_csv`) -> dict of arrays.

    ``labels=False`` also reads a file without ``label_*`` columns (probabilities only; ``label`` is then
    ``(N, 0)``). Every problem is one :class:`HemwslInputError` naming the file (and the line)."""
    import csv

    import numpy as np

    expected = ("patient, slice, label_<output>..., prob_<output>..." if labels
                else "patient, slice and prob_any (label_* optional)")
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise HemwslInputError(f"{path}: cannot read as a predictions CSV ({type(err).__name__}: {err})") from err
    label_cols = [c for c in header if c.startswith("label_")]
    prob_cols = [c for c in header if c.startswith("prob_")]
    if "patient" not in header or "slice" not in header or (labels and not label_cols) or not prob_cols:
        raise HemwslInputError(f"{path}: not a predictions CSV (expected columns {expected}; "
                               f"found {', '.join(header)[:80] or 'none'})")
    if not rows:
        return {"patient": np.array([]), "slice": np.array([]), "label": np.zeros((0, len(label_cols))),
                "prob": np.zeros((0, len(prob_cols)))}
    try:
        return {
            "patient": np.array([r["patient"] for r in rows]),
            "slice": np.array([int(r["slice"]) for r in rows]),
            "label": np.array([[float(r[c]) for c in label_cols] for r in rows]).reshape(len(rows), len(label_cols)),
            "prob": np.array([[float(r[c]) for c in prob_cols] for r in rows]),
            "names": [c[len("label_") :] for c in label_cols] if label_cols else [c[len("prob_") :] for c in prob_cols],
        }
    except (TypeError, ValueError) as err:  # a short row (None) or a value that is not a number
        line = next(i + 2 for i, r in enumerate(rows) if not _numeric_row(r, ["slice", *label_cols, *prob_cols]))
        raise HemwslInputError(f"{path}: line {line}: not a predictions row ({expected})") from err


def _numeric_row(row: dict, columns: list[str]) -> bool:
    try:
        int(row["slice"])
        [float(row[c]) for c in columns]
    except (TypeError, ValueError):
        return False
    return True
