"""CAM volumes -> pseudo-label volumes + a training datalist (Ramananda & Sundaresan, arXiv:2309.16627, 2023).

Per volume, only on the slices the classifier calls positive (probability >= ``prob_threshold``):

1. the slice's CAM (written by :func:`hemwsl.engines.cam.run_cam`: raw, non-negative) is thresholded
   with a strategy of :mod:`hemwsl.thresholds` (default ``fixed``: 0.7 of the per-slice min-max
   normalised map), restricted to the brain when skull stripping is on;
2. mode ``"cam"``: that region is the pseudo mask;
3. mode ``"cam_kmeans"``: the region's pixels of the skull-stripped, contrast-enhanced slice
   (:func:`hemwsl.pseudo.enhance_slices`) are split in ``k`` clusters (:func:`hemwsl.pseudo.kmeans_clusters`)
   and the cluster whose removal lowers the classifier's logit most
   (:func:`hemwsl.pseudo.differential_prediction`, ``select="differential"``) -- or the brightest
   cluster (``select="brightest"``) -- is the pseudo mask.

**Slice context** (``context=True``; the paper's ResNet-LSTM learns dependencies across contiguous
slices, which a 2.5D slice classifier does not): the map thresholded on slice ``z`` is the mean of the
max-normalised CAMs (negative values, e.g. of signed attributions, count as 0) of the positive slices
among ``z - c .. z + c`` (``c = context_slices // 2``), and K-means clusters each pixel by its enhanced intensities on those ``context_slices`` slices (the 2.5D
neighbourhood, edges replicated) instead of slice ``z`` alone. Lesions seen on adjacent slices are thus
supported, and isolated hot spots of one slice's CAM are damped.

Outputs of :func:`make_pseudo_labels`: ``<out>/<patient>.nii.gz`` (uint8 0/1 on the CT grid, the CT's
affine, written atomically), ``<out>/.done/<patient>.json`` (per-slice details; a volume with one is
skipped when resuming), ``<out>/pseudo_params.json`` (the settings; a resumed run with other settings
is refused) and ``<out>/datalist.json`` (every volume of the folder, over calls): the entries of
:mod:`hemwsl.data.datalist` with ``label`` the pseudo mask and ``slice_labels``/``positive`` from it, plus
``reference`` (the true mask path, or
``None``; for evaluation only) and ``weak_slice_labels`` (the input entry's slice labels).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hemwsl.constants import IMAGE, LABEL, PATIENT, SLICE_LABELS, SPACING, SUBTYPE_LABELS
from hemwsl.data.settings import InputSettings
from hemwsl.errors import HemwslInputError, check_choice
from hemwsl.pseudo.settings import (
    PSEUDO_MODES,
    SELECTIONS,
    PseudoLabelSettings,
    _check_with_inputs,
    check_pseudo_params,
)

__all__ = [
    "PSEUDO_MODES",
    "SELECTIONS",
    "REFERENCE",
    "WEAK_SLICE_LABELS",
    "build_threshold",
    "check_pseudo_params",
    "check_heatmaps_readable",
    "read_slice_probabilities",
    "pseudo_label_volume",
    "make_pseudo_labels",
    "fit_component_filter",
    "component_filter_at",
    "evaluate_pseudo_labels",
]

logger = logging.getLogger(__name__)

#: Extra datalist keys of the pseudo-label datalist.
REFERENCE = "reference"  # path of the true mask (evaluation only), or None
WEAK_SLICE_LABELS = "weak_slice_labels"  # the input entry's slice labels


def build_threshold(name: str = "fixed", value: float | None = 0.7, **kwargs: Any):
    """A threshold strategy of :data:`hemwsl.thresholds.THRESHOLDS` from a name and one value.

    ``value`` is the fixed threshold (``fixed``, on the per-slice min-max map unless
    ``normalisation`` is given) or the percentile ``q`` (``percentile``); ignored by ``otsu``.
    """
    from hemwsl.thresholds import THRESHOLDS, ThresholdStrategy, get_threshold

    check_choice("threshold strategy", name, [n for n in THRESHOLDS if n != "search"])
    if name == "fixed":
        kwargs.setdefault("normalisation", "minmax")
        value = 0.7 if value is None else value
        if kwargs["normalisation"] == "minmax":
            _check_map_fraction(value)
        return get_threshold(name, value=value, **kwargs)
    if name == "percentile" and value is not None:
        kwargs["q"] = value
    if name == "intensity" and value is not None:
        if not isinstance(value, ThresholdStrategy):
            _check_map_fraction(value)
        kwargs.setdefault("cam", value)
    return get_threshold(name, **kwargs)


def _check_map_fraction(value: Any) -> None:
    """A threshold of a normalised (min-max) heatmap in [0, 1): 1 or more would label nothing on any slice."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not 0.0 <= float(value) < 1.0:
        raise HemwslInputError(f"threshold {value!r}: a threshold of the per-slice min-max heatmap must be in [0, 1)")


