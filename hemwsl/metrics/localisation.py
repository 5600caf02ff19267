"""Slice-level localisation metrics: pixel and box Dice/IoU, hit rate, pointing game, class mIoU.

Inputs are 2D slices, batched as ``(B, H, W)`` or ``(B, 1, H, W)`` (a single ``(H, W)`` slice is a batch of
one), as numpy arrays or torch tensors. Masks are binary (bool or 0/1); heatmaps (for the pointing game) are
real-valued maps of the slice's size (upsample CAMs first). Each metric is a ``compute_*`` function returning
one value per slice (a float64 ``torch.Tensor`` of shape ``(B,)``) plus a MONAI ``CumulativeIterationMetric``
class that only buffers per-slice values or sufficient statistics and reduces them in ``aggregate()``.
Pixel Dice/IoU wrap MONAI's ``compute_dice``/``compute_iou``; the metrics of the weakly supervised
localisation literature that MONAI lacks (box overlap, hit, pointing game) are written here.

Empty-mask policy
-----------------
One policy, :data:`EMPTY_POLICY`, holds for every metric of :mod:`hemwsl.metrics.localisation` and
:mod:`hemwsl.metrics.volume`. A slice (or volume) falls in one of three empty cases, or in none:

* ``both_empty``: neither the prediction nor the ground truth holds a foreground pixel;
* ``gt_empty``: the ground truth is empty, the prediction is not (a false alarm);
* ``pred_empty``: the ground truth holds a lesion, the prediction is empty (a miss).

===================  ============  ==========  ============  =============================================
metric               both_empty    gt_empty    pred_empty    rationale
===================  ============  ==========  ============  =============================================
dice, iou            1.0           0.0         0.0           overlap: "correctly nothing" scores 1
box_dice, box_iou    1.0           0.0         0.0           overlap of the rasterised boxes
hit                  1.0           0.0         0.0           overlap: a false alarm is no hit
miou                 1.0           0.0         0.0           overlap; absent classes are skipped
pointing_game        NaN           NaN         0.0           a detection rate: needs a lesion to point at
volume_dice          1.0           0.0         0.0           overlap (3D)
tpr                  NaN           NaN         0.0           sensitivity: undefined without positives
rvd                  0.0           NaN         -1.0          (V_pred - V_gt) / V_gt; 0/0 agrees, x/0 is not
hd95, assd           0.0           NaN*        NaN*          distances: no surface to measure from/to
surface_dice         1.0           0.0         0.0           boundary overlap, as Dice
===================  ============  ==========  ============  =============================================

``*`` the distance functions take ``max_distance``: when given, it replaces NaN in the two one-sided cases
(e.g. the image diagonal in mm, a common penalty); distances that are defined are never clipped.

For the pointing game the prediction is the heatmap, which counts as empty when it is constant (all
zero, say): it then has no maximum to point with. NaN values are undefined, not failures: every reduction
here is NaN-aware (a mean skips NaN, and is NaN only when all values are). MONAI's own conventions differ
(``DiceMetric(ignore_empty=True)`` gives NaN for an empty ground truth, ``compute_hausdorff_distance``
inf/NaN, ``compute_surface_dice`` NaN when both are empty); hemwsl calls MONAI's functions and then applies
:func:`apply_empty_policy`, so these tables are the only source of truth.

References:
    * Pixel Dice/IoU per slice and global (pooled over all pixels), bounding-box Dice/IoU around connected
      components, loose hit: as reported by the seed weakly supervised ICH papers (000, 002).
    * Pointing game: Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016.
    * mIoU over the classes present and the share of cases with IoU <= 0.01: seed paper 002.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric
from monai.metrics import compute_dice as monai_compute_dice
from monai.metrics import compute_iou as monai_compute_iou
from monai.networks.utils import one_hot
from scipy import ndimage

from hemwsl.errors import HemwslInputError, check_choice

__all__ = [
    "BOTH_EMPTY",
    "GT_EMPTY",
    "PRED_EMPTY",
    "EMPTY_POLICY",
    "empty_value",
    "apply_empty_policy",
    "compute_dice",
    "compute_iou",
    "compute_global_dice",
    "compute_global_iou",
    "bounding_box_mask",
    "compute_box_dice",
    "compute_box_iou",
    "compute_hit",
    "compute_pointing_game",
    "compute_class_iou",
    "compute_miou",
    "compute_low_iou_rate",
    "DiceScoreMetric",
    "IoUScoreMetric",
    "BoxDiceMetric",
    "BoxIoUMetric",
    "HitRateMetric",
    "PointingGameMetric",
    "MeanClassIoUMetric",
]

# --------------------------------------------------------------------------------------------- policy
BOTH_EMPTY = "both_empty"
GT_EMPTY = "gt_empty"
PRED_EMPTY = "pred_empty"
_NAN = float("nan")


def _row(both: float, gt: float, pred: float) -> Mapping[str, float]:
    return MappingProxyType({BOTH_EMPTY: both, GT_EMPTY: gt, PRED_EMPTY: pred})


#: Value of each metric in each empty case (read-only); see the module docstring for the rationale.
EMPTY_POLICY: Mapping[str, Mapping[str, float]] = MappingProxyType(
    {
        "dice": _row(1.0, 0.0, 0.0),
        "iou": _row(1.0, 0.0, 0.0),
        "box_dice": _row(1.0, 0.0, 0.0),
        "box_iou": _row(1.0, 0.0, 0.0),
        "hit": _row(1.0, 0.0, 0.0),
        "miou": _row(1.0, 0.0, 0.0),
        "pointing_game": _row(_NAN, _NAN, 0.0),
        "volume_dice": _row(1.0, 0.0, 0.0),
        "tpr": _row(_NAN, _NAN, 0.0),
        "rvd": _row(0.0, _NAN, -1.0),
        "hd95": _row(0.0, _NAN, _NAN),
        "assd": _row(0.0, _NAN, _NAN),
        "surface_dice": _row(1.0, 0.0, 0.0),
    }
)

_DISTANCES = ("hd95", "assd")


def empty_value(metric: str, case: str, max_distance: float | None = None) -> float:
    """Value of ``metric`` in an empty case, from :data:`EMPTY_POLICY`.

    Args:
        metric: a key of :data:`EMPTY_POLICY`.
        case: ``"both_empty"``, ``"gt_empty"`` or ``"pred_empty"``.
        max_distance: for the distance metrics, replaces NaN in the one-sided cases.
    """
    check_choice("metric", metric, EMPTY_POLICY)
    check_choice("empty case", case, (BOTH_EMPTY, GT_EMPTY, PRED_EMPTY))
    value = EMPTY_POLICY[metric][case]
    if max_distance is not None and metric in _DISTANCES and case != BOTH_EMPTY:
        return float(max_distance)
    return value


def apply_empty_policy(
    values: torch.Tensor,
    pred_any: torch.Tensor,
    gt_any: torch.Tensor,
    metric: str,
    max_distance: float | None = None,
) -> torch.Tensor:
    """Overwrite the values of the empty cases with those of :data:`EMPTY_POLICY`.

    Args:
        values: per-case values, shape ``(B,)`` (what the raw formula, e.g. MONAI's, gave).
        pred_any: whether each prediction holds foreground, shape ``(B,)``.
        gt_any: whether each ground truth holds foreground, shape ``(B,)``.
        metric: a key of :data:`EMPTY_POLICY`.
        max_distance: see :func:`empty_value`.

    Returns:
        A float copy of ``values`` with the empty cases replaced; non-empty cases are left unchanged.
    """
    out = values.detach().clone().to(torch.float64).reshape(-1)
    p = torch.as_tensor(pred_any, device=out.device).reshape(-1).bool()
    g = torch.as_tensor(gt_any, device=out.device).reshape(-1).bool()
    if not out.shape == p.shape == g.shape:
        raise HemwslInputError(f"values, pred_any and gt_any differ in shape: {out.shape}, {p.shape}, {g.shape}")
    for case, sel in ((BOTH_EMPTY, ~p & ~g), (GT_EMPTY, p & ~g), (PRED_EMPTY, ~p & g)):
        if bool(sel.any()):
            out[sel] = empty_value(metric, case, max_distance)
    return out


# --------------------------------------------------------------------------------------------- inputs
def _to_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    try:
        a = np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise HemwslInputError(f"{name} cannot be converted to an array: {exc}") from exc
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise HemwslInputError(f"{name} must be numeric, got dtype {a.dtype}")
    return torch.from_numpy(np.ascontiguousarray(a))


def _as_batch_2d(x: Any, name: str) -> torch.Tensor:
    """``(H, W)``, ``(B, H, W)`` or ``(B, 1, H, W)`` -> ``(B, H, W)`` tensor."""
    t = _to_tensor(x, name)
    if t.ndim == 2:
        t = t[None]
    elif t.ndim == 4 and t.shape[1] == 1:
        t = t[:, 0]
    if t.ndim != 3:
        raise HemwslInputError(f"{name} must have shape (H, W), (B, H, W) or (B, 1, H, W), got {tuple(t.shape)}")
    return t


def _as_binary(t: torch.Tensor, name: str) -> torch.Tensor:
    if t.dtype == torch.bool:
        return t
    if t.is_floating_point() and bool(torch.isnan(t).any()):
        raise HemwslInputError(f"{name} contains NaN")
    if t.numel() and not bool(((t == 0) | (t == 1)).all()):
        bad = torch.unique(t[(t != 0) & (t != 1)])[:5].tolist()
        raise HemwslInputError(f"{name} must be a binary mask (bool or 0/1), found values such as {bad}")
    return t.bool()


def _binary_pair(y_pred: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a prediction/ground-truth pair of masks and return them as bool ``(B, H, W)`` tensors."""
    p = _as_binary(_as_batch_2d(y_pred, "y_pred"), "y_pred")
    g = _as_binary(_as_batch_2d(y, "y"), "y")
    if p.shape != g.shape:
        raise HemwslInputError(f"y_pred and y differ in shape: {tuple(p.shape)} != {tuple(g.shape)}")
    return p, g.to(p.device)


def _nanmean(t: torch.Tensor) -> float:
    t = t.reshape(-1).to(torch.float64)
    t = t[~torch.isnan(t)]
    return float(t.mean()) if t.numel() else _NAN


def _any(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).any(dim=1)


# --------------------------------------------------------------------------------------------- overlap
def _overlap_from_stats(stats: torch.Tensor, metric: str) -> torch.Tensor:
    """Dice or IoU from rows ``(intersection, |pred|, |gt|)``, with the empty-mask policy applied."""
    stats = stats.to(torch.float64).reshape(-1, 3)
    inter, ps, gs = stats[:, 0], stats[:, 1], stats[:, 2]
    if metric in ("dice", "box_dice"):
        num, den = 2.0 * inter, ps + gs
    else:
        num, den = inter, ps + gs - inter
    raw = torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(den))
    return apply_empty_policy(raw, ps > 0, gs > 0, metric)


