"""Hemorrhage volume you can report: a scan-level call, a volume estimate, and their agreement with the truth.

The clinical number is the bleed's volume in mL, and a scan without blood must get 0 mL. Two pieces:

* **a scan-level decision** from the slice probabilities of a classifier (out of fold): the slices'
  probabilities are aggregated into one scan score (:data:`SCAN_AGGREGATIONS`: ``max``, ``top3``,
  the mean of the three largest, ``noisy_or`` ``1 - prod(1 - p)``, ``run``, the longest run of
  consecutive slices with ``p >= 0.5`` as a fraction of 3 slices), and the scan is called positive at an
  operating point chosen on the selection patients of its fold only: the highest threshold whose
  sensitivity there is at least ``min_sensitivity`` (:func:`choose_scan_threshold`); the aggregation is
  chosen there too (largest AUROC). A scan called negative gets 0 mL.
* **a volume estimate** from a predicted mask volume (any mask the project makes, e.g. the validated
  hyperdense prior on the classifier-positive slices written by ``hemwsl pseudo --threshold none``):
  its voxel count x voxel volume, optionally recalibrated by a line ``true = a * pred + b`` fitted on the
  positive selection patients of the fold (``calibrate=True``); the ABC/2 of the predicted mask
  (Kothari et al. 1996) beside it.

:func:`run_quantify` evaluates both on every patient out of fold: per-patient CSV, the agreement table
(:func:`hemwsl.metrics.agreement.volume_agreement`: Pearson r, Lin's CCC, Bland-Altman bias and limits,
MAE, share within 5 mL, share of hemorrhage-free scans under 1 mL; overall and by true size), the scan-level
AUROC, sensitivity and specificity with patient-bootstrap CIs, and a scatter and a Bland-Altman plot.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hemwsl.constants import IMAGE, PATIENT
from hemwsl.errors import HemwslInputError, check_choice
from hemwsl.scanmodel import (  # noqa: F401  (the scan-level call lives beside the scan model; re-exported)
    SCAN_AGGREGATIONS,
    choose_scan_call,
    choose_scan_threshold,
    scan_score,
)

__all__ = ["SCAN_AGGREGATIONS", "SCAN_CALLS", "scan_score", "choose_scan_threshold", "choose_scan_call",
           "scan_probabilities", "fit_calibration", "check_min_slices", "check_slice_coverage",
           "run_quantify"]

logger = logging.getLogger(__name__)

#: The scan-level calls :func:`run_quantify` chooses among: the aggregations and ``"model"``, a
#: :class:`hemwsl.scanmodel.ScanModel` trained on the fold's selection patients.
SCAN_CALLS: tuple[str, ...] = SCAN_AGGREGATIONS + ("model",)


def _prediction_files(prediction_csvs: Any, name: str = "prediction_csvs") -> list:
    """A list of CSV paths: one path (a ``str`` or path) stands for itself (it is not iterated per character)."""
    if isinstance(prediction_csvs, (str, os.PathLike)):
        return [prediction_csvs]
    if isinstance(prediction_csvs, Mapping) or not isinstance(prediction_csvs, Sequence):
        raise HemwslInputError(f"{name} must be a list of predictions CSV paths, got {type(prediction_csvs).__name__}")
    bad = [f for f in prediction_csvs if not isinstance(f, (str, os.PathLike))]
    if bad:
        raise HemwslInputError(f"{name} must be a list of predictions CSV paths, got {bad[0]!r} among them")
    return list(prediction_csvs)


def read_scan_probabilities(prediction_csvs: Sequence[str | os.PathLike] | str | os.PathLike, output: str = "any",
                            labels: bool = True) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, str]]:
    """``({patient: probabilities}, {patient: slice indices}, {patient: its CSV})``, both arrays in slice order, as
    :func:`scan_probabilities` checks them (``labels=False``: ``label_*`` columns optional)."""
    from hemwsl.engines.runs import read_predictions_csv

    out: dict[str, np.ndarray] = {}
    slices: dict[str, np.ndarray] = {}
    source: dict[str, str] = {}
    files = _prediction_files(prediction_csvs)
    if not files:
        raise HemwslInputError("prediction_csvs: no predictions CSV given")
    for f in files:
        if not Path(f).is_file():
            raise HemwslInputError(f"{f}: predictions CSV not found")
        d = read_predictions_csv(f, labels=labels)
        if not len(d["patient"]):
            raise HemwslInputError(f"{f}: no prediction rows (a header only)")
        names = d.get("names", ["any"])
        if output not in names:
            raise HemwslInputError(f"{f}: no output {output!r} (outputs: {', '.join(names)})")
        col = names.index(output)
        # probabilities in [0, 1] and each (patient, slice) once: checked by read_predictions_csv
        for pat in dict.fromkeys(d["patient"].tolist()):
            if pat in out:
                raise HemwslInputError(f"{f}: patient {pat} is also in an earlier predictions file")
            sel = d["patient"] == pat
            order = np.argsort(d["slice"][sel])
            out[str(pat)] = d["prob"][sel][order, col]
            slices[str(pat)] = d["slice"][sel][order]
            source[str(pat)] = str(f)
    return out, slices, source


def check_slice_coverage(entries: Mapping[str, Any], slice_index: Mapping[str, np.ndarray],
                         source: Mapping[str, str]) -> dict:
    """Each scan of ``entries`` (``{patient: datalist entry}``) has one prediction per slice in ``slice_index``
    (:func:`read_scan_probabilities`), read from ``source``: a slice beyond the scan's (another dataset's CSV) or
    a missing one is one line naming the CSV and the patient (``hemwsl quantify``, ``hemwsl ablation
    --predictions``). Patients without predictions are the caller's to name. Returns each scan's grid (header)."""
    grids = {pat: _ct_grid(e[IMAGE]) for pat, e in entries.items()}
    for pat, g in grids.items():
        if g is None or len(g[0]) != 3 or pat not in slice_index:
            continue
        z, have = g[0][2], slice_index[pat]
        if have.size and have[-1] >= z:
            raise HemwslInputError(f"{source[pat]}: patient {pat}: slice {int(have[-1])} is outside its scan's {z} "
                                   f"slices (0 to {z - 1})")
        if have.size != z:
            lost = sorted(set(range(z)) - set(int(v) for v in have))
            raise HemwslInputError(f"{source[pat]}: patient {pat}: no prediction for slice(s) "
                                   f"{', '.join(map(str, lost[:5]))}{' ...' if len(lost) > 5 else ''} of its {z}")
    return grids


def check_min_slices(min_slices: int, depths: Sequence[int], name: str = "min_slices", where: str = "") -> None:
    """A thin-component rule that keeps no component of any scan (``min_slices`` above the slices of every scan,
    ``depths``) would empty every mask: one line naming ``name`` (``hemwsl quantify``, ``hemwsl package``)."""
    if depths and min_slices > max(depths):
        raise HemwslInputError(f"{name} {min_slices} exceeds the slices of every scan{where} (at most {max(depths)}): "
                               "it would drop every predicted component")


def _match_patient_spellings(probs: dict, slice_index: dict, source: dict, entries: Mapping[str, Any]) -> None:
    """Predictions of a numeric patient id spelt without the dataset's zero padding (``3`` for ``003``) are the
    dataset patient's (as the pseudo-label reader matches them); the same patient spelt both ways in the
    predictions is one line naming the file."""
    from hemwsl.data.datalist import match_patient

    for p in [p for p in probs if p not in entries]:
        q = match_patient(p, entries)
        if q is None:
            continue
        if q in probs:
            raise HemwslInputError(f"{source[p]}: patient {q} is written both {p!r} and {q!r} in the predictions; "
                                   "use one spelling")
        probs[q], slice_index[q], source[q] = probs.pop(p), slice_index.pop(p), source.pop(p)


def scan_probabilities(prediction_csvs: Sequence[str | os.PathLike] | str | os.PathLike, output: str = "any"
                       ) -> dict[str, np.ndarray]:
    """``{patient: slice probabilities in slice order}`` from prediction CSVs of the classifier bundle (each
    patient in one file, e.g. the out-of-fold ``predictions_test[_last].csv`` of every fold; one path is a list of
    one). Each CSV must hold rows, probabilities in [0, 1] and each (patient, slice) once: else one line naming the
    CSV and the line."""
    return read_scan_probabilities(prediction_csvs, output)[0]


def fit_calibration(pred_ml: Sequence[float], true_ml: Sequence[float]) -> tuple[float, float]:
    """Least-squares line ``true = a * pred + b`` (``(1, 0)``, no recalibration, with fewer than 3 scans, none
    included, or no spread). Volumes of unequal length or not finite are refused."""
    p = np.asarray(pred_ml, dtype=np.float64).ravel()
    t = np.asarray(true_ml, dtype=np.float64).ravel()
    if p.shape != t.shape:
        raise HemwslInputError(f"fit_calibration: {p.size} predicted and {t.size} true volumes")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(t))):
        raise HemwslInputError("fit_calibration: volumes must be finite numbers (mL)")
    if p.size < 3 or p.std() == 0:
        return 1.0, 0.0
    a, b = np.polyfit(p, t, 1)
    return float(a), float(b)


def _scan_features(entries: Mapping[str, Mapping], probs: Mapping[str, np.ndarray], hu_reference: float | None = None
                   ) -> dict[str, np.ndarray]:
    """:func:`hemwsl.scanmodel.scan_features` of every patient (the validated prior's defaults), on HU calibrated
    to ``hu_reference`` when given (:func:`hemwsl.thresholds.calibrate_hu`)."""
    from hemwsl.data.io import load_volume
    from hemwsl.scanmodel import scan_features
    from hemwsl.thresholds.intensity import calibrate_hu
    from hemwsl.transforms.array import SkullStrip

    out = {}
    for pat, e in entries.items():
        vol = load_volume(e[IMAGE])
        brain = np.asarray(SkullStrip()(vol.array[None]))[0] > 0
        out[pat] = scan_features(probs[pat], calibrate_hu(vol.array, brain, hu_reference)[0], brain, vol.spacing)
    return out


def _volumes(path: str | os.PathLike, min_slices: Sequence[int] = (1,), grid: Sequence[int] | None = None,
             affine: np.ndarray | None = None) -> tuple[dict[int, float], dict[int, float], tuple[float, float, float]]:
    """``({min_slices: mL}, {min_slices: ABC/2 mL}, spacing)`` of a binary mask NIfTI, for each rule that drops the
    3D components spanning fewer slices (:func:`hemwsl.metrics.volume.drop_thin_components`; 1 keeps all).

    ``grid``: the shape of the patient's CT; given (a predicted mask), the mask must have it and hold 0 and 1
    only (a CT volume or a mask of another grid would be counted in mL without any error); ``affine``: the CT's
    voxel-to-world affine, which the mask's must match (another voxel size would count other mL)."""
    import nibabel as nib

    from hemwsl.metrics.agreement import abc2_volume_ml
    from hemwsl.metrics.volume import drop_thin_components_by_rule, lesion_volume_ml

    p = Path(path)
    if not p.is_file():
        raise HemwslInputError(f"{p}: mask not found")
    try:
        img = nib.load(str(p))
        values = np.asarray(img.dataobj)
    except Exception as err:
        raise HemwslInputError(f"{p}: cannot read the mask ({type(err).__name__}: {err})") from err
    m = values > 0
    if m.ndim != 3:
        raise HemwslInputError(f"{p}: a mask must be 3D, got shape {m.shape}")
    if grid is not None:
        if tuple(m.shape) != tuple(int(n) for n in grid):
            raise HemwslInputError(f"{p}: mask shape {tuple(m.shape)} does not match its CT's {tuple(grid)} "
                                   "(predicted masks must be on the CT grid)")
        if affine is not None and not np.allclose(img.affine, affine, rtol=1e-4, atol=1e-2):
            zooms = tuple(round(float(z), 4) for z in img.header.get_zooms()[:3])
            ct = tuple(round(float(v), 4) for v in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))
            raise HemwslInputError(f"{p}: the mask's voxel grid (affine; voxel size {zooms} mm) differs from its CT's "
                                   f"(voxel size {ct} mm): predicted masks must be written on the CT grid")
        odd = values[(values != 0) & (values != 1)]
        if odd.size:
            raise HemwslInputError(f"{p}: a predicted mask must hold 0 and 1 only, found {odd.flat[0].item():g} "
                                   f"({odd.size} voxel(s))")
    sp = tuple(float(s) for s in img.header.get_zooms()[:3])
    kept = drop_thin_components_by_rule(m, min_slices)  # one labelling for every rule
    return ({n: lesion_volume_ml(k, sp) for n, k in kept.items()}, {n: abc2_volume_ml(k, sp) for n, k in kept.items()},
            sp)


