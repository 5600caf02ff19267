"""Evaluation metrics for the slice classifier: ROC/PR curves, AUROC, AP, thresholded scores, bootstrap CIs.

Everything is implemented in numpy (torch tensors are accepted and converted) and checked in the
tests against scikit-learn, which serves as the reference only. Conventions used throughout:

* ``y_true`` holds binary labels (0/1 or bool), ``y_score`` the predicted score of the positive class
  (a probability when fixed thresholds such as 0.5 are meant to be meaningful).
* A sample is predicted positive when ``score >= threshold``.
* Ties in the scores are handled as scikit-learn does: tied samples enter the curves together, as one point.
* AUROC, AP and threshold selection are undefined when ``y_true`` holds only one class; they then return
  NaN rather than raising, so that macro means can skip such classes (scikit-learn raises for AUROC,
  returns 1.0 for AP when all samples are positive and warns and returns 0.0 when none is).
* Ratios with a zero denominator (precision without predicted positives, ...) are 0.0, as scikit-learn's
  ``zero_division=0``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric
from monai.utils import Average, look_up_option

from hemwsl.constants import SUBTYPES
from hemwsl.errors import HemwslInputError

__all__ = [
    "roc_curve",
    "precision_recall_curve",
    "compute_auroc",
    "compute_average_precision",
    "compute_prf",
    "f1_max_threshold",
    "youden_threshold",
    "classification_report",
    "multilabel_report",
    "topk_mean_sd",
    "bootstrap_ci",
    "check_n_boot",
    "MIN_N_BOOT",
    "paired_auroc_difference",
    "compute_average_precision_multi",
    "AveragePrecisionMetric",
]


# --------------------------------------------------------------------------------------------- inputs
def _to_numpy(x: Any) -> np.ndarray:
    """Convert a torch tensor, list or array to a numpy array (tensors are detached and moved to CPU)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _as_vector(x: Any, name: str) -> np.ndarray:
    """Return ``x`` as a 1-D array; singleton dimensions such as ``(N, 1)`` are squeezed."""
    a = _to_numpy(x)
    if a.ndim > 1:
        a = a.reshape([s for s in a.shape if s != 1] or [1])
    a = np.atleast_1d(a)
    if a.ndim != 1:
        raise HemwslInputError(f"{name} must be one-dimensional, got shape {tuple(_to_numpy(x).shape)}")
    return a


def _check_labels(y: np.ndarray, name: str) -> np.ndarray:
    """Check that ``y`` holds only 0/1 (or bool) values and return it as int64."""
    if y.dtype == bool:
        return y.astype(np.int64)
    if y.size and not np.all((y == 0) | (y == 1)):
        bad = np.unique(y[~((y == 0) | (y == 1))])[:5]
        raise HemwslInputError(f"{name} must hold binary labels 0/1, found values such as {bad.tolist()}")
    return y.astype(np.int64)


def _check_scores(s: np.ndarray, name: str) -> np.ndarray:
    """Check that ``s`` is numeric without NaN and return it as float64."""
    if not (np.issubdtype(s.dtype, np.number) or s.dtype == bool):
        raise HemwslInputError(f"{name} must be numeric, got dtype {s.dtype}")
    s = s.astype(np.float64)
    if np.isnan(s).any():
        raise HemwslInputError(f"{name} contains NaN")
    return s


def _check_values(v: np.ndarray) -> np.ndarray:
    """Check that ``v`` is numeric (NaN allowed) and return it as float64."""
    if not (np.issubdtype(v.dtype, np.number) or v.dtype == bool):
        raise HemwslInputError(f"values must be numeric, got dtype {v.dtype}")
    return v.astype(np.float64)


