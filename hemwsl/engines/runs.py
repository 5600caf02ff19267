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
from collections.abc import Sequence
from typing import Any

from hemwsl.errors import HemwslInputError

__all__ = ["SETTINGS", "SEG_RUN", "CHECKPOINTS", "checkpoint_file", "report_name", "cv_settings", "resolve_cv_folds", "fold_checkpoint", "fold_predictions",
           "check_checkpoint_marker", "check_outside_run", "read_predictions_csv", "check_recorded_settings",
           "check_dataset_matches_run", "check_dataset_dir_matches_run", "check_writable_dir",
           "check_predictions_of_run"]

SETTINGS = "cv_settings.json"
SEG_RUN = "seg_cv_run.json"
#: A fold's checkpoints: best validation AUROC, and the weights at the end of training.
CHECKPOINTS = {"best": "model.pt", "last": "model_last.pt"}
_UNSET = object()


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


def check_recorded_settings(settings: Any, where: str | os.PathLike, required: tuple[str, ...] = ()) -> dict:
    """The classifier settings a run or package recorded (``cv_settings.json``, a package's ``settings``): the network
    and input settings later steps rebuild the network from must have their types and ranges (a hand edit such as
    ``windows: 5`` or ``backbone: 5`` would otherwise fail inside the bundle's expressions, or name no file). One
    :class:`HemwslInputError` ``"<where>: ..."`` naming the key; ``required``: keys that must be present. Other keys
    (training settings, paths) are left to the bundle's own checks. Returns ``settings``."""
    from hemwsl.data.io import record_value

    if not isinstance(settings, dict):
        raise HemwslInputError(f"{where}: a JSON object of settings expected, got {type(settings).__name__}")
    for key in required:
        if settings.get(key) is None:
            raise HemwslInputError(f"{where}: no {key!r} entry")

    def named(fn, *a, **kw):  # a check of another module, its message prefixed with the file
        try:
            return fn(*a, **kw)
        except HemwslInputError as err:
            raise HemwslInputError(f"{where}: {err}") from None

    s = settings
    if s.get("backbone") is not None:
        from hemwsl.networks.registry import get_network_spec

        record_value(s, "backbone", where, "str")
        named(get_network_spec, s["backbone"])
    if s.get("network_options") is not None:
        record_value(s, "network_options", where, "dict")
    for key in ("in_channels", "num_classes"):
        record_value(s, key, where, "int", default=None, minimum=1)
    record_value(s, "num_slices", where, "int", default=None, minimum=1)
    if s.get("num_slices") is not None and int(s["num_slices"]) % 2 == 0:
        raise HemwslInputError(f"{where}: num_slices must be a positive odd number, got {s['num_slices']!r}")
    if s.get("windows") is not None:
        from hemwsl.transforms.array import MultiWindow

        if not isinstance(s["windows"], list) or not s["windows"]:
            raise HemwslInputError(f"{where}: windows must be a non-empty list of window names or (level, width) "
                                   f"pairs, got {s['windows']!r}")
        named(MultiWindow, s["windows"])
    if s.get("spatial_size") is not None:
        record_value(s, "spatial_size", where, "numbers", length=2, minimum=8)
        if not all(float(v).is_integer() for v in s["spatial_size"]):
            raise HemwslInputError(f"{where}: spatial_size must be two ints >= 8 or null, got {s['spatial_size']!r}")
    for key in ("skull_strip", "multilabel", "tta"):
        record_value(s, key, where, "bool", default=None)
    record_value(s, "dropout", where, "number", default=None, minimum=0.0)
    if s.get("dropout") is not None and not float(s["dropout"]) < 1.0:
        raise HemwslInputError(f"{where}: dropout must be in [0, 1), got {s['dropout']!r}")
    record_value(s, "seed", where, "int", default=None, minimum=0)
    if record_value(s, "val_fraction", where, "number", default=None, minimum=0.0) is not None \
            and not float(s["val_fraction"]) < 1.0:
        raise HemwslInputError(f"{where}: val_fraction must be in [0, 1), got {s['val_fraction']!r}")
    record_value(s, "n_folds", where, "int", default=None, minimum=2)
    if s.get("layout") is not None:
        from hemwsl.data.datalist import LAYOUTS
        from hemwsl.errors import check_choice

        named(check_choice, "layout", s["layout"], LAYOUTS)
    if s.get("backbone") is not None and s.get("network_options"):
        from hemwsl.networks.registry import check_network_options

        named(check_network_options, s["backbone"], s["network_options"], in_channels=s.get("in_channels"),
              num_classes=s.get("num_classes") or 1)
    return settings