def _ct_grid(image: str | os.PathLike) -> tuple[tuple[int, ...], np.ndarray] | None:
    """The shape and affine of a CT (its NIfTI header; a DICOM series folder: ``None``, not checked)."""
    import nibabel as nib

    from hemwsl.data.io import is_nifti

    if not is_nifti(image) or not Path(image).is_file():
        return None
    try:
        img = nib.load(str(image))
        shape = tuple(int(n) for n in img.shape)
    except Exception as err:
        raise HemwslInputError(f"{image}: cannot read as NIfTI ({type(err).__name__}: {err})") from err
    return (tuple(n for n in shape if n != 1) if len(shape) > 3 else shape), np.asarray(img.affine)


def _mask_file(masks: Path, patient: str) -> Path:
    """``<masks>/<patient>.nii.gz``, else the one ``<masks>/fold<k>/<patient>.nii.gz`` (the per-fold folders of
    ``hemwsl ablation``'s pseudo-labels); the direct path (absent) when there is neither."""
    f = masks / f"{patient}.nii.gz"
    if f.is_file():
        return f
    found = sorted(masks.glob(f"fold*/{patient}.nii.gz"))
    odd = [p for p in [f, *found] if (p.exists() or p.is_symlink()) and not p.is_file()]
    if odd:  # a folder (or a broken link) where the mask should be: not a patient without a mask (0 mL)
        raise HemwslInputError(f"{odd[0]}: not a mask file ({'a folder' if odd[0].is_dir() else 'unreadable'}); give "
                               f"the predicted mask of patient {patient} as <patient>.nii.gz")
    if len(found) > 1:
        raise HemwslInputError(f"{masks}: patient {patient} has masks in several fold folders "
                               f"({', '.join(str(p.parent.name) for p in found)})")
    return found[0] if found else f


