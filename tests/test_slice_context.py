"""Slice context from a classifier's own predictions (``hemwsl.slice_context``, ``hemwsl slice-context``)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from hemwsl.cli import main
from hemwsl.errors import HemwslInputError
from hemwsl.slice_context import check_sigmas, choose_sigma, smooth_cv_predictions, smooth_slice_probabilities


def _logit(p):
    return np.log(p / (1 - p))


def test_smoothing_by_hand():
    p = np.array([0.1, 0.1, 0.9, 0.1, 0.1])
    np.testing.assert_array_equal(smooth_slice_probabilities(p, 0), p)
    np.testing.assert_allclose(smooth_slice_probabilities(np.full(6, 0.3), 2.0), 0.3)  # a constant scan stays
    from scipy.ndimage import gaussian_filter1d

    want = 1 / (1 + np.exp(-gaussian_filter1d(_logit(p), 1.0, mode="nearest")))
    got = smooth_slice_probabilities(p, 1.0)
    np.testing.assert_allclose(got, want)
    assert got[2] < 0.9 and got[1] > 0.1 and got[0] < got[1]  # the spike spreads to its neighbours
    two = smooth_slice_probabilities(np.stack([p, 1 - p], 1), 1.0)  # each output along z on its own
    np.testing.assert_allclose(two[:, 0], want)
    np.testing.assert_allclose(two[:, 1], 1 - want)
    assert smooth_slice_probabilities([0.0, 1.0], 1.0)[0] > 0  # clipped before the logit, no NaN
    with pytest.raises(HemwslInputError, match=r"in \[0, 1\]"):
        smooth_slice_probabilities([0.2, 1.5], 1.0)
    with pytest.raises(HemwslInputError, match="shape"):
        smooth_slice_probabilities([], 1.0)


@pytest.mark.parametrize("bad", [-1, [], "2", [1.0, float("nan")], [True]])
def test_bad_sigmas(bad):
    with pytest.raises(HemwslInputError, match="sigmas"):
        check_sigmas(bad)


def test_check_sigmas_sorts_and_drops_repeats():
    assert check_sigmas([2, 0, 2.0, 0.5]) == [0.0, 0.5, 2.0] and check_sigmas(1) == [1.0]


def _scans(n=12, seed=0):
    """Scans whose bleeds span 4-6 adjacent slices, with noisy slice probabilities (independent per slice)."""
    rng = np.random.default_rng(seed)
    probs, labels = {}, {}
    for i in range(n):
        z = 20
        lab = np.zeros(z)
        if i % 2 == 0:
            start = rng.integers(3, 12)
            lab[start:start + rng.integers(4, 7)] = 1
        logit = 2.0 * (lab - 0.5) + rng.normal(0, 1.5, z)
        probs[f"p{i:02d}"], labels[f"p{i:02d}"] = 1 / (1 + np.exp(-logit)), lab
    return probs, labels


def test_choose_sigma_finds_the_context():
    probs, labels = _scans()
    best, aucs = choose_sigma(probs, labels, [0, 1, 2])
    assert best > 0 and aucs[best] > aucs[0.0] + 0.02
    flat = {p: np.full(20, 0.5) for p in probs}  # no evidence: every width ties, the smallest wins
    assert choose_sigma(flat, labels, [0, 1, 2])[0] == 0.0
    with pytest.raises(HemwslInputError, match="one label"):
        choose_sigma({"a": np.array([0.2, 0.3])}, {"a": np.array([0, 0])})


def _fake_run(tmp_path, folds=3):
    probs, labels = _scans(12)
    run = tmp_path / "cv"
    patients = sorted(probs)
    for k in range(folds):
        (run / f"fold{k}").mkdir(parents=True)
        with open(run / f"fold{k}" / "predictions_test_last.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["patient", "slice", "label_any", "prob_any"])
            for p in patients[k::folds]:
                for z in range(len(probs[p])):
                    w.writerow([p, z, int(labels[p][z]), f"{probs[p][z]:.6f}"])
    (run / "cv_run.json").write_text(json.dumps({"folds": folds, "settings": {}}))
    return run


def test_out_of_fold_smoothing_and_its_record(tmp_path):
    from hemwsl.engines.runs import read_predictions_csv
    from hemwsl.metrics.classification import compute_auroc

    run = _fake_run(tmp_path)
    rec = smooth_cv_predictions(run, tmp_path / "ctx", sigmas=[0, 1, 2], checkpoint="last")
    assert rec["folds"] == 3 and set(rec["chosen"]) == {"0", "1", "2"}
    assert all(v > 0 for v in rec["chosen"].values())  # each fold's selection patients see the context
    for k in range(3):  # the same rows and labels; the fold's own width applied to its scans
        a = read_predictions_csv(run / f"fold{k}" / "predictions_test_last.csv")
        b = read_predictions_csv(tmp_path / "ctx" / f"fold{k}" / "predictions_test_last.csv")
        assert (a["patient"] == b["patient"]).all() and (a["slice"] == b["slice"]).all()
        assert (a["label"] == b["label"]).all()
        first = a["patient"] == a["patient"][0]
        want = smooth_slice_probabilities(a["prob"][first, 0], rec["chosen"][str(k)])
        np.testing.assert_allclose(b["prob"][first, 0], want, atol=1e-6)
    every = read_predictions_csv(tmp_path / "ctx" / "predictions_test.csv")
    assert len(every["patient"]) == 12 * 20 and len(set(every["patient"])) == 12
    before = compute_auroc(np.concatenate([read_predictions_csv(run / f"fold{k}" / "predictions_test_last.csv")["label"][:, 0]
                                           for k in range(3)]),
                           np.concatenate([read_predictions_csv(run / f"fold{k}" / "predictions_test_last.csv")["prob"][:, 0]
                                           for k in range(3)]))
    assert compute_auroc(every["label"][:, 0], every["prob"][:, 0]) > before
    assert json.loads((tmp_path / "ctx" / "cv_run.json").read_text())["folds"] == 3
    # a rerun with the same inputs is fine; other candidates are refused
    assert smooth_cv_predictions(run, tmp_path / "ctx", sigmas=[2, 1, 0], checkpoint="last")["chosen"] == rec["chosen"]
    with pytest.raises(HemwslInputError, match="sigmas differ"):
        smooth_cv_predictions(run, tmp_path / "ctx", sigmas=[0, 3], checkpoint="last")
    with pytest.raises(HemwslInputError, match="not found"):  # no best-checkpoint predictions in the fake run
        smooth_cv_predictions(run, tmp_path / "ctx2", checkpoint="best")
    with pytest.raises(HemwslInputError, match="inside the train-cv run"):
        smooth_cv_predictions(run, run / "ctx", checkpoint="last")


def test_a_patient_in_two_folds_is_refused(tmp_path):
    run = _fake_run(tmp_path)
    f = run / "fold1" / "predictions_test_last.csv"
    first = (run / "fold0" / "predictions_test_last.csv").read_text().splitlines()[1]
    f.write_text(f.read_text() + first + "\n")
    with pytest.raises(HemwslInputError, match="also a test patient of fold"):
        smooth_cv_predictions(run, tmp_path / "ctx", checkpoint="last")
    assert not (tmp_path / "ctx").exists()


def test_the_command(tmp_path, capsys):
    run = _fake_run(tmp_path)
    assert main(["slice-context", "--cv-dir", str(run), "--out", str(tmp_path / "o"), "--checkpoint", "last",
                 "--sigmas", "0", "1", "2"]) == 0
    out = capsys.readouterr().out
    assert "sigma chosen per fold" in out and "pooled out-of-fold slice AUROC" in out
    assert main(["slice-context", "--cv-dir", str(run), "--out", str(tmp_path / "o2"), "--checkpoint", "last",
                 "--sigmas", "-1"]) == 2
    err = capsys.readouterr().err
    assert "sigmas" in err and len(err.strip().splitlines()) == 1


def test_pseudo_takes_the_context_of_its_own_run(tmp_path):
    """A slice-context folder's fold files are predictions of the run it was made from (pseudo's --predictions-csv
    check accepts them with that run's --cv-dir), not of another run."""
    import shutil

    from hemwsl.engines.runs import check_predictions_of_run

    run = _fake_run(tmp_path)
    smooth_cv_predictions(run, tmp_path / "ctx", sigmas=[0, 1, 2], checkpoint="last")
    smoothed = tmp_path / "ctx" / "fold0" / "predictions_test_last.csv"
    check_predictions_of_run([smoothed, run / "fold0" / "predictions_test_last.csv"], run, "--predictions-csv")
    other = tmp_path / "other"
    shutil.copytree(run, other)
    with pytest.raises(HemwslInputError, match="--predictions-csv .*not of --cv-dir"):
        check_predictions_of_run([smoothed], other, "--predictions-csv")
    check_predictions_of_run([other / "fold1" / "predictions_test_last.csv"], run)  # a copy: the same probabilities
