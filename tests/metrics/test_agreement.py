"""Volume agreement (CCC, Bland-Altman, MAE, ...) and ABC/2 against hand values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hemwsl.errors import HemwslInputError
from hemwsl.metrics.agreement import abc2_volume_ml, agreement_by_size, lins_ccc, volume_agreement


def test_lins_ccc_hand_values():
    assert lins_ccc([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    # a constant offset of 1: cov = var = 2/3, CCC = (4/3) / (2/3 + 2/3 + 1) = 4/7
    assert lins_ccc([1, 2, 3], [2, 3, 4]) == pytest.approx(4 / 7)
    # perfectly correlated but twice as large: r = 1, CCC < 1
    assert lins_ccc([1, 2, 3], [2, 4, 6]) == pytest.approx(2 * (4 / 3) / (2 / 3 + 8 / 3 + 4))
    assert math.isnan(lins_ccc([1], [1]))


def test_volume_agreement_hand_values():
    t = [0.0, 0.0, 10.0, 20.0]
    p = [0.5, 2.0, 12.0, 18.0]
    a = volume_agreement(t, p)
    d = np.array([0.5, 2.0, 2.0, -2.0])
    assert a["n"] == 4 and a["n_negative"] == 2
    assert a["bias"] == pytest.approx(0.625) and a["mae"] == pytest.approx(1.625)
    assert a["loa_low"] == pytest.approx(0.625 - 1.96 * d.std(ddof=1))
    assert a["loa_high"] == pytest.approx(0.625 + 1.96 * d.std(ddof=1))
    assert a["within_tol"] == 1.0 and a["negatives_under_zero_ml"] == 0.5
    assert a["pearson_r"] == pytest.approx(np.corrcoef(t, p)[0, 1])
    assert volume_agreement([10.0], [17.0])["within_tol"] == 0.0
    assert math.isnan(volume_agreement([3.0, 4.0], [1.0, 2.0])["negatives_under_zero_ml"])
    by = agreement_by_size([0, 3, 10, 40], [0, 4, 12, 30])
    assert set(by) == {"all", "< 5 mL", "5-30 mL", ">= 30 mL"} and by["< 5 mL"]["n"] == 2
    with pytest.raises(HemwslInputError, match="length"):
        volume_agreement([1, 2], [1])
    with pytest.raises(HemwslInputError, match=">= 0"):
        volume_agreement([1, -2], [1, 2])
    with pytest.raises(HemwslInputError, match="finite"):
        volume_agreement([1, float("nan")], [1, 2])


def test_abc2_of_a_box_by_hand():
    """A 10 x 6 pixel rectangle on 4 slices (1 x 1 mm pixels, 5 mm slices): A is the diagonal between pixel
    centres + 1 pixel, B the perpendicular extent + 1 pixel, C = 4 slices x 5 mm."""
    m = np.zeros((20, 20, 6), bool)
    m[2:12, 3:9, 1:5] = True
    diag = math.hypot(9, 5)
    a = diag + 1
    b = 2 * 9 * 5 / diag + 1
    assert abc2_volume_ml(m, (1.0, 1.0, 5.0)) == pytest.approx(a * b * 20 / 2 / 1000)
    # slice weighting of Kothari et al.: a slice with 50% of the largest area counts 0.5, one with 10% 0
    m2 = m.copy()
    m2[:, :, 4] = False
    m2[2:7, 3:9, 4] = True  # 50%
    m2[2:3, 3:9, 5] = True  # 10%
    assert abc2_volume_ml(m2, (1.0, 1.0, 5.0)) == pytest.approx(a * b * (3 + 0.5) * 5 / 2 / 1000)
    assert abc2_volume_ml(np.zeros((4, 4, 2)), (1, 1, 1)) == 0.0
    with pytest.raises(HemwslInputError, match="3D"):
        abc2_volume_ml(np.zeros((4, 4)), (1, 1, 1))


def test_abc2_of_an_ellipsoid_is_close_to_its_volume():
    """ABC/2 was designed for ellipsoids: on a voxelised one (radii 30, 20, 10 mm at 1 mm) it is within the
    formula's known error (pi/6 * ABC vs ABC/2, and the 0/0.5/1 slice weights)."""
    x, y, z = np.mgrid[-40:41, -40:41, -15:16].astype(float)
    m = (x / 30) ** 2 + (y / 20) ** 2 + (z / 10) ** 2 <= 1
    true_ml = m.sum() / 1000
    est = abc2_volume_ml(m, (1.0, 1.0, 1.0))
    assert 0.6 * true_ml < est < 1.1 * true_ml


def test_positives_given_volume_by_hand():
    a = volume_agreement([0.0, 2.0, 5.0, 30.0, 0.0], [0.5, 0.0, 4.0, 0.01, 0.0])
    assert a["positives_given_volume"] == pytest.approx(2 / 3)  # 5 mL and 30 mL given some volume, 2 mL given none
    assert math.isnan(volume_agreement([0.0, 0.0], [1.0, 0.0])["positives_given_volume"])
