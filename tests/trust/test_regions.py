"""Region masks and region importance on hand-built masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hemwsl.errors import HemwslInputError
from hemwsl.trust.regions import REGIONS, RegionImportance, region_importance, region_masks, scaled_spacing


def _case():
    lesion = np.zeros((9, 9), np.uint8)
    lesion[4, 4] = 1
    brain = np.zeros((9, 9), np.uint8)
    brain[1:8, 1:8] = 1
    return lesion, brain


def test_ring_uses_the_spacing_in_mm():
    lesion, brain = _case()
    # rows 1 mm apart, columns 2 mm apart: within 2 mm are (+-1, 0), (+-2, 0) and (0, +-1)
    r = region_masks(lesion, brain, spacing=(1.0, 2.0), ring_mm=2.0)
    ring = {tuple(p) for p in np.argwhere(r["perihematomal"])}
    assert ring == {(3, 4), (5, 4), (2, 4), (6, 4), (4, 3), (4, 5)}
    assert r["hemorrhage"].sum() == 1
    assert r["brain"].sum() == 49 - 1 - 6
    assert r["background"].sum() == 81 - 49
    # disjoint and covering
    total = sum(r[name].astype(int) for name in REGIONS)
    assert (total == 1).all()


def test_ring_stays_inside_the_brain_and_lesion_outside_brain_is_kept():
    lesion = np.zeros((6, 6), bool)
    lesion[0, 0] = True  # an extra-axial bleed cut off by skull stripping
    brain = np.zeros((6, 6), bool)
    brain[1:, 1:] = True
    r = region_masks(lesion, brain, spacing=(1, 1), ring_mm=1.5)
    assert r["hemorrhage"][0, 0]
    assert {tuple(p) for p in np.argwhere(r["perihematomal"])} == {(1, 1)}  # (0,1), (1,0) are not brain


def test_importance_by_hand():
    lesion, brain = _case()
    a = np.zeros((9, 9))
    a[4, 4] = 8.0
    a[2, 2] = 1.0  # rest of the brain
    a[0, 0] = -1.0  # background
    r = region_masks(lesion, brain, spacing=(1.0, 2.0), ring_mm=2.0)
    imp = region_importance(torch.as_tensor(a), r)
    scale = 10.0 / 81
    assert imp["mean"]["hemorrhage"] == pytest.approx(8.0)
    assert imp["mean"]["perihematomal"] == pytest.approx(0.0)
    assert imp["mean"]["brain"] == pytest.approx(1.0 / 42)
    assert imp["mean"]["background"] == pytest.approx(-1.0 / 32)
    assert imp["relative"]["hemorrhage"] == pytest.approx(8.0 / scale)
    assert imp["relative"]["background"] == pytest.approx(-1.0 / 32 / scale)
    assert imp["pixels"] == {"hemorrhage": 1, "perihematomal": 6, "brain": 42, "background": 32}


def test_empty_regions_are_nan():
    brain = np.ones((5, 5))
    r = region_masks(np.zeros((5, 5)), brain)
    assert r["hemorrhage"].sum() == 0 and r["perihematomal"].sum() == 0
    imp = region_importance(np.ones((5, 5)), r)
    assert np.isnan(imp["mean"]["hemorrhage"]) and np.isnan(imp["relative"]["perihematomal"])
    assert imp["relative"]["brain"] == pytest.approx(1.0)
    zero = region_importance(np.zeros((5, 5)), r)
    assert zero["mean"]["brain"] == 0.0 and np.isnan(zero["relative"]["brain"])


def test_class_and_spacing_helpers():
    lesion, brain = _case()
    out = RegionImportance(ring_mm=2.0)({"m": np.ones((9, 9))}, lesion, brain, (1.0, 2.0))
    assert out["m"]["relative"]["hemorrhage"] == pytest.approx(1.0)
    assert scaled_spacing([0.5, 0.5, 5.0], (512, 512, 30), (128, 128)) == (2.0, 2.0)


def test_bad_inputs():
    lesion, brain = _case()
    with pytest.raises(HemwslInputError, match="ring_mm"):
        region_masks(lesion, brain, ring_mm=0)
    with pytest.raises(HemwslInputError, match="spacing"):
        region_masks(lesion, brain, spacing=(0, 1))
    with pytest.raises(HemwslInputError, match="differ in shape"):
        region_masks(lesion, brain[:5])