def _binary_inputs(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate a pair of binary labels and scores and return them as (int64, float64) vectors."""
    y = _check_labels(_as_vector(y_true, "y_true"), "y_true")
    s = _check_scores(_as_vector(y_score, "y_score"), "y_score")
    if y.shape != s.shape:
        raise HemwslInputError(f"y_true and y_score differ in length: {y.size} != {s.size}")
    return y, s


def _binary_clf_curve(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts of true and false positives at each distinct score, in decreasing score order.

    Args:
        y: int64 labels.
        s: float64 scores of the same length (at least one element).

    Returns:
        ``(tps, fps, thresholds)``: ``tps[i]``/``fps[i]`` count the positives/negatives with score
        ``>= thresholds[i]``; thresholds are the distinct scores, decreasing.
    """
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    y_sorted = y[order]
    distinct = np.flatnonzero(s_sorted[1:] != s_sorted[:-1])  # `!=` keeps ties of +-inf together
    ends = np.r_[distinct, s_sorted.size - 1]
    tps = np.cumsum(y_sorted)[ends]
    fps = ends + 1 - tps
    return tps, fps, s_sorted[ends]


def _both_classes(y: np.ndarray) -> bool:
    n_pos = int(y.sum())
    return 0 < n_pos < y.size


# --------------------------------------------------------------------------------------------- curves
def roc_curve(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve with every distinct score as a threshold (as ``sklearn.metrics.roc_curve(drop_intermediate=False)``).

    Args:
        y_true: binary labels, shape ``(N,)``.
        y_score: scores of the positive class, shape ``(N,)``.

    Returns:
        ``(fpr, tpr, thresholds)``, starting at ``(0, 0)`` with threshold ``+inf`` and thresholds decreasing.
        ``fpr`` (``tpr``) is all NaN when there is no negative (positive) sample.
    """
    y, s = _binary_inputs(y_true, y_score)
    if y.size == 0:
        return np.zeros(1), np.zeros(1), np.array([np.inf])
    tps, fps, thr = _binary_clf_curve(y, s)
    tps = np.r_[0, tps]
    fps = np.r_[0, fps]
    n_pos, n_neg = tps[-1], fps[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = tps / n_pos if n_pos else np.full(tps.shape, np.nan)
        fpr = fps / n_neg if n_neg else np.full(fps.shape, np.nan)
    return fpr.astype(np.float64), tpr.astype(np.float64), np.r_[np.inf, thr]


def precision_recall_curve(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision-recall curve in scikit-learn's layout.

    Matches ``sklearn.metrics.precision_recall_curve(drop_intermediate=False)`` (scikit-learn >= 1.1):
    thresholds are all distinct scores in increasing order, and a last point ``(recall 0, precision 1)``
    without threshold closes the curve.

    Args:
        y_true: binary labels, shape ``(N,)``.
        y_score: scores of the positive class, shape ``(N,)``.

    Returns:
        ``(precision, recall, thresholds)`` with ``len(thresholds) == len(precision) - 1``. Recall is NaN
        when there is no positive sample (scikit-learn warns and sets it to 1).
    """
    y, s = _binary_inputs(y_true, y_score)
    if y.size == 0:
        return np.ones(1), np.zeros(1), np.zeros(0)
    tps, fps, thr = _binary_clf_curve(y, s)
    precision = tps / (tps + fps)  # tps + fps >= 1 at every point
    recall = tps / tps[-1] if tps[-1] else np.full(tps.shape, np.nan)
    return (
        np.r_[precision[::-1], 1.0].astype(np.float64),
        np.r_[recall[::-1], 0.0].astype(np.float64),
        thr[::-1].copy(),
    )


# --------------------------------------------------------------------------------------------- scalars
def compute_auroc(y_true: Any, y_score: Any) -> float:
    """Area under the ROC curve (trapezoidal rule; tied scores give the diagonal, i.e. half credit).

    Args:
        y_true: binary labels, shape ``(N,)``.
        y_score: scores of the positive class, shape ``(N,)``.

    Returns:
        The AUROC, or NaN when ``y_true`` holds only one class (or is empty).
    """
    y, s = _binary_inputs(y_true, y_score)
    if not _both_classes(y):
        return float("nan")
    fpr, tpr, _ = roc_curve(y, s)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0)


def compute_average_precision(y_true: Any, y_score: Any) -> float:
    """Average precision: ``sum_k (R_k - R_{k-1}) P_k`` over the distinct thresholds (no interpolation).

    Identical to ``sklearn.metrics.average_precision_score`` whenever both classes are present.

    Args:
        y_true: binary labels, shape ``(N,)``.
        y_score: scores of the positive class, shape ``(N,)``.

    Returns:
        The AP, or NaN when ``y_true`` holds only one class (or is empty).
    """
    y, s = _binary_inputs(y_true, y_score)
    if not _both_classes(y):
        return float("nan")
    tps, fps, _ = _binary_clf_curve(y, s)
    precision = tps / (tps + fps)
    recall_gain = np.diff(np.r_[0, tps]) / tps[-1]
    return float(np.sum(recall_gain * precision))


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


def compute_prf(y_true: Any, y_score: Any, threshold: float = 0.5) -> dict[str, float | int]:
    """Precision, recall, F1 and specificity when predicting positive for ``score >= threshold``.

    Args:
        y_true: binary labels, shape ``(N,)``.
        y_score: scores of the positive class, shape ``(N,)``.
        threshold: decision threshold (finite or infinite, not NaN).

    Returns:
        ``{"precision", "recall", "f1", "specificity", "tp", "fp", "tn", "fn"}``; a ratio whose
        denominator is zero is 0.0 (scikit-learn's ``zero_division=0``). Counts are ints.
    """
    y, s = _binary_inputs(y_true, y_score)
    threshold = float(threshold)
    if math.isnan(threshold):
        raise HemwslInputError("threshold is NaN")
    pred = s >= threshold
    pos = y == 1
    tp = int(np.sum(pred & pos))
    fp = int(np.sum(pred & ~pos))
    fn = int(np.sum(~pred & pos))
    tn = int(np.sum(~pred & ~pos))
    return {
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "specificity": _ratio(tn, tn + fp),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def f1_max_threshold(y_true: Any, y_score: Any) -> tuple[float, float]:
    """Threshold maximising F1 over the distinct scores (choose it on validation, apply it on test).

    Among thresholds with the same (maximal) F1 the highest is returned.

    Args:
        y_true: binary labels, shape ``(N,)``.
        y_score: scores of the positive class, shape ``(N,)``.

    Returns:
        ``(threshold, f1)``: one of the scores, used as ``score >= threshold``, and the F1 it gives on
        these data; ``(nan, nan)`` when there is no positive sample.
    """
    y, s = _binary_inputs(y_true, y_score)
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan"), float("nan")
    tps, fps, thr = _binary_clf_curve(y, s)
    f1 = 2 * tps / (tps + fps + n_pos)
    i = int(np.argmax(f1))
    return float(thr[i]), float(f1[i])


def youden_threshold(y_true: Any, y_score: Any) -> tuple[float, float]:
    """Threshold maximising Youden's J = sensitivity + specificity - 1 over the distinct scores.

    Among thresholds with the same (maximal) J the highest is returned.

    Args:
        y_true: binary labels, shape ``(N,)``.
        y_score: scores of the positive class, shape ``(N,)``.

    Returns:
        ``(threshold, j)``: one of the scores, used as ``score >= threshold``, and J on these data;
        ``(nan, nan)`` when ``y_true`` holds only one class.
    """
    y, s = _binary_inputs(y_true, y_score)
    if not _both_classes(y):
        return float("nan"), float("nan")
    tps, fps, thr = _binary_clf_curve(y, s)
    j = tps / tps[-1] - fps / fps[-1]
    i = int(np.argmax(j))
    return float(thr[i]), float(j[i])


# --------------------------------------------------------------------------------------------- reports
def _threshold_key(t: float) -> str:
    return f"{float(t):g}"


def _chosen(threshold: float, value: float, value_name: str, chosen_on: str, y: np.ndarray, s: np.ndarray) -> dict:
    entry: dict[str, Any] = {"threshold": threshold, value_name: value, "chosen_on": chosen_on}
    entry["prf"] = None if math.isnan(threshold) else compute_prf(y, s, threshold)
    return entry


def classification_report(
    y_true: Any,
    y_score: Any,
    thresholds: Sequence[float] = (0.3, 0.5, 0.7),
    val_true: Any | None = None,
    val_score: Any | None = None,
) -> dict[str, Any]:
    """Binary classification summary: AUROC, AP, scores at fixed and at data-driven thresholds.

    The F1-max and Youden thresholds are chosen on the validation arrays when given and then applied to
    ``y_true``/``y_score`` (the test data); otherwise they are chosen on the evaluated data themselves,
    which is optimistic and flagged as ``"chosen_on": "same"``.

    Args:
        y_true: binary labels of the evaluated (test) data, shape ``(N,)``.
        y_score: their positive-class scores (probabilities for the fixed thresholds to make sense).
        thresholds: fixed thresholds to report.
        val_true: validation labels (give both or neither of ``val_true``/``val_score``).
        val_score: validation scores.

    Returns:
        A JSON-serialisable dict::

            {"n", "n_positive", "auroc", "ap",
             "at_threshold": {"0.5": compute_prf(...), ...},
             "f1_max": {"threshold", "f1_on_selection", "chosen_on", "prf"},
             "youden": {"threshold", "j_on_selection", "chosen_on", "prf"},
             "chosen_on": "validation" | "same"}

        ``prf`` is None when the selection data held only one class (threshold NaN).
    """
    y, s = _binary_inputs(y_true, y_score)
    if (val_true is None) != (val_score is None):
        raise HemwslInputError("give both val_true and val_score, or neither")
    if val_true is not None:
        vy, vs = _binary_inputs(val_true, val_score)
        chosen_on = "validation"
    else:
        vy, vs = y, s
        chosen_on = "same"
    f1_t, f1_v = f1_max_threshold(vy, vs)
    j_t, j_v = youden_threshold(vy, vs)
    return {
        "n": int(y.size),
        "n_positive": int(y.sum()),
        "auroc": compute_auroc(y, s),
        "ap": compute_average_precision(y, s),
        "at_threshold": {_threshold_key(t): compute_prf(y, s, t) for t in thresholds},
        "f1_max": _chosen(f1_t, f1_v, "f1_on_selection", chosen_on, y, s),
        "youden": _chosen(j_t, j_v, "j_on_selection", chosen_on, y, s),
        "chosen_on": chosen_on,
    }


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _as_matrix(x: Any, name: str) -> np.ndarray:
    a = _to_numpy(x)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise HemwslInputError(f"{name} must have shape (N, C), got {tuple(a.shape)}")
    return a


def multilabel_report(y_true: Any, y_score: Any, names: Sequence[str] | None = None) -> dict[str, Any]:
    """Per-class AUROC and AP for multi-label outputs, with macro means that skip undefined classes.

    Args:
        y_true: binary labels, shape ``(N, C)``.
        y_score: scores, shape ``(N, C)``.
        names: class names, ``C`` of them. Default: ``("any",) + SUBTYPES`` for 6 columns, ``SUBTYPES`` for 5.

    Returns:
        ``{"per_class": {name: {"auroc", "ap", "n_positive"}}, "macro_auroc", "macro_ap"}``; a class with
        a single label value has NaN scores and is left out of the macro means (NaN when all are).
    """
    y = _as_matrix(y_true, "y_true")
    s = _as_matrix(y_score, "y_score")
    if y.shape != s.shape:
        raise HemwslInputError(f"y_true and y_score differ in shape: {tuple(y.shape)} != {tuple(s.shape)}")
    n_cls = y.shape[1]
    if names is None:
        if n_cls == len(SUBTYPES) + 1:
            names = ("any", *SUBTYPES)
        elif n_cls == len(SUBTYPES):
            names = SUBTYPES
        else:
            raise HemwslInputError(f"names must be given for {n_cls} classes")
    names = list(names)
    if len(names) != n_cls or len(set(names)) != n_cls:
        raise HemwslInputError(f"names must be {n_cls} distinct names, got {names}")
    per_class: dict[str, dict[str, Any]] = {}
    for c, name in enumerate(names):
        yc, sc = _binary_inputs(y[:, c], s[:, c])
        per_class[name] = {
            "auroc": compute_auroc(yc, sc),
            "ap": compute_average_precision(yc, sc),
            "n_positive": int(yc.sum()),
        }
    return {
        "per_class": per_class,
        "macro_auroc": _nanmean([v["auroc"] for v in per_class.values()]),
        "macro_ap": _nanmean([v["ap"] for v in per_class.values()]),
    }


def topk_mean_sd(values: Any, k: int = 5) -> tuple[float, float]:
    """Mean and sample SD (ddof=1) of the ``k`` largest values, e.g. "top-5 epochs F1 mean +- sd".

    Args:
        values: per-epoch values; NaN entries are ignored.
        k: how many of the largest values to use; fewer are used when fewer exist.

    Returns:
        ``(mean, sd)``; ``sd`` is NaN when a single value is used.
    """
    if k < 1:
        raise HemwslInputError(f"k must be >= 1, got {k}")
    v = _check_values(_as_vector(values, "values"))
    v = v[~np.isnan(v)]
    if v.size == 0:
        raise HemwslInputError("values holds no (non-NaN) value")
    top = np.sort(v)[::-1][:k]
    sd = float(np.std(top, ddof=1)) if top.size > 1 else float("nan")
    return float(np.mean(top)), sd


def _group_members(groups: Any | None, n: int) -> list[np.ndarray]:
    """Indices of the items of each group (each item its own group when ``groups`` is ``None``)."""
    if groups is None:
        return [np.array([i]) for i in range(n)]
    g = _as_vector(groups, "groups")
    if g.size != n:
        raise HemwslInputError(f"groups has {g.size} entries for {n} items")
    _, inverse = np.unique(g, return_inverse=True)
    order = np.argsort(inverse, kind="mergesort")
    bounds = np.flatnonzero(np.diff(inverse[order])) + 1
    return np.split(order, bounds)


def paired_auroc_difference(y_true: Any, score_a: Any, score_b: Any, groups: Any | None = None, n_boot: int = 2000,
                            alpha: float = 0.05, seed: int = 0) -> dict[str, Any]:
    """AUROC of ``score_a`` minus AUROC of ``score_b`` on the same items, with a paired bootstrap.

    Each replicate resamples groups (e.g. patients: slices of one patient are not independent) with
    replacement and recomputes both AUROCs on the same items, so the two classifiers' correlation is kept.

    Returns:
        ``{"auroc_a", "auroc_b", "diff", "ci": (low, high), "p": two-sided bootstrap p-value, "n_boot"}``; ``p`` is
        twice the smaller share of replicates on either side of 0 (at least ``1 / n_boot``).
    """
    n_boot = check_n_boot(n_boot, "n_boot")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) or not 0.0 < alpha < 1.0:
        raise HemwslInputError(f"alpha must be in (0, 1), got {alpha!r}")
    y, a = _binary_inputs(y_true, score_a)
    _, b = _binary_inputs(y_true, score_b)
    if len(a) != len(b):
        raise HemwslInputError(f"score_a and score_b must be equally long, got {len(a)} and {len(b)}")
    members = _group_members(groups, len(y))
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot, dtype=np.float64)
    for i in range(n_boot):
        idx = np.concatenate([members[j] for j in rng.integers(0, len(members), size=len(members))])
        diffs[i] = compute_auroc(y[idx], a[idx]) - compute_auroc(y[idx], b[idx])
    diffs = diffs[~np.isnan(diffs)]
    auroc_a, auroc_b = compute_auroc(y, a), compute_auroc(y, b)
    if diffs.size == 0:
        return {"auroc_a": auroc_a, "auroc_b": auroc_b, "diff": auroc_a - auroc_b, "ci": (float("nan"),) * 2,
                "p": float("nan"), "n_boot": 0}
    low, high = np.quantile(diffs, [alpha / 2.0, 1.0 - alpha / 2.0])
    p = min(1.0, max(2.0 * min(np.mean(diffs <= 0), np.mean(diffs >= 0)), 1.0 / diffs.size))
    return {"auroc_a": auroc_a, "auroc_b": auroc_b, "diff": auroc_a - auroc_b, "ci": (float(low), float(high)),
            "p": float(p), "n_boot": int(diffs.size)}


