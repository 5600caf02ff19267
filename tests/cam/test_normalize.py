"""Normalisers and resizing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hemwsl.cam import NORMALIZERS, get_normalizer, normalize_none, normalize_per_slice, normalize_per_volume, upsample
from hemwsl.errors import HemwslInputError


def test_per_slice_minmax_is_scale_cam_image():
    image = pytest.importorskip("pytorch_grad_cam.utils.image")
    maps = np.random.default_rng(0).normal(size=(4, 7, 9)).astype(np.float32)
    np.testing.assert_allclose(normalize_per_slice(maps, mode="minmax"), image.scale_cam_image(maps), atol=1e-7)
    np.testing.assert_allclose(
        normalize_per_slice(torch.from_numpy(maps)).numpy(), image.scale_cam_image(maps), atol=1e-7
    )


def test_per_slice_modes_and_zero_maps():
    maps = torch.stack([torch.zeros(5, 5), torch.full((5, 5), 3.0), torch.arange(25.0).reshape(5, 5) + 10])
    mm = normalize_per_slice(maps, mode="minmax")
    assert float(mm[0].abs().max()) == 0 and float(mm[1].abs().max()) == 0  # constant maps -> 0, no NaN
    assert float(mm[2].min()) == 0 and float(mm[2].max()) == pytest.approx(1, abs=1e-6)
    mx = normalize_per_slice(maps, mode="max")
    assert float(mx[0].abs().max()) == 0  # all-zero stays zero
    assert float(mx[2].min()) == pytest.approx(10 / 34, abs=1e-6)  # floor at 0: the offset is kept
    assert torch.isfinite(mx).all()


def test_per_slice_other_axes():
    vol = np.random.default_rng(1).random((6, 5, 3)).astype(np.float32)  # (X, Y, Z)
    out = normalize_per_slice(vol, dims=(0, 1))
    for z in range(3):
        np.testing.assert_allclose(out[:, :, z], normalize_per_slice(vol[:, :, z]), atol=1e-7)
    with pytest.raises(HemwslInputError):
        normalize_per_slice(vol, dims=(0, 0))


def test_per_volume_does_not_stretch_a_negative_slice():
    strong = torch.zeros(8, 8)
    strong[2:5, 2:5] = 4.0
    weak = torch.full((8, 8), 1e-3)
    weak[0, 0] = 2e-3
    stack = torch.stack([strong, weak, torch.zeros(8, 8)])
    vol = normalize_per_volume(stack)
    assert float(vol[0].max()) == pytest.approx(1.0, abs=1e-6)
    assert float(vol[1].max()) < 1e-3  # stays weak
    assert float(vol[2].abs().max()) == 0  # all-zero stays zero
    per_slice = normalize_per_slice(stack)
    assert float(per_slice[1].max()) == pytest.approx(1.0, abs=1e-3)  # per-slice stretches it
    floored = normalize_per_slice(stack, mode="max", floor=0.5 * float(stack.max()))
    assert float(floored[0].max()) == pytest.approx(1.0, abs=1e-6)
    assert float(floored[1].max()) == pytest.approx(1e-3, rel=1e-3)  # below the floor: not stretched
    with pytest.raises(HemwslInputError):
        normalize_per_slice(stack, floor=-1)
    assert float(normalize_per_volume(stack, mode="minmax").min()) == 0
    assert float(normalize_per_volume(-stack).max()) == 0  # negative values floored at 0
    np.testing.assert_allclose(normalize_per_volume(stack.numpy()), vol.numpy())


def test_none_and_registry():
    x = torch.randn(2, 3, 3)
    assert normalize_none(x) is x
    assert set(NORMALIZERS) == {"slice", "volume", "none"}
    assert get_normalizer("volume") is normalize_per_volume
    with pytest.raises(HemwslInputError, match="accepted values"):
        get_normalizer("global")
    with pytest.raises(HemwslInputError):
        normalize_per_slice(x, mode="zscore")


def test_upsample_matches_cv2():
    cv2 = pytest.importorskip("cv2")
    m = torch.rand(2, 5, 7)
    up = upsample(m, (40, 56))
    for b in range(2):
        np.testing.assert_allclose(up[b].numpy(), cv2.resize(m[b].numpy(), (56, 40)), atol=1e-6)
    assert upsample(m, (5, 7)) is m
    assert upsample(m, 16).shape == (2, 16, 16)
