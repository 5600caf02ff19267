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
    "read_json_file",
    "check_nifti_header",
    "check_value",
    "record_value",
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


def check_nifti_header(path: str | os.PathLike) -> None:
    """Read only the header of the NIfTI file ``path`` (cheap: no voxel data): a file that is no NIfTI (an image of
    another format renamed, an empty file) is one :class:`HemwslInputError` naming it, before any costly step that
    would read it later. A file cut short after its header is found by the full read (:func:`load_volume`)."""
    import nibabel as nib

    try:
        nib.load(str(path)).header  # noqa: B018  (nibabel reads the header when the image is made)
    except Exception as err:  # nibabel raises ImageFileError, OSError, EOFError, zlib.error...
        raise HemwslInputError(f"{path}: cannot read as NIfTI ({type(err).__name__}: {err})") from None


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


_JSON_TYPES = {dict: "a JSON object", list: "a JSON list", str: "a string", bool: "true or false",
               int: "an integer", float: "a number"}


def _json_type(value: Any) -> str:
    """How a JSON value's type is named in messages (``a JSON object``, ``a JSON list``, ``null``...)."""
    if value is None:
        return "null"
    return _JSON_TYPES.get(type(value), type(value).__name__)


def read_json_file(path: str | os.PathLike, what: str, expect: type | tuple[type, ...] | None = dict) -> Any:
    """The content of the JSON file ``path`` (a run record, a settings file, a report's ``config.json``...): every
    way it can be unreadable is one :class:`HemwslInputError` naming the file and ``what`` it should be: missing,
    a folder, unreadable (``OSError``: a symlink loop, permissions), not UTF-8 text, not valid JSON, or (``expect``)
    of another top-level type than a JSON object (``dict``, the default) or list. ``expect=None``: any JSON value."""
    import json

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except IsADirectoryError:
        raise HemwslInputError(f"{p}: a folder, not the {what} file") from None
    except FileNotFoundError:
        raise HemwslInputError(f"{p}: {what} not found") from None
    except UnicodeDecodeError as err:
        raise HemwslInputError(f"{p}: corrupt {what} (not UTF-8 text: {err.reason} at byte {err.start})") from None
    except OSError as err:
        raise HemwslInputError(f"{p}: cannot read the {what} ({err.strerror or err})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise HemwslInputError(f"{p}: corrupt {what} (not valid JSON: {err})") from None
    if expect is not None and not isinstance(data, expect):
        kinds = expect if isinstance(expect, tuple) else (expect,)
        wanted = " or ".join(_JSON_TYPES.get(k, k.__name__) for k in kinds)
        raise HemwslInputError(f"{p}: corrupt {what} ({wanted} expected, got {_json_type(data)})")
    return data


def check_value(value: Any, name: str, kind: str = "number", *, minimum: float | None = None,
                maximum: float | None = None, length: int | None = None, where: str | os.PathLike | None = None
                ) -> Any:
    """``value`` checked against what ``name`` must be, returned in its plain type; else one
    :class:`HemwslInputError` ``"<where>: <name> must be <what>, got <value>"`` (``where``: the file or option the value
    comes from, left out when ``None``).

    ``kind``: ``"int"`` (an integral number, not a boolean; returned as ``int``), ``"number"`` (finite, not a
    boolean; ``float``), ``"bool"``, ``"str"`` (non-empty), ``"dict"``, ``"list"``, ``"numbers"`` (a list of finite
    numbers, ``length`` of them when given; a list of ``float``). ``minimum`` / ``maximum``: inclusive bounds of a
    number (of each number of ``"numbers"``)."""
    import math

    def is_number(v: Any) -> bool:
        return (not isinstance(v, (bool, np.bool_)) and isinstance(v, (int, float, np.integer, np.floating))
                and math.isfinite(float(v)))

    def in_range(v: float) -> bool:
        return (minimum is None or v >= minimum) and (maximum is None or v <= maximum)

    bounds = ""
    if minimum is not None and maximum is not None:
        bounds = f" in [{minimum:g}, {maximum:g}]"
    elif minimum is not None:
        bounds = f" >= {minimum:g}"
    elif maximum is not None:
        bounds = f" <= {maximum:g}"
    ok, out = False, value
    if kind == "int":
        what = f"an integer{bounds}"
        ok = is_number(value) and float(value).is_integer() and in_range(float(value))
        out = int(value) if ok else value
    elif kind == "number":
        what = f"a finite number{bounds}"
        ok = is_number(value) and in_range(float(value))
        out = float(value) if ok else value
    elif kind == "bool":
        what, ok = "true or false", isinstance(value, (bool, np.bool_))
        out = bool(value) if ok else value
    elif kind == "str":
        what, ok = "a non-empty string", isinstance(value, str) and bool(value.strip())
    elif kind == "dict":
        what, ok = "a JSON object {key: value}", isinstance(value, dict)
    elif kind == "list":
        what, ok = "a list", isinstance(value, list)
    elif kind == "numbers":
        what = f"a list of {length if length is not None else ''} finite numbers{bounds}".replace("of  ", "of ")
        ok = (isinstance(value, (list, tuple)) and (length is None or len(value) == length)
              and all(is_number(v) and in_range(float(v)) for v in value))
        out = [float(v) for v in value] if ok else value
    else:
        raise HemwslInputError(f"check_value: unknown kind {kind!r}")
    if not ok:
        prefix = f"{where}: " if where is not None else ""
        raise HemwslInputError(f"{prefix}{name} must be {what}, got {value!r}")
    return out


_REQUIRED = object()


def record_value(record: Any, key: str, where: str | os.PathLike, kind: str = "number", *, default: Any = _REQUIRED,
                 **bounds: Any) -> Any:
    """``record[key]`` of a JSON record read from the file ``where``, checked by :func:`check_value` (``bounds``:
    its ``minimum`` / ``maximum`` / ``length``): a missing key is ``default`` when one is given (``None`` is kept as
    ``default`` too), else one :class:`HemwslInputError` naming the file and the key."""
    if not isinstance(record, dict):
        raise HemwslInputError(f"{where}: a JSON object expected, got {_json_type(record)}")
    if key not in record or (record[key] is None and default is not _REQUIRED):
        if default is _REQUIRED:
            raise HemwslInputError(f"{where}: no {key!r} entry")
        return default
    return check_value(record[key], key, kind, where=where, **bounds)


def check_run_record(path: str | os.PathLike, record: dict, what: str) -> None:
    """The resume rule of a run folder: ``path`` (a JSON file) holds the settings that made the folder's results.
    Absent: ``record`` is written (atomically). Present and equal: nothing to do. Present and different: a
    one-line :class:`HemwslInputError` naming ``what`` and each difference, so results of two settings never mix.
    An unreadable record (not UTF-8, not JSON, not an object, a folder) is one line naming it."""
    import json

    p = Path(path)
    record = json.loads(json.dumps(record, default=str))
    if p.exists():
        try:
            old = read_json_file(p, "run record")
        except HemwslInputError as err:
            raise HemwslInputError(f"{err}; use another folder") from None
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


def save_nifti(array: np.ndarray, affine: np.ndarray, path: str | os.PathLike,
               scale: tuple[float, float] | None = None) -> None:
    """Write a NIfTI file atomically (write to a temporary file in the same folder, then rename). ``scale``:
    ``(slope, intercept)`` stored in the header (``scl_slope``, ``scl_inter``; readers return
    ``array * slope + intercept``) for an integer ``array``."""
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64))
    if scale is not None:
        img.header.set_data_dtype(np.asarray(array).dtype)
        img.header.set_slope_inter(float(scale[0]), float(scale[1]))
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
