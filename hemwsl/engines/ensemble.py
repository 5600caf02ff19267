"""Ensembles of heatmap folders: the mean of several runs' out-of-fold heatmaps (``hemwsl cam-ensemble``).

Two trainings of one recipe that differ only in ``train_seed`` (the same folds) give heatmaps that differ by
more than many levers do (docs/heatmap_network.md, sixth round); their mean is the usual way to take that
variance out, as a seed ensemble of classifiers averages probabilities. Each member is a ``cam-cv`` folder
(``<method>/<layer>/<patient>.nii.gz`` with its ``cam_checkpoint.json``); every member must hold every heatmap
of the chosen (method, layer) pairs, on the same grid and affine, from the same checkpoint and folds, so the
mean of a patient's maps only mixes networks that never saw that patient.

Each member's map is normalised first (``normalise``): ``slice`` (default) scales every axial slice to [0, 1]
(min-max, as the benchmark does before a threshold), so each member counts equally in what is thresholded;
``volume`` divides by the volume's maximum; ``none`` averages the stored values (e.g. the LSE network's
probabilities, like averaging the members' outputs).

The members' slice probabilities are averaged too (:func:`ensemble_predictions`): every fold's out-of-fold
``predictions_test[_last].csv`` of each member's train-cv run, into ``<out>/predictions_test.csv``, the
ensemble's slice calls for ``--predictions`` of ``hemwsl benchmark`` and ``hemwsl quantify``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from hemwsl.cam.volume import read_heatmap_checked
from hemwsl.cam.volume import heatmap_header as _header
from hemwsl.errors import HemwslInputError

__all__ = ["ENSEMBLE_NORMALISATIONS", "ENSEMBLE_PREDICTIONS", "ensemble_heatmaps", "ensemble_members",
           "read_heatmap_checked",
           "ensemble_predictions"]

#: How each member's map is scaled before the mean.
ENSEMBLE_NORMALISATIONS = ("slice", "volume", "none")
_MARKER = "cam_checkpoint.json"
#: The ensemble's out-of-fold slice probabilities (the members' mean), for ``--predictions`` of ``hemwsl benchmark``,
#: ``quantify`` and the PR/ROC figures.
ENSEMBLE_PREDICTIONS = "predictions_test.csv"


def _member_record(cam_dir: Path) -> dict:
    from hemwsl.data.io import read_json_file

    marker = cam_dir / _MARKER
    if not cam_dir.is_dir():
        raise HemwslInputError(f"--cam-dirs {cam_dir}: not a folder")
    if not marker.is_file():
        raise HemwslInputError(f"--cam-dirs {cam_dir}: no {_MARKER} (a `hemwsl cam-cv` folder records the run, the "
                               "checkpoint and the folds its heatmaps come from; a mean of unknown maps is refused)")
    rec = read_json_file(marker, "record of the run that made the heatmaps")
    if "members" in rec:
        raise HemwslInputError(f"--cam-dirs {cam_dir}: an ensemble already ({marker}); give its members instead")
    return rec


def _check_same_folds(dirs: list[Path], records: list[dict]) -> None:
    """The members' train-cv runs (where they are here) split the patients alike: the same folds, seed and
    validation fraction in their ``cv_run.json``."""
    from hemwsl.engines.runs import resolve_cv_folds

    seen = None
    for d, rec in zip(dirs, records):
        run = rec.get("cv_dir")
        if not isinstance(run, str) or not (Path(run) / "cv_run.json").is_file():
            continue
        split = resolve_cv_folds(run)
        if seen is not None and split != seen[1]:
            names = ("folds", "seed", "val_fraction")
            diff = "; ".join(f"{n} {x} vs {y}" for n, x, y in zip(names, split, seen[1]) if x != y)
            raise HemwslInputError(f"--cam-dirs {d}: its train-cv run {run} splits the patients otherwise than "
                                   f"{seen[0]}'s ({diff}); members share the folds")
        seen = seen or (d, split)


def _pairs(cam_dir: Path) -> set[tuple[str, str]]:
    return {(m.name, layer.name) for m in cam_dir.iterdir() if m.is_dir()
            for layer in m.iterdir() if layer.is_dir() and any(layer.glob("*.nii.gz"))}


def ensemble_members(cam_dirs: Sequence[str | os.PathLike], methods: Sequence[str] | None = None,
                     layers: Sequence[str] | None = None) -> tuple[list[dict], list[tuple[str, str]], list[str]]:
    """Check the members of an ensemble before anything is written: ``(records, pairs, stems)``.

    Every member is a ``cam-cv`` folder with its record; all share the checkpoint, the folds and the grid; every
    (method, layer) pair kept (those of ``methods`` and ``layers``, default: those every member has) is in every
    member with the same patients. One line naming the member and what differs otherwise."""
    dirs = [Path(d) for d in cam_dirs]
    if len(dirs) < 2:
        raise HemwslInputError(f"--cam-dirs: an ensemble needs at least two heatmap folders, got {len(dirs)}")
    from hemwsl.data.datalist import resolve_dataset_dir

    resolved = [resolve_dataset_dir(d, "--cam-dirs") for d in dirs]
    dup = [str(d) for i, d in enumerate(dirs) if resolved[i] in resolved[:i]]
    if dup:
        raise HemwslInputError(f"--cam-dirs: {dup[0]} given more than once; each member once")
    records = [_member_record(d) for d in dirs]
    first = records[0]
    for d, rec in zip(dirs[1:], records[1:]):
        for key in ("checkpoint",):
            if rec.get(key, "best") != first.get(key, "best"):
                raise HemwslInputError(f"--cam-dirs {d}: heatmaps of the {rec.get(key, 'best')} checkpoints, "
                                       f"{dirs[0]}'s of the {first.get(key, 'best')} ones; members share one "
                                       "checkpoint")
        a, b = first.get("settings") or {}, rec.get("settings") or {}
        # a key one record leaves out has the bundle's default (the patient split of seed 0, val_fraction 0.15)
        for key, default in (("folds", None), ("grid", "input"), ("spatial_size", None), ("seed", 0),
                             ("val_fraction", 0.15), ("n_folds", None)):
            va, vb = a.get(key, default), b.get(key, default)
            if va is not None and vb is not None and va != vb:
                raise HemwslInputError(f"--cam-dirs {d}: {key} {json.dumps(vb)}, {dirs[0]}'s {json.dumps(va)}; "
                                       "members share the folds and the heatmap grid")
        if rec.get("cv_dir") and rec.get("cv_dir") == first.get("cv_dir"):
            raise HemwslInputError(f"--cam-dirs {d}: heatmaps of the same train-cv run as {dirs[0]} ({rec['cv_dir']}); "
                                   "an ensemble averages different runs (e.g. train_seed 0, 1, ...)")
    _check_same_folds(dirs, records)
    have = [_pairs(d) for d in dirs]
    pairs = sorted(set.intersection(*have))
    if methods:
        pairs = [p for p in pairs if p[0] in methods]
        for m in methods:
            for d, h in zip(dirs, have):
                if not any(p[0] == m for p in h):
                    raise HemwslInputError(f"--methods {m}: no heatmaps of it in {d}")
    if layers:
        pairs = [p for p in pairs if p[1] in layers]
        for layer in layers:
            for d, h in zip(dirs, have):
                if not any(p[1] == layer and (not methods or p[0] in methods) for p in h):
                    raise HemwslInputError(f"--layers {layer}: no heatmaps of it in {d}")
    if not pairs:
        raise HemwslInputError(f"--cam-dirs: no (method, layer) heatmaps that every member holds "
                               f"({', '.join(f'{d}: {len(h)}' for d, h in zip(dirs, have))})")
    stems: list[str] | None = None
    for method, layer in pairs:
        per = [sorted(p.name[:-len(".nii.gz")] for p in (d / method / layer).glob("*.nii.gz")) for d in dirs]
        for d, s in zip(dirs[1:], per[1:]):
            if s != per[0]:
                miss = sorted(set(per[0]) ^ set(s))
                raise HemwslInputError(f"--cam-dirs {d}: {method}/{layer} holds {len(s)} patients, {dirs[0]} "
                                       f"{len(per[0])} (differ: {', '.join(miss[:5])}); finish each member's cam-cv "
                                       "on the same patients first")
        if stems is None:
            stems = per[0]
    return records, pairs, list(stems or [])


def _check_grids(dirs: list[Path], pairs, stems) -> dict:
    """Every map of a patient (each member's, each (method, layer)) on one grid: the shape of the member's first map
    of the pair and the affine of the patient's first map, from the headers, before any write. Returns
    ``{stem: affine}``, the affine the ensemble's maps of the patient are written with."""
    from hemwsl.cam.volume import heatmap_path

    affines = {}
    for stem in stems:
        first = heatmap_path(dirs[0], stem, pairs[0])
        affines[stem] = _header(first)[1]
        for key in pairs:
            ref = heatmap_path(dirs[0], stem, key)
            shape = _header(ref)[0]
            for d in dirs:
                path = heatmap_path(d, stem, key)
                s, a = _header(path)
                if s != shape:
                    raise HemwslInputError(f"{path}: shape {s}, {ref} {shape}; members share the heatmap grid")
                if not np.allclose(a, affines[stem], atol=1e-3):
                    raise HemwslInputError(f"{path}: another affine than {first}; members share the heatmap grid")
    return affines


def _normalised(arr: np.ndarray, mode: str) -> np.ndarray:
    from hemwsl.cam.base import normalize_per_slice, normalize_per_volume

    if mode == "slice":
        return np.asarray(normalize_per_slice(arr, mode="minmax", dims=(0, 1)), dtype=np.float32)
    if mode == "volume":
        return np.asarray(normalize_per_volume(arr, mode="max"), dtype=np.float32)
    return arr.astype(np.float32)


def ensemble_heatmaps(cam_dirs: Sequence[str | os.PathLike], out: str | os.PathLike, *,
                      methods: Sequence[str] | None = None, layers: Sequence[str] | None = None,
                      normalise: str = "slice") -> dict:
    """Write the mean of the members' heatmaps, one NIfTI per (method, layer, patient) in ``out``, with the
    members' affine; resumable (a finished file is kept) and refused when ``out`` holds another ensemble.

    Returns ``{"pairs": [...], "patients": n, "written": n_files}``. ``out/cam_checkpoint.json`` records the
    members (their records included) and the normalisation; ``hemwsl benchmark`` accepts it with ``--cv-dir``
    set to any member's train-cv run (the folds are theirs)."""
    from hemwsl.cam.volume import heatmap_path, save_heatmaps
    from hemwsl.data.io import atomic_write_text, read_json_file

    if normalise not in ENSEMBLE_NORMALISATIONS:
        raise HemwslInputError(f"--normalise {normalise!r}: one of {', '.join(ENSEMBLE_NORMALISATIONS)}")
    from hemwsl.data.datalist import resolve_dataset_dir

    dirs = [Path(d) for d in cam_dirs]
    out = Path(out)
    out_resolved = resolve_dataset_dir(out, "--out")
    for d in dirs:
        member = resolve_dataset_dir(d, "--cam-dirs")
        if out_resolved == member or member in out_resolved.parents:
            raise HemwslInputError(f"--out {out}: inside the member {d}; give a folder of its own")
    records, pairs, stems = ensemble_members(dirs, methods, layers)
    affines = _check_grids(dirs, pairs, stems)  # shapes and affines checked here, once
    runs = [rec.get("cv_dir") for rec in records]
    folds = [(rec.get("settings") or {}).get("folds") for rec in records]
    checkpoint = records[0].get("checkpoint", "best")
    why = _predictions_missing(runs, folds[0], checkpoint)
    # the members' slice probabilities read and checked before any map is written (a corrupt CSV is named first)
    mean_csv = _mean_predictions_csv(runs, folds[0], checkpoint) if why is None else None
    record = {"checkpoint": records[0].get("checkpoint", "best"), "normalise": normalise,
              "members": [{"cam_dir": str(resolve_dataset_dir(d, "--cam-dirs")), **rec}
                          for d, rec in zip(dirs, records)]}
    record = json.loads(json.dumps(record))
    marker = out / _MARKER
    if marker.exists():
        old = read_json_file(marker, "record of the ensemble")
        keep = ("checkpoint", "normalise")
        diffs = [f"{k} {json.dumps(old.get(k))} -> {json.dumps(record[k])}" for k in keep if old.get(k) != record[k]]
        if [m.get("cam_dir") for m in old.get("members", [])] != [m["cam_dir"] for m in record["members"]]:
            diffs.append("other members")
        if diffs:
            raise HemwslInputError(f"--out {out}: holds another ensemble ({'; '.join(diffs)}); use another folder")
    todo = {stem: [k for k in pairs if not heatmap_path(out, stem, k).is_file()] for stem in stems}
    # every member map to average is read and checked before the first write (the headers alone miss a truncated
    # file or a NaN voxel): a bad map is named while the output folder holds nothing of this run
    for stem in stems:
        for key in todo[stem]:
            for d in dirs:
                read_heatmap_checked(heatmap_path(d, stem, key))
    if not marker.exists():
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(marker, json.dumps(record, indent=1) + "\n")
    written = 0
    for stem in stems:
        maps = {}
        for key in todo[stem]:
            arrays = [_normalised(read_heatmap_checked(heatmap_path(d, stem, key)), normalise) for d in dirs]
            maps[key] = np.mean(arrays, axis=0)
        if maps:
            save_heatmaps(maps, affines[stem], out, stem)
            written += len(maps)
    predictions = None
    if mean_csv is not None:
        atomic_write_text(out / ENSEMBLE_PREDICTIONS, mean_csv)
        predictions = str(out / ENSEMBLE_PREDICTIONS)
    return {"pairs": [list(p) for p in pairs], "patients": len(stems), "written": written,
            "predictions": predictions, **({"no_predictions": why} if why else {})}


def _predictions_missing(runs: list, folds, which: str) -> str | None:
    """Why the members' slice probabilities cannot be averaged (``None``: they can)."""
    from hemwsl.engines.runs import fold_predictions

    if not isinstance(folds, int) or isinstance(folds, bool):
        return "the members do not record their folds"
    for r in runs:
        if not isinstance(r, str) or not Path(r).is_dir():
            return f"the train-cv run {r} is not here"
        for k in range(folds):
            try:
                fold_predictions(r, k, which)
            except HemwslInputError as err:
                return str(err)
    return None


def ensemble_predictions(cv_dirs: Sequence[str | os.PathLike], out_csv: str | os.PathLike, folds: int,
                         which: str = "best") -> Path:
    """The mean of several train-cv runs' out-of-fold slice probabilities, every fold's test part in one CSV
    (``patient, slice, label_<output>..., prob_<output>...``, written atomically). The runs must cover the same
    slices with the same labels and outputs (runs on the same folds of the same data); one line naming the file and
    what differs otherwise."""
    from hemwsl.data.io import atomic_write_text

    text = _mean_predictions_csv(cv_dirs, folds, which)
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_csv, text)
    return out_csv