#: The fewest bootstrap replicates a command accepts for its 95% CIs: with fewer, the 2.5% and 97.5% quantiles are
#: the extreme replicates or a single one (``--n-boot 1`` gave a "CI" that did not even hold the estimate).
MIN_N_BOOT = 10


def check_n_boot(n_boot: Any, name: str = "--n-boot") -> int:
    """``n_boot`` as an int of at least :data:`MIN_N_BOOT` bootstrap replicates; else one line naming ``name``."""
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < MIN_N_BOOT:
        raise HemwslInputError(f"{name} must be >= {MIN_N_BOOT} (bootstrap replicates of the 95% CIs; 1000 or more "
                               f"for reported numbers), got {n_boot!r}")
    return int(n_boot)


def bootstrap_ci(
    values_or_fn: Any,
    *arrays: Any,
    groups: Any | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval, resampling groups (e.g. patients) with replacement.

    Two forms:

    * ``bootstrap_ci(values, groups=...)``: CI of the mean of per-item ``values``.
    * ``bootstrap_ci(fn, y_true, y_score, groups=...)``: CI of ``fn(y_true, y_score)`` (any number of
      equally long arrays is passed on), e.g. ``bootstrap_ci(compute_auroc, y, s, groups=patients)``.

    Each replicate draws as many groups as there are, with replacement, and takes all items of each drawn
    group (slices of one patient are not independent). Replicates whose statistic is NaN (e.g. AUROC of
    a resample holding one class) are discarded.

    Args:
        values_or_fn: per-item values, or a statistic taking the arrays and returning a float.
        *arrays: the statistic's arguments, only with a callable.
        groups: per-item group labels (length ``N``); ``None`` makes every item its own group.
        n_boot: number of bootstrap replicates.
        alpha: 1 - confidence level; the bounds are the ``alpha/2`` and ``1 - alpha/2`` quantiles.
        seed: seed of the numpy generator, so results are reproducible.

    Returns:
        ``(low, high)``; ``(nan, nan)`` when every replicate gives NaN.
    """
    if n_boot < 1:
        raise HemwslInputError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise HemwslInputError(f"alpha must be in (0, 1), got {alpha}")
    if callable(values_or_fn):
        fn: Callable[..., float] = values_or_fn
        if not arrays:
            raise HemwslInputError("bootstrap_ci with a statistic function needs the arrays it takes")
        data = [_to_numpy(a) for a in arrays]
    else:
        if arrays:
            raise HemwslInputError("bootstrap_ci takes extra arrays only with a statistic function")
        data = [_check_values(_as_vector(values_or_fn, "values"))]
        fn = lambda v: float(np.mean(v))  # noqa: E731
    n = len(data[0])
    if n == 0 or any(len(a) != n for a in data):
        raise HemwslInputError(f"bootstrap_ci arrays must be non-empty and equally long, got {[len(a) for a in data]}")
    members = _group_members(groups, n)
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot, dtype=np.float64)
    for b in range(n_boot):
        picked = rng.integers(0, len(members), size=len(members))
        idx = np.concatenate([members[i] for i in picked])
        stats[b] = float(fn(*[a[idx] for a in data]))
    stats = stats[~np.isnan(stats)]
    if stats.size == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(stats, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


# --------------------------------------------------------------------------------------------- MONAI
def compute_average_precision_multi(
    y_pred: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, average: Average | str = Average.MACRO
) -> float | list[float]:
    """Average precision of binary or multi-label predictions, with MONAI's averaging options.

    Mirrors ``monai.metrics.compute_roc_auc``: ``y_pred`` is ``(B,)``/``(B, 1)`` (binary) or ``(B, C)``;
    ``y`` has the same shape (one-hot or multi-label 0/1).

    Args:
        y_pred: scores.
        y: binary targets.
        average: ``"macro"`` (mean over classes, skipping NaN ones), ``"weighted"`` (weighted by the number
            of positives of each class), ``"micro"`` (all entries pooled) or ``"none"`` (a list per class).

    Returns:
        The AP, or a list of per-class AP with ``average="none"``.
    """
    yp = _to_numpy(y_pred)
    yt = _to_numpy(y)
    if yp.ndim == 2 and yp.shape[1] == 1:
        yp = yp[:, 0]
    if yt.ndim == 2 and yt.shape[1] == 1:
        yt = yt[:, 0]
    if yp.ndim not in (1, 2):
        raise HemwslInputError(f"predictions must be (B,) or (B, C), got shape {yp.shape}")
    if yp.shape != yt.shape:
        raise HemwslInputError(f"targets must have the predictions' shape {yp.shape}, got {yt.shape}")
    if yp.ndim == 1:
        return compute_average_precision(yt, yp)
    average = look_up_option(average, Average)
    if average == Average.MICRO:
        return compute_average_precision(yt.ravel(), yp.ravel())
    per_class = [compute_average_precision(yt[:, c], yp[:, c]) for c in range(yp.shape[1])]
    if average == Average.NONE:
        return per_class
    if average == Average.MACRO:
        return _nanmean(per_class)
    # weighted by support
    support = np.asarray(yt, dtype=np.float64).sum(axis=0)
    vals = np.asarray(per_class)
    keep = ~np.isnan(vals)
    if not keep.any() or support[keep].sum() == 0:
        return float("nan")
    return float(np.sum(vals[keep] * support[keep]) / support[keep].sum())


class AveragePrecisionMetric(CumulativeIterationMetric):
    """Average precision accumulated over iterations, the AP counterpart of ``monai.metrics.ROCAUCMetric``.

    Call it with ``y_pred``/``y`` batches (``(B,)``, ``(B, 1)`` or ``(B, C)``, targets of the same shape),
    or with lists of channel-first per-sample tensors; :meth:`aggregate` computes AP on everything
    gathered so far, and ``reset()`` empties the buffer.

    Args:
        average: see :func:`compute_average_precision_multi`.

    Example::

        metric = AveragePrecisionMetric()
        for batch in loader:
            metric(y_pred=torch.sigmoid(model(batch["image"]))[:, 0], y=batch["label"])
        ap = metric.aggregate()
        metric.reset()
    """

    def __init__(self, average: Average | str = Average.MACRO) -> None:
        super().__init__()
        self.average = average

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        return y_pred, y

    def aggregate(self, average: Average | str | None = None) -> float | list[float]:  # type: ignore[override]
        """Average precision of all buffered predictions.

        Args:
            average: overrides the averaging given at construction.
        """
        y_pred, y = self.get_buffer()
        if not isinstance(y_pred, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise ValueError("y_pred and y must be PyTorch Tensor.")
        return compute_average_precision_multi(y_pred=y_pred, y=y, average=average or self.average)
