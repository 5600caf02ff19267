"""The ablation table: per-row statistics and tests against the previous row (scipy)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from hemwsl.errors import HemwslInputError
from hemwsl.reports.ablation import ablation_markdown, ablation_rows, read_seg_metrics


def test_rows_match_scipy():
    a = {"p1": 0.1, "p2": 0.2, "p3": 0.05, "p4": 0.3}
    b = {"p1": 0.3, "p2": 0.25, "p3": 0.2, "p4": 0.5, "p5": 0.9}  # p5 only in b: not paired
    rows = ablation_rows({"CAM only": a, "CAM + K-means": b}, n_boot=200)
    assert rows[0]["n"] == 4 and rows[0]["mean"] == pytest.approx(np.mean(list(a.values())))
    assert rows[0]["sd"] == pytest.approx(np.std(list(a.values()), ddof=1))
    assert np.isnan(rows[0]["t_p"])
    keys = sorted(a)
    assert rows[1]["n_paired"] == 4
    assert rows[1]["diff"] == pytest.approx(np.mean([b[k] - a[k] for k in keys]))
    assert rows[1]["t_p"] == pytest.approx(stats.ttest_rel([b[k] for k in keys], [a[k] for k in keys]).pvalue)
    assert rows[1]["wilcoxon_p"] == pytest.approx(stats.wilcoxon([b[k] - a[k] for k in keys]).pvalue)
    lo, hi = rows[1]["ci"]
    assert lo <= rows[1]["mean"] <= hi
    md = ablation_markdown(rows)
    assert "| CAM + K-means | 5 |" in md and md.count("\n") == 4


def test_read_seg_metrics(tmp_path):
    f = tmp_path / "metrics_test.csv"
    f.write_text("patient,gt_positive,dice\n001,1,0.5\n002,0,1.0\n")
    assert read_seg_metrics([f]) == {"001": 0.5}
    assert read_seg_metrics([f], positive_only=False) == {"001": 0.5, "002": 1.0}
    with pytest.raises(HemwslInputError, match="nowhere.csv"):
        read_seg_metrics([tmp_path / "nowhere.csv"])
