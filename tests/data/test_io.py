"""Checked volume reading (NIfTI and DICOM series) and atomic writing."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from hemwsl.data.io import atomic_write_text, is_nifti, load_pair, load_volume, save_nifti
from hemwsl.errors import HemwslInputError

AFFINE = np.diag([0.5, 0.5, 5.0, 1.0])


def _write(array, path: Path, affine=AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array), affine), str(path))
    return path


def write_dicom_series(itk, array_xyz: np.ndarray, folder: Path, spacing=(0.7, 0.8, 2.5)) -> Path:
    """Write an (X, Y, Z) int16 array as a DICOM series, one .dcm file per axial slice."""
    folder.mkdir(parents=True, exist_ok=True)
    uid = "1.2.826.0.1.3680043.2.1125.1.424242"
    for k in range(array_xyz.shape[2]):
        sl = itk.image_from_array(np.ascontiguousarray(array_xyz[:, :, k].T.astype(np.int16)))  # numpy (y, x)
        sl.SetSpacing([float(spacing[0]), float(spacing[1])])
        md = sl.GetMetaDataDictionary()
        tags = {
            "0008|0060": "CT",
            "0020|000d": uid + ".1",  # study
            "0020|000e": uid + ".2",  # series
            "0020|0013": str(k + 1),  # instance number
            "0020|0032": f"0\\0\\{spacing[2] * k}",  # image position (patient)
            "0020|0037": "1\\0\\0\\0\\1\\0",  # image orientation (patient)
            "0018|0050": str(spacing[2]),  # slice thickness
        }
        for tag, value in tags.items():
            md[tag] = value
        dicom_io = itk.GDCMImageIO.New()
        dicom_io.KeepOriginalUIDOn()
        itk.imwrite(sl, str(folder / f"IM{k:04d}.dcm"), imageio=dicom_io)
    return folder


def test_nifti_roundtrip_and_metadata(tmp_path):
    arr = np.random.default_rng(0).integers(-20, 100, size=(8, 7, 5)).astype(np.int16)
    path = _write(arr, tmp_path / "ct.nii.gz")
    vol = load_volume(path)
    assert vol.shape == (8, 7, 5) and vol.array.dtype == np.float32
    assert np.array_equal(vol.array, arr)
    assert vol.spacing == (0.5, 0.5, 5.0) and vol.path == str(path)
    assert is_nifti(path) and is_nifti("x.nii") and not is_nifti("x.mha")


def test_missing_file_named(tmp_path):
    with pytest.raises(HemwslInputError, match=r"absent\.nii\.gz: file not found"):
        load_volume(tmp_path / "absent.nii.gz")


@pytest.mark.parametrize("content", [b"garbage bytes, not gzip", b"\x1f\x8b\x08\x00 truncated gzip", b""])
def test_corrupt_nifti_named(tmp_path, content):
    path = tmp_path / "bad.nii.gz"
    path.write_bytes(content)
    with pytest.raises(HemwslInputError, match=r"bad\.nii\.gz: cannot read as NIfTI"):
        load_volume(path)


def test_truncated_nifti_data_named(tmp_path):
    path = _write(np.zeros((32, 32, 8), np.int16), tmp_path / "cut.nii")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(HemwslInputError, match=r"cut\.nii: cannot read as NIfTI"):
        load_volume(path)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "ct.mha"
    path.write_bytes(b"x")
    with pytest.raises(HemwslInputError, match=r"ct\.mha: unsupported file type"):
        load_volume(path)


def test_2d_file_rejected(tmp_path):
    path = _write(np.zeros((8, 8), np.int16), tmp_path / "flat.nii.gz", affine=np.eye(4))
    with pytest.raises(HemwslInputError, match=r"flat\.nii\.gz: expected a 3D volume, got 2D"):
        load_volume(path)


def test_4d_singleton_is_squeezed(tmp_path):
    path = _write(np.zeros((8, 8, 3, 1), np.int16), tmp_path / "four.nii.gz")
    assert load_volume(path).shape == (8, 8, 3)


def test_nan_values_rejected(tmp_path):
    arr = np.zeros((6, 6, 3), np.float32)
    arr[1, 2, 1] = np.nan
    arr[0, 0, 0] = np.inf
    path = _write(arr, tmp_path / "nan.nii.gz")
    with pytest.raises(HemwslInputError, match=r"nan\.nii\.gz: 2 NaN/inf voxel\(s\)"):
        load_volume(path)


@pytest.mark.parametrize(
    "values, dtype, pattern",
    [
        (0.5, np.float32, "mask values must be integer"),
        (-1, np.int16, "mask values must be >= 0"),
        (np.nan, np.float32, "NaN/inf values in the mask"),
        (256, np.int16, "mask value 256 does not fit in uint8"),
    ],
)
def test_bad_masks_rejected(tmp_path, values, dtype, pattern):
    arr = np.zeros((6, 6, 3), dtype)
    arr[2, 2, 1] = values
    path = _write(arr, tmp_path / "mask.nii.gz")
    with pytest.raises(HemwslInputError, match=rf"mask\.nii\.gz: {pattern}"):
        load_volume(path, kind="mask", dtype=np.uint8)


def test_unknown_kind(tmp_path):
    path = _write(np.zeros((4, 4, 2), np.int16), tmp_path / "a.nii.gz")
    with pytest.raises(HemwslInputError, match="unknown kind 'label'"):
        load_volume(path, kind="label")


def test_load_pair_checks_grid(tmp_path):
    img = _write(np.zeros((8, 8, 4), np.int16), tmp_path / "img.nii.gz")
    good = _write(np.ones((8, 8, 4), np.uint8), tmp_path / "good.nii.gz")
    image, mask = load_pair(img, good)
    assert mask.array.dtype == np.uint8 and mask.array.sum() == 8 * 8 * 4
    assert load_pair(img, None)[1] is None
    wrong_shape = _write(np.zeros((8, 8, 3), np.uint8), tmp_path / "shape.nii.gz")
    with pytest.raises(HemwslInputError, match=r"shape\.nii\.gz: mask shape \(8, 8, 3\) does not match image .*img\.nii\.gz"):
        load_pair(img, wrong_shape)
    wrong_affine = _write(np.zeros((8, 8, 4), np.uint8), tmp_path / "aff.nii.gz", affine=np.diag([0.5, 0.5, 2.5, 1]))
    with pytest.raises(HemwslInputError, match=r"aff\.nii\.gz: mask affine does not match image .*img\.nii\.gz"):
        load_pair(img, wrong_affine)


def test_save_nifti_atomic_roundtrip(tmp_path):
    arr = np.arange(4 * 5 * 3, dtype=np.int16).reshape(4, 5, 3)
    out = tmp_path / "sub" / "vol.nii.gz"
    save_nifti(arr, AFFINE, out)
    assert np.array_equal(load_volume(out).array, arr)
    assert [p.name for p in out.parent.iterdir()] == ["vol.nii.gz"]


def test_atomic_write_text(tmp_path):
    out = tmp_path / "a" / "b.txt"
    atomic_write_text(out, "one")
    atomic_write_text(out, "two")
    assert out.read_text() == "two"
    assert [p.name for p in out.parent.iterdir()] == ["b.txt"]


def test_dicom_series_roundtrip(tmp_path):
    itk = pytest.importorskip("itk", reason="itk is needed to write and read DICOM series")
    arr = np.random.default_rng(1).integers(-20, 100, size=(12, 10, 4)).astype(np.int16)
    folder = write_dicom_series(itk, arr, tmp_path / "series", spacing=(0.7, 0.8, 2.5))
    assert len(list(folder.glob("*.dcm"))) == 4
    vol = load_volume(folder)
    # (X, Y, Z) like nibabel, not ITK's reversed (Z, Y, X) numpy order
    assert vol.shape == (12, 10, 4)
    assert np.array_equal(vol.array, arr)
    assert np.allclose(vol.spacing, (0.7, 0.8, 2.5))


def test_corrupt_dicom_series_named(tmp_path):
    pytest.importorskip("itk", reason="itk is needed to read DICOM series")
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "IM0000.dcm").write_bytes(b"not a dicom file")
    with pytest.raises(HemwslInputError, match=r"broken: cannot read as a DICOM series"):
        load_volume(folder)


def test_atomic_writes_follow_the_umask(tmp_path):
    """Every file hemwsl writes (NIfTI, npz, figures, disk cache) gets the permissions a plain open gives."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    from hemwsl.benchmark.runner import _save_npz
    from hemwsl.data.io import atomic_write, save_nifti
    from hemwsl.reports.curves import save_figure

    old = os.umask(0o022)
    try:
        save_nifti(np.zeros((4, 4, 2), np.float32), np.eye(4), tmp_path / "a.nii.gz")
        _save_npz(tmp_path / "b.npz", {"x": np.arange(3)})
        fig = plt.figure()
        save_figure(fig, tmp_path / "c.png")
        plt.close(fig)
        atomic_write(tmp_path / "d.pt", lambda t: torch.save({"x": 1}, t), suffix=".pt")
        for name in ("a.nii.gz", "b.npz", "c.png", "d.pt"):
            assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz", "b.npz", "c.png", "d.pt"]  # no temp left
        with pytest.raises(RuntimeError):
            atomic_write(tmp_path / "e.bin", lambda t: (_ for _ in ()).throw(RuntimeError("boom")))
        assert not (tmp_path / "e.bin").exists() and len(list(tmp_path.iterdir())) == 4
    finally:
        os.umask(old)


