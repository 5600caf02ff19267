"""Patient-level splits: hold-out, k-fold, per-fold train/val/test, and their JSON files."""

from __future__ import annotations

import json

import pytest

from hemwsl.constants import PATIENT, SLICE_LABELS
from hemwsl.data.splits import (
    apply_split,
    fold_split,
    kfold_patients,
    load_split,
    patient_positivity,
    save_split,
    split_patients,
)
from hemwsl.errors import HemwslInputError


def make_datalist(n_pos: int = 15, n_neg: int = 25, volumes_per_patient: int = 1) -> list[dict]:
    """Entries with only the keys splits use; patients P000.. with the first n_pos positive."""
    dl = []
    for i in range(n_pos + n_neg):
        for v in range(volumes_per_patient):
            labels = [0, 0, 0, 0]
            if i < n_pos and v == 0:
                labels[1] = 1
            dl.append({PATIENT: f"P{i:03d}", "image": f"P{i:03d}_{v}.nii.gz", SLICE_LABELS: labels, "positive": int(any(labels))})
    return dl


def _check_partition(split: dict, patients) -> None:
    parts = list(split.values())
    union = [p for part in parts for p in part]
    assert len(union) == len(set(union)), "a patient is in two parts"
    assert set(union) == set(patients)


def test_split_partition_and_sizes():
    dl = make_datalist()
    split = split_patients(dl)
    assert list(split) == ["train", "val", "test"]
    _check_partition(split, patient_positivity(dl))
    assert [len(v) for v in split.values()] == [28, 6, 6]
    assert all(v == sorted(v) for v in split.values())


def test_split_is_deterministic_and_seed_dependent():
    dl = make_datalist()
    assert split_patients(dl, seed=3) == split_patients(dl, seed=3)
    assert split_patients(dl, seed=3) != split_patients(dl, seed=4)


def test_split_stratified():
    dl = make_datalist(n_pos=15, n_neg=25)
    pos = {p for p, v in patient_positivity(dl).items() if v}
    for seed in range(5):
        split = split_patients(dl, seed=seed)
        counts = [len(pos & set(v)) for v in split.values()]
        assert counts == [11, 2, 2]  # 15 positives cut 0.7/0.15/0.15


def test_split_few_positive_patients_each_part_gets_one():
    dl = make_datalist(n_pos=3, n_neg=20)
    pos = {p for p, v in patient_positivity(dl).items() if v}
    split = split_patients(dl)
    assert all(pos & set(v) for v in split.values())
    _check_partition(split, patient_positivity(dl))
    split = split_patients(make_datalist(n_pos=2, n_neg=20))  # too few for all parts: earlier parts first
    assert [sum(p in {"P000", "P001"} for p in v) for v in split.values()] == [1, 1, 0]


def test_split_tiny_datalist_every_part_non_empty():
    for n_pos, n_neg in [(0, 3), (3, 0), (1, 2), (2, 1), (1, 3)]:
        dl = make_datalist(n_pos, n_neg)
        split = split_patients(dl)
        assert all(split.values()), (n_pos, n_neg, split)
        _check_partition(split, patient_positivity(dl))
    split = split_patients(make_datalist(1, 1))  # fewer patients than parts: no part can be forced
    _check_partition(split, ["P000", "P001"])


def test_split_custom_names_and_zero_fraction():
    dl = make_datalist()
    split = split_patients(dl, fractions=(0.8, 0.2, 0.0), names=("a", "b", "c"))
    assert list(split) == ["a", "b", "c"] and split["c"] == []
    assert [len(v) for v in split.values()] == [32, 8, 0]


def test_split_groups_volumes_of_one_patient():
    dl = make_datalist(n_pos=6, n_neg=6, volumes_per_patient=3)
    split = split_patients(dl)
    _check_partition(split, {e[PATIENT] for e in dl})
    sub = apply_split(dl, split["test"])
    assert len(sub) == 3 * len(split["test"])


@pytest.mark.parametrize(
    "kw, pattern",
    [
        ({"fractions": (0.5, 0.2, 0.2)}, "sum to 1"),
        ({"fractions": (0.5, 0.5)}, "same length"),
        ({"fractions": (1.2, -0.1, -0.1)}, ">= 0"),
        ({"names": ("a", "a", "b")}, "distinct"),
    ],
)
def test_split_bad_arguments(kw, pattern):
    with pytest.raises(HemwslInputError, match=pattern):
        split_patients(make_datalist(), **kw)


