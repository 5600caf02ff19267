"""``train_seed``: seeds of one recipe on the same folds (the patient split stays the one of ``seed``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hemwsl.engines.bundle import run_bundle
from hemwsl.engines.classifier import check_train_settings
from hemwsl.errors import HemwslInputError

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "ich_classifier"


def _tiny(root, out, **kw):
    return {"dataset_dir": str(root), "output_dir": str(out), "backbone": "resnet10", "spatial_size": [48, 48],
            "n_folds": 4, "fold": 1, "epochs": 1, "samples_per_epoch": 16, "batch_size": 8, "cache_workers": 0, **kw}


def test_train_seed_changes_the_weights_not_the_folds(synthetic_root, tmp_path):
    runs = {}
    for name, kw in (("a", {}), ("b", {"train_seed": 0}), ("c", {"train_seed": 7})):
        wf = run_bundle(BUNDLE, ["train"], **_tiny(synthetic_root, tmp_path / name, **kw))
        parts = wf.parser.get_parsed_content("parts")
        runs[name] = (wf.parser.get_parsed_content("training_seed"),
                      {k: sorted(d["patient"] for d in v) for k, v in parts.items()},
                      torch.load(tmp_path / name / "fold1" / "models" / "model_last.pt", weights_only=True))
    assert [runs[n][0] for n in "abc"] == [0, 0, 7]
    assert runs["a"][1] == runs["b"][1] == runs["c"][1]  # the same patients in every part
    same = [torch.equal(runs["a"][2][k], runs["b"][2][k]) for k in runs["a"][2]]
    assert all(same)  # train_seed equal to seed: the run of seed alone, exactly
    assert not all(torch.equal(runs["a"][2][k], runs["c"][2][k]) for k in runs["a"][2])


@pytest.mark.parametrize("value", [-1, 2 ** 32, "x", 1.5, True])
def test_bad_train_seed_is_one_line(value):
    with pytest.raises(HemwslInputError, match="train_seed"):
        check_train_settings(train_seed=value)


def test_train_cv_records_train_seed_and_refuses_a_bad_one(synthetic_root, tmp_path, capsys):
    from hemwsl.cli import main

    out = tmp_path / "cv"
    assert main(["train-cv", "--dataset-dir", str(synthetic_root), "--out", str(out), "--folds", "2",
                 "--set", "train_seed=-3", "epochs=1"]) == 2
    assert "train_seed" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (out / "cv_settings.json").exists() or "train_seed" not in json.loads((out / "cv_settings.json").read_text())