def _no_positive_selection(k: int, n: int) -> str:
    return (f"folds: the {n} selection patient(s) of fold {k} hold no scan with hemorrhage: cannot choose its scan "
            "threshold (choose other selection patients: `hemwsl quantify --select rest`, or a larger --val-fraction)")


def _check_selection_labels(entries: Mapping[str, Mapping], test_fold: Mapping[str, int],
                            selection: Mapping[int, Any]) -> None:
    """Every fold's selection patients hold a positive scan (by their slice labels, when the datalist has them:
    before any mask is read); a patient in no test fold is named."""
    from hemwsl.constants import SLICE_LABELS

    outside = sorted(p for p in entries if p not in test_fold)
    if outside:
        raise HemwslInputError(f"folds: patient(s) {', '.join(outside[:5])}{' ...' if len(outside) > 5 else ''} "
                               "in no test fold")
    if not all(e.get(SLICE_LABELS) is not None for e in entries.values()):
        return
    for k in sorted(set(test_fold.values())):
        sel = [p for p in selection.get(k, ()) if p in entries]
        if not any(np.any(entries[p][SLICE_LABELS]) for p in sel):
            raise HemwslInputError(_no_positive_selection(k, len(sel)))


def _check_rerun(out: Path, settings: dict) -> None:
    """A report folder holding a quantify report of other settings (its ``summary.json``) is refused, naming what
    differs: reports of two settings never share a folder (the number of bootstrap replicates may change; a masks
    folder given by another path is the same folder)."""
    from hemwsl.data.io import read_json_file
    from hemwsl.engines.runs import settings_difference

    f = out / "summary.json"
    if not f.is_file():
        return
    old = read_json_file(f, "quantify report")
    old = old.get("settings") if isinstance(old, dict) else None
    if not isinstance(old, dict):
        raise HemwslInputError(f"{out}: holds a quantify report without its settings ({f}); use another --out")
    old = {k: v for k, v in old.items() if k != "n_boot"}
    new = {k: v for k, v in settings.items() if k in old or v is not None}  # keys an earlier hemwsl left out
    if isinstance(old.get("masks_dir"), str) and Path(old["masks_dir"]).resolve() == Path(new["masks_dir"]).resolve():
        new["masks_dir"] = old["masks_dir"]
    theirs = old.get("aggregations")
    if isinstance(theirs, list) and [a for a in new["aggregations"] if a != "model"] == theirs:
        new["aggregations"] = theirs  # the scan model left out when a fold's selection patients were too few
    diff = settings_difference(old, new, limit=4)
    if diff:
        raise HemwslInputError(f"{out}: holds a quantify report of other settings ({'; '.join(diff)}; {f}); use "
                               "another --out")


