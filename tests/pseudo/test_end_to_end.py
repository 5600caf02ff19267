"""End to end on synthetic phantoms: tiny random classifier -> run_cam -> pseudo-labels -> datalist -> Dice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hemwsl.constants import IMAGE, LABEL, PATIENT
from hemwsl.data.io import load_volume
from hemwsl.data.settings import InputSettings
from hemwsl.pseudo import PseudoLabelSettings, build_threshold, evaluate_pseudo_labels, make_pseudo_labels
from tests.cam.helpers import tiny_cnn

SETTINGS = {"windows": ("brain",), "num_slices": 3, "spatial_size": (32, 32), "skull_strip": True}


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    from hemwsl.data.datalist import build_datalist
    from hemwsl.data.synthetic import write_synthetic_ctich

    root = tmp_path_factory.mktemp("phantoms")
    write_synthetic_ctich(root, n_patients=2, seed=7, shape=(48, 48, 5), negative_fraction=0.0)
    return build_datalist("ct-ich", root)


@pytest.mark.parametrize("mode,context", [("cam_kmeans", True), ("cam", False)])
def test_phantoms_to_datalist(phantoms, tmp_path, mode, context):
    from hemwsl.data.datalist import DATALIST_KEYS, load_datalist
    from hemwsl.engines.cam import run_cam

    torch.manual_seed(0)
    net = tiny_cnn(dtype=torch.float32, in_channels=3, width=4)
    run_cam(net, phantoms, tmp_path / "cams", methods=("layercam",), layers=["features"], batch_size=8,
            progress=False, inputs=InputSettings(**SETTINGS))
    out = tmp_path / "pseudo"
    result = make_pseudo_labels(net, phantoms, tmp_path / "cams", out, "layercam", "features",
                                PseudoLabelSettings(
                                    mode=mode,
                                    # a random network looks anywhere: threshold at the 80th percentile of the brain's
                                    # map values
                                    threshold=build_threshold("percentile", 80, region="brain"),
                                    context=context, prob_threshold=0.0),
                                inputs=InputSettings(**SETTINGS), progress=False)
    assert load_datalist(out / "datalist.json") == result
    assert [e[PATIENT] for e in result] == [e[PATIENT] for e in phantoms]
    for entry, e in zip(phantoms, result):
        assert set(DATALIST_KEYS) <= set(e) and e["reference"] == entry[LABEL] and e[IMAGE] == entry[IMAGE]
        ct = load_volume(entry[IMAGE])
        pseudo = load_volume(e[LABEL], kind="mask", dtype=np.uint8)
        assert pseudo.shape == ct.shape and np.allclose(pseudo.affine, ct.affine)
        assert set(np.unique(pseudo.array)) <= {0, 1}
        assert e["slice_labels"] == [int(pseudo.array[..., z].any()) for z in range(ct.shape[2])]
        assert pseudo.array.any()  # prob_threshold 0: every slice is positive
    scores = evaluate_pseudo_labels(result)
    # an independent Dice of the first patient
    p = load_volume(result[0][LABEL], kind="mask").array > 0
    g = load_volume(result[0]["reference"], kind="mask").array > 0
    assert scores["per_patient"][result[0][PATIENT]] == pytest.approx(2 * (p & g).sum() / (p.sum() + g.sum()))
    assert scores["n"] == 2
    d = scores["diagnostics"]["per_patient"][result[0][PATIENT]]
    assert d["recall"] == pytest.approx((p & g).sum() / g.sum())
    assert d["slice_recall"] == pytest.approx(g[..., p.any(axis=(0, 1))].sum() / g.sum())
    if p.any():
        assert d["precision"] == pytest.approx((p & g).sum() / p.sum())
    else:
        assert np.isnan(d["precision"])


def test_slice_probabilities_match_predict_volume(phantoms):
    """The driver's slice probabilities (skull stripped, resized, windowed) equal the classifier bundle's."""
    from hemwsl.engines.classifier import predict_volume
    from hemwsl.pseudo import pseudo_label_volume

    net = tiny_cnn(dtype=torch.float32, in_channels=3, width=4)
    image = phantoms[0][IMAGE]
    expected = predict_volume(net, image, **SETTINGS)[:, 0]
    cam = np.zeros(load_volume(image).shape, dtype=np.float32)
    _, _, info = pseudo_label_volume(image, cam, net, PseudoLabelSettings(mode="cam"), inputs=InputSettings(**SETTINGS))
    np.testing.assert_allclose(info["probability"], expected, atol=2e-6)