def cv_settings(cv_dir: str | Path) -> dict:
    """The bundle overrides a ``train-cv`` run used (``<cv_dir>/cv_settings.json``; empty when absent), its network
    and input settings checked (:func:`check_recorded_settings`): an unreadable or hand-broken file is one line
    naming it."""
    from hemwsl.data.io import read_json_file

    f = Path(cv_dir) / SETTINGS
    if not (f.exists() or f.is_symlink()):
        return {}
    return check_recorded_settings(read_json_file(f, "train-cv settings record"), f)


def resolve_cv_folds(cv_dir: str | Path | None, folds: int | None = None, seed: int | None = None,
                     val_fraction: float | None = None) -> tuple[int, int, float]:
    """``(folds, seed, val_fraction)`` of a ``train-cv`` run: what its ``cv_run.json`` recorded, unless given;
    a given value that contradicts the record is one line naming both (outputs scored on other folds would be
    wrong without any error). Without a record: the given values, else 5 / 0 / 0.15 (the bundle's defaults).
    A record that is unreadable, or whose folds (an integer >= 2), settings (an object), seed or validation
    fraction are of the wrong type, is one line naming it."""
    from hemwsl.data.io import read_json_file, record_value

    rec = {}
    f = Path(cv_dir) / "cv_run.json" if cv_dir else None
    if f is not None and (f.exists() or f.is_symlink()):
        r = read_json_file(f, "train-cv run record")
        s = record_value(r, "settings", f, "dict", default={})
        rec = {"folds": record_value(r, "folds", f, "int", minimum=2),
               "seed": record_value(s, "seed", f"{f}: settings", "int", default=0, minimum=0),
               "val_fraction": record_value(s, "val_fraction", f"{f}: settings", "number", default=0.15, minimum=0.0)}
        if not rec["val_fraction"] < 1.0:
            raise HemwslInputError(f"{f}: settings: val_fraction must be in [0, 1), got {rec['val_fraction']!r}")
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
    from hemwsl.data.datalist import resolve_dataset_dir

    o, r = resolve_dataset_dir(out, out_name), resolve_dataset_dir(run_dir, run_name)  # a symlink loop: one line
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
    if marker.exists() or marker.is_symlink():
        from hemwsl.data.io import read_json_file

        old = read_json_file(marker, f"record of the run that made the {what}")
        if "members" in old:  # a `hemwsl cam-ensemble` folder: its mean maps must not be overwritten by one run's
            raise HemwslInputError(f"{out}: holds an ensemble of heatmaps ({marker}); use another output folder")
        seen = old.get("checkpoint", "best")
        if seen != which:
            raise HemwslInputError(f"{out}: holds {what} of the {seen} checkpoints ({marker}); "
                                   f"use another output folder for --checkpoint {which}")
        diffs = []
        if "cv_dir" in old and old["cv_dir"] != record["cv_dir"]:
            diffs.append(f"cv_dir {json.dumps(old['cv_dir'])} -> {json.dumps(record['cv_dir'])}")
        if "settings" in old and "settings" in record and old["settings"] != record["settings"]:
            a, b = old["settings"], record["settings"]
            if isinstance(a, dict) and isinstance(b, dict):  # only the settings that differ, each named
                diffs += settings_difference(a, b)
            else:
                diffs.append(f"settings {json.dumps(a)} -> {json.dumps(b)}")
        if diffs:
            raise HemwslInputError(f"{out}: holds {what} of another run ({'; '.join(diffs)}); use another output folder")
        return
    Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write_text(marker, json.dumps(record, indent=1) + "\n")


