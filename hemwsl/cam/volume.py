"""Assemble per-slice CAMs into 3D heatmaps aligned with the CT, and write them as NIfTI.

Slices served by :class:`hemwsl.data.SliceDataset` are ``(C, X, Y)`` cuts of an ``(X, Y, Z)`` volume
(``image[..., z]``), so the map of slice ``z`` goes to ``heatmap[:, :, z]`` after resizing to the CT's
in-plane grid. Files are written atomically (:func:`hemwsl.data.io.save_nifti`) with the CT's affine, one
per (method, layer): ``out_dir/<method>/<layer>/<stem>.nii.gz``; :func:`volume_done` tells a resumed run
which volumes are already complete.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from hemwsl.cam.base import TargetSpec, get_normalizer, normalize_per_slice, upsample
from hemwsl.cam.engine import CAMEngine
from hemwsl.constants import IMAGE, PATIENT, SLICE_INDEX
from hemwsl.errors import HemwslInputError

__all__ = ["explain_volume", "save_heatmaps", "heatmap_path", "volume_done", "resized_affine", "HEATMAP_STORAGE",
           "check_storage", "quantise_uint16", "heatmap_header", "read_heatmap_checked", "check_heatmap_sizes"]

Key = tuple[str, str]

#: How heatmap files store their values (``run_cam(storage=...)``, ``cam-cv --storage``): ``float32`` as computed, or
#: ``uint16`` with the NIfTI scale factor and offset of each file (``value = raw * scl_slope + scl_inter``, applied by
#: every NIfTI reader), within 0.51 of a step ((max - min) / 65535) of the float32 value: 8e-6 of the range.
HEATMAP_STORAGE: tuple[str, ...] = ("float32", "uint16")


def check_storage(storage: Any) -> str:
    """``storage`` if it is one of :data:`HEATMAP_STORAGE`, else :class:`HemwslInputError` naming the choices."""
    from hemwsl.errors import check_choice

    check_choice("storage", storage, HEATMAP_STORAGE)
    return storage


def quantise_uint16(arr: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``arr`` (finite) as ``(raw uint16, slope, intercept)`` with ``raw * slope + intercept`` within 0.51 of a step
    (``(max - min) / 65535``) of it: the range is split into 65,535 steps and each value rounded to the nearest
    (slope and intercept are float32 values, as the NIfTI header stores them). A constant array gets slope 1 and raw
    zeros."""
    a = np.asarray(arr)
    if a.dtype != np.float32:
        a = a.astype(np.float64)
    if a.size == 0:
        return np.zeros(a.shape, np.uint16), 1.0, 0.0
    lo_v, hi_v = float(a.min()), float(a.max())
    if not (np.isfinite(lo_v) and np.isfinite(hi_v)):
        raise HemwslInputError("a heatmap with NaN or inf cannot be stored as uint16")
    # the header stores slope and intercept as float32: round them first, then the values against them (in the
    # array's own precision: float32 holds the 65,536 levels with room to spare, and is twice as fast)
    lo = float(np.float32(lo_v))
    slope = float(np.float32((hi_v - lo) / 65535.0))
    if not slope > 0.0:
        return np.zeros(a.shape, np.uint16), 1.0, lo
    raw = (a - a.dtype.type(lo)) / a.dtype.type(slope)
    np.rint(raw, out=raw)
    return np.clip(raw, 0, 65535, out=raw).astype(np.uint16), slope, lo


def _batches(
    slices: Tensor | np.ndarray | Sequence[Any], batch_size: int
) -> Iterable[tuple[Tensor, list[int]]]:
    """Yield ``(images (b, C, H, W), slice indices)``."""
    if isinstance(slices, (Tensor, np.ndarray)):
        t = torch.as_tensor(slices)
        if t.ndim != 4:
            raise HemwslInputError(f"a slice stack must be (Z, C, H, W), got shape {tuple(t.shape)}")
        for start in range(0, t.shape[0], batch_size):
            stop = min(start + batch_size, t.shape[0])
            yield t[start:stop], list(range(start, stop))
        return
    patients: set[str] = set()
    images: list[Tensor] = []
    index: list[int] = []
    for i in range(len(slices)):
        item = slices[i]
        if isinstance(item, Mapping):
            if IMAGE not in item:
                raise HemwslInputError(f"slice sample {i} has no {IMAGE!r} key")
            img = torch.as_tensor(item[IMAGE])
            z = int(item.get(SLICE_INDEX, i))
            if PATIENT in item:
                patients.add(str(item[PATIENT]))
                if len(patients) > 1:
                    raise HemwslInputError(
                        f"the slices come from several volumes ({', '.join(sorted(patients))}); "
                        "explain one volume at a time"
                    )
        else:
            img, z = torch.as_tensor(item), i
        if img.ndim != 3:
            raise HemwslInputError(f"slice sample {i}: expected a (C, H, W) image, got shape {tuple(img.shape)}")
        images.append(img)
        index.append(z)
        if len(images) == batch_size:
            yield torch.stack(images), index
            images, index = [], []
    if images:
        yield torch.stack(images), index


