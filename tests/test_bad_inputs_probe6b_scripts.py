"""Sixth bad-input probe (6b), scripts/: predict_check.py, bench_cam_cv.py and fold_compare.py check their
arguments before any work and end a bad one in one line ``<script>: error: ...`` with status 2, no traceback."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from hemwsl.reports.text import run_script
from tests import test_bad_inputs as shared
from tests import test_bad_inputs_data as runs

data = shared.data  # 4 phantoms (48 x 48 x 6) in the CT-ICH layout
two_fold_run = runs.two_fold_run  # a fake 2-fold train-cv run of resnet10 at 32 x 32 on `data`

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _script_line(name: str, argv: list, monkeypatch, capsys) -> str:
    """Run ``scripts/<name>.py argv`` in this process; it exits 2 with exactly one stderr line, returned."""
    spec = importlib.util.spec_from_file_location(f"_probe6b_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [f"{name}.py", *map(str, argv)])
    code = run_script(module.main)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2, err[-3:]
    assert len(err) == 1, err[-5:]
    assert err[0].startswith(f"{name}.py: error: "), err[0]
    return err[0]


def test_predict_check_limit_and_dataset(two_fold_run, data, tmp_path, monkeypatch, capsys):
    """SC04: --limit 0; SC03: a --dataset-dir without the package's test patients (a traceback from nibabel)."""
    from hemwsl.predict import pack_model

    line = _script_line("predict_check", ["--model", tmp_path / "none", "--dataset-dir", data, "--out", tmp_path / "o",
                                          "--limit", "0"], monkeypatch, capsys)
    assert "--limit must be at least 1" in line
    model = pack_model(two_fold_run, tmp_path / "model", dataset_dir=data, scan_call="none")
    line = _script_line("predict_check", ["--model", model, "--dataset-dir", tmp_path / "nope", "--out", tmp_path / "o"],
                        monkeypatch, capsys)
    assert "--dataset-dir" in line and "no ct_scans/" in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("extra, named", [
    (["--fold", "7"], "--fold 7: the train-cv run"),                       # SC10
    (["--methods", "nosuch"], "--methods: unknown method(s) nosuch"),      # SC11
    (["--checkpoint", "last"], "last checkpoint of fold 0 not found"),     # SC09 (a run without those weights)
], ids=["SC10", "SC11", "SC09"])
def test_bench_cam_cv_arguments(two_fold_run, data, tmp_path, monkeypatch, capsys, extra, named):
    line = _script_line("bench_cam_cv", ["--dataset-dir", data, "--cv-dir", two_fold_run, "--cache-dir",
                                         tmp_path / "cache", *extra], monkeypatch, capsys)
    assert named in line


def test_fold_compare_folds_of_the_runs(two_fold_run, data, tmp_path, monkeypatch, capsys):
    """SC15: --folds 3 against a 2-fold run (its fold model would explain patients it trained on)."""
    line = _script_line("fold_compare", ["--dataset-dir", data, "--runs", two_fold_run, "--out", tmp_path / "o",
                                         "--folds", "3"], monkeypatch, capsys)
    assert "--folds 3: the train-cv run" in line and "has 2 folds" in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("extra, named", [
    (["--runs", "RUN", "--checkpoint", "middle"], "--checkpoint 'middle': one of best, last"),      # SC14
    (["--runs", "NOPE"], "checkpoint of fold 0 not found"),                                         # SC12
    (["--runs", "RUN", "--fold", "5"], "--fold 5: the folds of --folds 2 are 0 to 1"),             # SC13
], ids=["SC14", "SC12", "SC13"])
def test_fold_compare_checks_before_writing(two_fold_run, data, tmp_path, monkeypatch, capsys, extra, named):
    """A bad --checkpoint, a run without the fold's weights, a fold outside --folds: one line, and no split.json
    left in --out (it was written first)."""
    extra = [str(two_fold_run) if a == "RUN" else str(tmp_path / "nope") if a == "NOPE" else a for a in extra]
    line = _script_line("fold_compare", ["--dataset-dir", data, "--out", tmp_path / "o", "--folds", "2", *extra],
                        monkeypatch, capsys)
    assert named in line
    assert not (tmp_path / "o").exists()
