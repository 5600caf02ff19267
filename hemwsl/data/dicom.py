"""DICOM CT series in and DICOM SEG out, with pydicom and highdicom.

:func:`read_dicom_series` reads one CT series of a folder (files with or without ``.dcm``) into a
:class:`hemwsl.data.io.Volume` on the same ``(X, Y, Z)`` / RAS-affine convention as a NIfTI file read
with nibabel (and as MONAI's ``ITKReader(affine_lps_to_ras=True)``), and returns the source datasets in
slice order, which a DICOM SEG needs to reference. :func:`write_dicom_seg` writes the mask as a binary
DICOM Segmentation of that series; :func:`write_dicom_series` writes a volume as a CT series (the
tests' and the demo's synthetic DICOM input).
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hemwsl.errors import HemwslInputError

logger = logging.getLogger(__name__)

__all__ = ["DicomSeries", "list_series", "read_dicom_series", "write_dicom_series", "write_dicom_seg",
           "affine_from_datasets", "volume_from_frames", "frames_from_volume"]

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class DicomSeries:
    """One series: ``volume`` (a :class:`~hemwsl.data.io.Volume` in HU), ``datasets`` (pydicom datasets sorted
    so that ``datasets[z]`` is slice ``z`` of the volume) and its ``series_uid``."""

    volume: Any
    datasets: list
    series_uid: str


def _read_headers(folder: Path, unplaced: dict | None = None) -> dict[str, list[tuple[Path, Any]]]:
    """The image slices of ``folder`` by series. ``unplaced`` (when given) collects, by series, the image files that
    cannot be placed in a volume: a multi-frame file, or an image without its position or orientation."""
    import pydicom

    series: dict[str, list[tuple[Path, Any]]] = defaultdict(list)
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        except Exception:  # not DICOM (a README, a thumbnail...): ignored
            continue
        if "SeriesInstanceUID" not in ds:
            continue
        try:
            frames = int(ds.get("NumberOfFrames", 1) or 1)
        except (TypeError, ValueError):
            frames = 1
        image = "Rows" in ds and "Columns" in ds and str(ds.get("Modality", "")) not in ("SEG", "SR", "RTSTRUCT")
        if frames > 1 and image:
            if unplaced is not None:
                unplaced.setdefault(str(ds.SeriesInstanceUID), []).append(
                    (f, f"a multi-frame image ({frames} frames); hemwsl reads a series of one file per slice"))
            continue
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            if image and unplaced is not None:
                unplaced.setdefault(str(ds.SeriesInstanceUID), []).append(
                    (f, "an image without ImagePositionPatient / ImageOrientationPatient (its place is unknown)"))
            continue  # not an image slice (DICOMDIR, a SEG, a report)
        series[str(ds.SeriesInstanceUID)].append((f, ds))
    return series


def list_series(folder: str | os.PathLike) -> list[dict]:
    """The image series of a folder, the one :func:`read_dicom_series` chooses first: ``uid``, ``modality``,
    ``n`` (instances), ``description``."""
    rows = []
    for uid, items in _read_headers(Path(folder)).items():
        ds = items[0][1]
        rows.append({"uid": uid, "modality": str(ds.get("Modality", "")), "n": len(items),
                     "description": str(ds.get("SeriesDescription", ""))})
    # the rule: CT before other modalities, then the most instances, then the UID (deterministic)
    return sorted(rows, key=lambda r: (r["modality"] != "CT", -r["n"], r["uid"]))


def read_dicom_series(folder: str | os.PathLike, series_uid: str | None = None, spacing_tolerance: float = 0.1
                      ) -> DicomSeries:
    """Read one CT series of ``folder`` as HU on an ``(X, Y, Z)`` grid with a RAS affine.

    The series is ``series_uid`` or, by rule, the CT series with the most instances (:func:`list_series`).
    Slices are sorted by their position along the slice normal (so a series stored head-first or
    feet-first, or with shuffled file names, gives the same volume); RescaleSlope/RescaleIntercept are
    applied; an oblique series keeps its direction cosines in the affine.

    Raises:
        HemwslInputError: no readable image series, the requested UID missing, fewer than 3 slices, slices of
            different size or orientation, or uneven slice spacing (missing slices), each naming the folder.
    """
    import pydicom

    root = Path(folder)
    if not root.is_dir():
        raise HemwslInputError(f"{root}: not a folder (a DICOM series is read from its folder)")
    unplaced: dict = {}
    series = _read_headers(root, unplaced)
    if not series:
        if unplaced:
            f, why = next(iter(unplaced.values()))[0]
            raise HemwslInputError(f"{f}: {why}; no other DICOM image series in {root}")
        raise HemwslInputError(f"{root}: no DICOM image series found")
    if series_uid is None:
        rows = list_series(root)
        series_uid = rows[0]["uid"]
        cts = [r for r in rows if r["modality"] == rows[0]["modality"]]
        if len(cts) > 1:
            if cts[1]["n"] == cts[0]["n"]:
                tied = [r["uid"] for r in cts if r["n"] == cts[0]["n"]]
                raise HemwslInputError(f"{root}: {len(tied)} {cts[0]['modality'] or 'image'} series of {cts[0]['n']} "
                                       f"slices each ({', '.join(tied)}): which one is the scan? Give a folder of one "
                                       "series")
            logger.warning("%s: %d %s series; reading %s (%d slices, the most), by the rule of list_series", root,
                           len(cts), cts[0]["modality"] or "image", series_uid, cts[0]["n"])
    elif series_uid not in series:
        raise HemwslInputError(f"{root}: series {series_uid} not found; series here: {', '.join(series)}")
    items = series[series_uid]
    if series_uid in unplaced:
        f, why = unplaced[series_uid][0]
        raise HemwslInputError(f"{f}: {why}, in series {series_uid} of {root}")
    modality = str(items[0][1].get("Modality", ""))
    if modality and modality != "CT":
        raise HemwslInputError(f"{root}: series {series_uid} is modality {modality}, not CT (Hounsfield units); "
                               "hemwsl reads non-contrast head CT")
    if len(items) < 3:
        raise HemwslInputError(f"{root}: series {series_uid} has {len(items)} slice(s); a CT volume needs at least 3")
    ids = [str(ds.get("PatientID", "")) for _, ds in items]
    pid = max(set(ids), key=ids.count)  # the series' patient: most of its slices'
    for f, ds in items:  # one patient's scan: a slice of another patient under the same series is a corrupt series
        if str(ds.get("PatientID", "")) != pid:
            raise HemwslInputError(f"{f}: PatientID {str(ds.get('PatientID', ''))!r}, the other slices of series "
                                   f"{series_uid} {pid!r} (of {root}); one series holds one patient's slices")
    try:
        iop = np.asarray(items[0][1].ImageOrientationPatient, dtype=np.float64)
    except (TypeError, ValueError):
        iop = np.full(6, np.nan)
    if iop.shape != (6,) or not np.all(np.isfinite(iop)) or abs(np.linalg.norm(iop[:3]) - 1) > 1e-3 \
            or abs(np.linalg.norm(iop[3:]) - 1) > 1e-3 or abs(float(iop[:3] @ iop[3:])) > 1e-3:
        raise HemwslInputError(f"{items[0][0]}: ImageOrientationPatient {[round(float(v), 4) for v in iop]} is not two "
                               f"orthogonal unit vectors (row, column) (series {series_uid} of {root})")
    for f, ds in items:
        try:
            ps = [float(v) for v in ds.PixelSpacing]
        except (AttributeError, TypeError, ValueError):
            ps = []
        if len(ps) != 2 or not all(np.isfinite(v) and v > 0 for v in ps):
            raise HemwslInputError(f"{f}: PixelSpacing {ds.get('PixelSpacing')} must be two positive numbers in mm "
                                   f"(series {series_uid} of {root})")
    ps0 = [float(v) for v in items[0][1].PixelSpacing]
    for f, ds in items:
        if not np.allclose([float(v) for v in ds.PixelSpacing], ps0, rtol=1e-4, atol=1e-6):
            raise HemwslInputError(f"{f}: PixelSpacing {[float(v) for v in ds.PixelSpacing]} mm, other slices of "
                                   f"series {series_uid} {ps0} mm; a volume has one pixel spacing")
    if any(not np.allclose(np.asarray(ds.ImageOrientationPatient, dtype=np.float64), iop, atol=1e-4)
           for _, ds in items):
        raise HemwslInputError(f"{root}: slices of series {series_uid} have different orientations")
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    pos = np.array([np.asarray(ds.ImagePositionPatient, dtype=np.float64) for _, ds in items])
    order = np.argsort(pos @ normal, kind="stable")
    items = [items[i] for i in order]
    pos = pos[order]
    steps = np.diff(pos @ normal)
    if np.any(steps <= 1e-6):
        raise HemwslInputError(f"{root}: series {series_uid} has two slices at the same position")
    step = float(np.median(steps))
    if np.abs(steps - step).max() > spacing_tolerance * step:
        k = int(np.argmax(np.abs(steps - step)))
        raise HemwslInputError(
            f"{root}: uneven slice spacing in series {series_uid} ({steps[k]:.3g} mm between slices {k} and {k + 1}, "
            f"{step:.3g} mm elsewhere): slices missing?")
    datasets, planes = [], []
    for f, _ in items:
        try:
            ds = pydicom.dcmread(str(f))
            px = ds.pixel_array.astype(np.float32)
        except Exception as err:
            raise HemwslInputError(f"{f}: cannot read the pixel data ({type(err).__name__}: {err})") from err
        slope, intercept = float(ds.get("RescaleSlope", 1.0)), float(ds.get("RescaleIntercept", 0.0))
        planes.append(px * slope + intercept)
        datasets.append(ds)
    if len({p.shape for p in planes}) != 1:
        raise HemwslInputError(f"{root}: slices of series {series_uid} have different sizes")
    if all("RescaleIntercept" not in ds for ds in datasets):
        lo, hi = float(min(p.min() for p in planes)), float(np.percentile(np.stack(planes), 99))
        if lo >= 0 and hi > 900:  # air at 0, brain near 1064: stored values that needed the missing rescale
            raise HemwslInputError(f"{root}: series {series_uid} has no RescaleIntercept and values {lo:g} to {hi:g} "
                                   "(1st value, 99th percentile) that look like stored values, not Hounsfield units "
                                   "(air should be near -1000): add the scanner's RescaleIntercept (often -1024)")
    return DicomSeries(volume_from_frames(np.stack(planes), datasets, str(root)), datasets, series_uid)


def affine_from_datasets(datasets: Sequence[Any]) -> np.ndarray:
    """The RAS affine of the ``(X, Y, Z)`` grid of slices ``datasets`` in the given order: X along a row (the
    row direction cosine, column spacing), Y down the columns, Z from the first slice's position to the last's."""
    iop = np.asarray(datasets[0].ImageOrientationPatient, dtype=np.float64)
    pos0 = np.asarray(datasets[0].ImagePositionPatient, dtype=np.float64)
    posn = np.asarray(datasets[-1].ImagePositionPatient, dtype=np.float64)
    dr, dc = (float(v) for v in datasets[0].PixelSpacing)  # row spacing (between rows), column spacing
    lps = np.eye(4)
    lps[:3, 0] = iop[:3] * dc
    lps[:3, 1] = iop[3:] * dr
    lps[:3, 2] = (posn - pos0) / max(len(datasets) - 1, 1)
    lps[:3, 3] = pos0
    return _LPS_TO_RAS @ lps


def volume_from_frames(frames: np.ndarray, datasets: Sequence[Any], path: str = "<dicom>") -> Any:
    """A :class:`~hemwsl.data.io.Volume` from ``(slices, rows, columns)`` frames in HU (as MONAI Deploy's
    ``DICOMSeriesToVolumeOperator`` gives them) and their datasets in the same order."""
    from hemwsl.data.io import Volume

    f = np.asarray(frames, dtype=np.float32)
    if f.ndim != 3 or f.shape[0] != len(datasets):
        raise HemwslInputError(f"{path}: {f.shape} frames for {len(datasets)} DICOM slices")
    return Volume(np.ascontiguousarray(f.transpose(2, 1, 0)), affine_from_datasets(datasets), path)


def frames_from_volume(array: np.ndarray) -> np.ndarray:
    """The inverse of :func:`volume_from_frames` for an ``(X, Y, Z)`` array: ``(slices, rows, columns)``."""
    return np.ascontiguousarray(np.asarray(array).transpose(2, 1, 0))


def write_dicom_series(hu: np.ndarray, affine: np.ndarray, folder: str | os.PathLike, *, patient_id: str = "ANON",
                       series_description: str = "hemwsl synthetic head CT", seed: int = 0) -> list[Path]:
    """Write an ``(X, Y, Z)`` HU volume with a RAS ``affine`` as a CT Image Storage series (int16 with
    RescaleIntercept -1024), one file per slice named ``<z>.dcm``; returns the files."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    hu = np.asarray(hu, dtype=np.float32)
    if hu.ndim != 3:
        raise HemwslInputError(f"write_dicom_series needs an (X, Y, Z) volume, got shape {hu.shape}")
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, dtype=np.float64)
    sx, sy, sz = (float(np.linalg.norm(lps[:3, i])) for i in range(3))
    row, col = lps[:3, 0] / sx, lps[:3, 1] / sy
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    study, series, frame = (generate_uid(entropy_srcs=[f"{patient_id}-{k}-{seed}"]) for k in ("study", "series", "for"))
    files = []
    for z in range(hu.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[f"{patient_id}-{seed}-{z}"])
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientID, ds.PatientName, ds.PatientSex, ds.PatientBirthDate = patient_id, f"{patient_id}^", "O", ""
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.ReferringPhysicianName = "20260101", "120000", "", ""
        ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, z + 1
        ds.Modality, ds.Manufacturer, ds.SeriesDescription = "CT", "hemwsl", series_description
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PositionReferenceIndicator = ""
        ds.ImagePositionPatient = [float(v) for v in (lps @ np.array([0, 0, z, 1.0]))[:3]]
        ds.ImageOrientationPatient = [float(v) for v in (*row, *col)]
        ds.PixelSpacing = [sy, sx]
        ds.SliceThickness = sz
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = int(hu.shape[1]), int(hu.shape[0])
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        stored = np.clip(np.round(hu[:, :, z].T + 1024), -32768, 32767).astype(np.int16)
        ds.PixelData = stored.tobytes()
        f = out / f"{z:04d}.dcm"
        pydicom.dcmwrite(str(f), ds, enforce_file_format=True)
        files.append(f)
    return files


