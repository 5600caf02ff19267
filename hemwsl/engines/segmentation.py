"""Workflow functions for the 3D U-Net hemorrhage segmenter, called by ``bundles/ich_unet3d``.

The segmenter follows Ramananda and Sundaresan's weakly supervised ICH segmentation: a 3D U-Net
trained on pseudo-labels (from CAMs of a slice classifier), with skull stripping and histogram
equalisation before training and at test time. Trained on the true masks instead, the same
configuration gives the fully supervised upper bound.

Here live the parts the bundle configs only wire: the fold datalists (training labels may be
pseudo-labels, validation and test always use the true masks; folds are those of the slice
classifier), the optional equaliser, the per-epoch history, prediction of whole volumes back on the
CT grid, the per-patient volume metrics (:mod:`hemwsl.metrics.volume`) and their summaries.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hemwsl.constants import BRAIN, IMAGE, LABEL, PATIENT
from hemwsl.data.io import atomic_write_text
from hemwsl.errors import HemwslInputError

__all__ = [
    "METRIC_COLUMNS",
    "check_unet_settings",
    "load_segmentation_datalist",
    "segmentation_datalists",
    "equalize_transform",
    "SegmentationHistory",
    "resize_to_grid",
    "predict_mask",
    "evaluate_segmentation",
    "gate_segmentation",
    "run_segmentation_inference",
    "read_metrics_csv",
    "summarize_segmentation",
    "summarize_seg_cv",
]

logger = logging.getLogger(__name__)

#: Per-patient metric columns of ``metrics_<part>.csv`` (:func:`hemwsl.metrics.volume.volume_metrics`
#: plus the intersection volume used by the pooled Dice).
METRIC_COLUMNS: tuple[str, ...] = ("dice", "rvd", "tpr", "hd95", "assd", "surface_dice", "pred_ml", "gt_ml", "inter_ml")
#: Metrics summarised as mean +- sd over the positive patients.
SUMMARY_METRICS: tuple[str, ...] = ("dice", "rvd", "tpr", "hd95", "assd", "surface_dice")


# --------------------------------------------------------------------------------------------- datalists
def check_unet_settings(patch_size: Any, features: Sequence[int] = (16, 32, 64, 128, 256), z_stride_from: int = 2,
                        samples_per_volume: Any = 1, pos: Any = 1.0, neg: Any = 1.0, sw_batch_size: Any = 4,
                        sw_overlap: Any = 0.25, threshold: Any = 0.5, resample: Any = "bilinear",
                        **train: Any) -> None:
    """Check the U-Net bundle's settings once, before any data is read or folder written (``configs/train.yaml``'s
    ``initialize``): ``patch_size`` must be 3 positive sizes, multiples of what the network's levels halve (a
    wrong one would otherwise fail inside the data loader's padding); ``train`` (``epochs``, ``learning_rate``,
    ``batch_size``, ``val_fraction``, ``windows``, ``skull_strip``...) as
    :func:`hemwsl.engines.classifier.check_train_settings`; ``samples_per_volume`` an integer >= 1, ``pos`` and
    ``neg`` (the crop's foreground / background ratio) numbers >= 0, not both 0; the sliding-window inference's
    ``sw_batch_size`` an integer >= 1 and ``sw_overlap`` in [0, 1), the mask ``threshold`` a probability in (0, 1)
    and ``resample`` (probabilities back to the CT grid) ``bilinear`` or ``nearest`` (each would otherwise fail, or
    score Dice 0, only after a fold has trained).

    Raises:
        HemwslInputError: naming the first bad setting and its value.
    """
    from hemwsl.engines.classifier import check_train_settings
    from hemwsl.networks.unet3d import patch_divisor

    div = patch_divisor(len(features), z_stride_from)
    ok = isinstance(patch_size, (list, tuple)) and len(patch_size) == 3 and all(
        isinstance(p, (int, np.integer)) and not isinstance(p, bool) and p >= 1 for p in patch_size)
    if not ok or any(int(p) % d for p, d in zip(patch_size, div)):
        raise HemwslInputError(f"patch_size must be 3 sizes (x, y, z) that are multiples of {list(div)} for "
                               f"{len(features)} levels (z_stride_from={z_stride_from}), got {patch_size!r}")
    from hemwsl.engines.classifier import _int_setting, _number_setting

    _int_setting("samples_per_volume", samples_per_volume, 1)
    for name, value in (("pos", pos), ("neg", neg)):
        if _number_setting(name, value) < 0:
            raise HemwslInputError(f"{name} must be >= 0 (the crop's foreground : background ratio), got {value!r}")
    if float(pos) + float(neg) <= 0:
        raise HemwslInputError(f"pos and neg must not both be 0 (the crop's foreground : background ratio), got "
                               f"{pos!r} and {neg!r}")
    _int_setting("sw_batch_size", sw_batch_size, 1)
    if not 0.0 <= _number_setting("sw_overlap", sw_overlap) < 1.0:
        raise HemwslInputError(f"sw_overlap must be in [0, 1) (the sliding windows' overlap), got {sw_overlap!r}")
    if not 0.0 < _number_setting("threshold", threshold) < 1.0:
        raise HemwslInputError(f"threshold must be a probability in (0, 1) (the U-Net's mask), got {threshold!r}")
    if resample not in ("bilinear", "nearest"):
        raise HemwslInputError(f"resample must be bilinear or nearest (probabilities back to the CT grid), got "
                               f"{resample!r}")
    check_train_settings(**train)


def _resolve(path: str, base: Path) -> str:
    p = Path(path)
    if p.is_absolute() or p.exists():
        return str(p)
    return str(base / p) if (base / p).exists() else str(p)


def load_segmentation_datalist(path: str | os.PathLike, label_key: str = LABEL) -> list[dict]:
    """Read a JSON datalist of ``{"image": CT NIfTI, "label": mask NIfTI, "patient": id}`` entries.

    The label may be a true mask or a pseudo-label on the CT grid. Relative paths are taken from the
    working directory, else from the datalist's folder. Other keys are kept.

    Raises:
        HemwslInputError: naming the file (and entry) for a missing/corrupt file, a missing key or a
            missing image or label file.
    """
    p = Path(path)
    if not p.is_file():
        raise HemwslInputError(f"{p}: datalist file not found")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HemwslInputError(f"{p}: corrupt datalist JSON ({err})") from err
    if isinstance(data, dict) and "training" in data:  # MONAI decathlon-style {"training": [...]}
        data = data["training"]
    if not isinstance(data, list) or not data:
        raise HemwslInputError(f"{p}: a datalist must be a non-empty JSON list of entries")
    out = []
    for i, e in enumerate(data):
        where = f"{p}: entry {i}"
        if not isinstance(e, dict):
            raise HemwslInputError(f"{where}: expected an object, got {type(e).__name__}")
        missing = [k for k in (IMAGE, label_key, PATIENT) if not e.get(k)]
        if missing:
            raise HemwslInputError(f"{where}: missing or empty key(s) {missing}")
        entry = dict(e)
        entry[PATIENT] = str(e[PATIENT])
        for key in (IMAGE, label_key):
            entry[key] = _resolve(str(e[key]), p.parent)
            if not Path(entry[key]).exists():
                raise HemwslInputError(f"{where} (patient {entry[PATIENT]!r}): {key} file {entry[key]} not found")
        if label_key != LABEL:
            entry[LABEL] = entry[label_key]
        out.append(entry)
    return out


def _with_positivity(entries: list[dict]) -> list[dict]:
    """Fill ``positive`` (any voxel of the mask) where a datalist entry does not give it."""
    from hemwsl.data.io import load_volume

    out = []
    for e in entries:
        e = dict(e)
        if "positive" not in e and not e.get("slice_labels"):
            e["positive"] = int(bool(load_volume(e[LABEL], kind="mask", dtype=np.uint8).array.any()))
        out.append(e)
    return out


def segmentation_datalists(
    dataset_dir: str | os.PathLike | None = None,
    layout: str = "ct-ich",
    datalist_file: str | os.PathLike | None = None,
    eval_datalist_file: str | os.PathLike | None = None,
    n_folds: int = 5,
    fold: int = 0,
    seed: int = 0,
    val_fraction: float = 0.15,
) -> dict[str, list[dict]]:
    """``train``/``val``/``test`` datalists of one fold for the segmenter.

    The evaluation datalist holds the true masks: ``eval_datalist_file`` when given, else the
    datalist of ``dataset_dir`` (``layout``), else ``datalist_file`` itself. Patients are split on it
    with :func:`hemwsl.engines.classifier.fold_datalists`, so the folds are exactly the slice
    classifier's. ``val`` and ``test`` come from the evaluation datalist (true masks); ``train`` takes
    its labels from ``datalist_file`` when given (e.g. CAM pseudo-labels), else the true masks.

    Raises:
        HemwslInputError: no source given, training entries of patients absent from the evaluation
            datalist (their fold is unknown), or no training entry left.
    """
    from hemwsl.data.datalist import build_datalist
    from hemwsl.engines.classifier import fold_datalists

    train_dl = load_segmentation_datalist(datalist_file) if datalist_file else None
    if eval_datalist_file:
        eval_dl = load_segmentation_datalist(eval_datalist_file)
    elif dataset_dir:
        eval_dl = build_datalist(layout, dataset_dir)
    elif train_dl is not None:
        logger.warning("no true masks given (dataset_dir / eval_datalist_file): validating on %s", datalist_file)
        eval_dl = train_dl
    else:
        raise HemwslInputError("give dataset_dir, datalist_file or eval_datalist_file")
    eval_dl = _with_positivity(eval_dl)
    parts = fold_datalists(eval_dl, n_folds=n_folds, fold=fold, seed=seed, val_fraction=val_fraction)
    if train_dl is None:
        return parts
    known = {e[PATIENT] for e in eval_dl}
    unknown = sorted({e[PATIENT] for e in train_dl} - known)
    if unknown:
        raise HemwslInputError(
            f"{datalist_file}: patient(s) {unknown[:10]} are not in the evaluation datalist, so their fold is unknown"
        )
    train_ids = {e[PATIENT] for e in parts["train"]}
    parts["train"] = [e for e in train_dl if e[PATIENT] in train_ids]
    without = sorted(train_ids - {e[PATIENT] for e in parts["train"]})
    if without:
        logger.warning("%s: no training labels for %d training patient(s) of fold %d (%s); they are left out",
                       datalist_file, len(without), fold, ", ".join(without[:10]))
    if not parts["train"]:
        raise HemwslInputError(f"{datalist_file}: no entry belongs to the training patients of fold {fold}")
    return parts


# --------------------------------------------------------------------------------------------- transforms
def equalize_transform(enabled: bool = True, keys: Sequence[str] | str = (IMAGE,), mask_key: str | None = BRAIN,
                       num_bins: int = 256):
    """Histogram equalisation of the windowed image inside the brain mask, or identity when disabled.

    ``mask_key`` names the brain mask written by skull stripping; give ``None`` when skull stripping is
    off, and every voxel is the reference.
    """
    from monai.transforms import Identityd

    from hemwsl.transforms import HistogramEqualized

    if not enabled:
        return Identityd(keys=keys)
    return HistogramEqualized(keys=keys, num_bins=num_bins, mask_key=mask_key)


# --------------------------------------------------------------------------------------------- history
class SegmentationHistory:
    """Per-epoch training history written to ``<output_dir>/history.json`` (atomically, every epoch).

    Attach it to the trainer after the validation handler: each record has the epoch, its wall time in
    seconds, the mean training loss and, on validation epochs, the evaluator's metrics.
    """

    def __init__(self, output_dir: str | os.PathLike, evaluator=None, filename: str = "history.json") -> None:
        self.path = Path(output_dir) / filename
        self.evaluator = evaluator
        self.records: list[dict] = []
        self._t0 = 0.0
        self._losses: list[float] = []

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _start(self, engine) -> None:
        self._t0 = time.perf_counter()
        self._losses = []

    def _iteration(self, engine) -> None:
        out = engine.state.output
        out = out[0] if isinstance(out, list) else out
        if isinstance(out, Mapping) and "loss" in out:
            self._losses.append(float(torch.as_tensor(out["loss"]).detach().float().mean()))

    def __call__(self, engine) -> None:
        rec = {"epoch": int(engine.state.epoch), "time_s": round(time.perf_counter() - self._t0, 3),
               "train_loss": float(np.mean(self._losses)) if self._losses else float("nan")}
        ev = self.evaluator
        # MONAI's ValidationHandler runs the evaluator with the trainer's epoch as its own
        if ev is not None and int(getattr(ev.state, "epoch", -1)) == int(engine.state.epoch):
            rec.update({k: float(v) for k, v in ev.state.metrics.items() if np.isscalar(v)})
        self.records.append(rec)
        atomic_write_text(self.path, json.dumps({"epochs": self.records}, indent=1, default=float))


# --------------------------------------------------------------------------------------------- prediction
def resize_to_grid(volume: torch.Tensor | np.ndarray, size: Sequence[int], mode: str = "bilinear") -> torch.Tensor:
    """Resample an ``(X, Y, Z)`` volume in-plane to ``size = (X', Y')`` (Z kept), slice by slice.

    The inverse of the in-plane resize of :class:`hemwsl.data.dataset.LoadCTVolumed`: give it the
    probabilities (``"bilinear"``, then threshold) or a binary mask (``"nearest"``).
    """
    if mode not in ("bilinear", "nearest"):
        raise HemwslInputError(f"unknown mode {mode!r}; accepted values: bilinear, nearest")
    t = torch.as_tensor(volume)
    if t.ndim != 3:
        raise HemwslInputError(f"volume must be (X, Y, Z), got shape {tuple(t.shape)}")
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise HemwslInputError(f"size must be the in-plane (X, Y) size, got {size}")
    if tuple(t.shape[:2]) == size:
        return t
    z_first = t.permute(2, 0, 1).unsqueeze(1).float()  # (Z, 1, X, Y)
    kw = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(z_first, size=size, mode=mode, **kw)[:, 0].permute(1, 2, 0)


@torch.no_grad()
def predict_mask(network: torch.nn.Module, entry: Mapping, transform: Callable, inferer: Callable, *,
                 threshold: float = 0.5, resample: str = "bilinear", device: str | torch.device = "cpu",
                 amp: bool = False):
    """Predict one CT volume and return ``(mask uint8 (X, Y, Z) on the CT grid, probabilities, Volume)``.

    ``transform`` is the deterministic preprocessing of the training config (load, resize, skull strip,
    window, equalise); ``inferer`` is typically MONAI's ``SlidingWindowInferer``. The sigmoid
    probabilities are resized back to the CT grid (``resample``: ``"bilinear"``, smooth boundaries
    that round off the corners of blocky masks, or ``"nearest"``, the exact inverse of the nearest
    down-sampling of masks), then thresholded (``> threshold``).
    """
    from hemwsl.data.io import load_volume

    image = load_volume(entry[IMAGE], kind="image")
    # the entry's mask goes through too (unused here): it is part of the disk-cache key of the loaded volume
    sample = transform({IMAGE: entry[IMAGE], LABEL: entry.get(LABEL), PATIENT: entry.get(PATIENT)})
    x = torch.as_tensor(sample[IMAGE]).float()[None].to(device)
    network.eval()
    with torch.autocast(device_type=torch.device(device).type, enabled=bool(amp)):
        logits = inferer(x, network)
    prob = torch.sigmoid(logits.float())[0, 0].cpu()
    prob = resize_to_grid(prob, image.shape[:2], mode=resample)
    if prob.shape != image.shape:
        raise HemwslInputError(f"{entry[IMAGE]}: prediction shape {tuple(prob.shape)} != CT shape {image.shape}")
    return (prob > threshold).numpy().astype(np.uint8), prob.numpy(), image


def _stem(path: str) -> str:
    return Path(path).name.split(".")[0]


def _metrics_row(patient: str, image: str, pred_path: Path, pred: np.ndarray, label_path: str, spacing,
                 tolerance_mm: float) -> dict:
    from hemwsl.data.io import load_volume
    from hemwsl.metrics.volume import lesion_volume_ml, volume_metrics

    gt = load_volume(label_path, kind="mask", dtype=np.uint8).array > 0
    if gt.shape != pred.shape:
        raise HemwslInputError(f"{label_path}: mask shape {gt.shape} does not match the prediction {pred.shape}")
    m = volume_metrics(pred > 0, gt, spacing, tolerance_mm=tolerance_mm)
    m["inter_ml"] = lesion_volume_ml((pred > 0) & gt, spacing)
    return {"patient": patient, "image": image, "prediction": str(pred_path), "gt_positive": int(gt.any()),
            **{k: float(m[k]) for k in METRIC_COLUMNS}}


def evaluate_segmentation(network: torch.nn.Module, datalist: Sequence[Mapping], output_dir: str | os.PathLike,
                          transform: Callable, inferer: Callable, *, name: str = "test", threshold: float = 0.5,
                          resample: str = "bilinear", tolerance_mm: float = 2.0, device: str | torch.device = "cpu",
                          amp: bool = False) -> dict:
    """Predict every volume of ``datalist`` and score it against its true mask on the CT grid.

    Writes ``predictions_<name>/<patient>.nii.gz`` (uint8 masks with the CT affine, atomically; a
    patient whose prediction exists is not predicted again, so an interrupted run resumes),
    ``metrics_<name>.csv`` (one row per patient: :data:`METRIC_COLUMNS` from
    :func:`hemwsl.metrics.volume.volume_metrics`, distances in mm, volumes in mL) and
    ``summary_<name>.json`` (:func:`summarize_segmentation`). Returns the summary.
    """
    from hemwsl.data.io import load_volume, save_nifti

    out = Path(output_dir)
    pred_dir = out / f"predictions_{name}"
    rows = []
    for i, entry in enumerate(datalist):
        patient = str(entry.get(PATIENT, _stem(entry[IMAGE])))
        if not entry.get(LABEL):
            raise HemwslInputError(f"{name} entry {i} (patient {patient!r}, {entry[IMAGE]}): no true mask to score")
        pred_path = pred_dir / f"{patient}.nii.gz"
        if pred_path.exists():
            pred = load_volume(pred_path, kind="mask", dtype=np.uint8).array
            spacing = load_volume(entry[IMAGE], kind="image").spacing
            logger.info("%s: prediction exists, not predicted again", patient)
        else:
            pred, _, image = predict_mask(network, entry, transform, inferer, threshold=threshold, resample=resample,
                                          device=device, amp=amp)
            spacing = image.spacing
            save_nifti(pred, image.affine, pred_path)
        row = _metrics_row(patient, str(entry[IMAGE]), pred_path, pred, entry[LABEL], spacing, tolerance_mm)
        rows.append(row)
        logger.info("%s: dice %.3f pred %.2f mL gt %.2f mL", patient, row["dice"], row["pred_ml"], row["gt_ml"])
    return _write_metrics(out, name, rows, threshold=float(threshold), resample=resample, tolerance_mm=float(tolerance_mm))


def _write_metrics(out: Path, name: str, rows: Sequence[Mapping], **fields) -> dict:
    """``metrics_<name>.csv`` and ``summary_<name>.json`` (with ``fields``) of per-patient rows; returns the summary."""
    header = ["patient", "gt_positive", *METRIC_COLUMNS, "image", "prediction"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in header})
    atomic_write_text(out / f"metrics_{name}.csv", buf.getvalue())
    summary = summarize_segmentation(rows)
    summary.update(name=name, **fields)
    atomic_write_text(out / f"summary_{name}.json", json.dumps(summary, indent=2, default=float))
    pos = summary["positive"]["dice"]
    logger.info("%s: Dice on %d positive patients %.4f +- %.4f (pooled %.4f)", name, summary["n_positive"],
                pos["mean"], pos["sd"], summary["pooled"]["dice"])
    return summary


def gate_segmentation(datalist: Sequence[Mapping], output_dir: str | os.PathLike,
                      probabilities: Mapping[str, np.ndarray], *, prob_threshold: float = 0.5, name: str = "test",
                      gated_name: str | None = None, tolerance_mm: float = 2.0) -> dict:
    """Keep a segmenter's predictions only on the slices the slice classifier calls positive, and score them.

    Reads ``predictions_<name>/<patient>.nii.gz`` written by :func:`evaluate_segmentation`, zeroes every
    axial slice whose classifier probability is below ``prob_threshold`` (the classifier's slice call
    gates the U-Net, as the pseudo-labels it was trained on were gated) and writes
    ``predictions_<gated_name>/``, ``metrics_<gated_name>.csv`` and ``summary_<gated_name>.json``
    (default name ``<name>_gated``). No network is run.

    Args:
        datalist: the entries that were evaluated (``image``, ``label`` with the true mask, ``patient``).
        output_dir: the fold folder holding ``predictions_<name>/``.
        probabilities: ``{patient: (Z,) slice probabilities}``, e.g. from
            :func:`hemwsl.pseudo.read_slice_probabilities` of the classifier's out-of-fold predictions.
        prob_threshold: slices with probability >= this keep their prediction.
    """
    from hemwsl.data.io import load_volume, save_nifti

    out = Path(output_dir)
    gated_name = gated_name or f"{name}_gated"
    rows = []
    for i, entry in enumerate(datalist):
        patient = str(entry.get(PATIENT, _stem(entry[IMAGE])))
        src = out / f"predictions_{name}" / f"{patient}.nii.gz"
        if not src.is_file():
            raise HemwslInputError(f"{src}: prediction of patient {patient} not found (evaluate the fold first)")
        if not entry.get(LABEL):
            raise HemwslInputError(f"{name} entry {i} (patient {patient!r}, {entry[IMAGE]}): no true mask to score")
        if patient not in probabilities:
            raise HemwslInputError(f"patient {patient}: no slice probabilities in the classifier predictions")
        vol = load_volume(src, kind="mask", dtype=np.uint8)
        prob = np.asarray(probabilities[patient], dtype=np.float64)
        if prob.shape != (vol.array.shape[2],):
            raise HemwslInputError(f"patient {patient}: {prob.shape[0]} slice probabilities for a prediction of "
                                   f"{vol.array.shape[2]} slices ({src})")
        keep = np.nan_to_num(prob, nan=0.0) >= prob_threshold
        gated = (vol.array * keep[None, None, :]).astype(np.uint8)
        dst = out / f"predictions_{gated_name}" / f"{patient}.nii.gz"
        save_nifti(gated, vol.affine, dst)
        rows.append(_metrics_row(patient, str(entry[IMAGE]), dst, gated, entry[LABEL], vol.spacing, tolerance_mm))
    return _write_metrics(out, gated_name, rows, gated_from=name, prob_threshold=float(prob_threshold),
                          tolerance_mm=float(tolerance_mm))


def run_segmentation_inference(network: torch.nn.Module, images: Sequence[str] | str, output_dir: str | os.PathLike,
                               transform: Callable, inferer: Callable, *, threshold: float = 0.5,
                               resample: str = "bilinear", device: str | torch.device = "cpu",
                               amp: bool = False) -> list[dict]:
    """CT volumes -> ``<stem>_mask.nii.gz`` (on the CT grid) and ``<stem>_volume.json`` (hemorrhage volume in mL).

    Volumes whose outputs exist are skipped (resumable); files are written atomically.
    """
    from hemwsl.data.io import save_nifti
    from hemwsl.metrics.volume import lesion_volume_ml

    if isinstance(images, (str, os.PathLike)):
        images = [images]
    if not images:
        raise HemwslInputError("images is empty: give one or more CT volumes (--images \"['ct.nii.gz']\")")
    out = Path(output_dir)
    results = []
    for image_path in images:
        stem = _stem(str(image_path))
        mask_path, json_path = out / f"{stem}_mask.nii.gz", out / f"{stem}_volume.json"
        if mask_path.exists() and json_path.exists():
            logger.info("%s: outputs exist, skipped", image_path)
            results.append(json.loads(json_path.read_text()))
            continue
        mask, _, image = predict_mask(network, {IMAGE: str(image_path), PATIENT: stem}, transform, inferer,
                                      threshold=threshold, resample=resample, device=device, amp=amp)
        save_nifti(mask, image.affine, mask_path)
        info = {"image": str(image_path), "mask": str(mask_path), "volume_ml": lesion_volume_ml(mask, image.spacing),
                "voxels": int(mask.sum()), "spacing_mm": list(image.spacing), "threshold": float(threshold)}
        atomic_write_text(json_path, json.dumps(info, indent=2))
        logger.info("%s: %.3f mL", image_path, info["volume_ml"])
        results.append(info)
    return results


class SegmentationInference:
    """The U-Net bundle's inference workflow (``evaluator`` of ``configs/inference.yaml``): every scan of
    ``dataset`` (items ``{"image": path}``) through :func:`run_segmentation_inference`."""

    def __init__(self, network: torch.nn.Module, dataset: Sequence[Mapping], output_dir: str | os.PathLike,
                 transform: Callable, inferer: Callable, *, threshold: float = 0.5, resample: str = "bilinear",
                 device: str | torch.device = "cpu", amp: bool = False) -> None:
        self.network, self.dataset, self.output_dir = network, dataset, output_dir
        self.transform, self.inferer = transform, inferer
        self.kwargs = {"threshold": threshold, "resample": resample, "device": device, "amp": amp}

    def run(self) -> list[dict]:
        images = [d[IMAGE] for d in getattr(self.dataset, "data", self.dataset)]
        return run_segmentation_inference(self.network, images, self.output_dir, self.transform, self.inferer,
                                          **self.kwargs)


# --------------------------------------------------------------------------------------------- summaries
def read_metrics_csv(path: str | os.PathLike) -> list[dict]:
    """Rows of a ``metrics_<name>.csv`` with numeric columns as floats."""
    p = Path(path)
    if not p.is_file():
        raise HemwslInputError(f"{p}: metrics file not found")
    with open(p, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["gt_positive"] = int(r["gt_positive"])
        for k in METRIC_COLUMNS:
            r[k] = float(r[k])
    return rows


def _mean_sd(values: Sequence[float]) -> dict:
    v = np.asarray([x for x in values if not math.isnan(x)], dtype=np.float64)
    return {"mean": float(v.mean()) if v.size else float("nan"),
            "sd": float(v.std(ddof=1)) if v.size > 1 else float("nan"), "n": int(v.size)}


def summarize_segmentation(rows: Sequence[Mapping]) -> dict:
    """Summary of per-patient metric rows.

    ``positive``: mean +- sd (ddof 1; NaN values left out) of each metric over the patients with a
    non-empty true mask. ``negative``: the patients without hemorrhage, how many of them got a
    non-empty prediction and the mean predicted volume. ``pooled``: the Dice of all voxels of all
    patients together, ``2 sum|P & G| / (sum|P| + sum|G|)`` (volumes in mL), and the total volumes.
    """
    pos = [r for r in rows if int(r["gt_positive"])]
    neg = [r for r in rows if not int(r["gt_positive"])]
    inter = sum(r["inter_ml"] for r in rows)
    vp, vg = sum(r["pred_ml"] for r in rows), sum(r["gt_ml"] for r in rows)
    return {
        "n_patients": len(rows),
        "n_positive": len(pos),
        "positive": {k: _mean_sd([float(r[k]) for r in pos]) for k in SUMMARY_METRICS},
        "negative": {"n": len(neg), "with_false_positive": int(sum(r["pred_ml"] > 0 for r in neg)),
                     "mean_pred_ml": float(np.mean([r["pred_ml"] for r in neg])) if neg else float("nan")},
        "pooled": {"dice": 2 * inter / (vp + vg) if vp + vg > 0 else 1.0, "pred_ml": vp, "gt_ml": vg},
    }


def summarize_seg_cv(output_dir: str | os.PathLike, folds: Sequence[int], name: str = "test") -> dict:
    """Cross-validation summary of ``<output_dir>/fold<k>/metrics_<name>.csv``.

    Per fold: :func:`summarize_segmentation` of its patients; over all folds: the same on every test
    patient (each scored by the fold that did not train on it). Writes ``seg_cv_summary.json`` and
    ``seg_cv_summary.md`` (``seg_cv_summary_gated.*`` for ``name="test_gated"``, ``seg_cv_summary_<name>.*``
    for other names).
    """
    from hemwsl.engines.classifier import cv_summary_stem

    stem = "seg_" + cv_summary_stem(name)  # the classifier's naming: seg_cv_summary, seg_cv_summary_gated, ...
    out = Path(output_dir)
    per_fold, all_rows = [], []
    for k in folds:
        rows = read_metrics_csv(out / f"fold{k}" / f"metrics_{name}.csv")
        all_rows += rows
        per_fold.append({"fold": int(k), **summarize_segmentation(rows)})
    overall = summarize_segmentation(all_rows)
    result = {"folds": per_fold, "all": overall}
    atomic_write_text(out / f"{stem}.json", json.dumps(result, indent=2, default=float))

    def fmt(s: dict) -> str:
        return "n/a" if s["n"] == 0 else f"{s['mean']:.3f} +- {s['sd']:.3f}" if s["n"] > 1 else f"{s['mean']:.3f}"

    lines = ["| fold | patients | positive | Dice | RVD | TPR | HD95 (mm) | surface Dice (2 mm) | pooled Dice | "
             "negatives with a false positive |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s, label in [*[(f, str(f["fold"])) for f in per_fold], (overall, "**all folds**")]:
        p = s["positive"]
        lines.append(f"| {label} | {s['n_patients']} | {s['n_positive']} | {fmt(p['dice'])} | {fmt(p['rvd'])} | "
                     f"{fmt(p['tpr'])} | {fmt(p['hd95'])} | {fmt(p['surface_dice'])} | {s['pooled']['dice']:.3f} | "
                     f"{s['negative']['with_false_positive']}/{s['negative']['n']} |")
    lines.append("")
    lines.append("Dice, RVD, TPR, HD95 and surface Dice: mean +- sd over the patients with hemorrhage "
                 "(HD95 over those with a non-empty prediction); pooled Dice: all voxels of all patients together.")
    atomic_write_text(out / f"{stem}.md", "\n".join(lines) + "\n")
    return result
