"""A pseudo-label component filter learned from slice labels only (weak supervision).

A pseudo-label region (for example the hyperdense-blood prior of :class:`hemwsl.thresholds.IntensityPrior`)
is a set of connected components on each slice, some of them blood and some of them its look-alikes:
calcifications, the partial-volume rim of the inner skull table, the falx and the tentorium. The
look-alikes occur on slices **without** hemorrhage as often as on slices with it, the blood only on the
latter, so a classifier that predicts the slice label from one component's own description learns to
score blood-like components high. The filter is that classifier, trained on the components of the
training patients' whole volumes (every slice) with their slice labels; no pixel label is read. On a
new volume, the components it scores below ``threshold`` are dropped.

Each component is described by :data:`COMPONENT_FEATURES`: its size, its HU statistics, the HU of a
3-pixel ring around it (in the brain; bone at the ring), its distance to the brain's edge, its position
relative to the brain's centre and midline, the slice's relative height, its shape, and whether the
region continues on the adjacent slices. Features of the slice as a whole (how many components it has,
how large the region is) are left out on purpose: they would predict the slice label without telling
the components of one slice apart.

Model: scikit-learn's ``HistGradientBoostingClassifier`` with class-balanced sample weights, so that
``threshold=0.5`` is the balanced decision point; per cross-validation fold, train it on the fold's
training and validation patients only (:func:`hemwsl.pseudo.make_pseudo_labels` does).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from hemwsl.errors import HemwslInputError

__all__ = ["COMPONENT_FEATURES", "ComponentFilter", "OneClassError", "component_features", "label_components"]

#: Names of the per-component features of :func:`component_features`, in column order.
COMPONENT_FEATURES: tuple[str, ...] = (
    "log_area", "hu_mean", "hu_std", "hu_median", "frac_ge_80", "frac_ge_70", "frac_lt_60",
    "ring_hu_mean", "ring_frac_bone", "ring_brain_hu_mean", "ring_frac_lt_20",
    "edge_dist_min", "edge_dist_mean", "edge_dist_max", "edge_dist_mean_rel",
    "centre_dist_rel", "midline_dist_rel", "ap_offset_rel", "slice_height",
    "bbox_fill", "perimeter_ratio", "continues_above", "continues_below", "brain_fraction",
)

class OneClassError(HemwslInputError):
    """The training components all lie on slices of one label: there is nothing to learn a filter from."""


_RING = 3  # pixels of the ring around a component
_BONE_HU = 95.0  # ring voxels at or above this count as bone (CT-ICH clips HU at 100)


def label_components(region: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Per-slice connected components (8-connectivity) of an ``(X, Y, Z)`` region.

    Returns:
        ``(labels, counts)``: ``labels`` int32 ``(X, Y, Z)``, numbered ``1..counts[z]`` on each slice ``z``.
    """
    from scipy import ndimage

    region = np.asarray(region, dtype=bool)
    if region.ndim != 3:
        raise HemwslInputError(f"region must be (X, Y, Z), got shape {region.shape}")
    labels = np.zeros(region.shape, dtype=np.int32)
    counts = []
    for z in range(region.shape[-1]):
        labels[..., z], n = ndimage.label(region[..., z], structure=np.ones((3, 3), dtype=bool))
        counts.append(int(n))
    return labels, counts


