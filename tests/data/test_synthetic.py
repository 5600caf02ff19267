"""Tests for hemwsl.data.synthetic (synthetic head-CT phantoms and the CT-ICH-layout writer)."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from hemwsl.constants import SUBTYPES
from hemwsl.data.synthetic import (
    CTICH_CSV_HEADER,
    CTICH_CSV_NAME,
    CTICH_DEMOGRAPHICS_NAME,
    _phantom_anatomy,
    make_phantom,
    write_synthetic_ctich,
)
from hemwsl.errors import HemwslInputError

SMALL = (64, 64, 12)
SMALL_SPACING = (1.8, 1.8, 10.0)
INPLANE = np.ones((3, 3, 1), dtype=bool)  # in-plane 8-neighbourhood


@pytest.fixture(scope="module")
def by_subtype() -> dict[str, dict]:
    return {s: make_phantom(3, subtypes=[s]) for s in SUBTYPES}


@pytest.fixture(scope="module")
def anatomy():
    return _phantom_anatomy(3)


def test_output_structure() -> None:
    ph = make_phantom(1, shape=SMALL, spacing=SMALL_SPACING)
    assert set(ph) == {"image", "mask", "subtype_labels", "slice_labels", "affine", "subtypes"}
    assert ph["image"].dtype == np.int16 and ph["image"].shape == SMALL
    assert ph["mask"].dtype == np.uint8 and ph["mask"].shape == SMALL
    assert set(np.unique(ph["mask"])) <= {0, 1}
    assert ph["subtype_labels"].shape == (SMALL[2], len(SUBTYPES))
    assert ph["slice_labels"].shape == (SMALL[2],)
    np.testing.assert_allclose(ph["affine"], np.diag([1.8, 1.8, 10.0, 1.0]))
    assert 1 <= len(ph["subtypes"]) <= 2 and set(ph["subtypes"]) <= set(SUBTYPES)


def test_deterministic() -> None:
    a = make_phantom(5, shape=SMALL, spacing=SMALL_SPACING)
    b = make_phantom(5, shape=SMALL, spacing=SMALL_SPACING)
    c = make_phantom(6, shape=SMALL, spacing=SMALL_SPACING)
    for key in ("image", "mask", "subtype_labels", "slice_labels"):
        np.testing.assert_array_equal(a[key], b[key])
    assert a["subtypes"] == b["subtypes"]
    assert not np.array_equal(a["image"], c["image"])


def test_same_anatomy_with_and_without_lesion() -> None:
    pos = make_phantom(8, shape=SMALL, spacing=SMALL_SPACING, subtypes=["subdural"])
    neg = make_phantom(8, shape=SMALL, spacing=SMALL_SPACING, positive=False)
    # the seed fixes anatomy and noise; a subdural lesion only changes its own voxels
    outside = pos["mask"] == 0
    assert pos["mask"].any()
    np.testing.assert_array_equal(pos["image"][outside], neg["image"][outside])


def test_hu_ranges(anatomy, by_subtype) -> None:
    image = by_subtype["subdural"]["image"]
    assert np.median(image[~anatomy.head]) == pytest.approx(-1000, abs=3)
    assert np.median(image[anatomy.skull]) > 500
    assert np.percentile(image[anatomy.skull], 5) > 500
    brain = anatomy.parenchyma & (by_subtype["subdural"]["mask"] == 0)
    assert 20 <= np.median(image[brain]) <= 45
    assert 30 <= np.median(image[anatomy.grey]) <= 45
    assert 20 <= np.median(image[anatomy.white]) <= 35
    assert np.median(image[anatomy.ventricles]) < 15
    for name, ph in by_subtype.items():
        values = ph["image"][ph["mask"] > 0]
        assert 55 <= np.median(values) <= 85, name


def test_head_extent_varies_by_slice(anatomy) -> None:
    area = anatomy.head.sum(axis=(0, 1))
    mid = len(area) // 2
    assert area[0] < area[mid] and area[-1] < area[mid]
    assert area.argmax() not in (0, len(area) - 1)
    # the skull is thicker at the skull base than in the middle slices
    ring = anatomy.skull.sum(axis=(0, 1)) / np.maximum(area, 1)
    assert ring[1] > ring[mid]


def test_mask_inside_skull(by_subtype) -> None:
    for name, ph in by_subtype.items():
        image, mask = ph["image"], ph["mask"].astype(bool)
        assert mask.any(), name
        bone = image > 300
        assert not (mask & bone).any(), name
        for z in np.flatnonzero(mask.any(axis=(0, 1))):
            inside = ndimage.binary_fill_holes(bone[:, :, z]) & ~bone[:, :, z]
            assert not (mask[:, :, z] & ~inside).any(), (name, z)


def test_slice_labels_match_mask(by_subtype) -> None:
    for name, ph in by_subtype.items():
        derived = ph["mask"].any(axis=(0, 1)).astype(int)
        np.testing.assert_array_equal(ph["slice_labels"], derived)
        k = SUBTYPES.index(name)
        np.testing.assert_array_equal(ph["subtype_labels"][:, k], derived)
        others = np.delete(ph["subtype_labels"], k, axis=1)
        assert not others.any()
        assert ph["subtypes"] == [name]


def test_mixed_subtypes_labels() -> None:
    ph = make_phantom(11, shape=SMALL, spacing=SMALL_SPACING, subtypes=["subdural", "intraparenchymal"])
    assert ph["subtypes"] == ["intraparenchymal", "subdural"]  # canonical order
    lab = ph["subtype_labels"]
    assert lab[:, SUBTYPES.index("subdural")].any() and lab[:, SUBTYPES.index("intraparenchymal")].any()
    np.testing.assert_array_equal(ph["slice_labels"], lab.any(axis=1).astype(int))
    np.testing.assert_array_equal(ph["slice_labels"], ph["mask"].any(axis=(0, 1)).astype(int))


def test_subtype_locations(anatomy, by_subtype) -> None:
    near_skull = ndimage.binary_dilation(anatomy.skull, structure=INPLANE)

    ivh = by_subtype["intraventricular"]["mask"].astype(bool)
    assert not (ivh & ~(anatomy.ventricles | anatomy.third_ventricle)).any()

    iph = by_subtype["intraparenchymal"]["mask"].astype(bool)
    assert not (iph & near_skull).any()
    assert not (iph & anatomy.ventricles).any()
    assert iph.sum(axis=(0, 1)).astype(bool).sum() >= 2  # spans several slices

    for name in ("subdural", "epidural"):
        m = by_subtype[name]["mask"].astype(bool)
        assert (m & near_skull).any(), name
        # every lesion slice touches the inner table
        for z in np.flatnonzero(m.any(axis=(0, 1))):
            assert (m[:, :, z] & near_skull[:, :, z]).any(), (name, z)
    n_sdh = by_subtype["subdural"]["slice_labels"].sum()
    n_edh = by_subtype["epidural"]["slice_labels"].sum()
    assert n_sdh >= 4 and n_sdh > n_edh

    sah = by_subtype["subarachnoid"]["mask"].astype(bool)
    csf_spaces = anatomy.sulci | anatomy.csf_layer | anatomy.fissure | anatomy.cisterns
    assert not (sah & ~csf_spaces).any()
    # thin: most voxels are on the lesion's boundary
    interior = ndimage.binary_erosion(sah, structure=INPLANE)
    assert interior.sum() < 0.2 * sah.sum()


@pytest.mark.parametrize("shape,spacing", [((48, 48, 6), (2.4, 2.4, 20.0)), ((32, 32, 3), (3.6, 3.6, 40.0))])
def test_every_subtype_nonempty_on_small_grids(shape, spacing) -> None:
    for seed in range(3):
        for name in SUBTYPES:
            ph = make_phantom(seed, shape=shape, spacing=spacing, subtypes=[name])
            assert ph["mask"].any(), (seed, name)


def test_negative_phantom() -> None:
    ph = make_phantom(2, shape=SMALL, spacing=SMALL_SPACING, positive=False)
    assert not ph["mask"].any()
    assert not ph["slice_labels"].any() and not ph["subtype_labels"].any()
    assert ph["subtypes"] == []
    assert not make_phantom(2, shape=SMALL, spacing=SMALL_SPACING, subtypes=[])["mask"].any()


def test_bad_arguments() -> None:
    with pytest.raises(HemwslInputError, match="subtypes.*intraventricular"):
        make_phantom(0, shape=SMALL, subtypes=["chronic"])
    with pytest.raises(HemwslInputError, match="shape"):
        make_phantom(0, shape=(8, 8, 4))
    with pytest.raises(HemwslInputError, match="spacing"):
        make_phantom(0, spacing=(1.0, 0.0, 5.0))
    with pytest.raises(HemwslInputError, match="seed"):
        make_phantom(-1)
    with pytest.raises(HemwslInputError, match="negative_fraction"):
        write_synthetic_ctich("unused", n_patients=2, negative_fraction=1.5)
    with pytest.raises(HemwslInputError, match="n_patients"):
        write_synthetic_ctich("unused", n_patients=0)


def _read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_write_synthetic_ctich(tmp_path) -> None:
    n = 8
    out = write_synthetic_ctich(tmp_path / "ctich", n_patients=n, seed=1, shape=SMALL, spacing=SMALL_SPACING)
    assert out == tmp_path / "ctich"
    rows = _read_csv(out / CTICH_CSV_NAME)
    with open(out / CTICH_CSV_NAME) as f:
        assert f.readline().strip() == ",".join(CTICH_CSV_HEADER)
    assert len(rows) == n * SMALL[2]

    n_negative = 0
    seen = np.zeros(len(SUBTYPES), dtype=int)
    for number in range(1, n + 1):
        img = nib.load(out / "ct_scans" / f"{number:03d}.nii.gz")
        msk = nib.load(out / "masks" / f"{number:03d}.nii.gz")
        assert img.get_data_dtype() == np.int16 and msk.get_data_dtype() == np.uint8
        assert img.shape == SMALL and msk.shape == SMALL
        np.testing.assert_allclose(img.header.get_zooms(), SMALL_SPACING)
        np.testing.assert_allclose(msk.affine, img.affine)
        mask = np.asarray(msk.dataobj)
        patient_rows = [r for r in rows if int(r["PatientNumber"]) == number]
        assert [int(r["SliceNumber"]) for r in patient_rows] == list(range(1, SMALL[2] + 1))
        any_slice = mask.any(axis=(0, 1)).astype(int)
        no_hem = np.array([int(r["No_Hemorrhage"]) for r in patient_rows])
        np.testing.assert_array_equal(no_hem, 1 - any_slice)
        sub = np.array([[int(r[c]) for c in CTICH_CSV_HEADER[2:7]] for r in patient_rows])
        np.testing.assert_array_equal(sub.any(axis=1).astype(int), any_slice)
        assert all(r["Fracture_Yes_No"] == "0" for r in patient_rows)
        seen += sub.any(axis=0)
        n_negative += int(not mask.any())
    assert n_negative == round(n * 0.25)
    assert (seen > 0).all()  # every subtype at least once

    demo = _read_csv(out / CTICH_DEMOGRAPHICS_NAME)
    assert [int(r["PatientNumber"]) for r in demo] == list(range(1, n + 1))
    assert all(r["Gender"] in ("Male", "Female") and 0 < int(r["Age"]) < 120 for r in demo)


def test_write_synthetic_ctich_matches_make_phantom_and_is_idempotent(tmp_path) -> None:
    kwargs = dict(n_patients=3, seed=2, shape=(48, 48, 6), spacing=(2.4, 2.4, 20.0), negative_fraction=0.34)
    a = write_synthetic_ctich(tmp_path / "a", **kwargs)
    b = write_synthetic_ctich(tmp_path / "b", **kwargs)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 2 * 3 + 2
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    first = {p: p.read_bytes() for p in a.rglob("*") if p.is_file()}
    write_synthetic_ctich(a, **kwargs)  # overwrite in place
    assert {p: p.read_bytes() for p in a.rglob("*") if p.is_file()} == first
    # file 002 is make_phantom(seed * 1000 + 2) with the subtypes the writer chose
    mask = np.asarray(nib.load(a / "masks" / "002.nii.gz").dataobj)
    image = np.asarray(nib.load(a / "ct_scans" / "002.nii.gz").dataobj)
    rows = [r for r in _read_csv(a / CTICH_CSV_NAME) if r["PatientNumber"] == "2"]
    names = [s for s, c in zip(SUBTYPES, CTICH_CSV_HEADER[2:7]) if any(r[c] == "1" for r in rows)]
    ph = make_phantom(2002, shape=(48, 48, 6), spacing=(2.4, 2.4, 20.0), subtypes=names, positive=bool(names))
    np.testing.assert_array_equal(ph["image"], image)
    np.testing.assert_array_equal(ph["mask"], mask)
