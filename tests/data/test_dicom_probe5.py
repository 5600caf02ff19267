"""DICOM series that cannot be read as one CT volume are refused in one line (fifth bad-input probe)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from hemwsl.data.dicom import read_dicom_series, write_dicom_series
from hemwsl.errors import HemwslInputError


@pytest.fixture()
def series(tmp_path):
    hu = np.linspace(-100, 100, 24 * 20 * 6, dtype=np.float32).reshape(24, 20, 6)
    files = write_dicom_series(hu, np.diag([0.5, 0.5, 5.0, 1.0]), tmp_path / "ct")
    return tmp_path / "ct", files


def _edit(path, **changes):
    ds = pydicom.dcmread(str(path))
    for key, value in changes.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    ds.save_as(str(path))


def test_the_plain_series_reads(series):
    folder, files = series
    assert read_dicom_series(folder).volume.array.shape == (24, 20, 6)


def test_another_modality_is_not_read_as_ct(series):
    folder, files = series
    for f in files:
        _edit(f, Modality="MR")
    with pytest.raises(HemwslInputError, match="modality MR, not CT"):
        read_dicom_series(folder)


def test_a_slice_with_another_pixel_spacing(series):
    folder, files = series
    _edit(files[3], PixelSpacing=[0.7, 0.7])
    with pytest.raises(HemwslInputError, match=r"3\.dcm: PixelSpacing \[0\.7, 0\.7\] mm, other slices"):
        read_dicom_series(folder)


@pytest.mark.parametrize("which", [2, 5])  # a middle slice and the last one
def test_a_slice_without_its_position_is_named(series, which):
    folder, files = series
    _edit(files[which], ImagePositionPatient=None)
    with pytest.raises(HemwslInputError, match=rf"{which}\.dcm: an image without ImagePositionPatient"):
        read_dicom_series(folder)


def test_a_multi_frame_file_is_named(series, tmp_path):
    folder, files = series
    ds = pydicom.dcmread(str(files[0]))
    ds.NumberOfFrames = 6
    del ds.ImagePositionPatient
    only = tmp_path / "mf"
    only.mkdir()
    ds.save_as(str(only / "enhanced.dcm"))
    with pytest.raises(HemwslInputError, match=r"enhanced\.dcm: a multi-frame image \(6 frames\)"):
        read_dicom_series(only)
