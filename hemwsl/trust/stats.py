"""Hypothesis tests with effect sizes: normality first, then a parametric or a rank test (scipy).

* :func:`compare_paired` (two measurements of the same cases, e.g. the attribution inside the
  hemorrhage vs inside the rest of the brain): Shapiro-Wilk (Shapiro & Wilk, Biometrika 1965) on the
  paired differences; normal -> paired t-test with Cohen's ``d_z = mean(d) / sd(d)`` (Cohen 1988),
  otherwise Wilcoxon signed-rank test (Wilcoxon 1945) with the matched-pairs rank-biserial correlation
  ``r = (W+ - W-) / (W+ + W-)`` (Kerby, Comprehensive Psychology 2014).
* :func:`compare_groups` (two independent groups, e.g. small vs large lesions): Shapiro-Wilk on each
  group; both normal -> Welch's t-test with Cohen's ``d`` (pooled standard deviation), otherwise
  Mann-Whitney U (Mann & Whitney 1947) with the rank-biserial correlation ``r = 2 U_a / (n_a n_b) - 1``
  (Wendt 1972; positive when ``a`` tends to be larger).
* :func:`holm` adjusts a family of p-values (Holm, Scand. J. Statist. 1979).

Policies: NaN values are dropped (pairwise for paired data). Shapiro-Wilk needs ``n >= 3``; with fewer
values the rank test is used; a test that cannot run (fewer than 2 values, or all differences zero)
returns NaN statistics and ``test = "none"``. Normality is accepted when Shapiro's ``p > alpha``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from hemwsl.errors import HemwslInputError

__all__ = ["TestResult", "compare_paired", "compare_groups", "holm", "shapiro_p"]


@dataclass(frozen=True)
class TestResult:
    """The outcome of one comparison.

    Attributes:
        test: ``"paired t"``, ``"wilcoxon"``, ``"welch t"``, ``"mann-whitney u"`` or ``"none"``.
        statistic: the test statistic (t, Wilcoxon's ``min(W+, W-)``, or ``U`` of the first sample).
        p: two-sided p-value.
        effect: the effect size.
        effect_name: ``"cohen dz"``, ``"rank-biserial"`` or ``"cohen d"``.
        n: number of pairs (paired) or ``n_a + n_b``.
        normality_p: Shapiro-Wilk p-value (the smallest of the two groups for unpaired data; NaN when
            not computed).
        mean_a, mean_b: means of the two samples (after dropping NaN).
        median_a, median_b: medians.
    """

    test: str
    statistic: float
    p: float
    effect: float
    effect_name: str
    n: int
    normality_p: float
    mean_a: float
    mean_b: float
    median_a: float
    median_b: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _vec(a: Any, name: str) -> np.ndarray:
    v = np.asarray(a, dtype=np.float64)
    if v.ndim != 1:
        raise HemwslInputError(f"{name} must be 1D, got shape {v.shape}")
    return v


def shapiro_p(values: Any) -> float:
    """Shapiro-Wilk p-value of ``values`` (NaN with fewer than 3 values or a constant sample)."""
    from scipy.stats import shapiro

    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 3 or np.ptp(v) == 0:
        return float("nan")
    return float(shapiro(v).pvalue)


def _summary(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    nan = float("nan")
    return {
        "mean_a": float(a.mean()) if a.size else nan,
        "mean_b": float(b.mean()) if b.size else nan,
        "median_a": float(np.median(a)) if a.size else nan,
        "median_b": float(np.median(b)) if b.size else nan,
    }


def compare_paired(a: Any, b: Any, alpha: float = 0.05, test: str = "auto") -> TestResult:
    """Paired comparison of ``a`` and ``b`` (same cases, same order); effect sizes are of ``a - b``.

    Args:
        a, b: 1D sequences of equal length; pairs with a NaN are dropped.
        alpha: Shapiro-Wilk level: differences count as normal when its ``p > alpha``.
        test: ``"auto"`` (normality decides), ``"t"`` or ``"wilcoxon"``.

    Returns:
        :class:`TestResult`.
    """
    from scipy.stats import ttest_rel, wilcoxon

    a, b = _vec(a, "a"), _vec(b, "b")
    if a.shape != b.shape:
        raise HemwslInputError(f"paired samples differ in length: {a.size} vs {b.size}")
    if test not in ("auto", "t", "wilcoxon"):
        raise HemwslInputError(f"unknown paired test {test!r}; accepted values: auto, t, wilcoxon")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    d = a - b
    n = int(d.size)
    norm_p = shapiro_p(d)
    summ = _summary(a, b)
    nan = float("nan")
    if n < 2 or not np.any(d != 0):
        return TestResult("none", nan, nan, nan, "none", n, norm_p, **summ)
    use_t = test == "t" or (test == "auto" and not math.isnan(norm_p) and norm_p > alpha)
    if use_t:
        res = ttest_rel(a, b)
        sd = float(d.std(ddof=1))
        dz = float(d.mean() / sd) if sd > 0 else nan
        return TestResult("paired t", float(res.statistic), float(res.pvalue), dz, "cohen dz", n, norm_p, **summ)
    res = wilcoxon(a, b)  # zero differences dropped (scipy's default "wilcox")
    from scipy.stats import rankdata

    nz = d[d != 0]
    ranks = rankdata(np.abs(nz))
    w_plus, w_minus = float(ranks[nz > 0].sum()), float(ranks[nz < 0].sum())
    r = (w_plus - w_minus) / (w_plus + w_minus)
    return TestResult("wilcoxon", float(res.statistic), float(res.pvalue), r, "rank-biserial", n, norm_p, **summ)


def compare_groups(a: Any, b: Any, alpha: float = 0.05, test: str = "auto") -> TestResult:
    """Comparison of two independent groups ``a`` and ``b``; effect sizes are of ``a`` relative to ``b``.

    Args:
        a, b: 1D sequences (NaN dropped).
        alpha: Shapiro-Wilk level for each group.
        test: ``"auto"``, ``"t"`` (Welch) or ``"mannwhitney"``.

    Returns:
        :class:`TestResult` (``normality_p`` is the smaller of the two groups' Shapiro p-values).
    """
    from scipy.stats import mannwhitneyu, ttest_ind

    a, b = _vec(a, "a"), _vec(b, "b")
    if test not in ("auto", "t", "mannwhitney"):
        raise HemwslInputError(f"unknown group test {test!r}; accepted values: auto, t, mannwhitney")
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    na, nb = int(a.size), int(b.size)
    pa, pb = shapiro_p(a), shapiro_p(b)
    norm_p = float(np.nanmin([pa, pb])) if not (math.isnan(pa) and math.isnan(pb)) else float("nan")
    summ = _summary(a, b)
    nan = float("nan")
    if na < 2 or nb < 2 or np.ptp(np.concatenate([a, b])) == 0:
        return TestResult("none", nan, nan, nan, "none", na + nb, norm_p, **summ)
    normal = not (math.isnan(pa) or math.isnan(pb)) and pa > alpha and pb > alpha
    if test == "t" or (test == "auto" and normal):
        res = ttest_ind(a, b, equal_var=False)
        pooled = math.sqrt(((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / (na + nb - 2))
        d = float((a.mean() - b.mean()) / pooled) if pooled > 0 else nan
        return TestResult("welch t", float(res.statistic), float(res.pvalue), d, "cohen d", na + nb, norm_p, **summ)
    res = mannwhitneyu(a, b, alternative="two-sided")
    r = 2.0 * float(res.statistic) / (na * nb) - 1.0
    return TestResult("mann-whitney u", float(res.statistic), float(res.pvalue), r, "rank-biserial", na + nb,
                      norm_p, **summ)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (NaN stay NaN and do not count in the family size)."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = idx.size
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    running = 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[j]))
        out[j] = running
    return out
