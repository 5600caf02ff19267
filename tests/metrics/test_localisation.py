"""Slice-level localisation metrics: hand-computed values, MONAI/scikit-learn references, the empty-mask policy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric, MeanIoU
from sklearn.metrics import jaccard_score

from hemwsl.errors import HemwslInputError
from hemwsl.metrics import (
    EMPTY_POLICY,
    BoxDiceMetric,
    BoxIoUMetric,
    DiceScoreMetric,
    HitRateMetric,
    IoUScoreMetric,
    MeanClassIoUMetric,
    PointingGameMetric,
    apply_empty_policy,
    bounding_box_mask,
    compute_box_dice,
    compute_box_iou,
    compute_class_iou,
    compute_dice,
    compute_global_dice,
    compute_global_iou,
    compute_hit,
    compute_iou,
    compute_low_iou_rate,
    compute_miou,
    compute_pointing_game,
    empty_value,
)

NAN = float("nan")


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-6)


def _squares() -> tuple[np.ndarray, np.ndarray]:
    """Slice 0: two 2x2 squares overlapping in 1 pixel; slice 1: identical 1x2 bars."""
    p = np.zeros((2, 6, 6), dtype=bool)
    g = np.zeros_like(p)
    p[0, 1:3, 1:3] = True
    g[0, 2:4, 2:4] = True
    p[1, 4, 1:3] = True
    g[1, 4, 1:3] = True
    return p, g


def _random_masks(seed: int = 0, n: int = 6, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    p = rng.random((n, 1, size, size)) < 0.3
    g = rng.random((n, 1, size, size)) < 0.3
    return torch.from_numpy(p), torch.from_numpy(g)


# --------------------------------------------------------------------------------------------- Dice / IoU
def test_dice_iou_by_hand():
    p, g = _squares()
    np.testing.assert_allclose(compute_dice(p, g).numpy(), [2 * 1 / (4 + 4), 1.0])
    np.testing.assert_allclose(compute_iou(p, g).numpy(), [1 / 7, 1.0])
    # global: intersections 1 + 2, sizes (4 + 2) + (4 + 2)
    assert compute_global_dice(p, g) == pytest.approx(2 * 3 / 12)
    assert compute_global_iou(p, g) == pytest.approx(3 / (12 - 3))


def test_dice_iou_match_monai():
    p, g = _random_masks()
    dm = DiceMetric(include_background=True, ignore_empty=False, reduction="none")
    im = MeanIoU(include_background=True, ignore_empty=False, reduction="none")
    np.testing.assert_allclose(compute_dice(p, g).numpy(), dm(p.float(), g.float()).reshape(-1).numpy(), atol=1e-6)
    np.testing.assert_allclose(compute_iou(p, g).numpy(), im(p.float(), g.float()).reshape(-1).numpy(), atol=1e-6)


def test_global_dice_pools_pixels():
    p, g = _random_masks(seed=3)
    inter = float((p & g).sum())
    assert compute_global_dice(p, g) == pytest.approx(2 * inter / float(p.sum() + g.sum()))
    assert compute_global_iou(p, g) == pytest.approx(inter / float((p | g).sum()))


def test_input_layouts_and_types_agree():
    p, g = _squares()
    ref = compute_dice(p, g)
    torch.testing.assert_close(compute_dice(torch.from_numpy(p[:, None]), torch.from_numpy(g[:, None])), ref)
    torch.testing.assert_close(compute_dice(p.astype(np.uint8), g.astype(np.float32)), ref)
    torch.testing.assert_close(compute_dice(p[0], g[0]), ref[:1])  # one (H, W) slice


def test_bad_inputs_raise():
    p, g = _squares()
    with pytest.raises(HemwslInputError, match="binary"):
        compute_dice(p * 0.5, g)
    with pytest.raises(HemwslInputError, match="differ in shape"):
        compute_iou(p[:, :5], g)
    with pytest.raises(HemwslInputError, match="shape"):
        compute_hit(np.zeros((2, 2, 4, 4)), np.zeros((2, 2, 4, 4)))
    with pytest.raises(HemwslInputError, match="NaN"):
        compute_pointing_game(np.full((1, 4, 4), np.nan), np.zeros((1, 4, 4)))


# --------------------------------------------------------------------------------------------- boxes
def test_bounding_box_mask_8_connectivity_and_union():
    m = np.zeros((1, 7, 7), dtype=bool)
    m[0, 0, 0] = m[0, 1, 1] = True  # diagonal neighbours: one component with 8-connectivity
    m[0, 4, 4] = m[0, 6, 6] = True  # not neighbours: two 1-pixel boxes
    box = bounding_box_mask(m).numpy()[0]
    expected = np.zeros((7, 7), dtype=bool)
    expected[0:2, 0:2] = True
    expected[4, 4] = expected[6, 6] = True
    np.testing.assert_array_equal(box, expected)


def test_box_dice_iou_by_hand():
    p = np.zeros((2, 8, 8), dtype=bool)
    g = np.zeros_like(p)
    p[0, 0, 0] = p[0, 1, 1] = True  # box [0:2, 0:2]
    g[0, 0:2, 0:2] = True  # box [0:2, 0:2]
    p[1, 0:2, 0:4] = True  # box 2x4 = 8 pixels
    g[1, 0:4, 2] = True  # box 4x1 = 4 pixels, overlap 2
    np.testing.assert_allclose(compute_box_dice(p, g).numpy(), [1.0, 2 * 2 / (8 + 4)])
    np.testing.assert_allclose(compute_box_iou(p, g).numpy(), [1.0, 2 / (8 + 4 - 2)])
    # pixel Dice of slice 0 is lower than its box Dice
    assert float(compute_dice(p, g)[0]) == pytest.approx(2 * 2 / (2 + 4))


def test_box_dice_matches_monai_on_boxes():
    p, g = _random_masks(seed=5, n=4)
    bp, bg = bounding_box_mask(p), bounding_box_mask(g)
    dm = DiceMetric(include_background=True, ignore_empty=False, reduction="none")
    ref = dm(bp[:, None].float(), bg[:, None].float())
    np.testing.assert_allclose(compute_box_dice(p, g).numpy(), ref.reshape(-1).numpy(), atol=1e-6)


# --------------------------------------------------------------------------------------------- hit, pointing
def test_hit_by_hand():
    p = np.zeros((2, 5, 5), dtype=bool)
    g = np.zeros_like(p)
    p[0, 0:2, 0:2] = True
    g[0, 1:4, 1:4] = True  # overlap of one pixel
    p[1, 0, 0] = True
    g[1, 3:5, 3:5] = True  # disjoint
    np.testing.assert_array_equal(compute_hit(p, g).numpy(), [1.0, 0.0])


def test_pointing_game_by_hand_and_ties():
    g = np.zeros((4, 4, 4), dtype=bool)
    g[:, 2:4, 2:4] = True
    h = np.zeros((4, 4, 4))
    h[0, 3, 3] = 1.0  # maximum inside
    h[1, 0, 0] = 1.0  # maximum outside
    h[2, 0, 1] = h[2, 3, 3] = 1.0  # tie: the first in row-major order, (0, 1), is outside
    h[3, 2, 2] = h[3, 3, 0] = 1.0  # tie: the first, (2, 2), is inside
    np.testing.assert_array_equal(compute_pointing_game(h, g).numpy(), [1.0, 0.0, 0.0, 1.0])
    assert int(np.argmax(h[2])) == 1  # numpy agrees on "first maximum"


# --------------------------------------------------------------------------------------------- classes
def test_class_iou_and_miou_match_sklearn():
    rng = np.random.default_rng(7)
    yp = rng.integers(0, 4, size=(3, 12, 12))
    yt = rng.integers(0, 4, size=(3, 12, 12))
    yt[2][yt[2] == 3] = 0  # class 3 absent from one ground truth (still in the prediction)
    cls = compute_class_iou(yp, yt, num_classes=4).numpy()
    for b in range(3):
        ref = jaccard_score(yt[b].ravel(), yp[b].ravel(), labels=[1, 2, 3], average=None)
        np.testing.assert_allclose(cls[b], ref, atol=1e-9)
        assert float(compute_miou(yp, yt, num_classes=4)[b]) == pytest.approx(ref.mean())


def test_miou_skips_absent_classes():
    yt = np.array([[[0, 1, 1], [0, 0, 0]]])
    yp = np.array([[[0, 1, 0], [0, 0, 0]]])  # class 2 absent from both maps
    cls = compute_class_iou(yp, yt, num_classes=3).numpy()[0]
    assert cls[0] == pytest.approx(0.5) and math.isnan(cls[1])
    assert float(compute_miou(yp, yt, num_classes=3)[0]) == pytest.approx(0.5)
    with pytest.raises(HemwslInputError, match="num_classes"):
        compute_class_iou(yp + 2, yt, num_classes=3)


def test_low_iou_rate():
    assert compute_low_iou_rate([0.0, 0.005, 0.01, 0.5, NAN]) == pytest.approx(3 / 4)
    assert compute_low_iou_rate(torch.tensor([0.2, 0.3]), threshold=0.25) == pytest.approx(0.5)
    assert math.isnan(compute_low_iou_rate([NAN]))


# --------------------------------------------------------------------------------------------- empty masks
EXPECTED_EMPTY = {  # (both empty, only GT empty, only prediction empty), written out independently
    "dice": (1.0, 0.0, 0.0),
    "iou": (1.0, 0.0, 0.0),
    "global_dice": (1.0, 0.0, 0.0),
    "global_iou": (1.0, 0.0, 0.0),
    "box_dice": (1.0, 0.0, 0.0),
    "box_iou": (1.0, 0.0, 0.0),
    "hit": (1.0, 0.0, 0.0),
    "miou": (1.0, 0.0, 0.0),
    "pointing_game": (NAN, NAN, 0.0),
}
FUNCS = {
    "dice": lambda p, g: float(compute_dice(p, g)[0]),
    "iou": lambda p, g: float(compute_iou(p, g)[0]),
    "global_dice": compute_global_dice,
    "global_iou": compute_global_iou,
    "box_dice": lambda p, g: float(compute_box_dice(p, g)[0]),
    "box_iou": lambda p, g: float(compute_box_iou(p, g)[0]),
    "hit": lambda p, g: float(compute_hit(p, g)[0]),
    "miou": lambda p, g: float(compute_miou(p.astype(int) * 2, g.astype(int) * 2, num_classes=3)[0]),
    # the prediction of the pointing game is a heatmap; an empty (constant) heatmap is all zero
    "pointing_game": lambda p, g: float(compute_pointing_game(p.astype(float) * 0.9, g)[0]),
}
CASES = {"both_empty": 0, "gt_empty": 1, "pred_empty": 2}


def _case_masks(case: str) -> tuple[np.ndarray, np.ndarray]:
    lesion = np.zeros((1, 6, 6), dtype=bool)
    lesion[0, 2:4, 2:4] = True
    empty = np.zeros_like(lesion)
    return {"both_empty": (empty, empty), "gt_empty": (lesion, empty), "pred_empty": (empty, lesion)}[case]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("metric", list(FUNCS))
def test_empty_mask_policy(metric, case):
    p, g = _case_masks(case)
    expected = EXPECTED_EMPTY[metric][CASES[case]]
    assert _same(FUNCS[metric](p, g), expected)
    key = metric.replace("global_", "")
    assert _same(EMPTY_POLICY[key][case], expected)


def test_policy_table_is_read_only_and_complete():
    assert set(EMPTY_POLICY) >= {"dice", "iou", "box_dice", "box_iou", "hit", "miou", "pointing_game"}
    for row in EMPTY_POLICY.values():
        assert set(row) == {"both_empty", "gt_empty", "pred_empty"}
    with pytest.raises(TypeError):
        EMPTY_POLICY["dice"]["both_empty"] = 0.0  # type: ignore[index]
    with pytest.raises(HemwslInputError, match="accepted values"):
        empty_value("nope", "both_empty")


def test_apply_empty_policy_leaves_defined_cases():
    values = torch.tensor([0.3, 0.4, 0.5, 0.6])
    out = apply_empty_policy(values, torch.tensor([1, 0, 1, 0]), torch.tensor([1, 0, 0, 1]), "hd95", max_distance=50.0)
    np.testing.assert_allclose(out.numpy(), [0.3, 0.0, 50.0, 50.0], rtol=1e-6)


# --------------------------------------------------------------------------------------------- MONAI classes
def test_dice_score_metric_accumulates_both_reductions():
    p, g = _random_masks(seed=11, n=6)
    g[0] = False  # an empty ground truth with a non-empty prediction
    p[1] = g[1] = False  # both empty
    metric = DiceScoreMetric()
    metric(p[:3], g[:3])
    metric(y_pred=list(p[3:]), y=list(g[3:]))  # list of channel-first slices
    agg = metric.aggregate()
    per_slice = compute_dice(p, g)
    assert agg["per_slice"] == pytest.approx(float(per_slice.mean()))
    assert agg["global"] == pytest.approx(compute_global_dice(p, g))
    ref = DiceMetric(include_background=True, ignore_empty=False, reduction="mean")
    ref(p.float(), g.float())
    assert agg["per_slice"] == pytest.approx(float(ref.aggregate()), abs=1e-6)
    torch.testing.assert_close(metric.aggregate("none"), per_slice)
    assert metric.aggregate("global") == agg["global"]
    metric.reset()
    assert math.isnan(metric.aggregate("per_slice"))


def test_overlap_metrics_positive_only_and_iou_box():
    p, g = _random_masks(seed=13, n=5)
    g[0] = False
    pos = g.flatten(1).any(1)
    m = IoUScoreMetric(reduction="per_slice", positive_only=True)
    m(p, g)
    assert m.aggregate() == pytest.approx(float(compute_iou(p, g)[pos].mean()))
    mi = MeanIoU(include_background=True, ignore_empty=True)  # MONAI: NaN (skipped) for empty GT
    mi(p.float(), g.float())
    assert m.aggregate() == pytest.approx(float(mi.aggregate()), abs=1e-6)
    for cls, fn in ((BoxDiceMetric, compute_box_dice), (BoxIoUMetric, compute_box_iou)):
        bm = cls()
        bm(p, g)
        assert bm.aggregate()["per_slice"] == pytest.approx(float(fn(p, g).mean()))
    with pytest.raises(HemwslInputError, match="accepted values"):
        DiceScoreMetric(reduction="median")


def test_hit_pointing_miou_metrics():
    g = np.zeros((3, 4, 4), dtype=bool)
    g[0, 2:, 2:] = g[1, 2:, 2:] = True
    h = np.zeros((3, 4, 4))
    h[0, 3, 3] = h[1, 0, 0] = h[2, 1, 1] = 1.0
    pg = PointingGameMetric()
    pg(torch.from_numpy(h), torch.from_numpy(g))
    assert pg.aggregate() == pytest.approx(0.5)  # slice 2 has no lesion: NaN, skipped
    hr = HitRateMetric()
    hr(torch.from_numpy(h > 0.5), torch.from_numpy(g))
    assert hr.aggregate() == pytest.approx(1 / 3)  # hit, miss, false alarm
    yt = torch.tensor([[[0, 1, 1], [2, 2, 0]], [[0, 0, 0], [0, 0, 0]]])
    yp = torch.tensor([[[0, 1, 0], [2, 2, 2]], [[0, 0, 0], [0, 0, 0]]])
    mm = MeanClassIoUMetric(num_classes=3)
    mm(yp, yt)
    out = mm.aggregate()
    assert out["miou"] == pytest.approx(((0.5 + 2 / 3) / 2 + 1.0) / 2)
    assert out["per_class"] == pytest.approx([0.5, 2 / 3])
    assert out["low_iou_rate"] == 0.0


def test_box_mask_and_component_filter_equal_whole_slice_labelling():
    """The crop-to-content shortcuts (label the nonzero box only; straight components are their own box) give
    the boxes and components of labelling the whole slice."""
    from scipy import ndimage

    from hemwsl.metrics.localisation import bounding_box_mask
    from hemwsl.thresholds.postprocess import remove_small_components

    rng = np.random.default_rng(0)
    masks = rng.random((6, 64, 64)) > 0.93
    masks[1] = False
    masks[2, 10:30, 40:44] = True  # a solid block among scattered pixels
    masks[3] = False
    masks[3, 5, 7:20] = True  # one straight line
    ref = np.zeros_like(masks)
    for b, m in enumerate(masks):
        labels, _ = ndimage.label(m, structure=np.ones((3, 3), bool))
        for sl in ndimage.find_objects(labels):
            ref[b][sl] = True
    np.testing.assert_array_equal(bounding_box_mask(masks).numpy(), ref)
    for b, m in enumerate(masks):
        labels, n = ndimage.label(m, structure=np.ones((3, 3), bool))
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        keep = sizes >= 3
        keep[0] = False
        np.testing.assert_array_equal(remove_small_components(m, 3), keep[labels])