def _settings_and_inputs(settings: Any, inputs: Any) -> tuple[PseudoLabelSettings, InputSettings]:
    """``settings`` and ``inputs`` with their defaults for ``None``; another type is one line naming the argument."""
    if settings is None:
        settings = PseudoLabelSettings()
    if not isinstance(settings, PseudoLabelSettings):
        raise HemwslInputError(f"settings must be a PseudoLabelSettings (hemwsl.pseudo), got {type(settings).__name__}")
    return settings, InputSettings.resolve(inputs)


def _resolve_threshold(threshold: Any):
    from hemwsl.thresholds import ThresholdStrategy

    if isinstance(threshold, ThresholdStrategy):
        if threshold.per_sample:
            raise HemwslInputError("threshold: give a strategy with per_sample=False (it is applied slice by slice)")
        return threshold
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise HemwslInputError(f"threshold must be a number or a ThresholdStrategy, got {threshold!r}")
    return build_threshold("fixed", float(threshold))


def read_slice_probabilities(csv_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{patient: (Z,) probability of "any"}`` from a predictions CSV of the classifier bundle
    (columns ``patient, slice, ..., prob_any``); slices missing from the CSV are NaN."""
    from hemwsl.engines.runs import read_predictions_csv

    p = Path(csv_path)
    if not p.is_file():
        raise HemwslInputError(f"{p}: predictions CSV not found")
    pred = read_predictions_csv(p, labels=False)
    out: dict[str, np.ndarray] = {}
    if len(pred["patient"]) == 0:
        return out
    if pred["prob"].ndim != 2 or pred["prob"].shape[1] < 1:
        raise HemwslInputError(f"{p}: no prob_* column")
    for pid in np.unique(pred["patient"]):
        sel = pred["patient"] == pid
        z = pred["slice"][sel]
        arr = np.full(int(z.max()) + 1, np.nan)
        arr[z] = pred["prob"][sel, 0]
        out[str(pid)] = arr
    return out


def _lookup(probs: Mapping[str, np.ndarray], stem: str, source: str) -> np.ndarray:
    from hemwsl.data.datalist import match_patient

    key = match_patient(stem, probs)
    if key is None:
        raise HemwslInputError(f"{source}: no predictions for patient {stem!r}")
    return probs[key]


_BRAIN_CACHE: OrderedDict[tuple, tuple[np.ndarray, tuple[int, ...]]] = OrderedDict()
_BRAIN_CACHE_SIZE = 64


def _brain_mask(path: str | os.PathLike, hu: np.ndarray) -> np.ndarray:
    """Brain mask of the CT at ``path`` (:class:`hemwsl.transforms.SkullStrip`), memoised (bit-packed) per
    file and modification time, so that several modes or methods run in one process strip each volume once."""
    from hemwsl.transforms.array import SkullStrip

    st = Path(path).stat()
    key = (str(Path(path).resolve()), st.st_mtime_ns, st.st_size)
    if key in _BRAIN_CACHE:
        _BRAIN_CACHE.move_to_end(key)
        packed, shape = _BRAIN_CACHE[key]
        return np.unpackbits(packed, count=int(np.prod(shape))).reshape(shape).astype(bool)
    brain = np.asarray(SkullStrip()(hu[None])[0], dtype=bool)
    _BRAIN_CACHE[key] = (np.packbits(brain.ravel()), brain.shape)
    while len(_BRAIN_CACHE) > _BRAIN_CACHE_SIZE:
        _BRAIN_CACHE.popitem(last=False)
    return brain


def _fill_values(hu: np.ndarray, ref: np.ndarray, region: np.ndarray) -> float:
    """Median HU of the reference (brain) pixels outside ``region``: the "normal brain" value."""
    outside = ref & ~region
    for sel in (outside, ref):
        if sel.any():
            return float(np.median(hu[sel]))
    return float(np.median(hu))


def _context_map(cam: np.ndarray, z: int, positive: np.ndarray, context_slices: int) -> np.ndarray:
    from hemwsl.thresholds import normalise_map
    from hemwsl.transforms.array import stack_indices

    idx = sorted({i for i in stack_indices(z, context_slices, cam.shape[-1]) if positive[i] or i == z})
    return np.mean([normalise_map(np.clip(cam[..., i], 0.0, None), "max") for i in idx], axis=0)


def _stack(hu: np.ndarray, z: int, num_slices: int) -> torch.Tensor:
    """``(num_slices, X, Y)`` neighbourhood of slice ``z`` of an ``(X, Y, Z)`` volume (edges replicated)."""
    from hemwsl.transforms.array import stack_indices

    idx = stack_indices(z, num_slices, hu.shape[-1])
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(hu[..., idx], -1, 0)))


@torch.no_grad()
def _probabilities(network, hu: np.ndarray, prep, num_slices: int, batch_size: int, device) -> np.ndarray:
    depth = hu.shape[-1]
    out = []
    for start in range(0, depth, batch_size):
        zs = range(start, min(start + batch_size, depth))
        x = torch.stack([_stack(hu, z, num_slices) for z in zs]).to(device)
        out.append(torch.sigmoid(network(prep(x)).float())[:, 0].cpu().numpy())
    return np.concatenate(out)


def _volume_inputs(image, cam, skull_strip: bool, brain_erosion: int):
    """``(volume, hu, heatmap on the CT grid, brain mask or None, region-of-interest mask or None)``."""
    from hemwsl.data.io import load_volume

    vol = load_volume(image, kind="image")
    hu = vol.array.astype(np.float32)
    if isinstance(cam, (str, os.PathLike)):
        cam_path = str(cam)
        cam_arr = load_volume(cam, kind="image").array
    else:
        cam_path = "cam array"
        cam_arr = np.asarray(cam, dtype=np.float32)
    if cam_arr.ndim == 3 and cam_arr.shape[2] == hu.shape[2] and cam_arr.shape[:2] != hu.shape[:2]:
        # a heatmap stored at the classifier's input size (run_cam(grid="input")): back to the CT grid
        from hemwsl.cam.base import upsample

        t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(cam_arr, -1, 0), dtype=np.float32))
        cam_arr = np.moveaxis(upsample(t, hu.shape[:2]).numpy(), 0, -1)
    if cam_arr.shape != hu.shape:
        raise HemwslInputError(
            f"{cam_path}: heatmap shape {cam_arr.shape} does not match the CT {image} shape {hu.shape}")
    brain = _brain_mask(image, hu) if skull_strip else None
    roi = brain
    if brain is not None and brain_erosion > 0:
        from scipy import ndimage

        roi = np.stack([ndimage.binary_erosion(brain[..., z], iterations=int(brain_erosion))
                        for z in range(hu.shape[-1])], -1)
    return vol, hu, cam_arr, brain, roi


def _calibrated(hu: np.ndarray, brain: np.ndarray | None, hu_reference: float | None) -> np.ndarray:
    """``hu`` as the intensity prior sees it: shifted to ``hu_reference`` (:func:`hemwsl.thresholds.calibrate_hu`)."""
    if hu_reference is None:
        return hu
    if brain is None:
        raise HemwslInputError("hu_reference needs skull_strip (the brain's HU is measured inside the brain mask)")
    from hemwsl.thresholds.intensity import calibrate_hu

    return calibrate_hu(hu, brain, hu_reference)[0]


def _full_region(strategy, cam_arr: np.ndarray, hu: np.ndarray, roi: np.ndarray | None) -> np.ndarray:
    """The thresholded region on every slice (no slice cut, no context)."""
    return np.stack([np.asarray(strategy(cam_arr[..., z], image_hu=hu[..., z],
                                         brain=None if roi is None else roi[..., z]), dtype=bool)
                     for z in range(hu.shape[-1])], -1)


def pseudo_label_volume(
    image: str | os.PathLike,
    cam: str | os.PathLike | np.ndarray,
    network: torch.nn.Module | None = None,
    settings: PseudoLabelSettings | None = None,
    *,
    inputs: InputSettings | None = None,
    probabilities: np.ndarray | None = None,
    component_filter: Any = None,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Pseudo mask of one CT volume.

    Args:
        image: the CT (NIfTI or DICOM folder, HU).
        cam: its heatmap on the CT grid (path or ``(X, Y, Z)`` array), e.g. from ``run_cam``.
        network: the slice classifier (eval mode); needed unless ``probabilities`` are given and
            the mode/selection does not score clusters.
        settings: how the pseudo mask is made (:class:`~hemwsl.pseudo.settings.PseudoLabelSettings`: mode,
            threshold, context, selection, K-means, slice cut, brain erosion, seed, HU calibration); ``None``: its
            defaults.
        inputs: the classifier's input settings (as in its bundle: ``windows``, ``num_slices``, ``spatial_size``,
            ``skull_strip``; :class:`~hemwsl.data.settings.InputSettings`, whose ``window_on_device`` is not used
            here); ``None``: its defaults.
        probabilities: ``(Z,)`` per-slice probabilities (e.g. :func:`read_slice_probabilities`);
            default: computed with ``network`` on the same inputs as in training.
        component_filter: a trained :class:`hemwsl.pseudo.components.ComponentFilter`: the thresholded
            region is computed on every slice, its per-slice components scored, and those under the
            filter's threshold dropped before the slice cut (and before K-means). Not with ``context``.
        batch_size: slices per forward pass (each scores ``batch_size * (k + 1)`` inputs).
        device: where the network runs.

    Returns:
        ``(mask uint8 (X, Y, Z), affine, info)``; ``info`` has per-slice ``probability``,
        ``positive``, ``voxels``, for ``cam_kmeans`` ``clusters``, ``chosen`` and ``drops``, and with a
        ``component_filter`` the per-slice ``components`` and ``kept_components`` counts.
    """
    from hemwsl.pseudo.differential import differential_prediction
    from hemwsl.pseudo.kmeans import kmeans_clusters
    from hemwsl.pseudo.preprocess import ClassifierInput, enhance_slices
    from hemwsl.transforms.array import stack_indices

    settings, inputs = _settings_and_inputs(settings, inputs)
    mode, select, k, context, context_slices = (settings.mode, settings.select, settings.k, settings.context,
                                                settings.context_slices)
    windows, num_slices, spatial_size, skull_strip = (inputs.windows, inputs.num_slices, inputs.spatial_size,
                                                      inputs.skull_strip)
    brain_erosion = settings.brain_erosion
    _check_with_inputs(context=context, brain_erosion=brain_erosion, skull_strip=skull_strip,
                       component_filter=component_filter is not None)
    strategy = _resolve_threshold(settings.threshold)
    needs_net = probabilities is None or (mode == "cam_kmeans" and select == "differential")
    if needs_net and network is None:
        raise HemwslInputError(
            f"network is required for mode={mode!r}, select={select!r}"
            + (" (no probabilities given)" if probabilities is None else "")
        )
    vol, hu, cam_arr, brain, roi = _volume_inputs(image, cam, skull_strip, brain_erosion)
    hu_prior = _calibrated(hu, brain, settings.hu_reference)
    depth = hu.shape[-1]
    hu_s = np.where(brain, hu, hu.min()).astype(np.float32) if brain is not None else hu
    ref = brain if brain is not None else hu > hu.min()
    prep = ClassifierInput(windows, spatial_size)
    if network is not None:
        network = network.to(device).eval()
    if probabilities is None:
        probabilities = _probabilities(network, hu_s, prep, num_slices, batch_size, device)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.shape != (depth,):
        n = probabilities.shape[0] if probabilities.ndim else 0
        raise HemwslInputError(f"{image}: got {n} slice probabilities for {depth} slices")
    if np.isnan(probabilities).any():
        missing = np.flatnonzero(np.isnan(probabilities)).tolist()
        raise HemwslInputError(f"{image}: slice probabilities missing for slice(s) {missing}")
    positive = probabilities >= settings.prob_threshold

    mask = np.zeros(hu.shape, dtype=np.uint8)
    info: dict[str, Any] = {"probability": probabilities.round(6).tolist(), "positive": positive.astype(int).tolist(),
                            "clusters": [0] * depth, "chosen": [-1] * depth, "drops": [None] * depth}
    regions: dict[int, np.ndarray] = {}
    if component_filter is not None:  # score the region's components on every slice, keep those on positive ones
        kept, counts = component_filter.keep(hu_prior, brain if brain is not None else ref,
                                             _full_region(strategy, cam_arr, hu_prior, roi))
        info.update(components=counts["components"], kept_components=counts["kept"])
        regions = {int(z): kept[..., z] for z in np.flatnonzero(positive)}
    else:
        for z in np.flatnonzero(positive):
            m = _context_map(cam_arr, z, positive, context_slices) if context else cam_arr[..., z]
            br = None if roi is None else roi[..., z]
            regions[int(z)] = np.asarray(strategy(m, image_hu=hu_prior[..., z], brain=br), dtype=bool)

    if mode == "cam":
        for z, r in regions.items():
            mask[..., z] = r
    else:
        # enhance only the slices clustering reads: the positive slices (and their context)
        need = sorted({i for z in regions for i in (stack_indices(z, context_slices, depth) if context else [z])})
        enhanced = dict(zip(need, enhance_slices(np.moveaxis(hu_s[..., need], -1, 0),
                                                 None if brain is None else np.moveaxis(brain[..., need], -1, 0),
                                                 window=settings.enhance_window,
                                                 method=settings.enhance))) if need else {}
        labels: dict[int, np.ndarray] = {}
        for z, r in regions.items():
            idx = stack_indices(z, context_slices, depth) if context else [z]
            feats = np.stack([enhanced[i] for i in idx])
            labels[z], n = kmeans_clusters(feats, r, k=k, seed=settings.seed)
            info["clusters"][z] = n
        todo = [z for z in labels if info["clusters"][z] > 0]
        if select == "brightest":
            for z in todo:
                info["chosen"][z] = info["clusters"][z] - 1
        else:
            for start in range(0, len(todo), batch_size):
                zs = todo[start:start + batch_size]
                stacks = torch.stack([_stack(hu_s, z, num_slices) for z in zs]).to(device)
                maps = torch.from_numpy(np.stack([labels[z] for z in zs])).to(device)
                fill = torch.tensor([_fill_values(hu_s[..., z], ref[..., z], regions[z]) for z in zs], device=device)
                res = differential_prediction(network, stacks, maps, k, fill, preprocess=prep.to(device))
                for j, z in enumerate(zs):
                    info["chosen"][z] = int(res.chosen[j])
                    drops = res.drops[j].cpu().tolist()
                    info["drops"][z] = [round(float(v), 6) if np.isfinite(v) else None for v in drops]
        for z in todo:
            if info["chosen"][z] >= 0:
                mask[..., z] = labels[z] == info["chosen"][z]
    info["voxels"] = mask.reshape(-1, depth).sum(0).astype(int).tolist()
    return mask, vol.affine, info


def _entry_stem(entry: Mapping) -> str:
    """The patient id of a datalist entry (``patient``, else the image file name without its suffixes)."""
    return str(entry.get(PATIENT) or Path(entry[IMAGE]).name.split(".")[0])


def _heatmap_file(cam_dir: str | os.PathLike, stem: str, method: str, layer: str) -> Path:
    """``run_cam``'s heatmap of patient ``stem``; a clear error naming it when it is missing."""
    from hemwsl.cam.volume import heatmap_path

    cam_path = heatmap_path(cam_dir, stem, (method, layer))
    if not cam_path.is_file():
        raise HemwslInputError(
            f"{cam_path}: heatmap of patient {stem} not found (run the CAM step for {method}/{layer})")
    from hemwsl.data.io import check_nifti_header

    check_nifti_header(cam_path)  # a file that is no NIfTI is named now, before earlier patients are written
    return cam_path


def check_heatmaps_readable(cam_dir: str | os.PathLike, method: str, layer: str, datalist: Sequence[Mapping]) -> None:
    """Every heatmap the labels of ``datalist`` will be made from reads as a finite 3D array: a truncated file or a
    NaN voxel is one line naming it before the first pseudo-label is written (the line :func:`make_pseudo_labels`
    would give when it reaches the file), not after the patients before it. A missing map is named where it is
    read."""
    from hemwsl.cam.volume import heatmap_path
    from hemwsl.data.io import load_volume

    for entry in datalist:
        f = heatmap_path(Path(cam_dir), _entry_stem(entry), (method, layer))
        if f.is_file() or f.is_symlink():
            load_volume(f, kind="image")


def _done_record(done: Path) -> dict | None:
    """The record of a volume an earlier call finished (``.done/<patient>.json``: its voxels per slice and spacing),
    or ``None`` when it is unreadable or incomplete (a kill while it was written, an edit): that volume is then made
    again, a warning naming the file (finished work is kept, corrupt state never used)."""
    from hemwsl.data.io import read_json_file, record_value

    try:
        info = read_json_file(done, "record of a finished pseudo-label volume")
        voxels = record_value(info, "voxels", done, "list")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in voxels):
            raise HemwslInputError(f"{done}: voxels must be counts (integers >= 0) per slice, got {voxels!r}")
        record_value(info, "spacing", done, "numbers", length=3, minimum=0.0)
    except HemwslInputError as err:
        logger.warning("%s; the volume is made again", err)
        return None
    return info