def run_quantify(datalist: Sequence[Mapping], masks_dir: str | os.PathLike, prediction_csvs: Sequence[str | os.PathLike],
                 out_dir: str | os.PathLike, folds: tuple[Mapping[str, int], Mapping[int, set[str]]], *,
                 aggregations: Sequence[str] = SCAN_AGGREGATIONS, min_sensitivity: float = 0.9,
                 calibrate: bool = False, min_slices: Sequence[int] = (1,), n_boot: int = 2000, seed: int = 0,
                 figures: bool = True, hu_reference: float | None = None,
                 rule_keeps_sensitivity: bool = False) -> dict[str, Any]:
    """Evaluate the scan-level call and the volume estimate on every patient, each by its own fold.

    Args:
        datalist: the dataset (entries with ``patient`` and ``label``, the true mask).
        masks_dir: predicted masks ``<patient>.nii.gz`` on the CT grid (e.g. ``hemwsl pseudo`` output), directly
            or in ``fold<k>/`` subfolders (e.g. a row of ``hemwsl ablation``'s ``pseudo/``).
        prediction_csvs: out-of-fold slice predictions of every patient (a list of CSVs; one path: a list of one).
            Each patient's rows must cover the slices of its scan once each, with probabilities in [0, 1].
        out_dir: report folder (``per_patient.csv``, ``summary.md``, ``summary.json``, PNG figures).
        folds: ``({patient: test fold}, {fold: selection patients})`` (:func:`hemwsl.benchmark.cv_folds`).
            With ``select="rest"`` (as the benchmark) a fold chooses on every patient outside its test
            part, whose scores come from the other folds' models (themselves trained on some of this
            fold's test patients: labels reach the choice only through those models' training, and the
            scores of several models share one operating point); ``select="val"`` restricts the choice
            to the fold's validation patients, scored by the other models too.
        aggregations: candidate scan aggregations; each fold's selection patients choose one (AUROC).
        min_sensitivity: the operating point's sensitivity on the selection patients.
        calibrate: also fit ``true = a * pred + b`` on each fold's positive selection patients.
        min_slices: candidate rules for the predicted masks: 3D components spanning fewer slices are dropped
            (1 keeps all); with several, each fold's selection patients choose the one with the smallest mean
            absolute error of their (scan-called) mL. One integer is the list of it; a value above every scan's
            slice count is refused (it would drop every mask).
        rule_keeps_sensitivity: choose the ``min_slices`` rule only among those that leave at least
            ``min_sensitivity`` of the selection patients' bleeding scans a volume (estimate > 0 mL after their scan
            call): a strict rule drops small true bleeds, and the scan call's sensitivity says nothing of that. The
            smallest error among them; when none does, the rule that leaves the most (then the smallest error).
        n_boot: bootstrap replicates of the CIs.
        seed: bootstrap seed.
        figures: write the scatter and Bland-Altman PNGs.
        hu_reference: the scan model's prior features on HU shifted so that each scan's brain reads this value
            (:func:`hemwsl.thresholds.calibrate_hu`; give the masks' own, e.g. the benchmark's ``--hu-reference``).

    Returns:
        The summary (also in ``summary.json``).
    """
    from hemwsl.data.io import atomic_write_text
    from hemwsl.metrics.agreement import agreement_by_size
    from hemwsl.metrics.classification import bootstrap_ci, compute_auroc
    from hemwsl.thresholds.intensity import check_hu_reference

    if isinstance(aggregations, str):
        aggregations = [aggregations]
    for a in aggregations:
        check_choice("scan aggregation", a, SCAN_CALLS)
    if not aggregations:
        raise HemwslInputError("no scan aggregation given")
    if isinstance(min_slices, (int, np.integer)) and not isinstance(min_slices, bool):
        min_slices = [min_slices]  # one rule
    if isinstance(min_slices, (str, bytes, Mapping)) or not isinstance(min_slices, (Sequence, set, np.ndarray)) or any(
            isinstance(n, bool) or not isinstance(n, (int, np.integer)) for n in min_slices):
        raise HemwslInputError(f"min_slices must be an integer >= 1 or a list of them, got {min_slices!r}")
    min_slices = sorted({int(n) for n in min_slices})
    if not min_slices or min_slices[0] < 1:
        raise HemwslInputError(f"min_slices: give values >= 1, got {min_slices}")
    if rule_keeps_sensitivity and len(min_slices) < 2:
        raise HemwslInputError(f"rule_keeps_sensitivity (--rule-keeps-sensitivity) chooses among several min_slices "
                               f"rules (--min-slices), got one ({min_slices[0]}): give two or more, or leave it out")
    hu_reference = check_hu_reference(hu_reference)
    if not datalist:
        raise HemwslInputError("datalist: no patients (an empty datalist)")
    if not (isinstance(folds, (tuple, list)) and len(folds) == 2 and isinstance(folds[0], Mapping)
            and isinstance(folds[1], Mapping)):
        raise HemwslInputError("folds must be ({patient: test fold}, {fold: selection patients}), as "
                               "hemwsl.benchmark.cv_folds returns")
    test_fold, selection = folds
    csvs = _prediction_files(prediction_csvs)
    probs, slice_index, source = read_scan_probabilities(csvs)
    masks = Path(masks_dir)
    if not masks.is_dir():
        what = "a file, not the masks folder" if masks.exists() else "masks folder not found"
        raise HemwslInputError(f"{masks}: {what} (give the folder of predicted masks <patient>.nii.gz)")
    from hemwsl.engines.runs import check_outside_run

    check_outside_run(out_dir, masks, "--out", "--masks", "masks folder")  # a report among the masks it reads
    _check_rerun(Path(out_dir), {"aggregations": list(aggregations), "min_sensitivity": min_sensitivity,
                                 "calibrate": calibrate, "min_slices": min_slices, "masks_dir": str(masks_dir),
                                 "hu_reference": list(hu_reference) if isinstance(hu_reference, tuple) else hu_reference,
                                 **({"rule_keeps_sensitivity": True} if rule_keeps_sensitivity else {})})
    entries = {str(e[PATIENT]): e for e in datalist}
    _match_patient_spellings(probs, slice_index, source, entries)
    missing = sorted(p for p in entries if p not in probs)
    if missing:
        where = ", ".join(str(f) for f in csvs[:3]) + (" ..." if len(csvs) > 3 else "")
        raise HemwslInputError(f"no slice predictions for patient(s) {', '.join(missing[:5])}"
                               f"{' ...' if len(missing) > 5 else ''} in {where}")
    extra = sorted(p for p in probs if p not in entries)
    if extra:
        logger.warning("predictions of %d patient(s) not in the datalist ignored (e.g. %s in %s)", len(extra),
                       extra[0], source[extra[0]])
    grids = check_slice_coverage(entries, slice_index, source)  # before any mask is read
    depths = [g[0][2] for g in grids.values() if g is not None and len(g[0]) == 3]
    check_min_slices(min_slices[-1], depths)
    _check_selection_labels(entries, test_fold, selection)
    mask_files = {pat: _mask_file(masks, pat) for pat in entries}
    if entries and not any(f.is_file() for f in mask_files.values()):
        raise HemwslInputError(f"{masks}: no predicted mask <patient>.nii.gz (or fold<k>/<patient>.nii.gz) for any "
                               f"of the {len(entries)} patients (e.g. {next(iter(mask_files.values())).name})")
    rows: dict[str, dict[str, Any]] = {}
    no_mask: list[str] = []
    for pat, e in entries.items():
        if not e.get("label"):
            raise HemwslInputError(f"patient {pat} has no true mask in the datalist: quantify needs masks")
        true_ml, true_abc, sp = _volumes(e["label"])
        true_ml, true_abc = true_ml[1], true_abc[1]
        f = mask_files[pat]
        zero = {n: 0.0 for n in min_slices}
        grid = grids[pat]
        pred_ml, pred_abc, _ = (_volumes(f, min_slices, grid=grid[0] if grid else None,
                                         affine=grid[1] if grid else None) if f.is_file() else (zero, zero, sp))
        if not f.is_file():
            no_mask.append(pat)
            logger.warning("%s: no predicted mask in %s; counted as 0 mL", pat, masks)
        rows[pat] = {"patient": pat, "fold": test_fold.get(pat, -1), "true_ml": true_ml,
                     "true_abc2_ml": true_abc, "mask_ml_by_rule": pred_ml, "mask_abc2_ml_by_rule": pred_abc,
                     "label": int(true_ml > 0),
                     **{f"score_{a}": scan_score(probs[pat], a) for a in aggregations if a != "model"}}
    if "model" in aggregations:  # a scan model needs 2 scans of each kind among every fold's selection patients
        counts = [np.bincount([rows[p]["label"] for p in selection[k] if p in rows], minlength=2).min()
                  for k in set(test_fold.values())]
        if min(counts) < 2:
            logger.warning("scan model left out: a fold's selection patients hold fewer than 2 scans of one kind")
            aggregations = [a for a in aggregations if a != "model"]
            if not aggregations:
                raise HemwslInputError("the scan model needs at least 2 scans with and 2 without hemorrhage among "
                                       "every fold's selection patients; give other --aggregations")
    features = _scan_features(entries, probs, hu_reference) if "model" in aggregations else {}
    # per fold: aggregation (AUROC), threshold (sensitivity), optional calibration, on selection patients only
    choices = {}
    for k in sorted(set(test_fold.values())):
        sel = [rows[p] for p in sorted(selection.get(k, ())) if p in rows]  # sorted: a set's order changes per process
        y = np.array([r["label"] for r in sel])
        if not y.any():
            raise HemwslInputError(_no_positive_selection(k, len(sel)))
        scores = {a: [r[f"score_{a}"] for r in sel] for a in aggregations if a != "model"}
        if "model" in aggregations:  # trained on the selection patients; compared on its cross-fitted scores
            from hemwsl.scanmodel import fit_scan_model

            model, scores["model"] = fit_scan_model(np.stack([features[r["patient"]] for r in sel]), y,
                                                    min_sensitivity, return_oof=True)
            for r in rows.values():
                if r["fold"] == k:
                    r["score_model"] = float(model.probability(features[r["patient"]])[0])
        best, thr, auc = choose_scan_call({a: scores[a] for a in aggregations}, y, min_sensitivity)
        called = np.array(scores[best]) >= thr
        cals = {n: fit_calibration([r["mask_ml_by_rule"][n] for r in sel if r["label"]],
                                   [r["true_ml"] for r in sel if r["label"]]) if calibrate else (1.0, 0.0)
                for n in min_slices}

        def estimates(n: int) -> np.ndarray:  # the selection patients' mL as the test patients will get them
            a, b = cals[n]
            return np.array([max(0.0, a * r["mask_ml_by_rule"][n] + b) if c else 0.0 for r, c in zip(sel, called)])

        truth = np.array([r["true_ml"] for r in sel])
        errors = {n: float(np.abs(estimates(n) - truth).mean()) for n in min_slices}

        def kept(n: int) -> float:  # share of the bleeding selection scans the rule leaves a volume
            return float((estimates(n)[y == 1] > 0).mean())

        candidates = list(min_slices)
        if rule_keeps_sensitivity:
            sens_by_rule = {n: kept(n) for n in min_slices}
            enough = [n for n in min_slices if sens_by_rule[n] >= min_sensitivity - 1e-12]
            best_sens = max(sens_by_rule.values())
            candidates = enough or [n for n in min_slices if sens_by_rule[n] == best_sens]
        rule = min(candidates, key=errors.__getitem__)  # the smallest value among equals
        choices[k] = {"aggregation": best, "threshold": thr, "selection_auroc": auc, "calibration": cals[rule],
                      "min_slices": rule, "selection_mae_by_min_slices": {str(n): e for n, e in errors.items()}}
        if rule_keeps_sensitivity:
            choices[k]["selection_volume_sensitivity_by_min_slices"] = {str(n): v for n, v in sens_by_rule.items()}
        if best == "model":  # the fitted model itself, so that `hemwsl package --quantify-dir` packs what was chosen
            choices[k]["model"] = model.to_dict()
    for r in rows.values():
        c = choices.get(r["fold"])
        if c is None:
            raise HemwslInputError(f"patient {r['patient']} is in no test fold")
        r["min_slices"] = c["min_slices"]
        r["mask_ml"] = r["mask_ml_by_rule"][c["min_slices"]]
        r["mask_abc2_ml"] = r["mask_abc2_ml_by_rule"][c["min_slices"]]
        r["scan_score"] = r[f"score_{c['aggregation']}"]
        r["scan_call"] = int(r["scan_score"] >= c["threshold"])
        a, b = c["calibration"]
        est = max(0.0, a * r["mask_ml"] + b)
        r["pred_ml"] = est if r["scan_call"] else 0.0
        r["pred_abc2_ml"] = r["mask_abc2_ml"] if r["scan_call"] else 0.0
    ordered = [rows[p] for p in sorted(rows)]
    t = np.array([r["true_ml"] for r in ordered])
    y = np.array([r["label"] for r in ordered])
    calls = np.array([r["scan_call"] for r in ordered])

    def sens(yy, cc):
        return float(cc[yy == 1].mean()) if (yy == 1).any() else float("nan")

    def spec(yy, cc):
        return float(1 - cc[yy == 0].mean()) if (yy == 0).any() else float("nan")

    # AUROC per aggregation over all patients (one scale each); the calls use each fold's chosen one
    per_agg = {}
    for a in aggregations:
        sa = np.array([r[f"score_{a}"] for r in ordered])
        per_agg[a] = {"auroc": compute_auroc(y, sa),
                      "auroc_ci": bootstrap_ci(compute_auroc, y, sa, n_boot=n_boot, seed=seed)}
    scan = {"n": len(ordered), "n_positive": int(y.sum()), "auroc_by_aggregation": per_agg,
            "sensitivity": sens(y, calls), "sensitivity_ci": bootstrap_ci(sens, y, calls, n_boot=n_boot, seed=seed),
            "specificity": spec(y, calls), "specificity_ci": bootstrap_ci(spec, y, calls, n_boot=n_boot, seed=seed)}
    agreement = {
        "estimate": agreement_by_size(t, [r["pred_ml"] for r in ordered]),
        "mask, no scan call": agreement_by_size(t, [r["mask_ml"] for r in ordered]),
        "ABC/2 of the predicted mask": agreement_by_size(t, [r["pred_abc2_ml"] for r in ordered]),
        "ABC/2 of the true mask": agreement_by_size(t, [r["true_abc2_ml"] for r in ordered]),
    }
    from hemwsl.metrics.agreement import lins_ccc

    ccc_ci = bootstrap_ci(lins_ccc, t, np.array([r["pred_ml"] for r in ordered]), n_boot=n_boot, seed=seed)
    summary = {"scan": scan, "agreement": agreement, "ccc_ci": ccc_ci, "patients_without_mask": no_mask,
               "choices": {str(k): v for k, v in choices.items()},
               "settings": {"aggregations": list(aggregations), "min_sensitivity": min_sensitivity,
                            "calibrate": calibrate, "min_slices": min_slices, "masks_dir": str(masks),
                            **({"rule_keeps_sensitivity": True} if rule_keeps_sensitivity else {}),
                            "n_boot": n_boot,
                            "hu_reference": list(hu_reference) if isinstance(hu_reference, tuple) else hu_reference}}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    cols = ["patient", "fold", "label", "true_ml", "true_abc2_ml", "mask_ml", "mask_abc2_ml", "scan_score", "scan_call",
            "pred_ml", "pred_abc2_ml", "min_slices"] + [f"score_{a}" for a in aggregations]
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in ordered:
        w.writerow({c: (f"{r[c]:.4f}" if isinstance(r[c], float) else r[c]) for c in cols})
    atomic_write_text(out / "per_patient.csv", buf.getvalue())
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1, default=float) + "\n")
    atomic_write_text(out / "summary.md", _markdown(summary))
    if figures:
        _figures(ordered, out)
    return summary