def test_stored_ct_values_without_the_rescale_are_refused(tmp_path):
    """Air at 0 and bone at 3000: values stored by the scanner, not HU; the message says how to fix it."""
    raw = np.full((16, 16, 4), 24, np.uint16)  # air of a 0..4095 encoding
    raw[4:12, 4:12] = 1064  # brain (40 HU + 1024)
    raw[3, 3:13] = 3000  # skull
    path = _write(raw, tmp_path / "raw.nii.gz")
    with pytest.raises(HemwslInputError, match=r"raw\.nii\.gz: values 24 to 3000 look like stored CT values.*value - 1024"):
        load_volume(path)
    np.testing.assert_array_equal(load_volume(_write(raw.astype(np.int16) - 1024, tmp_path / "hu.nii.gz")).array,
                                  raw.astype(np.float32) - 1024)  # the same scan in HU loads
    load_volume(_write(np.clip(raw.astype(np.int16) - 1024, -20, 100) + 20, tmp_path / "ctich.nii.gz"))  # 0..120


def test_check_volumes_reads_each_file_once_until_it_changes(tmp_path):
    from hemwsl.data.io import check_volumes

    good = [{"image": str(_write(np.pad(np.full((6, 6, 3), 40, np.int16), ((1, 1), (1, 1), (0, 0)), constant_values=-1000), tmp_path / f"ct{i}.nii.gz")),
             "label": str(_write(np.zeros((8, 8, 3), np.uint8), tmp_path / f"m{i}.nii.gz"))} for i in range(2)]
    cache = tmp_path / "run" / ".checked.json"
    assert check_volumes(good, cache=cache) == 2
    assert check_volumes(good, cache=cache) == 0  # resumed: nothing read again
    bad = _write(np.full((8, 8, 3), np.nan, np.float32), tmp_path / "ct1.nii.gz")  # the file changed
    with pytest.raises(HemwslInputError, match=r"ct1\.nii\.gz: 192 NaN/inf voxel"):
        check_volumes(good, cache=cache)
    _write(np.full((64, 64, 16), 40, np.int16), bad)
    bad.write_bytes(bad.read_bytes()[:200])  # truncated gzip: found by a full read, not by the header
    with pytest.raises(HemwslInputError, match=r"ct1\.nii\.gz: cannot read"):
        check_volumes(good, cache=cache)


def test_hu_ct_clipped_at_zero_with_its_bone_is_not_taken_for_stored_values(tmp_path):
    hu = np.zeros((32, 32, 4), np.int16)  # air clipped to 0
    hu[6:26, 6:26] = 40  # brain
    hu[5, 5:27] = hu[26, 5:27] = 1800  # skull, a small share of the volume
    np.testing.assert_array_equal(load_volume(_write(hu, tmp_path / "clipped.nii.gz")).array, hu.astype(np.float32))
