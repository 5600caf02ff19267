"""Seventh bad-input probe: the slice-context API (a list for one width, non-numeric probabilities, labels of other
patients, lengths or values, a list for the mappings), quantify's --rule-keeps-sensitivity with one --min-slices
rule and --min-sensitivity 0, and PseudoLabelSettings fields of the wrong type (context, seed, a string
prob_threshold). Each ends in one line naming the argument: exit status 2 on the command line, a HemwslInputError
in the API, before any output (docs/reliability.md)."""

from __future__ import annotations

import numpy as np
import pytest

from hemwsl.errors import HemwslInputError
from tests.test_bad_inputs_probe4 import only_line


def test_smooth_slice_probabilities_takes_one_width():
    from hemwsl.slice_context import smooth_slice_probabilities

    with pytest.raises(HemwslInputError, match=r"sigma: one width in slices .*\[1, 2\]"):
        smooth_slice_probabilities([0.1, 0.5, 0.9], [1, 2])


def test_smooth_slice_probabilities_of_text():
    from hemwsl.slice_context import smooth_slice_probabilities

    with pytest.raises(HemwslInputError, match="probs: one scan's slice probabilities, numbers in"):
        smooth_slice_probabilities(["a", "b"], 1)


def test_choose_sigma_labels_of_other_patients():
    from hemwsl.slice_context import choose_sigma

    with pytest.raises(HemwslInputError, match="labels: not the patients of probs .patient b"):
        choose_sigma({"a": np.array([0.1, 0.9]), "b": np.array([0.2, 0.3])}, {"a": np.array([0, 1])}, [0, 1])


def test_choose_sigma_labels_of_another_length():
    from hemwsl.slice_context import choose_sigma

    with pytest.raises(HemwslInputError, match="labels: patient a has 2 labels for 3 slices"):
        choose_sigma({"a": np.array([0.1, 0.9, 0.5])}, {"a": np.array([0, 1])}, [0, 1])


def test_choose_sigma_labels_not_binary():
    from hemwsl.slice_context import choose_sigma

    with pytest.raises(HemwslInputError, match="labels: patient a holds values other than 0 and 1"):
        choose_sigma({"a": np.array([0.1, 0.9, 0.5])}, {"a": np.array([0, 2, 0])}, [0, 1])


def test_choose_sigma_lists_not_mappings():
    from hemwsl.slice_context import choose_sigma

    with pytest.raises(HemwslInputError, match="probs and labels: give .patient: slices. mappings, got list"):
        choose_sigma([0.1, 0.9], [0, 1], [0, 1])


def test_rule_keeps_sensitivity_needs_two_rules(tmp_path):
    from hemwsl.quantify import run_quantify

    for one in (2, [1]):
        with pytest.raises(HemwslInputError, match=r"rule_keeps_sensitivity \(--rule-keeps-sensitivity\) chooses "
                                                   r"among several .*got one"):
            run_quantify([], tmp_path / "masks", [], tmp_path / "q", ({}, {}), min_slices=one,
                         rule_keeps_sensitivity=True)
    assert not (tmp_path / "q").exists()


def test_quantify_min_sensitivity_zero_is_refused_by_the_command(tmp_path, capsys):
    line = only_line(["quantify", "--dataset-dir", tmp_path / "data", "--masks", tmp_path / "m", "--cv-dir",
                      tmp_path / "cv", "--out", tmp_path / "q", "--min-sensitivity", "0", "--rule-keeps-sensitivity",
                      "--min-slices", "1", "2"], "--min-sensitivity must be in (0, 1], got 0.0", capsys,
                     absent=tmp_path / "q")
    assert "min_sensitivity must" not in line.replace("--min-sensitivity", "")


@pytest.mark.parametrize("field, value, named", [
    ("context", "no", "context must be True or False, got 'no'"),
    ("seed", "x", "seed must be an int, got 'x'"),
    ("seed", 1.5, "seed must be an int, got 1.5"),
    ("prob_threshold", "0.5", "prob_threshold must be in [0, 1], got '0.5'"),
])
def test_pseudo_label_settings_of_the_wrong_type(field, value, named):
    from hemwsl.pseudo import PseudoLabelSettings

    with pytest.raises(HemwslInputError) as info:
        PseudoLabelSettings(**{field: value})
    assert named in str(info.value) and "\n" not in str(info.value)


def test_check_heatmap_sizes_stems_a_string(tmp_path):
    from hemwsl.cam.volume import check_heatmap_sizes

    with pytest.raises(HemwslInputError, match="stems: give the patient ids as a list, got one string '001'"):
        check_heatmap_sizes(tmp_path, "gradcam", "layer4", "001")
