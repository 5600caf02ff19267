from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hemwsl.engines.handlers import ClassificationHistory, PredictionCollector, read_predictions_csv


def _engine(outputs, batches, epoch=1):
    return SimpleNamespace(state=SimpleNamespace(output=outputs, batch=batches, epoch=epoch))


def test_collector_dict_and_decollated_outputs(tmp_path):
    c = PredictionCollector()
    logits = torch.tensor([[0.0], [2.0]])
    c(_engine({"pred": logits, "label": torch.tensor([[0.0], [1.0]])},
              {"patient": ["001", "002"], "slice_index": torch.tensor([3, 4])}))
    c(_engine([{"pred": torch.tensor([-1.0]), "label": torch.tensor([0.0])}],
              [{"patient": "003", "slice_index": torch.tensor(5)}]))
    probs, labels = c.arrays()
    np.testing.assert_allclose(probs[:, 0], torch.sigmoid(torch.tensor([0.0, 2.0, -1.0])).numpy(), rtol=1e-6)
    np.testing.assert_array_equal(labels[:, 0], [0, 1, 0])
    path = c.to_csv(tmp_path / "p.csv")
    back = read_predictions_csv(path)
    assert back["patient"].tolist() == ["001", "002", "003"]
    assert back["slice"].tolist() == [3, 4, 5]
    np.testing.assert_allclose(back["prob"][:, 0], probs[:, 0], atol=1e-6)
    assert back["names"] == ["any"]


def test_history_topk_and_resume(tmp_path):
    c = PredictionCollector(activation=None)
    h = ClassificationHistory(c, tmp_path, top_k=2)
    y = torch.tensor([[0.0], [0.0], [1.0], [1.0]])
    for epoch, scores in enumerate(([0.1, 0.6, 0.7, 0.9], [0.1, 0.2, 0.7, 0.9], [0.9, 0.2, 0.1, 0.3]), start=1):
        c.reset()
        eng = _engine({"pred": torch.tensor(scores)[:, None], "label": y}, {}, epoch=epoch)
        c(eng)
        h(eng)
    data = json.loads((tmp_path / "history.json").read_text())
    assert [e["epoch"] for e in data["epochs"]] == [1, 2, 3]
    # F1@0.5: epoch1 p=2/3 r=1 -> 0.8; epoch2 -> 1.0; epoch3 predicts only the first (a negative) -> 0
    f1 = [e["f1"] for e in data["epochs"]]
    assert f1 == pytest.approx([0.8, 1.0, 0.0])
    assert data["summary"]["f1_topk_mean"] == pytest.approx(0.9)
    assert data["summary"]["f1_topk_sd"] == pytest.approx(np.std([0.8, 1.0], ddof=1))
    assert data["summary"]["best_auroc"] == pytest.approx(1.0)
    eng.state.metrics = {"val_auc": 0.5}  # an evaluator's metrics get AP, F1, precision and recall beside AUROC
    h(eng)
    assert eng.state.metrics == pytest.approx({"val_auc": 0.5, "val_ap": data["epochs"][2]["ap"], "val_f1": 0.0,
                                               "val_precision": 0.0, "val_recall": 0.0})
    h2 = ClassificationHistory(c, tmp_path)  # a resumed run keeps the earlier epochs
    assert len(h2.history) == 3
