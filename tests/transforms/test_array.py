"""Tests of hemwsl.transforms.array against hand-computed values."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from hemwsl.constants import WINDOWS
from hemwsl.errors import HemwslInputError
from hemwsl.transforms import (
    HistogramEqualize,
    MultiWindow,
    SkullStrip,
    SliceStack,
    Window,
    resolve_window,
    stack_indices,
)

AIR, BONE, BRAIN = -1000.0, 1000.0, 35.0


def head_slice(
    n: int = 96,
    r_brain: float = 30.0,
    r_skull: float = 37.0,
    clip: tuple[float, float] | None = None,
    noise: float = 0.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A (1, n, n) phantom: brain disc (35 HU) in a bone ring (1000 HU) in air (-1000 HU).

    Returns the float32 slice and the inner disc (bool, (n, n)).
    """
    yy, xx = np.mgrid[:n, :n]
    dist = np.hypot(yy - (n - 1) / 2, xx - (n - 1) / 2)
    img = np.full((n, n), AIR)
    img[dist < r_skull] = BONE
    img[dist < r_brain] = BRAIN
    if noise:
        img = img + np.random.default_rng(seed).normal(0.0, noise, img.shape)
    if clip is not None:
        img = np.clip(img, *clip)
    return img[None].astype(np.float32), dist < r_brain


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


# ------------------------------------------------------------------------------------ windows


HU = np.array([[-50.0, 0.0, 20.0, 40.0, 80.0, 100.0]], dtype=np.float32)


def test_window_brain_values_numpy():
    out = Window(level=40, width=80)(HU)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.0, 0.0, 0.25, 0.5, 1.0, 1.0]], atol=1e-7)


def test_window_brain_values_tensor_and_int():
    out = Window(40, 80)(torch.tensor([[0, 40, 80, 100]], dtype=torch.int16))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.5, 1.0, 1.0]]))


def test_window_keeps_metatensor():
    img = MetaTensor(torch.as_tensor(HU), affine=torch.eye(4) * 2)
    out = Window(window="brain")(img)
    assert isinstance(out, MetaTensor)
    torch.testing.assert_close(out.affine, img.affine)


def test_window_output_range_and_no_clip():
    out = Window(40, 80, out_min=-1.0, out_max=1.0)(HU)
    np.testing.assert_allclose(out, [[-1.0, -1.0, -0.5, 0.0, 1.0, 1.0]], atol=1e-6)
    out = Window(40, 80, clip=False)(HU)
    np.testing.assert_allclose(out, [[-0.625, 0.0, 0.25, 0.5, 1.0, 1.25]], atol=1e-6)


def test_window_names():
    assert resolve_window("brain") == (40.0, 80.0)
    a = Window(window="subdural")
    b = Window.from_name("subdural")
    assert (a.level, a.width) == (b.level, b.width) == WINDOWS["subdural"]
    assert a.bounds == (-20.0, 180.0)
    np.testing.assert_allclose(b(np.array([[-20.0, 80.0, 180.0]])), [[0.0, 0.5, 1.0]])
    c = Window(window=(40.0, 120.0))  # the CT-ICH storage window [-20, 100]
    np.testing.assert_allclose(c(np.array([[-20.0, 100.0]])), [[0.0, 1.0]])


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"level": 40, "width": 0}, ["width", "> 0"]),
        ({"level": 40, "width": -10}, ["width", "> 0"]),
        ({"window": "lung"}, ["window", "brain", "subdural"]),
        ({"window": "brain", "level": 40}, ["either window or level"]),
        ({}, ["level and width"]),
        ({"level": 40, "width": 80, "out_min": 1.0, "out_max": 0.0}, ["out_max"]),
        ({"level": float("nan"), "width": 80}, ["level", "finite"]),
    ],
)
def test_window_bad_arguments(kwargs, words):
    with pytest.raises(HemwslInputError) as err:
        Window(**kwargs)
    for w in words:
        assert w in str(err.value)


