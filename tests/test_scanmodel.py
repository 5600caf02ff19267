"""The scan-level model: its features by hand, the logistic model and its JSON round trip, and a package using it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hemwsl.errors import HemwslInputError
from hemwsl.scanmodel import SCAN_FEATURES, ScanModel, fit_scan_model, scan_features

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_scan_features_by_hand():
    hu = np.zeros((40, 40, 3), np.float32)
    brain = np.zeros((40, 40, 3), bool)
    brain[5:35, 5:35, :] = True
    hu[15:25, 15:25, 1] = 70.0  # a 10 x 10 hyperdense blob well inside the brain, on slice 1
    hu[6:8, 6:30, 2] = 70.0  # a thin rim against the brain's edge on slice 2: eroded away
    probs = [0.1, 0.9, 0.8]
    f = dict(zip(SCAN_FEATURES, scan_features(probs, hu, brain, (1.0, 1.0, 2.0), brain_erosion=4, min_size=50)))
    assert f["max"] == pytest.approx(0.9) and f["top3"] == pytest.approx(0.6) and f["n_positive"] == 2
    assert f["run"] == pytest.approx(2 / 3) and f["mean"] == pytest.approx(0.6)
    assert f["log_prior_ml"] == pytest.approx(np.log1p(100 * 2.0 / 1000))  # only the blob survives
    assert f["log_largest_ml"] == pytest.approx(np.log1p(0.2)) and f["prior_hu_mean"] == pytest.approx(70.0)
    # distance to the brain's edge: the blob's pixels are 11..20 px from the edge of a 30 x 30 square
    assert 10 < f["prior_edge_mm"] < 16
    with pytest.raises(HemwslInputError, match="Z probabilities"):
        scan_features([0.5], hu, brain, (1, 1, 1))


def test_scan_model_learns_and_round_trips():
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 30)
    x = rng.normal(size=(60, len(SCAN_FEATURES))) + y[:, None] * np.linspace(0, 2, len(SCAN_FEATURES))
    m = fit_scan_model(x, y, min_sensitivity=0.9)
    p = m.probability(x)
    assert ((p >= m.threshold)[y == 1]).mean() >= 0.85  # the threshold keeps the sensitivity it was chosen for
    assert np.corrcoef(p, y)[0, 1] > 0.6
    back = ScanModel.from_dict(json.loads(json.dumps(m.to_dict())))
    np.testing.assert_allclose(back.probability(x), p)
    with pytest.raises(HemwslInputError, match="scans with and without"):
        ScanModel().fit(x[y == 1], y[y == 1])
    with pytest.raises(HemwslInputError, match="other features"):
        ScanModel.from_dict({**m.to_dict(), "features": ["max"]})


def test_package_with_a_scan_model(tmp_path):
    """pack_model(scan_call="model") trains one scan model per member on the other folds' scans (out-of-fold
    probabilities, slice labels), stores it as JSON numbers, and predict calls scans with it."""
    from hemwsl.data.datalist import build_datalist
    from hemwsl.data.synthetic import write_synthetic_ctich
    from hemwsl.engines.classifier import fold_datalists
    from hemwsl.networks import build_network
    from hemwsl.predict import ModelPackage, Predictor, pack_model

    cv = tmp_path / "cv"
    cv.mkdir()
    (cv / "cv_settings.json").write_text(json.dumps({"backbone": "resnet10", "spatial_size": [64, 64],
                                                     "skull_strip": True, "windows": ["brain", "blood"]}))
    synthetic_root = tmp_path / "data"
    write_synthetic_ctich(synthetic_root, n_patients=12, seed=5, shape=(48, 48, 8), negative_fraction=0.5)
    datalist = build_datalist("ct-ich", synthetic_root)
    rng = np.random.default_rng(1)
    for k in range(5):
        (cv / f"fold{k}" / "models").mkdir(parents=True)
        torch.manual_seed(k)
        torch.save(build_network("resnet10", in_channels=6).state_dict(), cv / f"fold{k}" / "models" / "model.pt")
        lines = ["patient,slice,label_any,prob_any"]
        for e in fold_datalists(datalist, n_folds=5, fold=k)["test"]:
            for z, lab in enumerate(e["slice_labels"]):
                lines.append(f"{e['patient']},{z},{lab},{np.clip(0.2 + 0.6 * lab + rng.normal(0, 0.1), 0, 1):.4f}")
        (cv / f"fold{k}" / "predictions_test.csv").write_text("\n".join(lines) + "\n")
    pkg = ModelPackage.load(pack_model(cv, tmp_path / "pkg", dataset_dir=synthetic_root, folds=[0, 1],
                                       scan_call="model"))
    for m in pkg.members:
        assert m["scan_aggregation"] == "model" and set(m["scan_model"]["coef"]) and "outside fold" in m["scan_call_source"]
        assert len(m["scan_model"]["coef"]) == len(SCAN_FEATURES)
    rep = Predictor(pkg).predict(datalist[0]["image"], tmp_path / "out", figures=False)
    assert all(0.0 <= s <= 1.0 for s in rep["scan"]["member_scores"])
    with pytest.raises(HemwslInputError, match="needs --dataset-dir"):
        pack_model(cv, tmp_path / "pkg2", scan_call="model")
