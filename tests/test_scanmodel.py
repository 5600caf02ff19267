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


def test_quantify_chooses_among_aggregations_and_the_scan_model(tmp_path):
    """run_quantify with "model": one scan model per fold on its selection patients, compared with the
    aggregations on cross-fitted scores; masks equal to the truth give CCC 1 once the call is right."""
    import nibabel as nib

    from hemwsl.benchmark.runner import cv_folds
    from hemwsl.data.datalist import build_datalist
    from hemwsl.data.synthetic import write_synthetic_ctich
    from hemwsl.quantify import run_quantify

    root = tmp_path / "data"
    write_synthetic_ctich(root, n_patients=12, seed=5, shape=(48, 48, 8), negative_fraction=0.5)
    datalist = build_datalist("ct-ich", root)
    rng = np.random.default_rng(2)
    lines = ["patient,slice,label_any,prob_any"]
    for e in datalist:
        for z, lab in enumerate(e["slice_labels"]):
            lines.append(f"{e['patient']},{z},{lab},{np.clip(0.15 + 0.7 * lab + rng.normal(0, 0.1), 0, 1):.4f}")
    (tmp_path / "pred.csv").write_text("\n".join(lines) + "\n")
    masks = tmp_path / "masks"
    masks.mkdir()
    for e in datalist:
        img = nib.load(e["label"])
        nib.save(img, str(masks / f"{e['patient']}.nii.gz"))
    folds = cv_folds(datalist, n_folds=2, seed=0)
    s = run_quantify(datalist, masks, [tmp_path / "pred.csv"], tmp_path / "out", folds,
                     aggregations=("max", "model"), n_boot=50, figures=False)
    assert "model" in s["scan"]["auroc_by_aggregation"]
    assert all(c["aggregation"] in ("max", "model") for c in s["choices"].values())
    header = (tmp_path / "out" / "per_patient.csv").read_text().splitlines()[0]
    assert "score_model" in header
