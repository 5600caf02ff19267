"""The datalist and splits of the real CT-ICH copy in ../shared/data/ct-ich (skipped when absent)."""

from __future__ import annotations

import pytest

from hemwsl.constants import PATIENT, SLICE_LABELS, SUBTYPE_LABELS
from hemwsl.data.datalist import ctich_datalist, datalist_stats
from hemwsl.data.splits import fold_split, kfold_patients, split_patients

from tests.conftest import REAL_DATA as CTICH_ROOT, real_data_available

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not real_data_available(), reason="real CT-ICH data not found at ../shared/data/ct-ich"),
]


@pytest.fixture(scope="module")
def datalist():
    return ctich_datalist(CTICH_ROOT)  # reads all 55 masks and checks them against the CSV


def test_ctich_counts(datalist):
    assert datalist_stats(datalist) == {"patients": 55, "slices": 2062, "positive_slices": 215, "positive_patients": 26}
    assert all(e["spacing"] == [0.5, 0.5, 5.0] for e in datalist)
    assert all(len(e[SUBTYPE_LABELS]) == len(e[SLICE_LABELS]) == e["num_slices"] for e in datalist)
    assert all(any(s) == bool(v) for e in datalist for s, v in zip(e[SUBTYPE_LABELS], e[SLICE_LABELS]))


def test_ctich_splits_are_disjoint(datalist):
    patients = {e[PATIENT] for e in datalist}
    split = split_patients(datalist, seed=0)
    parts = [set(v) for v in split.values()]
    assert sum(len(p) for p in parts) == len(patients) and set().union(*parts) == patients
    positive = {e[PATIENT] for e in datalist if e["positive"]}
    assert all(p & positive for p in parts)
    folds = kfold_patients(datalist, n_folds=5, seed=0)
    held_out = [p for f in folds for p in f["val"]]
    assert sorted(held_out) == sorted(patients)
    for f in folds:
        assert not set(f["train"]) & set(f["val"])
    s = fold_split(datalist, 5, 0)
    assert sum(len(v) for v in s.values()) == len(patients) and set().union(*map(set, s.values())) == patients