def component_features(hu: np.ndarray, brain: np.ndarray, region: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features (:data:`COMPONENT_FEATURES`) of every per-slice component of ``region``.

    Args:
        hu: the CT in HU, ``(X, Y, Z)`` (not skull stripped: the ring sees the bone).
        brain: the brain mask, same shape (:class:`hemwsl.transforms.SkullStrip`).
        region: the pseudo-label region on **every** slice, same shape.

    Returns:
        ``(features (N, F) float32, slices (N,) int, labels (X, Y, Z) int32)``: row ``j`` describes the
        component numbered ``j - first(z) + 1`` on slice ``slices[j]`` of ``labels``
        (:func:`label_components`), rows in slice order.
    """
    from scipy import ndimage

    hu = np.asarray(hu, dtype=np.float32)
    brain = np.asarray(brain, dtype=bool)
    if hu.ndim != 3 or brain.shape != hu.shape or np.shape(region) != hu.shape:
        raise HemwslInputError(
            f"hu, brain and region must be (X, Y, Z) of one shape, got {hu.shape}, {brain.shape}, {np.shape(region)}")
    labels, counts = label_components(region)
    any_region = labels > 0
    depth = hu.shape[-1]
    rows: list[list[float]] = []
    slices: list[int] = []
    ring_struct = ndimage.generate_binary_structure(2, 1)
    for z in range(depth):
        if not counts[z]:
            continue
        b = brain[..., z]
        h = hu[..., z]
        lab = labels[..., z]
        barea = float(b.sum())
        if barea:
            dist = ndimage.distance_transform_edt(b)
            by, bx = (float(c) for c in ndimage.center_of_mass(b))
        else:  # a region outside any brain (no skull stripping upstream): measure against the slice
            dist = np.zeros(h.shape)
            by, bx = (h.shape[0] - 1) / 2.0, (h.shape[1] - 1) / 2.0
        brad = max(np.sqrt(max(barea, 1.0) / np.pi), 1.0)
        for i, sl in enumerate(ndimage.find_objects(lab), start=1):
            if sl is None:
                continue
            lo = [max(s.start - _RING - 1, 0) for s in sl]
            crop = tuple(slice(a, min(s.stop + _RING + 1, n)) for a, s, n in zip(lo, sl, h.shape))
            m = lab[crop] == i
            v = h[crop][m]
            area = float(m.sum())
            ring = ndimage.binary_dilation(m, structure=ring_struct, iterations=_RING) & ~m
            rv = h[crop][ring]
            rbrain = b[crop][ring]
            rb = rv[rbrain] if rbrain.any() else rv
            ys, xs = np.nonzero(m)
            cy, cx = ys.mean() + lo[0], xs.mean() + lo[1]
            perim = area - float(ndimage.binary_erosion(m).sum())
            d = dist[crop][m]
            up = float(any_region[..., z + 1][crop][m].mean()) if z + 1 < depth else 0.0
            down = float(any_region[..., z - 1][crop][m].mean()) if z > 0 else 0.0
            rows.append([
                np.log(area), v.mean(), v.std(), np.median(v), (v >= 80).mean(), (v >= 70).mean(), (v < 60).mean(),
                rv.mean() if rv.size else 0.0, (rv >= _BONE_HU).mean() if rv.size else 0.0,
                rb.mean() if rb.size else 0.0, (rv < 20).mean() if rv.size else 0.0,
                d.min(), d.mean(), d.max(), d.mean() / brad,
                np.hypot(cy - by, cx - bx) / brad, abs(cx - bx) / brad, (cy - by) / brad, z / depth,
                area / float((np.ptp(ys) + 1) * (np.ptp(xs) + 1)), perim / area, up, down, area / max(barea, 1.0),
            ])
            slices.append(z)
    feats = np.asarray(rows, dtype=np.float32).reshape(-1, len(COMPONENT_FEATURES))
    return feats, np.asarray(slices, dtype=np.int64), labels


class ComponentFilter:
    """Scores pseudo-label components by how much they look like blood, learned from slice labels.

    Args:
        threshold: components scored below this are dropped by :meth:`keep`.
        max_iter, learning_rate, max_leaf_nodes, min_samples_leaf, seed: of the gradient-boosted trees.
    """

    def __init__(self, threshold: float = 0.5, *, max_iter: int = 200, learning_rate: float = 0.05,
                 max_leaf_nodes: int = 15, min_samples_leaf: int = 40, seed: int = 0) -> None:
        if not 0.0 <= float(threshold) <= 1.0:
            raise HemwslInputError(f"component filter threshold must be in [0, 1], got {threshold}")
        self.threshold = float(threshold)
        self.params = dict(max_iter=int(max_iter), learning_rate=float(learning_rate),
                           max_leaf_nodes=int(max_leaf_nodes), min_samples_leaf=int(min_samples_leaf),
                           random_state=int(seed))
        self.model = None
        self.n_train: dict[str, int] = {}

    def fit(self, features: np.ndarray, slice_labels: np.ndarray) -> ComponentFilter:
        """Train on components (rows of ``features``) labelled with their slice's label (0/1)."""
        from sklearn.ensemble import HistGradientBoostingClassifier

        x = np.asarray(features, dtype=np.float32)
        y = np.asarray(slice_labels).astype(int).ravel()
        if x.ndim != 2 or x.shape[1] != len(COMPONENT_FEATURES) or len(x) != len(y):
            raise HemwslInputError(f"features must be (N, {len(COMPONENT_FEATURES)}) with N slice labels, "
                                   f"got {x.shape} and {y.shape}")
        if not np.isin(y, (0, 1)).all():
            raise HemwslInputError("slice labels of the component filter must be 0 or 1")
        n_pos, n_neg = int(y.sum()), int((1 - y).sum())
        if n_pos == 0 or n_neg == 0:
            raise OneClassError(
                f"the component filter needs components on slices with and without hemorrhage; got {n_pos} and {n_neg}")
        w = np.where(y == 1, 0.5 / (n_pos / len(y)), 0.5 / (n_neg / len(y)))
        self.model = HistGradientBoostingClassifier(**self.params).fit(x, y, sample_weight=w)
        self.n_train = {"components": len(y), "on_positive_slices": n_pos, "on_negative_slices": n_neg}
        return self

    def score(self, features: np.ndarray) -> np.ndarray:
        """Probability that each component's slice has hemorrhage, judged from the component alone."""
        if self.model is None:
            raise HemwslInputError("the component filter is not trained (call fit or load one)")
        x = np.asarray(features, dtype=np.float32)
        if len(x) == 0:
            return np.zeros(0)
        return self.model.predict_proba(x.reshape(-1, len(COMPONENT_FEATURES)))[:, 1]

    def keep(self, hu: np.ndarray, brain: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, dict]:
        """``region`` without the components scored below ``threshold``.

        Returns:
            ``(kept region bool (X, Y, Z), info)``; ``info`` has per-slice ``components`` and ``kept`` counts.
        """
        feats, slices, labels = component_features(hu, brain, region)
        keep = self.score(feats) >= self.threshold
        depth = labels.shape[-1]
        out = np.zeros(labels.shape, dtype=bool)
        total, kept = [0] * depth, [0] * depth
        start = 0
        for z in range(depth):
            n = int((slices == z).sum())
            if n:
                ids = np.flatnonzero(keep[start:start + n]) + 1
                out[..., z] = np.isin(labels[..., z], ids)
                total[z], kept[z] = n, int(len(ids))
            start += n
        return out, {"components": total, "kept": kept}

    def describe(self) -> dict:
        """The settings, for records such as ``pseudo_params.json``."""
        return {"threshold": self.threshold, **self.params}

    def save(self, path: str | os.PathLike) -> None:
        """Write the trained filter (pickle), atomically."""
        if self.model is None:
            raise HemwslInputError("the component filter is not trained: nothing to save")
        from hemwsl.data.io import atomic_write_bytes

        atomic_write_bytes(path, pickle.dumps({"threshold": self.threshold, "params": self.params, "model": self.model,
                                               "n_train": self.n_train, "features": list(COMPONENT_FEATURES)}))

    @classmethod
    def load(cls, path: str | os.PathLike, threshold: float | None = None) -> ComponentFilter:
        """A filter written by :meth:`save` (only load files you wrote: pickle)."""
        p = Path(path)
        if not p.is_file():
            raise HemwslInputError(f"{p}: component filter not found")
        try:
            with open(p, "rb") as f:
                state = pickle.load(f)
            feats = state["features"]
        except (pickle.UnpicklingError, EOFError, KeyError, TypeError, AttributeError) as err:
            raise HemwslInputError(f"{p}: not a component filter file ({err})") from err
        if list(feats) != list(COMPONENT_FEATURES):
            raise HemwslInputError(f"{p}: made with other component features; train it again")
        out = cls(state["threshold"] if threshold is None else threshold, **{
            ("seed" if k == "random_state" else k): v for k, v in state["params"].items()})
        out.model, out.n_train = state["model"], dict(state.get("n_train", {}))
        return out

