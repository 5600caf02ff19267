from __future__ import annotations

import torch

from hemwsl.transforms.batch import BatchRandAffine, random_affine_matrices


def test_identity_when_prob_zero():
    x = torch.rand(3, 2, 16, 16)
    out = BatchRandAffine(prob=0.0)(x)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_flip_only_is_exact_and_mask_follows():
    x = torch.rand(64, 1, 8, 8)
    mask = (x > 0.5).float()
    aug = BatchRandAffine(prob=0.5, rotate_range_deg=0.0, shift=0.0, scale=0.0, seed=1)
    out, m = aug(x, mask)
    flipped = 0
    for i in range(64):
        candidates = [x[i], x[i].flip(-1), x[i].flip(-2), x[i].flip(-1).flip(-2)]
        match = [torch.allclose(out[i], c, atol=1e-5) for c in candidates]
        assert any(match)
        flipped += not match[0]
    assert 16 < flipped < 64  # with p=0.5 per axis about 3/4 are flipped
    torch.testing.assert_close(m, (out > 0.5).float())


def test_matrices_within_ranges_and_seeded():
    g = torch.Generator().manual_seed(0)
    th = random_affine_matrices(500, prob=1.0, rotate_range_deg=10, shift=0.1, scale=0.2, flips=False, generator=g)
    lin = th[:, :, :2]
    zoom = 1 / torch.sqrt(torch.det(lin))  # det = 1/zoom^2
    assert (zoom >= 0.8 - 1e-6).all() and (zoom <= 1.2 + 1e-6).all()
    angle = torch.atan2(lin[:, 1, 0], lin[:, 0, 0])
    assert angle.abs().max() <= torch.deg2rad(torch.tensor(10.0)) + 1e-6
    assert th[:, :, 2].abs().max() <= 0.2 + 1e-6
    a = BatchRandAffine(seed=5)(torch.ones(2, 1, 8, 8))
    b = BatchRandAffine(seed=5)(torch.ones(2, 1, 8, 8))
    torch.testing.assert_close(a, b)
