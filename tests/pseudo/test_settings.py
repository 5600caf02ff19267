"""The settings objects of the pseudo-label functions (:class:`hemwsl.pseudo.PseudoLabelSettings`,
:class:`hemwsl.data.settings.InputSettings`): the old defaults, the old one-line errors, the old
``pseudo_params.json`` record."""

from __future__ import annotations

import dataclasses
import inspect
import json

import numpy as np
import pytest

from hemwsl.data.settings import InputSettings
from hemwsl.errors import HemwslInputError
from hemwsl.pseudo import PseudoLabelSettings, check_pseudo_params, make_pseudo_labels, pseudo_label_volume

#: The keyword defaults ``make_pseudo_labels`` and ``pseudo_label_volume`` had before the settings objects.
OLD_DEFAULTS = {"mode": "cam_kmeans", "threshold": 0.7, "context": False, "context_slices": 3, "select": "differential",
                "k": 4, "enhance": "global", "enhance_window": "brain", "prob_threshold": 0.5, "brain_erosion": 0,
                "seed": 0, "hu_reference": None}
OLD_INPUT_DEFAULTS = {"windows": ("brain",), "num_slices": 3, "spatial_size": (256, 256), "skull_strip": False}
PROBS = [0.9, 0.2, 0.6, 0.5]


def test_defaults_are_the_old_defaults():
    assert dataclasses.asdict(PseudoLabelSettings()) == OLD_DEFAULTS
    inputs = InputSettings()
    assert {k: getattr(inputs, k) for k in OLD_INPUT_DEFAULTS} == OLD_INPUT_DEFAULTS
    # check_pseudo_params keeps its keyword defaults, the same as the settings'
    params = inspect.signature(check_pseudo_params).parameters
    assert {k: params[k].default for k in params if k in OLD_DEFAULTS} == \
        {k: v for k, v in OLD_DEFAULTS.items() if k in params}
    for fn in (make_pseudo_labels, pseudo_label_volume):
        params = inspect.signature(fn).parameters
        assert params["settings"].default is None and params["inputs"].default is None
        assert params["inputs"].kind is inspect.Parameter.KEYWORD_ONLY


def test_frozen_normalised_and_hashable():
    s = PseudoLabelSettings(mode="cam", enhance_window=[40, 80], hu_reference=[-100, 37])
    assert s.enhance_window == (40, 80) and s.hu_reference == (-100.0, 37.0)
    assert PseudoLabelSettings(hu_reference=[37]).hu_reference == 37.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.mode = "cam_kmeans"
    assert hash(s) == hash(PseudoLabelSettings(mode="cam", enhance_window=(40, 80), hu_reference=(-100.0, 37.0)))
    assert PseudoLabelSettings(mode="cam", k=0).k == 0  # k (like enhance) is checked for cam_kmeans only, as before


@pytest.mark.parametrize("bad, message", [
    ({"mode": "kmeans"}, "unknown mode 'kmeans'; accepted values: cam, cam_kmeans"),
    ({"select": "darkest"}, "unknown select 'darkest'; accepted values: differential, brightest"),
    ({"k": 0}, "k must be a positive int, got 0"),
    ({"k": True}, "k must be a positive int, got True"),
    ({"enhance": "sharpen"}, "unknown enhancement 'sharpen'"),
    ({"context": True, "context_slices": 4}, "context_slices must be an odd number >= 3, got 4"),
    ({"prob_threshold": 1.5}, r"prob_threshold must be in \[0, 1\], got 1.5"),
    ({"prob_threshold": True}, r"prob_threshold must be in \[0, 1\], got True"),
    ({"brain_erosion": -1}, "brain_erosion must be >= 0 and needs skull_strip=True, got -1"),
])
def test_bad_settings_are_the_old_one_line_errors(bad, message):
    with pytest.raises(HemwslInputError, match=message) as got:
        PseudoLabelSettings(**bad)
    with pytest.raises(HemwslInputError) as old:
        check_pseudo_params(skull_strip=True, **bad)
    assert str(got.value) == str(old.value) and "\n" not in str(got.value)


@pytest.mark.parametrize("ref, message", [
    (True, "hu_reference must be a number of HU"),
    (500, "hu_reference must be a brain HU between -100 and 200"),
    ([1, 2, 3], "hu_reference must be one brain HU or a band of two"),
    ([40, 30], "hu_reference band must be low <= high"),
])
def test_bad_hu_reference_is_one_line(ref, message):
    with pytest.raises(HemwslInputError, match=message) as got:
        PseudoLabelSettings(hu_reference=ref)
    assert "\n" not in str(got.value)


def _datalist(box_files):
    return [{"image": str(box_files["ct"]), "label": None, "patient": "p1", "slice_labels": [0, 1, 1, 0]}]


def _csv(tmp_path):
    path = tmp_path / "pred.csv"
    path.write_text("patient,slice,label_any,prob_any\n" + "".join(f"p1,{z},0,{v}\n" for z, v in enumerate(PROBS)))
    return path


