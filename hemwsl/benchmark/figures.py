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


def _case_inputs(
    datalist: Mapping[str, Mapping], cam_dir: Path, rows: Sequence[Mapping[str, Any]], specs: Mapping[str, Any],
    hu_reference: float | None = None,
) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """CT (HU), mask, heatmap and predicted mask of each row (one scored slice), keyed by ``id(row)``.

    Each patient's volume is read and skull-stripped once for all its rows; ``hu_reference`` as the benchmark's.
    """
    from hemwsl.benchmark.runner import load_heatmap, load_patient
    from hemwsl.benchmark.specs import parse_threshold_spec
    from hemwsl.cam import heatmap_path

    by_patient: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        if r["patient"] in datalist:
            by_patient.setdefault(r["patient"], []).append(r)
    out = {}
    for patient, prow in sorted(by_patient.items()):
        zs = sorted({int(r["slice"]) for r in prow})
        data = load_patient(datalist[patient], "predicted", zs, hu_reference=hu_reference)
        for r in prow:
            i = zs.index(int(r["slice"]))
            heat = load_heatmap(heatmap_path(cam_dir, data.patient, (r["method"], r["layer"])), data.shape, [zs[i]])
            spec = specs.get(r["threshold"]) or parse_threshold_spec(r["threshold"])
            value = r["threshold_value"] if spec.needs_fit else None
            brain = data.brain_at(spec.erosion)[i:i + 1]
            pred = np.asarray(spec.strategy(value)(heat, image_hu=data.hu[i:i + 1], brain=brain), dtype=bool)
            out[id(r)] = (data.hu[i], data.gt[i], heat[0], pred[0])
    return out


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
    """IoU histogram of every method's validated rows (Kang et al. 2021, Figure 3)."""
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
    specs: Sequence[Any] = (),
) -> list[Path]:
    """Write the report's figures under ``out/figures``; returns the files written.

    ``specs`` (:class:`~hemwsl.benchmark.specs.ThresholdSpec`) say how each row's threshold name was applied
    (its post-processing); names not among them are parsed.
    """
    from hemwsl.reports.curves import save_figure, plot_pr, plot_roc

    fig_dir = Path(out) / "figures"
    written: list[Path] = []
    hist = plot_iou_histograms(chosen, fig_dir / "iou_histograms.png")
    if hist:
        written.append(hist)
    if cam_dir is not None:
        cases = {m: overlay_cases(chosen[m]) for m in sorted(chosen) if m != "-"}
        import json

        cfg = Path(out) / "config.json"
        hu_reference = json.loads(cfg.read_text()).get("hu_reference") if cfg.is_file() else None
        inputs = _case_inputs(datalist, cam_dir, [r for c in cases.values() for _, r in c],
                              {sp.text: sp for sp in specs}, hu_reference)
        for m, mcases in cases.items():
            mcases = [(label, row) for label, row in mcases if id(row) in inputs]
            if not mcases:
                continue
            fig = _figure(3.0 * len(mcases), 3.2)
            for i, (label, row) in enumerate(mcases):
                hu, gt, heat, pred = inputs[id(row)]
                title = f"{label}: {row['patient']} z={row['slice']} Dice {row['dice']:.2f}\n{row['layer']}, {row['threshold']}"
                _show(fig.add_subplot(1, len(mcases), i + 1), hu, gt, heat, pred, title)
            fig.suptitle(f"{m}: CT, heatmap, ground truth (green), prediction (red)", fontsize=9)
            fig.tight_layout()
            written.append(save_figure(fig, fig_dir / f"overlay_{m}.png"))
    if predictions is not None and len(predictions["patient"]):
        y = np.asarray(predictions["label"])[:, 0]
        s = np.asarray(predictions["prob"])[:, 0]
        written.append(plot_pr(y, s, fig_dir / "classifier_pr.png", title="Classifier (out of fold): precision-recall"))
        written.append(plot_roc(y, s, fig_dir / "classifier_roc.png", title="Classifier (out of fold): ROC"))
    return written
