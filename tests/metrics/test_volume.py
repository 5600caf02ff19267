"""Volume metrics: hand-computed values, anisotropic spacing, MONAI and brute-force references, empty masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import (
    DiceMetric,
    compute_average_surface_distance,
    compute_hausdorff_distance,
)
from monai.metrics import compute_surface_dice as monai_surface_dice
from scipy import ndimage
from scipy.spatial.distance import cdist

from hemwsl.errors import HemwslInputError
from hemwsl.metrics import (
    EMPTY_POLICY,
    VOLUME_METRIC_KEYS,
    VolumeMetrics,
    compute_assd,
    compute_hd95,
    compute_rvd,
    compute_surface_dice,
    compute_tpr,
    compute_volume_dice,
    lesion_volume_ml,
    volume_metrics,
)

NAN = float("nan")
# MONAI's own surface code announces the deprecation of one of its internal arguments
pytestmark = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy")
ANISO = (0.5, 0.5, 5.0)


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-5)


def _column() -> tuple[np.ndarray, np.ndarray]:
    """GT: two voxels stacked in z; prediction: the lower one."""
    g = np.zeros((10, 10, 6), dtype=bool)
    g[5, 5, 2:4] = True
    p = np.zeros_like(g)
    p[5, 5, 2] = True
    return p, g


def _blobs(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two overlapping random ellipsoid-ish blobs away from the borders."""
    rng = np.random.default_rng(seed)
    x, y, z = np.mgrid[:24, :24, :10]

    def blob(c, r):
        return ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2 <= 1.0

    g = blob((12, 12, 5), (6, 5, 2.5)) | blob((8, 15, 4), (3, 3, 1.5))
    p = blob((12 + rng.integers(-2, 3), 11, 5), (5, 6, 2)) & ~(rng.random(g.shape) < 0.05)
    return p, g


# --------------------------------------------------------------------------------------------- by hand
def test_column_by_hand_anisotropic():
    p, g = _column()
    # surfaces: every voxel; pred->gt distances [0], gt->pred [0, 5 mm]
    assert compute_volume_dice(p, g) == pytest.approx(2 / 3, abs=1e-6)
    assert compute_rvd(p, g) == pytest.approx(-0.5)
    assert compute_tpr(p, g) == pytest.approx(0.5)
    assert compute_hd95(p, g, ANISO) == pytest.approx(0.95 * 5.0)  # linear 95th percentile of [0, 5]
    assert compute_hd95(p, g, ANISO, percentile=100) == pytest.approx(5.0)
    assert compute_assd(p, g, ANISO) == pytest.approx(5.0 / 3)
    assert compute_surface_dice(p, g, ANISO, tolerance_mm=2.0) == pytest.approx(2 / 3)
    assert compute_surface_dice(p, g, ANISO, tolerance_mm=5.0) == pytest.approx(1.0)
    assert lesion_volume_ml(g, ANISO) == pytest.approx(2 * 0.5 * 0.5 * 5.0 / 1000)


def test_spacing_is_honoured():
    p = np.zeros((12, 12, 8), dtype=bool)
    g = np.zeros_like(p)
    p[5, 5, 2] = True
    g[5, 5, 4] = True  # two slices apart
    assert compute_hd95(p, g, ANISO) == pytest.approx(10.0)
    assert compute_hd95(p, g, (1.0, 1.0, 1.0)) == pytest.approx(2.0)
    q = np.zeros_like(p)
    q[5, 9, 2] = True  # four pixels apart in plane
    assert compute_hd95(p, q, ANISO) == pytest.approx(2.0)
    assert compute_assd(p, q, ANISO) == pytest.approx(2.0)
    assert compute_surface_dice(p, g, ANISO, tolerance_mm=9.9) == 0.0
    assert compute_surface_dice(p, g, ANISO, tolerance_mm=10.0) == 1.0
    block = np.zeros((20, 20, 6), dtype=bool)
    block[2:12, 2:12, 1:5] = True  # 400 voxels of 1.25 mm^3
    assert lesion_volume_ml(block, ANISO) == pytest.approx(0.5)
    assert lesion_volume_ml(torch.from_numpy(block), [1.0, 1.0, 1.0]) == pytest.approx(0.4)


# --------------------------------------------------------------------------------------------- references
@pytest.mark.parametrize("seed", [0, 1])
def test_match_monai(seed):
    p, g = _blobs(seed)
    tp, tg = torch.from_numpy(p)[None, None].float(), torch.from_numpy(g)[None, None].float()
    kw = {"include_background": True, "spacing": ANISO}
    hd = float(compute_hausdorff_distance(tp, tg, percentile=95, **kw))
    asd = float(compute_average_surface_distance(tp, tg, symmetric=True, **kw))
    nsd = float(monai_surface_dice(tp, tg, [2.0], **kw))
    dice = float(DiceMetric(include_background=True, ignore_empty=False)(tp, tg))
    m = volume_metrics(p, g, ANISO, tolerance_mm=2.0)
    assert m["hd95"] == pytest.approx(hd, rel=1e-6)
    assert m["assd"] == pytest.approx(asd, rel=1e-6)
    assert m["surface_dice"] == pytest.approx(nsd, rel=1e-6)
    assert m["dice"] == pytest.approx(dice, rel=1e-6)
    assert set(m) == set(VOLUME_METRIC_KEYS)