def _params_record(**kw: Any) -> dict:
    return json.loads(json.dumps(kw, default=repr))


def make_pseudo_labels(
    network: torch.nn.Module | None,
    datalist: Sequence[Mapping],
    cam_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    method: str,
    layer: str,
    settings: PseudoLabelSettings | None = None,
    *,
    inputs: InputSettings | None = None,
    predictions_csv: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    component_filter: Any = None,
    component_filter_rule: str | None = None,
    prob_threshold_rule: str | None = None,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> list[dict]:
    """Write the pseudo mask of every entry of ``datalist`` and the training datalist; resumable.

    Args:
        network: the slice classifier, or ``None`` when ``predictions_csv`` is given and
            ``mode="cam"`` or ``select="brightest"``.
        datalist: entries with ``image`` and ``patient`` (the other keys of
            :mod:`hemwsl.data.datalist` are kept when present).
        cam_dir: the ``run_cam`` output root (``<cam_dir>/<method>/<layer>/<patient>.nii.gz``).
        out_dir: where ``<patient>.nii.gz`` and ``datalist.json`` go.
        method, layer: which heatmaps to use.
        settings, inputs, batch_size, device: see :func:`pseudo_label_volume` (``None``: the defaults of
            :class:`~hemwsl.pseudo.settings.PseudoLabelSettings`, :class:`~hemwsl.data.settings.InputSettings`).
        predictions_csv: one or more predictions CSVs of the classifier bundle giving the slice
            probabilities (instead of recomputing them with ``network``).
        component_filter: a trained :class:`hemwsl.pseudo.components.ComponentFilter` (see
            :func:`pseudo_label_volume`; train it with :func:`fit_component_filter` on other patients).
        component_filter_rule: how the filter was trained, recorded in ``pseudo_params.json`` (e.g.
            ``"per fold, on its training and validation patients"``); required with ``component_filter``.
        prob_threshold_rule: how ``settings.prob_threshold`` was chosen when it differs between calls writing to
            the same ``out_dir`` (e.g. ``"f1_max"``: each cross-validation fold's validation F1-max threshold).
            The folder then records the rule instead of the value, and each volume's ``.done`` record
            keeps the value it used.
        progress: progress bar over volumes.

    Returns:
        The pseudo-label datalist, also written to ``<out_dir>/datalist.json``; entries of other patients
        already listed there (earlier calls, e.g. the other folds of a cross-validation) are kept first.
    """
    from tqdm import tqdm

    from hemwsl.data.datalist import NUM_SLICES, POSITIVE, save_datalist
    from hemwsl.data.io import atomic_write_text, load_volume, save_nifti

    settings, inputs = _settings_and_inputs(settings, inputs)
    kmeans, skull_strip = settings.mode == "cam_kmeans", inputs.skull_strip
    _check_with_inputs(context=settings.context, brain_erosion=settings.brain_erosion, skull_strip=skull_strip,
                       component_filter=component_filter is not None)
    if not datalist:
        raise HemwslInputError("datalist is empty: no volumes to pseudo-label")
    strategy = _resolve_threshold(settings.threshold)
    out = Path(out_dir)
    params = _params_record(cam_dir=str(cam_dir), method=method, layer=layer, mode=settings.mode,
                            threshold=repr(strategy),
                            context=bool(settings.context),
                            context_slices=int(settings.context_slices) if settings.context else None,
                            select=settings.select if kmeans else None, k=int(settings.k) if kmeans else None,
                            enhance=settings.enhance if kmeans else None,
                            enhance_window=settings.enhance_window if kmeans else None,
                            prob_threshold=prob_threshold_rule or float(settings.prob_threshold),
                            windows=list(inputs.windows), num_slices=int(inputs.num_slices),
                            spatial_size=None if inputs.spatial_size is None else list(inputs.spatial_size),
                            skull_strip=bool(skull_strip), seed=int(settings.seed))
    if settings.brain_erosion:  # recorded only when used, so folders made before the option still resume
        params["brain_erosion"] = int(settings.brain_erosion)
    hu_reference = settings.hu_reference
    if hu_reference is not None:  # likewise
        if not skull_strip:
            raise HemwslInputError("hu_reference needs skull_strip (the brain's HU is measured inside the brain mask)")
        params["hu_reference"] = list(hu_reference) if isinstance(hu_reference, tuple) else hu_reference
    if component_filter is not None:
        if not component_filter_rule:
            raise HemwslInputError("component_filter_rule: say how the component filter was trained")
        params["component_filter"] = {**component_filter.describe(), "trained": str(component_filter_rule)}
    csvs = None if predictions_csv is None else (
        [predictions_csv] if isinstance(predictions_csv, (str, os.PathLike)) else list(predictions_csv))
    if csvs is not None:  # which predictions (best or last checkpoint), not which fold's file
        params["predictions"] = sorted({Path(c).name for c in csvs})
    params_path = out / "pseudo_params.json"
    if params_path.exists() or params_path.is_symlink():
        from hemwsl.data.io import read_json_file

        old = read_json_file(params_path, "pseudo-label settings record")
        if "predictions" in params and "predictions" not in old:  # a folder made before this was recorded
            old["predictions"] = params["predictions"]
        if old != params:
            diff = sorted(key for key in set(old) | set(params) if old.get(key) != params.get(key))
            raise HemwslInputError(
                f"{out}: holds pseudo-labels made with other settings ({', '.join(diff)}); use another out_dir")
    probs: dict[str, np.ndarray] | None = None
    source = ""
    if csvs is not None:
        probs = {}
        for c in csvs:
            probs.update(read_slice_probabilities(c))
        source = ", ".join(map(str, csvs))

    jobs = []
    for entry in datalist:  # check every input before the first volume is processed
        if IMAGE not in entry:
            raise HemwslInputError(f"datalist entry {dict(entry)!r} has no {IMAGE!r}")
        stem = _entry_stem(entry)
        jobs.append((entry, stem, _heatmap_file(cam_dir, stem, method, layer)))

    if not params_path.exists():
        atomic_write_text(params_path, json.dumps(params, indent=1) + "\n")
    volume_settings = dataclasses.replace(settings, threshold=strategy)  # the strategy built once, for every volume
    result: list[dict] = []
    for entry, stem, cam_path in tqdm(jobs, desc="pseudo-labels", disable=not progress):
        mask_path = out / f"{stem}.nii.gz"
        done = out / ".done" / f"{stem}.json"
        info = _done_record(done) if done.exists() and mask_path.exists() else None
        if info is None:
            p = None if probs is None else _lookup(probs, stem, source)
            mask, affine, info = pseudo_label_volume(
                entry[IMAGE], cam_path, network, volume_settings, inputs=inputs, probabilities=p,
                component_filter=component_filter, batch_size=batch_size, device=device)
            info["prob_threshold"] = float(settings.prob_threshold)
            save_nifti(mask, affine, mask_path)
            vol = load_volume(entry[IMAGE], kind="image") if SPACING not in entry else None
            info["spacing"] = list(entry[SPACING]) if vol is None else [float(s) for s in vol.spacing]
            atomic_write_text(done, json.dumps(info) + "\n")
            logger.info("%s: %d pseudo-label voxels on %d slices", stem, sum(info["voxels"]),
                        sum(v > 0 for v in info["voxels"]))
        slice_labels = [int(v > 0) for v in info["voxels"]]
        result.append({
            IMAGE: str(entry[IMAGE]),
            LABEL: str(mask_path),
            PATIENT: stem,
            SLICE_LABELS: slice_labels,
            SUBTYPE_LABELS: None,
            SPACING: [float(s) for s in info["spacing"]],
            NUM_SLICES: len(slice_labels),
            POSITIVE: int(any(slice_labels)),
            REFERENCE: None if entry.get(LABEL) is None else str(entry[LABEL]),
            WEAK_SLICE_LABELS: entry.get(SLICE_LABELS),
        })
    listed = out / "datalist.json"
    if listed.exists():  # keep the entries of other patients written by earlier calls (e.g. other folds)
        from hemwsl.data.datalist import load_datalist

        mine = {e[PATIENT] for e in result}
        result = [e for e in load_datalist(listed) if e[PATIENT] not in mine] + result
    save_datalist(result, listed)
    return result


def fit_component_filter(
    datalist: Sequence[Mapping],
    cam_dir: str | os.PathLike,
    method: str,
    layer: str,
    threshold: Any,
    *,
    skull_strip: bool = True,
    brain_erosion: int = 0,
    filter_threshold: float = 0.5,
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    progress: bool = True,
    hu_reference: float | None = None,
):
    """Train a :class:`hemwsl.pseudo.components.ComponentFilter` on the slice labels of ``datalist``.

    Each volume's region (``threshold`` on every slice, restricted to the brain eroded by
    ``brain_erosion``, as :func:`pseudo_label_volume` makes it) is split in per-slice components, and each
    component is labelled with its slice's label (``slice_labels`` of the entry: weak labels, no mask is
    read).

    Args:
        datalist: the training patients (never the patients the filter will be applied to).
        cam_dir, method, layer: the heatmaps (as in :func:`make_pseudo_labels`; read even when ``threshold``
            needs none, so that the inputs are those of the pseudo-label step).
        threshold: the region's threshold (a number or a strategy, as in :func:`pseudo_label_volume`).
        skull_strip, brain_erosion: as in :func:`pseudo_label_volume`.
        filter_threshold: the trained filter's decision threshold.
        cache_dir: keep each volume's component features there (``<stem>.npz``) for later calls with the
            same settings (e.g. the other folds of a cross-validation).
        seed: of the trees.
        progress: progress bar.
    """
    from tqdm import tqdm

    from hemwsl.pseudo.components import ComponentFilter, component_features

    strategy = _resolve_threshold(threshold)
    xs, ys = [], []
    for entry in tqdm(datalist, desc="component features", disable=not progress):
        stem = _entry_stem(entry)
        labels = entry.get(SLICE_LABELS)
        if labels is None:
            raise HemwslInputError(f"patient {stem}: no {SLICE_LABELS!r} to train the component filter on")
        cached = None if cache_dir is None else Path(cache_dir) / f"{stem}.npz"
        if cached is not None and cached.is_file():
            with np.load(cached) as z:
                feats, slices = z["features"], z["slices"]
        else:
            cam_path = _heatmap_file(cam_dir, stem, method, layer)
            _, hu, cam_arr, brain, roi = _volume_inputs(entry[IMAGE], cam_path, skull_strip, brain_erosion)
            hu = _calibrated(hu, brain, hu_reference)
            ref = brain if brain is not None else hu > hu.min()
            feats, slices, _ = component_features(hu, ref, _full_region(strategy, cam_arr, hu, roi))
            if cached is not None:
                _save_npz(cached, features=feats, slices=slices)
        labels = np.asarray(labels).astype(int)
        if slices.size and int(slices.max()) >= labels.size:
            raise HemwslInputError(f"patient {stem}: {labels.size} slice labels, but the volume has more slices")
        xs.append(feats)
        ys.append(labels[slices])
    return ComponentFilter(filter_threshold, seed=seed).fit(np.concatenate(xs), np.concatenate(ys))


def component_filter_at(path: str | os.PathLike, datalist: Sequence[Mapping], *args: Any,
                        filter_threshold: float | None = None, **kwargs: Any):
    """The component filter saved at ``path`` (with ``filter_threshold`` when given), or, when there is none
    yet, one trained by :func:`fit_component_filter` (``datalist``, ``*args``, ``**kwargs``) and saved there:
    a resumed run reuses the filter of the first."""
    from hemwsl.pseudo.components import ComponentFilter

    if Path(path).is_file():
        return ComponentFilter.load(path, threshold=filter_threshold)
    if filter_threshold is not None:
        kwargs["filter_threshold"] = filter_threshold
    flt = fit_component_filter(datalist, *args, **kwargs)
    flt.save(path)
    return flt


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    import io

    from hemwsl.data.io import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def evaluate_pseudo_labels(datalist: Sequence[Mapping], positive_only: bool = True) -> dict:
    """Volume Dice of each pseudo mask (``label``) against its true mask (``reference``), with the diagnostics
    that tell where a pseudo-label set loses it.

    Args:
        datalist: a pseudo-label datalist from :func:`make_pseudo_labels`.
        positive_only: only patients whose true mask is non-empty.

    Returns:
        ``{"per_patient": {patient: dice}, "mean_dice", "median_dice", "n", "diagnostics"}``; Dice follows the
        empty-mask policy of :func:`hemwsl.metrics.volume.compute_volume_dice`. ``diagnostics`` has, per
        patient (``per_patient``) and as means over patients (``mean``): ``precision`` (the share of
        pseudo-label voxels that are blood; NaN for an empty pseudo mask, left out of the mean), ``recall``
        (the share of blood voxels labelled) and ``slice_recall`` (the share of blood voxels on slices that
        carry any pseudo-label: what the slice cut left reachable).
    """
    from hemwsl.data.io import load_volume
    from hemwsl.metrics.volume import compute_volume_dice

    per: dict[str, float] = {}
    diag: dict[str, dict[str, float]] = {}
    for e in datalist:
        if e.get(REFERENCE) is None:
            continue
        gt = load_volume(e[REFERENCE], kind="mask", dtype=np.uint8).array > 0
        if positive_only and not gt.any():
            continue
        pseudo = load_volume(e[LABEL], kind="mask", dtype=np.uint8).array > 0
        if pseudo.shape != gt.shape:
            raise HemwslInputError(
                f"{e[LABEL]}: shape {pseudo.shape} does not match the reference {e[REFERENCE]} {gt.shape}")
        pid = str(e[PATIENT])
        per[pid] = compute_volume_dice(pseudo, gt)
        n_gt, n_ps, hit = int(gt.sum()), int(pseudo.sum()), int((pseudo & gt).sum())
        labelled = pseudo.reshape(-1, pseudo.shape[-1]).any(0)
        diag[pid] = {"precision": hit / n_ps if n_ps else float("nan"),
                     "recall": hit / n_gt if n_gt else float("nan"),
                     "slice_recall": float(gt[..., labelled].sum()) / n_gt if n_gt else float("nan")}
    vals = np.asarray(list(per.values()), dtype=np.float64)
    means = {}
    for key in ("precision", "recall", "slice_recall"):
        v = np.asarray([d[key] for d in diag.values()], dtype=np.float64)
        means[key] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
    return {"per_patient": per, "mean_dice": float(vals.mean()) if len(vals) else float("nan"),
            "median_dice": float(np.median(vals)) if len(vals) else float("nan"), "n": int(len(vals)),
            "diagnostics": {"per_patient": diag, "mean": means}}
