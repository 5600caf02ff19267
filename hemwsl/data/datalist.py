"""Datalists: one dictionary per CT volume, built from a dataset folder and checked on the way.

Every entry has the keys

* ``"image"``: path of the CT volume (a NIfTI file or a DICOM series folder), as a string;
* ``"label"``: path of the hemorrhage mask on the same grid, or ``None``;
* ``"patient"``: patient id (the file stem, e.g. ``"049"``);
* ``"slice_labels"``: per-slice "any hemorrhage" labels (0/1, z order), or ``None`` when unknown;
* ``"subtype_labels"``: per-slice five-subtype labels (lists in the order of
  :data:`hemwsl.constants.SUBTYPES`), or ``None`` when unknown;
* ``"spacing"``: voxel spacing in mm (three floats, from the header affine);
* ``"num_slices"``: number of axial slices (the last axis);
* ``"positive"``: 1 when any slice is positive, else 0 (also 0 when ``slice_labels`` is ``None``).

Two layouts are known (:data:`LAYOUTS`): the PhysioNet CT-ICH release (:func:`ctich_datalist`) and a
generic folder of image/mask pairs matched by file name with an optional slice-label CSV
(:func:`generic_datalist`). Problems raise :class:`hemwsl.errors.HemwslInputError` naming the file.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Callable

import numpy as np

from hemwsl.constants import IMAGE, LABEL, PATIENT, SLICE_LABELS, SPACING, SUBTYPE_LABELS, SUBTYPES
from hemwsl.data.io import atomic_write_text, is_nifti, load_volume, volume_stem
from hemwsl.errors import HemwslInputError, check_choice

__all__ = [
    "NUM_SLICES",
    "POSITIVE",
    "DATALIST_KEYS",
    "CTICH_CSV",
    "LAYOUTS",
    "ctich_datalist",
    "generic_datalist",
    "build_datalist",
    "resolve_dataset_dir",
    "datalist_stats",
    "validate_datalist",
    "save_datalist",
    "load_datalist",
    "mask_slice_labels",
    "match_patient",
]

NUM_SLICES = "num_slices"
POSITIVE = "positive"
DATALIST_KEYS: tuple[str, ...] = (IMAGE, LABEL, PATIENT, SLICE_LABELS, SUBTYPE_LABELS, SPACING, NUM_SLICES, POSITIVE)

CTICH_CSV = "hemorrhage_diagnosis_raw_ct.csv"
_CTICH_SUBTYPE_COLUMNS = ("Intraventricular", "Intraparenchymal", "Subarachnoid", "Epidural", "Subdural")
_CTICH_COLUMNS = ("PatientNumber", "SliceNumber", *_CTICH_SUBTYPE_COLUMNS, "No_Hemorrhage")
_MISMATCH_CHOICES = ("raise", "warn")


# --------------------------------------------------------------------------------------------- helpers
def _id_key(value: str):
    """Key used to match patient ids: numbers match regardless of zero padding ("049" == "49")."""
    value = str(value).strip()
    return int(value) if value.isdigit() else value


def match_patient(name: str, names: Iterable[str]) -> str | None:
    """The spelling of patient ``name`` among ``names``: ``name`` itself, else the one numeric name of the same
    number (``"003"`` for ``"3"``: files and CSVs of one dataset pad patient numbers differently); ``None`` when
    there is none, or when several spellings of that number are there."""
    names = names if isinstance(names, (set, frozenset, dict)) else set(names)
    if name in names:
        return name
    key = _id_key(name)
    if not isinstance(key, int):
        return None
    same = [n for n in names if _id_key(n) == key]
    return same[0] if len(same) == 1 else None


def _is_dicom_dir(path: Path) -> bool:
    return path.is_dir() and any(p.suffix.lower() == ".dcm" for p in path.iterdir() if p.is_file())


def _nifti_files(folder: Path, pattern: str = "*.nii*") -> dict[str, Path]:
    """NIfTI files of ``folder`` matching ``pattern``, by stem; two files with one stem raise."""
    found: dict[str, Path] = {}
    for p in sorted(folder.glob(pattern)):
        if p.is_dir() and is_nifti(p) and not _is_dicom_dir(p):  # skipped, it would be blamed as a missing scan
            raise HemwslInputError(f"{p}: a directory, not a NIfTI file")
        if not (p.is_file() and is_nifti(p)):
            continue
        stem = volume_stem(p)
        if stem in found:
            raise HemwslInputError(f"{folder}: two files for one volume: {found[stem].name} and {p.name}")
        found[stem] = p
    return found


def _header_info(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape and affine of a NIfTI file from its header only (no voxel data read)."""
    import nibabel as nib

    if not path.exists():
        raise HemwslInputError(f"{path}: file not found")
    try:
        img = nib.load(str(path))
        shape = tuple(int(s) for s in img.shape)
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as err:  # ImageFileError, OSError, EOFError, zlib.error ...
        raise HemwslInputError(f"{path}: cannot read as NIfTI ({type(err).__name__}: {err})") from err
    if len(shape) > 3:  # as load_volume does: drop singleton axes of 4D/5D files
        shape = tuple(s for s in shape if s != 1)
    if len(shape) != 3:
        raise HemwslInputError(f"{path}: expected a 3D volume, got {len(shape)}D with shape {shape}")
    return shape, affine


