"""ROC and PR figures are written atomically as valid PNG files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hemwsl.errors import HemwslInputError
from hemwsl.reports import plot_pr, plot_roc

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

Y = np.array([0, 1, 1, 0, 1, 0, 0, 1, 1, 0, 0, 1, 0, 0, 1])
S = np.array([0.1, 0.4, 0.4, 0.4, 0.8, 0.1, 0.3, 0.8, 0.55, 0.55, 0.9, 0.3, 0.1, 0.4, 1.0])


def _assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 5000  # a real figure, not an empty image
    assert data[12:16] == b"IHDR"


@pytest.mark.parametrize("plot", [plot_roc, plot_pr], ids=["roc", "pr"])
def test_single_curve(tmp_path, plot):
    out = plot(Y, S, tmp_path / "sub" / "curve.png", title="test")
    assert out == tmp_path / "sub" / "curve.png"
    _assert_png(out)
    assert [p.name for p in out.parent.iterdir()] == ["curve.png"]  # no temporary file left behind


@pytest.mark.parametrize("plot", [plot_roc, plot_pr], ids=["roc", "pr"])
def test_several_curves_and_overwrite(tmp_path, plot):
    target = tmp_path / "curves.png"
    target.write_bytes(b"old")
    curves = {
        "val": (Y, S),
        "test": (torch.tensor(Y[::-1].copy()), torch.tensor(S)),
        "one class": (np.zeros(4, int), np.linspace(0, 1, 4)),  # drawn as a legend entry only
    }
    out = plot(curves, path=str(target))
    _assert_png(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]


def test_bad_arguments(tmp_path):
    with pytest.raises(HemwslInputError):
        plot_roc(Y, S)  # no path
    with pytest.raises(HemwslInputError):
        plot_pr({"a": (Y, S)}, S, tmp_path / "x.png")
    with pytest.raises(HemwslInputError):
        plot_roc({"a": Y}, path=tmp_path / "x.png")
    assert not list(tmp_path.iterdir())
