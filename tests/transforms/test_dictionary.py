"""Tests of hemwsl.transforms.dictionary: same results as the array transforms, aligned augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from hemwsl.errors import HemwslInputError
from hemwsl.transforms import (
    HistogramEqualize,
    HistogramEqualized,
    HistogramEqualizeD,
    HistogramEqualizeDict,
    MultiWindow,
    MultiWindowd,
    MultiWindowD,
    MultiWindowDict,
    SkullStrip,
    SkullStripd,
    SkullStripD,
    SkullStripDict,
    SliceStack,
    SliceStackd,
    SliceStackD,
    SliceStackDict,
    Window,
    Windowd,
    WindowD,
    WindowDict,
    augmentation_preset,
)
from tests.transforms.test_array import AIR, head_slice


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def test_aliases():
    assert WindowD is WindowDict is Windowd
    assert MultiWindowD is MultiWindowDict is MultiWindowd
    assert SliceStackD is SliceStackDict is SliceStackd
    assert SkullStripD is SkullStripDict is SkullStripd
    assert HistogramEqualizeD is HistogramEqualizeDict is HistogramEqualized


@pytest.mark.parametrize("as_tensor", [False, True])
def test_windowd_matches_array(as_tensor):
    hu = np.array([[[-50.0, 0.0, 40.0, 80.0, 100.0]]], dtype=np.float32)
    img = torch.as_tensor(hu) if as_tensor else hu
    d = Windowd(["image", "other"], window="brain")({"image": img, "other": img, "label": 7})
    assert d["label"] == 7
    assert type(d["image"]) is type(img)
    np.testing.assert_allclose(_np(d["image"]), [[[0.0, 0.0, 0.5, 1.0, 1.0]]], atol=1e-7)
    np.testing.assert_array_equal(_np(d["other"]), _np(Window(40, 80)(img)))
    with pytest.raises(HemwslInputError, match="width"):
        Windowd("image", level=40, width=0)


def test_multiwindowd_matches_array():
    img = np.stack([np.zeros((3, 3)), np.full((3, 3), 80.0)]).astype(np.float32)
    d = MultiWindowd("image", ["brain", "subdural"])({"image": img})
    np.testing.assert_array_equal(d["image"], MultiWindow(["brain", "subdural"])(img))
    np.testing.assert_allclose(d["image"][:, 0, 0], [0.0, 1.0, 0.1, 0.5], atol=1e-6)


def _coded(c: int = 1, z: int = 6) -> np.ndarray:
    vol = np.zeros((c, 4, 3, z), dtype=np.float32)
    return vol + 100 * np.arange(c)[:, None, None, None] + np.arange(z)[None, None, None, :]


@pytest.mark.parametrize("index", [0, np.int64(3), torch.tensor(5)])
def test_slicestackd_images_and_centre_label(index):
    image = _coded(c=2)
    label = np.zeros((1, 4, 3, 6), dtype=np.uint8)
    label[0, 1, 1, 3] = 1  # only slice 3 has hemorrhage
    label[0, 2, 0, 5] = 1  # and slice 5
    data = {"image": torch.as_tensor(image), "label": label, "slice_index": index}
    out = SliceStackd("image", num_slices=3)(data)
    z = int(index)
    assert out["image"].shape == (6, 4, 3)
    np.testing.assert_array_equal(_np(out["image"]), _np(SliceStack(3)(torch.as_tensor(image), z)))
    assert out["label"].shape == (1, 4, 3)
    np.testing.assert_array_equal(out["label"], label[..., z])
    assert out["label"].sum() == (1 if z in (3, 5) else 0)
    assert out["slice_index"] is index


def test_slicestackd_without_label_and_errors():
    out = SliceStackd("image", num_slices=5)({"image": _coded(), "slice_index": 0})
    np.testing.assert_array_equal(out["image"][:, 0, 0], [0, 0, 0, 1, 2])
    with pytest.raises(HemwslInputError, match="slice_index"):
        SliceStackd("image")({"image": _coded()})
    with pytest.raises(HemwslInputError, match="expected 6"):
        SliceStackd("image")({"image": _coded(), "label": _coded(z=5), "slice_index": 1})
    with pytest.raises(HemwslInputError, match="overlap"):
        SliceStackd("image", label_keys=("image",))
    with pytest.raises(HemwslInputError, match="odd"):
        SliceStackd("image", num_slices=2)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_skullstripd_matches_array_and_applies(as_tensor):
    img, inner = head_slice(n=64, r_brain=20, r_skull=25)
    src = torch.as_tensor(img) if as_tensor else img
    windowed = MultiWindow(["brain", "subdural", "bone"])(src)  # 3 channels, same grid
    d = SkullStripd(["image", "windows"], apply=True)({"image": src, "windows": windowed})
    expected = SkullStrip()(src)
    assert type(d["brain"]) is type(src)
    np.testing.assert_array_equal(_np(d["brain"]), _np(expected))
    brain = _np(expected)[0].astype(bool)
    out = _np(d["image"])[0]
    np.testing.assert_array_equal(out[brain], img[0][brain])
    assert np.all(out[~brain] == AIR)  # default fill value: the image minimum
    w = _np(d["windows"])
    np.testing.assert_array_equal(w[:, brain], _np(windowed)[:, brain])
    assert np.all(w[:, ~brain] == 0.0)  # minimum of the windowed image


def test_skullstripd_no_apply_and_fill_value():
    img, _ = head_slice(n=64, r_brain=20, r_skull=25)
    d = SkullStripd("image", brain_key="bm")({"image": img})
    assert d["image"] is img and d["bm"].dtype == np.uint8
    d = SkullStripd("image", apply=True, fill_value=-5.0)({"image": img})
    brain = d["brain"][0].astype(bool)
    assert np.all(d["image"][0][~brain] == -5.0)
    with pytest.raises(HemwslInputError, match="brain_key"):
        SkullStripd("brain")
    with pytest.raises(HemwslInputError, match="cannot be applied"):
        SkullStripd(["image", "small"], apply=True)({"image": img, "small": img[:, :32, :32]})


def test_histogram_equalized_matches_array_with_mask():
    rng = np.random.default_rng(0)
    x = (rng.random((1, 16, 16)) ** 2).astype(np.float32)
    mask = np.zeros((1, 16, 16), dtype=np.uint8)
    mask[:, 4:12, 4:12] = 1
    d = HistogramEqualized("image", mask_key="brain", num_bins=64)({"image": x, "brain": mask})
    np.testing.assert_array_equal(d["image"], HistogramEqualize(num_bins=64)(x, mask=mask))
    d2 = HistogramEqualized("image", num_bins=64)({"image": torch.as_tensor(x)})
    np.testing.assert_allclose(_np(d2["image"]), HistogramEqualize(num_bins=64)(x))
    with pytest.raises(HemwslInputError, match="brain"):
        HistogramEqualized("image", mask_key="brain")({"image": x})
    with pytest.raises(HemwslInputError, match="clahe"):
        HistogramEqualized("image", mask_key="brain", method="clahe")


# ------------------------------------------------------------------------------------ augmentation


def _sample(n: int = 48) -> dict:
    """An off-centre elliptic bump and a block (asymmetric, so flips show); label = image > 0.5."""
    yy, xx = np.mgrid[:n, :n].astype(np.float32)
    img = np.exp(-(((yy - 18) / 7) ** 2 + ((xx - 28) / 4.5) ** 2) / 2)
    img[30:40, 6:16] = 1.0
    t = 0.5
    return {"image": img[None].astype(np.float32), "label": (img[None] > t).astype(np.float32), "t": t}


def test_augmentation_flips_exact_alignment():
    data = _sample()
    aug = augmentation_preset("image", "label", prob=1.0, rotate_range_deg=0, shift=0, scale=0, seed=0)
    assert len(aug.transforms) == 2
    out = aug(data)
    img, lab = _np(out["image"]), _np(out["label"])
    np.testing.assert_array_equal(img, data["image"][:, ::-1, ::-1])  # prob 1: both axes flipped
    np.testing.assert_array_equal(lab, (img > data["t"]).astype(np.float32))


def test_augmentation_random_flips_keep_alignment():
    aug = augmentation_preset(["image"], ["label"], prob=0.5, rotate_range_deg=0, shift=0, scale=0, seed=1)
    seen = set()
    for _ in range(12):
        data = _sample()
        out = aug(data)
        img, lab = _np(out["image"]), _np(out["label"])
        np.testing.assert_array_equal(lab, (img > data["t"]).astype(np.float32))
        seen.add(img.tobytes())
    assert len(seen) > 1  # it is random


def test_augmentation_full_preset_aligned_up_to_boundary():
    aug = augmentation_preset("image", "label", prob=1.0, rotate_range_deg=15, shift=0.1, scale=0.1, seed=0)
    assert len(aug.transforms) == 4
    for _ in range(4):
        data = _sample()
        out = aug(data)
        img, lab = _np(out["image"])[0], _np(out["label"])[0]
        assert set(np.unique(lab)) <= {0.0, 1.0}  # nearest interpolation for the mask
        assert 0 < lab.sum()
        expect = img > data["t"]
        wrong = expect != lab.astype(bool)
        boundary = ndimage.binary_dilation(expect, iterations=2) & ~ndimage.binary_erosion(expect, iterations=2)
        assert not (wrong & ~boundary).any()  # disagreement only at the edge of the mask
        assert wrong.mean() < 0.05


def test_augmentation_seeded_reproducible():
    a = augmentation_preset("image", "label", prob=0.7, seed=123)
    b = augmentation_preset("image", "label", prob=0.7, seed=123)
    for _ in range(3):
        np.testing.assert_array_equal(_np(a(_sample())["image"]), _np(b(_sample())["image"]))


def test_augmentation_volume_and_prob_zero():
    vol = np.random.default_rng(0).random((1, 16, 16, 4)).astype(np.float32)
    out = augmentation_preset("image", prob=0.0, spatial_dims=3, seed=0)({"image": vol})
    np.testing.assert_allclose(_np(out["image"]), vol)
    out = augmentation_preset("image", prob=1.0, spatial_dims=3, seed=0)({"image": vol})
    assert out["image"].shape == vol.shape


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"prob": 1.5}, "prob"),
        ({"shift": -0.1}, "shift"),
        ({"scale": 1.0}, "scale"),
        ({"rotate_range_deg": -1}, "rotate_range_deg"),
        ({"spatial_dims": 1}, "spatial_dims"),
        ({"padding_mode": "wrap"}, "padding_mode"),
        ({"mask_keys": "image"}, "overlap"),
    ],
)
def test_augmentation_bad_arguments(kwargs, word):
    with pytest.raises(HemwslInputError, match=word):
        augmentation_preset("image", **kwargs)