def _overlap_stats(p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Per-slice ``(intersection, |pred|, |gt|)`` as a ``(B, 3)`` float64 tensor."""
    flat_p = p.reshape(p.shape[0], -1)
    flat_g = g.reshape(g.shape[0], -1)
    return torch.stack(
        [(flat_p & flat_g).sum(1), flat_p.sum(1), flat_g.sum(1)],
        dim=1,
    ).to(torch.float64)


def compute_dice(y_pred: Any, y: Any) -> torch.Tensor:
    """Pixel Dice ``2|P & G| / (|P| + |G|)`` of each slice.

    Wraps ``monai.metrics.compute_dice(ignore_empty=False)`` and applies :data:`EMPTY_POLICY`.

    Args:
        y_pred: binary predicted masks, ``(B, H, W)`` or ``(B, 1, H, W)``.
        y: binary ground-truth masks of the same shape.

    Returns:
        Float64 tensor ``(B,)``; 1.0 when both masks are empty, 0.0 when only one is.
    """
    p, g = _binary_pair(y_pred, y)
    raw = monai_compute_dice(p[:, None], g[:, None], include_background=True, ignore_empty=False).reshape(-1)
    return apply_empty_policy(raw, _any(p), _any(g), "dice")


def compute_iou(y_pred: Any, y: Any) -> torch.Tensor:
    """Pixel IoU (Jaccard) ``|P & G| / |P | G|`` of each slice.

    Wraps ``monai.metrics.compute_iou(ignore_empty=False)`` and applies :data:`EMPTY_POLICY`.

    Args:
        y_pred: binary predicted masks, ``(B, H, W)`` or ``(B, 1, H, W)``.
        y: binary ground-truth masks of the same shape.

    Returns:
        Float64 tensor ``(B,)``; 1.0 when both masks are empty, 0.0 when only one is.
    """
    p, g = _binary_pair(y_pred, y)
    raw = monai_compute_iou(p[:, None].float(), g[:, None].float(), include_background=True, ignore_empty=False)
    return apply_empty_policy(raw.reshape(-1), _any(p), _any(g), "iou")


def compute_global_dice(y_pred: Any, y: Any) -> float:
    """Global (pooled) Dice: ``2 sum|P & G| / (sum|P| + sum|G|)`` over all pixels of all slices.

    Unlike the mean of per-slice Dice, large lesions weigh more and empty slices only count through their
    false positives. Both totals empty gives 1.0, one of them empty 0.0 (:data:`EMPTY_POLICY`).

    Args:
        y_pred: binary predicted masks, ``(B, H, W)`` or ``(B, 1, H, W)``.
        y: binary ground-truth masks of the same shape.
    """
    p, g = _binary_pair(y_pred, y)
    return float(_overlap_from_stats(_overlap_stats(p, g).sum(0), "dice")[0])


def compute_global_iou(y_pred: Any, y: Any) -> float:
    """Global (pooled) IoU ``sum|P & G| / sum|P | G|`` over all pixels of all slices.

    See :func:`compute_global_dice` for the arguments and the empty cases.
    """
    p, g = _binary_pair(y_pred, y)
    return float(_overlap_from_stats(_overlap_stats(p, g).sum(0), "iou")[0])


# --------------------------------------------------------------------------------------------- boxes
_STRUCTURE_8 = np.ones((3, 3), dtype=bool)


def nonzero_box(m: np.ndarray) -> tuple[slice, ...]:
    """The smallest box (one slice per axis) holding every nonzero element of ``m`` (``m`` not all zero).

    Connected components never leave it, so labelling the box instead of the whole array gives the same
    components; lesion-sized masks on 512 x 512 slices label ~100x faster.
    """
    box = []
    for axis in range(m.ndim):
        hit = np.flatnonzero(m.any(axis=tuple(a for a in range(m.ndim) if a != axis)))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def bounding_box_mask(mask: Any) -> torch.Tensor:
    """Rasterise the tight bounding boxes of the connected components of each slice.

    Components use 8-connectivity (``scipy.ndimage.label`` with a 3x3 structure); each one's box
    (``scipy.ndimage.find_objects``) is filled, and the slice's box mask is the union of its boxes.

    Args:
        mask: binary masks, ``(B, H, W)`` or ``(B, 1, H, W)`` (or one ``(H, W)`` slice).

    Returns:
        Bool tensor ``(B, H, W)`` on the input's device.
    """

    m = _as_binary(_as_batch_2d(mask, "mask"), "mask")
    arr = m.cpu().numpy()
    out = np.zeros_like(arr, dtype=bool)
    for b in range(arr.shape[0]):
        if not arr[b].any():
            continue
        box = nonzero_box(arr[b])  # components stay inside it: label the box only
        labels, _ = ndimage.label(arr[b][box], structure=_STRUCTURE_8)
        view = out[b][box]  # a view: filling it fills out
        view |= arr[b][box]  # one-pixel and straight-line components are their own box
        for sl in ndimage.find_objects(labels):
            if sl is not None and sl[0].stop - sl[0].start > 1 and sl[1].stop - sl[1].start > 1:
                view[sl] = True
    return torch.from_numpy(out).to(m.device)


def compute_box_dice(y_pred: Any, y: Any) -> torch.Tensor:
    """Dice between the rasterised component boxes of prediction and ground truth (:func:`bounding_box_mask`).

    Returns:
        Float64 tensor ``(B,)`` following :data:`EMPTY_POLICY` (a box mask is empty iff its mask is).
    """
    p, g = _binary_pair(y_pred, y)
    return _overlap_from_stats(_overlap_stats(bounding_box_mask(p), bounding_box_mask(g)), "box_dice")


def compute_box_iou(y_pred: Any, y: Any) -> torch.Tensor:
    """IoU between the rasterised component boxes of prediction and ground truth (:func:`bounding_box_mask`).

    Returns:
        Float64 tensor ``(B,)`` following :data:`EMPTY_POLICY`.
    """
    p, g = _binary_pair(y_pred, y)
    return _overlap_from_stats(_overlap_stats(bounding_box_mask(p), bounding_box_mask(g)), "box_iou")


# --------------------------------------------------------------------------------------------- hits
def compute_hit(y_pred: Any, y: Any) -> torch.Tensor:
    """Loose hit: 1.0 when the predicted mask overlaps the lesion by at least one pixel, else 0.0.

    Returns:
        Float64 tensor ``(B,)``; 1.0 when both masks are empty, 0.0 for a false alarm on an empty slice
        (:data:`EMPTY_POLICY`).
    """
    p, g = _binary_pair(y_pred, y)
    raw = _any(p & g).to(torch.float64)
    return apply_empty_policy(raw, _any(p), _any(g), "hit")


def compute_pointing_game(heatmap: Any, y: Any) -> torch.Tensor:
    """Pointing game: 1.0 when the heatmap's maximum lies inside the lesion, else 0.0.

    The maximum is ``argmax`` over the flattened slice; with ties the first maximum in row-major order
    counts. A constant heatmap (e.g. all zero) points nowhere and counts as an empty prediction.

    Args:
        heatmap: real-valued maps (a CAM, not a thresholded mask), ``(B, H, W)`` or ``(B, 1, H, W)``.
        y: binary ground-truth masks of the same shape.

    Returns:
        Float64 tensor ``(B,)``: NaN for slices without lesion (nothing to point at), 0.0 for a constant
        heatmap on a lesion slice (:data:`EMPTY_POLICY`).
    """
    h = _as_batch_2d(heatmap, "heatmap")
    g = _as_binary(_as_batch_2d(y, "y"), "y")
    if h.shape != g.shape:
        raise HemwslInputError(f"heatmap and y differ in shape: {tuple(h.shape)} != {tuple(g.shape)}")
    h = h.to(torch.float64)
    if bool(torch.isnan(h).any()):
        raise HemwslInputError("heatmap contains NaN")
    g = g.to(h.device)
    flat = h.reshape(h.shape[0], -1)
    idx = torch.argmax(flat, dim=1)  # first maximal value
    raw = g.reshape(g.shape[0], -1).gather(1, idx[:, None])[:, 0].to(torch.float64)
    pred_any = flat.amax(1) > flat.amin(1)
    return apply_empty_policy(raw, pred_any, _any(g), "pointing_game")


# --------------------------------------------------------------------------------------------- classes
def _label_pair(y_pred: Any, y: Any, num_classes: int | None) -> tuple[torch.Tensor, torch.Tensor, int]:
    p = _as_batch_2d(y_pred, "y_pred")
    g = _as_batch_2d(y, "y").to(p.device)
    if p.shape != g.shape:
        raise HemwslInputError(f"y_pred and y differ in shape: {tuple(p.shape)} != {tuple(g.shape)}")
    for t, name in ((p, "y_pred"), (g, "y")):
        if t.is_floating_point() and (bool(torch.isnan(t).any()) or not bool((t == t.round()).all())):
            raise HemwslInputError(f"{name} must hold integer class labels")
        if t.numel() and int(t.min()) < 0:
            raise HemwslInputError(f"{name} holds negative class labels")
    p, g = p.long(), g.long()
    top = int(max(p.max(), g.max())) if p.numel() else 0
    if num_classes is None:
        num_classes = max(top + 1, 2)
    elif top >= num_classes:
        raise HemwslInputError(f"labels go up to {top} but num_classes is {num_classes}")
    return p, g, int(num_classes)


def compute_class_iou(
    y_pred: Any, y: Any, num_classes: int | None = None, include_background: bool = False
) -> torch.Tensor:
    """IoU of each class in label maps, NaN for the classes present in neither map.

    Wraps ``monai.metrics.compute_iou`` on one-hot encodings.

    Args:
        y_pred: predicted label maps (0 = background), ``(B, H, W)`` or ``(B, 1, H, W)``.
        y: ground-truth label maps of the same shape.
        num_classes: number of labels including background; default: largest label + 1.
        include_background: whether label 0 gets a column.

    Returns:
        Float64 tensor ``(B, C)`` (``C = num_classes`` or ``num_classes - 1``).
    """
    p, g, n = _label_pair(y_pred, y, num_classes)
    po = one_hot(p[:, None], num_classes=n, dim=1)
    go = one_hot(g[:, None], num_classes=n, dim=1)
    iou = monai_compute_iou(po, go, include_background=include_background, ignore_empty=False).to(torch.float64)
    first = 0 if include_background else 1
    present = (po[:, first:].flatten(2).amax(2) > 0) | (go[:, first:].flatten(2).amax(2) > 0)
    return torch.where(present, iou, torch.full_like(iou, _NAN))


def compute_miou(y_pred: Any, y: Any, num_classes: int | None = None, include_background: bool = False) -> torch.Tensor:
    """Mean IoU over the classes present (in the prediction or the ground truth) of each case.

    Args:
        y_pred: predicted label maps (0 = background), ``(B, H, W)`` or ``(B, 1, H, W)``.
        y: ground-truth label maps of the same shape.
        num_classes: number of labels including background; default: largest label + 1.
        include_background: whether label 0 counts as a class.

    Returns:
        Float64 tensor ``(B,)``; 1.0 when no class is present in either map, 0.0 when the foreground of
        only one of them is empty (:data:`EMPTY_POLICY`, key ``"miou"``).
    """
    cls = compute_class_iou(y_pred, y, num_classes=num_classes, include_background=include_background)
    p, g, _ = _label_pair(y_pred, y, num_classes)
    valid = ~torch.isnan(cls)
    raw = torch.where(valid, cls, torch.zeros_like(cls)).sum(1) / valid.sum(1).clamp_min(1)
    return apply_empty_policy(raw, _any(p > 0), _any(g > 0), "miou")


def compute_low_iou_rate(iou: Any, threshold: float = 0.01) -> float:
    """Share of cases with IoU ``<= threshold`` (localisation failures, seed paper 002), NaN values skipped.

    Args:
        iou: per-case IoU values (from :func:`compute_iou`, :func:`compute_miou`, ...).
        threshold: failure bound, 0.01 by default.

    Returns:
        The fraction in ``[0, 1]``, or NaN when no value is defined.
    """
    v = _to_tensor(iou, "iou").reshape(-1).to(torch.float64)
    v = v[~torch.isnan(v)]
    return float((v <= threshold).double().mean()) if v.numel() else _NAN


# --------------------------------------------------------------------------------------------- MONAI classes
_OVERLAP_REDUCTIONS = ("both", "per_slice", "global", "none")


class _OverlapMetric(CumulativeIterationMetric):
    """Buffers per-slice ``(intersection, |pred|, |gt|)`` rows; aggregates per-slice means and global scores."""

    metric = "dice"
    boxes = False

    def __init__(self, reduction: str = "both", positive_only: bool = False) -> None:
        super().__init__()
        check_choice("reduction", reduction, _OVERLAP_REDUCTIONS)
        self.reduction = reduction
        self.positive_only = positive_only

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        p, g = _binary_pair(y_pred, y)
        if self.boxes:
            p, g = bounding_box_mask(p), bounding_box_mask(g)
        return _overlap_stats(p, g)

    def aggregate(  # type: ignore[override]
        self, reduction: str | None = None
    ) -> dict[str, float] | float | torch.Tensor:
        """Reduce the buffered slices.

        Args:
            reduction: overrides the constructor's: ``"both"`` -> ``{"per_slice": mean of per-slice scores,
                "global": pooled score}``, ``"per_slice"`` or ``"global"`` -> that float, ``"none"`` -> the
                per-slice scores as a ``(N,)`` tensor.
        """
        reduction = reduction or self.reduction
        check_choice("reduction", reduction, _OVERLAP_REDUCTIONS)
        stats = self.get_buffer()
        if not isinstance(stats, torch.Tensor):
            stats = torch.zeros(0, 3, dtype=torch.float64)
        stats = stats.reshape(-1, 3)
        if self.positive_only:
            stats = stats[stats[:, 2] > 0]
        per_slice = _overlap_from_stats(stats, self.metric)
        if reduction == "none":
            return per_slice
        mean = _nanmean(per_slice)
        pooled = float(_overlap_from_stats(stats.sum(0), self.metric)[0]) if stats.shape[0] else _NAN
        if reduction == "per_slice":
            return mean
        if reduction == "global":
            return pooled
        return {"per_slice": mean, "global": pooled}


class DiceScoreMetric(_OverlapMetric):
    """Pixel Dice per slice (mean over slices) and global (pooled over all pixels), as in seed paper 000.

    Call it with binary ``y_pred``/``y`` batches ``(B, H, W)`` or ``(B, 1, H, W)``; the buffer holds
    per-slice counts, so both reductions come from one pass.

    Args:
        reduction: default of :meth:`aggregate`: ``"both"``, ``"per_slice"``, ``"global"`` or ``"none"``.
        positive_only: keep only slices whose ground truth holds a lesion (the "positive slices"
            evaluation); the empty-mask policy is unchanged.

    Example::

        metric = DiceScoreMetric()
        for batch in loader:
            metric(y_pred=cam_masks, y=batch["mask"])
        scores = metric.aggregate()  # {"per_slice": ..., "global": ...}
        metric.reset()
    """

    metric = "dice"


class IoUScoreMetric(_OverlapMetric):
    """Pixel IoU per slice (mean over slices) and global (pooled); see :class:`DiceScoreMetric`."""

    metric = "iou"


class BoxDiceMetric(_OverlapMetric):
    """Dice of rasterised component boxes (:func:`compute_box_dice`), per slice and global."""

    metric = "box_dice"
    boxes = True


class BoxIoUMetric(_OverlapMetric):
    """IoU of rasterised component boxes (:func:`compute_box_iou`), per slice and global."""

    metric = "box_iou"
    boxes = True


class _PerCaseMetric(CumulativeIterationMetric):
    """Buffers one value per case and aggregates their NaN-aware mean (``"mean"``) or returns them (``"none"``)."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        check_choice("reduction", reduction, ("mean", "none"))
        self.reduction = reduction

    def _values(self) -> torch.Tensor:
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            return torch.zeros(0, dtype=torch.float64)
        return data.reshape(-1).to(torch.float64)

    def aggregate(self, reduction: str | None = None) -> float | torch.Tensor:  # type: ignore[override]
        """NaN-aware mean of the buffered values (``"mean"``, NaN when none is defined) or all of them (``"none"``)."""
        reduction = reduction or self.reduction
        check_choice("reduction", reduction, ("mean", "none"))
        values = self._values()
        return values if reduction == "none" else _nanmean(values)


