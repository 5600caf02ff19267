"""The ablation table of the weakly supervised segmentation pipeline (Ramananda & Sundaresan 2023, Table 2).

Rows are pipeline variants (CAM only; CAM + K-means; CAM + U-Net; CAM + K-means + U-Net; fully
supervised U-Net), each given as one volume Dice per test patient. The table reports, per row, the mean
+- sd over patients, a percentile-bootstrap 95% CI of the mean (patients resampled), and a paired t-test
(scipy ``ttest_rel``) and Wilcoxon signed-rank test against the previous row on their common patients.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hemwsl.errors import HemwslInputError

__all__ = ["ablation_rows", "ablation_markdown", "read_seg_metrics"]


def read_seg_metrics(files: Sequence[str | Path], metric: str = "dice", positive_only: bool = True) -> dict[str, float]:
    """Per-patient ``metric`` from ``metrics_test.csv`` files of ``bundles/ich_unet3d`` (one per fold)."""
    out: dict[str, float] = {}
    for f in files:
        p = Path(f)
        if not p.is_file():
            raise HemwslInputError(f"{p}: segmentation metrics CSV not found")
        with open(p, newline="") as fh:
            for r in csv.DictReader(fh):
                if positive_only and not int(float(r.get("gt_positive", 1))):
                    continue
                out[str(r["patient"])] = float(r[metric])
    return out


def ablation_rows(rows: Mapping[str, Mapping[str, float]], n_boot: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """Statistics of each row (in the given order) and tests against the previous row.

    Args:
        rows: ``{row name: {patient: value}}``, in table order.
        n_boot: bootstrap replicates of the CI of the mean.
        seed: bootstrap seed.
    """
    from scipy import stats

    from hemwsl.metrics import bootstrap_ci

    out: list[dict[str, Any]] = []
    prev: Mapping[str, float] | None = None
    for name, per in rows.items():
        vals = np.array([per[p] for p in sorted(per)], dtype=np.float64)
        vals = vals[~np.isnan(vals)]
        r: dict[str, Any] = {"row": name, "n": int(vals.size),
                             "mean": float(vals.mean()) if vals.size else math.nan,
                             "sd": float(vals.std(ddof=1)) if vals.size > 1 else math.nan,
                             "median": float(np.median(vals)) if vals.size else math.nan,
                             "ci": bootstrap_ci(vals, n_boot=n_boot, seed=seed) if vals.size > 1 else (math.nan,) * 2,
                             "t_p": math.nan, "wilcoxon_p": math.nan, "diff": math.nan, "n_paired": 0}
        if prev is not None:
            common = sorted(p for p in set(per) & set(prev) if not (math.isnan(per[p]) or math.isnan(prev[p])))
            d = np.array([per[p] - prev[p] for p in common], dtype=np.float64)
            r["n_paired"] = len(common)
            if d.size:
                r["diff"] = float(d.mean())
            if d.size > 1 and np.any(d != 0):
                r["t_p"] = float(stats.ttest_rel([per[p] for p in common], [prev[p] for p in common]).pvalue)
            if np.count_nonzero(d) >= 2:
                r["wilcoxon_p"] = float(stats.wilcoxon(d).pvalue)
        out.append(r)
        prev = per
    return out


def _f(v: float, d: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{d}f}"


def ablation_markdown(stats_rows: Sequence[Mapping[str, Any]], metric: str = "volume Dice") -> str:
    """The table of :func:`ablation_rows` as markdown."""
    lines = [f"| row | patients | {metric} mean +- sd | 95% CI | median | diff vs previous | paired t p | "
             "Wilcoxon p |", "|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(stats_rows):
        lo, hi = r["ci"]
        lines.append(f"| {r['row']} | {r['n']} | {_f(r['mean'])} +- {_f(r['sd'])} | [{_f(lo)}, {_f(hi)}] | "
                     f"{_f(r['median'])} | {'' if i == 0 else _f(r['diff'])} | "
                     f"{'' if i == 0 else _f(r['t_p'], 4)} | {'' if i == 0 else _f(r['wilcoxon_p'], 4)} |")
    return "\n".join(lines) + "\n"
