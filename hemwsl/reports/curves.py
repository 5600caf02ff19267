"""ROC and precision-recall figures written as PNG files.

The figures are drawn on matplotlib's Agg canvas directly (no pyplot state, no display needed) and
written atomically: to a temporary file next to the target, then moved over it with :func:`os.replace`,
so a reader never sees a half-written PNG.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hemwsl.errors import HemwslInputError
from hemwsl.metrics.classification import (
    compute_auroc,
    compute_average_precision,
    precision_recall_curve,
    roc_curve,
)

__all__ = ["save_figure", "plot_roc", "plot_pr"]


def _curves(y_true: Any, y_score: Any) -> dict[str, tuple[Any, Any]]:
    """Normalise the two calling forms to a dict ``name -> (y_true, y_score)``."""
    if isinstance(y_true, Mapping):
        if y_score is not None:
            raise HemwslInputError("give y_score=None when y_true is a mapping name -> (y_true, y_score)")
        if not y_true:
            raise HemwslInputError("the mapping of curves is empty")
        out = {}
        for name, pair in y_true.items():
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise HemwslInputError(f"curve {name!r} must be a pair (y_true, y_score)")
            out[str(name)] = (pair[0], pair[1])
        return out
    if y_score is None:
        raise HemwslInputError("y_score is missing")
    return {"": (y_true, y_score)}


def _label(name: str, metric: str, value: float) -> str:
    text = f"{metric} = {value:.3f}" if np.isfinite(value) else f"{metric} undefined"
    return f"{name} ({text})" if name else text


def _prevalence(y_true: Any) -> float:
    """Fraction of positive labels (torch tensors accepted)."""
    if hasattr(y_true, "detach"):
        y_true = y_true.detach().cpu().numpy()
    return float(np.mean(np.asarray(y_true, dtype=np.float64)))


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` as PNG to ``path`` through a temporary file in the same folder."""
    from hemwsl.data.io import atomic_write

    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=fig.dpi), suffix=".png")


def _new_axes(title: str | None, default_title: str, xlabel: str, ylabel: str):
    fig = Figure(figsize=(5.0, 5.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title if title is not None else default_title)
    ax.grid(True, alpha=0.3)
    return fig, ax


def plot_roc(
    y_true: Any,
    y_score: Any = None,
    path: str | os.PathLike | None = None,
    title: str | None = None,
) -> Path:
    """Plot one or several ROC curves with their AUROC and write them as a PNG.

    Args:
        y_true: binary labels, or a mapping ``name -> (y_true, y_score)`` for several curves.
        y_score: positive-class scores; ``None`` when ``y_true`` is a mapping.
        path: output PNG file (parent folders are created).
        title: figure title (default ``"ROC curve"``).

    Returns:
        The path written.
    """
    if path is None:
        raise HemwslInputError("path of the ROC figure is missing")
    fig, ax = _new_axes(title, "ROC curve", "False positive rate (1 - specificity)", "True positive rate (sensitivity)")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    for name, (yt, ys) in _curves(y_true, y_score).items():
        fpr, tpr, _ = roc_curve(yt, ys)
        auc = compute_auroc(yt, ys)
        if np.all(np.isfinite(fpr)) and np.all(np.isfinite(tpr)):
            ax.plot(fpr, tpr, linewidth=1.5, label=_label(name, "AUROC", auc))
        else:  # a single class: no curve, only the legend entry
            ax.plot([], [], linewidth=1.5, label=_label(name, "AUROC", auc))
    ax.legend(loc="lower right", fontsize="small")
    return save_figure(fig, path)


def plot_pr(
    y_true: Any,
    y_score: Any = None,
    path: str | os.PathLike | None = None,
    title: str | None = None,
) -> Path:
    """Plot one or several precision-recall curves (step plots, as AP integrates) and write them as a PNG.

    The prevalence of each curve's data, the precision of a random classifier, is drawn dashed.

    Args:
        y_true: binary labels, or a mapping ``name -> (y_true, y_score)`` for several curves.
        y_score: positive-class scores; ``None`` when ``y_true`` is a mapping.
        path: output PNG file (parent folders are created).
        title: figure title (default ``"Precision-recall curve"``).

    Returns:
        The path written.
    """
    if path is None:
        raise HemwslInputError("path of the precision-recall figure is missing")
    fig, ax = _new_axes(title, "Precision-recall curve", "Recall (sensitivity)", "Precision")
    for name, (yt, ys) in _curves(y_true, y_score).items():
        precision, recall, _ = precision_recall_curve(yt, ys)
        ap = compute_average_precision(yt, ys)
        if np.all(np.isfinite(recall)):
            (line,) = ax.step(recall, precision, where="post", linewidth=1.5, label=_label(name, "AP", ap))
            prevalence = _prevalence(yt)
            ax.axhline(prevalence, linestyle="--", linewidth=1, color=line.get_color(), alpha=0.6)
        else:  # no positive sample: no curve, only the legend entry
            ax.plot([], [], linewidth=1.5, label=_label(name, "AP", ap))
    ax.legend(loc="lower left", fontsize="small")
    return save_figure(fig, path)

