"""Volume-level (3D) lesion metrics in physical units: Dice, RVD, TPR, HD95, ASSD, surface Dice, volume in mL.

Inputs are one binary prediction and one binary ground truth of the same shape, ``(X, Y, Z)`` (2D
``(H, W)`` also works), as numpy arrays or torch tensors, plus the voxel ``spacing`` in mm, one entry per
axis in the array's axis order (e.g. the NIfTI header's ``pixdim[1:4]``, or ``get_zooms()`` of nibabel).
Distances are in mm and volumes in mL; the spacing is honoured exactly, so anisotropic CT (0.5 x 0.5 x 5 mm)
gives correct through-plane distances.

The distance and surface metrics wrap MONAI (``compute_hausdorff_distance``,
``compute_average_surface_distance``, ``compute_surface_dice``), whose surfaces are the mask edges
(the voxels removed by one binary erosion) and whose Euclidean distances use the spacing.
Empty masks follow the single hemwsl policy, :data:`hemwsl.metrics.localisation.EMPTY_POLICY`:

==============  ==========  ==========  ==========
metric          both_empty  gt_empty    pred_empty
==============  ==========  ==========  ==========
volume_dice     1.0         0.0         0.0
tpr             NaN         NaN         0.0
rvd             0.0         NaN         -1.0
hd95, assd      0.0         NaN*        NaN*
surface_dice    1.0         0.0         0.0
==============  ==========  ==========  ==========

``*`` or ``max_distance`` when given. Lesion volumes are always defined (0.0 mL for an empty mask). The
aggregations of :class:`VolumeMetrics` are NaN-aware means (NaN only when no case is defined).

References:
    * HD95 as in MONAI and DeepMind's surface-distance package: the larger of the two directed
      95th percentiles of the surface distances.
    * Normalised surface Dice: Nikolov et al., "Clinically applicable segmentation of head and neck anatomy
      for radiotherapy", J Med Internet Res 2021 (arXiv:1809.04430); MONAI ``compute_surface_dice``.
    * RVD, voxel TPR and volume in mL: the volumetric ICH segmentation literature (e.g. the seed papers'
      volume agreement tables); volume = voxel count x prod(spacing) / 1000.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric
from monai.metrics import compute_average_surface_distance as monai_compute_asd
from monai.metrics import compute_dice as monai_compute_dice
from monai.metrics import compute_hausdorff_distance as monai_compute_hd
from monai.metrics import compute_surface_dice as monai_compute_surface_dice

from hemwsl.errors import HemwslInputError, check_choice
from hemwsl.metrics.localisation import _as_binary, _to_tensor, apply_empty_policy

__all__ = [
    "VOLUME_METRIC_KEYS",
    "lesion_volume_ml",
    "drop_thin_components",
    "drop_thin_components_by_rule",
    "compute_volume_dice",
    "compute_rvd",
    "compute_tpr",
    "compute_hd95",
    "compute_assd",
    "compute_surface_dice",
    "volume_metrics",
    "VolumeMetrics",
]

#: Keys of :func:`volume_metrics` and of :meth:`VolumeMetrics.aggregate`, in column order.
VOLUME_METRIC_KEYS: tuple[str, ...] = ("dice", "rvd", "tpr", "hd95", "assd", "surface_dice", "pred_ml", "gt_ml")


# --------------------------------------------------------------------------------------------- inputs
def _to_bool(x: Any, name: str) -> torch.Tensor:
    return _as_binary(_to_tensor(x, name), name)


def _mask(x: Any, name: str) -> torch.Tensor:
    t = _to_bool(x, name)
    if t.ndim not in (2, 3):
        raise HemwslInputError(f"{name} must be a single (X, Y, Z) volume (or an (H, W) slice), got {tuple(t.shape)}")
    return t


def _pair(y_pred: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
    p, g = _mask(y_pred, "y_pred"), _mask(y, "y")
    if p.shape != g.shape:
        raise HemwslInputError(f"y_pred and y differ in shape: {tuple(p.shape)} != {tuple(g.shape)}")
    return p, g.to(p.device)


def _spacing(spacing: Any, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        raise HemwslInputError("spacing (mm per voxel along each axis) is required")
    if isinstance(spacing, torch.Tensor):
        spacing = spacing.tolist()
    if np.isscalar(spacing):
        spacing = [spacing] * ndim
    try:
        sp = tuple(float(s) for s in spacing)
    except (TypeError, ValueError) as exc:
        raise HemwslInputError(f"spacing must be {ndim} numbers, got {spacing!r}") from exc
    if len(sp) != ndim:
        raise HemwslInputError(f"spacing must have one entry per axis ({ndim}), got {sp}")
    if not all(math.isfinite(s) and s > 0 for s in sp):
        raise HemwslInputError(f"spacing entries must be finite and positive, got {sp}")
    return sp


def _policy(raw: float | torch.Tensor, p: torch.Tensor, g: torch.Tensor, metric: str, **kw: Any) -> float:
    value = torch.as_tensor(raw, dtype=torch.float64).reshape(1)
    return float(apply_empty_policy(value, p.any().reshape(1), g.any().reshape(1), metric, **kw)[0])


@contextmanager
def _quiet_monai() -> Iterator[None]:
    """Silence the deprecation notice MONAI's own surface code emits about one of its internal arguments."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*")
        yield