def _slice_targets(targets: TargetSpec, positions: list[int], total: int | None) -> TargetSpec:
    if isinstance(targets, (list, tuple, np.ndarray, Tensor)) and not (
        isinstance(targets, (np.ndarray, Tensor)) and targets.ndim == 0
    ):
        seq = list(targets.tolist() if isinstance(targets, (np.ndarray, Tensor)) else targets)
        if total is not None and len(seq) != total:
            raise HemwslInputError(f"got {len(seq)} per-slice targets for {total} slices")
        return [seq[p] for p in positions]
    return targets


def explain_volume(
    engine: CAMEngine,
    slices: Tensor | np.ndarray | Sequence[Any],
    batch_size: int = 16,
    gate_with_probability: bool = False,
    targets: TargetSpec = None,
    grid_shape: Sequence[int] | None = None,
    depth: int | None = None,
    normalize: str | Callable[..., Any] | None = None,
    return_probabilities: bool = False,
    flip_tta: bool = False,
) -> dict[Key, np.ndarray] | tuple[dict[Key, np.ndarray], np.ndarray]:
    """Explain every slice of one volume and stack the maps into ``(X, Y, Z)`` heatmaps.

    Args:
        engine: the :class:`~hemwsl.cam.CAMEngine` (its methods, layers and fusion decide the keys).
        slices: ``(Z, C, X, Y)`` slice stack (slice ``z`` at index ``z``), or a sequence of samples of
            ONE volume: dicts with ``image`` ``(C, X, Y)`` and ``slice_index`` (e.g. a
            :class:`hemwsl.data.SliceDataset` over a one-volume datalist, or a ``Subset`` of it), or
            plain ``(C, X, Y)`` tensors (slice index = position).
        batch_size: slices per engine call.
        gate_with_probability: multiply each slice's map by ``sigmoid(target score)`` of that slice
            (the predicted probability of the explained class for logit targets).
        targets: as for the engine; a sequence gives one target per slice (in the order served).
        grid_shape: the CT's in-plane ``(X, Y)``; maps are resized to it (bilinear); default the
            slices' own size.
        depth: number of slices ``Z`` of the output; default ``max(slice index) + 1``. Slices not
            served stay 0.
        normalize: ``None`` (raw maps), ``"slice"``, ``"volume"``, ``"none"`` or a callable applied to
            each ``(X, Y, Z)`` heatmap (``"slice"`` normalises each axial slice).
        return_probabilities: also return the ``(Z,)`` ``sigmoid(score)`` per slice (NaN where not served).
        flip_tta: test-time augmentation by the in-plane flip: every batch is explained as served and flipped
            along its last axis; the flipped maps are flipped back and the two averaged (as are the two
            probabilities; the gate uses the mean). Twice the engine's time; a network trained with flips
            (the classifier bundle's ``augment``) gives a map that no longer depends on which way the head lies.

    Returns:
        ``{(method, layer): float32 (X, Y, Z) array}`` (and the probabilities when asked).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise HemwslInputError(f"batch_size must be a positive int, got {batch_size!r}")
    total = int(slices.shape[0]) if isinstance(slices, (Tensor, np.ndarray)) else len(slices)
    if total == 0:
        raise HemwslInputError("no slices to explain")
    if not isinstance(flip_tta, bool):
        raise HemwslInputError(f"flip_tta must be true or false, got {flip_tta!r}")
    norm_fn: Callable[..., Any] | None = None
    if normalize == "slice":  # axial slices of an (X, Y, Z) volume
        norm_fn = lambda vol: normalize_per_slice(vol, dims=(0, 1))  # noqa: E731
    elif isinstance(normalize, str):
        norm_fn = get_normalizer(normalize)
    elif normalize is not None:
        if not callable(normalize):
            raise HemwslInputError(f"normalize must be a name or a callable, got {normalize!r}")
        norm_fn = normalize

    per_slice: dict[Key, dict[int, np.ndarray]] = {}
    probs: dict[int, float] = {}
    position = 0
    shape: tuple[int, int] | None = tuple(int(s) for s in grid_shape) if grid_shape is not None else None
    for images, index in _batches(slices, batch_size):
        positions = list(range(position, position + len(index)))
        position += len(index)
        batch_targets = _slice_targets(targets, positions, total)
        maps = engine(images, batch_targets)
        p = torch.sigmoid(engine.last_scores.float())
        if flip_tta:
            flipped = engine(images.flip(-1), batch_targets)
            p = (p + torch.sigmoid(engine.last_scores.float())) / 2
            maps = {key: (m.float() + flipped[key].float().flip(-1)) / 2 for key, m in maps.items()}
        if shape is None:
            shape = (int(images.shape[-2]), int(images.shape[-1]))
        for key, m in maps.items():
            m = upsample(m.float(), shape)
            if gate_with_probability:
                m = m * p.to(m.device)[:, None, None]
            arr = m.cpu().numpy()
            slot = per_slice.setdefault(key, {})
            for j, z in enumerate(index):
                slot[z] = arr[j]
        for j, z in enumerate(index):
            probs[z] = float(p[j])

    zmax = max(probs) + 1
    if depth is None:
        depth = zmax
    elif depth < zmax:
        raise HemwslInputError(f"depth={depth} but a slice index {zmax - 1} was served")
    if min(probs) < 0:
        raise HemwslInputError(f"negative slice index {min(probs)}")
    out: dict[Key, np.ndarray] = {}
    for key, slot in per_slice.items():
        vol = np.zeros((*shape, depth), dtype=np.float32)
        for z, arr in slot.items():
            vol[:, :, z] = arr
        if norm_fn is not None:
            vol = np.asarray(norm_fn(vol))
        out[key] = vol.astype(np.float32, copy=False)
    if return_probabilities:
        prob = np.full(depth, np.nan, dtype=np.float32)
        for z, v in probs.items():
            prob[z] = v
        return out, prob
    return out


def _safe(part: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", str(part)).strip("-")
    if not s or s in (".", ".."):
        raise HemwslInputError(f"cannot make a file name from {part!r}")
    return s


def heatmap_path(out_dir: str | os.PathLike[str], stem: str, key: Key) -> Path:
    """Where the heatmap of ``key = (method, layer)`` for volume ``stem`` is stored:
    ``out_dir/<method>/<layer>/<stem>.nii.gz`` (unsafe characters replaced by ``-``)."""
    method, layer = key
    return Path(out_dir) / _safe(method) / _safe(layer) / f"{_safe(stem)}.nii.gz"


def save_heatmaps(
    maps: Mapping[Key, np.ndarray], affine: np.ndarray, out_dir: str | os.PathLike[str], stem: str,
    storage: str = "float32",
) -> dict[Key, Path]:
    """Write one NIfTI per (method, layer) atomically, with the CT's affine.

    Args:
        maps: ``{(method, layer): (X, Y, Z) array}`` from :func:`explain_volume`.
        affine: the CT's 4x4 affine.
        out_dir: output folder.
        stem: the volume's name (e.g. the patient id).
        storage: ``float32`` (default) or ``uint16`` (:data:`HEATMAP_STORAGE`): each file's values quantised to
            65,536 levels of its own range (:func:`quantise_uint16`) with the NIfTI scale factor and offset, which
            readers apply; 3-4x smaller files, written about 3x faster.

    Returns:
        ``{key: path written}``.
    """
    from hemwsl.data.io import save_nifti

    check_storage(storage)
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise HemwslInputError(f"affine must be 4x4, got shape {affine.shape}")
    written: dict[Key, Path] = {}
    for key, arr in maps.items():
        arr = np.asarray(arr, dtype=np.float32)
        if arr.ndim != 3:
            raise HemwslInputError(f"heatmap {key} must be 3D (X, Y, Z), got shape {arr.shape}")
        path = heatmap_path(out_dir, stem, key)
        if storage == "uint16":
            raw, slope, inter = quantise_uint16(arr)
            save_nifti(raw, affine, path, scale=(slope, inter))
        else:
            save_nifti(arr, affine, path)
        written[key] = path
    return written


def resized_affine(affine: np.ndarray, shape: Sequence[int], new_shape: Sequence[int]) -> np.ndarray:
    """Affine of a volume whose leading axes were resized from ``shape`` to ``new_shape``.

    The resampling is the one of ``torch.nn.functional.interpolate(..., align_corners=False)`` (and of
    :class:`hemwsl.data.SliceDataset`): voxel ``i`` of the new grid is centred at ``(i + 0.5) * s - 0.5``
    of the old one, with ``s = shape / new_shape``; so a heatmap stored at the classifier's input size with
    this affine lies exactly on the CT in world coordinates (viewers and resamplers overlay it correctly).

    Args:
        affine: the original 4x4 affine.
        shape: original sizes of the resized axes (e.g. the CT's ``(X, Y)``).
        new_shape: their new sizes; axes not listed keep their size.
    """
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4):
        raise HemwslInputError(f"affine must be 4x4, got shape {a.shape}")
    if len(shape) != len(new_shape) or not 1 <= len(shape) <= 3 or min(*shape, *new_shape) < 1:
        raise HemwslInputError(f"shape {tuple(shape)} and new_shape {tuple(new_shape)} must be 1-3 positive sizes each")
    scale = np.eye(4)
    for ax, (old, new) in enumerate(zip(shape, new_shape)):
        s = float(old) / float(new)
        scale[ax, ax] = s
        scale[ax, 3] = 0.5 * (s - 1.0)
    return a @ scale


def volume_done(out_dir: str | os.PathLike[str], stem: str, keys: Iterable[Key]) -> bool:
    """Whether every heatmap of ``stem`` for ``keys`` already exists (files are written atomically,
    so an existing file is complete); use it to skip volumes when resuming."""
    keys = list(keys)
    return bool(keys) and all(heatmap_path(out_dir, stem, k).is_file() for k in keys)


# --------------------------------------------------------------------------------------------- reading them back
def _why_unreadable(path: Path, err: BaseException) -> str:
    """Why ``path`` could not be read: a symlink loop or a dangling link said as such (nibabel reports both as
    'No such file or no access'), else the error."""
    import errno

    if Path(path).is_symlink():
        try:
            os.stat(path)
        except OSError as e:
            if e.errno == errno.ELOOP:
                return "a symlink loop"
            if e.errno == errno.ENOENT:
                return f"a symlink to a missing file ({os.readlink(path)})"
    return f"{type(err).__name__}: {err}"


def heatmap_header(path: str | os.PathLike) -> tuple[tuple[int, ...], np.ndarray]:
    """``(shape, affine)`` of a heatmap file from its header, or one line naming the file."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        return tuple(img.shape), np.asarray(img.affine)
    except Exception as err:  # noqa: BLE001 - any unreadable file is one line naming it
        raise HemwslInputError(f"{path}: cannot read as a heatmap ({_why_unreadable(Path(path), err)})") from err


def read_heatmap_checked(path: str | os.PathLike) -> np.ndarray:
    """A heatmap file as a finite 3D float32 array, or one line naming the file (a truncated or unreadable file, a
    NaN voxel): what cam-ensemble checks of every map before its first write."""
    import nibabel as nib

    try:
        arr = np.asarray(nib.load(str(path)).get_fdata(dtype=np.float32))
    except Exception as err:  # noqa: BLE001 - any unreadable file is one line naming it
        raise HemwslInputError(f"{path}: cannot read as a heatmap ({_why_unreadable(Path(path), err)})") from err
    if arr.ndim != 3:
        raise HemwslInputError(f"{path}: a heatmap is a 3D array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise HemwslInputError(f"{path}: {int((~np.isfinite(arr)).sum())} voxels are NaN or infinite; a heatmap is "
                               "finite")
    return arr


def check_heatmap_sizes(cam_dir: str | os.PathLike, method: str, layer: str | Callable[[], str],
                        stems: Iterable[str]) -> None:
    """Heatmaps cam-cv wrote on its ``input`` grid (as the folder's ``cam_checkpoint.json`` records) share one
    in-plane size: a heatmap of another size among those of ``stems`` (a map of another run or a hand edit) is one
    line naming the file, instead of being resampled to the CT without a word. ``layer``: the layer folder, or a
    callable giving it (resolved only when the record asks for the check). Missing or unreadable maps are left to
    the step that reads them."""
    from collections import Counter

    import nibabel as nib

    from hemwsl.data.io import read_json_file

    if isinstance(stems, (str, bytes)):
        raise HemwslInputError(f"stems: give the patient ids as a list, got one string {stems!r}")
    marker = Path(cam_dir) / "cam_checkpoint.json"
    if not marker.is_file():
        return
    rec = read_json_file(marker, "record of the run that made the heatmaps")
    settings = rec.get("settings") if isinstance(rec, dict) else None
    if not isinstance(settings, dict) or settings.get("grid", "input") != "input":
        return
    key = (method, layer() if callable(layer) else layer)
    shapes = {}
    for stem in stems:
        f = heatmap_path(cam_dir, stem, key)
        try:
            shapes[f] = tuple(int(v) for v in nib.load(str(f)).shape[:2])
        except Exception:  # noqa: BLE001 - a missing or unreadable map is named where it is read
            continue
    if len(set(shapes.values())) > 1:
        common = Counter(shapes.values()).most_common(1)[0][0]
        f, shape = next((f, s) for f, s in shapes.items() if s != common)
        raise HemwslInputError(f"{f}: a heatmap of {shape[0]} x {shape[1]} pixels in-plane, the other heatmaps of "
                               f"{f.parent} are {common[0]} x {common[1]} (cam-cv's input grid); remake it with "
                               "`hemwsl cam-cv`")
