"""Each member of a model package applies the post-processing its fold's selection patients chose (a benchmark
report with a post-processing grid chooses it per fold), and its scan model sees the features it was fitted on."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from hemwsl.data.synthetic import make_phantom
from hemwsl.networks import build_network
from hemwsl.predict import ModelPackage, Predictor, pack_model

SETTINGS = {"backbone": "resnet10", "spatial_size": [64, 64], "skull_strip": True, "windows": ["brain", "blood"],
            "num_slices": 3, "tta": False}
SPECS = {0: "prior[e2,hu50-90,min5]", 1: "prior[e2,hu62-90,min5]"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("memberpost")
    cv = root / "cv"
    cv.mkdir()
    (cv / "cv_settings.json").write_text(json.dumps(SETTINGS))
    torch.manual_seed(0)
    for k in (0, 1):
        (cv / f"fold{k}" / "models").mkdir(parents=True)
        torch.save(build_network("resnet10", in_channels=6, num_classes=1).state_dict(),
                   cv / f"fold{k}" / "models" / "model.pt")
    bench = root / "bench"
    bench.mkdir()
    rows = "".join(f"{k},gradcam,layer4,\"{s}\",0.4\n{k},-,-,\"{s}\",0.4\n" for k, s in SPECS.items())
    (bench / "choices.csv").write_text("fold,method,layer,threshold,selection_dice\n" + rows)
    (bench / "thresholds.csv").write_text("fold,method,layer,threshold,value,selection_dice,selection_patients,"
                                          "selection_slices,selection_metric\n")
    (bench / "config.json").write_text(json.dumps({"prob_threshold": 0.5, "hu_range": [[50.0, 90.0], [62.0, 90.0]],
                                                   "brain_erosion": 2, "min_size": 5}))
    p = make_phantom(7, shape=(64, 64, 8), spacing=(0.9, 0.9, 5.0))
    return cv, bench, np.asarray(p["image"], dtype=np.float32)


def _mask(pkg: ModelPackage, member: int, hu: np.ndarray) -> np.ndarray:
    return Predictor(pkg, members=[member]).predict_arrays(hu, (0.9, 0.9, 5.0))["mask"]


def test_each_member_uses_its_folds_post_processing(setup, tmp_path):
    cv, bench, hu = setup
    post = {"slice_threshold": 0.0}  # every slice positive: the mask is the prior itself
    pkg = ModelPackage.load(pack_model(cv, tmp_path / "pkg", benchmark_dir=bench, scan_call="none",
                                       post_processing=post))
    pred = Predictor(pkg)
    assert [s.hu_range for s in pred.member_specs] == [(50.0, 90.0), (62.0, 90.0)]
    m0, m1 = _mask(pkg, 0, hu), _mask(pkg, 1, hu)
    assert m0.sum() > m1.sum() > 0
    # the same as packages whose every member was given that range by hand
    for k, rng in ((0, [50.0, 90.0]), (1, [62.0, 90.0])):
        fixed = ModelPackage.load(pack_model(cv, tmp_path / f"fixed{k}", benchmark_dir=bench, scan_call="none",
                                             post_processing={**post, "hu_range": rng}))
        assert fixed.recipe["fixed_post_processing"] == ["hu_range"]
        assert np.array_equal(_mask(fixed, 0, hu), _mask(pkg, k, hu))
        assert np.array_equal(_mask(fixed, 1, hu), _mask(pkg, k, hu))  # fixed: over the fold's own choice


def test_quantify_scan_model_records_its_features(setup, tmp_path):
    """A scan model a quantify report chose is packed with the prior quantify computed its features on, whatever the
    recipe's post-processing."""
    from hemwsl.scanmodel import SCAN_FEATURE_PRIOR, SCAN_FEATURES, fit_scan_model

    cv, bench, _ = setup
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, len(SCAN_FEATURES)))
    model = fit_scan_model(x, (x[:, 0] > 0).astype(int), 0.9)
    quant = tmp_path / "quant"
    quant.mkdir()
    choice = {"aggregation": "model", "threshold": 0.3, "min_slices": 1, "model": model.to_dict()}
    (quant / "summary.json").write_text(json.dumps({"settings": {"hu_reference": None},
                                                    "choices": {"0": choice, "1": choice}}))
    pkg = ModelPackage.load(pack_model(cv, tmp_path / "pkg", benchmark_dir=bench, quantify_dir=quant))
    assert all(m["scan_features"] == SCAN_FEATURE_PRIOR for m in pkg.members)