def _empty_case(p: torch.Tensor, g: torch.Tensor) -> bool:
    """True when either mask is empty (the policy then decides and MONAI is not called)."""
    return not (bool(p.any()) and bool(g.any()))


# --------------------------------------------------------------------------------------------- metrics
def lesion_volume_ml(mask: Any, spacing: Any) -> float:
    """Lesion volume in mL: voxel count x prod(spacing in mm) / 1000.

    Args:
        mask: binary volume ``(X, Y, Z)``.
        spacing: voxel size in mm along each axis.
    """
    m = _mask(mask, "mask")
    sp = _spacing(spacing, m.ndim)
    return float(int(m.sum())) * float(np.prod(sp)) / 1000.0


def drop_thin_components(mask: np.ndarray, min_slices: int) -> np.ndarray:
    """``mask`` (``(X, Y, Z)``, bool) without the 3D components (26-connectivity) that span fewer than
    ``min_slices`` slices: a bleed seen on one 5 mm slice only is rarer than a false-positive component there
    (the quantification issue's component rule; ``min_slices`` 1 returns ``mask`` itself)."""
    return drop_thin_components_by_rule(mask, [min_slices])[int(min_slices)]


def drop_thin_components_by_rule(mask: np.ndarray, rules: Sequence[int]) -> dict[int, np.ndarray]:
    """:func:`drop_thin_components` for several ``rules`` (minimum slice spans) at once, from one labelling of
    ``mask``: ``{rule: kept mask}`` (a rule of 1 or less keeps ``mask`` itself)."""
    rules = sorted({int(n) for n in rules})
    mask = np.asarray(mask, dtype=bool)
    if not mask.any() or rules[-1] <= 1:
        return {n: mask for n in rules}
    from scipy import ndimage

    labels, n_labels = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    spans = np.zeros(n_labels + 1, dtype=np.int64)
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is not None:
            spans[i] = sl[2].stop - sl[2].start
    span_of_voxel = spans[labels]  # 0 outside the mask
    return {n: mask if n <= 1 else span_of_voxel >= n for n in rules}


def compute_volume_dice(y_pred: Any, y: Any) -> float:
    """Volume Dice ``2|P & G| / (|P| + |G|)`` over all voxels (wraps ``monai.metrics.compute_dice``).

    Returns:
        The Dice; 1.0 when both are empty, 0.0 when one is (:data:`EMPTY_POLICY`).
    """
    p, g = _pair(y_pred, y)
    raw = monai_compute_dice(p[None, None], g[None, None], include_background=True, ignore_empty=False)
    return _policy(raw, p, g, "volume_dice")


def compute_rvd(y_pred: Any, y: Any) -> float:
    """Relative volume difference ``(V_pred - V_gt) / V_gt`` (signed; spacing cancels out).

    Returns:
        The RVD; 0.0 when both are empty, NaN when only the ground truth is, -1.0 when only the
        prediction is (:data:`EMPTY_POLICY`).
    """
    p, g = _pair(y_pred, y)
    vp, vg = float(p.sum()), float(g.sum())
    raw = (vp - vg) / vg if vg > 0 else float("nan")
    return _policy(raw, p, g, "rvd")


def compute_tpr(y_pred: Any, y: Any) -> float:
    """Voxel sensitivity (true positive rate) ``|P & G| / |G|``.

    Returns:
        The TPR; NaN when the ground truth is empty, 0.0 when only the prediction is (:data:`EMPTY_POLICY`).
    """
    p, g = _pair(y_pred, y)
    vg = float(g.sum())
    raw = float((p & g).sum()) / vg if vg > 0 else float("nan")
    return _policy(raw, p, g, "tpr")


