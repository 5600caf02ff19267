"""Workflow functions for slice classifiers, called by ``bundles/ich_classifier``.

Bundle configs only wire objects together; the logic they need (fold datalists, the per-slice
transform, reports, volume inference) lives here, tested.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hemwsl.constants import IMAGE, LABEL, MASK, SEQUENCE_LENGTH, SUBTYPES
from hemwsl.data.io import atomic_write_text
from hemwsl.errors import HemwslInputError
from hemwsl.engines.runs import CHECKPOINTS, checkpoint_file, report_name  # noqa: F401  (re-exported)
from hemwsl.networks.checkpoint import load_weights  # noqa: F401  (re-exported: bundles name it here)

__all__ = [
    "TRAIN_SETTINGS",
    "check_train_settings",
    "trained_checkpoint",
    "fold_datalists",
    "slice_transform",
    "write_classification_report",
    "predict_volume",
    "run_inference",
    "rank_zero_only",
    "output_names",
    "load_weights",
    "PrepareBatch",
    "batch_augmentation",
    "FlipTTAInferer",
    "LevelsInferer",
    "SequenceInferer",
    "is_heatmap_network",
    "is_sequence_backbone",
    "slice_samples",
    "slice_collate",
    "eval_batch_size",
    "classification_loss",
    "train_inferer",
    "fold_path",
    "summarize_cv",
    "CHECKPOINTS",
    "checkpoint_file",
    "report_name",
    "cv_summary_stem",
]

logger = logging.getLogger(__name__)


def output_names(num_classes: int) -> list[str]:
    """Names of the classifier outputs: ``["any"]`` or ``["any", *SUBTYPES]``."""
    if num_classes == 1:
        return ["any"]
    if num_classes == 1 + len(SUBTYPES):
        return ["any", *SUBTYPES]
    raise HemwslInputError(f"num_classes must be 1 (any) or {1 + len(SUBTYPES)} (any + subtypes), got {num_classes}")


#: The training settings of the classifier bundle that :func:`check_train_settings` checks (``--set`` keys).
TRAIN_SETTINGS = ("epochs", "learning_rate", "batch_size", "val_fraction", "samples_per_epoch", "val_interval",
                  "weight_decay", "windows", "skull_strip", "seed", "train_seed", "pos_weight", "aug_prob", "patience",
                  "multilabel", "tta", "augment", "sample_augment", "window_on_device", "lse_pixel", "lse_consistency", "lse_area")


def _finite(value: Any) -> bool:
    """True for an int of any size (np.isfinite raises on ints beyond 64 bits) and a finite float."""
    if isinstance(value, (int, np.integer)):
        return True
    try:
        return bool(np.isfinite(value))
    except (TypeError, OverflowError):
        return False


def _int_setting(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not _finite(value) or not (isinstance(value, (int, np.integer)) or float(value).is_integer()):
        raise HemwslInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise HemwslInputError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def _number_setting(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not _finite(value):
        raise HemwslInputError(f"{name} must be a number, got {value!r}")
    try:
        return float(value)
    except OverflowError:  # an int beyond the float range
        raise HemwslInputError(f"{name} must be a number in the float range, got {value!r}") from None


def check_train_settings(epochs: Any = 20, learning_rate: Any = 1e-3, batch_size: Any = 16, val_fraction: Any = 0.15,
                         samples_per_epoch: Any = None, val_interval: Any = 1, weight_decay: Any = 0.0,
                         windows: Any = ("brain",), skull_strip: Any = False, seed: Any = None,
                         train_seed: Any = None, backbone: Any = None, network_options: Any = None,
                         in_channels: Any = None,
                         num_classes: Any = 1, pos_weight: Any = 1.0, aug_prob: Any = 0.5, patience: Any = 8,
                         multilabel: Any = False, tta: Any = False, augment: Any = True, sample_augment: Any = False,
                         window_on_device: Any = False, lse_pixel: Any = 0.0, lse_consistency: Any = 1.0,
                         lse_area: Any = 0.0) -> None:
    """Check the classifier bundle's training settings once, before any data is read or folder written: one
    line naming the setting (``epochs=0`` or ``epochs=two`` would otherwise fail deep inside ignite, a negative
    ``learning_rate`` inside the optimiser, ``batch_size=0`` inside the data loader). Called first by the
    bundle's ``initialize`` (``configs/train.yaml``), by ``hemwsl demo``, and usable on ``--set`` overrides:
    ``check_train_settings(**{k: v for k, v in overrides.items() if k in TRAIN_SETTINGS})``.

    The switches (``skull_strip``, ``multilabel``, ``tta``, ``augment``, ``sample_augment``, ``window_on_device``)
    must be booleans (a string such as ``maybe`` is truthy: ``multilabel=maybe`` would train six outputs),
    ``patience`` an integer >= 1 and the LSE loss weights (``lse_pixel``, ``lse_consistency``, ``lse_area``) finite
    numbers >= 0.

    ``network_options`` (given with ``backbone``) are checked by building the network on the meta device (no
    memory, no weights): an unknown option or a value of the wrong type is one line naming ``network_options`` and
    the option, before any fold folder is made.

    Raises:
        HemwslInputError: naming the first bad setting and its value.
    """
    _int_setting("epochs", epochs, 1)
    if seed is not None and not 0 <= _int_setting("seed", seed, 0) < 2 ** 32:
        raise HemwslInputError(f"seed must be in [0, 2**32), got {seed!r}")
    if train_seed is not None and not 0 <= _int_setting("train_seed", train_seed, 0) < 2 ** 32:
        raise HemwslInputError(f"train_seed must be in [0, 2**32), got {train_seed!r}")
    if _number_setting("learning_rate", learning_rate) <= 0:
        raise HemwslInputError(f"learning_rate must be > 0, got {learning_rate!r}")
    _int_setting("batch_size", batch_size, 1)
    if not 0.0 <= _number_setting("val_fraction", val_fraction) < 1.0:
        raise HemwslInputError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if samples_per_epoch is not None:
        _int_setting("samples_per_epoch", samples_per_epoch, 1)
    _int_setting("val_interval", val_interval, 1)
    if _number_setting("weight_decay", weight_decay) < 0:
        raise HemwslInputError(f"weight_decay must be >= 0, got {weight_decay!r}")
    if isinstance(windows, str):
        raise HemwslInputError(f"windows must be a list of window names or (level, width) pairs, got the string "
                               f"{windows!r}; write windows='[\"{windows}\"]'")
    from hemwsl.transforms.array import MultiWindow

    MultiWindow(windows)  # unknown names and bad pairs: one line naming windows[i]
    for name, value in (("skull_strip", skull_strip), ("multilabel", multilabel), ("tta", tta), ("augment", augment),
                        ("sample_augment", sample_augment), ("window_on_device", window_on_device)):
        if not isinstance(value, (bool, np.bool_)):  # a string such as 'maybe' would be taken for true
            raise HemwslInputError(f"{name} must be true or false, got {value!r}")
    _int_setting("patience", patience, 1)  # validations without improvement before training stops
    for name, value in (("lse_pixel", lse_pixel), ("lse_consistency", lse_consistency), ("lse_area", lse_area)):
        if _number_setting(name, value) < 0:
            raise HemwslInputError(f"{name} must be a number >= 0 (a loss weight; 0 = off), got {value!r}")
    if _number_setting("pos_weight", pos_weight) <= 0:
        raise HemwslInputError(f"pos_weight must be > 0 (the BCE weight of positive slices), got {pos_weight!r}")
    if not 0.0 <= _number_setting("aug_prob", aug_prob) <= 1.0:
        raise HemwslInputError(f"aug_prob must be in [0, 1], got {aug_prob!r}")
    if network_options is not None or backbone is not None:
        from hemwsl.networks.registry import check_network_options

        check_network_options(backbone, network_options, in_channels=in_channels, num_classes=num_classes)


def trained_checkpoint(ckpt_dir: str | os.PathLike, which: str = "best") -> str:
    """:func:`checkpoint_file`, which must exist: an evaluation without a trained fold is one line naming the
    missing checkpoint, before any data is read."""
    path = checkpoint_file(ckpt_dir, which)
    if not Path(path).is_file():
        raise HemwslInputError(f"{path}: {which} checkpoint not found (train the fold first: configs/train.yaml)")
    return path


# Checkpoints a training run writes into <fold_dir>/models: "best" is the weights with the best validation
# AUROC (the EMA weights when ema_decay > 0), "last" the weights at the end of training (idem).
def cv_summary_stem(name: str = "test") -> str:
    """File stem of :func:`summarize_cv`'s outputs for reports ``name``: ``cv_summary`` (``test``),
    ``cv_summary_last`` (``test_last``), ``cv_summary_<name>`` otherwise."""
    return "cv_summary" + (name[len("test"):] if name.startswith("test") else f"_{name}")


def fold_datalists(
    datalist: Sequence[Mapping], n_folds: int = 5, fold: int = 0, seed: int = 0, val_fraction: float = 0.15
) -> dict[str, list[dict]]:
    """Patient-level cross-validation parts of ``datalist`` for one fold.

    ``test`` is the fold's held-out patients, ``val`` is carved (stratified) from the remaining patients
    for model selection and early stopping, ``train`` is the rest. ``n_folds=1`` trains on everything but
    a validation part (no test part).
    """
    from hemwsl.data.splits import apply_split, fold_split, split_patients

    if n_folds < 1:
        raise HemwslInputError(f"n_folds must be >= 1, got {n_folds}")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0.0 <= val_fraction < 1.0:
        raise HemwslInputError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if n_folds == 1:
        parts = split_patients(datalist, fractions=(1 - val_fraction, val_fraction), seed=seed, names=("train", "val"))
        parts["test"] = []
    else:
        if not 0 <= fold < n_folds:
            raise HemwslInputError(f"fold must be in [0, {n_folds - 1}], got {fold}")
        parts = fold_split(datalist, n_folds=n_folds, fold=fold, seed=seed, val_fraction_of_train=val_fraction)
    return {k: apply_split(datalist, v) for k, v in parts.items()}


def slice_transform(augment: bool = True, prob: float = 0.5, rotate_range_deg: float = 15.0, shift: float = 0.1,
                    scale: float = 0.1, seed: int = 0):
    """The per-slice training transform: the geometric augmentation preset (image and mask), or ``None``."""
    if not augment:
        return None
    from hemwsl.transforms import augmentation_preset

    t = augmentation_preset(keys=[IMAGE], mask_keys=[MASK], prob=prob, rotate_range_deg=rotate_range_deg,
                            shift=shift, scale=scale)
    t.set_random_state(seed=seed)
    return t


def write_classification_report(csv_path: str | os.PathLike, output_dir: str | os.PathLike, name: str = "test",
                                val_csv: str | os.PathLike | None = None,
                                thresholds: Sequence[float] = (0.3, 0.5, 0.7)) -> dict:
    """Metrics of a predictions CSV -> ``report_<name>.json`` + ``roc_<name>.png`` + ``pr_<name>.png``.

    Thresholds (F1-max, Youden) are chosen on ``val_csv`` when given, else on the same predictions
    (flagged ``chosen_on: same`` in the report).
    """
    from hemwsl.engines.runs import read_predictions_csv
    from hemwsl.metrics.classification import classification_report, multilabel_report
    from hemwsl.reports.curves import plot_pr, plot_roc

    out = Path(output_dir)
    pred = read_predictions_csv(csv_path)
    y, p = pred["label"][:, 0], pred["prob"][:, 0]
    kw = {}
    if val_csv is not None and Path(val_csv).exists():
        val = read_predictions_csv(val_csv)
        kw = {"val_true": val["label"][:, 0], "val_score": val["prob"][:, 0]}
    report = {"name": name, "n_slices": int(len(y)), "n_positive": int(y.sum()),
              "any": classification_report(y, p, thresholds=thresholds, **kw)}
    if pred["label"].shape[1] > 1:
        report["multilabel"] = multilabel_report(pred["label"], pred["prob"], pred["names"])
    atomic_write_text(out / f"report_{name}.json", json.dumps(report, indent=2, default=float))
    if len(np.unique(y)) == 2:
        plot_roc(y, p, out / f"roc_{name}.png", title=f"ROC ({name})")
        plot_pr(y, p, out / f"pr_{name}.png", title=f"PR ({name})")
    logger.info("%s: AUROC %.4f AP %.4f on %d slices", name, report["any"]["auroc"], report["any"]["ap"], len(y))
    return report


@torch.no_grad()
def predict_volume(network: torch.nn.Module, image: str | os.PathLike, *, windows: Sequence = ("brain",),
                   num_slices: int = 3, spatial_size: Sequence[int] | None = (256, 256), skull_strip: bool = False,
                   batch_size: int = 16, device: str | torch.device = "cpu", inferer: Any = None) -> np.ndarray:
    """Per-slice probabilities (Z, num_classes) of one CT volume (NIfTI file or DICOM folder); ``inferer`` (e.g. the
    bundle's validation inferer, flip TTA) runs the network on each batch, else the network alone. A slice-sequence
    network (:class:`hemwsl.networks.sequence.SliceSequenceNet`) sees the whole volume as one sequence."""
    from hemwsl.data.dataset import SliceDataset
    from hemwsl.networks.sequence import is_sequence_network

    ds = SliceDataset([{IMAGE: str(image), LABEL: None}], num_slices=num_slices, windows=windows,
                      spatial_size=spatial_size, skull_strip=skull_strip)
    network.eval()
    if is_sequence_network(network):
        x = torch.stack([ds[i][IMAGE] for i in range(len(ds))])[None].to(device)
        logits = inferer(x, network) if inferer is not None else network(x)
        return torch.sigmoid(logits.float()).cpu().numpy()
    probs = []
    for start in range(0, len(ds), batch_size):
        x = torch.stack([ds[i][IMAGE] for i in range(start, min(start + batch_size, len(ds)))]).to(device)
        logits = inferer(x, network) if inferer is not None else network(x)
        probs.append(torch.sigmoid(logits.float()).cpu().numpy())
    return np.concatenate(probs)


def run_inference(network: torch.nn.Module, images: Sequence[str] | str, output_dir: str | os.PathLike, *,
                  windows: Sequence = ("brain",), num_slices: int = 3, spatial_size: Sequence[int] | None = (256, 256),
                  skull_strip: bool = False, batch_size: int = 16, device: str | torch.device = "cpu",
                  inferer: Any = None) -> list[Path]:
    """Write ``<stem>_probs.csv`` and ``<stem>_probs.json`` (slice -> probabilities) per CT volume.

    Volumes whose outputs already exist are skipped (resumable); files are written atomically.
    """
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    out = Path(output_dir)
    written = []
    for image in images:
        stem = Path(image).name.split(".")[0]
        csv_path, json_path = out / f"{stem}_probs.csv", out / f"{stem}_probs.json"
        if csv_path.exists() and json_path.exists():
            logger.info("%s: predictions exist, skipped", image)
            written.append(csv_path)
            continue
        probs = predict_volume(network, image, windows=windows, num_slices=num_slices, spatial_size=spatial_size,
                               skull_strip=skull_strip, batch_size=batch_size, device=device, inferer=inferer)
        names = output_names(probs.shape[1])
        lines = ["slice," + ",".join(f"prob_{n}" for n in names)]
        lines += [f"{z}," + ",".join(f"{v:.6f}" for v in row) for z, row in enumerate(probs)]
        atomic_write_text(csv_path, "\n".join(lines) + "\n")
        atomic_write_text(json_path, json.dumps({"image": str(image), "outputs": names,
                                                 "probabilities": probs.round(6).tolist()}, indent=1))
        written.append(csv_path)
    return written


class ClassifierInference:
    """The classifier bundle's inference workflow (``evaluator`` of ``configs/inference.yaml``): every scan of
    ``dataset`` (items ``{"image": path}``) through :func:`run_inference`; ``inferer`` runs the network on a batch
    of slices (``SimpleInferer`` by default)."""

    def __init__(self, network: torch.nn.Module, dataset: Sequence[Mapping], output_dir: str | os.PathLike, *,
                 inferer: Any = None, **kwargs: Any) -> None:
        if not len(getattr(dataset, "data", dataset)):
            raise HemwslInputError("images: no CT volume given (an empty list); name the scans to classify, "
                                   "e.g. --images \"['ct.nii.gz']\"")
        self.network, self.dataset, self.output_dir, self.inferer, self.kwargs = network, dataset, output_dir, inferer, kwargs

    def run(self) -> list[Path]:
        images = [d[IMAGE] for d in getattr(self.dataset, "data", self.dataset)]
        return run_inference(self.network, images, self.output_dir, inferer=self.inferer, **self.kwargs)


def rank_zero_only(handlers: Sequence, keep_on_all: int = 0, always: Sequence = ()) -> list:
    """Handlers for this process of a distributed run: all of them on rank 0 (or without
    ``torch.distributed``); on other ranks only the first ``keep_on_all`` and those in ``always``
    (e.g. LR schedule, validation trigger and early stopping, which every rank must run alike)."""
    import torch.distributed as dist

    handlers = list(handlers)
    if dist.is_available() and dist.is_initialized() and dist.get_rank() > 0:
        kept = handlers[:keep_on_all]
        return kept + [h for h in always if all(h is not k for k in kept)]
    return handlers




#: Codes of a self-training target volume (:func:`hemwsl.pseudo.selftrain.self_training_targets`).
TARGET_BACKGROUND, TARGET_BLOOD, TARGET_IGNORE = 0, 1, 2


def with_pseudo_masks(entries: Sequence[Mapping], folder: str | os.PathLike | None, fold: int = 0) -> list[dict]:
    """``entries`` with each mask (``label``) replaced by ``<folder>/<patient>.nii.gz``, the self-training target
    of that patient (``{fold}`` in ``folder`` is replaced by the fold); the slice labels stay the datalist's.
    ``folder=None`` returns the entries unchanged. A missing target is a one-line error naming it."""
    from hemwsl.constants import PATIENT, SLICE_LABELS

    if folder is None:
        return [dict(e) for e in entries]
    root = Path(fold_path(folder, fold))
    out = []
    for e in entries:
        f = root / f"{e.get(PATIENT)}.nii.gz"
        if not f.is_file():
            raise HemwslInputError(f"{f}: self-training target not found (pseudo_masks={folder!s}, fold {fold})")
        if e.get(SLICE_LABELS) is None:
            raise HemwslInputError(f"{e.get(IMAGE)}: pseudo_masks need the datalist's slice labels (the mask is replaced)")
        out.append({**e, LABEL: str(f)})
    return out


class PrepareBatch:
    """``prepare_batch`` for MONAI's ``SupervisedTrainer``/``SupervisedEvaluator``: moves image and label
    to the device, applies the CT windows there when the loader ships raw HU stacks
    (``window_on_device``; 1/6 of the bytes of windowed float32 channels cross process boundaries),
    then a batched on-device augmentation (:class:`hemwsl.transforms.batch.BatchRandAffine`) when given,
    and switches to channels_last memory format when asked."""

    def __init__(self, augment: torch.nn.Module | None = None, channels_last: bool = False,
                 windows: Sequence | None = None, window_on_device: bool = False,
                 image_key: str = IMAGE, label_key: str = LABEL, mask_key: str | None = None) -> None:
        from hemwsl.transforms.batch import BatchWindows

        self.augment = augment
        self.channels_last = channels_last
        self.windows = BatchWindows(windows) if (window_on_device and windows) else None
        self.image_key, self.label_key, self.mask_key = image_key, label_key, mask_key

    def __call__(self, batchdata: Mapping, device=None, non_blocking: bool = False, **kwargs):
        x = torch.as_tensor(batchdata[self.image_key]).to(device=device, non_blocking=non_blocking)
        y = torch.as_tensor(batchdata[self.label_key]).to(device=device, non_blocking=non_blocking)
        m = None
        if self.mask_key is not None:  # a self-training target: (B, 1, H, W) codes, moved with the image
            m = torch.as_tensor(batchdata[self.mask_key]).to(device=device, non_blocking=non_blocking)
            m = m.reshape(m.shape[0], 1, *m.shape[-2:])
        if self.windows is not None:  # (B, k, H, W) HU -> (B, k * n_windows, H, W), window-major
            x = self.windows(x)
        length = batchdata.get(SEQUENCE_LENGTH) if isinstance(batchdata, Mapping) else None
        if length is not None:  # B * S slices of slice sequences (collate_sequences) -> (B, S, C, H, W)
            if m is not None:
                raise HemwslInputError("self-training targets (pseudo_masks) are not supported for slice-sequence networks")
            length = int(length)
            n, c, h, w = x.shape
            if n % length:
                raise HemwslInputError(f"a batch of {n} slices is not made of sequences of {length}")
            x = x.reshape(n // length, length * c, h, w)  # one augmentation per sequence: its slices move together
            if self.augment is not None:
                x = self.augment(x)
            return x.reshape(n // length, length, c, h, w).contiguous(), y
        if self.augment is not None:
            if m is None:
                x = self.augment(x)
            else:
                x, m = self.augment(x, m)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return (x, y) if m is None else (x, (y, m))


def batch_augmentation(augment: bool = True, prob: float = 0.5, rotate_range_deg: float = 15.0, shift: float = 0.1,
                       scale: float = 0.1, seed: int = 0):
    """The batched training augmentation, or ``None`` when ``augment`` is false."""
    if not augment:
        return None
    from hemwsl.transforms.batch import BatchRandAffine

    return BatchRandAffine(prob=prob, rotate_range_deg=rotate_range_deg, shift=shift, scale=scale, seed=seed)


class FlipTTAInferer:
    """Test-time augmentation: mean of the logits of the image and its flips along ``flip_dims`` (default the
    last axis: left-right for slices ``(B, C, H, W)`` and for slice sequences ``(B, S, C, H, W)``).

    Usable as a MONAI inferer (``inferer(inputs, network)``)."""

    def __init__(self, flip_dims: Sequence[Sequence[int]] = ((-1,),)) -> None:
        self.flip_dims = [tuple(d) for d in flip_dims]

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module, *args, **kwargs) -> torch.Tensor:
        out = network(inputs, *args, **kwargs)
        for dims in self.flip_dims:
            out = out + network(torch.flip(inputs, dims), *args, **kwargs)
        return out / (1 + len(self.flip_dims))


class LevelsInferer:
    """Training inferer of the LSE heatmap networks: ``network(inputs, levels=True)``, the score maps and
    logits of every level that :class:`hemwsl.networks.lse.LSEHeatmapLoss` needs (Chen & Kuo 2026)."""

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module, *args, **kwargs):
        return network(inputs, *args, levels=True, **kwargs)


class SequenceInferer:
    """Training inferer of the slice-sequence networks: ``network(inputs, heads=True)``, the sequence logits and
    the slice head's logits that :class:`hemwsl.networks.sequence.SequenceLoss` needs (Ramananda & Sundaresan
    2023)."""

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module, *args, **kwargs):
        return network(inputs, *args, heads=True, **kwargs)


def is_sequence_backbone(backbone: str) -> bool:
    """Whether the registry name ``backbone`` is a slice-sequence network (``seq_<backbone>``)."""
    from hemwsl.networks.registry import get_network_spec

    return get_network_spec(backbone).family == "slice_sequence"


def slice_samples(dataset: Any, backbone: str, sequence_length: int | None = 16) -> Any:
    """What a classifier of ``backbone`` trains or is evaluated on: the slice dataset itself, or for a
    slice-sequence network its :class:`hemwsl.data.dataset.SliceSequences` (windows of ``sequence_length``
    consecutive slices; ``None``: whole volumes)."""
    if not is_sequence_backbone(backbone):
        return dataset
    from hemwsl.data.dataset import SliceSequences

    return SliceSequences(dataset, sequence_length)


def slice_collate(backbone: str):
    """The data loader's ``collate_fn``: PyTorch's default, or :func:`hemwsl.data.dataset.collate_sequences`."""
    if not is_sequence_backbone(backbone):
        return None
    from hemwsl.data.dataset import collate_sequences

    return collate_sequences


def eval_batch_size(backbone: str, batch_size: int) -> int:
    """Items per evaluation batch: ``batch_size`` slices, or one whole volume for a slice-sequence network."""
    return 1 if is_sequence_backbone(backbone) else int(batch_size)


def is_heatmap_network(backbone: str) -> bool:
    """Whether the registry name ``backbone`` is an LSE heatmap network (``lse_<backbone>``)."""
    from hemwsl.networks.registry import get_network_spec

    return get_network_spec(backbone).family == "lse_heatmap"


def classification_loss(backbone: str, pos_weight: torch.Tensor | None = None,
                        lse_alpha: Sequence[float] = (2.0, 0.5, 0.25, 0.125),
                        lse_beta: Sequence[float] = (0.5, 0.25, 0.125),
                        lse_consistency: float = 1.0, lse_area: float = 0.0,
                        lse_pixel: float = 0.0, seq_slice_weight: float = 0.5) -> torch.nn.Module:
    """The training loss of the classifier bundle: ``BCEWithLogitsLoss`` for a classifier backbone, Chen &
    Kuo 2026's deep supervision + heatmap consistency (:class:`hemwsl.networks.lse.LSEHeatmapLoss`) for an
    ``lse_*`` network (``lse_consistency=0`` switches the consistency term off; ``lse_area > 0`` adds hemwsl's
    area penalty on the finest map of positive slices; ``lse_pixel > 0`` the self-training term on the maps'
    confident pixels, :class:`~hemwsl.networks.lse.LSEHeatmapLoss`); for a ``seq_*`` network the BCE of the
    sequence logits plus ``seq_slice_weight`` x the BCE of its slice head (:class:`~hemwsl.networks.sequence.SequenceLoss`)."""
    if is_heatmap_network(backbone):
        from hemwsl.networks.lse import LSEHeatmapLoss

        return LSEHeatmapLoss(alpha=lse_alpha, beta=lse_beta, pos_weight=pos_weight,
                              consistency_weight=lse_consistency, area_weight=lse_area, pixel_weight=lse_pixel)
    if lse_pixel:
        raise HemwslInputError(f"lse_pixel (self-training on heatmap pixels) needs an lse_* network, not {backbone!r}")
    if is_sequence_backbone(backbone):
        from hemwsl.networks.sequence import SequenceLoss

        return SequenceLoss(pos_weight=pos_weight, slice_weight=seq_slice_weight)
    return torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)


def train_inferer(backbone: str):
    """The training inferer: :class:`LevelsInferer` for an ``lse_*`` network, :class:`SequenceInferer` for a
    ``seq_*`` network, else MONAI's ``SimpleInferer``."""
    if is_heatmap_network(backbone):
        return LevelsInferer()
    if is_sequence_backbone(backbone):
        return SequenceInferer()
    from monai.inferers import SimpleInferer

    return SimpleInferer()


