"""The power-iteration top eigenvector used by EigenCAM / EigenGradCAM against torch.linalg.eigh."""

from __future__ import annotations

import torch

from hemwsl.cam.methods import top_eigenvector


def _gram(b: int, rows: int, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(b, rows, n, generator=g, dtype=torch.float64)
    m = m * torch.linspace(2.0, 0.1, n, dtype=torch.float64)  # a spread spectrum, as activations have
    return m.transpose(1, 2) @ m


def _same_up_to_sign(a: torch.Tensor, b: torch.Tensor, atol: float) -> None:
    s = torch.sign((a * b).sum(-1, keepdim=True))
    torch.testing.assert_close(s * a, b, atol=atol, rtol=0)


def test_matches_eigh_on_gram_matrices():
    for n in (8, 64, 160):
        g = _gram(6, 2 * n, n, seed=n)
        vec, val = top_eigenvector(g)
        vals, vecs = torch.linalg.eigh(g)
        _same_up_to_sign(vec, vecs[:, :, -1], atol=1e-8)
        torch.testing.assert_close(val, vals[:, -1], rtol=1e-10, atol=0)


def test_close_top_eigenvalues_still_match():
    # lambda_2 / lambda_1 = 0.999: the power iteration cannot converge in max_iter, eigh answers
    q, _ = torch.linalg.qr(torch.randn(3, 20, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    lam = torch.linspace(0.01, 0.5, 20, dtype=torch.float64)
    lam[-1], lam[-2] = 1.0, 0.999
    g = q @ torch.diag_embed(lam.expand(3, 20)) @ q.transpose(1, 2)
    vec, val = top_eigenvector(g, max_iter=16)
    _same_up_to_sign(vec, q[:, :, -1], atol=1e-8)
    torch.testing.assert_close(val, torch.ones(3, dtype=torch.float64))


def test_zero_and_mixed_batches():
    g = _gram(3, 30, 10)
    g[1] = 0.0  # an all-zero map (e.g. a dead layer): eigenvalue 0, any unit vector
    vec, val = top_eigenvector(g)
    assert torch.isfinite(vec).all() and torch.isfinite(val).all()
    assert val[1] == 0.0
    torch.testing.assert_close(vec.norm(dim=1), torch.ones(3, dtype=torch.float64))
    vals, vecs = torch.linalg.eigh(g[[0, 2]])
    _same_up_to_sign(vec[[0, 2]], vecs[:, :, -1], atol=1e-8)


def test_deterministic():
    g = _gram(4, 40, 16)
    a, _ = top_eigenvector(g)
    b, _ = top_eigenvector(g.clone())
    assert torch.equal(a, b)