def test_multiwindow_ordering_window_major():
    img = np.stack([np.zeros((2, 2)), np.full((2, 2), 80.0)]).astype(np.float32)  # C=2: 0 HU, 80 HU
    out = MultiWindow(["brain", (0.0, 200.0), "blood"])(img)
    assert out.shape == (6, 2, 2)
    # window 0 (brain 40/80): c0 -> 0, c1 -> 1; window 1 (0/200): c0 -> 0.5, c1 -> 0.9;
    # window 2 (blood 60/40): c0 -> 0, c1 -> 1
    np.testing.assert_allclose(out[:, 0, 0], [0.0, 1.0, 0.5, 0.9, 0.0, 1.0], atol=1e-6)
    out_t = MultiWindow(["brain", (0.0, 200.0), "blood"])(torch.as_tensor(img))
    assert isinstance(out_t, torch.Tensor)
    np.testing.assert_allclose(out_t.numpy(), out)


@pytest.mark.parametrize("windows", [[], "brain", ["brain", "nope"], [(40.0, 0.0)]])
def test_multiwindow_bad_arguments(windows):
    with pytest.raises(HemwslInputError, match="window"):
        MultiWindow(windows)


# ------------------------------------------------------------------------------------ stacking


def test_stack_indices_edges():
    assert stack_indices(0, 3, 10) == [0, 0, 1]
    assert stack_indices(9, 3, 10) == [8, 9, 9]
    assert stack_indices(4, 3, 10) == [3, 4, 5]
    assert stack_indices(1, 5, 10) == [0, 0, 1, 2, 3]
    assert stack_indices(8, 5, 10) == [6, 7, 8, 9, 9]
    assert stack_indices(0, 5, 1) == [0, 0, 0, 0, 0]
    assert stack_indices(3, 1, 10) == [3]
    assert stack_indices(np.int64(2), 3, 10) == [1, 2, 3]
    assert stack_indices(torch.tensor(2), 3, 10) == [1, 2, 3]


@pytest.mark.parametrize(
    "z, n, depth, word",
    [(0, 2, 10, "odd"), (0, 0, 10, "num_slices"), (10, 3, 10, "[0, 9]"), (-1, 3, 10, "[0, 9]"), (1.5, 3, 10, "index")],
)
def test_stack_indices_bad(z, n, depth, word):
    with pytest.raises(HemwslInputError) as err:
        stack_indices(z, n, depth)
    assert word in str(err.value)


def _coded_volume(c: int = 2, x: int = 4, y: int = 3, z: int = 6) -> np.ndarray:
    """vol[c, x, y, k] = 100 * c + k."""
    vol = np.zeros((c, x, y, z), dtype=np.float32)
    vol += 100 * np.arange(c)[:, None, None, None] + np.arange(z)[None, None, None, :]
    return vol


def test_slicestack_values_channel_major():
    vol = _coded_volume()
    out = SliceStack(3)(vol, 0)
    assert isinstance(out, np.ndarray) and out.shape == (6, 4, 3)
    np.testing.assert_array_equal(out[:, 1, 2], [0, 0, 1, 100, 100, 101])
    out = SliceStack(3)(vol, 5)
    np.testing.assert_array_equal(out[:, 0, 0], [4, 5, 5, 104, 105, 105])
    out = SliceStack(5)(torch.as_tensor(vol), 1)
    assert isinstance(out, torch.Tensor) and out.shape == (10, 4, 3)
    np.testing.assert_array_equal(out[:, 3, 1].numpy(), [0, 0, 1, 2, 3, 100, 100, 101, 102, 103])


def test_slicestack_other_axis_and_meta():
    vol = np.moveaxis(_coded_volume(c=1, z=5), -1, 1)  # slices along X now
    out = SliceStack(3, axis=0)(vol, 4)
    np.testing.assert_array_equal(out[:, 0, 0], [3, 4, 4])
    affine = torch.diag(torch.tensor([1.0, 2.0, 3.0, 1.0]))
    affine[:3, 3] = torch.tensor([10.0, 20.0, 30.0])
    mt = MetaTensor(torch.as_tensor(_coded_volume(c=1)), affine=affine)
    out = SliceStack(3)(mt, 2)
    assert isinstance(out, MetaTensor) and out.shape == (3, 4, 3)
    np.testing.assert_allclose(out.affine[:3, 3].numpy(), [10.0, 20.0, 36.0])  # origin at slice 2


