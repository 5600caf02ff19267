from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from hemwsl.commands.classifier import parse_overrides
from hemwsl.engines.classifier import FlipTTAInferer, PrepareBatch, fold_datalists, output_names, summarize_cv
from hemwsl.engines.handlers import PredictionCollector
from hemwsl.errors import HemwslInputError


def test_fold_datalists_partition_patients(synthetic_datalist):
    seen_test = []
    for k in range(4):
        parts = fold_datalists(synthetic_datalist, n_folds=4, fold=k, seed=0)
        ids = {name: {e["patient"] for e in part} for name, part in parts.items()}
        assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
        assert len(ids["train"] | ids["val"] | ids["test"]) == len(synthetic_datalist)
        seen_test += sorted(ids["test"])
    assert sorted(seen_test) == sorted(e["patient"] for e in synthetic_datalist)
    with pytest.raises(HemwslInputError, match="fold"):
        fold_datalists(synthetic_datalist, n_folds=4, fold=4)


def test_prepare_batch_and_tta():
    batch = {"image": torch.rand(2, 3, 8, 8), "label": torch.tensor([[1.0], [0.0]])}
    x, y = PrepareBatch(channels_last=True)(batch, torch.device("cpu"))
    assert x.is_contiguous(memory_format=torch.channels_last) and torch.equal(y, batch["label"])

    class Asym(torch.nn.Module):
        def forward(self, x):
            return x[:, :1, :, :4].mean(dim=(1, 2, 3))[:, None]

    net = Asym()
    out = FlipTTAInferer(flip_dims=[(3,)])(batch["image"], net)
    expected = (net(batch["image"]) + net(batch["image"].flip(3))) / 2
    torch.testing.assert_close(out, expected)


def test_output_names():
    assert output_names(1) == ["any"]
    assert output_names(6)[0] == "any" and len(output_names(6)) == 6
    with pytest.raises(HemwslInputError, match="num_classes"):
        output_names(3)


def test_summarize_cv_pools_out_of_fold(tmp_path):
    from hemwsl.engines.classifier import write_classification_report

    rng = np.random.default_rng(0)
    ys, ps = [], []
    for k in range(3):
        fold = tmp_path / f"fold{k}"
        y = (rng.random(40) < 0.3).astype(float)
        p = np.clip(y * 0.3 + rng.random(40) * 0.7, 0, 1)
        c = PredictionCollector(activation=None)
        c.probs, c.labels = [p[:, None]], [y[:, None]]
        c.patients, c.slices = [f"p{k}"] * 40, list(range(40))
        c.to_csv(fold / "predictions_test.csv")
        write_classification_report(fold / "predictions_test.csv", fold, name="test")
        ys.append(y)
        ps.append(np.round(p, 6))
    res = summarize_cv(tmp_path, 3)
    y, p = np.concatenate(ys), np.concatenate(ps)
    assert res["pooled_out_of_fold"]["auroc"] == pytest.approx(roc_auc_score(y, p), abs=1e-9)
    assert res["pooled_out_of_fold"]["ap"] == pytest.approx(average_precision_score(y, p), abs=1e-9)
    per_fold = [roc_auc_score(a, b) for a, b in zip(ys, ps)]
    assert res["mean_sd"]["auroc"]["mean"] == pytest.approx(np.mean(per_fold), abs=1e-9)
    assert res["mean_sd"]["auroc"]["sd"] == pytest.approx(np.std(per_fold, ddof=1), abs=1e-9)
    assert "pooled out-of-fold" in (tmp_path / "cv_summary.md").read_text()
    with pytest.raises(HemwslInputError, match="fold3"):
        summarize_cv(tmp_path, 4)


def test_parse_overrides():
    assert parse_overrides(["backbone=resnet18", "spatial_size=[64,64]", "epochs=3"]) == {
        "backbone": "resnet18", "spatial_size": [64, 64], "epochs": 3}
    with pytest.raises(HemwslInputError, match="KEY=VALUE"):
        parse_overrides(["oops"])


def test_window_on_device_equals_loader_windowing(synthetic_datalist):
    from hemwsl.data.dataset import SliceDataset

    windows = ["brain", (60, 40)]
    ref = SliceDataset(synthetic_datalist[:1], windows=windows, spatial_size=(32, 32))
    raw = SliceDataset(synthetic_datalist[:1], windows=windows, spatial_size=(32, 32), window_on_device=True)
    assert raw[4]["image"].dtype == torch.float16 and raw[4]["image"].shape[0] == 3
    batch = {"image": torch.stack([raw[i]["image"] for i in (3, 4)]), "label": torch.zeros(2, 1)}
    x, _ = PrepareBatch(windows=windows, window_on_device=True)(batch, torch.device("cpu"))
    expected = torch.stack([ref[i]["image"] for i in (3, 4)])
    torch.testing.assert_close(x, expected, atol=2e-3, rtol=0)  # float16 HU: within 0.1 HU
