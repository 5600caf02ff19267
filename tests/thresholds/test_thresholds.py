"""Threshold strategies: registry, fixed/percentile/Otsu references, grid search, intensity prior, post-processing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.filters import threshold_otsu

from hemwsl.errors import HemwslInputError
from hemwsl.metrics import compute_dice
from hemwsl.thresholds import (
    THRESHOLDS,
    FixedThreshold,
    IntensityPrior,
    OtsuThreshold,
    PercentileThreshold,
    SearchedThreshold,
    ThresholdStrategy,
    apply_threshold,
    get_threshold,
    normalise_map,
    remove_small_components,
    restrict_to_mask,
    search_threshold,
    threshold_scores,
)


def _map(seed: int = 0, shape=(16, 16)) -> np.ndarray:
    return np.random.default_rng(seed).random(shape) * 3.0 - 0.5


# --------------------------------------------------------------------------------------------- registry
def test_registry_and_interface():
    assert set(THRESHOLDS) == {"fixed", "percentile", "otsu", "search", "intensity"}
    for name, cls in THRESHOLDS.items():
        assert issubclass(cls, ThresholdStrategy) and cls.name == name
    assert isinstance(get_threshold("otsu"), OtsuThreshold)
    s = get_threshold("fixed", value=200 / 255)
    assert isinstance(s, FixedThreshold) and s.value == pytest.approx(200 / 255) and "FixedThreshold" in repr(s)
    with pytest.raises(HemwslInputError, match="accepted values: fixed, percentile, otsu, search, intensity"):
        get_threshold("kmeans")


@pytest.mark.parametrize(
    "strategy",
    [FixedThreshold(0.7), PercentileThreshold(90), OtsuThreshold(), SearchedThreshold(value=0.5)],
    ids=lambda s: s.name,
)
def test_same_type_back(strategy):
    h = _map(1)
    out_np = strategy(h)
    out_t = strategy(torch.from_numpy(h).float())
    assert isinstance(out_np, np.ndarray) and out_np.dtype == bool and out_np.shape == h.shape
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.bool
    np.testing.assert_array_equal(out_t.numpy(), out_np)


# --------------------------------------------------------------------------------------------- fixed
def test_fixed_threshold_on_normalisations():
    h = np.array([[0.0, 50.0], [200.0, 255.0]])
    np.testing.assert_array_equal(FixedThreshold(200 / 255)(h), [[False, False], [False, True]])
    np.testing.assert_array_equal(FixedThreshold(199 / 255)(h), [[False, False], [True, True]])
    np.testing.assert_array_equal(FixedThreshold(0.7, normalisation="max")(h / 2), h / 255 > 0.7)
    np.testing.assert_array_equal(FixedThreshold(0.7, normalisation="none")(h / 255), h / 255 > 0.7)
    h2 = h + 100.0  # min-max removes the offset
    np.testing.assert_array_equal(FixedThreshold(0.5)(h2), (h - h.min()) / (h.max() - h.min()) > 0.5)
    assert not FixedThreshold(0.5)(np.full((3, 3), 4.0)).any()  # constant map -> zeros
    with pytest.raises(HemwslInputError, match="accepted values"):
        FixedThreshold(0.5, normalisation="zscore")


def test_per_sample_normalisation():
    h = np.stack([np.array([[0.0, 1.0]]), np.array([[0.0, 10.0]])])
    np.testing.assert_array_equal(FixedThreshold(0.5, per_sample=True)(h), [[[False, True]], [[False, True]]])
    np.testing.assert_array_equal(FixedThreshold(0.5)(h), [[[False, False]], [[False, True]]])
    got = apply_threshold(h, 0.5, normalisation="minmax", per_sample=True)
    np.testing.assert_array_equal(got, [[[False, True]], [[False, True]]])


# --------------------------------------------------------------------------------------------- percentile, Otsu
@pytest.mark.parametrize("q", [90.0, 95.0])
def test_percentile_equals_numpy(q):
    h = _map(2)
    np.testing.assert_array_equal(PercentileThreshold(q)(h), h > np.percentile(h, q))
    sparse = np.where(h > 1.5, h, 0.0)
    np.testing.assert_array_equal(
        PercentileThreshold(q, region="nonzero")(sparse), sparse > np.percentile(sparse[sparse != 0], q)
    )
    brain = np.zeros(h.shape, dtype=bool)
    brain[3:12, 2:14] = True
    got = PercentileThreshold(q, region="brain")(h, brain=brain)
    np.testing.assert_array_equal(got, (h > np.percentile(h[brain], q)) & brain)


def test_percentile_region_needs_brain():
    with pytest.raises(HemwslInputError, match="brain mask"):
        PercentileThreshold(95, region="brain")(_map(3))


def test_otsu_equals_skimage():
    rng = np.random.default_rng(4)
    h = np.concatenate([rng.normal(0.2, 0.05, 200), rng.normal(0.8, 0.05, 56)]).reshape(16, 16)
    np.testing.assert_array_equal(OtsuThreshold()(h), h > threshold_otsu(h))
    np.testing.assert_array_equal(OtsuThreshold(nbins=32)(h), h > threshold_otsu(h, nbins=32))
    vol = rng.random((6, 8, 8))
    np.testing.assert_array_equal(OtsuThreshold()(torch.from_numpy(vol)).numpy(), vol > threshold_otsu(vol))
    assert not OtsuThreshold()(np.zeros((4, 4))).any()  # constant map: no threshold, empty mask


# --------------------------------------------------------------------------------------------- search
def _synthetic_split(seed: int, n: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Lesion pixels score in [0.55, 1), background in [0, 0.45): any threshold in [0.45, 0.55) is perfect."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, 16, 16), dtype=bool)
    for i in range(n):
        r, c = rng.integers(2, 10, size=2)
        masks[i, r : r + rng.integers(2, 6), c : c + rng.integers(2, 6)] = True
    masks[0] = False  # a negative slice
    maps = np.where(masks, rng.uniform(0.55, 1.0, masks.shape), rng.uniform(0.0, 0.45, masks.shape))
    return maps, masks


@pytest.mark.parametrize("reduction", ["per_slice", "global"])
@pytest.mark.parametrize("metric", ["dice", "iou"])
def test_search_picks_known_best_threshold(metric, reduction):
    maps_val, masks_val = _synthetic_split(0)
    candidates = [0.2, 0.4, 0.5, 0.6, 0.8]
    scores = threshold_scores(maps_val, masks_val, candidates, metric=metric, reduction=reduction)
    assert scores[2] == pytest.approx(1.0) and np.all(scores[[0, 1, 3, 4]] < 1.0)
    t = search_threshold(maps_val, masks_val, candidates, metric=metric, reduction=reduction)
    assert t == 0.5
    maps_test, masks_test = _synthetic_split(1)  # applied unchanged to test
    pred = apply_threshold(maps_test, t)
    np.testing.assert_array_equal(pred, maps_test > 0.5)
    assert float(compute_dice(pred, masks_test).mean()) == pytest.approx(1.0)


def test_search_ties_take_first_candidate_and_list_input():
    maps_val, masks_val = _synthetic_split(2)
    t = search_threshold(list(maps_val), list(masks_val), [0.47, 0.5, 0.52], metric="box_dice")
    assert t == 0.47
    with pytest.raises(HemwslInputError, match="accepted values"):
        search_threshold(maps_val, masks_val, [0.5], metric="auroc")
    with pytest.raises(HemwslInputError, match="shape"):
        search_threshold(maps_val, masks_val[:, :8], [0.5])


def test_searched_threshold_strategy_fit():
    maps_val, masks_val = _synthetic_split(3)
    s = get_threshold("search", candidates=[0.2, 0.4, 0.5, 0.6, 0.8], normalisation="none", per_sample=True)
    with pytest.raises(HemwslInputError, match="fit"):
        s(maps_val)
    assert s.fit(maps_val, masks_val).value == 0.5
    maps_test, _ = _synthetic_split(4)
    np.testing.assert_array_equal(s(maps_test), maps_test > 0.5)


# --------------------------------------------------------------------------------------------- intensity prior
def test_intensity_prior_keeps_only_hu_range():
    hu = np.linspace(-20, 100, 121).reshape(11, 11)
    mask = IntensityPrior()(None, image_hu=hu)
    np.testing.assert_array_equal(mask, (hu >= 45) & (hu <= 90))
    assert hu[mask].min() == 45 and hu[mask].max() == 90
    custom = IntensityPrior(hu_range=(50, 70))(None, image_hu=torch.from_numpy(hu))
    assert isinstance(custom, torch.Tensor)
    np.testing.assert_array_equal(custom.numpy(), (hu >= 50) & (hu <= 70))
    brain = np.zeros(hu.shape, dtype=bool)
    brain[:, :5] = True
    np.testing.assert_array_equal(IntensityPrior()(None, image_hu=hu, brain=brain), (hu >= 45) & (hu <= 90) & brain)
    with pytest.raises(HemwslInputError, match="image_hu"):
        IntensityPrior()(np.zeros((3, 3)))


def test_intensity_prior_combined_with_cam():
    hu = np.linspace(-20, 100, 121).reshape(11, 11)
    cam = np.zeros_like(hu)
    cam[:, 6:] = 1.0
    blood = (hu >= 45) & (hu <= 90)
    np.testing.assert_array_equal(IntensityPrior(cam=0.5)(cam, image_hu=hu), blood & (cam > 0.5))
    either = IntensityPrior(cam=FixedThreshold(0.5), combine="or")(cam, image_hu=hu)
    np.testing.assert_array_equal(either, blood | (cam > 0.5))
    with pytest.raises(HemwslInputError, match="heatmap"):
        IntensityPrior(cam=0.5)(None, image_hu=hu)


# --------------------------------------------------------------------------------------------- post-processing
def _components() -> np.ndarray:
    m = np.zeros((12, 12), dtype=bool)
    m[0, 0] = True  # 1 voxel
    m[5, 5] = m[6, 6] = m[7, 7] = True  # 3 voxels, diagonal: one component with 8-connectivity
    m[9:11, 2:7] = True  # 10 voxels
    return m


def test_remove_small_components():
    m = _components()
    kept = remove_small_components(m, 4)
    expected = np.zeros_like(m)
    expected[9:11, 2:7] = True
    np.testing.assert_array_equal(kept, expected)
    np.testing.assert_array_equal(remove_small_components(m, 3), m & ~(np.arange(144).reshape(12, 12) == 0))
    np.testing.assert_array_equal(remove_small_components(m, 2, connectivity=1), expected)  # 4-connectivity splits
    out_t = remove_small_components(torch.from_numpy(m), 4)
    assert isinstance(out_t, torch.Tensor) and torch.equal(out_t, torch.from_numpy(expected))
    np.testing.assert_array_equal(remove_small_components(m, 0), m)
    vol = np.zeros((5, 5, 5), dtype=bool)
    vol[0, 0, 0] = vol[1, 1, 1] = True  # 26-connected in 3D
    np.testing.assert_array_equal(remove_small_components(vol, 2), vol)


def test_strategy_post_processing():
    m = _components()
    h = m.astype(float)
    brain = np.ones_like(m)
    brain[10:, :] = False
    out = FixedThreshold(0.5, min_size=4)(h, brain=brain)
    expected = np.zeros_like(m)
    expected[9, 2:7] = True  # restricted first (5 voxels left), then filtered
    np.testing.assert_array_equal(out, expected)
    unrestricted = FixedThreshold(0.5, restrict_to_brain=False, min_size=4)(h, brain=brain)
    np.testing.assert_array_equal(unrestricted, remove_small_components(m, 4))
    np.testing.assert_array_equal(restrict_to_mask(m, brain), m & brain)
    with pytest.raises(HemwslInputError, match="shape"):
        FixedThreshold(0.5)(h, brain=brain[:5])


def test_normalise_map():
    h = np.array([1.0, 2.0, 5.0])
    np.testing.assert_allclose(normalise_map(h, "minmax"), [0.0, 0.25, 1.0])
    np.testing.assert_allclose(normalise_map(h, "max"), [0.2, 0.4, 1.0])
    np.testing.assert_allclose(normalise_map(-h, "max"), [0.0, 0.0, 0.0])


def test_subtype_rule_youden_then_argmax():
    from hemwsl.metrics import youden_threshold
    from hemwsl.thresholds import SubtypeRule

    rng = np.random.default_rng(0)
    y = (rng.random((60, 2)) > 0.5).astype(float)
    p = np.clip(y * 0.6 + rng.random((60, 2)) * 0.5, 0, 1)
    rule = SubtypeRule(mask_threshold=0.5).fit(y, p)
    np.testing.assert_allclose(rule.class_thresholds, [youden_threshold(y[:, k], p[:, k])[0] for k in range(2)])
    rule = SubtypeRule(class_thresholds=[0.5, 0.5], mask_threshold=0.5)
    cams = np.zeros((2, 2, 1, 4))
    cams[:, 0, 0] = [0.0, 1.0, 0.8, 0.1]  # subtype 0 strong on pixels 1, 2
    cams[:, 1, 0] = [0.0, 0.6, 1.0, 1.0]  # subtype 1 strong on pixels 2, 3 (minmax: 0, .6, 1, 1)
    labels = rule(np.array([[0.9, 0.9], [0.9, 0.2]]), cams)
    np.testing.assert_array_equal(labels[0, 0], [0, 1, 2, 2])  # pixel 1: .99 vs .6 -> 1; pixel 2: .8 vs 1 -> 2
    np.testing.assert_array_equal(labels[1, 0], [0, 1, 1, 0])  # subtype 1 absent on slice 2
    brain = np.ones((2, 1, 4), bool)
    brain[:, 0, 1] = False
    assert rule(np.array([[0.9, 0.9], [0.9, 0.2]]), cams, brain=brain)[0, 0, 1] == 0
    with pytest.raises(HemwslInputError, match="class thresholds"):
        SubtypeRule()(np.zeros((1, 2)), np.zeros((1, 2, 2, 2)))
    with pytest.raises(HemwslInputError, match=r"\(N, K, H, W\)"):
        rule(np.zeros((1, 2)), np.zeros((1, 3, 2, 2)))


def test_intensity_prior_keeps_touched_components_whole():
    from hemwsl.thresholds.intensity import touched_components

    hu = np.zeros((10, 10))
    hu[1:4, 1:4] = 60  # component A (9 px)
    hu[6:9, 6:9] = 60  # component B (9 px)
    hu[0, 9] = 60  # component C (1 px)
    cam = np.zeros((10, 10))
    cam[2, 2] = 1.0  # touches A only
    cam[0, 9] = 1.0  # touches C
    got = IntensityPrior(hu_range=(50, 90), cam=0.5, combine="components")(cam, image_hu=hu)
    want = np.zeros((10, 10), bool)
    want[1:4, 1:4] = True
    want[0, 9] = True
    np.testing.assert_array_equal(got, want)
    # the size filter comes before the choice: C is dropped, A kept whole
    got = IntensityPrior(hu_range=(50, 90), cam=0.5, combine="components", min_size=2)(cam, image_hu=hu)
    want[0, 9] = False
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(touched_components(hu > 50, np.zeros((10, 10), bool)), np.zeros((10, 10), bool))
    with pytest.raises(HemwslInputError, match="needs a cam"):
        IntensityPrior(combine="components")


def test_grow_is_a_geodesic_dilation_into_the_hu_range_inside_the_brain():
    """``grow`` adds the neighbours (8-connectivity) of the mask whose HU is in ``grow_hu`` and that lie in the
    brain, ``grow`` steps deep, by hand on a 7 x 7 slice."""
    from hemwsl.thresholds.base import grow_into

    hu = np.zeros((7, 7))
    hu[3, 3] = 70.0  # the prior finds one pixel
    hu[3, 4] = hu[3, 5] = 45.0  # an edge at 45 HU, two steps long
    hu[2, 2] = 95.0  # a diagonal neighbour in range
    hu[4, 3] = 20.0  # below the range: never
    brain = np.ones((7, 7), bool)
    brain[2, 2] = False  # ... but outside the brain
    prior = IntensityPrior(hu_range=(50, 90), grow=1)
    got = prior(None, image_hu=hu, brain=brain)
    want = np.zeros((7, 7), bool)
    want[3, 3] = want[3, 4] = True
    np.testing.assert_array_equal(got, want)
    got2 = IntensityPrior(hu_range=(50, 90), grow=2)(None, image_hu=hu, brain=brain)
    want[3, 5] = True
    np.testing.assert_array_equal(got2, want)
    got2 = IntensityPrior(hu_range=(50, 90), grow=2)(None, image_hu=hu)  # no brain mask: the diagonal pixel too
    assert got2[2, 2]
    assert not grow_into(np.zeros((3, 3), bool), np.ones((3, 3), bool), 2).any()
    np.testing.assert_array_equal(IntensityPrior(hu_range=(50, 90))(None, image_hu=hu), hu == 70.0)  # grow=0: as before


def test_grow_needs_hu_and_a_valid_amount():
    with pytest.raises(HemwslInputError, match="image_hu"):
        FixedThreshold(0.5, grow=1)(_map())
    with pytest.raises(HemwslInputError, match="grow"):
        FixedThreshold(0.5, grow=-1)
    with pytest.raises(HemwslInputError, match="grow_hu"):
        FixedThreshold(0.5, grow=1, grow_hu=(100, 40))
    assert "grow=1" in repr(FixedThreshold(0.5, grow=1)) and "grow" not in repr(FixedThreshold(0.5))


# ------------------------------------------------------------------------------------------ HU calibration
def test_calibrate_hu_hand_values():
    from hemwsl.thresholds import BRAIN_REFERENCE_HU, brain_reference_hu, calibrate_hu, check_hu_reference

    hu = np.full((40, 40, 3), -20.0, dtype=np.float32)
    brain = np.zeros(hu.shape, dtype=bool)
    brain[5:35, 5:35] = True                       # 2,700 brain voxels
    hu[brain] = 40.0
    hu[5:10, 5:35] = 90.0                           # 450 voxels outside 0-80: not counted
    hu[10:12, 5:35, 0] = -5.0                       # CSF below 0: not counted
    hu[12:14, 5:35] = 44.0                          # 180 voxels at 44: the median stays 40
    assert brain_reference_hu(hu, brain) == 40.0
    shifted, shift = calibrate_hu(hu, brain, 37.0)
    assert shift == 3.0 and shifted.dtype == np.float32
    np.testing.assert_allclose(shifted, hu - 3.0)
    # reference None, or no brain: unchanged
    assert calibrate_hu(hu, brain, None)[1] == 0.0
    assert calibrate_hu(hu, np.zeros_like(brain))[1] == 0.0 and brain_reference_hu(hu, np.zeros_like(brain)) is None
    assert BRAIN_REFERENCE_HU == 37.0 and check_hu_reference("37") == 37.0 and check_hu_reference(None) is None
    for bad in ("abc", float("nan"), 1e4, True):
        with pytest.raises(HemwslInputError, match="hu_reference"):
            check_hu_reference(bad)
    with pytest.raises(HemwslInputError, match="shape"):
        brain_reference_hu(hu, brain[..., :2])