def test_checks_that_need_the_inputs_stay_in_the_functions(box_files, tmp_path):
    from hemwsl.pseudo.components import ComponentFilter

    plain = InputSettings(windows=("brain",), num_slices=1, spatial_size=None)
    with pytest.raises(HemwslInputError, match="^brain_erosion must be >= 0 and needs skull_strip=True, got 2$"):
        pseudo_label_volume(box_files["ct"], box_files["cam"], None, PseudoLabelSettings(mode="cam", brain_erosion=2),
                            inputs=plain, probabilities=np.array(PROBS))
    with pytest.raises(HemwslInputError, match="^hu_reference needs skull_strip"):
        make_pseudo_labels(None, _datalist(box_files), box_files["cam_dir"], tmp_path / "a", "gradcam", "features",
                           PseudoLabelSettings(mode="cam", hu_reference=37), inputs=plain,
                           predictions_csv=_csv(tmp_path), progress=False)
    with pytest.raises(HemwslInputError, match="^component_filter scores the components of single slices"):
        pseudo_label_volume(box_files["ct"], box_files["cam"], None, PseudoLabelSettings(mode="cam", context=True),
                            inputs=plain, probabilities=np.array(PROBS), component_filter=ComponentFilter())
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("arg, value, message", [
    ("settings", {"mode": "cam"}, "settings must be a PseudoLabelSettings (hemwsl.pseudo), got dict"),
    ("settings", "cam", "settings must be a PseudoLabelSettings (hemwsl.pseudo), got str"),
    ("settings", InputSettings(), "settings must be a PseudoLabelSettings (hemwsl.pseudo), got InputSettings"),
    ("inputs", {"windows": ["brain"]}, "inputs must be an InputSettings (hemwsl.data.settings), got dict"),
    ("inputs", PseudoLabelSettings(), "inputs must be an InputSettings (hemwsl.data.settings), got PseudoLabelSettings"),
])
def test_a_dict_or_another_type_is_one_line(box_files, tmp_path, arg, value, message):
    for call in (lambda: pseudo_label_volume(box_files["ct"], box_files["cam"], None, probabilities=np.array(PROBS),
                                             **{arg: value}),
                 lambda: make_pseudo_labels(None, _datalist(box_files), box_files["cam_dir"], tmp_path / "out",
                                            "gradcam", "features", predictions_csv=_csv(tmp_path), progress=False,
                                            **{arg: value})):
        with pytest.raises(HemwslInputError) as got:
            call()
        assert str(got.value) == message
    assert not (tmp_path / "out").exists()  # refused before any file


def test_pseudo_params_record_is_unchanged(box_files, tmp_path):
    """The record a folder keeps (``pseudo_params.json``) is the one the keyword arguments wrote, byte for byte, so
    that folders made before the settings objects resume."""
    from hemwsl.pseudo import build_threshold

    csv = _csv(tmp_path)
    cam_dir = str(box_files["cam_dir"])
    # the defaults (mode cam): no brain_erosion, no hu_reference, the K-means keys None
    out = tmp_path / "plain"
    make_pseudo_labels(None, _datalist(box_files), box_files["cam_dir"], out, "gradcam", "features",
                       PseudoLabelSettings(mode="cam"), predictions_csv=csv, progress=False)
    expected = {"cam_dir": cam_dir, "method": "gradcam", "layer": "features", "mode": "cam",
                "threshold": "FixedThreshold(value=0.7, normalisation='minmax', min_size=0, restrict_to_brain=True, "
                             "per_sample=False)",
                "context": False, "context_slices": None, "select": None, "k": None, "enhance": None,
                "enhance_window": None, "prob_threshold": 0.5, "windows": ["brain"], "num_slices": 3,
                "spatial_size": [256, 256], "skull_strip": False, "seed": 0, "predictions": ["pred.csv"]}
    assert (out / "pseudo_params.json").read_text() == json.dumps(expected, indent=1) + "\n"
    # every option: the K-means keys, context, a rule for prob_threshold, and the keys recorded only when used
    settings = PseudoLabelSettings(mode="cam_kmeans", select="brightest", k=3, enhance_window=(40, 80), context=True,
                                   context_slices=5, prob_threshold=0.3, seed=3, brain_erosion=2,
                                   hu_reference=[-100, 37], threshold=build_threshold("percentile", 85))
    inputs = InputSettings(windows=("brain", "subdural"), num_slices=1, spatial_size=(32, 32), skull_strip=True)
    out = tmp_path / "full"
    make_pseudo_labels(None, _datalist(box_files), box_files["cam_dir"], out, "gradcam", "features", settings,
                       inputs=inputs, predictions_csv=[csv], prob_threshold_rule="f1_max", progress=False)
    expected = {"cam_dir": cam_dir, "method": "gradcam", "layer": "features", "mode": "cam_kmeans",
                "threshold": "PercentileThreshold(q=85.0, region='map', min_size=0, restrict_to_brain=True, "
                             "per_sample=False)",
                "context": True, "context_slices": 5, "select": "brightest", "k": 3, "enhance": "global",
                "enhance_window": [40, 80], "prob_threshold": "f1_max", "windows": ["brain", "subdural"],
                "num_slices": 1, "spatial_size": [32, 32], "skull_strip": True, "seed": 3, "brain_erosion": 2,
                "hu_reference": [-100.0, 37.0], "predictions": ["pred.csv"]}
    assert (out / "pseudo_params.json").read_text() == json.dumps(expected, indent=1) + "\n"
    assert json.loads((out / ".done" / "p1.json").read_text())["prob_threshold"] == 0.3
    # a folder whose record was written before (here: by hand) resumes with the same settings, refuses others
    old = tmp_path / "old"
    old.mkdir()
    (old / "pseudo_params.json").write_text(json.dumps(expected, indent=1) + "\n")
    make_pseudo_labels(None, _datalist(box_files), box_files["cam_dir"], old, "gradcam", "features", settings,
                       inputs=inputs, predictions_csv=[csv], prob_threshold_rule="f1_max", progress=False)
    with pytest.raises(HemwslInputError, match="other settings \\(seed\\)"):
        make_pseudo_labels(None, _datalist(box_files), box_files["cam_dir"], old, "gradcam", "features",
                           dataclasses.replace(settings, seed=4), inputs=inputs, predictions_csv=[csv],
                           prob_threshold_rule="f1_max", progress=False)