def write_dicom_seg(mask: np.ndarray, datasets: Sequence[Any], path: str | os.PathLike, *,
                    label: str = "Hemorrhage", software_version: str = "", series_number: int = 900) -> Path:
    """Write an ``(X, Y, Z)`` binary mask as a DICOM SEG (highdicom, BINARY) referencing ``datasets``, the
    source series in slice order (``datasets[z]`` is slice ``z``); written atomically. Empty frames are
    omitted (highdicom's default); a mask with no voxel still gives a valid SEG with one empty frame."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    from hemwsl.data.io import atomic_write_bytes

    m = np.asarray(mask).astype(bool)
    if m.ndim != 3 or m.shape[2] != len(datasets):
        raise HemwslInputError(f"{path}: mask shape {m.shape} does not match the {len(datasets)} source slices")
    frames = frames_from_volume(m)  # (Z, rows, columns)
    algorithm = hd.AlgorithmIdentificationSequence(name="hemwsl", version=software_version or "0",
                                                   family=codes.DCM.ArtificialIntelligence)
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label=label,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Hemorrhage,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm)
    seg = hd.seg.Segmentation(
        source_images=list(datasets), pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment], series_instance_uid=generate_uid(), series_number=series_number,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="hemwsl",
        manufacturer_model_name="hemwsl predict", software_versions=software_version or "0",
        device_serial_number="0", series_description="hemwsl hemorrhage mask (weakly supervised)")
    import io

    buf = io.BytesIO()
    seg.save_as(buf)
    p = Path(path)
    atomic_write_bytes(p, buf.getvalue())
    return p
