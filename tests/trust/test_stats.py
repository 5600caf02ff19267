"""Normality-then-test logic and effect sizes, against hand computations and scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from hemwsl.errors import HemwslInputError
from hemwsl.trust.stats import compare_groups, compare_paired, holm, shapiro_p


def test_paired_normal_uses_t_and_cohen_dz():
    rng = np.random.default_rng(0)
    a = rng.normal(1.0, 1.0, 30)
    b = a - rng.normal(0.5, 1.0, 30)
    d = a - b
    assert stats.shapiro(d).pvalue > 0.05
    res = compare_paired(a, b)
    assert res.test == "paired t" and res.effect_name == "cohen dz"
    ref = stats.ttest_rel(a, b)
    assert res.statistic == pytest.approx(ref.statistic) and res.p == pytest.approx(ref.pvalue)
    assert res.effect == pytest.approx(d.mean() / d.std(ddof=1))
    assert res.n == 30


def test_paired_rank_biserial_by_hand():
    # d = a - b = [1, -2, 3, 4]: ranks 1..4, W+ = 1 + 3 + 4 = 8, W- = 2, r = (8 - 2) / 10
    a, b = np.array([2.0, 0.0, 5.0, 9.0]), np.array([1.0, 2.0, 2.0, 5.0])
    res = compare_paired(a, b, test="wilcoxon")
    assert res.test == "wilcoxon" and res.effect == pytest.approx(0.6)
    assert res.statistic == pytest.approx(2.0)
    assert res.p == pytest.approx(stats.wilcoxon(a, b).pvalue)


def test_paired_skewed_differences_use_wilcoxon():
    d = np.array([0.1, 0.2, 0.15, 0.3, 0.12, 0.25, 0.18, 5.0, 0.22, 0.11, 8.0, 0.17])
    assert stats.shapiro(d).pvalue < 0.05
    res = compare_paired(d, np.zeros_like(d))
    assert res.test == "wilcoxon" and res.effect == pytest.approx(1.0)  # all differences positive
    assert res.normality_p == pytest.approx(stats.shapiro(d).pvalue)


def test_paired_nan_pairs_are_dropped_and_degenerate_cases():
    res = compare_paired([1.0, np.nan, 3.0, 4.0], [0.0, 1.0, np.nan, 2.0], test="t")
    assert res.n == 2 and res.mean_a == pytest.approx(2.5)
    none = compare_paired([1.0, 2.0], [1.0, 2.0])
    assert none.test == "none" and np.isnan(none.p)
    with pytest.raises(HemwslInputError, match="length"):
        compare_paired([1, 2], [1])


def test_groups_by_hand():
    a, b = np.array([1.0, 2.0, 3.0]), np.array([2.0, 3.0, 4.0])
    t = compare_groups(a, b, test="t")
    assert t.test == "welch t" and t.effect == pytest.approx(-1.0)  # means 2 vs 3, pooled sd 1
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert t.statistic == pytest.approx(ref.statistic) and t.p == pytest.approx(ref.pvalue)
    u = compare_groups([1.0, 2.0, 3.0], [4.0, 5.0], test="mannwhitney")
    assert u.test == "mann-whitney u" and u.statistic == 0 and u.effect == pytest.approx(-1.0)
    assert u.p == pytest.approx(stats.mannwhitneyu([1, 2, 3], [4, 5]).pvalue)


def test_groups_auto_choice():
    q = stats.norm.ppf((np.arange(25) + 0.5) / 25)  # exact normal quantiles: Shapiro cannot reject
    normal = compare_groups(q, q + 1.0)
    assert normal.test == "welch t" and normal.effect == pytest.approx(-1.0 / q.std(ddof=1))
    rng = np.random.default_rng(1)
    skew = np.array([0.1, 0.2, 0.1, 0.3, 0.2, 9.0, 0.1, 0.2, 7.0, 0.15])
    assert shapiro_p(skew) < 0.05
    assert compare_groups(skew, rng.normal(0, 1, 10)).test == "mann-whitney u"
    assert compare_groups([1.0], [2.0, 3.0]).test == "none"


def test_holm_by_hand():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    out = holm([0.02, np.nan, 0.5])
    assert out[0] == pytest.approx(0.04) and np.isnan(out[1]) and out[2] == pytest.approx(0.5)