def test_slicestack_bad():
    with pytest.raises(HemwslInputError, match="odd"):
        SliceStack(4)
    with pytest.raises(HemwslInputError, match="axis"):
        SliceStack(3, axis=3)
    with pytest.raises(HemwslInputError, match=r"\(C, X, Y, Z\)"):
        SliceStack(3)(np.zeros((1, 4, 4)), 0)
    with pytest.raises(HemwslInputError, match=r"\[0, 5\]"):
        SliceStack(3)(_coded_volume(), 6)


# ------------------------------------------------------------------------------------ skull strip


@pytest.mark.parametrize(
    "clip, noise",
    [(None, 0.0), (None, 5.0), ((-20.0, 100.0), 0.0), ((-20.0, 100.0), 5.0)],
    ids=["raw", "raw-noisy", "ctich-clipped", "ctich-clipped-noisy"],
)
def test_skullstrip_phantom(clip, noise):
    img, inner = head_slice(clip=clip, noise=noise)
    mask = SkullStrip()(img)
    assert isinstance(mask, np.ndarray) and mask.dtype == np.uint8 and mask.shape == img.shape
    m = mask[0].astype(bool)
    assert dice(m, inner) > 0.95
    yy, xx = np.mgrid[: img.shape[1], : img.shape[2]]
    dist = np.hypot(yy - (img.shape[1] - 1) / 2, xx - (img.shape[2] - 1) / 2)
    assert not (m & (dist >= 31.5)).any()  # nothing of the ring (30..37) beyond its inner edge, nor air
    assert m[dist < 28].all()  # the disc interior is covered


def test_skullstrip_tensor_volume_and_empty_slices():
    sl, inner = head_slice(n=64, r_brain=20, r_skull=25)
    vol = np.full((1, 64, 64, 4), AIR, dtype=np.float32)
    vol[..., 1] = sl[0]
    vol[..., 2] = sl[0]
    vol[0, 20:40, 20:40, 3] = BRAIN  # soft tissue without bone
    out = SkullStrip()(torch.as_tensor(vol))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.uint8 and out.shape == vol.shape
    out = out.numpy()
    assert out[..., 0].sum() == 0 and out[..., 3].sum() == 0
    for k in (1, 2):
        assert dice(out[0, ..., k], inner) > 0.95


def test_skullstrip_ignores_table():
    img, inner = head_slice(n=96, r_brain=25, r_skull=31)
    img[0, 88:91, 5:90] = BONE  # the scanner table: bone-dense, apart from the head
    m = SkullStrip()(img)[0].astype(bool)
    assert dice(m, inner) > 0.95
    assert not m[80:, :].any()


def test_skullstrip_large_slice_fast():
    img, inner = head_slice(n=512, r_brain=200, r_skull=230, noise=5.0)
    strip = SkullStrip()
    strip(img[:, :64, :64])  # warm up
    t0 = time.perf_counter()
    m = strip(img)
    assert time.perf_counter() - t0 < 1.0  # about 0.05 s here; generous for slow runners
    assert dice(m[0], inner) > 0.98


def test_skullstrip_bad_arguments():
    with pytest.raises(HemwslInputError, match="bone_percentile"):
        SkullStrip(bone_percentile=0)
    with pytest.raises(HemwslInputError, match="erosion_iterations"):
        SkullStrip(erosion_iterations=-1)
    with pytest.raises(HemwslInputError, match="sigma"):
        SkullStrip(sigma_color=0)
    with pytest.raises(HemwslInputError, match="max_bone_hu"):
        SkullStrip(min_bone_hu=200, max_bone_hu=100)
    with pytest.raises(HemwslInputError, match=r"\(C, H, W\) or \(C, X, Y, Z\)"):
        SkullStrip()(np.zeros((8, 8)))


# ------------------------------------------------------------------------------------ equalisation


