"""Self-training of the LSE heatmap network on its own validated recipe: targets, loss, batches, command."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from hemwsl.cli import main
from hemwsl.errors import HemwslInputError


def test_target_codes_hand_values():
    from hemwsl.pseudo.selftrain import target_codes

    hu = np.array([[[60, 60], [45, 45]], [[20, 20], [120, 120]]], dtype=np.float32)  # (2, 2, 2): slice 0, slice 1
    chosen = np.zeros(hu.shape, dtype=bool)
    chosen[0, 0, :] = True  # the same pixel chosen on both slices
    brain = np.ones(hu.shape, dtype=bool)
    brain[0, 1, :] = False  # 45 HU outside the brain
    codes = target_codes(hu, chosen, [1, 0], brain)
    # slice 0 (positive): chosen -> 1; 45 HU outside the brain -> 0; 20 and 120 HU -> 0 ... 60 HU in brain? chosen
    np.testing.assert_array_equal(codes[..., 0], [[1, 0], [0, 0]])
    # slice 1 (negative): background everywhere, the chosen pixel too
    np.testing.assert_array_equal(codes[..., 1], [[0, 0], [0, 0]])
    brain[0, 1, :] = True
    codes = target_codes(hu, chosen, [1, 1], brain)
    np.testing.assert_array_equal(codes[..., 0], [[1, 2], [0, 0]])  # 45 HU in the brain: unknown
    np.testing.assert_array_equal(codes[..., 1], [[1, 2], [0, 0]])
    with pytest.raises(HemwslInputError, match="slice labels"):
        target_codes(hu, chosen, [1, 0, 1], brain)


def test_pixel_loss_hand_values():
    from hemwsl.networks.lse import LSEHeatmapLoss, pixel_self_training_loss

    # one 1 x 1 cell over a 2 x 2 input: codes blood, background, unknown, unknown -> target 1/2, weight 1/2
    codes = torch.tensor([[[[1, 0], [2, 2]]]])
    s = torch.tensor([[[[0.3]]]])
    want = float(torch.nn.functional.binary_cross_entropy_with_logits(s, torch.full_like(s, 0.5)))
    assert float(pixel_self_training_loss(s, codes)) == pytest.approx(want, rel=1e-6)
    # all unknown: nothing to learn
    assert float(pixel_self_training_loss(s, torch.full((1, 1, 2, 2), 2))) == 0.0
    # 2 x 2 map over a 2 x 2 input: per-pixel BCE averaged over the known pixels
    s2 = torch.tensor([[[[2.0, -1.0], [0.5, 0.0]]]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(s2, torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]]),
                                                              reduction="none")
    assert float(pixel_self_training_loss(s2, codes)) == pytest.approx(float(bce[0, 0, 0].sum()) / 2, rel=1e-6)
    # in the loss: the mean over the four levels' "any" maps, added with its weight; y alone is refused
    maps = [torch.zeros(1, 1, 4 // 2 ** i or 1, 4 // 2 ** i or 1) for i in range(4)]
    logits = [torch.zeros(1, 1) for _ in range(4)]
    y = torch.ones(1, 1)
    codes4 = torch.ones(1, 1, 4, 4, dtype=torch.long)
    base = LSEHeatmapLoss()((maps, logits), y)
    loss = LSEHeatmapLoss(pixel_weight=2.0)
    total = loss((maps, logits), (y, codes4))
    assert loss.last_terms["pixel"] == pytest.approx(float(np.log(2.0)), rel=1e-5)
    assert float(total) == pytest.approx(float(base) + 2.0 * np.log(2.0), rel=1e-5)
    with pytest.raises(HemwslInputError, match="self-training targets"):
        loss((maps, logits), y)
    with pytest.raises(HemwslInputError, match="lse_pixel must be >= 0"):
        LSEHeatmapLoss(pixel_weight=-1)


def test_prepare_batch_moves_the_target_with_the_image():
    from hemwsl.engines.classifier import PrepareBatch
    from hemwsl.transforms.batch import BatchRandAffine

    g = torch.Generator().manual_seed(0)
    codes = (torch.rand(4, 32, 32, generator=g) > 0.7).long() + (torch.rand(4, 32, 32, generator=g) > 0.9).long()
    batch = {"image": codes[:, None].float().repeat(1, 3, 1, 1), "label": torch.ones(4, 1), "mask": codes.float()}
    prep = PrepareBatch(augment=BatchRandAffine(prob=1.0, rotate_range_deg=30, seed=1), mask_key="mask")
    x, (y, m) = prep(batch)
    assert m.shape == (4, 1, 32, 32) and y.shape == (4, 1)
    assert set(torch.unique(m).tolist()) <= {0.0, 1.0, 2.0}  # nearest: codes stay codes
    agree = (x[:, :1].round() == m).float().mean()  # the same draw moved both
    assert agree > 0.9
    x2, y2 = PrepareBatch()(batch)  # without mask_key: as before
    assert torch.equal(y2, batch["label"])


def test_with_pseudo_masks(tmp_path):
    from hemwsl.engines.classifier import with_pseudo_masks

    entries = [{"image": "a.nii.gz", "label": "m.nii.gz", "patient": "049", "slice_labels": [0, 1]}]
    assert with_pseudo_masks(entries, None) == entries
    (tmp_path / "fold3").mkdir()
    (tmp_path / "fold3" / "049.nii.gz").write_bytes(b"")
    out = with_pseudo_masks(entries, str(tmp_path / "fold{fold}"), 3)
    assert out[0]["label"] == str(tmp_path / "fold3" / "049.nii.gz") and out[0]["slice_labels"] == [0, 1]
    with pytest.raises(HemwslInputError, match="self-training target not found"):
        with_pseudo_masks(entries, str(tmp_path / "fold{fold}"), 2)
    with pytest.raises(HemwslInputError, match="slice labels"):
        with_pseudo_masks([{**entries[0], "slice_labels": None}], str(tmp_path / "fold{fold}"), 3)


def test_self_train_command(synthetic_root, tmp_path, capsys):
    """train-cv (LSE network) -> cam-cv -> benchmark -> self-train: targets of each fold's training patients only,
    from the fold's own network and validated recipe, then a fine-tuning run on the same folds."""
    from hemwsl.commands.pipeline import heatmap_choices
    from hemwsl.data.datalist import build_datalist
    from hemwsl.engines.classifier import fold_datalists

    cv, cam, bench, st = tmp_path / "cv", tmp_path / "cam", tmp_path / "bench", tmp_path / "st"
    tiny = ["backbone=lse_resnet10", "spatial_size=[32,32]", "epochs=1", "samples_per_epoch=16", "batch_size=8",
            "cache_workers=0", 'network_options={"decoder_channels": [8, 16, 32, 32]}', "skull_strip=true"]
    assert main(["train-cv", "--dataset-dir", str(synthetic_root), "--out", str(cv), "--folds", "2", "--set", *tiny]) == 0
    assert main(["cam-cv", "--dataset-dir", str(synthetic_root), "--cv-dir", str(cv), "--out", str(cam),
                 "--methods", "lse_heatmap", "--layers", "levels.1.conv", "levels.2.conv"]) == 0
    assert main(["benchmark", "--dataset-dir", str(synthetic_root), "--cam-dir", str(cam), "--out", str(bench),
                 "--cv-dir", str(cv), "--thresholds", "priorcomp+search", "--brain-erosion", "1", "--n-boot", "10",
                 "--no-figures", "--hu-range", "40", "100"]) == 0
    capsys.readouterr()
    # bad input first: one line each, nothing trained
    assert main(["self-train", "--dataset-dir", str(synthetic_root), "--cv-dir", str(cv), "--benchmark-dir",
                 str(bench), "--out", str(st), "--pixel-weight", "0"]) == 2
    assert "--pixel-weight must be > 0" in capsys.readouterr().err
    assert main(["self-train", "--dataset-dir", str(synthetic_root), "--cv-dir", str(cv), "--benchmark-dir",
                 str(bench), "--out", str(st), "--method", "gradcam"]) == 2
    assert "no row of 'gradcam'" in capsys.readouterr().err
    assert not st.exists()

    assert main(["self-train", "--dataset-dir", str(synthetic_root), "--cv-dir", str(cv), "--benchmark-dir",
                 str(bench), "--out", str(st), "--set", "epochs=1"]) == 0
    chosen = heatmap_choices(bench, 2, "lse_heatmap")
    datalist = build_datalist("ct-ich", str(synthetic_root))
    saw_blood = False
    for k in range(2):
        parts = fold_datalists(datalist, n_folds=2, fold=k, seed=0, val_fraction=0.15)
        made = sorted(p.name.split(".")[0] for p in (st / "targets" / f"fold{k}").glob("*.nii.gz"))
        assert made == sorted(e["patient"] for e in parts["train"])  # the training patients, never the test ones
        heat = sorted((st / "targets" / "cam" / f"fold{k}" / "lse_heatmap").iterdir())
        assert [p.name for p in heat] == [chosen[k]["layer"]]
        for e in parts["train"]:
            codes = np.asarray(nib.load(str(st / "targets" / f"fold{k}" / f"{e['patient']}.nii.gz")).dataobj)
            assert set(np.unique(codes).tolist()) <= {0, 1, 2}
            negative = np.asarray(e["slice_labels"]) == 0
            assert (codes[..., negative] == 0).all()  # slices labelled negative: background only
            saw_blood |= bool((codes == 1).any())
        assert (st / f"fold{k}" / "models" / "model.pt").is_file()
    assert saw_blood
    settings = json.loads((st / "cv_settings.json").read_text())
    assert settings["lse_pixel"] == 1.0 and settings["pseudo_masks"].endswith("fold{fold}")
    assert settings["pretrained_path"].endswith("fold{fold}/models/model.pt")
    assert settings["backbone"] == "lse_resnet10" and settings["epochs"] == 1
    # the targets folder refuses another recipe
    from hemwsl.pseudo.selftrain import self_training_targets

    parts = fold_datalists(datalist, n_folds=2, fold=0, seed=0, val_fraction=0.15)
    with pytest.raises(HemwslInputError, match="other settings"):
        self_training_targets(parts["train"], st / "targets" / "cam" / "fold0", "lse_heatmap", chosen[0]["layer"],
                              chosen[0]["spec"].strategy(0.99, per_sample=False), st / "targets" / "fold0",
                              brain_erosion=chosen[0]["spec"].erosion)
    # a classifier run cannot self-train
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "cv_settings.json").write_text(json.dumps({"backbone": "resnet10"}))
    assert main(["self-train", "--dataset-dir", str(synthetic_root), "--cv-dir", str(plain), "--benchmark-dir",
                 str(bench), "--out", str(tmp_path / "st2")]) == 2
    assert "needs an lse_* heatmap network" in capsys.readouterr().err