def settings_difference(old: dict, new: dict, limit: int | None = None) -> list[str]:
    """The keys of two recorded settings that differ, each as ``key old -> new`` (JSON; ``<unset>`` for a key one
    of them lacks), for a refusal that names what differs (a rerun into a folder of other settings). Values
    longer than 60 characters are cut."""
    def text(d: dict, k: str) -> str:
        if k not in d:
            return "<unset>"
        s = json.dumps(d[k])
        return s if len(s) <= 60 else s[:57] + "..."

    keys = [k for k in sorted(set(old) | set(new), key=lambda k: (k not in old or k not in new, k))
            if old.get(k, _UNSET) != new.get(k, _UNSET)]
    out = [f"{k} {text(old, k)} -> {text(new, k)}" for k in keys]
    return out if limit is None or len(out) <= limit else out[:limit] + [f"{len(out) - limit} more"]


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
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup:  # csv.DictReader would keep the last of them without a word
        raise HemwslInputError(f"{path}: column(s) {', '.join(dup)} given more than once in the header; a predictions "
                               "CSV has each column once")
    label_cols = [c for c in header if c.startswith("label_")]
    prob_cols = [c for c in header if c.startswith("prob_")]
    if "patient" not in header or "slice" not in header or (labels and not label_cols) or not prob_cols:
        raise HemwslInputError(f"{path}: not a predictions CSV (expected columns {expected}; "
                               f"found {', '.join(header)[:80] or 'none'})")
    if not rows:
        return {"patient": np.array([]), "slice": np.array([]), "label": np.zeros((0, len(label_cols))),
                "prob": np.zeros((0, len(prob_cols)))}
    try:
        out = {
            "patient": np.array([r["patient"] for r in rows]),
            "slice": np.array([int(r["slice"]) for r in rows]),
            "label": np.array([[float(r[c]) for c in label_cols] for r in rows]).reshape(len(rows), len(label_cols)),
            "prob": np.array([[float(r[c]) for c in prob_cols] for r in rows]),
            "names": [c[len("label_") :] for c in label_cols] if label_cols else [c[len("prob_") :] for c in prob_cols],
        }
    except (TypeError, ValueError) as err:  # a short row (None) or a value that is not a number
        line = next(i + 2 for i, r in enumerate(rows) if not _numeric_row(r, ["slice", *label_cols, *prob_cols]))
        raise HemwslInputError(f"{path}: line {line}: not a predictions row ({expected})") from err
    bad = ~np.isin(out["label"], (0.0, 1.0)).all(axis=1)
    if bad.any():  # slice labels are binary (0/1 per output)
        i = int(np.argmax(bad))
        values = ", ".join(f"{c} {rows[i][c]}" for c in label_cols)
        raise HemwslInputError(f"{path}: line {i + 2}: labels must be 0 or 1, got {values}")
    check_prediction_rows(path, out)
    return out


def check_prediction_rows(path: str | os.PathLike, pred: dict) -> None:
    """The rows of a predictions CSV (:func:`read_predictions_csv`): every probability a finite number in [0, 1], no
    negative slice index (but -1, a row without slice metadata) and each (patient, slice) once; otherwise one line
    naming the file and the line (a probability of 1.5 or NaN would call a slice silently, a repeated slice leave
    one of its two values unsaid)."""
    import numpy as np

    prob = np.asarray(pred["prob"], dtype=np.float64)
    bad = np.flatnonzero(~np.all(np.isfinite(prob) & (prob >= 0.0) & (prob <= 1.0), axis=1))
    if bad.size:
        i = int(bad[0])
        raise HemwslInputError(f"{path}: line {i + 2}: probability {prob[i][~((prob[i] >= 0) & (prob[i] <= 1))][0]:g} "
                               f"(patient {pred['patient'][i]}, slice {pred['slice'][i]}) is not in [0, 1]"
                               + (f" ({bad.size} such rows)" if bad.size > 1 else ""))
    # slice -1 marks a row without slice metadata (what PredictionCollector writes when batches carry no index)
    if (pred["slice"] < -1).any():
        i = int(np.flatnonzero(pred["slice"] < -1)[0])
        raise HemwslInputError(f"{path}: line {i + 2}: negative slice index {pred['slice'][i]} "
                               f"(patient {pred['patient'][i]})")
    seen: dict[tuple[str, int], int] = {}
    for i, key in enumerate(zip(pred["patient"].tolist(), pred["slice"].tolist())):
        if key[1] == -1:
            continue
        if key in seen:
            raise HemwslInputError(f"{path}: line {i + 2}: patient {key[0]} slice {key[1]} repeats line {seen[key] + 2}")
        seen[key] = i


