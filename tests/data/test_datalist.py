"""Datalists of the CT-ICH and generic layouts, built from small synthetic NIfTI files."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from hemwsl.constants import IMAGE, LABEL, PATIENT, SLICE_LABELS, SPACING, SUBTYPE_LABELS, SUBTYPES
from hemwsl.data.datalist import (
    DATALIST_KEYS,
    LAYOUTS,
    NUM_SLICES,
    POSITIVE,
    build_datalist,
    ctich_datalist,
    datalist_stats,
    generic_datalist,
    load_datalist,
    mask_slice_labels,
    save_datalist,
)
from hemwsl.errors import HemwslInputError

SHAPE = (16, 16, 6)
AFFINE = np.diag([0.5, 0.5, 5.0, 1.0])
CTICH_HEADER = [
    "PatientNumber",
    "SliceNumber",
    "Intraventricular",
    "Intraparenchymal",
    "Subarachnoid",
    "Epidural",
    "Subdural",
    "No_Hemorrhage",
    "Fracture_Yes_No",
]

# patient -> {slice index z (0-based): subtype index}
CASES = {
    "049": {2: 1, 3: 4},
    "050": {},
    "051": {0: 0, 5: 2},
}


def _write(array, path: Path, affine=AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array), affine), str(path))
    return path


def _ct(seed: int, shape=SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).integers(-20, 100, size=shape).astype(np.int16)


def _mask(positive_z, shape=SHAPE) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    for z in positive_z:
        m[5:8, 6:9, z] = 1
    return m


def write_ctich(root: Path, cases=CASES, shape=SHAPE, suffix=".nii.gz") -> Path:
    """A CT-ICH folder: ct_scans/, masks/ and the slice CSV, consistent with each other."""
    rows = []
    for i, (pid, pos) in enumerate(cases.items()):
        _write(_ct(i, shape), root / "ct_scans" / f"{pid}{suffix}")
        _write(_mask(pos, shape), root / "masks" / f"{pid}{suffix}")
        for z in range(shape[2]):
            subs = [0] * 5
            if z in pos:
                subs[pos[z]] = 1
            rows.append([str(int(pid)), z + 1, *subs, int(not any(subs)), 0])
    _write_csv(root / "hemorrhage_diagnosis_raw_ct.csv", CTICH_HEADER, rows)
    return root


def _write_csv(path: Path, header, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _read_csv(path: Path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def _expected(pos, depth=SHAPE[2]):
    labels = [int(z in pos) for z in range(depth)]
    subs = [[int(z in pos and pos[z] == k) for k in range(5)] for z in range(depth)]
    return labels, subs


# ------------------------------------------------------------------------------------------ CT-ICH
def test_ctich_labels_subtypes_and_metadata(tmp_path):
    root = write_ctich(tmp_path / "ctich")
    dl = ctich_datalist(root)
    assert [e[PATIENT] for e in dl] == ["049", "050", "051"]
    for e in dl:
        assert set(e) == set(DATALIST_KEYS)
        labels, subs = _expected(CASES[e[PATIENT]])
        assert e[SLICE_LABELS] == labels
        assert e[SUBTYPE_LABELS] == subs
        assert e[NUM_SLICES] == SHAPE[2]
        assert e[SPACING] == [0.5, 0.5, 5.0]
        assert e[POSITIVE] == int(any(labels))
        assert e[IMAGE] == str(root / "ct_scans" / f"{e[PATIENT]}.nii.gz")
        assert e[LABEL] == str(root / "masks" / f"{e[PATIENT]}.nii.gz")
    assert datalist_stats(dl) == {"patients": 3, "slices": 18, "positive_slices": 4, "positive_patients": 2}
    # the subtype order is that of hemwsl.constants.SUBTYPES: 049 slice 3 (z=2) is intraparenchymal
    assert SUBTYPES[dl[0][SUBTYPE_LABELS][2].index(1)] == "intraparenchymal"


def test_ctich_accepts_uncompressed_nifti(tmp_path):
    root = write_ctich(tmp_path / "ctich", suffix=".nii")
    dl = ctich_datalist(root)
    assert all(e[IMAGE].endswith(".nii") for e in dl)
    assert datalist_stats(dl)["positive_slices"] == 4


def test_ctich_check_masks_false_reads_no_mask(tmp_path):
    root = write_ctich(tmp_path / "ctich")
    (root / "masks" / "050.nii.gz").write_bytes(b"not a nifti file")
    with pytest.raises(HemwslInputError, match="050.nii.gz"):
        ctich_datalist(root)
    dl = ctich_datalist(root, check_masks=False)
    assert len(dl) == 3 and dl[1][LABEL].endswith("050.nii.gz")


def test_ctich_mask_csv_mismatch_raises_naming_patient_file_and_slices(tmp_path):
    root = write_ctich(tmp_path / "ctich")
    _write(_mask({2: 1, 3: 4, 4: 0}), root / "masks" / "049.nii.gz")  # extra positive slice z=4 -> SliceNumber 5
    with pytest.raises(HemwslInputError) as info:
        ctich_datalist(root)
    msg = str(info.value)
    assert "049" in msg and "049.nii.gz" in msg and "hemorrhage_diagnosis_raw_ct.csv" in msg
    assert "slice(s) 5 " in msg


def test_ctich_mismatch_warn_keeps_csv_labels(tmp_path):
    root = write_ctich(tmp_path / "ctich")
    _write(_mask({}), root / "masks" / "051.nii.gz")  # mask empty, CSV positive on slices 1 and 6
    with pytest.warns(UserWarning, match="051"):
        dl = ctich_datalist(root, on_mismatch="warn")
    assert dl[2][SLICE_LABELS] == _expected(CASES["051"])[0]
    with pytest.raises(HemwslInputError, match="on_mismatch"):
        ctich_datalist(root, on_mismatch="ignore")


def test_ctich_csv_patient_without_scan(tmp_path):
    root = write_ctich(tmp_path / "ctich")
    (root / "ct_scans" / "050.nii.gz").unlink()
    with pytest.raises(HemwslInputError, match=r"hemorrhage_diagnosis_raw_ct\.csv.*\[50\].*no scan"):
        ctich_datalist(root)


def test_ctich_scan_without_csv_rows(tmp_path):
    root = write_ctich(tmp_path / "ctich")
    _write(_ct(9), root / "ct_scans" / "077.nii.gz")
    _write(_mask({}), root / "masks" / "077.nii.gz")
    with pytest.raises(HemwslInputError, match=r"no slice rows.*077\.nii\.gz"):
        ctich_datalist(root)


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (lambda rows: [r for r in rows if not (r[0] == "50" and r[1] == "6")], r"patient 050: 5 slice row\(s\).*missing slice\(s\) \[6\]"),
        (lambda rows: rows + [["50", "7", 0, 0, 0, 0, 0, 1, 0]], r"patient 050: 7 slice row\(s\).*beyond the volume \[7\]"),
        (lambda rows: rows + [rows[0]], r"patient 49 slice 1 is listed twice"),
        (lambda rows: [r[:2] + ["x"] + r[3:] if r[0] == "51" and r[1] == "2" else r for r in rows], r"Intraventricular.*'x'"),
        (lambda rows: [r[:7] + ["1"] + r[8:] if r[0] == "49" and r[1] == "3" else r for r in rows], r"No_Hemorrhage=1 contradicts"),
        (lambda rows: [[r[0], "0", *r[2:]] if r is rows[0] else r for r in rows], r"SliceNumber.*'0'"),
    ],
    ids=["missing-slice", "extra-slice", "duplicate-row", "bad-value", "contradiction", "slice-zero"],
)
def test_ctich_csv_rows_must_match_volumes(tmp_path, edit, pattern):
    root = write_ctich(tmp_path / "ctich")
    csv_path = root / "hemorrhage_diagnosis_raw_ct.csv"
    header, rows = _read_csv(csv_path)
    _write_csv(csv_path, header, edit(rows))
    with pytest.raises(HemwslInputError, match=pattern) as info:
        ctich_datalist(root)
    assert "hemorrhage_diagnosis_raw_ct.csv" in str(info.value)


def test_ctich_csv_missing_column_and_missing_csv(tmp_path):
    root = write_ctich(tmp_path / "ctich")
    csv_path = root / "hemorrhage_diagnosis_raw_ct.csv"
    header, rows = _read_csv(csv_path)
    _write_csv(csv_path, header[:7] + header[8:], [r[:7] + r[8:] for r in rows])
    with pytest.raises(HemwslInputError, match=r"csv: missing column\(s\) \['No_Hemorrhage'\]"):
        ctich_datalist(root)
    csv_path.unlink()
    with pytest.raises(HemwslInputError, match=r"hemorrhage_diagnosis_raw_ct\.csv: slice-label CSV not found"):
        ctich_datalist(root)


def test_ctich_missing_folders(tmp_path):
    with pytest.raises(HemwslInputError, match="nowhere: CT-ICH dataset folder not found"):
        ctich_datalist(tmp_path / "nowhere")
    root = write_ctich(tmp_path / "ctich")
    for p in (root / "masks").iterdir():
        p.unlink()
    (root / "masks").rmdir()
    with pytest.raises(HemwslInputError, match="masks: folder of masks not found"):
        ctich_datalist(root)
    assert all(e[LABEL] is None for e in ctich_datalist(root, check_masks=False))


def test_ctich_missing_mask(tmp_path):
    root = write_ctich(tmp_path / "ctich")
    (root / "masks" / "051.nii.gz").unlink()
    with pytest.raises(HemwslInputError, match="no mask for patient 051"):
        ctich_datalist(root)


def test_ctich_corrupt_scan_named(tmp_path):
    root = write_ctich(tmp_path / "ctich")
    (root / "ct_scans" / "050.nii.gz").write_bytes(b"\x1f\x8b garbage garbage garbage")
    with pytest.raises(HemwslInputError, match=r"050\.nii\.gz: cannot read as NIfTI"):
        ctich_datalist(root)


def test_ctich_2d_scan_named(tmp_path):
    root = write_ctich(tmp_path / "ctich")
    _write(_ct(0)[:, :, 0], root / "ct_scans" / "049.nii.gz")
    with pytest.raises(HemwslInputError, match=r"049\.nii\.gz: expected a 3D volume, got 2D"):
        ctich_datalist(root)


def test_ctich_mask_shape_and_affine_mismatch(tmp_path):
    root = write_ctich(tmp_path / "ctich")
    _write(_mask({2: 1, 3: 4}, (16, 15, 6)), root / "masks" / "049.nii.gz")
    with pytest.raises(HemwslInputError, match=r"masks/049\.nii\.gz: mask shape \(16, 15, 6\) does not match image .*049\.nii\.gz"):
        ctich_datalist(root)
    root = write_ctich(tmp_path / "ctich2")
    _write(_mask({2: 1, 3: 4}), root / "masks" / "049.nii.gz", affine=np.diag([0.5, 0.5, 2.5, 1.0]))
    with pytest.raises(HemwslInputError, match=r"masks/049\.nii\.gz: mask affine does not match"):
        ctich_datalist(root)


def test_ctich_duplicate_nii_and_niigz(tmp_path):
    root = write_ctich(tmp_path / "ctich")
    _write(_ct(0), root / "ct_scans" / "049.nii")
    with pytest.raises(HemwslInputError, match="two files for one volume"):
        ctich_datalist(root)


# ------------------------------------------------------------------------------------------ generic
def write_generic(root: Path, cases=CASES, with_labels=("049", "050", "051")) -> tuple[Path, Path]:
    img_dir, lab_dir = root / "images", root / "labels"
    for i, (pid, pos) in enumerate(cases.items()):
        _write(_ct(i), img_dir / f"case_{pid}.nii.gz")
        if pid in with_labels:
            _write(_mask(pos), lab_dir / f"case_{pid}.nii.gz")
    lab_dir.mkdir(parents=True, exist_ok=True)
    return img_dir, lab_dir


def _generic_csv(path: Path, cases=CASES, subtypes=True, names=None) -> Path:
    header = ["patient", "slice", "any"] + (list(SUBTYPES) if subtypes else [])
    rows = []
    for pid, pos in cases.items():
        labels, subs = _expected(pos)
        for z in range(SHAPE[2]):
            rows.append([(names or {}).get(pid, f"case_{pid}"), z + 1, labels[z], *(subs[z] if subtypes else [])])
    return _write_csv(path, header, rows)


def test_generic_mask_derived_labels(tmp_path):
    img_dir, lab_dir = write_generic(tmp_path)
    dl = generic_datalist(img_dir, lab_dir)
    assert [e[PATIENT] for e in dl] == ["case_049", "case_050", "case_051"]
    for e, (pid, pos) in zip(dl, CASES.items()):
        assert e[SLICE_LABELS] == _expected(pos)[0]
        assert e[SUBTYPE_LABELS] is None
        assert e[LABEL] == str(lab_dir / f"case_{pid}.nii.gz")
        assert e[SPACING] == [0.5, 0.5, 5.0] and e[NUM_SLICES] == 6
    assert datalist_stats(dl) == {"patients": 3, "slices": 18, "positive_slices": 4, "positive_patients": 2}


def test_generic_images_only_have_no_labels(tmp_path):
    img_dir, _ = write_generic(tmp_path)
    dl = generic_datalist(img_dir)
    assert all(e[LABEL] is None and e[SLICE_LABELS] is None and e[SUBTYPE_LABELS] is None for e in dl)
    assert all(e[POSITIVE] == 0 for e in dl)
    assert datalist_stats(dl)["positive_slices"] == 0


def test_generic_partial_labels(tmp_path):
    img_dir, lab_dir = write_generic(tmp_path, with_labels=("049",))
    dl = generic_datalist(img_dir, lab_dir)
    assert dl[0][SLICE_LABELS] == _expected(CASES["049"])[0]
    assert dl[1][LABEL] is None and dl[1][SLICE_LABELS] is None


def test_generic_csv_with_subtypes_and_zero_padding(tmp_path):
    img_dir, _ = write_generic(tmp_path)
    # ids given as file names, and as numbers without zero padding for stems that are numbers
    csv_path = _generic_csv(tmp_path / "slices.csv", names={"049": "case_049.nii.gz"})
    dl = generic_datalist(img_dir, slice_csv=csv_path)
    for e, pos in zip(dl, CASES.values()):
        labels, subs = _expected(pos)
        assert e[SLICE_LABELS] == labels and e[SUBTYPE_LABELS] == subs and e[LABEL] is None
    numbered = tmp_path / "numbered"
    for i, pid in enumerate(CASES):
        _write(_ct(i), numbered / f"{pid}.nii")
    csv_path = _generic_csv(tmp_path / "numbered.csv", subtypes=False, names={p: str(int(p)) for p in CASES})
    dl = generic_datalist(numbered, slice_csv=csv_path)
    assert [e[PATIENT] for e in dl] == list(CASES) and dl[0][SUBTYPE_LABELS] is None
    assert datalist_stats(dl)["positive_slices"] == 4


def test_generic_csv_and_masks_agree(tmp_path):
    img_dir, lab_dir = write_generic(tmp_path)
    dl = generic_datalist(img_dir, lab_dir, _generic_csv(tmp_path / "s.csv"))
    assert dl[0][SUBTYPE_LABELS] == _expected(CASES["049"])[1]


def test_generic_csv_mask_mismatch(tmp_path):
    img_dir, lab_dir = write_generic(tmp_path)
    _write(_mask({1: 0}), lab_dir / "case_050.nii.gz")
    csv_path = _generic_csv(tmp_path / "s.csv")
    with pytest.raises(HemwslInputError, match=r"case_050\.nii\.gz: patient case_050: slice\(s\) 2 .*s\.csv"):
        generic_datalist(img_dir, lab_dir, csv_path)
    with pytest.warns(UserWarning, match="case_050"):
        dl = generic_datalist(img_dir, lab_dir, csv_path, on_mismatch="warn")
    assert dl[1][SLICE_LABELS] == [0] * 6  # the CSV's labels are kept


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (lambda rows: rows + [["case_999", 1, 0, 0, 0, 0, 0, 0]], r"s\.csv: rows for volume\(s\) \['case_999'\] not found"),
        (lambda rows: [r for r in rows if not (r[0] == "case_051" and r[1] == 3)], r"s\.csv: patient case_051: 5 slice row\(s\)"),
        (lambda rows: [r[:2] + [0] + r[3:] if r[0] == "case_049" and r[1] == 3 else r for r in rows], r"any=0 but subtype"),
    ],
    ids=["unknown-volume", "missing-slice", "any-contradiction"],
)
def test_generic_csv_must_match_volumes(tmp_path, edit, pattern):
    img_dir, _ = write_generic(tmp_path)
    header = ["patient", "slice", "any", *SUBTYPES]
    rows = []
    for pid, pos in CASES.items():
        labels, subs = _expected(pos)
        rows += [[f"case_{pid}", z + 1, labels[z], *subs[z]] for z in range(6)]
    csv_path = _write_csv(tmp_path / "s.csv", header, edit(rows))
    with pytest.raises(HemwslInputError, match=pattern):
        generic_datalist(img_dir, slice_csv=csv_path)


def test_generic_csv_partial_subtypes_and_missing_columns(tmp_path):
    img_dir, _ = write_generic(tmp_path)
    csv_path = _write_csv(tmp_path / "s.csv", ["patient", "slice", "any", "subdural"], [["case_049", 1, 0, 0]])
    with pytest.raises(HemwslInputError, match=r"s\.csv: subtype columns must be all or none"):
        generic_datalist(img_dir, slice_csv=csv_path)
    csv_path = _write_csv(tmp_path / "t.csv", ["patient", "z", "any"], [["case_049", 1, 0]])
    with pytest.raises(HemwslInputError, match=r"t\.csv: no slice column"):
        generic_datalist(img_dir, slice_csv=csv_path)
    with pytest.raises(HemwslInputError, match=r"missing\.csv: slice-label CSV not found"):
        generic_datalist(img_dir, slice_csv=tmp_path / "missing.csv")


def test_generic_bad_inputs(tmp_path):
    img_dir, lab_dir = write_generic(tmp_path)
    _write(_mask({}), lab_dir / "orphan.nii.gz")
    with pytest.raises(HemwslInputError, match=r"orphan\.nii\.gz.*no image of the same name"):
        generic_datalist(img_dir, lab_dir)
    (lab_dir / "orphan.nii.gz").unlink()
    _write(_mask({}, (16, 16, 5)), lab_dir / "case_050.nii.gz")
    with pytest.raises(HemwslInputError, match=r"case_050\.nii\.gz: mask shape \(16, 16, 5\) does not match"):
        generic_datalist(img_dir, lab_dir)
    _write(np.full((16, 16, 6), 0.5, np.float32), lab_dir / "case_050.nii.gz")
    with pytest.raises(HemwslInputError, match=r"case_050\.nii\.gz: mask values must be integer"):
        generic_datalist(img_dir, lab_dir)
    with pytest.raises(HemwslInputError, match="image folder not found"):
        generic_datalist(tmp_path / "nothing")
    with pytest.raises(HemwslInputError, match="label folder not found"):
        generic_datalist(img_dir, tmp_path / "nothing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(HemwslInputError, match=r"empty: no NIfTI files matching"):
        generic_datalist(empty)


def test_generic_pattern_selects_files(tmp_path):
    img_dir, _ = write_generic(tmp_path)
    dl = generic_datalist(img_dir, pattern="*049*")
    assert [e[PATIENT] for e in dl] == ["case_049"]


def test_generic_dicom_series_folder(tmp_path):
    itk = pytest.importorskip("itk", reason="itk is needed to write and read DICOM series")
    from tests.data.test_io import write_dicom_series

    img_dir = tmp_path / "images"
    arr = _ct(3, (12, 10, 4))
    write_dicom_series(itk, arr, img_dir / "dcm_case", spacing=(0.7, 0.8, 2.5))
    _write(_ct(4), img_dir / "nii_case.nii.gz")
    lab_dir = tmp_path / "labels"
    _write(_mask({1: 0}, (12, 10, 4)), lab_dir / "dcm_case.nii.gz", affine=np.diag([-0.7, -0.8, 2.5, 1.0]))
    dl = generic_datalist(img_dir, lab_dir)
    assert [e[PATIENT] for e in dl] == ["dcm_case", "nii_case"]
    dcm = dl[0]
    assert dcm[IMAGE] == str(img_dir / "dcm_case") and dcm[NUM_SLICES] == 4
    assert np.allclose(dcm[SPACING], [0.7, 0.8, 2.5])
    assert dcm[SLICE_LABELS] == [0, 1, 0, 0]


# ------------------------------------------------------------------------------------------ dispatch
def test_build_datalist_dispatch_and_unknown_layout(tmp_path):
    root = write_ctich(tmp_path / "ctich")
    assert build_datalist("ct-ich", root) == ctich_datalist(root)
    img_dir, lab_dir = write_generic(tmp_path / "gen")
    assert build_datalist("generic", img_dir, label_dir=lab_dir) == generic_datalist(img_dir, lab_dir)
    assert set(LAYOUTS) == {"ct-ich", "generic"}
    with pytest.raises(HemwslInputError, match=r"unknown layout 'bhsd'; accepted values: ct-ich, generic"):
        build_datalist("bhsd", root)


def test_mask_slice_labels():
    m = np.zeros((4, 4, 3), np.uint8)
    m[0, 0, 1] = 2
    assert mask_slice_labels(m) == [0, 1, 0]
    assert mask_slice_labels(np.asfortranarray(m)) == [0, 1, 0]


# ------------------------------------------------------------------------------------------ JSON
def test_save_load_roundtrip(tmp_path):
    dl = ctich_datalist(write_ctich(tmp_path / "ctich"))
    path = tmp_path / "out" / "datalist.json"
    save_datalist(dl, path)
    assert load_datalist(path) == dl
    assert json.loads(path.read_text())[0][IMAGE] == dl[0][IMAGE]  # paths stored as given
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp")]


def test_load_corrupt_json_names_file(tmp_path):
    path = tmp_path / "datalist.json"
    path.write_text('[{"image": "a.nii.gz", ')
    with pytest.raises(HemwslInputError, match=r"datalist\.json: corrupt datalist JSON"):
        load_datalist(path)
    with pytest.raises(HemwslInputError, match=r"absent\.json: datalist file not found"):
        load_datalist(tmp_path / "absent.json")


def test_load_validates_entries(tmp_path):
    dl = ctich_datalist(write_ctich(tmp_path / "ctich"))
    path = tmp_path / "datalist.json"
    bad = [dict(dl[0])]
    del bad[0][SPACING]
    path.write_text(json.dumps(bad))
    with pytest.raises(HemwslInputError, match=r"datalist\.json: entry 0: missing key\(s\) \['spacing'\]"):
        load_datalist(path)
    bad = [dict(dl[0], slice_labels=[0, 1])]
    path.write_text(json.dumps(bad))
    with pytest.raises(HemwslInputError, match=r"entry 0 \(patient '049'\): 'slice_labels' must be null or 6 values"):
        load_datalist(path)
    path.write_text(json.dumps({"training": dl}))
    with pytest.raises(HemwslInputError, match="must be a JSON list"):
        load_datalist(path)
    with pytest.raises(HemwslInputError, match="positive"):
        save_datalist([dict(dl[1], positive=1)], tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


def test_no_warnings_on_clean_data(tmp_path):
    root = write_ctich(tmp_path / "ctich")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ctich_datalist(root)


def test_match_patient_spellings():
    from hemwsl.data.datalist import match_patient

    assert match_patient("003", ["003", "3"]) == "003"          # itself first
    assert match_patient("3", ["003", "010"]) == "003"          # zero padding differs
    assert match_patient("03", {"3": 1, "4": 2}) == "3"
    assert match_patient("3", ["003", "0003"]) is None           # two spellings of patient 3: no guess
    assert match_patient("p3", ["p03", "3"]) is None              # only numbers are matched by value
    assert match_patient("7", ["003"]) is None