def _mean_predictions_csv(cv_dirs: Sequence[str | os.PathLike], folds: int, which: str = "best") -> str:
    """The text of :func:`ensemble_predictions`' CSV; every member file read and checked, nothing written."""
    import csv
    import io

    from hemwsl.engines.runs import fold_predictions, read_predictions_csv

    if len(cv_dirs) < 2:
        raise HemwslInputError(f"an ensemble of predictions needs at least two train-cv runs, got {len(cv_dirs)}")
    merged: dict[tuple[str, int], list] = {}
    names = None
    for k in range(int(folds)):
        ref = None
        for d in cv_dirs:
            f = fold_predictions(d, k, which)
            p = read_predictions_csv(f)
            rows = {(str(a), int(b)): i for i, (a, b) in enumerate(zip(p["patient"], p["slice"]))}
            if len(rows) != len(p["patient"]):
                raise HemwslInputError(f"{f}: a (patient, slice) row given more than once")
            if ref is None:
                ref, ref_file, names = (p, rows), f, p["names"] if names is None else names
            if p["names"] != names:
                raise HemwslInputError(f"{f}: outputs {', '.join(p['names'])}, {ref_file} {', '.join(names)}; "
                                       "members share the outputs")
            if set(rows) != set(ref[1]):
                diff = sorted(set(rows) ^ set(ref[1]))[:3]
                raise HemwslInputError(f"{f}: other slices than {ref_file} (e.g. {diff}); members share the folds")
            for key, i in rows.items():
                j = ref[1][key]
                if not np.array_equal(p["label"][i], ref[0]["label"][j]):
                    raise HemwslInputError(f"{f}: patient {key[0]} slice {key[1]}: labels differ from {ref_file}")
                if key in merged and d == cv_dirs[0]:
                    raise HemwslInputError(f"{f}: patient {key[0]} slice {key[1]} also in another fold's test part")
                merged.setdefault(key, [p["label"][i], []])[1].append(p["prob"][i])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["patient", "slice", *(f"label_{n}" for n in names), *(f"prob_{n}" for n in names)])
    for (patient, z), (label, probs) in sorted(merged.items()):
        mean = np.mean(probs, axis=0)
        w.writerow([patient, z, *(int(v) for v in label), *(f"{v:.6f}" for v in mean)])
    return buf.getvalue()