def _numeric_row(row: dict, columns: list[str]) -> bool:
    try:
        int(row["slice"])
        [float(row[c]) for c in columns]
    except (TypeError, ValueError):
        return False
    return True


def _run_prediction_files(cv_dir: str | Path, folds: int | None = None) -> list[Path]:
    """Each fold's out-of-fold predictions CSV of a train-cv run (the best checkpoint's, else the last one's); folds
    without one are left out."""
    cv = Path(cv_dir)
    if folds is None:
        try:
            folds = resolve_cv_folds(cv)[0] if (cv / "cv_run.json").is_file() else None
        except HemwslInputError:
            folds = None
    if folds is None:
        folds = len([d for d in cv.glob("fold*") if d.name[4:].isdigit()])
    out = []
    for k in range(int(folds)):
        for which in CHECKPOINTS:
            f = cv / f"fold{k}" / f"predictions_{report_name('test', which)}.csv"
            if f.is_file():
                out.append(f)
                break
    return out


def check_predictions_of_run(csvs: Sequence[str | os.PathLike], cv_dir: str | Path,
                             option: str = "--predictions") -> None:
    """Each of ``csvs`` that is a fold's out-of-fold predictions file of some train-cv run (``<run>/fold<k>/...``,
    the run holding ``cv_run.json``) holds the probabilities of the ``cv_dir`` run: the run's own file, a copy of it
    (the same probabilities), or the file of a ``hemwsl slice-context`` folder made from it. A file of another run
    (other folds or weights) is one line naming ``option``. Files outside any train-cv run (an ensemble's mean, a
    hand-made CSV) are not checked here."""
    from hemwsl.data.io import read_json_file

    mine = Path(cv_dir).resolve()
    for csv in csvs:
        f = Path(csv)
        run = f.resolve().parent.parent
        if run == mine or not (run / "cv_run.json").is_file() or not f.parent.name.startswith("fold"):
            continue  # the run's own file, or a file outside any train-cv run (e.g. an ensemble's mean)
        context = run / "slice_context.json"
        if context.is_file():  # smoothed predictions of a run: made from this one?
            rec = read_json_file(context, "slice-context record")
            if isinstance(rec, dict) and isinstance(rec.get("cv_dir"), str) and Path(rec["cv_dir"]).resolve() == mine:
                continue
        theirs = read_predictions_csv(f, labels=False)
        same = False
        for which in CHECKPOINTS:
            g = mine / f.parent.name / f"predictions_{report_name('test', which)}.csv"
            if not g.is_file():
                continue
            ours = read_predictions_csv(g, labels=False)
            a = sorted(zip(theirs["patient"].tolist(), theirs["slice"].tolist(), theirs["prob"][:, 0].round(5)))
            b = sorted(zip(ours["patient"].tolist(), ours["slice"].tolist(), ours["prob"][:, 0].round(5)))
            same = same or a == b
        if not same:
            raise HemwslInputError(f"{option} {csv}: slice probabilities of the train-cv run {run}, not of "
                                   f"--cv-dir {cv_dir} (other folds or weights); give the run's own "
                                   f"{f.parent.name}/{f.name}")


