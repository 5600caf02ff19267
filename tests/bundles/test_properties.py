"""The training configs of the bundles pass MONAI's own check of a bundle's required and optional properties
(``ConfigWorkflow.check_properties``): every property MONAI's tools look for is there and refers where it should."""

from __future__ import annotations

import pytest
from monai.bundle import ConfigWorkflow

from hemwsl.engines.bundle import config_files
from hemwsl.engines.handlers import EMAHandler


@pytest.mark.parametrize("bundle, extra", [
    ("ich_classifier", {"backbone": "resnet10", "spatial_size": [32, 32], "ema_decay": 0.9}),
    ("ich_unet3d", {"spatial_size": [32, 32], "features": [8, 16, 32], "patch_size": [32, 32, 8]}),
])
def test_train_config_passes_monai_check_properties(bundle, extra, synthetic_root, tmp_path):
    wf = ConfigWorkflow(config_file=config_files(bundle, ["train"]), workflow_type="train",
                        meta_file=config_files(bundle, ["metadata"])[0],
                        dataset_dir=str(synthetic_root), output_dir=str(tmp_path), n_folds=4, fold=1, epochs=1,
                        cache_workers=0, **extra)
    wf.initialize()
    assert wf.check_properties() == []
    handlers = wf.parser.get_parsed_content("train#handlers")
    if bundle == "ich_classifier":  # the EMA handler is attached once, the object eval_network reads
        ema = [h for h in handlers if isinstance(h, EMAHandler)]
        assert len(ema) == 1 and ema[0] is wf.parser.get_parsed_content("ema")
    else:
        assert any(h is wf.parser.get_parsed_content("train#history") for h in handlers)


@pytest.mark.parametrize("bundle, extra", [
    ("ich_classifier", {"backbone": "resnet10", "spatial_size": [32, 32]}),
    ("ich_unet3d", {"spatial_size": [32, 32], "features": [8, 16, 32], "patch_size": [32, 32, 8]}),
])
def test_inference_config_passes_monai_check_properties(bundle, extra, synthetic_root, tmp_path):
    import torch
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(config_files(bundle, ["train"]))
    parser.update(extra)
    ckpt = tmp_path / "model.pt"
    torch.save(parser.get_parsed_content("network_def").state_dict(), ckpt)  # weights of the right shapes
    wf = ConfigWorkflow(config_file=config_files(bundle, ["train", "inference"]), workflow_type="infer",
                        meta_file=config_files(bundle, ["metadata"])[0], dataset_dir=str(synthetic_root),
                        output_dir=str(tmp_path), n_folds=4, fold=1, cache_workers=0,
                        images=[str(p) for p in sorted((synthetic_root / "ct_scans").iterdir())[:2]],
                        checkpoint=str(ckpt), **extra)
    wf.initialize()
    assert wf.check_properties() == []
    assert len(wf.parser.get_parsed_content("dataset")) == 2
    assert wf.parser.get_parsed_content("evaluator").inferer is wf.parser.get_parsed_content("inferer")
