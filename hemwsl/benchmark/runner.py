"""The CAM localisation benchmark: heatmaps x thresholds -> per-slice and per-volume metrics, per patient.

Protocol (seed papers 000 and 002, made stricter):

1. Every patient is a *test* patient of exactly one fold and is scored with heatmaps of the classifier that
   did not train on it (cross-validated heatmaps; :func:`cv_folds`). A single train/val/test split is the
   one-fold case.
2. Thresholds that are chosen (``search``, and the (layer, threshold) pair chosen per method in the
   summary) are chosen on the fold's *selection* patients only -- its validation part, or every patient
   that is not in its test part -- and applied unchanged to its test patients. Test masks are never used
   to choose anything.
3. Only the slices the user asks for are scored: ``"gt"`` the ground-truth positive slices (as Rafati et al. 2025),
   ``"predicted"`` the slices the classifier calls positive (the clinically honest setting of Chen & Kuo 2026),
   or ``"all"``. Volume rows count the predicted masks of the scored slices only (zero elsewhere) against
   the whole ground-truth volume.

Work is done patient by patient and each patient's rows are written atomically to
``<out>/per_case/<patient>.csv`` (and its threshold-search statistics to ``<out>/selection/<patient>.npz``),
so an interrupted run resumes where it stopped; :func:`run_benchmark` then writes ``per_case.csv``,
``thresholds.csv``, ``summary.md``, ``summary.csv`` and figures (:mod:`hemwsl.benchmark.summary`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hemwsl.benchmark.specs import DEFAULT_CANDIDATES, DEFAULT_GRID, ThresholdSpec, expand_post_grid, post_grid
from hemwsl.constants import IMAGE, LABEL, PATIENT
from hemwsl.data.io import atomic_write_text, read_json_file
from hemwsl.benchmark.tables import rows_to_csv as _rows_to_csv
from hemwsl.errors import HemwslInputError, check_choice
from hemwsl.metrics.classification import check_n_boot

__all__ = [
    "check_benchmark_checkpoint",
    "check_benchmark_of_run",
    "benchmark_share_grid",
    "check_spec_in_grid",
    "SLICE_MODES",
    "SLICE_METRICS",
    "VOLUME_METRICS",
    "PatientSlices",
    "cv_folds",
    "split_folds",
    "load_patient",
    "load_heatmap",
    "candidate_dice",
    "candidate_counts",
    "component_counts",
    "counts_dice",
    "slice_rows",
    "discover_keys",
    "run_benchmark",
]

logger = logging.getLogger(__name__)

#: Which slices are scored.
SLICE_MODES: tuple[str, ...] = ("gt", "predicted", "all")
#: Per-slice metrics of every row (``pointing`` only depends on the heatmap).
SLICE_METRICS: tuple[str, ...] = ("dice", "iou", "box_dice", "box_iou", "hit", "pointing")
#: Per-volume metrics (``hd95`` and ``surface_dice`` only with ``distance_metrics=True``).
VOLUME_METRICS: tuple[str, ...] = ("volume_dice", "rvd", "tpr", "ml_pred", "ml_gt", "hd95", "surface_dice")
PRIOR_KEY = ("-", "-")  # (method, layer) of the heatmap-free prior rows
_KEEP_BYTES = 2 << 30  # loaded patients kept in memory between the two passes of run_benchmark

CSV_FIELDS: tuple[str, ...] = (
    "level", "part", "patient", "fold", "slice", "method", "layer", "threshold", "threshold_value",
    *SLICE_METRICS, "tp", "fp", "fn", *VOLUME_METRICS,
)


# --------------------------------------------------------------------------------------------- folds
def cv_folds(
    datalist: Sequence[Mapping], n_folds: int = 5, seed: int = 0, val_fraction: float = 0.15, select: str = "rest"
) -> tuple[dict[str, int], dict[int, set[str]]]:
    """Test fold of every patient and the selection patients of every fold, as the classifier's folds.

    Args:
        datalist: the whole datalist.
        n_folds, seed, val_fraction: as the classifier bundle's (``fold_datalists``).
        select: ``"rest"`` (every patient outside the fold's test part: their heatmaps are out-of-fold too)
            or ``"val"`` (only the fold's validation part).

    Returns:
        ``({patient: fold}, {fold: selection patients})``.
    """
    from hemwsl.engines.classifier import fold_datalists

    check_choice("select", select, ("rest", "val"))
    test_fold: dict[str, int] = {}
    selection: dict[int, set[str]] = {}
    everyone = {str(e[PATIENT]) for e in datalist}
    for k in range(n_folds):
        parts = fold_datalists(datalist, n_folds=n_folds, fold=k, seed=seed, val_fraction=val_fraction)
        test = {str(e[PATIENT]) for e in parts["test"]}
        for p in test:
            test_fold[p] = k
        selection[k] = (everyone - test) if select == "rest" else {str(e[PATIENT]) for e in parts["val"]}
    return test_fold, selection


def split_folds(split: Mapping[str, Sequence[str]]) -> tuple[dict[str, int], dict[int, set[str]]]:
    """One fold from a ``hemwsl split`` JSON: the thresholds are chosen on ``val`` and scored on ``test``."""
    for part in ("val", "test"):
        if not split.get(part):
            raise HemwslInputError(f"the split has no {part!r} patients; the benchmark needs val and test parts")
    return {str(p): 0 for p in split["test"]}, {0: {str(p) for p in split["val"]}}


# --------------------------------------------------------------------------------------------- data
@dataclass
class PatientSlices:
    """The scored slices of one patient, slices first: ``(N, X, Y)`` arrays of the CT grid."""

    patient: str
    z: list[int]
    hu: np.ndarray
    gt: np.ndarray
    brain: np.ndarray
    gt_voxels: int
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    gt_volume: np.ndarray | None = None
    erosion: int = 0
    brain_base: np.ndarray | None = None
    _brains: dict[int, np.ndarray] | None = None

    def brain_at(self, erosion: int) -> np.ndarray:
        """The brain mask of the scored slices eroded by ``erosion`` pixels (3x3 cross, per slice; cached)."""
        erosion = int(erosion)
        if self._brains is None:
            self._brains = {self.erosion: self.brain}
        if erosion not in self._brains:
            base = self.brain if self.brain_base is None else self.brain_base
            self._brains[erosion] = _erode(base, erosion)
        return self._brains[erosion]


def _erode(brain: np.ndarray, erosion: int) -> np.ndarray:
    if erosion <= 0 or not len(brain):
        return brain
    from scipy import ndimage

    return np.stack([ndimage.binary_erosion(b, iterations=int(erosion)) for b in brain])


def _select_slices(mask: np.ndarray, mode: str, predicted: Sequence[int] | None, patient: str) -> list[int]:
    depth = mask.shape[2]
    if mode == "gt":
        return [int(z) for z in np.flatnonzero(mask.reshape(-1, depth).any(0))]
    if mode == "all":
        return list(range(depth))
    if predicted is None:
        raise HemwslInputError(f"slices='predicted' needs classifier predictions for patient {patient}")
    bad = [z for z in predicted if not 0 <= z < depth]
    if bad:
        raise HemwslInputError(f"predictions of patient {patient} name slices {bad} outside its {depth} slices")
    return sorted(int(z) for z in predicted)


def load_patient(
    entry: Mapping, slices: str = "gt", predicted: Sequence[int] | None = None, keep_volume: bool = False,
    brain_erosion: int = 0, hu_reference: float | None = None,
) -> PatientSlices:
    """Load the CT (HU), the mask and a brain mask (skull stripping) of the slices to score.

    ``brain_erosion`` erodes the brain mask of each slice by that many pixels (3x3 cross), which keeps the
    partial-volume voxels of the inner skull table (45-90 HU, like blood) out of every prediction;
    :meth:`PatientSlices.brain_at` gives the mask at other erosions. With ``hu_reference`` the HU are shifted so
    that the scan's brain reads that value (:func:`hemwsl.thresholds.calibrate_hu`).
    """
    from hemwsl.data.io import load_pair
    from hemwsl.transforms.array import SkullStrip

    check_choice("slices", slices, SLICE_MODES)
    patient = str(entry.get(PATIENT) or Path(entry[IMAGE]).name.split(".")[0])
    if not entry.get(LABEL):
        raise HemwslInputError(f"patient {patient}: the benchmark needs a mask ({LABEL!r}) in the datalist entry")
    image, mask = load_pair(entry[IMAGE], entry[LABEL])
    hu = np.asarray(image.array, dtype=np.float32)
    gt = np.asarray(mask.array) > 0
    z = _select_slices(gt, slices, predicted, patient)
    base = np.zeros((len(z), *hu.shape[:2]), dtype=bool)
    if z:  # the whole volume is stripped (the bone threshold is a percentile of the volume), then sliced
        brain_vol = np.asarray(SkullStrip()(hu[None]))[0] > 0  # (X, Y, Z)
        base = np.moveaxis(brain_vol[:, :, z], -1, 0)
        if hu_reference is not None:
            from hemwsl.thresholds.intensity import calibrate_hu

            hu = calibrate_hu(hu, brain_vol, hu_reference)[0]
    brain = _erode(base, int(brain_erosion))
    spacing = tuple(float(s) for s in np.sqrt((np.asarray(image.affine)[:3, :3] ** 2).sum(0)))
    return PatientSlices(
        patient=patient, z=z, hu=np.moveaxis(hu[:, :, z], -1, 0), gt=np.moveaxis(gt[:, :, z], -1, 0), brain=brain,
        gt_voxels=int(gt.sum()), shape=tuple(int(s) for s in hu.shape), spacing=spacing,
        gt_volume=gt if keep_volume else None, erosion=int(brain_erosion), brain_base=base,
    )


def load_heatmap(path: str | os.PathLike, shape: Sequence[int], z: Sequence[int]) -> np.ndarray:
    """Slices ``z`` of a heatmap NIfTI as ``(N, X, Y)`` float32 on the CT's in-plane grid.

    Maps stored at the classifier's input size (``run_cam(grid="input")``) are upsampled bilinearly
    (``align_corners=False``, the inverse of the input resize); the slice count must match the CT's.
    """
    import nibabel as nib

    from hemwsl.cam.base import upsample

    p = Path(path)
    if not p.is_file():
        raise HemwslInputError(f"{p}: heatmap file not found (run the CAM step for this patient first)")
    try:
        img = nib.load(str(p))
        arr = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as err:  # nibabel raises several types for corrupt files
        raise HemwslInputError(f"{p}: cannot read the heatmap ({err})") from err
    if arr.ndim != 3 or arr.shape[2] != shape[2]:
        raise HemwslInputError(f"{p}: heatmap shape {arr.shape} does not match the CT's {tuple(shape)} (slices)")
    if not np.isfinite(arr).all():
        raise HemwslInputError(f"{p}: heatmap contains NaN or inf")
    maps = torch.from_numpy(np.ascontiguousarray(np.moveaxis(arr[:, :, list(z)], -1, 0)))
    if tuple(maps.shape[1:]) != tuple(shape[:2]):
        maps = upsample(maps, shape[:2])
    return maps.numpy()


def discover_keys(cam_dir: str | os.PathLike) -> list[tuple[str, str]]:
    """``(method, layer)`` pairs found under ``<cam_dir>/<method>/<layer>/*.nii.gz``."""
    root = Path(cam_dir)
    keys = sorted({(p.parent.parent.name, p.parent.name) for p in root.glob("*/*/*.nii.gz")})
    return [k for k in keys if not k[0].startswith(".")]


# --------------------------------------------------------------------------------------------- metrics
def _minmax(h: np.ndarray) -> np.ndarray:
    """One slice's map scaled to [0, 1] in float64 (a constant map becomes all zero), as ``fixed:`` thresholds see it."""
    h = h.astype(np.float64)
    lo, hi = h.min(), h.max()
    return (h - lo) / (hi - lo) if hi > lo else np.zeros_like(h)


def candidate_counts(
    heat: np.ndarray, gt: np.ndarray, allowed: np.ndarray, candidates: Sequence[float]
) -> np.ndarray:
    """Per slice and candidate ``t``: true positives, predicted and true pixels of ``(minmax(heat) > t) & allowed``.

    Found from sorted values by binary search, one sort per slice instead of one pass over the pixels per
    candidate.

    Returns:
        int64 ``(N, len(candidates), 3)``: ``tp``, ``predicted``, ``ground truth``.
    """
    c = np.asarray([float(t) for t in candidates], dtype=np.float64)
    out = np.empty((heat.shape[0], len(c), 3), dtype=np.int64)
    for i in range(heat.shape[0]):
        h = _minmax(heat[i]).ravel()
        a, g = allowed[i].ravel(), gt[i].ravel()
        vals = np.sort(h[a])
        pos = np.sort(h[a & g])
        out[i, :, 0] = pos.size - np.searchsorted(pos, c, side="right")
        out[i, :, 1] = vals.size - np.searchsorted(vals, c, side="right")  # allowed pixels with h > t
        out[i, :, 2] = int(g.sum())
    return out


def grown_candidate_counts(
    heat: np.ndarray, gt: np.ndarray, allowed: np.ndarray, candidates: Sequence[float], grow: int,
    grow_region: np.ndarray | None, min_size: int = 0, min_share: float = 0.0,
) -> np.ndarray:
    """:func:`candidate_counts` of the masks with components under ``min_size`` pixels dropped, then those under
    ``min_share`` of the largest component's heat mass, then grown by ``grow`` pixels into ``grow_region``, as the
    strategies do (one pass per candidate: neither step commutes with the sorted-values shortcut)."""
    from hemwsl.thresholds.base import grow_into
    from hemwsl.thresholds.postprocess import keep_dominant_components, remove_small_components

    c = [float(t) for t in candidates]
    out = np.empty((heat.shape[0], len(c), 3), dtype=np.int64)
    for i in range(heat.shape[0]):
        h = _minmax(heat[i])
        out[i, :, 2] = int(gt[i].sum())
        for j, t in enumerate(c):
            m = (h > t) & allowed[i]
            if min_size > 1:
                m = remove_small_components(m, min_size)
            if min_share:
                m = keep_dominant_components(m, min_share, h)
            if grow:
                m = grow_into(m, grow_region[i], grow)
            out[i, j, 0], out[i, j, 1] = int((m & gt[i]).sum()), int(m.sum())
    return out


def component_counts(
    heat: np.ndarray, gt: np.ndarray, allowed: np.ndarray, candidates: Sequence[float], min_size: int = 0,
    grow: int = 0, grow_region: np.ndarray | None = None, min_share: float = 0.0,
) -> np.ndarray:
    """Like :func:`candidate_counts` for ``priorcomp+`` specs: the components of ``allowed`` (per slice, full
    connectivity, those under ``min_size`` dropped) whose maximum of ``minmax(heat)`` exceeds ``t``, kept whole
    (a component is touched by ``minmax(heat) > t`` exactly when its maximum exceeds ``t``). With ``grow``, the
    kept components are grown by that many pixels into ``grow_region`` (exact: the grown mask of the
    components with the ``k`` highest peaks is the union of their grown masks). With ``min_share``, of the
    components a candidate keeps, those under that share of the largest one's heat mass (the sum of
    ``minmax(heat)`` over it) are dropped, as :func:`hemwsl.thresholds.postprocess.keep_dominant_components` does.

    Returns:
        int64 ``(N, len(candidates), 3)``: ``tp``, ``predicted``, ``ground truth``.
    """
    from scipy import ndimage

    from hemwsl.thresholds.postprocess import nonzero_box

    c = np.asarray([float(t) for t in candidates], dtype=np.float64)
    out = np.zeros((heat.shape[0], len(c), 3), dtype=np.int64)
    structure = ndimage.generate_binary_structure(2, 2)
    for i in range(heat.shape[0]):
        out[i, :, 2] = int(gt[i].sum())
        a = allowed[i]
        if not a.any():
            continue
        h = _minmax(heat[i])
        box = nonzero_box(a)
        labels, n = ndimage.label(a[box], structure=structure)
        if n == 0:
            continue
        lab = labels.ravel()
        size = np.bincount(lab, minlength=n + 1)[1:]
        overlap = np.bincount(lab, weights=gt[i][box].ravel().astype(np.float64), minlength=n + 1)[1:]
        peak = np.full(n + 1, -np.inf)
        np.maximum.at(peak, lab, h[box].ravel())
        peak = peak[1:]
        keep = size >= max(min_size, 1)
        if min_share:
            _share_counts(out[i], c, labels, box, keep, size, overlap, peak, h, min_share, grow,
                          None if grow_region is None else grow_region[i], gt[i])
            continue
        if grow > 0:
            from hemwsl.thresholds.base import grow_into

            if grow_region is None:
                raise HemwslInputError("component_counts with grow needs grow_region")
            ids = np.flatnonzero(keep) + 1
            ids = ids[np.argsort(-peak[ids - 1], kind="stable")]
            tp, ps = [0], [0]  # the kept set for a threshold is a prefix of the components by peak, highest first
            union = np.zeros(a.shape, dtype=bool)
            full = np.zeros(a.shape, dtype=bool)
            for j in ids:
                full[:] = False
                full[box] = labels == j
                union |= grow_into(full, grow_region[i], grow)
                tp.append(int((union & gt[i]).sum()))
                ps.append(int(union.sum()))
            n_on = (peak[ids - 1][None, :] > c[:, None]).sum(1)  # how many of the sorted components are kept
            out[i, :, 0] = np.asarray(tp)[n_on]
            out[i, :, 1] = np.asarray(ps)[n_on]
            continue
        size, overlap, peak = size[keep], overlap[keep], peak[keep]
        on = peak[None, :] > c[:, None]  # (C, n)
        out[i, :, 0] = (on * overlap[None, :]).sum(1).astype(np.int64)
        out[i, :, 1] = (on * size[None, :]).sum(1)
    return out


def _share_counts(out: np.ndarray, c: np.ndarray, labels: np.ndarray, box, keep: np.ndarray, size: np.ndarray,
                  overlap: np.ndarray, peak: np.ndarray, h: np.ndarray, min_share: float, grow: int,
                  grow_region: np.ndarray | None, gt: np.ndarray) -> None:
    """One slice of :func:`component_counts` with ``min_share``: per candidate, the components it keeps, less those
    under ``min_share`` of the largest one's mass; the grown union computed once per distinct kept set."""
    from hemwsl.thresholds.postprocess import component_mass

    n = size.size
    mass = component_mass(labels, n, h[box])
    cache: dict[tuple[int, ...], tuple[int, int]] = {}
    for j, t in enumerate(c):
        on = keep & (peak > t)
        if on.any():
            on &= mass >= min_share * mass[on].max()
        ids = tuple(int(k) for k in np.flatnonzero(on))
        if ids not in cache:
            if grow > 0 and ids:
                from hemwsl.thresholds.base import grow_into

                if grow_region is None:
                    raise HemwslInputError("component_counts with grow needs grow_region")
                full = np.zeros(gt.shape, dtype=bool)
                full[box] = np.isin(labels, np.asarray(ids) + 1)
                full = grow_into(full, grow_region, grow)
                cache[ids] = (int((full & gt).sum()), int(full.sum()))
            else:
                cache[ids] = (int(overlap[list(ids)].sum()), int(size[list(ids)].sum()))
        out[j, 0], out[j, 1] = cache[ids]


def counts_dice(counts: np.ndarray, pooled: bool = False) -> np.ndarray:
    """Dice from :func:`candidate_counts` per slice ``(N, C)``, or pooled over the slices ``(C,)`` with
    ``pooled=True``; 1.0 where prediction and ground truth are both empty (EMPTY_POLICY)."""
    c = counts.sum(0) if pooled else counts
    den = c[..., 1] + c[..., 2]
    return np.where(den > 0, 2.0 * c[..., 0] / np.maximum(den, 1), 1.0)


def candidate_dice(
    heat: np.ndarray, gt: np.ndarray, allowed: np.ndarray, candidates: Sequence[float]
) -> np.ndarray:
    """Per-slice Dice of ``(minmax(heat) > t) & allowed`` for every candidate ``t`` at once.

    Equal to scoring ``FixedThreshold(t, normalisation="minmax", per_sample=True)`` restricted to
    ``allowed`` with :func:`hemwsl.metrics.localisation.compute_dice` (same empty-mask policy), candidate
    by candidate.

    Returns:
        float64 ``(N, len(candidates))``.
    """
    return counts_dice(candidate_counts(heat, gt, allowed, candidates))


def _overlap(p: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    axes = tuple(range(1, p.ndim))
    return (np.count_nonzero(p & g, axis=axes), np.count_nonzero(p, axis=axes), np.count_nonzero(g, axis=axes))


def _dice_iou(tp: np.ndarray, ps: np.ndarray, gs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dice and IoU from counts with :data:`~hemwsl.metrics.localisation.EMPTY_POLICY` (both empty: 1; one
    empty: 0, which the formulas already give)."""
    both = (ps + gs) == 0
    dice = np.where(both, 1.0, 2.0 * tp / np.maximum(ps + gs, 1))
    iou = np.where(both, 1.0, tp / np.maximum(ps + gs - tp, 1))
    return dice, iou


def slice_rows(pred: np.ndarray, gt: np.ndarray, heat: np.ndarray | None,
               gt_box: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-slice metrics (:data:`SLICE_METRICS`) and counts of predicted masks ``(N, X, Y)``.

    ``gt_box``: ``bounding_box_mask(gt)`` when the caller scores many predictions against the same ``gt``.

    The values equal :mod:`hemwsl.metrics.localisation`'s ``compute_dice``, ``compute_iou``,
    ``compute_box_dice``, ``compute_box_iou``, ``compute_hit`` and ``compute_pointing_game`` (tested), computed
    from pixel counts, which is ~50x faster than MONAI's generic Dice on 512 x 512 slices.
    """
    from hemwsl.metrics.localisation import bounding_box_mask, compute_pointing_game

    p, g = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    tp, ps, gs = _overlap(p, g)
    dice, iou = _dice_iou(tp, ps, gs)
    bp = bounding_box_mask(p).numpy()
    bg = bounding_box_mask(g).numpy() if gt_box is None else np.asarray(gt_box, dtype=bool)
    box_dice, box_iou = _dice_iou(*_overlap(bp, bg))
    hit = np.where((tp > 0) | ((ps + gs) == 0), 1.0, 0.0)
    pointing = (compute_pointing_game(torch.from_numpy(np.ascontiguousarray(heat)), torch.from_numpy(g)).numpy()
                if heat is not None else np.full(len(p), np.nan))
    return {"dice": dice, "iou": iou, "box_dice": box_dice, "box_iou": box_iou, "hit": hit, "pointing": pointing,
            "tp": tp, "fp": ps - tp, "fn": gs - tp}


def _volume_values(
    tp: int, ps: int, gs: int, voxel_ml: float, pred_volume: np.ndarray | None, data: PatientSlices
) -> dict[str, float]:
    from hemwsl.metrics.localisation import empty_value

    case = "both_empty" if ps == 0 and gs == 0 else "gt_empty" if gs == 0 else "pred_empty" if ps == 0 else None
    if case:
        vals = {"volume_dice": empty_value("volume_dice", case), "rvd": empty_value("rvd", case),
                "tpr": empty_value("tpr", case)}
    else:
        vals = {"volume_dice": 2.0 * tp / (ps + gs), "rvd": (ps - gs) / gs, "tpr": tp / gs}
    vals.update(ml_pred=ps * voxel_ml, ml_gt=gs * voxel_ml, hd95=math.nan, surface_dice=math.nan)
    if pred_volume is not None and data.gt_volume is not None:
        from hemwsl.metrics.volume import compute_hd95, compute_surface_dice

        vals["hd95"] = compute_hd95(pred_volume, data.gt_volume, data.spacing)
        vals["surface_dice"] = compute_surface_dice(pred_volume, data.gt_volume, data.spacing, tolerance_mm=2.0)
    return vals


# --------------------------------------------------------------------------------------------- per patient
def _predicted_slices(predictions: Mapping[str, Any] | None, threshold: float) -> dict[str, list[int]]:
    if predictions is None:
        return {}
    out: dict[str, list[int]] = {}
    for p, z, prob in zip(predictions["patient"], predictions["slice"], np.asarray(predictions["prob"])[:, 0]):
        if prob >= threshold:
            out.setdefault(str(p), []).append(int(z))
    for p in {str(x) for x in predictions["patient"]}:
        out.setdefault(p, [])
    return out


def _selection_stats(data: PatientSlices, cam_dir: Path, keys, specs, candidates) -> dict[str, np.ndarray]:
    from hemwsl.cam import heatmap_path

    stats: dict[str, np.ndarray] = {}
    search = [s for s in specs if s.needs_fit]
    if not search or not data.z:
        return stats
    # the AND search ignores min_size (specs differing only by it share counts); the component search keeps
    # whole components, and growth follows the size filter, so there the size is part of the key
    def key_of(spec: ThresholdSpec) -> tuple:
        comp = spec.combine == "components"
        sized = comp or spec.grow > 0 or spec.min_share > 0
        return (spec.erosion, spec.hu_range if spec.prior else None, comp, spec.min_size if sized else None, spec.grow,
                spec.min_share)

    regions: dict[int, np.ndarray] = {}

    def region_at(erosion: int) -> np.ndarray:  # where the masks of a spec with this erosion may grow
        if erosion not in regions:
            from hemwsl.thresholds.base import grow_region

            regions[erosion] = grow_region(data.hu, data.brain_at(erosion))
        return regions[erosion]

    allowed: dict[tuple, np.ndarray] = {}
    for spec in search:
        key = key_of(spec)[:2]
        if key not in allowed:
            brain = data.brain_at(spec.erosion)
            allowed[key] = brain & (data.hu >= spec.hu_range[0]) & (data.hu <= spec.hu_range[1]) if spec.prior else brain
    for method, layer in keys:
        heat = load_heatmap(heatmap_path(cam_dir, data.patient, (method, layer)), data.shape, data.z)
        done: dict[tuple, np.ndarray] = {}
        for spec in search:
            key = key_of(spec)
            if key not in done:
                region = region_at(spec.erosion) if spec.grow else None
                if spec.combine == "components":
                    done[key] = component_counts(heat, data.gt, allowed[key[:2]], candidates, spec.min_size,
                                                 spec.grow, region, spec.min_share)
                elif spec.grow or spec.min_share:
                    done[key] = grown_candidate_counts(heat, data.gt, allowed[key[:2]], candidates, spec.grow, region,
                                                       spec.min_size, spec.min_share)
                else:
                    done[key] = candidate_counts(heat, data.gt, allowed[key[:2]], candidates)
            stats[f"{method}|{layer}|{spec.text}"] = done[key]
    return stats


def _patient_rows(
    data: PatientSlices, fold: int, cam_dir: Path, keys, specs: Sequence[ThresholdSpec],
    chosen: Mapping[tuple[int, str, str, str], float], distance_metrics: bool, part: str = "test",
) -> list[dict[str, Any]]:
    from hemwsl.cam import heatmap_path

    voxel_ml = float(np.prod(data.spacing)) / 1000.0
    rows: list[dict[str, Any]] = []

    pointing: dict[tuple[str, str], np.ndarray] = {}  # depends on the heatmap only: once per (method, layer)
    gt_box = None
    if data.z:
        from hemwsl.metrics.localisation import bounding_box_mask

        gt_box = bounding_box_mask(data.gt).numpy()  # the same for every prediction of the patient

    def emit(method: str, layer: str, spec: ThresholdSpec, value: float | None, pred: np.ndarray, heat) -> None:
        if not data.z:
            vals = {k: np.zeros(0) for k in (*SLICE_METRICS, "tp", "fp", "fn")}
        else:
            vals = slice_rows(pred, data.gt, heat if (method, layer) not in pointing else None, gt_box)
            if heat is not None:
                vals["pointing"] = pointing.setdefault((method, layer), vals["pointing"])
        base = {"part": part, "patient": data.patient, "fold": fold, "method": method, "layer": layer, "threshold": spec.text,
                "threshold_value": "" if value is None else value}
        for i, z in enumerate(data.z):
            rows.append({"level": "slice", **base, "slice": z, **{k: vals[k][i] for k in vals}})
        tp, ps = int(vals["tp"].sum()), int(vals["tp"].sum() + vals["fp"].sum())
        pred_volume = None
        if distance_metrics and data.gt_volume is not None:
            pred_volume = np.zeros(data.shape, dtype=bool)
            for i, z in enumerate(data.z):
                pred_volume[:, :, z] = pred[i]
        rows.append({"level": "volume", **base, "slice": "", "tp": tp, "fp": ps - tp,
                     "fn": data.gt_voxels - tp, **_volume_values(tp, ps, data.gt_voxels, voxel_ml, pred_volume, data)})

    empty = np.zeros((0, *data.shape[:2]), dtype=bool)
    hu = data.hu.astype(np.float64)  # once, not per threshold strategy
    for spec in specs:
        if not spec.needs_heatmap:
            pred = spec.strategy()(None, image_hu=hu, brain=data.brain_at(spec.erosion)) if data.z else empty
            emit(*PRIOR_KEY, spec, None, np.asarray(pred, dtype=bool), None)
    for method, layer in keys:
        heat = load_heatmap(heatmap_path(cam_dir, data.patient, (method, layer)), data.shape, data.z)
        heat = heat.astype(np.float64)  # once, not per threshold strategy
        for spec in specs:
            if not spec.needs_heatmap:
                continue
            value = chosen[(fold, method, layer, spec.text)] if spec.needs_fit else spec.value
            if data.z:
                strategy = spec.strategy(value if spec.needs_fit else None)
                pred = np.asarray(strategy(heat, image_hu=hu, brain=data.brain_at(spec.erosion)), dtype=bool)
            else:
                pred = empty
            emit(method, layer, spec, value, pred, heat if data.z else None)
    return rows


def rows_to_csv(rows: Sequence[Mapping[str, Any]], fields: Sequence[str] = CSV_FIELDS) -> str:
    """CSV text of ``rows`` with the columns ``fields`` (default: the per-case columns; see
    :func:`hemwsl.benchmark.tables.rows_to_csv`)."""
    return _rows_to_csv(rows, fields)


def _save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    from hemwsl.data.io import atomic_write

    atomic_write(path, lambda tmp: np.savez(tmp, **arrays), suffix=".npz")


def _load_npz(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a resumed ``selection/<patient>.npz``; ``None`` (a warning naming it) when it cannot be read
    (empty, cut short by a kill, not an npz file): the caller makes it again."""
    import zipfile

    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, AttributeError) as err:
        logger.warning("%s: unreadable threshold-search statistics (%s: %s); made again", path, type(err).__name__,
                       err)
        return None


def _finished_rows(path: Path) -> bool:
    """Whether a resumed ``per_case/<patient>.csv`` holds a finished patient's rows (every scored patient has at
    least its volume rows, every value readable); one without rows or with an unreadable value (a kill, an edit) is
    scored again, a warning naming it."""
    from hemwsl.benchmark.summary import read_rows

    try:
        if read_rows(path):
            return True
        logger.warning("%s: no rows; the patient is scored again", path)
    except HemwslInputError as err:
        logger.warning("%s; the patient is scored again", err)
    return False


# --------------------------------------------------------------------------------------------- driver
def _report_config_if_readable(benchmark_dir: str | Path) -> tuple[Path, dict | None]:
    """``(path, object)`` of a benchmark report's ``config.json`` for the checks that leave a missing or broken
    report to the step that reads its recipe: the object is ``None`` when the file is absent, unreadable or no JSON
    object."""
    cfg = Path(benchmark_dir) / "config.json"
    if not cfg.is_file():
        return cfg, None
    try:
        config = read_json_file(cfg, "benchmark settings record")
    except HemwslInputError:
        return cfg, None  # a broken report is named where its recipe is read
    return cfg, config if isinstance(config, dict) else None


def check_benchmark_checkpoint(benchmark_dir: str | Path, which: str, option: str = "--checkpoint") -> None:
    """A recipe a ``hemwsl benchmark`` report validated on the heatmaps of one checkpoint (``best`` or ``last``, as
    its heatmap folder's ``cam_checkpoint.json`` records; ``config.json`` names that folder) must not be applied to
    the other checkpoint's weights: one line naming ``option`` and the report. A report whose heatmap folder is gone
    or has no record is not checked."""
    cfg, config = _report_config_if_readable(benchmark_dir)
    if config is None:
        return
    seen, src = config.get("checkpoint"), cfg
    cam = config.get("cam_dir")
    if seen is None and isinstance(cam, str):
        marker = Path(cam) / "cam_checkpoint.json"
        if not marker.is_file():
            return
        rec = read_json_file(marker, "record of the run that made the heatmaps")
        seen, src = (rec.get("checkpoint", "best") if isinstance(rec, dict) else None), marker
    if isinstance(seen, str) and seen != which:
        raise HemwslInputError(f"{option} {which}: the benchmark report {benchmark_dir} validated its recipe on the "
                               f"heatmaps of the {seen} checkpoints ({src}); give --checkpoint {seen}, or a benchmark "
                               f"of the {which} checkpoints' heatmaps")


def check_benchmark_of_run(benchmark_dir: str | Path, cv_dir: str | Path, folds: int | None = None,
                           option: str = "--benchmark-dir") -> None:
    """A ``hemwsl benchmark`` report chose each fold's recipe on that fold's selection patients; applied to another
    train-cv run's folds (another ``seed``, ``val_fraction`` or number of folds) each fold's recipe lands on
    patients it was chosen on. Its ``config.json`` records every patient's test fold; each patient the run
    ``cv_dir`` tested (its ``fold<k>/predictions_test[_last].csv``) must be in the same fold there: else one line
    naming ``option``, the report and a patient. A report or run that records no folds is not checked."""
    from hemwsl.engines.runs import CHECKPOINTS, read_predictions_csv, report_name, resolve_cv_folds

    cfg, config = _report_config_if_readable(benchmark_dir)
    recorded = config.get("folds") if config is not None else None
    if not isinstance(recorded, Mapping):
        return
    cv = Path(cv_dir)
    if folds is None:
        folds = resolve_cv_folds(cv)[0] if (cv / "cv_run.json").is_file() else None
    if folds is None:
        folds = len([d for d in cv.glob("fold*") if d.name[4:].isdigit()])
    for k in range(int(folds)):
        f = next((f for which in CHECKPOINTS
                  if (f := cv / f"fold{k}" / f"predictions_{report_name('test', which)}.csv").is_file()), None)
        if f is None:
            continue
        for p in dict.fromkeys(str(x) for x in read_predictions_csv(f, labels=False)["patient"]):
            theirs = recorded.get(p)
            if theirs is not None and str(theirs) != str(k):
                raise HemwslInputError(f"{option} {benchmark_dir}: a report of other folds than --cv-dir {cv_dir}'s: "
                                       f"patient {p} is in test fold {theirs} there ({cfg}), in fold {k} of the run "
                                       f"({f}); give a benchmark of this run's heatmaps")


def benchmark_share_grid(benchmark_dir: str | Path) -> list[float]:
    """The ``min_share`` values a ``hemwsl benchmark`` report chose among (its ``config.json``: absent is 0, one
    number or a list); a value that is no share in [0, 1) is one line naming the file. A report without
    ``config.json`` gives ``[]`` (nothing to check against)."""
    from hemwsl.thresholds.postprocess import check_min_share

    cfg = Path(benchmark_dir) / "config.json"
    if not cfg.is_file():
        return []
    config = read_json_file(cfg, "benchmark config")
    value = config.get("min_share", 0.0) if isinstance(config, dict) else 0.0
    values = value if isinstance(value, list) else [value]
    try:
        return [check_min_share(v) for v in values]
    except HemwslInputError as err:
        raise HemwslInputError(f"{cfg}: corrupt benchmark config ({err})") from None


def check_spec_in_grid(spec: ThresholdSpec, grid: Sequence[float], where: str) -> None:
    """A chosen spec that names its own share (``...,s0.3]``) must name one of the report's ``grid``
    (:func:`benchmark_share_grid`): else the report was edited and its choice never validated (one line)."""
    if not grid or spec.base == spec.text:
        return
    if not any(abs(spec.min_share - g) < 1e-9 for g in grid):
        raise HemwslInputError(f"{where}: threshold {spec.text!r} names the share {spec.min_share:g}, not one of the "
                               f"report's min_share {', '.join(f'{g:g}' for g in grid)} (config.json): a choice the "
                               "report never validated; rerun `hemwsl benchmark`")


def run_benchmark(
    datalist: Sequence[Mapping],
    cam_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    methods: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    thresholds: Sequence[str] = DEFAULT_GRID,
    candidates: Sequence[float] = DEFAULT_CANDIDATES,
    folds: tuple[Mapping[str, int], Mapping[int, set[str]]] | None = None,
    slices: str = "gt",
    predictions: Mapping[str, Any] | None = None,
    prob_threshold: float = 0.5,
    hu_range: Sequence[float] | Sequence[Sequence[float]] = (45.0, 90.0),
    brain_erosion: int | Sequence[int] = 0,
    min_size: int | Sequence[int] = 0,
    grow: int | Sequence[int] = 0,
    min_share: float | Sequence[float] = 0.0,
    hu_reference: float | None = None,
    select_metric: str | None = None,
    distance_metrics: bool = False,
    n_boot: int = 1000,
    figures: bool = True,
    progress: bool = True,
) -> Path:
    """Score every (method, layer, threshold) of ``cam_dir`` on the test patients; write the report folder.

    Args:
        datalist: entries with ``image``, ``label`` (mask) and ``patient``.
        cam_dir: heatmaps ``<method>/<layer>/<patient>.nii.gz`` (``run_cam``; CT or input grid), each
            patient's from the classifier that did not train on it.
        output_dir: the report folder.
        methods, layers: restrict to these (default: every pair found in ``cam_dir``).
        thresholds: threshold specs (:mod:`hemwsl.benchmark.specs`).
        candidates: the values ``search`` chooses from.
        folds: ``({patient: test fold}, {fold: selection patients})`` from :func:`cv_folds` or
            :func:`split_folds`; default: 5 folds as the classifier bundle's defaults.
        slices: which slices are scored, one of :data:`SLICE_MODES`.
        predictions: per-slice classifier predictions (``read_predictions_csv`` format, out of fold) for
            ``slices="predicted"`` and the PR/ROC figures.
        prob_threshold: probability at which a slice counts as predicted positive.
        hu_range: the hyperdense-blood range of the ``prior`` specs: one ``(low, high)`` pair or a list of pairs.
        brain_erosion: erode the brain mask of each slice by this many pixels (post-processing, all specs);
            one value or a list.
        min_size: drop predicted components under this many pixels (post-processing, all specs; the
            ``search`` is done without it); one value or a list.
        grow: grow each final mask by this many pixels into 40-100 HU inside the eroded brain (the blood at a
            lesion's edge that the prior's range misses; :class:`~hemwsl.thresholds.base.ThresholdStrategy`);
            one value or a list (default 0: no growth).
        min_share: keep, per slice, the components whose heat mass (the sum of the min-max scaled map over the
            component; the size for the prior alone) is at least this share of the largest one's, after the size
            filter and before growth (:func:`hemwsl.thresholds.postprocess.keep_dominant_components`); one value
            or a list in [0, 1) (default 0: every component).

            With several values of any of the five, every combination becomes its own spec
            (:func:`~hemwsl.benchmark.specs.expand_post_grid`, e.g. ``prior+search[e4,hu50-90,min50]``) and
            the combination is chosen per fold on the selection patients together with each method's
            (layer, threshold): the post-processing is then validated, not fixed by hand.
        hu_reference: shift each scan's HU so that its brain reads this value before the prior's range and the
            growth apply (:func:`hemwsl.thresholds.calibrate_hu`; e.g. 37, ``BRAIN_REFERENCE_HU``); ``None``: the
            HU as stored.
        select_metric: what the selection patients maximise when choosing thresholds and (layer, threshold)
            pairs: ``"dice"`` (mean per-slice Dice; default with ``slices="gt"``) or ``"global_dice"`` (pooled;
            default otherwise: with slices that may hold no lesion, the per-slice mean rewards predicting
            nothing, since an empty prediction on an empty slice scores 1).
        distance_metrics: also compute HD95 and surface Dice (2 mm) per volume (slower).
        n_boot: bootstrap replicates of the confidence intervals (resampling patients).
        figures: write the figures.
        progress: show a progress bar.

    Returns:
        The report folder.
    """
    from tqdm import tqdm

    from hemwsl.thresholds.intensity import check_hu_reference

    hu_reference = check_hu_reference(hu_reference)

    from hemwsl.benchmark.summary import write_report

    check_choice("slices", slices, SLICE_MODES)
    check_n_boot(n_boot, "n_boot")
    if select_metric is None:
        select_metric = "dice" if slices == "gt" else "global_dice"
    check_choice("select_metric", select_metric, ("dice", "global_dice"))
    grid = post_grid(brain_erosion, hu_range, min_size, grow, min_share)
    specs = expand_post_grid(thresholds, grid)
    if hu_reference is not None and not any(s.prior or s.grow for s in specs):
        raise HemwslInputError(f"--hu-reference shifts the HU that the prior's range and --grow read, and no threshold "
                               f"({', '.join(dict.fromkeys(s.base for s in specs))}) uses them: give a prior threshold "
                               "(prior, prior+<spec>, priorcomp+<spec>) or --grow, or leave it out")
    if not datalist:
        raise HemwslInputError("datalist is empty")
    cam_dir, out = Path(cam_dir), Path(output_dir)
    if not cam_dir.is_dir():
        raise HemwslInputError(f"{cam_dir}: CAM folder not found")
    found = discover_keys(cam_dir)
    keys = [k for k in found if (methods is None or k[0] in methods) and (layers is None or k[1] in layers)]
    if methods is not None:
        missing = sorted(set(methods) - {k[0] for k in found})
        if missing:
            raise HemwslInputError(f"no heatmaps of method(s) {missing} under {cam_dir}")
    if layers is not None and found:
        have = sorted({k[1] for k in found if methods is None or k[0] in methods})
        missing = [layer for layer in dict.fromkeys(layers) if layer not in have]
        if missing:
            of = f" of method(s) {sorted(set(methods))}" if methods is not None else ""
            raise HemwslInputError(f"layers: no heatmaps of layer(s) {missing} under {cam_dir}{of}; layers there: "
                                   f"{', '.join(have)}")
    if not keys and any(s.needs_heatmap for s in specs):
        raise HemwslInputError(f"no heatmaps <method>/<layer>/<patient>.nii.gz under {cam_dir}")
    if slices == "predicted" and predictions is None:
        raise HemwslInputError("slices='predicted' needs the classifier's predictions (predictions=...)")
    test_fold, selection = folds if folds is not None else cv_folds(datalist)
    by_patient = {str(e.get(PATIENT)): e for e in datalist}
    unknown = sorted((set(test_fold) | set().union(*selection.values())) - set(by_patient))
    if unknown:
        raise HemwslInputError(f"fold patients {unknown[:5]} are not in the datalist")
    predicted = _predicted_slices(predictions, prob_threshold)
    from hemwsl.engines.runs import check_outside_run

    # a report among the heatmaps would be read as a method folder of them by the next benchmark
    check_outside_run(out, cam_dir, "--out", "--cam-dir", "heatmap folder")
    if keys:  # every heatmap scored is readable (its header: cheap), before the first output
        from hemwsl.cam import heatmap_path
        from hemwsl.data.io import check_nifti_header

        for p in sorted(set(test_fold) | set().union(*selection.values())):
            for key in keys:
                if (f := heatmap_path(cam_dir, p, key)).is_file():
                    check_nifti_header(f)
    config = {"cam_dir": str(cam_dir.resolve()), "keys": [list(k) for k in keys], "thresholds": [s.text for s in specs],
              "candidates": [float(c) for c in candidates], "slices": slices, "prob_threshold": prob_threshold,
              "distance_metrics": distance_metrics, "select_metric": select_metric,
              "folds": {p: int(k) for p, k in sorted(test_fold.items())},
              "selection": {str(k): sorted(v) for k, v in sorted(selection.items())}}
    erosions, hus, sizes = sorted({g.erosion for g in grid}), sorted({g.hu_range for g in grid}), \
        sorted({g.min_size for g in grid})
    # one value each: stored as before (so earlier report folders still resume); several: as lists
    config.update(hu_range=list(hus[0]) if len(hus) == 1 else [list(h) for h in hus],
                  brain_erosion=erosions[0] if len(erosions) == 1 else erosions,
                  min_size=sizes[0] if len(sizes) == 1 else sizes)
    grows = sorted({g.grow for g in grid})
    if grows != [0]:  # stored only when used, so report folders of earlier versions still resume
        config["grow"] = grows[0] if len(grows) == 1 else grows
    shares = sorted({g.min_share for g in grid})
    if shares != [0.0]:  # likewise
        config["min_share"] = shares[0] if len(shares) == 1 else shares
    if hu_reference is not None:  # likewise
        config["hu_reference"] = list(hu_reference) if isinstance(hu_reference, tuple) else hu_reference
    cfg_file = out / "config.json"
    if (cfg_file.exists() or cfg_file.is_symlink()) \
            and (old := read_json_file(cfg_file, "benchmark settings record")) != config:
        from hemwsl.engines.runs import settings_difference

        diff = "; ".join(settings_difference(old, config, limit=4)) if isinstance(old, dict) else "not a settings record"
        raise HemwslInputError(f"{out} holds a benchmark run with other settings ({diff}; {cfg_file}); use another "
                               "folder")
    atomic_write_text(cfg_file, json.dumps(config, indent=1) + "\n")

    # patients loaded for the threshold search are kept for the scoring pass, up to _KEEP_BYTES (the first
    # ones: both passes go through the patients in the same order, and each is scored once)
    kept: dict[str, PatientSlices] = {}
    kept_bytes = [0]
    scored = set(test_fold) | {p for sel in selection.values() for p in sel if p not in test_fold}

    def patient_data(p: str, keep: bool = False) -> PatientSlices:
        if p in kept:
            return kept.pop(p)
        data = load_patient(by_patient[p], slices, predicted.get(p), keep_volume=distance_metrics,
                            brain_erosion=erosions[0], hu_reference=hu_reference)
        size = data.hu.nbytes + 3 * data.gt.nbytes + (0 if data.gt_volume is None else data.gt_volume.nbytes)
        if keep and p in scored and not (out / "per_case" / f"{p}.csv").exists() \
                and kept_bytes[0] + size <= _KEEP_BYTES:
            kept[p] = data
            kept_bytes[0] += size
        return data

    # pass 1: threshold-search statistics of every patient that selects or is tested
    needed = sorted(set(test_fold) | set().union(*selection.values()))
    stats: dict[str, dict[str, np.ndarray]] = {}
    if any(s.needs_fit for s in specs):
        for p in tqdm(needed, desc="threshold search", disable=not progress):
            f = out / "selection" / f"{p}.npz"
            stats[p] = _load_npz(f) if f.exists() else None
            if stats[p] is None:  # not made yet, or unreadable (a kill while it was written): made (again)
                _save_npz(f, _selection_stats(patient_data(p, keep=True), cam_dir, keys, specs, candidates))
                stats[p] = _load_npz(f)
    chosen: dict[tuple[int, str, str, str], float] = {}
    choice_rows = []
    for k, sel in sorted(selection.items()):
        for method, layer in keys:
            for spec in (s for s in specs if s.needs_fit):
                key = f"{method}|{layer}|{spec.text}"
                per = [stats[p][key] for p in sorted(sel) if p in stats and key in stats[p] and len(stats[p][key])]
                if not per:
                    raise HemwslInputError(f"fold {k}: no scored slice among its selection patients to choose "
                                           f"{spec.text!r} on")
                counts = np.concatenate(per)
                scores = counts_dice(counts, pooled=True) if select_metric == "global_dice" else \
                    np.nanmean(counts_dice(counts), axis=0)
                best = int(np.nanargmax(scores))
                chosen[(k, method, layer, spec.text)] = float(candidates[best])
                choice_rows.append({"fold": k, "method": method, "layer": layer, "threshold": spec.text,
                                    "value": float(candidates[best]), "selection_dice": float(scores[best]),
                                    "selection_patients": len(sel), "selection_slices": int(sum(len(a) for a in per)),
                                    "selection_metric": select_metric})
    # pass 2: rows of every test patient (and of the selection patients that are never tested, as in a
    # single train/val/test split, to choose the (layer, threshold) of each method on them)
    jobs = [(p, test_fold[p], "test") for p in sorted(test_fold)]
    jobs += [(p, k, "selection") for k, sel in sorted(selection.items()) for p in sorted(sel) if p not in test_fold]
    for p, k, part in tqdm(jobs, desc="scoring", disable=not progress):
        f = out / "per_case" / f"{p}.csv"
        if f.exists() and _finished_rows(f):
            continue
        rows = _patient_rows(patient_data(p), k, cam_dir, keys, specs, chosen, distance_metrics, part)
        atomic_write_text(f, rows_to_csv(rows))
    return write_report(out, [p for p, _, _ in jobs], choice_rows, selection, specs, slices=slices, n_boot=n_boot,
                        figures=figures, datalist=by_patient, cam_dir=cam_dir, predictions=predictions,
                        prob_threshold=prob_threshold, post=grid, select_metric=select_metric)