def check_dataset_matches_run(cv_dir: str | Path, datalist: list[dict], dataset: str | os.PathLike | None = None,
                              option: str = "--dataset-dir", folds: int | None = None) -> None:
    """The dataset given to a step after ``train-cv`` must be the one the run was trained and tested on: its
    out-of-fold predictions CSVs hold each test patient's slices and slice labels, and a patient of the dataset
    whose scan has another number of slices, or whose slices are labelled otherwise, is another head under the same
    id (the run's folds, weights and probabilities would be applied to it without any error). The path itself is
    not compared (a dataset may be moved or copied). One :class:`HemwslInputError` naming ``option`` and the first
    patient that differs; patients the predictions do not hold, and a run without predictions, are not checked."""
    import numpy as np

    from hemwsl.constants import PATIENT, SLICE_LABELS
    from hemwsl.data.datalist import NUM_SLICES

    entries = {str(e.get(PATIENT)): e for e in datalist if isinstance(e, dict)}
    where = f"{option} {dataset}" if dataset is not None else option
    for f in _run_prediction_files(cv_dir, folds):
        try:
            p = read_predictions_csv(f)
        except HemwslInputError:
            continue  # the commands that read the predictions name a broken file themselves
        names = p.get("names") or []
        col = names.index("any") if "any" in names else 0
        for pat in sorted(set(p["patient"].tolist())):
            e = entries.get(str(pat))
            if e is None:
                continue
            rows = p["patient"] == pat
            sl, lab = p["slice"][rows], p["label"][rows, col] if p["label"].shape[1] else None
            order = np.argsort(sl)
            sl = sl[order]
            depth = e.get(NUM_SLICES)
            if depth is not None and sl.size and (sl[-1] >= int(depth)
                                                  or (sl.tolist() == list(range(sl.size)) and sl.size != int(depth))):
                raise HemwslInputError(
                    f"{where}: patient {pat}'s scan has {int(depth)} slices, the train-cv run {cv_dir} was tested on "
                    f"{int(sl[-1]) + 1} ({f}): another dataset than the run's; give the dataset it was trained on")
            labels = e.get(SLICE_LABELS)
            if labels is None or lab is None:
                continue
            lab = lab[order]
            for z, v in zip(sl.tolist(), lab.tolist()):
                if 0 <= z < len(labels) and int(labels[z]) != int(v):
                    raise HemwslInputError(
                        f"{where}: patient {pat}'s slice {z} is labelled {int(labels[z])} there, {int(v)} in the "
                        f"train-cv run {cv_dir} ({f}): another dataset than the run's; give the dataset it was "
                        "trained on")


def check_dataset_dir_matches_run(cv_dir: str | Path, dataset_dir: str | os.PathLike, layout: str = "ct-ich",
                                  option: str = "--dataset-dir", folds: int | None = None) -> None:
    """:func:`check_dataset_matches_run` for a dataset folder (its datalist built with ``layout``)."""
    from hemwsl.data.datalist import build_datalist

    if not _run_prediction_files(cv_dir, folds):
        return
    check_dataset_matches_run(cv_dir, build_datalist(layout, str(dataset_dir)), dataset_dir, option, folds)


def check_writable_dir(out: str | os.PathLike, option: str = "--out") -> None:
    """``out`` (made if missing) can be written: a file is created and removed in it, or in its nearest existing
    parent when it does not exist yet. A read-only, immutable or full folder is one line naming ``option``, before
    any work is done (instead of a traceback from deep inside a bundle)."""
    import errno
    import tempfile

    p = Path(out)
    probe = p
    while not probe.exists() and probe != probe.parent:
        if probe.is_symlink():  # a dangling link or a loop
            raise HemwslInputError(f"{option} {out}: cannot write there (a broken symlink or symlink loop: {probe})")
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise HemwslInputError(f"{option} {out}: cannot write there ({probe} is a file, not a folder)")
    try:
        fd, name = tempfile.mkstemp(prefix=".hemwsl-write-check-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        why = {errno.EACCES: "permission denied", errno.EPERM: "permission denied (read-only or immutable)",
               errno.EROFS: "a read-only file system", errno.ENOSPC: "no space left",
               errno.ELOOP: "a symlink loop"}.get(err.errno, err.strerror or str(err))
        raise HemwslInputError(f"{option} {out}: cannot write there ({why})") from None