def test_histogram_equalize_hand_values():
    x = np.array([0, 0, 0, 0, 0, 1, 2, 3], dtype=np.float32).reshape(1, 2, 4) / 3
    out = HistogramEqualize(num_bins=4)(x)
    np.testing.assert_allclose(out.ravel(), [0, 0, 0, 0, 0, 1 / 3, 2 / 3, 1], atol=1e-6)
    # counts per bin 1, 4, 2, 1 -> cdf 1, 5, 7, 8 -> (cdf - 1) / 7
    x = np.array([0, 1, 1, 1, 1, 2, 2, 3], dtype=np.float32).reshape(1, 2, 4) / 3
    out = HistogramEqualize(num_bins=4)(torch.as_tensor(x))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy().ravel(), np.array([0, 4, 4, 4, 4, 6, 6, 7]) / 7, atol=1e-6)


def test_histogram_equalize_range_and_monotone():
    rng = np.random.default_rng(0)
    x = (rng.random((2, 40, 40)) ** 2).astype(np.float32)  # skewed to dark values
    out = HistogramEqualize(num_bins=1024)(x)
    assert out.shape == x.shape and out.min() == 0.0 and out.max() == 1.0
    for c in range(2):
        order = np.argsort(x[c].ravel(), kind="stable")
        assert np.all(np.diff(out[c].ravel()[order]) >= 0)
    assert abs(float(np.median(out)) - 0.5) < 0.05  # equalised: the median moves to the middle
    assert float(np.median(x)) < 0.3


def test_histogram_equalize_mask_and_per_slice():
    x = np.zeros((1, 2, 4, 2), dtype=np.float32)
    x[0, ..., 0] = np.array([0, 0, 0, 0, 0, 1, 2, 3]).reshape(2, 4) / 30  # dark slice
    x[0, ..., 1] = np.array([0, 0, 0, 0, 0, 1, 2, 3]).reshape(2, 4) / 3  # bright slice
    per = HistogramEqualize(num_bins=4, per_slice=True)(x)
    for k in range(2):
        np.testing.assert_allclose(per[0, ..., k].ravel(), [0, 0, 0, 0, 0, 1 / 3, 2 / 3, 1], atol=1e-6)
    whole = HistogramEqualize(num_bins=4)(x)
    assert not np.allclose(whole, per)
    # the mask selects the reference voxels; values above their range map to 1, below to 0
    # reference 0.2, 0.3, 0.5, 0.8 in 3 bins over [0.2, 0.8]: counts 2, 1, 1 -> 0, 1/2, 1
    y = np.array([[[0.0, 0.2, 0.3, 0.5, 0.8, 1.0]]], dtype=np.float32)
    mask = np.array([[[0, 1, 1, 1, 1, 0]]])
    out = HistogramEqualize(num_bins=3)(y, mask=mask)
    np.testing.assert_allclose(out.ravel(), [0, 0, 0, 0.5, 1, 1], atol=1e-6)
    out_default = HistogramEqualize(num_bins=3, mask=mask)(y)
    np.testing.assert_allclose(out_default, out)


def test_histogram_equalize_clahe():
    rng = np.random.default_rng(0)
    x = (rng.random((1, 64, 64)) ** 3).astype(np.float32)
    out = HistogramEqualize(method="clahe", clip_limit=0.02)(torch.as_tensor(x))
    assert isinstance(out, torch.Tensor) and out.shape == x.shape
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert float(out.std()) > 0
    vol = np.repeat(x[..., None], 3, axis=-1)
    per = HistogramEqualize(method="clahe", per_slice=True)(vol)
    np.testing.assert_allclose(per[..., 0], per[..., 2])


def test_histogram_equalize_bad():
    with pytest.raises(HemwslInputError, match="global, clahe"):
        HistogramEqualize(method="adaptive")
    with pytest.raises(HemwslInputError, match="num_bins"):
        HistogramEqualize(num_bins=1)
    with pytest.raises(HemwslInputError, match="mask"):
        HistogramEqualize(method="clahe", mask=np.ones((1, 2, 2)))
    with pytest.raises(HemwslInputError, match="broadcast"):
        HistogramEqualize()(np.zeros((1, 4, 4)), mask=np.ones((1, 3, 3)))