def test_hd95_matches_brute_force_with_spacing():
    p, g = _blobs(2)

    def surface_mm(m):
        edge = m & ~ndimage.binary_erosion(m)
        return np.argwhere(edge) * np.asarray(ANISO)

    d = cdist(surface_mm(p), surface_mm(g))
    expected = max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95))
    assert compute_hd95(p, g, ANISO) == pytest.approx(expected, rel=1e-5)
    assert compute_assd(p, g, ANISO) == pytest.approx(np.concatenate([d.min(1), d.min(0)]).mean(), rel=1e-5)


def test_rvd_tpr_volume_by_counts():
    p, g = _blobs(3)
    assert compute_rvd(p, g) == pytest.approx((p.sum() - g.sum()) / g.sum())
    assert compute_tpr(p, g) == pytest.approx((p & g).sum() / g.sum())
    m = volume_metrics(p, g, ANISO)
    assert m["pred_ml"] == pytest.approx(p.sum() * 1.25 / 1000)
    assert m["gt_ml"] == pytest.approx(g.sum() * 1.25 / 1000)


# --------------------------------------------------------------------------------------------- empty masks
EXPECTED_EMPTY = {  # (both empty, only GT empty, only prediction empty), written out independently
    "dice": (1.0, 0.0, 0.0),
    "rvd": (0.0, NAN, -1.0),
    "tpr": (NAN, NAN, 0.0),
    "hd95": (0.0, NAN, NAN),
    "assd": (0.0, NAN, NAN),
    "surface_dice": (1.0, 0.0, 0.0),
}
POLICY_KEY = {"dice": "volume_dice"}
CASES = {"both_empty": 0, "gt_empty": 1, "pred_empty": 2}


def _case(case: str) -> tuple[np.ndarray, np.ndarray]:
    lesion = np.zeros((8, 8, 4), dtype=bool)
    lesion[3:5, 3:5, 1:3] = True
    empty = np.zeros_like(lesion)
    return {"both_empty": (empty, empty), "gt_empty": (lesion, empty), "pred_empty": (empty, lesion)}[case]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("metric", list(EXPECTED_EMPTY))
def test_empty_mask_policy(metric, case):
    p, g = _case(case)
    expected = EXPECTED_EMPTY[metric][CASES[case]]
    assert _same(volume_metrics(p, g, ANISO)[metric], expected)
    assert _same(EMPTY_POLICY[POLICY_KEY.get(metric, metric)][case], expected)


@pytest.mark.parametrize("case", ["gt_empty", "pred_empty"])
def test_max_distance_replaces_nan_in_one_sided_cases(case):
    p, g = _case(case)
    assert compute_hd95(p, g, ANISO, max_distance=150.0) == 150.0
    assert compute_assd(p, g, ANISO, max_distance=150.0) == 150.0
    empty = np.zeros_like(p)
    assert compute_hd95(empty, empty, ANISO, max_distance=150.0) == 0.0
    q, h = _column()
    assert compute_hd95(q, h, ANISO, max_distance=1.0) == pytest.approx(4.75)  # defined values are not clipped


def test_empty_volumes_are_zero_ml():
    assert lesion_volume_ml(np.zeros((4, 4, 4)), ANISO) == 0.0


# --------------------------------------------------------------------------------------------- class, errors
def test_volume_metrics_class_nan_aware():
    p, g = _column()
    empty = np.zeros_like(g)
    preds = torch.from_numpy(np.stack([p, p, empty]))[:, None]  # (B, 1, X, Y, Z)
    gts = torch.from_numpy(np.stack([g, empty, empty]))[:, None]
    metric = VolumeMetrics(tolerance_mm=2.0)
    metric(preds[:2], gts[:2], spacing=[ANISO, (1.0, 1.0, 1.0)])  # one spacing per volume
    metric(preds[2:], gts[2:], spacing=ANISO)
    per_case = metric.aggregate("none")
    np.testing.assert_allclose(per_case["dice"].numpy(), [2 / 3, 0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(per_case["gt_ml"].numpy(), [0.0025, 0.0, 0.0])
    np.testing.assert_allclose(per_case["pred_ml"].numpy(), [0.00125, 0.001, 0.0])
    mean = metric.aggregate()
    assert mean["hd95"] == pytest.approx((4.75 + 0.0) / 2)  # the NaN of case 2 is skipped
    assert mean["tpr"] == pytest.approx(0.5)  # only case 1 defines a TPR
    assert mean["rvd"] == pytest.approx((-0.5 + 0.0) / 2)


def test_bad_inputs_raise():
    p, g = _column()
    with pytest.raises(HemwslInputError, match="spacing"):
        compute_hd95(p, g, (1.0, 1.0))
    with pytest.raises(HemwslInputError, match="positive"):
        lesion_volume_ml(g, (1.0, 0.0, 1.0))
    with pytest.raises(HemwslInputError, match="required"):
        volume_metrics(p, g, None)
    with pytest.raises(HemwslInputError, match="differ in shape"):
        compute_volume_dice(p[:-1], g)
    with pytest.raises(HemwslInputError, match="binary"):
        compute_tpr(p * 2, g)
    with pytest.raises(HemwslInputError, match="spacing"):
        VolumeMetrics()(torch.from_numpy(p)[None], torch.from_numpy(g)[None])