def test_split_empty_datalist():
    with pytest.raises(HemwslInputError, match="non-empty"):
        split_patients([])


def test_kfold_covers_each_patient_once():
    dl = make_datalist()
    folds = kfold_patients(dl, n_folds=5, seed=1)
    assert len(folds) == 5
    held_out = [p for f in folds for p in f["val"]]
    assert sorted(held_out) == sorted(patient_positivity(dl))
    pos = {p for p, v in patient_positivity(dl).items() if v}
    for f in folds:
        assert not set(f["train"]) & set(f["val"])
        assert set(f["train"]) | set(f["val"]) == set(patient_positivity(dl))
        assert len(pos & set(f["val"])) == 3  # 15 positives over 5 folds
    assert kfold_patients(dl, 5, seed=1) == folds
    assert kfold_patients(dl, 5, seed=2) != folds


def test_kfold_edge_cases():
    folds = kfold_patients(make_datalist(n_pos=2, n_neg=8), n_folds=5)  # fewer positives than folds
    assert sorted(p for f in folds for p in f["val"]) == [f"P{i:03d}" for i in range(10)]
    folds = kfold_patients(make_datalist(n_pos=3, n_neg=3), n_folds=5)  # no class reaches 5
    assert sorted(p for f in folds for p in f["val"]) == [f"P{i:03d}" for i in range(6)]
    with pytest.raises(HemwslInputError, match="more than the 4 patients"):
        kfold_patients(make_datalist(2, 2), n_folds=5)
    with pytest.raises(HemwslInputError, match=">= 2"):
        kfold_patients(make_datalist(), n_folds=1)


def test_fold_split():
    dl = make_datalist()
    folds = kfold_patients(dl, 5, seed=0)
    seen = []
    for k in range(5):
        s = fold_split(dl, 5, k, seed=0, val_fraction_of_train=0.15)
        assert list(s) == ["train", "val", "test"]
        assert s["test"] == folds[k]["val"]
        _check_partition(s, patient_positivity(dl))
        assert s["val"] and any(patient_positivity(dl)[p] for p in s["val"])
        assert len(s["val"]) == round(0.15 * 32)
        seen += s["test"]
    assert sorted(seen) == sorted(patient_positivity(dl))
    with pytest.raises(HemwslInputError, match="fold must be"):
        fold_split(dl, 5, 5)
    with pytest.raises(HemwslInputError, match="val_fraction_of_train"):
        fold_split(dl, 5, 0, val_fraction_of_train=1.0)
    assert fold_split(dl, 5, 0, val_fraction_of_train=0.0)["val"] == []


def test_save_load_split_and_folds(tmp_path):
    dl = make_datalist()
    split = split_patients(dl)
    save_split(split, tmp_path / "split.json")
    assert load_split(tmp_path / "split.json") == split
    folds = kfold_patients(dl, 3)
    save_split(folds, tmp_path / "folds.json")
    assert load_split(tmp_path / "folds.json") == folds


def test_load_split_errors(tmp_path):
    path = tmp_path / "split.json"
    path.write_text('{"train": ["P000", ')
    with pytest.raises(HemwslInputError, match=r"split\.json: corrupt split JSON"):
        load_split(path)
    path.write_text(json.dumps({"train": ["P000", "P001"], "test": ["P001"]}))
    with pytest.raises(HemwslInputError, match=r"split\.json: patient 'P001' is in both 'train' and 'test'"):
        load_split(path)
    path.write_text(json.dumps({"train": "P000"}))
    with pytest.raises(HemwslInputError, match=r"split\.json: part 'train'"):
        load_split(path)
    with pytest.raises(HemwslInputError, match=r"nothing\.json: split file not found"):
        load_split(tmp_path / "nothing.json")


def test_apply_split_and_unknown_patient():
    dl = make_datalist()
    sub = apply_split(dl, ["P003", "P001"])
    assert [e[PATIENT] for e in sub] == ["P001", "P003"]  # datalist order kept
    with pytest.raises(HemwslInputError, match=r"not in the datalist: 'P999'"):
        apply_split(dl, ["P001", "P999"])
    with pytest.raises(HemwslInputError, match="list of patient ids"):
        apply_split(dl, "P001")
