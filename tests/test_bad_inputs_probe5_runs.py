"""Fifth bad-input probe, run-level cases: trust, predict and seg-cv."""

from __future__ import annotations

import pytest

from tests import test_bad_inputs as shared
from tests import test_bad_inputs_data as runs
from tests.test_bad_inputs import _first
from tests.test_bad_inputs_probe4 import _trust, only_line

data = shared.data
work = runs.work
two_fold_run = runs.two_fold_run


def test_trust_refuses_one_folds_weights_of_the_cv_run(two_fold_run, data, work, capsys):
    """--model without {fold} beside --cv-dir: fold 0's network would explain the patients it trained on (it ran,
    silently); now one line naming --model and the {fold} form."""
    ckpt = two_fold_run / "fold0" / "models" / "model.pt"
    only_line(_trust(data, ckpt, work / "t", "--cv-dir", two_fold_run),
              ["--model", "would explain the patients it trained on", "fold{fold}"], capsys, work / "t")


model = runs.model


def _predict(model, src, out, *extra) -> list:
    return ["predict", "--model", model, "--no-figures", "--input", src, "--out", out, *extra]


def test_predict_names_the_output_folder_not_its_hidden_part(model, data, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    line = only_line(_predict(model, _first(data), afile), [f"{afile}: cannot write the outputs there",
                                                          "a file is where a folder must be"], capsys)
    assert ".partial" not in line


def test_predict_names_symlink_loops_and_a_device_that_does_not_compute(model, data, tmp_path, capsys):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    only_line(_predict(model, loop, tmp_path / "o1"), [f"{loop}: a symlink loop", "--input"], capsys, tmp_path / "o1")
    only_line(_predict(loop, _first(data), tmp_path / "o2"), [f"{loop}: a symlink loop", "--model"], capsys,
              tmp_path / "o2")
    only_line(_predict(model, _first(data), tmp_path / "o3", "--device", "meta"),
              "--device meta: not a device that computes here", capsys, tmp_path / "o3")



@pytest.mark.parametrize("setting, named", [
    ("sw_overlap=1", "sw_overlap must be in [0, 1)"),                       # G09: a traceback after fold 0 trained
    ("sw_batch_size=0", "sw_batch_size must be >= 1"),                      # G20
    ("threshold=1.5", "threshold must be a probability in (0, 1)"),         # G07: trained, then Dice 0
    ("resample=cubic", "resample must be bilinear or nearest"),             # G24: after fold 0 started
])
def test_seg_cv_checks_its_inference_settings_first(setting, named, data, work, capsys):
    only_line(["seg-cv", "--dataset-dir", data, "--out", work / "s", "--folds", "2", "--set", setting,
               "spatial_size=[32,32]", "epochs=1"], named, capsys, work / "s")