def _f(v: float, d: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{d}f}"


def _markdown(s: Mapping[str, Any]) -> str:
    sc = s["scan"]
    lines = ["# Hemorrhage volume: scan-level call and mL against the true masks", "",
             f"{sc['n']} scans ({sc['n_positive']} with hemorrhage), each scored by the fold that did not train on it; "
             "aggregation, operating point and calibration chosen on the fold's selection patients.", "",
             "## Scan-level call", "",
             "Calls at each fold's operating point (aggregation and threshold chosen on its selection patients):", "",
             "| sensitivity [95% CI] | specificity [95% CI] |", "|---|---|",
             f"| {_f(sc['sensitivity'])} [{_f(sc['sensitivity_ci'][0])}, {_f(sc['sensitivity_ci'][1])}] "
             f"| {_f(sc['specificity'])} [{_f(sc['specificity_ci'][0])}, {_f(sc['specificity_ci'][1])}] |", "",
             "Patient-level AUROC of each aggregation over all patients:", "",
             "| aggregation | AUROC [95% CI] |", "|---|---|",
             *[f"| {a} | {_f(v['auroc'])} [{_f(v['auroc_ci'][0])}, {_f(v['auroc_ci'][1])}] |"
               for a, v in sc["auroc_by_aggregation"].items()], "",
             "Per fold: " + "; ".join(f"fold {k}: {c['aggregation']} >= {c['threshold']:.3f}"
                                      + (f", mL x {c['calibration'][0]:.2f} + {c['calibration'][1]:.1f}"
                                         if tuple(c["calibration"]) != (1.0, 0.0) else "")
                                      + (f", components spanning < {c['min_slices']} slices dropped"
                                         if c.get("min_slices", 1) > 1 else "")
                                      for k, c in s["choices"].items()), "",
             *([f"Patients without a predicted mask (counted as 0 mL): {', '.join(s['patients_without_mask'])}.", ""]
               if s["patients_without_mask"] else []),
             "## Volume agreement (mL)", "",
             f"Lin's CCC of the estimate: {_f(s['agreement']['estimate']['all']['ccc'])} "
             f"[{_f(s['ccc_ci'][0])}, {_f(s['ccc_ci'][1])}] (patient bootstrap).", "",
             "| estimate | scans | Pearson r | Lin's CCC | bias | 95% limits | MAE | within 5 mL | hemorrhage-free < 1 mL "
             "| with hemorrhage > 0 mL |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, by in s["agreement"].items():
        for stratum, a in by.items():
            label = name if stratum == "all" else f"{name}, true {stratum}"
            lines.append(f"| {label} | {a['n']} | {_f(a['pearson_r'])} | {_f(a['ccc'])} | {_f(a['bias'], 1)} | "
                         f"[{_f(a['loa_low'], 1)}, {_f(a['loa_high'], 1)}] | {_f(a['mae'], 1)} | "
                         f"{_f(a['within_tol'], 2)} | {_f(a['negatives_under_zero_ml'], 2)} | "
                         f"{_f(a.get('positives_given_volume', float('nan')), 2)} |")
    return "\n".join(lines) + "\n"


def _figures(rows: Sequence[Mapping[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hemwsl.data.io import atomic_write_bytes

    t = np.array([r["true_ml"] for r in rows])
    p = np.array([r["pred_ml"] for r in rows])
    a = np.array([r["true_abc2_ml"] for r in rows])
    fig, ax = plt.subplots(1, 2, figsize=(10, 4.5))
    hi = max(1.0, float(max(t.max(), p.max(), a.max())) * 1.05)
    ax[0].plot([0, hi], [0, hi], color="grey", lw=1)
    ax[0].scatter(t, a, s=14, marker="x", color="tab:orange", label="ABC/2 of the true mask")
    ax[0].scatter(t, p, s=16, color="tab:blue", label="hemwsl estimate")
    ax[0].set(xlabel="true volume (mL)", ylabel="estimated volume (mL)", title="Volume", xlim=(0, hi), ylim=(0, hi))
    ax[0].legend(loc="upper left", fontsize=8)
    m, d = (t + p) / 2, p - t
    bias, sd = d.mean(), d.std(ddof=1) if len(d) > 1 else 0.0
    ax[1].scatter(m, d, s=16, color="tab:blue")
    for v, style in ((bias, "-"), (bias - 1.96 * sd, "--"), (bias + 1.96 * sd, "--")):
        ax[1].axhline(v, color="grey", ls=style, lw=1)
    ax[1].set(xlabel="mean of true and estimate (mL)", ylabel="estimate - true (mL)",
              title=f"Bland-Altman: bias {bias:+.1f} mL, limits [{bias - 1.96 * sd:.1f}, {bias + 1.96 * sd:.1f}]")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(out / "volume_agreement.png", buf.getvalue())
