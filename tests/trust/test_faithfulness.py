"""Faithfulness correlation and deletion / insertion curves against hand-computed references.

The reference is a linear model ``f(x) = sum(w * x)``: with the zero baseline, removing a set ``S`` of
pixels lowers the logit by exactly ``sum_S w * x``, so Input x Gradient (``w * x`` summed over channels)
has a faithfulness correlation of exactly 1, and every other quantity can be written down by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from hemwsl.errors import HemwslInputError
from hemwsl.trust.faithfulness import (
    blur_baseline,
    curve_auc,
    deletion_insertion_curves,
    faithfulness_correlation,
    get_baseline,
    mean_baseline,
    patch_sums,
)


def _pixel_mask(selection: np.ndarray, shape=(12, 10), patch=4, cols=3) -> np.ndarray:
    """Hand-built pixel mask of a 0/1 patch selection (row-major patches, cut at the border)."""
    m = np.zeros(shape)
    for p in np.flatnonzero(selection):
        i, j = divmod(int(p), cols)
        m[patch * i : patch * i + patch, patch * j : patch * j + patch] = 1
    return m


def test_linear_model_input_x_gradient_is_perfectly_faithful(linear_case):
    model, x, w = linear_case
    ixg = (x * w).sum(1)
    for sim in ("pearson", "spearman"):
        rho = faithfulness_correlation(model, x, ixg, patch_size=4, n_subsets=12, subset_fraction=0.25,
                                       score="logit", similarity=sim)
        np.testing.assert_allclose(rho, [1.0, 1.0, 1.0], atol=1e-12)


def test_random_map_matches_hand_computed_correlation(linear_case):
    model, x, w = linear_case
    g = torch.Generator().manual_seed(1)
    rnd = torch.rand(3, 12, 10, generator=g, dtype=torch.float64)
    rho, det = faithfulness_correlation(model, x, {"rnd": rnd}, patch_size=4, n_subsets=20, subset_fraction=0.25,
                                        score="logit", return_details=True, seed=7)
    subsets = det["subsets"].numpy()
    assert subsets.shape == (3, 20, 9)  # ceil(12/4) x ceil(10/4) = 9 patches
    assert (subsets.sum(-1) == 2).all()  # round(0.25 * 9) = 2 patches per subset
    for b in range(3):
        drops, sums = [], []
        for s in range(20):
            m = _pixel_mask(subsets[b, s])
            drops.append((x[b].numpy() * w.numpy() * m).sum())
            sums.append((rnd[b].numpy() * m).sum())
        np.testing.assert_allclose(det["drops"][b].numpy(), drops, atol=1e-10)
        assert rho["rnd"][b] == pytest.approx(np.corrcoef(drops, sums)[0, 1], abs=1e-12)


def test_probability_score_and_mean_baseline(linear_case):
    model, x, w = linear_case
    x, wn = x[:1], w.numpy()
    rnd = torch.rand(1, 12, 10, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    rho, det = faithfulness_correlation(model, x, rnd, patch_size=4, n_subsets=10, subset_fraction=0.3,
                                        baseline="mean", score="probability", return_details=True)
    xn = x[0].numpy()
    mean = xn.mean(axis=(1, 2), keepdims=True)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    clean = (xn * wn).sum()
    drops, sums = [], []
    for s in range(10):
        m = _pixel_mask(det["subsets"][0, s].numpy())
        pert = xn * (1 - m) + mean * m
        drops.append(sig(clean) - sig((pert * wn).sum()))
        sums.append((rnd[0].numpy() * m).sum())
    np.testing.assert_allclose(det["drops"][0].numpy(), drops, atol=1e-12)
    assert rho[0] == pytest.approx(np.corrcoef(drops, sums)[0, 1], abs=1e-10)


def test_pixel_level_is_quantus_definition(linear_case):
    """patch_size=1: random pixel subsets, as Quantus' FaithfulnessCorrelation (nr_runs, subset_size)."""
    model, x, w = linear_case
    rnd = torch.rand(1, 12, 10, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    rho, det = faithfulness_correlation(model, x[:1], rnd, patch_size=1, n_subsets=15,
                                        subset_fraction=12 / 120, score="logit", return_details=True)
    sub = det["subsets"][0].numpy().reshape(15, 12, 10)
    assert (sub.sum((1, 2)) == 12).all()
    drops = [(x[0].numpy() * w.numpy() * s).sum() for s in sub]
    sums = [(rnd[0].numpy() * s).sum() for s in sub]
    assert rho[0] == pytest.approx(np.corrcoef(drops, sums)[0, 1], abs=1e-12)


def test_subsets_are_shared_and_chunking_does_not_matter(linear_case):
    model, x, w = linear_case
    a = torch.rand(3, 12, 10, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    both = faithfulness_correlation(model, x, {"a": a, "ixg": (x * w).sum(1)}, patch_size=4, n_subsets=8,
                                    score="logit", batch_size=5, seed=3)
    alone = faithfulness_correlation(model, x, a, patch_size=4, n_subsets=8, score="logit", batch_size=64, seed=3)
    np.testing.assert_allclose(both["a"], alone, atol=1e-12)


def test_constant_map_gives_nan(linear_case):
    model, x, _ = linear_case
    rho = faithfulness_correlation(model, x, torch.zeros(3, 12, 10, dtype=torch.float64), patch_size=4,
                                   n_subsets=6, score="logit")
    assert np.isnan(rho).all()


def test_deletion_and_insertion_curves_by_hand(linear_case):
    model, x, w = linear_case
    ixg = (x * w).sum(1)
    out = deletion_insertion_curves(model, x, ixg, patch_size=4, n_steps=3, score="logit",
                                    deletion_baseline="zero", insertion_baseline="zero")
    np.testing.assert_allclose(out["fractions"], [0, 3 / 9, 6 / 9, 1])
    for b in range(3):
        ps = patch_sums(ixg[b : b + 1], 4)[0].numpy()
        order = np.argsort(-ps, kind="stable")
        total = ps.sum()
        removed = np.array([ps[order[:n]].sum() for n in (0, 3, 6, 9)])
        np.testing.assert_allclose(out["deletion"][b], total - removed, atol=1e-10)
        np.testing.assert_allclose(out["insertion"][b], removed, atol=1e-10)
        f = [0, 1 / 3, 2 / 3, 1]
        c = total - removed
        auc = sum((c[i] + c[i + 1]) / 2 * (f[i + 1] - f[i]) for i in range(3))
        assert out["deletion_auc"][b] == pytest.approx(auc, abs=1e-10)
        # the explanation of a linear model removes the most positive evidence first
        assert out["deletion"][b][1] <= out["deletion"][b][0]


def test_curve_auc_hand():
    assert curve_auc([0, 0.5, 1], [1, 0.5, 0]) == pytest.approx(0.5)
    with pytest.raises(HemwslInputError):
        curve_auc([0, 1], [1, 2, 3])


def test_baselines_by_hand():
    x = torch.arange(2 * 2 * 9 * 8, dtype=torch.float64).reshape(2, 2, 9, 8) ** 0.5
    np.testing.assert_allclose(get_baseline("zero")(x).numpy(), 0)
    np.testing.assert_allclose(mean_baseline(x)[1, 0].numpy(), np.full((9, 8), x[1, 0].mean().item()))
    ref = gaussian_filter(x[0, 1].numpy(), sigma=2.0, mode="mirror", truncate=3.0)
    np.testing.assert_allclose(blur_baseline(x, sigma=2.0)[0, 1].numpy(), ref, atol=1e-12)
    np.testing.assert_allclose(get_baseline("blur", sigma=2.0)(x).numpy(), blur_baseline(x, 2.0).numpy())


def test_bad_arguments_name_the_argument(linear_case):
    model, x, w = linear_case
    a = (x * w).sum(1)
    with pytest.raises(HemwslInputError, match="baseline"):
        faithfulness_correlation(model, x, a, baseline="noise")
    with pytest.raises(HemwslInputError, match="patch_size"):
        faithfulness_correlation(model, x, a, patch_size=0)
    with pytest.raises(HemwslInputError, match="attribution"):
        faithfulness_correlation(model, x, a[:, :5])
    with pytest.raises(HemwslInputError, match="n_subsets"):
        faithfulness_correlation(model, x, a, n_subsets=1)
    with pytest.raises(HemwslInputError, match="score"):
        faithfulness_correlation(model, x, a, score="softmax")


def test_with_cam_engine_maps():
    """All maps of a CAMEngine call share one set of perturbed forwards; each equals its own call."""
    from hemwsl.cam import CAMEngine
    from tests.cam.helpers import calibrated

    model = calibrated(size=32)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    engine = CAMEngine(model, ["gradcam", "saliency"], layers=["layer3"])
    maps = engine(x)
    rho = faithfulness_correlation(model, x, maps, patch_size=8, n_subsets=8, subset_fraction=0.25)
    assert set(rho) == {("gradcam", "layer3"), ("saliency", "input")}
    one = faithfulness_correlation(model, x, maps[("gradcam", "layer3")], patch_size=8, n_subsets=8,
                                   subset_fraction=0.25)
    np.testing.assert_allclose(rho[("gradcam", "layer3")], one, atol=1e-12)
    assert np.all((np.abs(one) <= 1) | np.isnan(one))