class HitRateMetric(_PerCaseMetric):
    """Loose hit rate: share of slices whose prediction overlaps the lesion (:func:`compute_hit`)."""

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return compute_hit(y_pred, y)[:, None]


class PointingGameMetric(_PerCaseMetric):
    """Pointing-game accuracy over lesion slices (:func:`compute_pointing_game`); ``y_pred`` is the heatmap."""

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return compute_pointing_game(y_pred, y)[:, None]


class MeanClassIoUMetric(CumulativeIterationMetric):
    """mIoU over the classes present, per case, and the share of cases with mIoU <= ``low_iou_threshold``.

    Args:
        num_classes: number of labels including background (fixed, so that iterations line up).
        include_background: whether label 0 counts as a class.
        low_iou_threshold: bound of :func:`compute_low_iou_rate`.

    ``aggregate()`` returns ``{"miou": mean per-case mIoU, "per_class": [NaN-aware mean IoU of each class
    over the cases where it is present], "low_iou_rate": share of cases with mIoU <= threshold}``.
    """

    def __init__(self, num_classes: int, include_background: bool = False, low_iou_threshold: float = 0.01) -> None:
        super().__init__()
        if num_classes < 2:
            raise HemwslInputError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = int(num_classes)
        self.include_background = include_background
        self.low_iou_threshold = low_iou_threshold

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        kw = {"num_classes": self.num_classes, "include_background": self.include_background}
        cls = compute_class_iou(y_pred, y, **kw)
        miou = compute_miou(y_pred, y, **kw)
        return torch.cat([miou[:, None], cls], dim=1)

    def aggregate(self) -> dict[str, Any]:  # type: ignore[override]
        data = self.get_buffer()
        n_cols = self.num_classes - (0 if self.include_background else 1) + 1
        if not isinstance(data, torch.Tensor):
            data = torch.zeros(0, n_cols, dtype=torch.float64)
        data = data.reshape(-1, n_cols).to(torch.float64)
        miou = data[:, 0]
        return {
            "miou": _nanmean(miou),
            "per_class": [_nanmean(data[:, c]) for c in range(1, n_cols)],
            "low_iou_rate": compute_low_iou_rate(miou, self.low_iou_threshold),
        }