def compute_hd95(
    y_pred: Any, y: Any, spacing: Any, percentile: float = 95.0, max_distance: float | None = None
) -> float:
    """Percentile Hausdorff distance in mm (wraps ``monai.metrics.compute_hausdorff_distance``).

    The larger of the two directed ``percentile``-th percentiles of the Euclidean distances between the
    mask surfaces, with the voxel spacing.

    Args:
        y_pred: binary predicted volume ``(X, Y, Z)``.
        y: binary ground-truth volume of the same shape.
        spacing: voxel size in mm along each axis.
        percentile: 95 for HD95; 100 gives the classical Hausdorff distance.
        max_distance: value for the one-sided empty cases instead of NaN.

    Returns:
        The distance in mm; 0.0 when both are empty, NaN (or ``max_distance``) when one is.
    """
    p, g = _pair(y_pred, y)
    sp = _spacing(spacing, p.ndim)
    if not 0 <= percentile <= 100:
        raise HemwslInputError(f"percentile must be in [0, 100], got {percentile}")
    if _empty_case(p, g):
        raw: float | torch.Tensor = float("nan")
    else:
        with _quiet_monai():
            raw = monai_compute_hd(
                p[None, None], g[None, None], include_background=True, percentile=percentile, spacing=sp
            )
    return _policy(raw, p, g, "hd95", max_distance=max_distance)


def compute_assd(y_pred: Any, y: Any, spacing: Any, max_distance: float | None = None) -> float:
    """Average symmetric surface distance in mm (wraps ``monai.metrics.compute_average_surface_distance``).

    The mean of the surface distances pooled over both directions (``symmetric=True``).

    Args:
        y_pred: binary predicted volume ``(X, Y, Z)``.
        y: binary ground-truth volume of the same shape.
        spacing: voxel size in mm along each axis.
        max_distance: value for the one-sided empty cases instead of NaN.

    Returns:
        The distance in mm; 0.0 when both are empty, NaN (or ``max_distance``) when one is.
    """
    p, g = _pair(y_pred, y)
    sp = _spacing(spacing, p.ndim)
    if _empty_case(p, g):
        raw: float | torch.Tensor = float("nan")
    else:
        with _quiet_monai():
            raw = monai_compute_asd(p[None, None], g[None, None], include_background=True, symmetric=True, spacing=sp)
    return _policy(raw, p, g, "assd", max_distance=max_distance)


def compute_surface_dice(y_pred: Any, y: Any, spacing: Any, tolerance_mm: float = 2.0) -> float:
    """Normalised surface Dice at a tolerance in mm (wraps ``monai.metrics.compute_surface_dice``).

    The share of surface elements of both masks lying within ``tolerance_mm`` of the other surface.

    Args:
        y_pred: binary predicted volume ``(X, Y, Z)``.
        y: binary ground-truth volume of the same shape.
        spacing: voxel size in mm along each axis.
        tolerance_mm: accepted boundary deviation in mm.

    Returns:
        The surface Dice in ``[0, 1]``; 1.0 when both are empty (MONAI: NaN), 0.0 when one is.
    """
    p, g = _pair(y_pred, y)
    sp = _spacing(spacing, p.ndim)
    if not (math.isfinite(tolerance_mm) and tolerance_mm >= 0):
        raise HemwslInputError(f"tolerance_mm must be finite and >= 0, got {tolerance_mm}")
    if _empty_case(p, g):
        raw: float | torch.Tensor = float("nan")
    else:
        with _quiet_monai():
            raw = monai_compute_surface_dice(
                p[None, None].float(), g[None, None].float(), [float(tolerance_mm)], include_background=True, spacing=sp
            )
    return _policy(raw, p, g, "surface_dice")


def volume_metrics(
    pred: Any,
    gt: Any,
    spacing: Any,
    tolerance_mm: float = 2.0,
    percentile: float = 95.0,
    max_distance: float | None = None,
) -> dict[str, float]:
    """All volume metrics of one case.

    Args:
        pred: binary predicted volume ``(X, Y, Z)``.
        gt: binary ground-truth volume of the same shape.
        spacing: voxel size in mm along each axis.
        tolerance_mm: tolerance of the surface Dice.
        percentile: percentile of the Hausdorff distance (95 for HD95).
        max_distance: see :func:`compute_hd95`.

    Returns:
        ``{"dice", "rvd", "tpr", "hd95", "assd", "surface_dice", "pred_ml", "gt_ml"}`` (floats; distances in mm).
    """
    p, g = _pair(pred, gt)
    sp = _spacing(spacing, p.ndim)
    return {
        "dice": compute_volume_dice(p, g),
        "rvd": compute_rvd(p, g),
        "tpr": compute_tpr(p, g),
        "hd95": compute_hd95(p, g, sp, percentile=percentile, max_distance=max_distance),
        "assd": compute_assd(p, g, sp, max_distance=max_distance),
        "surface_dice": compute_surface_dice(p, g, sp, tolerance_mm=tolerance_mm),
        "pred_ml": lesion_volume_ml(p, sp),
        "gt_ml": lesion_volume_ml(g, sp),
    }