def _spacing(affine: np.ndarray) -> list[float]:
    return [float(s) for s in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))]


def _image_info(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape and affine of an image: header only for NIfTI, a full read for a DICOM series."""
    if path.is_dir():
        vol = load_volume(path, kind="image")
        return vol.shape, vol.affine
    return _header_info(path)


def mask_slice_labels(mask: np.ndarray) -> list[int]:
    """Per-slice "any hemorrhage" labels of a mask of shape (X, Y, Z): 1 where the slice is non-empty."""
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise HemwslInputError(f"expected a 3D mask, got shape {tuple(mask.shape)}")
    return [int(v) for v in mask.any(axis=(0, 1))]  # no reshape: nibabel arrays are Fortran-ordered


def _mask_labels_checked(
    mask_path: Path, image_path: Path, shape: tuple[int, ...], affine: np.ndarray, atol: float = 1e-3
) -> list[int]:
    """Read a mask, check it lies on the image grid, and return its per-slice labels."""
    mask = load_volume(mask_path, kind="mask", dtype=None)  # native dtype: labels > 255 must not wrap
    if mask.shape != tuple(shape):
        raise HemwslInputError(f"{mask_path}: mask shape {mask.shape} does not match image {image_path} shape {tuple(shape)}")
    if not np.allclose(mask.affine, affine, atol=atol):
        diff = float(np.abs(mask.affine - affine).max())
        raise HemwslInputError(f"{mask_path}: mask affine does not match image {image_path} affine (max difference {diff:.4g})")
    return mask_slice_labels(mask.array)


def _report_mismatch(problems: list[str], on_mismatch: str) -> None:
    if not problems:
        return
    text = "slice labels from the masks disagree with the slice-label CSV:\n  " + "\n  ".join(problems)
    if on_mismatch == "raise":
        raise HemwslInputError(text)
    warnings.warn(text, UserWarning, stacklevel=3)


def _mismatch_text(mask_path, csv_path, patient, from_mask: list[int], from_csv: list[int]) -> str | None:
    bad = [z + 1 for z, (a, b) in enumerate(zip(from_mask, from_csv)) if a != b]
    if not bad:
        return None
    shown = ", ".join(map(str, bad[:20])) + (f", ... ({len(bad)} in all)" if len(bad) > 20 else "")
    mask_only = [z for z in bad if from_mask[z - 1]]
    csv_only = [z for z in bad if from_csv[z - 1]]
    return (
        f"{mask_path}: patient {patient}: slice(s) {shown} (1-based) differ from {csv_path} "
        f"(non-empty mask but negative in the CSV: {mask_only[:20]}; positive in the CSV but empty mask: {csv_only[:20]})"
    )


def _parse_01(value: str, csv_path: Path, line: int, column: str) -> int:
    v = (value or "").strip()
    try:
        f = float(v)
    except ValueError:
        raise HemwslInputError(f"{csv_path}: line {line}: column {column!r} must be 0 or 1, got {v!r}") from None
    if f not in (0.0, 1.0):
        raise HemwslInputError(f"{csv_path}: line {line}: column {column!r} must be 0 or 1, got {v!r}")
    return int(f)


def _parse_slice(value: str, csv_path: Path, line: int, column: str) -> int:
    v = (value or "").strip()
    try:
        f = float(v)
    except ValueError:
        f = float("nan")
    if not (f == f and f == int(f) and f >= 1):
        raise HemwslInputError(f"{csv_path}: line {line}: column {column!r} must be a slice number >= 1, got {v!r}")
    return int(f)


def _read_csv(csv_path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and (line number, row) pairs of a CSV file."""
    if not csv_path.is_file():
        raise HemwslInputError(f"{csv_path}: slice-label CSV not found")
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            reader.fieldnames = header
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise HemwslInputError(f"{csv_path}: cannot read as CSV ({type(err).__name__}: {err})") from err
    if not header:
        raise HemwslInputError(f"{csv_path}: empty CSV (no header line)")
    dup = [h for i, h in enumerate(header) if h and h in header[:i]]
    if dup:  # csv.DictReader would keep the last column of a name and silently drop the others
        raise HemwslInputError(f"{csv_path}: header line: column(s) {sorted(set(dup))} appear more than once; "
                               "each column name must be unique")
    for line, row in rows:
        if None in row:
            raise HemwslInputError(f"{csv_path}: line {line}: more fields than the header has")
    return header, rows


def _slices_by_patient(
    csv_path: Path, records: list[tuple[int, object, int, int, list[int] | None]]
) -> dict[object, dict[int, tuple[int, int, list[int] | None]]]:
    """Group (line, patient key, slice, any, subtypes) records by patient; duplicate slices raise."""
    out: dict[object, dict[int, tuple[int, int, list[int] | None]]] = {}
    for line, key, sl, any_, subs in records:
        per = out.setdefault(key, {})
        if sl in per:
            raise HemwslInputError(f"{csv_path}: line {line}: patient {key} slice {sl} is listed twice (first on line {per[sl][0]})")
        per[sl] = (line, any_, subs)
    return out


def _labels_for_volume(csv_path: Path, patient, per_slice: dict, depth: int, image_path: Path):
    """Turn one patient's CSV rows into z-ordered labels, checking they cover slices 1..depth exactly."""
    numbers = set(per_slice)
    expected = set(range(1, depth + 1))
    if numbers != expected:
        missing = sorted(expected - numbers)
        extra = sorted(numbers - expected)
        parts = []
        if missing:
            parts.append(f"missing slice(s) {missing[:20]}{' ...' if len(missing) > 20 else ''}")
        if extra:
            parts.append(f"slice(s) beyond the volume {extra[:20]}{' ...' if len(extra) > 20 else ''}")
        raise HemwslInputError(
            f"{csv_path}: patient {patient}: {len(numbers)} slice row(s) do not match the {depth} slices of "
            f"{image_path} ({'; '.join(parts)})"
        )
    slice_labels = [per_slice[z][1] for z in range(1, depth + 1)]
    subs = [per_slice[z][2] for z in range(1, depth + 1)]
    subtype_labels = None if any(s is None for s in subs) else subs
    return slice_labels, subtype_labels


def _entry(image, label, patient, slice_labels, subtype_labels, spacing, num_slices) -> dict:
    return {
        IMAGE: str(image),
        LABEL: None if label is None else str(label),
        PATIENT: str(patient),
        SLICE_LABELS: None if slice_labels is None else [int(v) for v in slice_labels],
        SUBTYPE_LABELS: None if subtype_labels is None else [[int(v) for v in s] for s in subtype_labels],
        SPACING: [float(s) for s in spacing],
        NUM_SLICES: int(num_slices),
        POSITIVE: int(bool(slice_labels) and any(slice_labels)),
    }


# --------------------------------------------------------------------------------------------- CT-ICH
def ctich_datalist(root: str | os.PathLike, *, check_masks: bool = True, on_mismatch: str = "raise") -> list[dict]:
    """Datalist of the PhysioNet CT-ICH layout.

    ``root`` holds ``ct_scans/NNN.nii[.gz]``, ``masks/NNN.nii[.gz]`` and ``hemorrhage_diagnosis_raw_ct.csv``
    (one row per slice; ``SliceNumber`` is 1-based, ``= z + 1``). Slice labels are ``1 - No_Hemorrhage``
    and subtype labels the five subtype columns, both from the CSV.

    Checks: every CSV patient has a scan and every scan has CSV rows; each patient's slice numbers are
    exactly ``1..Z`` for the scan's depth ``Z`` (read from the header only); the subtype columns agree
    with ``No_Hemorrhage``. With ``check_masks`` every scan must have a mask on its grid, and the
    per-slice labels derived from the masks (non-empty slice = positive) must equal the CSV's.

    Args:
        root: dataset folder.
        check_masks: read the masks and compare them with the CSV (a few seconds for the 55 masks).
        on_mismatch: ``"raise"`` (default) or ``"warn"`` when masks and CSV disagree; with ``"warn"``
            the CSV labels are kept.

    Returns:
        One entry per patient, sorted by patient id.

    Raises:
        HemwslInputError: a missing folder/file, an unreadable or non-3D volume, a CSV that does not
            match the volumes, a mask off the image grid, or (``on_mismatch="raise"``) masks that
            disagree with the CSV. The message names the file and patient at fault.
    """
    check_choice("on_mismatch", on_mismatch, _MISMATCH_CHOICES)
    root = Path(root)
    if not root.is_dir():
        raise HemwslInputError(f"{root}: CT-ICH dataset folder not found")
    scan_dir, mask_dir, csv_path = root / "ct_scans", root / "masks", root / CTICH_CSV
    if not scan_dir.is_dir():
        raise HemwslInputError(f"{scan_dir}: folder of CT scans not found (expected the CT-ICH layout)")
    scans = _nifti_files(scan_dir)
    if not scans:
        raise HemwslInputError(f"{scan_dir}: no .nii or .nii.gz files")
    masks: dict[str, Path] = {}
    if mask_dir.is_dir():
        masks = _nifti_files(mask_dir)
    elif check_masks:
        raise HemwslInputError(f"{mask_dir}: folder of masks not found (pass check_masks=False to skip the masks)")

    header, rows = _read_csv(csv_path)
    missing_cols = [c for c in _CTICH_COLUMNS if c not in header]
    if missing_cols:
        raise HemwslInputError(f"{csv_path}: missing column(s) {missing_cols}; found {header}")
    records = []
    for line, row in rows:
        pid = (row["PatientNumber"] or "").strip()
        if not pid:
            raise HemwslInputError(f"{csv_path}: line {line}: empty PatientNumber")
        sl = _parse_slice(row["SliceNumber"], csv_path, line, "SliceNumber")
        subs = [_parse_01(row[c], csv_path, line, c) for c in _CTICH_SUBTYPE_COLUMNS]
        none = _parse_01(row["No_Hemorrhage"], csv_path, line, "No_Hemorrhage")
        if none == int(any(subs)):
            raise HemwslInputError(
                f"{csv_path}: line {line}: patient {pid} slice {sl}: No_Hemorrhage={none} contradicts the subtype columns {subs}"
            )
        records.append((line, _id_key(pid), sl, 1 - none, subs))
    by_patient = _slices_by_patient(csv_path, records)

    scan_keys: dict[object, str] = {}
    for stem in scans:
        key = _id_key(stem)
        if key in scan_keys:
            raise HemwslInputError(f"{scan_dir}: {scans[scan_keys[key]].name} and {scans[stem].name} are one patient")
        scan_keys[key] = stem
    no_scan = sorted((k for k in by_patient if k not in scan_keys), key=str)
    if no_scan:
        raise HemwslInputError(f"{csv_path}: patient(s) {no_scan} have slice rows but no scan in {scan_dir}")
    no_rows = sorted(stem for key, stem in scan_keys.items() if key not in by_patient)
    if no_rows:
        raise HemwslInputError(f"{csv_path}: no slice rows for scan(s) {[scans[s].name for s in no_rows]} in {scan_dir}")
    mask_keys = {_id_key(stem): stem for stem in masks}
    stray = sorted(masks[s].name for k, s in mask_keys.items() if k not in scan_keys)
    if stray and check_masks:
        raise HemwslInputError(f"{mask_dir}: mask(s) {stray} have no scan in {scan_dir}")

    datalist, problems = [], []
    for key in sorted(scan_keys, key=lambda k: (isinstance(k, str), str(k).zfill(32) if isinstance(k, int) else k)):
        stem = scan_keys[key]
        image_path = scans[stem]
        shape, affine = _header_info(image_path)
        slice_labels, subtype_labels = _labels_for_volume(csv_path, stem, by_patient[key], shape[2], image_path)
        mask_path = masks[mask_keys[key]] if key in mask_keys else None
        if check_masks:
            if mask_path is None:
                raise HemwslInputError(f"{mask_dir}: no mask for patient {stem} (scan {image_path})")
            from_mask = _mask_labels_checked(mask_path, image_path, shape, affine)
            text = _mismatch_text(mask_path, csv_path, stem, from_mask, slice_labels)
            if text:
                problems.append(text)
        datalist.append(_entry(image_path, mask_path, stem, slice_labels, subtype_labels, _spacing(affine), shape[2]))
    _report_mismatch(problems, on_mismatch)
    return datalist


# --------------------------------------------------------------------------------------------- generic
_ID_COLUMNS = ("patient", "file", "stem", "id", "patientnumber")
_SLICE_COLUMNS = ("slice", "slicenumber", "slice_number")
_ANY_COLUMNS = ("any", "any_hemorrhage", "hemorrhage")


def _find_column(header: list[str], names, csv_path: Path, what: str, required: bool = True) -> str | None:
    lower = {h.lower(): h for h in header}
    for n in names:
        if n in lower:
            return lower[n]
    if required:
        raise HemwslInputError(f"{csv_path}: no {what} column (one of {list(names)}, any case); found {header}")
    return None


def _read_generic_csv(csv_path: Path) -> dict[object, dict]:
    header, rows = _read_csv(csv_path)
    id_col = _find_column(header, _ID_COLUMNS, csv_path, "patient/file")
    slice_col = _find_column(header, _SLICE_COLUMNS, csv_path, "slice")
    any_col = _find_column(header, _ANY_COLUMNS, csv_path, "'any' label")
    lower = {h.lower(): h for h in header}
    sub_cols = [lower.get(s) for s in SUBTYPES]
    present = [c for c in sub_cols if c is not None]
    if present and len(present) != len(SUBTYPES):
        missing = [s for s, c in zip(SUBTYPES, sub_cols) if c is None]
        raise HemwslInputError(f"{csv_path}: subtype columns must be all or none of {list(SUBTYPES)}; missing {missing}")
    records = []
    for line, row in rows:
        raw = (row[id_col] or "").strip()
        if not raw:
            raise HemwslInputError(f"{csv_path}: line {line}: empty {id_col!r}")
        pid = volume_stem(raw)  # accept file names as well as stems
        sl = _parse_slice(row[slice_col], csv_path, line, slice_col)
        any_ = _parse_01(row[any_col], csv_path, line, any_col)
        subs = None
        if present:
            subs = [_parse_01(row[c], csv_path, line, c) for c in sub_cols]
            if any(subs) and not any_:
                raise HemwslInputError(f"{csv_path}: line {line}: {pid} slice {sl}: {any_col}=0 but subtype(s) {subs} positive")
        records.append((line, _id_key(pid), sl, any_, subs))
    return _slices_by_patient(csv_path, records)


def _generic_images(image_dir: Path, pattern: str) -> dict[str, Path]:
    images = _nifti_files(image_dir, pattern)
    for p in sorted(image_dir.iterdir()):
        if _is_dicom_dir(p):
            if p.name in images:
                raise HemwslInputError(f"{image_dir}: two volumes named {p.name}: {images[p.name].name} and the DICOM folder {p.name}")
            images[p.name] = p
    return dict(sorted(images.items()))


def generic_datalist(
    image_dir: str | os.PathLike,
    label_dir: str | os.PathLike | None = None,
    slice_csv: str | os.PathLike | None = None,
    *,
    pattern: str = "*.nii*",
    check_masks: bool = True,
    on_mismatch: str = "raise",
) -> list[dict]:
    """Datalist of a folder of CT volumes with optional masks and slice labels (BHSD/INSTANCE style).

    Volumes are the NIfTI files of ``image_dir`` matching ``pattern`` and its sub-folders holding
    ``.dcm`` files (one DICOM series each, read through MONAI's ITKReader). Masks in ``label_dir`` are
    matched by name (``image_dir/a.nii.gz`` <-> ``label_dir/a.nii.gz``; ``.nii``/``.nii.gz`` and DICOM
    folders interchangeable); images without a mask get ``label=None``.

    ``slice_csv`` has one row per slice with columns ``patient`` (or ``file``/``stem``/``id``: the image
    stem or file name), ``slice`` (1-based, ``= z + 1``), ``any`` (0/1) and optionally all five subtype
    columns named as :data:`hemwsl.constants.SUBTYPES` (any case). Ids match up to zero padding.

    Slice labels come from the CSV when it lists the volume, else from the mask (non-empty slice =
    positive); with neither they are ``None``. When both exist and ``check_masks``, they must agree
    (``on_mismatch="raise"``) or a warning is given (``"warn"``; the CSV labels are kept).

    Raises:
        HemwslInputError: missing folders, unreadable volumes, masks without an image or off the image
            grid, CSV rows for unknown volumes or not covering slices ``1..Z``, label disagreement.
    """
    check_choice("on_mismatch", on_mismatch, _MISMATCH_CHOICES)
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise HemwslInputError(f"{image_dir}: image folder not found")
    images = _generic_images(image_dir, pattern)
    if not images:
        raise HemwslInputError(f"{image_dir}: no NIfTI files matching {pattern!r} and no DICOM series folders")
    labels: dict[str, Path] = {}
    if label_dir is not None:
        label_dir = Path(label_dir)
        if not label_dir.is_dir():
            raise HemwslInputError(f"{label_dir}: label folder not found")
        labels = _generic_images(label_dir, "*.nii*")
        stray = sorted(labels[s].name for s in labels if s not in images)
        if stray:
            raise HemwslInputError(f"{label_dir}: mask(s) {stray} have no image of the same name in {image_dir}")
    csv_rows: dict[object, dict] = {}
    if slice_csv is not None:
        slice_csv = Path(slice_csv)
        csv_rows = _read_generic_csv(slice_csv)
        image_keys: dict[object, str] = {}
        for stem in images:
            if _id_key(stem) in image_keys:
                raise HemwslInputError(f"{image_dir}: volumes {image_keys[_id_key(stem)]!r} and {stem!r} have the same id")
            image_keys[_id_key(stem)] = stem
        unknown = sorted((k for k in csv_rows if k not in image_keys), key=str)
        if unknown:
            raise HemwslInputError(f"{slice_csv}: rows for volume(s) {unknown} not found in {image_dir}")

    datalist, problems = [], []
    for stem, image_path in images.items():
        shape, affine = _image_info(image_path)
        mask_path = labels.get(stem)
        slice_labels = subtype_labels = None
        key = _id_key(stem)
        if key in csv_rows:
            slice_labels, subtype_labels = _labels_for_volume(slice_csv, stem, csv_rows[key], shape[2], image_path)
        if mask_path is not None and (check_masks or slice_labels is None):
            from_mask = _mask_labels_checked(mask_path, image_path, shape, affine)
            if slice_labels is None:
                slice_labels = from_mask
            else:
                text = _mismatch_text(mask_path, slice_csv, stem, from_mask, slice_labels)
                if text:
                    problems.append(text)
        datalist.append(_entry(image_path, mask_path, stem, slice_labels, subtype_labels, _spacing(affine), shape[2]))
    _report_mismatch(problems, on_mismatch)
    return datalist


# --------------------------------------------------------------------------------------------- dispatch
LAYOUTS: dict[str, Callable[..., list[dict]]] = {"ct-ich": ctich_datalist, "generic": generic_datalist}


def resolve_dataset_dir(root: str | os.PathLike, what: str = "--dataset-dir") -> Path:
    """``root`` as an absolute path with its symlinks resolved (what run records keep); a symlink loop, which
    pathlib reports as a bare ``RuntimeError``/``OSError``, is one line naming the path and ``what``. A path that
    does not exist is returned as it is (the layout's builder names it)."""
    loop = HemwslInputError(f"{root}: a symlink loop, not a folder ({what})")
    try:
        os.stat(root)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise loop from None
    try:
        return Path(root).resolve()
    except RuntimeError:  # Python < 3.13: "Symlink loop from ..."
        raise loop from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise loop from None
        raise HemwslInputError(f"{root}: cannot resolve the path ({what}): {err.strerror or err}") from None


def build_datalist(layout: str, root: str | os.PathLike, **kw) -> list[dict]:
    """Build a datalist with the builder registered for ``layout`` in :data:`LAYOUTS`.

    ``root`` is the dataset folder for ``"ct-ich"`` and the image folder for ``"generic"``; other
    keyword arguments go to the builder.
    """
    if layout not in LAYOUTS:
        raise HemwslInputError(f"unknown layout {layout!r}; accepted values: {', '.join(LAYOUTS)}")
    resolve_dataset_dir(root, "dataset folder")
    return LAYOUTS[layout](root, **kw)


def datalist_stats(datalist: list[dict]) -> dict[str, int]:
    """Counts: distinct ``patients``, ``slices`` (all volumes), ``positive_slices``, ``positive_patients``."""
    patients, positive_patients = set(), set()
    slices = positive_slices = 0
    for e in datalist:
        patients.add(e[PATIENT])
        slices += int(e[NUM_SLICES])
        labels = e.get(SLICE_LABELS)
        if labels:
            n = int(sum(labels))
            positive_slices += n
            if n:
                positive_patients.add(e[PATIENT])
        elif e.get(POSITIVE):
            positive_patients.add(e[PATIENT])
    return {
        "patients": len(patients),
        "slices": slices,
        "positive_slices": positive_slices,
        "positive_patients": len(positive_patients),
    }


# --------------------------------------------------------------------------------------------- JSON
def _is_01(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v in (0, 1)


def validate_datalist(datalist, source: str = "datalist") -> list[dict]:
    """Check the structure of a datalist (keys and value types); raise naming ``source`` and the entry."""
    if not isinstance(datalist, list):
        raise HemwslInputError(f"{source}: a datalist must be a JSON list of entries, got {type(datalist).__name__}")
    for i, e in enumerate(datalist):
        where = f"{source}: entry {i}"
        if not isinstance(e, dict):
            raise HemwslInputError(f"{where}: expected an object, got {type(e).__name__}")
        missing = [k for k in DATALIST_KEYS if k not in e]
        if missing:
            raise HemwslInputError(f"{where}: missing key(s) {missing}")
        where = f"{where} (patient {e[PATIENT]!r})"
        if not isinstance(e[IMAGE], str) or not e[IMAGE]:
            raise HemwslInputError(f"{where}: {IMAGE!r} must be a path string")
        if e[LABEL] is not None and not isinstance(e[LABEL], str):
            raise HemwslInputError(f"{where}: {LABEL!r} must be a path string or null")
        if not isinstance(e[PATIENT], str) or not e[PATIENT]:
            raise HemwslInputError(f"{where}: {PATIENT!r} must be a non-empty string")
        n = e[NUM_SLICES]
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise HemwslInputError(f"{where}: {NUM_SLICES!r} must be a positive integer, got {n!r}")
        sp = e[SPACING]
        if not (isinstance(sp, list) and len(sp) == 3 and all(isinstance(s, (int, float)) and s > 0 for s in sp)):
            raise HemwslInputError(f"{where}: {SPACING!r} must be a list of 3 positive numbers, got {sp!r}")
        sl = e[SLICE_LABELS]
        if sl is not None and not (isinstance(sl, list) and len(sl) == n and all(_is_01(v) for v in sl)):
            raise HemwslInputError(f"{where}: {SLICE_LABELS!r} must be null or {n} values of 0/1")
        st = e[SUBTYPE_LABELS]
        if st is not None and not (
            isinstance(st, list)
            and len(st) == n
            and all(isinstance(s, list) and len(s) == len(SUBTYPES) and all(_is_01(v) for v in s) for s in st)
        ):
            raise HemwslInputError(f"{where}: {SUBTYPE_LABELS!r} must be null or {n} lists of {len(SUBTYPES)} values of 0/1")
        if not _is_01(e[POSITIVE]):
            raise HemwslInputError(f"{where}: {POSITIVE!r} must be 0 or 1, got {e[POSITIVE]!r}")
        if sl is not None and e[POSITIVE] != int(any(sl)):
            raise HemwslInputError(f"{where}: {POSITIVE!r}={e[POSITIVE]} disagrees with its slice labels")
    return datalist


def save_datalist(datalist: list[dict], path: str | os.PathLike) -> None:
    """Write a datalist as JSON (atomically); paths are stored as given."""
    validate_datalist(datalist, "datalist to save")
    atomic_write_text(path, json.dumps(datalist, indent=1) + "\n")


def load_datalist(path: str | os.PathLike) -> list[dict]:
    """Read a datalist written by :func:`save_datalist` and check its structure."""
    p = Path(path)
    if p.is_dir():
        raise HemwslInputError(f"{p}: a directory, not a datalist JSON file (make one with `hemwsl datalist`)")
    if not p.is_file():
        raise HemwslInputError(f"{p}: datalist file not found")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HemwslInputError(f"{p}: corrupt datalist JSON ({err})") from err
    if isinstance(data, list) and not data:
        raise HemwslInputError(f"{p}: empty datalist (no entries)")
    return validate_datalist(data, str(p))