def fold_path(path: str | os.PathLike | None, fold: int) -> str | None:
    """``path`` with ``{fold}`` replaced by the fold number (``None`` stays ``None``): one setting names
    every fold's own file, e.g. the same fold's classifier as the encoder of an LSE heatmap network
    (``pretrained_path=outputs/cv/fold{fold}/models/model_last.pt``), so no fold sees its test patients."""
    if path is None:
        return None
    return os.fspath(path).replace("{fold}", str(int(fold)))


def summarize_cv(output_dir: str | os.PathLike, n_folds: int, name: str = "test") -> dict:
    """Cross-validation summary of ``<output_dir>/fold<k>/report_<name>.json`` and predictions.

    Per fold: AUROC, AP, F1 at 0.5 and at the F1-max threshold chosen on that fold's validation part;
    mean +- sd over folds; and the pooled out-of-fold AUROC/AP over every patient's slices (each
    scored by the fold that did not train on it), the AUROC with a 95% patient-level bootstrap CI
    (:func:`hemwsl.metrics.classification.bootstrap_ci`, 2,000 resamples of the patients, seed 0). Writes ``cv_summary.json`` and ``cv_summary.md``
    (``cv_summary_last.*`` for ``name="test_last"``, ``cv_summary_<name>.*`` for other names).
    """
    from hemwsl.data.io import read_json_file
    from hemwsl.engines.runs import read_predictions_csv
    from hemwsl.metrics.classification import bootstrap_ci, compute_auroc, compute_average_precision

    out = Path(output_dir)
    rows, ys, ps, pats = [], [], [], []
    for k in range(n_folds):
        rep_path = out / f"fold{k}" / f"report_{name}.json"
        if not rep_path.exists():
            raise HemwslInputError(f"{rep_path}: missing; run the evaluation of fold {k} first")
        rep = read_json_file(rep_path, f"evaluation report of fold {k}")
        hist_path = out / f"fold{k}" / "history.json"
        hist = read_json_file(hist_path, f"training history of fold {k}").get("summary") if hist_path.exists() else {}
        if not isinstance(hist or {}, dict):
            raise HemwslInputError(f"{hist_path}: corrupt training history of fold {k} ('summary' must be a JSON "
                                   f"object, got {hist!r})")
        try:
            any_ = rep["any"]
            rows.append({
                "fold": k, "n": any_["n"], "n_positive": any_["n_positive"], "auroc": float(any_["auroc"]),
                "ap": float(any_["ap"]), "f1_at_0.5": float(any_["at_threshold"]["0.5"]["f1"]),
                "f1_at_val_f1max": float((any_["f1_max"]["prf"] or {}).get("f1", float("nan"))),
                "val_f1_top5_mean": (hist or {}).get("f1_topk_mean", float("nan")),
                "val_f1_top5_sd": (hist or {}).get("f1_topk_sd", float("nan")),
            })
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise HemwslInputError(f"{rep_path}: not the evaluation report of fold {k} ({type(err).__name__}: {err}; "
                                   "'any' -> n, n_positive, auroc, ap, at_threshold, f1_max expected); remove it to "
                                   "evaluate the fold again") from None
        pred = read_predictions_csv(out / f"fold{k}" / f"predictions_{name}.csv")
        ys.append(pred["label"][:, 0])
        ps.append(pred["prob"][:, 0])
        pats.append(pred["patient"])
    keys = ["auroc", "ap", "f1_at_0.5", "f1_at_val_f1max"]
    summary = {k: {"mean": float(np.nanmean([r[k] for r in rows])), "sd": float(np.nanstd([r[k] for r in rows], ddof=1))}
               for k in keys}
    y, p = np.concatenate(ys), np.concatenate(ps)
    pooled = {"n": int(len(y)), "n_positive": int(y.sum()), "auroc": float(compute_auroc(y, p)),
              "auroc_ci95": list(bootstrap_ci(compute_auroc, y, p, groups=np.concatenate(pats), n_boot=2000, seed=0)),
              "ap": float(compute_average_precision(y, p))}
    result = {"name": name, "folds": rows, "mean_sd": summary, "pooled_out_of_fold": pooled}
    stem = cv_summary_stem(name)
    atomic_write_text(out / f"{stem}.json", json.dumps(result, indent=2))
    lines = ["| fold | slices | positive | AUROC | AP | F1@0.5 | F1@val-F1max | val F1 top-5 (mean +- sd) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['fold']} | {r['n']} | {r['n_positive']} | {r['auroc']:.3f} | {r['ap']:.3f} | "
                     f"{r['f1_at_0.5']:.3f} | {r['f1_at_val_f1max']:.3f} | "
                     f"{r['val_f1_top5_mean']:.3f} +- {r['val_f1_top5_sd']:.3f} |")
    lines.append("| mean +- sd | | | " + " | ".join(
        f"{summary[k]['mean']:.3f} +- {summary[k]['sd']:.3f}" for k in keys) + " | |")
    lo, hi = pooled["auroc_ci95"]
    lines.append(f"| pooled out-of-fold | {pooled['n']} | {pooled['n_positive']} | {pooled['auroc']:.3f} "
                 f"[{lo:.3f}, {hi:.3f}] | {pooled['ap']:.3f} | | | |")
    lines.append("")
    lines.append("Pooled AUROC: 95% CI of a patient-level bootstrap (2,000 resamples).")
    atomic_write_text(out / f"{stem}.md", "\n".join(lines) + "\n")
    return result
