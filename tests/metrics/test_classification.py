"""Slice-classifier metrics checked against scikit-learn on fixed arrays (ties and one-class cases included)."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from hemwsl.constants import SUBTYPES
from hemwsl.errors import HemwslInputError
from hemwsl.metrics import (
    AveragePrecisionMetric,
    bootstrap_ci,
    classification_report,
    compute_auroc,
    compute_average_precision,
    compute_average_precision_multi,
    compute_prf,
    f1_max_threshold,
    multilabel_report,
    precision_recall_curve,
    roc_curve,
    topk_mean_sd,
    youden_threshold,
)

TOL = 1e-12

# Fixed arrays: heavy ties (coarse scores), no ties, and a random set with ties.
Y_TIES = np.array([0, 1, 1, 0, 1, 0, 0, 1, 1, 0, 0, 1, 0, 0, 1])
S_TIES = np.array([0.1, 0.4, 0.4, 0.4, 0.8, 0.1, 0.3, 0.8, 0.55, 0.55, 0.9, 0.3, 0.1, 0.4, 1.0])
Y_PLAIN = np.array([0, 0, 1, 1, 0, 1, 0, 1])
S_PLAIN = np.array([0.05, 0.2, 0.35, 0.8, 0.45, 0.6, 0.7, 0.9])
_rng = np.random.default_rng(1234)
Y_RAND = (_rng.random(200) < 0.3).astype(int)
S_RAND = np.round(np.clip(0.35 * Y_RAND + _rng.random(200) * 0.8, 0, 1), 2)  # rounding makes ties

CASES = [(Y_TIES, S_TIES), (Y_PLAIN, S_PLAIN), (Y_RAND, S_RAND)]
IDS = ["ties", "plain", "random"]


@pytest.mark.parametrize(("y", "s"), CASES, ids=IDS)
def test_auroc_ap_match_sklearn(y, s):
    assert compute_auroc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=TOL, rel=0)
    assert compute_average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=TOL, rel=0)


@pytest.mark.parametrize(("y", "s"), CASES, ids=IDS)
def test_curves_match_sklearn(y, s):
    fpr, tpr, thr = roc_curve(y, s)
    sfpr, stpr, sthr = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sfpr, atol=TOL, rtol=0)
    np.testing.assert_allclose(tpr, stpr, atol=TOL, rtol=0)
    np.testing.assert_array_equal(thr, sthr)
    p, r, t = precision_recall_curve(y, s)
    sp, sr, st = skm.precision_recall_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(p, sp, atol=TOL, rtol=0)
    np.testing.assert_allclose(r, sr, atol=TOL, rtol=0)
    np.testing.assert_array_equal(t, st)


def test_tie_handling_by_hand():
    # one positive and one negative tied: half credit
    assert compute_auroc([0, 1], [0.5, 0.5]) == 0.5
    assert compute_auroc([0, 1, 0, 1], [0.2, 0.2, 0.1, 0.9]) == pytest.approx(0.875, abs=TOL)
    # all tied: AP equals prevalence, AUROC 0.5
    assert compute_average_precision([0, 1, 1, 0, 0], [0.3] * 5) == pytest.approx(0.4, abs=TOL)
    assert compute_auroc([0, 1, 1, 0, 0], [0.3] * 5) == pytest.approx(0.5, abs=TOL)


def test_inputs_torch_bool_and_column_vectors():
    ref = skm.roc_auc_score(Y_TIES, S_TIES)
    assert compute_auroc(torch.tensor(Y_TIES), torch.tensor(S_TIES, dtype=torch.float32)) == pytest.approx(ref, abs=1e-7)
    assert compute_auroc(Y_TIES.astype(bool), S_TIES) == pytest.approx(ref, abs=TOL)
    assert compute_auroc(Y_TIES[:, None].astype(float), S_TIES[:, None]) == pytest.approx(ref, abs=TOL)
    if torch.cuda.is_available():
        assert compute_auroc(torch.tensor(Y_TIES).cuda(), torch.tensor(S_TIES).cuda()) == pytest.approx(ref, abs=TOL)


@pytest.mark.parametrize("y", [np.zeros(6, int), np.ones(6, int), np.zeros(0, int)], ids=["neg", "pos", "empty"])
def test_one_class_gives_nan(y):
    s = np.linspace(0, 1, y.size)
    assert math.isnan(compute_auroc(y, s))
    assert math.isnan(compute_average_precision(y, s))
    assert all(math.isnan(v) for v in youden_threshold(y, s))


def test_f1_max_one_class():
    s = np.linspace(0, 1, 6)
    assert all(math.isnan(v) for v in f1_max_threshold(np.zeros(6, int), s))
    # all positive: predicting everything positive is perfect
    assert f1_max_threshold(np.ones(6, int), s) == (0.0, 1.0)


def test_bad_inputs():
    with pytest.raises(HemwslInputError, match="binary"):
        compute_auroc([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(HemwslInputError, match="length"):
        compute_auroc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(HemwslInputError, match="NaN"):
        compute_average_precision([0, 1], [0.1, float("nan")])
    with pytest.raises(HemwslInputError, match="one-dimensional"):
        compute_auroc(np.zeros((4, 2)), np.zeros((4, 2)))
    with pytest.raises(HemwslInputError, match="threshold"):
        compute_prf([0, 1], [0.1, 0.2], float("nan"))


def _sk_prf(y, s, t):
    pred = (s >= t).astype(int)
    p, r, f, _ = skm.precision_recall_fscore_support(y, pred, average="binary", zero_division=0)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    spec = skm.recall_score(1 - y, 1 - pred, zero_division=0)
    return {"precision": p, "recall": r, "f1": f, "specificity": spec, "tp": tp, "fp": fp, "tn": tn, "fn": fn}


@pytest.mark.parametrize(("y", "s"), CASES, ids=IDS)
@pytest.mark.parametrize("t", [0.0, 0.3, 0.4, 0.5, 0.55, 0.7, 1.0, 2.0])
def test_prf_matches_sklearn(y, s, t):
    got = compute_prf(y, s, t)
    ref = _sk_prf(y, s, t)
    assert set(got) == set(ref)
    for key, val in ref.items():
        assert got[key] == pytest.approx(float(val), abs=TOL, rel=0), key
    assert all(isinstance(got[k], int) for k in ("tp", "fp", "tn", "fn"))


def test_prf_zero_division():
    # nothing predicted positive, no positives: every ratio but specificity is 0
    got = compute_prf([0, 0, 0], [0.1, 0.2, 0.3], 0.5)
    assert got == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "specificity": 1.0, "tp": 0, "fp": 0, "tn": 3, "fn": 0}
    # no negatives: specificity 0
    got = compute_prf([1, 1], [0.1, 0.9], 0.5)
    assert got["specificity"] == 0.0 and got["recall"] == 0.5 and got["precision"] == 1.0
    ref = skm.precision_recall_fscore_support([0, 0, 0], [0, 0, 0], average="binary", zero_division=0)
    assert ref[:3] == (0.0, 0.0, 0.0)


@pytest.mark.parametrize(("y", "s"), CASES, ids=IDS)
def test_f1_max_and_youden_match_brute_force(y, s):
    cands = np.unique(s)[::-1]  # decreasing, so argmax picks the highest threshold among equal values
    f1s = np.array([skm.f1_score(y, (s >= t).astype(int), zero_division=0) for t in cands])
    t, f1 = f1_max_threshold(y, s)
    assert f1 == pytest.approx(f1s.max(), abs=TOL)
    assert t == cands[int(np.argmax(f1s))]
    fpr, tpr, thr = skm.roc_curve(y, s, drop_intermediate=False)
    j = tpr - fpr
    t, jbest = youden_threshold(y, s)
    assert jbest == pytest.approx(j.max(), abs=TOL)
    assert t == thr[int(np.argmax(j))]
    assert compute_prf(y, s, t)["recall"] + compute_prf(y, s, t)["specificity"] - 1 == pytest.approx(jbest, abs=TOL)


def test_classification_report_same_and_validation():
    rep = classification_report(Y_RAND, S_RAND)
    assert rep["chosen_on"] == "same" and rep["f1_max"]["chosen_on"] == "same"
    assert rep["n"] == 200 and rep["n_positive"] == int(Y_RAND.sum())
    assert rep["auroc"] == pytest.approx(skm.roc_auc_score(Y_RAND, S_RAND), abs=TOL)
    assert rep["ap"] == pytest.approx(skm.average_precision_score(Y_RAND, S_RAND), abs=TOL)
    assert set(rep["at_threshold"]) == {"0.3", "0.5", "0.7"}
    assert rep["at_threshold"]["0.5"] == compute_prf(Y_RAND, S_RAND, 0.5)
    # chosen on the same data, the F1 at the chosen threshold is the selection F1
    assert rep["f1_max"]["prf"]["f1"] == pytest.approx(rep["f1_max"]["f1_on_selection"], abs=TOL)
    json.dumps(rep)  # serialisable

    rep = classification_report(Y_TIES, S_TIES, thresholds=(0.5,), val_true=Y_RAND, val_score=S_RAND)
    assert rep["chosen_on"] == "validation" and rep["youden"]["chosen_on"] == "validation"
    t_f1, f1_val = f1_max_threshold(Y_RAND, S_RAND)
    t_j, _ = youden_threshold(Y_RAND, S_RAND)
    assert rep["f1_max"]["threshold"] == t_f1 and rep["f1_max"]["f1_on_selection"] == f1_val
    assert rep["f1_max"]["prf"] == compute_prf(Y_TIES, S_TIES, t_f1)
    assert rep["youden"]["prf"] == compute_prf(Y_TIES, S_TIES, t_j)
    with pytest.raises(HemwslInputError, match="both"):
        classification_report(Y_TIES, S_TIES, val_true=Y_RAND)


def test_classification_report_one_class_validation():
    rep = classification_report(Y_TIES, S_TIES, val_true=np.zeros(4, int), val_score=[0.1, 0.2, 0.3, 0.4])
    assert math.isnan(rep["youden"]["threshold"]) and rep["youden"]["prf"] is None
    assert rep["f1_max"]["prf"] is None
    rep = classification_report(np.ones(4, int), [0.1, 0.2, 0.3, 0.4])
    assert math.isnan(rep["auroc"]) and math.isnan(rep["ap"])


def test_multilabel_report():
    rng = np.random.default_rng(7)
    y = (rng.random((60, 6)) < 0.3).astype(int)
    s = np.round(np.clip(0.3 * y + rng.random((60, 6)) * 0.8, 0, 1), 1)
    rep = multilabel_report(y, s)
    assert list(rep["per_class"]) == ["any", *SUBTYPES]
    for c, name in enumerate(rep["per_class"]):
        assert rep["per_class"][name]["auroc"] == pytest.approx(skm.roc_auc_score(y[:, c], s[:, c]), abs=TOL)
        assert rep["per_class"][name]["ap"] == pytest.approx(skm.average_precision_score(y[:, c], s[:, c]), abs=TOL)
    assert rep["macro_auroc"] == pytest.approx(skm.roc_auc_score(y, s, average="macro"), abs=TOL)
    assert rep["macro_ap"] == pytest.approx(skm.average_precision_score(y, s, average="macro"), abs=TOL)
    # a class without positives is NaN and left out of the macro means
    y[:, 3] = 0
    rep = multilabel_report(torch.tensor(y), torch.tensor(s))
    assert math.isnan(rep["per_class"][SUBTYPES[2]]["auroc"])
    keep = [0, 1, 2, 4, 5]
    assert rep["macro_auroc"] == pytest.approx(skm.roc_auc_score(y[:, keep], s[:, keep], average="macro"), abs=TOL)
    assert list(multilabel_report(y[:, 1:], s[:, 1:])["per_class"]) == list(SUBTYPES)
    assert list(multilabel_report(y[:, :2], s[:, :2], names=["a", "b"])["per_class"]) == ["a", "b"]
    with pytest.raises(HemwslInputError, match="names"):
        multilabel_report(y[:, :2], s[:, :2])
    all_nan = multilabel_report(np.zeros((5, 2)), np.zeros((5, 2)), names=["a", "b"])
    assert math.isnan(all_nan["macro_auroc"]) and math.isnan(all_nan["macro_ap"])


def test_topk_mean_sd():
    vals = [0.5, 0.9, 0.7, 0.8, 0.6, 0.85, 0.1]
    mean, sd = topk_mean_sd(vals, k=5)
    top = np.array([0.9, 0.85, 0.8, 0.7, 0.6])
    assert mean == pytest.approx(top.mean(), abs=TOL)
    assert sd == pytest.approx(np.std(top, ddof=1), abs=TOL)
    mean, sd = topk_mean_sd([0.2, 0.4, float("nan")], k=5)  # fewer than k, NaN ignored
    assert mean == pytest.approx(0.3, abs=TOL) and sd == pytest.approx(np.std([0.2, 0.4], ddof=1), abs=TOL)
    mean, sd = topk_mean_sd(torch.tensor([0.7]))
    assert mean == pytest.approx(0.7) and math.isnan(sd)
    with pytest.raises(HemwslInputError):
        topk_mean_sd([])


def test_bootstrap_ci_deterministic_and_contains_estimate():
    rng = np.random.default_rng(3)
    values = rng.normal(1.0, 0.5, size=80)
    ci1 = bootstrap_ci(values, n_boot=300, seed=5)
    ci2 = bootstrap_ci(values, n_boot=300, seed=5)
    assert ci1 == ci2
    assert ci1 != bootstrap_ci(values, n_boot=300, seed=6)
    assert ci1[0] < values.mean() < ci1[1]
    # roughly the normal-theory interval
    half = 1.96 * values.std(ddof=1) / np.sqrt(values.size)
    assert ci1[0] == pytest.approx(values.mean() - half, abs=0.05)

    ci = bootstrap_ci(compute_auroc, Y_RAND, S_RAND, n_boot=200, seed=0)
    assert ci == bootstrap_ci(compute_auroc, Y_RAND, S_RAND, n_boot=200, seed=0)
    assert ci[0] < compute_auroc(Y_RAND, S_RAND) < ci[1]


def test_bootstrap_ci_groups():
    # each group holds identical values: a single group gives a degenerate interval
    values = np.array([2.0, 2.0, 2.0])
    assert bootstrap_ci(values, groups=["p1", "p1", "p1"], n_boot=50) == (2.0, 2.0)
    # patients of very different size: resampling patients differs from resampling slices
    values = np.r_[np.zeros(20), np.ones(2), np.ones(2)]
    groups = np.r_[np.zeros(20, int), [1, 1], [2, 2]]
    by_slice = bootstrap_ci(values, n_boot=400, seed=1)
    by_patient = bootstrap_ci(values, groups=groups, n_boot=400, seed=1)
    assert by_patient[1] - by_patient[0] > by_slice[1] - by_slice[0]
    # a statistic that is NaN for every resample
    assert all(math.isnan(v) for v in bootstrap_ci(compute_auroc, np.zeros(5, int), np.arange(5.0), n_boot=20))
    with pytest.raises(HemwslInputError):
        bootstrap_ci(values, groups=[1, 2])
    with pytest.raises(HemwslInputError):
        bootstrap_ci(compute_auroc)


def test_average_precision_multi_matches_sklearn():
    rng = np.random.default_rng(11)
    y = (rng.random((50, 4)) < 0.4).astype(int)
    s = np.round(rng.random((50, 4)) * 0.7 + 0.3 * y, 1)
    for avg in ("macro", "weighted", "micro"):
        ref = skm.average_precision_score(y, s, average=avg)
        assert compute_average_precision_multi(torch.tensor(s), torch.tensor(y), avg) == pytest.approx(ref, abs=TOL)
    per = compute_average_precision_multi(s, y, "none")
    np.testing.assert_allclose(per, skm.average_precision_score(y, s, average=None), atol=TOL, rtol=0)
    with pytest.raises(HemwslInputError):
        compute_average_precision_multi(s, y[:, :2])


def test_average_precision_metric_accumulates():
    metric = AveragePrecisionMetric()
    for start in range(0, Y_RAND.size, 64):  # uneven last batch
        sl = slice(start, start + 64)
        metric(y_pred=torch.tensor(S_RAND[sl])[:, None], y=torch.tensor(Y_RAND[sl])[:, None])
    assert metric.aggregate() == pytest.approx(skm.average_precision_score(Y_RAND, S_RAND), abs=TOL)
    metric.reset()
    rng = np.random.default_rng(2)
    y = (rng.random((30, 3)) < 0.5).astype(int)
    s = rng.random((30, 3))
    metric(y_pred=[torch.tensor(r) for r in s], y=[torch.tensor(r) for r in y])  # list of channel-first samples
    assert metric.aggregate() == pytest.approx(skm.average_precision_score(y, s, average="macro"), abs=TOL)
    assert metric.aggregate("micro") == pytest.approx(skm.average_precision_score(y, s, average="micro"), abs=TOL)


def test_no_warnings_for_one_class():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compute_auroc([1, 1], [0.2, 0.3])
        compute_average_precision([0, 0], [0.2, 0.3])


def test_paired_auroc_difference():
    from sklearn.metrics import roc_auc_score

    from hemwsl.metrics.classification import paired_auroc_difference

    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(30), 10)
    y = (rng.random(300) < 0.3).astype(int)
    good = y + rng.normal(0, 0.5, 300)
    weak = y + rng.normal(0, 2.0, 300)
    r = paired_auroc_difference(y, good, weak, groups=groups, n_boot=500)
    assert r["auroc_a"] == pytest.approx(roc_auc_score(y, good)) and r["auroc_b"] == pytest.approx(roc_auc_score(y, weak))
    assert r["diff"] == pytest.approx(r["auroc_a"] - r["auroc_b"]) and r["ci"][0] > 0 and r["p"] < 0.01
    same = paired_auroc_difference(y, good, good, groups=groups, n_boot=200)
    assert same["diff"] == 0 and same["ci"] == (0.0, 0.0) and same["p"] == 1.0
    with pytest.raises(HemwslInputError):
        paired_auroc_difference(y, good, good[:10])
