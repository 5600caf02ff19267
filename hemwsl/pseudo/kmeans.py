"""K-means clustering of CT intensities inside a thresholded CAM region (one slice at a time).

Step 2 of the pseudo-label pipeline of Ramananda & Sundaresan, "Class Activation Map-based Weakly
supervised Hemorrhage Segmentation using Resnet-LSTM in Non-Contrast Computed Tomography images"
(arXiv:2309.16627, 2023): the CAM says roughly *where* the hemorrhage is; the pixels of that region are
split into ``k`` intensity clusters (K-means, scikit-learn), and one cluster becomes the pseudo mask --
chosen by the classifier (:func:`hemwsl.pseudo.differential_prediction`) or, without a classifier, the
most hyperdense one (acute blood is brighter than brain tissue).

Clusters are numbered by increasing mean of the centre feature channel, so cluster ``n - 1`` is the
brightest and results do not depend on K-means' arbitrary label order.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

from hemwsl.errors import HemwslInputError

__all__ = ["kmeans_clusters", "kmeans_refine", "KMeansRefine", "KMeansRefined", "KMeansRefineD", "KMeansRefineDict"]


def _features(image: Any, name: str = "ct_slice") -> np.ndarray:
    """``(X, Y)`` or ``(C, X, Y)`` -> float64 ``(C, X, Y)``."""
    a = np.asarray(image.detach().cpu().numpy() if hasattr(image, "detach") else image, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise HemwslInputError(f"{name} must be (X, Y) or (C, X, Y), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise HemwslInputError(f"{name} contains NaN or inf")
    return a


def _region(region: Any, shape: tuple[int, int], name: str = "cam_mask") -> np.ndarray:
    r = np.asarray(region.detach().cpu().numpy() if hasattr(region, "detach") else region)
    if r.shape != shape:
        raise HemwslInputError(f"{name} has shape {r.shape}, expected {shape} (the slice's)")
    return r.astype(bool)


def kmeans_clusters(
    features: Any, region: Any, k: int = 4, seed: int = 0, n_init: int = 4, max_samples: int | None = 20000
) -> tuple[np.ndarray, int]:
    """Cluster the pixels of ``region`` by their feature values with K-means.

    Args:
        features: one slice ``(X, Y)`` or per-pixel feature channels ``(C, X, Y)`` (e.g. the 2.5D
            neighbourhood of a slice, centre channel ``C // 2``).
        region: bool ``(X, Y)``: the pixels to cluster (the thresholded CAM).
        k: number of clusters (the paper uses 4). Fewer are used when the region has fewer distinct
            feature values.
        seed: K-means random state.
        n_init: K-means restarts.
        max_samples: fit the centres on at most this many pixels of the region (a seeded random subset),
            then assign every pixel to its nearest centre; ``None`` fits on all pixels.

    Returns:
        ``(labels, n)``: int ``(X, Y)`` labels, ``-1`` outside ``region`` and ``0 .. n-1`` inside,
        numbered by increasing mean of the centre channel; ``n`` the number of clusters (0 for an
        empty region).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise HemwslInputError(f"k must be a positive int, got {k!r}")
    f = _features(features, "features")
    reg = _region(region, f.shape[1:], "region")
    labels = np.full(reg.shape, -1, dtype=np.int64)
    x = f[:, reg].T  # (n_pixels, C)
    if x.shape[0] == 0:
        return labels, 0
    distinct = np.unique(x, axis=0)
    n = int(min(k, distinct.shape[0]))
    if n == 1:
        labels[reg] = 0
        return labels, 1
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    fit = x
    if max_samples is not None and x.shape[0] > max_samples:
        fit = x[np.random.default_rng(seed).choice(x.shape[0], int(max_samples), replace=False)]
    # one thread: on small, shared machines OpenMP threads of K-means compete (10x slower under load)
    with threadpool_limits(limits=1):
        km = KMeans(n_clusters=n, n_init=n_init, random_state=seed).fit(fit)
        assigned = km.predict(x) if fit is not x else km.labels_
    centre = f.shape[0] // 2
    order = np.argsort(km.cluster_centers_[:, centre], kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    labels[reg] = rank[assigned]
    return labels, n


def kmeans_refine(
    ct_slice: Any,
    cam_mask: Any,
    k: int = 4,
    select: str | int | Callable[[np.ndarray, int], int] = "brightest",
    seed: int = 0,
    n_init: int = 4,
) -> np.ndarray:
    """The pixels of one K-means cluster of the CAM region: the pseudo mask of one slice.

    Args:
        ct_slice: the (contrast enhanced, skull stripped) slice ``(X, Y)`` or features ``(C, X, Y)``.
        cam_mask: bool ``(X, Y)``, the thresholded CAM.
        k: number of clusters.
        select: ``"brightest"`` (the most hyperdense cluster, ``n - 1``), a cluster number (negative
            counts from the brightest: ``-1`` is the brightest) or ``f(labels, n) -> cluster number``
            (e.g. a choice by differential prediction).
        seed, n_init: K-means settings.

    Returns:
        bool ``(X, Y)`` mask (empty when the CAM region is empty).
    """
    labels, n = kmeans_clusters(ct_slice, cam_mask, k=k, seed=seed, n_init=n_init)
    if n == 0:
        return np.zeros(labels.shape, dtype=bool)
    if select == "brightest":
        j = n - 1
    elif callable(select):
        j = int(select(labels, n))
    elif isinstance(select, (int, np.integer)) and not isinstance(select, bool):
        j = int(select) % n if -n <= int(select) < n else None
        if j is None:
            raise HemwslInputError(f"select={select} but the region has only {n} cluster(s)")
    else:
        raise HemwslInputError(f"select must be 'brightest', a cluster number or a callable, got {select!r}")
    return labels == j


class KMeansRefine(Transform):
    """Array transform of :func:`kmeans_refine`: ``(image (C, X, Y), cam_mask (X, Y)) -> bool (X, Y)``.

    Args:
        k, select, seed, n_init: see :func:`kmeans_refine`.
    """

    backend = [np.ndarray]

    def __init__(self, k: int = 4, select: str | int | Callable = "brightest", seed: int = 0, n_init: int = 4) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise HemwslInputError(f"k must be a positive int, got {k!r}")
        self.k, self.select, self.seed, self.n_init = k, select, seed, n_init

    def __call__(self, img: Any, cam_mask: Any) -> np.ndarray:
        return kmeans_refine(img, cam_mask, k=self.k, select=self.select, seed=self.seed, n_init=self.n_init)


class KMeansRefined(MapTransform):
    """Dictionary wrapper of :class:`KMeansRefine`: ``d[output_key] = KMeansRefine(d[key], d[cam_mask_key])``.

    Args:
        keys: the image key (one key).
        cam_mask_key: key of the thresholded CAM mask.
        output_key: where the pseudo mask goes (default ``"pseudo"``).
        k, select, seed, n_init: see :func:`kmeans_refine`.
    """

    def __init__(self, keys: KeysCollection, cam_mask_key: str = "cam_mask", output_key: str = "pseudo",
                 k: int = 4, select: str | int | Callable = "brightest", seed: int = 0, n_init: int = 4,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise HemwslInputError(f"keys must name one image, got {list(self.keys)}")
        self.cam_mask_key, self.output_key = cam_mask_key, output_key
        self.refine = KMeansRefine(k=k, select=select, seed=seed, n_init=n_init)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            if self.cam_mask_key not in d:
                raise HemwslInputError(f"missing key {self.cam_mask_key!r} (the thresholded CAM)")
            d[self.output_key] = self.refine(d[key], d[self.cam_mask_key])
        return d


KMeansRefineD = KMeansRefineDict = KMeansRefined
