"""K-means clustering of the CAM region (:mod:`hemwsl.pseudo.kmeans`)."""

from __future__ import annotations

import numpy as np
import pytest

from hemwsl.errors import HemwslInputError
from hemwsl.pseudo import KMeansRefine, KMeansRefined, kmeans_clusters, kmeans_refine


def _slice():
    """32 x 32 slice: CAM region rows/cols 4..27 with four intensity bands, the hyperdense one a 6 x 6 box."""
    rng = np.random.default_rng(0)
    img = np.zeros((32, 32))
    region = np.zeros((32, 32), dtype=bool)
    region[4:28, 4:28] = True
    img[4:10, 4:28] = 0.10  # CSF-like
    img[10:20, 4:28] = 0.35  # white matter
    img[20:28, 4:28] = 0.55  # grey matter
    blood = np.zeros_like(region)
    blood[12:18, 12:18] = True
    img[blood] = 0.90
    img[region] += rng.normal(0, 0.01, int(region.sum()))
    img[~region] = 0.9  # bright outside the region: must not matter
    return img, region, blood


def test_kmeans_picks_hyperdense_cluster():
    img, region, blood = _slice()
    mask = kmeans_refine(img, region, k=4)
    np.testing.assert_array_equal(mask, blood)
    labels, n = kmeans_clusters(img, region, k=4)
    assert n == 4
    assert (labels[~region] == -1).all()
    # clusters numbered by increasing mean intensity: the bands are 0, 1, 2 and the blood 3
    assert (labels[5:9, 5:27] == 0).all() and (labels[21:27, 5:27] == 2).all() and (labels[blood] == 3).all()
    assert (labels[10:12, 4:28] == 1).all()


def test_select_and_transforms():
    img, region, blood = _slice()
    np.testing.assert_array_equal(kmeans_refine(img, region, select=-1), blood)
    np.testing.assert_array_equal(kmeans_refine(img, region, select=0), kmeans_clusters(img, region)[0] == 0)
    np.testing.assert_array_equal(kmeans_refine(img, region, select=lambda labels, n: 2),
                                  kmeans_clusters(img, region)[0] == 2)
    np.testing.assert_array_equal(KMeansRefine(k=4)(img[None], region), blood)
    d = KMeansRefined("image", cam_mask_key="cam_mask")({"image": img, "cam_mask": region})
    np.testing.assert_array_equal(d["pseudo"], blood)


def test_fewer_distinct_values_than_k_and_empty_region():
    img = np.zeros((8, 8))
    img[:, 4:] = 1.0
    region = np.ones((8, 8), dtype=bool)
    labels, n = kmeans_clusters(img, region, k=4)
    assert n == 2
    np.testing.assert_array_equal(labels, (img > 0).astype(int))
    labels, n = kmeans_clusters(img, np.zeros((8, 8), dtype=bool))
    assert n == 0 and (labels == -1).all()
    assert not kmeans_refine(img, np.zeros((8, 8), dtype=bool)).any()


def test_context_features_use_neighbour_slices():
    # centre slice alone cannot separate the two halves; the previous slice can
    centre = np.full((8, 8), 0.5)
    prev = np.zeros((8, 8))
    prev[:, 4:] = 1.0
    feats = np.stack([prev, centre, centre])
    labels, n = kmeans_clusters(feats, np.ones((8, 8), dtype=bool), k=4)
    assert n == 2
    assert len(np.unique(labels[:, :4])) == 1 and len(np.unique(labels[:, 4:])) == 1
    assert labels[0, 0] != labels[0, 7]


def test_bad_inputs():
    img, region, _ = _slice()
    with pytest.raises(HemwslInputError, match="k must be"):
        kmeans_clusters(img, region, k=0)
    with pytest.raises(HemwslInputError, match="region has shape"):
        kmeans_clusters(img, region[:10])
    with pytest.raises(HemwslInputError, match="select=7"):
        kmeans_refine(img, region, select=7)
    with pytest.raises(HemwslInputError, match="missing key 'cam_mask'"):
        KMeansRefined("image")({"image": img})


def test_fit_on_a_subset_gives_the_same_clusters():
    img, region, _ = _slice()
    full, n = kmeans_clusters(img, region, k=4)
    sub, m = kmeans_clusters(img, region, k=4, max_samples=200)  # 200 of the 576 region pixels
    assert n == m == 4
    np.testing.assert_array_equal(sub, full)


def test_multichannel_clusters_are_numbered_by_the_centre_channel():
    """With 2.5D features the clusters are ranked by the centre slice's mean, not by a neighbour's: here the
    previous slice is bright where the centre is dark, so ranking by channel 0 would reverse the labels."""
    centre = np.zeros((8, 8))
    centre[:, 4:] = 0.9  # the bright half of the centre slice
    prev = 1.0 - centre  # anti-correlated neighbour
    nxt = np.full((8, 8), 0.5)
    labels, n = kmeans_clusters(np.stack([prev, centre, nxt]), np.ones((8, 8), dtype=bool), k=2)
    assert n == 2
    assert (labels[:, 4:] == 1).all() and (labels[:, :4] == 0).all()  # brightest centre = the highest label
