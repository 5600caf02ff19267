"""Can the explanation be trusted? Faithfulness, region importance and their statistics.

* :mod:`hemwsl.trust.faithfulness`: faithfulness correlation (Bhatt et al. 2020, Quantus), deletion /
  insertion curves and AUC (Petsiuk et al. 2018), baseline registry :data:`BASELINES`.
* :mod:`hemwsl.trust.regions`: hemorrhage / perihematomal ring / brain / background masks and the
  attribution inside them.
* :mod:`hemwsl.trust.stats`: Shapiro-Wilk, then t-test or rank test, with effect sizes.
* :mod:`hemwsl.trust.report`: the report over a datalist (``hemwsl trust``).
"""

from __future__ import annotations

from hemwsl.trust.faithfulness import (
    BASELINES,
    DeletionInsertion,
    FaithfulnessCorrelation,
    blur_baseline,
    curve_auc,
    deletion_insertion_curves,
    faithfulness_correlation,
    get_baseline,
    mean_baseline,
    zero_baseline,
)
from hemwsl.trust.regions import REGIONS, RegionImportance, region_importance, region_masks
from hemwsl.trust.stats import TestResult, compare_groups, compare_paired, holm

__all__ = [
    "BASELINES",
    "REGIONS",
    "DeletionInsertion",
    "FaithfulnessCorrelation",
    "RegionImportance",
    "TestResult",
    "blur_baseline",
    "compare_groups",
    "compare_paired",
    "curve_auc",
    "deletion_insertion_curves",
    "faithfulness_correlation",
    "get_baseline",
    "holm",
    "mean_baseline",
    "region_importance",
    "region_masks",
    "zero_baseline",
]
