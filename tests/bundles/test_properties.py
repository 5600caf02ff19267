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