# --------------------------------------------------------------------------------------------- MONAI class
class VolumeMetrics(CumulativeIterationMetric):
    """All :func:`volume_metrics` accumulated over volumes, reduced with NaN-aware means.

    Call it with batches ``(B, X, Y, Z)`` or ``(B, 1, X, Y, Z)`` (or lists of ``(1, X, Y, Z)`` volumes) and
    ``spacing=``: one tuple for the whole batch, or one tuple per volume of a batch tensor.

    Args:
        tolerance_mm: tolerance of the surface Dice.
        percentile: percentile of the Hausdorff distance.
        max_distance: see :func:`compute_hd95`.
        reduction: default of :meth:`aggregate`: ``"mean"`` (dict of NaN-aware means) or ``"none"``
            (dict of per-volume float64 tensors).

    Example::

        metric = VolumeMetrics(tolerance_mm=2.0)
        for case in cases:
            metric(y_pred=pred[None], y=gt[None], spacing=case["spacing"])
        summary = metric.aggregate()  # {"dice": ..., "hd95": ..., ...}
    """

    def __init__(
        self,
        tolerance_mm: float = 2.0,
        percentile: float = 95.0,
        max_distance: float | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        check_choice("reduction", reduction, ("mean", "none"))
        self.tolerance_mm = tolerance_mm
        self.percentile = percentile
        self.max_distance = max_distance
        self.reduction = reduction

    def _compute_tensor(  # type: ignore[override]
        self, y_pred: torch.Tensor, y: torch.Tensor, spacing: Any = None
    ) -> torch.Tensor:
        if y_pred.ndim == 5 and y_pred.shape[1] == 1:
            y_pred = y_pred[:, 0]
        if y is not None and y.ndim == 5 and y.shape[1] == 1:
            y = y[:, 0]
        if y is None or y_pred.ndim != 4 or y.shape != y_pred.shape:
            shape_y = None if y is None else tuple(y.shape)
            raise HemwslInputError(
                "y_pred and y must be (B, X, Y, Z) or (B, 1, X, Y, Z) of one shape, "
                f"got {tuple(y_pred.shape)}, {shape_y}"
            )
        batch = y_pred.shape[0]
        if spacing is None:
            raise HemwslInputError("VolumeMetrics needs spacing= (mm per voxel along each axis)")
        per_case = (
            isinstance(spacing, (list, tuple))
            and len(spacing) == batch
            and all(isinstance(s, (list, tuple, np.ndarray, torch.Tensor)) for s in spacing)
        )
        spacings = list(spacing) if per_case else [spacing] * batch
        rows = []
        for b in range(batch):
            m = volume_metrics(
                y_pred[b],
                y[b],
                spacings[b],
                tolerance_mm=self.tolerance_mm,
                percentile=self.percentile,
                max_distance=self.max_distance,
            )
            rows.append([m[k] for k in VOLUME_METRIC_KEYS])
        return torch.tensor(rows, dtype=torch.float64)

    def aggregate(self, reduction: str | None = None) -> dict[str, Any]:  # type: ignore[override]
        """Per-metric NaN-aware means (``"mean"``) or per-volume values (``"none"``) of the buffered volumes."""
        reduction = reduction or self.reduction
        check_choice("reduction", reduction, ("mean", "none"))
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            data = torch.zeros(0, len(VOLUME_METRIC_KEYS), dtype=torch.float64)
        data = data.reshape(-1, len(VOLUME_METRIC_KEYS))
        out: dict[str, Any] = {}
        for i, key in enumerate(VOLUME_METRIC_KEYS):
            col = data[:, i]
            if reduction == "none":
                out[key] = col
            else:
                valid = col[~torch.isnan(col)]
                out[key] = float(valid.mean()) if valid.numel() else float("nan")
        return out
