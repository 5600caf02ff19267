"""Fifth bad-input probe, run-level cases: trust with one fold's weights of a --cv-dir run."""

from __future__ import annotations

from tests import test_bad_inputs as shared
from tests import test_bad_inputs_data as runs
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
