"""The classifier's input settings as one value (:class:`hemwsl.data.settings.InputSettings`), as ``run_cam`` takes
them."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from hemwsl.data.settings import CLASSIFIER_INPUT_DEFAULTS, INPUT_SETTING_KEYS, InputSettings
from hemwsl.errors import HemwslInputError

TRAIN_YAML = Path(__file__).resolve().parents[1] / "bundles" / "ich_classifier" / "configs" / "train.yaml"


def _bundle_defaults() -> dict:
    config = yaml.safe_load(TRAIN_YAML.read_text(encoding="utf-8"))
    return {key: config[key] for key in INPUT_SETTING_KEYS}


def test_defaults_are_the_classifier_bundles():
    bundle = _bundle_defaults()
    assert {k: list(v) if isinstance(v, tuple) else v for k, v in CLASSIFIER_INPUT_DEFAULTS.items()} == bundle
    inputs = InputSettings.from_settings({})
    assert inputs.as_kwargs() == {"windows": tuple(bundle["windows"]), "num_slices": bundle["num_slices"],
                                  "spatial_size": tuple(bundle["spatial_size"]), "skull_strip": bundle["skull_strip"],
                                  "window_on_device": bundle["window_on_device"]}
    # the class's own defaults are those run_cam had as keyword arguments
    assert InputSettings() == InputSettings(windows=("brain",), num_slices=3, spatial_size=(256, 256),
                                            skull_strip=False, window_on_device=False)


def test_from_settings_fills_missing_keys_and_ignores_others():
    # as a run records them (JSON: lists), with keys that are not input settings
    recorded = {"backbone": "resnet18", "windows": ["brain", [40, 80]], "spatial_size": [128, 128], "seed": 0,
                "num_slices": None}
    inputs = InputSettings.from_settings(recorded)
    assert inputs == InputSettings(windows=("brain", (40, 80)), num_slices=3, spatial_size=(128, 128),
                                   skull_strip=False, window_on_device=False)
    assert InputSettings.from_settings({"spatial_size": None}).spatial_size is None  # None: the native grid
    assert InputSettings.from_settings({"skull_strip": True, "window_on_device": True}).as_kwargs() == {
        **CLASSIFIER_INPUT_DEFAULTS, "skull_strip": True, "window_on_device": True}
    assert hash(inputs) == hash(InputSettings.from_settings(recorded))  # frozen, lists stored as tuples
    with pytest.raises(AttributeError):
        inputs.num_slices = 5  # type: ignore[misc]
    with pytest.raises(HemwslInputError, match="settings must be a mapping"):
        InputSettings.from_settings(["windows"])  # type: ignore[arg-type]


@pytest.mark.parametrize("field,value,message", [
    ("windows", "brain", "windows must be a non-empty sequence"),
    ("windows", [], "windows must be a non-empty sequence"),
    ("windows", ["brian"], r"unknown windows\[0\] 'brian'"),
    ("num_slices", 2, "num_slices must be a positive odd number, got 2"),
    ("num_slices", 0, "num_slices must be a positive odd number"),
    ("num_slices", "3", "num_slices must be a positive odd number, got '3'"),
    ("num_slices", True, "num_slices must be a positive odd number"),
    ("spatial_size", (4, 4), r"spatial_size must be two ints >= 8 or None, got \(4, 4\)"),
    ("spatial_size", [256], "spatial_size must be two ints >= 8 or None"),
    ("spatial_size", 256, "spatial_size must be two ints >= 8 or None"),
    ("spatial_size", (32.5, 32), "spatial_size must be two ints >= 8 or None"),
    ("skull_strip", "maybe", "skull_strip must be true or false, got 'maybe'"),
    ("window_on_device", 1, "window_on_device must be true or false, got 1"),
])
def test_bad_values_are_one_line_naming_the_field(field, value, message):
    for make in (lambda: InputSettings(**{field: value}), lambda: InputSettings.from_settings({field: value})):
        with pytest.raises(HemwslInputError, match=message) as info:
            make()
        assert "\n" not in str(info.value) and field in str(info.value)


def test_run_cam_refuses_other_inputs(synthetic_datalist, tmp_path):
    from hemwsl.engines.cam import run_cam

    with pytest.raises(HemwslInputError, match=r"inputs must be an InputSettings \(hemwsl.data.settings\), got dict"):
        run_cam(torch.nn.Linear(1, 1), synthetic_datalist[:1], tmp_path, ["layercam"], inputs={"num_slices": 3})
    assert not any(tmp_path.iterdir())


def test_run_cam_with_input_settings_writes_the_heatmaps_of_those_inputs(synthetic_datalist, tmp_path):
    """The maps run_cam writes are explain_volume's on the slices SliceDataset cuts with the same settings."""
    from hemwsl.cam import CAMEngine, explain_volume
    from hemwsl.data.dataset import SliceDataset
    from hemwsl.engines.cam import run_cam
    from hemwsl.networks import build_network

    torch.manual_seed(0)
    inputs = InputSettings.from_settings({"num_slices": 1, "spatial_size": [32, 32], "skull_strip": True})
    net = build_network("resnet10", in_channels=len(inputs.windows) * inputs.num_slices).eval()
    entry = synthetic_datalist[0]
    (written,) = run_cam(net, [entry], tmp_path / "cams", ["layercam"], ["layer4"], inputs=inputs, progress=False,
                         batch_size=4)
    assert written.parts[-3:-1] == ("layercam", "layer4")

    ds = SliceDataset([entry], num_slices=1, windows=["brain", "subdural", "blood"], spatial_size=(32, 32),
                      skull_strip=True)
    stack = torch.stack([ds[i]["image"] for i in range(len(ds))])
    assert stack.shape[1] == 3
    header = nib.load(str(entry["image"]))
    want = explain_volume(CAMEngine(net, ["layercam"], layers=["layer4"]), stack, batch_size=4,
                          grid_shape=header.shape[:2])[("layercam", "layer4")]
    got = nib.load(str(written))
    np.testing.assert_allclose(np.asarray(got.dataobj), want, rtol=1e-5, atol=1e-6 * max(1.0, float(want.max())))
    np.testing.assert_allclose(got.affine, header.affine)
    assert np.asarray(got.dataobj).any()
