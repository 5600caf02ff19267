"""Agreement of estimated hemorrhage volumes with the truth, and the bedside ABC/2 estimate.

* :func:`volume_agreement`: Pearson r, Lin's concordance correlation coefficient (CCC), Bland-Altman
  bias and 95% limits of agreement, mean absolute error, the share of scans within a tolerance (5 mL),
  and the share of hemorrhage-free scans estimated under 1 mL; :func:`agreement_by_size` repeats it per
  true-volume stratum (< 5, 5-30, > 30 mL).
* :func:`abc2_volume_ml`: the ABC/2 formula of Kothari et al. 1996 on a mask, the estimate clinicians
  compute at the bedside.

References:
    Lin, "A concordance correlation coefficient to evaluate reproducibility", Biometrics 1989.
    Bland & Altman, "Statistical methods for assessing agreement between two methods of clinical
    measurement", Lancet 1986.
    Kothari et al., "The ABCs of measuring intracerebral hemorrhage volumes", Stroke 1996.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hemwsl.errors import HemwslInputError

__all__ = ["lins_ccc", "volume_agreement", "agreement_by_size", "abc2_volume_ml", "SIZE_STRATA"]

#: True-volume strata of :func:`agreement_by_size`: (name, low mL inclusive, high mL exclusive).
SIZE_STRATA: tuple[tuple[str, float, float], ...] = (("< 5 mL", 0.0, 5.0), ("5-30 mL", 5.0, 30.0),
                                                     (">= 30 mL", 30.0, float("inf")))


def _pair(true_ml: Any, pred_ml: Any) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(true_ml, dtype=np.float64).ravel()
    p = np.asarray(pred_ml, dtype=np.float64).ravel()
    if t.shape != p.shape:
        raise HemwslInputError(f"true and predicted volumes differ in length: {t.size} vs {p.size}")
    if not (np.isfinite(t).all() and np.isfinite(p).all()):
        raise HemwslInputError("volumes must be finite numbers (mL)")
    if (t < 0).any() or (p < 0).any():
        raise HemwslInputError("volumes must be >= 0 mL")
    return t, p


def lins_ccc(true_ml: Any, pred_ml: Any) -> float:
    """Lin's concordance correlation coefficient ``2 cov / (var_t + var_p + (mean_t - mean_p)^2)``
    (population moments, as Lin 1989); NaN with fewer than two scans or when both are constant."""
    t, p = _pair(true_ml, pred_ml)
    if t.size < 2:
        return float("nan")
    st, sp = t.var(), p.var()
    denom = st + sp + (t.mean() - p.mean()) ** 2
    if denom == 0:
        return float("nan")
    return float(2 * ((t - t.mean()) * (p - p.mean())).mean() / denom)


def volume_agreement(true_ml: Any, pred_ml: Any, tolerance_ml: float = 5.0, zero_ml: float = 1.0) -> dict[str, float]:
    """Agreement of predicted with true volumes over scans.

    Args:
        true_ml: true volumes (mL), one per scan (0 for a hemorrhage-free scan).
        pred_ml: predicted volumes (mL), same order.
        tolerance_ml: |error| counted as "within" (default 5 mL).
        zero_ml: a hemorrhage-free scan counts as correctly near zero when its estimate is below this.

    Returns:
        ``n``, ``n_negative`` (true volume 0), ``pearson_r``, ``ccc``, ``bias`` (mean of pred - true),
        ``loa_low`` / ``loa_high`` (bias -/+ 1.96 sd of the differences, sample sd), ``mae``,
        ``within_tol`` (share with |error| <= tolerance), ``negatives_under_zero_ml`` (share of the
        hemorrhage-free scans estimated below ``zero_ml``; NaN without such scans), ``positives_given_volume`` (share
        of the scans with hemorrhage given any volume, estimate > 0 mL: the sensitivity of what a reader of the
        volumes sees; NaN without such scans).
    """
    t, p = _pair(true_ml, pred_ml)
    if t.size == 0:
        raise HemwslInputError("no scans to compare")
    if not (np.isfinite(tolerance_ml) and tolerance_ml >= 0 and np.isfinite(zero_ml) and zero_ml >= 0):
        raise HemwslInputError(f"tolerance_ml and zero_ml must be >= 0 mL, got {tolerance_ml} and {zero_ml}")
    d = p - t
    sd = float(d.std(ddof=1)) if t.size > 1 else float("nan")
    neg = t == 0
    r = float(np.corrcoef(t, p)[0, 1]) if t.size > 1 and t.std() > 0 and p.std() > 0 else float("nan")
    return {
        "n": int(t.size),
        "n_negative": int(neg.sum()),
        "pearson_r": r,
        "ccc": lins_ccc(t, p),
        "bias": float(d.mean()),
        "loa_low": float(d.mean() - 1.96 * sd),
        "loa_high": float(d.mean() + 1.96 * sd),
        "mae": float(np.abs(d).mean()),
        "within_tol": float((np.abs(d) <= tolerance_ml).mean()),
        "negatives_under_zero_ml": float((p[neg] < zero_ml).mean()) if neg.any() else float("nan"),
        "positives_given_volume": float((p[~neg] > 0).mean()) if (~neg).any() else float("nan"),
    }


def agreement_by_size(true_ml: Any, pred_ml: Any, strata: Sequence[tuple[str, float, float]] = SIZE_STRATA,
                      **kwargs: Any) -> dict[str, dict[str, float]]:
    """:func:`volume_agreement` overall (``"all"``) and per true-volume stratum (scans with a true volume of
    0 fall in the first stratum); a stratum without scans is left out."""
    for i, st in enumerate(strata):
        ok = isinstance(st, (tuple, list)) and len(st) == 3 and all(
            isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and not np.isnan(v)
            for v in st[1:])
        if not ok or not st[1] < st[2]:
            raise HemwslInputError(f"strata[{i}] must be (name, low mL, high mL) with low < high, got {st!r}")
    t, p = _pair(true_ml, pred_ml)
    out = {"all": volume_agreement(t, p, **kwargs)}
    for name, lo, hi in strata:
        sel = (t >= lo) & (t < hi)
        if sel.any():
            out[name] = volume_agreement(t[sel], p[sel], **kwargs)
    return out


def abc2_volume_ml(mask: Any, spacing: Sequence[float]) -> float:
    """ABC/2 volume (Kothari et al. 1996) of a binary ``(X, Y, Z)`` mask with axial slices along Z.

    On the slice with the largest hemorrhage area, A is the largest diameter (the longest distance
    between two mask pixels, in mm) and B the largest extent perpendicular to A; C is the number of
    slices weighted by their area relative to that slice (1 when >= 75%, 0.5 when 25-75%, 0 below)
    times the slice thickness. Returns ``A * B * C / 2 / 1000`` (mL); 0 for an empty mask. It assumes an
    ellipsoid and over- or underestimates irregular and multifocal bleeds.
    """
    raw = np.asarray(mask)
    if raw.ndim != 3:
        raise HemwslInputError(f"ABC/2 needs a 3D (X, Y, Z) mask, got shape {raw.shape}")
    if raw.dtype != bool and not np.isin(raw, (0, 1)).all():
        raise HemwslInputError("ABC/2 needs a binary mask (0/1): threshold probabilities first")
    m = raw.astype(bool)
    if len(spacing) != 3 or not all(np.isfinite(float(s)) and float(s) > 0 for s in spacing):
        raise HemwslInputError(f"spacing must be three positive sizes in mm, got {tuple(spacing)}")
    sx, sy, sz = (float(s) for s in spacing)
    areas = m.sum(axis=(0, 1)).astype(np.float64)
    if areas.max() == 0:
        return 0.0
    z = int(np.argmax(areas))
    pts = np.argwhere(m[:, :, z]).astype(np.float64) * np.array([sx, sy])
    if len(pts) == 1:
        a = b = min(sx, sy)
    else:
        try:
            from scipy.spatial import ConvexHull

            hull = pts[ConvexHull(pts).vertices] if len(pts) >= 3 else pts
        except Exception:  # collinear points: the hull is the segment's ends
            hull = pts
        dif = hull[:, None, :] - hull[None, :, :]
        dist = np.sqrt((dif**2).sum(-1))
        i, j = np.unravel_index(int(np.argmax(dist)), dist.shape)
        a = float(dist[i, j])
        u = (hull[j] - hull[i]) / a if a > 0 else np.array([1.0, 0.0])
        perp = pts @ np.array([-u[1], u[0]])
        # extents measured between pixel centres: add one pixel so that a one-pixel-wide line has width
        a = a + min(sx, sy)
        b = float(perp.max() - perp.min()) + min(sx, sy)
    rel = areas / areas.max()
    c = float((np.where(rel >= 0.75, 1.0, np.where(rel >= 0.25, 0.5, 0.0))).sum()) * sz
    return a * b * c / 2.0 / 1000.0
