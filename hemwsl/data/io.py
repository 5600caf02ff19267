"""Checked reading and atomic writing of CT volumes and masks.

NIfTI files are read with nibabel; DICOM series (a folder of ``.dcm`` files) through MONAI's
``ITKReader``. Every problem raises :class:`hemwsl.errors.HemwslInputError` naming the file.
"""

from __future__ import annotations

import os
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hemwsl.errors import HemwslInputError

__all__ = [
    "atomic_write",
    "Volume",
    "load_volume",
    "load_pair",
    "save_nifti",
    "file_sha1",
    "record_diff",
    "check_run_record",
    "atomic_write_text",
    "atomic_write_bytes",
    "NIFTI_SUFFIXES",
    "is_nifti",
    "volume_stem",
    "check_volumes",
    "check_affine",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: An image with no value below 0 and values above this is taken for stored CT values without the rescale.
RAW_CT_MAX = 1500.0


def is_nifti(path: str | os.PathLike) -> bool:
    return str(path).endswith(NIFTI_SUFFIXES)


def volume_stem(path: str | os.PathLike) -> str:
    """A volume's name without ``.nii.gz`` / ``.nii`` (a DICOM folder's name as it is)."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


@dataclass
class Volume:
    """A 3D volume on its grid: ``array`` is (X, Y, Z) as nibabel returns it."""

    array: np.ndarray
    affine: np.ndarray
    path: str

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)


def _load_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    try:
        img = nib.load(str(path))
        arr = np.asanyarray(img.dataobj)
    except (OSError, EOFError, zlib.error, ValueError) as err:  # nibabel raises several kinds
        raise HemwslInputError(f"{path}: cannot read as NIfTI ({type(err).__name__}: {err})") from err
    except Exception as err:  # nibabel.filebasedimages.ImageFileError and friends
        raise HemwslInputError(f"{path}: cannot read as NIfTI ({type(err).__name__}: {err})") from err
    return arr, np.asarray(img.affine, dtype=np.float64)


def _load_dicom_series(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from monai.data import ITKReader

    try:
        # reverse_indexing=False (MONAI default): (X, Y, Z) like nibabel, matching the affine; True gives (Z, Y, X)
        reader = ITKReader(reverse_indexing=False, affine_lps_to_ras=True)
        img = reader.read(str(path))
        arr, meta = reader.get_data(img)
    except Exception as err:
        raise HemwslInputError(f"{path}: cannot read as a DICOM series ({type(err).__name__}: {err})") from err
    affine = np.asarray(meta.get("affine", np.eye(4)), dtype=np.float64)
    return np.asarray(arr), affine


def check_affine(affine: np.ndarray, path: str | os.PathLike) -> None:
    """A volume's voxel-to-world matrix must be finite and invertible (each voxel spacing > 0): a singular one (e.g. a
    zero z column of a broken header) would give zero volumes in mL. One line naming ``path``."""
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.isfinite(a).all():
        raise HemwslInputError(f"{path}: the voxel-to-world affine is not a finite 4 x 4 matrix")
    spacing = np.sqrt((a[:3, :3] ** 2).sum(axis=0))
    if not (spacing > 0).all() or abs(np.linalg.det(a[:3, :3])) <= 1e-6 * float(np.prod(spacing)):
        raise HemwslInputError(f"{path}: singular voxel-to-world affine (voxel spacing "
                               f"{tuple(round(float(s), 4) for s in spacing)}); the file's orientation header is "
                               "broken (qform/sform)")


def load_volume(path: str | os.PathLike, *, kind: str = "image", dtype=np.float32) -> Volume:
    """Read a 3D volume and check it.

    Args:
        path: a NIfTI file (``.nii``/``.nii.gz``) or a folder holding one DICOM series.
        kind: ``"image"`` (CT in HU; NaN/inf rejected) or ``"mask"`` (values must be integers >= 0).
        dtype: dtype of the returned array.

    Raises:
        HemwslInputError: missing or unreadable file, not 3D, NaN/inf values, non-integer mask.
    """
    p = Path(path)
    if not p.exists():
        raise HemwslInputError(f"{p}: file not found")
    if p.is_dir():
        arr, affine = _load_dicom_series(p)
    elif is_nifti(p):
        arr, affine = _load_nifti(p)
    else:
        raise HemwslInputError(f"{p}: unsupported file type (expected .nii, .nii.gz or a DICOM folder)")
    if arr.dtype.kind not in "biuf":  # complex (numpy would drop the imaginary part with a warning), RGB, ...
        what = "complex" if arr.dtype.kind == "c" else "non-numeric"
        raise HemwslInputError(f"{p}: {what} voxel values (dtype {arr.dtype}); a CT or mask holds real numbers")
    arr = np.squeeze(arr) if arr.ndim > 3 else arr
    if arr.ndim != 3:
        raise HemwslInputError(f"{p}: expected a 3D volume, got {arr.ndim}D with shape {tuple(arr.shape)}")
    check_affine(affine, p)
    if kind == "image":
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            n = int((~np.isfinite(arr)).sum())
            raise HemwslInputError(f"{p}: {n} NaN/inf voxel(s) in the image")
        if arr.size:
            lo, hi = float(arr.min()), float(arr.max())
            # air at 0 instead of near -1000 HU, and the head's soft tissue above 900 (brain at ~1064): stored values
            # without the rescale. A CT in HU clipped at 0 with its bone kept has only the skull above 900.
            if lo >= 0 and hi > RAW_CT_MAX and float((arr >= 900).mean()) > 0.15:
                raise HemwslInputError(
                    f"{p}: values {lo:g} to {hi:g} look like stored CT values, not Hounsfield units (air should be near "
                    f"-1000): apply the scanner's RescaleSlope/RescaleIntercept (often HU = value - 1024)")
    elif kind == "mask":
        if np.issubdtype(arr.dtype, np.floating):
            if not np.isfinite(arr).all():
                raise HemwslInputError(f"{p}: NaN/inf values in the mask")
            if not np.allclose(arr, np.round(arr)):
                raise HemwslInputError(f"{p}: mask values must be integer labels, found fractional values")
        if arr.min() < 0:
            raise HemwslInputError(f"{p}: mask values must be >= 0, found {arr.min()}")
        if dtype is not None and np.issubdtype(np.dtype(dtype), np.integer) and arr.max() > np.iinfo(dtype).max:
            # a plain cast would wrap (e.g. label 256 -> 0 in uint8) and silently drop lesions
            raise HemwslInputError(f"{p}: mask value {arr.max()} does not fit in {np.dtype(dtype).name}")
    else:
        raise HemwslInputError(f"unknown kind {kind!r}; accepted values: image, mask")
    return Volume(np.asarray(arr, dtype=dtype), affine, str(p))


def load_pair(image_path: str | os.PathLike, label_path: str | os.PathLike | None, *, atol: float = 1e-3):
    """Load an image and (optionally) its mask and check they share one grid.

    Returns:
        ``(image Volume, mask Volume or None)``; the mask array is uint8.
    """
    image = load_volume(image_path, kind="image")
    if label_path is None:
        return image, None
    mask = load_volume(label_path, kind="mask", dtype=np.uint8)
    if image.shape != mask.shape:
        raise HemwslInputError(
            f"{label_path}: mask shape {mask.shape} does not match image {image_path} shape {image.shape}"
        )
    if not np.allclose(image.affine, mask.affine, atol=atol):
        raise HemwslInputError(
            f"{label_path}: mask affine does not match image {image_path} affine "
            f"(max difference {np.abs(image.affine - mask.affine).max():.4g})"
        )
    return image, mask


def _temporary_file(p: Path, suffix: str = "") -> tuple[int, str]:
    """``mkstemp`` beside ``p`` (its folder made first); a folder that cannot be written is a
    :class:`PermissionError` naming ``p``, the file asked for, not the temporary name."""
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(suffix=suffix, prefix=".tmp-", dir=p.parent)
    except PermissionError as err:
        raise PermissionError(err.errno, f"{err.strerror} (cannot write in {p.parent})", os.fspath(p)) from None


def atomic_write(path: str | os.PathLike, write, suffix: str = "") -> Path:
    """Write ``path`` atomically through ``write(tmp_path)``: a temporary file in the same folder (``suffix``
    kept, for writers that choose the format by it), the permissions a plain ``open`` would give (the umask,
    not ``mkstemp``'s 0600), then a rename; the temporary file never outlives an error."""
    p = Path(path)
    fd, tmp = _temporary_file(p, suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return p


def record_diff(old: Any, new: Any, prefix: str = "", width: int | None = None) -> list[str]:
    """``key old -> new`` for every leaf where two run records (nested dicts) differ, keys sorted, values compared
    and shown as JSON (``width``: at most that many characters of each value)."""
    import json

    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += record_diff(old.get(key, "<unset>"), new.get(key, "<unset>"), f"{prefix}{key}.", width)
        return out
    a, b = json.dumps(old, default=str), json.dumps(new, default=str)
    if json.loads(a) == json.loads(b):
        return []
    return [f"{prefix[:-1]} {a[:width]} -> {b[:width]}"]


def check_run_record(path: str | os.PathLike, record: dict, what: str) -> None:
    """The resume rule of a run folder: ``path`` (a JSON file) holds the settings that made the folder's results.
    Absent: ``record`` is written (atomically). Present and equal: nothing to do. Present and different: a
    one-line :class:`HemwslInputError` naming ``what`` and each difference, so results of two settings never mix."""
    import json

    p = Path(path)
    record = json.loads(json.dumps(record, default=str))
    if p.is_file():
        try:
            old = json.loads(p.read_text())
        except json.JSONDecodeError:
            raise HemwslInputError(f"{p}: unreadable run record; use another folder") from None
        if old != record:
            diff = record_diff(old, record, width=60)
            more = f"; {len(diff) - 4} more" if len(diff) > 4 else ""
            raise HemwslInputError(f"{p.parent} holds {what} with other settings ({'; '.join(diff[:4])}{more}); "
                                   "use another folder")
        return
    atomic_write_text(p, json.dumps(record, indent=1) + "\n")


def file_sha1(path: str | os.PathLike) -> str:
    """The sha1 of a file's content (read in 1 MiB blocks); a missing file is a one-line error naming it."""
    import hashlib

    p = Path(path)
    if not p.is_file():
        raise HemwslInputError(f"{p}: file not found")
    h = hashlib.sha1()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_nifti(array: np.ndarray, affine: np.ndarray, path: str | os.PathLike) -> None:
    """Write a NIfTI file atomically (write to a temporary file in the same folder, then rename)."""
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64))
    atomic_write(path, lambda tmp: nib.save(img, tmp), suffix=".nii.gz" if str(path).endswith(".nii.gz") else ".nii")


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write text to ``path`` atomically (temporary file in the same folder, then rename), with the
    permissions a plain ``open(path, "w")`` would give."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes to ``path`` atomically (temporary file in the same folder, then rename), with the
    permissions a plain ``open(path, "wb")`` would give."""
    p = Path(path)
    fd, tmp = _temporary_file(p)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def check_volumes(entries: list[dict], cache: str | os.PathLike | None = None) -> int:
    """Read every image (and mask) of ``entries`` in full once and check it before costly work starts:
    readable to the last byte (a truncated ``.nii.gz`` fails here, not after a fold has trained), 3D, no
    NaN/inf, in HU, not blank (one value everywhere), the mask on the image's grid (:func:`load_pair`).

    Args:
        entries: datalist entries with ``image`` and optionally ``label``.
        cache: a JSON file recording the files already checked by size and modification time (a resumed
            run reads nothing again; a changed file is read again).

    Returns:
        How many entries were read (not found in the cache).

    Raises:
        HemwslInputError: naming the first bad file and its problem.
    """
    import json

    def stamp(path) -> list:
        st = Path(path).stat() if Path(path).exists() else None
        return [st.st_size, st.st_mtime_ns] if st is not None else []

    done: dict = {}
    cache_path = Path(cache) if cache is not None else None
    if cache_path is not None and cache_path.is_file():
        try:
            done = json.loads(cache_path.read_text())
        except ValueError:
            done = {}
    read = 0
    for entry in entries:
        image, label = entry["image"], entry.get("label")
        key = f"{image}|{label or ''}"
        now = [stamp(image), stamp(label) if label else []]
        if done.get(key) == now and now[0]:
            continue
        vol, _ = load_pair(image, label)
        if vol.array.size and float(vol.array.min()) == float(vol.array.max()):
            # a blank volume (e.g. all zeros, a failed export) would train silently; predict refuses it too
            raise HemwslInputError(f"{image}: every voxel has the value {float(vol.array.min()):g}; a blank "
                                   "volume, not a CT scan")
        done[key] = now
        read += 1
    if cache_path is not None and read:
        atomic_write_text(cache_path, json.dumps(done, indent=0) + "\n")
    return read
