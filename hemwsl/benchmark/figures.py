"""Figures of the benchmark report: overlays, IoU histograms, the classifier's PR and ROC curves."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_figures", "overlay_cases", "plot_iou_histograms"]


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=80)


def overlay_cases(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, Mapping[str, Any]]]:
    """The best, median and worst scored slice (by Dice; ties: first patient/slice order) of ``rows``."""
    sl = sorted((r for r in rows if r["level"] == "slice" and not math.isnan(r["dice"])),
                key=lambda r: (r["dice"], r["patient"], r["slice"]))
    if not sl:
        return []
    return [("best", sl[-1]), ("median", sl[len(sl) // 2]), ("worst", sl[0])]


def _slice_inputs(entry: Mapping, cam_dir: Path, row: Mapping[str, Any], load_kw: Mapping[str, Any] | None = None,
                  min_size: int = 0):
    from hemwsl.benchmark.runner import load_heatmap, load_patient
    from hemwsl.benchmark.specs import parse_threshold_spec
    from hemwsl.cam import heatmap_path

    z = int(row["slice"])
    data = load_patient(entry, "predicted", [z], **dict(load_kw or {}))
    heat = load_heatmap(heatmap_path(cam_dir, data.patient, (row["method"], row["layer"])), data.shape, [z])
    spec = parse_threshold_spec(row["threshold"])
    value = row["threshold_value"] if spec.needs_fit else None
    pred = np.asarray(spec.strategy(value, min_size=min_size)(heat, image_hu=data.hu, brain=data.brain), dtype=bool)
    return data.hu[0], data.gt[0], heat[0], pred[0]


def _show(ax, hu: np.ndarray, gt: np.ndarray, heat: np.ndarray, pred: np.ndarray, title: str) -> None:
    ax.imshow(np.clip((hu.T - 0.0) / 80.0, 0, 1), cmap="gray", origin="lower")  # brain window 40/80
    if heat.max() > heat.min():
        ax.imshow(((heat - heat.min()) / (heat.max() - heat.min())).T, cmap="jet", alpha=0.35, origin="lower")
    if gt.any():
        ax.contour(gt.T.astype(float), levels=[0.5], colors="lime", linewidths=1.0, origin="lower")
    if pred.any():
        ax.contour(pred.T.astype(float), levels=[0.5], colors="red", linewidths=1.0, origin="lower")
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()


def plot_iou_histograms(chosen: Mapping[str, Sequence[Mapping[str, Any]]], path: Path) -> Path | None:
    """IoU histogram of every method's validated rows (seed 002, Figure 3)."""
    from hemwsl.reports.curves import save_figure

    methods = [m for m in sorted(chosen) if any(r["level"] == "slice" for r in chosen[m])]
    if not methods:
        return None
    cols = min(4, len(methods))
    rows_n = math.ceil(len(methods) / cols)
    fig = _figure(3.0 * cols, 2.4 * rows_n)
    for i, m in enumerate(methods):
        ax = fig.add_subplot(rows_n, cols, i + 1)
        iou = np.array([r["iou"] for r in chosen[m] if r["level"] == "slice"], dtype=np.float64)
        ax.hist(iou[~np.isnan(iou)], bins=np.linspace(0, 1, 21), color="tab:blue")
        ax.set_title(f"{'prior only' if m == '-' else m} (n={iou.size})", fontsize=8)
        ax.set_xlabel("IoU", fontsize=7)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def write_figures(
    out: Path,
    chosen: Mapping[str, Sequence[Mapping[str, Any]]],
    datalist: Mapping[str, Mapping],
    cam_dir: Path | None,
    predictions: Mapping[str, Any] | None,
    table: Sequence[Mapping[str, Any]],
    load_kw: Mapping[str, Any] | None = None,
    min_size: int = 0,
) -> list[Path]:
    """Write the report's figures under ``out/figures``; returns the files written."""
    from hemwsl.reports.curves import save_figure, plot_pr, plot_roc

    fig_dir = Path(out) / "figures"
    written: list[Path] = []
    hist = plot_iou_histograms(chosen, fig_dir / "iou_histograms.png")
    if hist:
        written.append(hist)
    if cam_dir is not None:
        for m in sorted(chosen):
            if m == "-":
                continue
            cases = overlay_cases(chosen[m])
            if not cases:
                continue
            fig = _figure(3.0 * len(cases), 3.2)
            for i, (label, row) in enumerate(cases):
                entry = datalist.get(row["patient"])
                if entry is None:
                    continue
                hu, gt, heat, pred = _slice_inputs(entry, cam_dir, row, load_kw, min_size)
                title = f"{label}: {row['patient']} z={row['slice']} Dice {row['dice']:.2f}\n{row['layer']}, {row['threshold']}"
                _show(fig.add_subplot(1, len(cases), i + 1), hu, gt, heat, pred, title)
            fig.suptitle(f"{m}: CT, heatmap, ground truth (green), prediction (red)", fontsize=9)
            fig.tight_layout()
            written.append(save_figure(fig, fig_dir / f"overlay_{m}.png"))
    if predictions is not None and len(predictions["patient"]):
        y = np.asarray(predictions["label"])[:, 0]
        s = np.asarray(predictions["prob"])[:, 0]
        written.append(plot_pr(y, s, fig_dir / "classifier_pr.png", title="Classifier (out of fold): precision-recall"))
        written.append(plot_roc(y, s, fig_dir / "classifier_roc.png", title="Classifier (out of fold): ROC"))
    return written
