"""One process per fold folder: a second one fails at once; stale locks are taken over."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from hemwsl.engines.bundle import fold_lock, train_evaluate_fold
from hemwsl.errors import HemwslInputError


def test_lock_is_held_and_released(tmp_path):
    with fold_lock(tmp_path / "fold0") as lock:
        assert lock.read_text().split() == [str(os.getpid()), socket.gethostname()]
    assert not lock.exists()


def test_second_process_is_refused_naming_the_holder(tmp_path):
    d = tmp_path / "fold0"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        d.mkdir()
        (d / ".lock").write_text(f"{holder.pid} {socket.gethostname()}\n")
        with pytest.raises(HemwslInputError, match=rf"being run by process {holder.pid}.*\.lock"):
            with fold_lock(d):
                pass
        # train_evaluate_fold refuses before running anything
        with pytest.raises(HemwslInputError, match="being run by process"):
            train_evaluate_fold("ich_classifier", d, 0, "report_test.json")
        assert (d / ".lock").exists()  # the holder's lock is left alone
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_of_a_finished_process_is_taken_over(tmp_path):
    d = tmp_path / "fold0"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    d.mkdir()
    (d / ".lock").write_text(f"{gone.pid} {socket.gethostname()}\n")
    with fold_lock(d) as lock:
        assert lock.read_text().split()[0] == str(os.getpid())
    assert not (d / ".lock").exists()


def test_lock_of_another_host_is_not_taken(tmp_path):
    d = tmp_path / "fold0"
    d.mkdir()
    (d / ".lock").write_text("12345 some-other-host\n")
    with pytest.raises(HemwslInputError, match="some-other-host"):
        with fold_lock(d):
            pass


def test_finished_fold_is_skipped_without_a_lock(tmp_path):
    d = tmp_path / "fold0"
    d.mkdir()
    (d / "report_test.json").write_text("{}")
    (d / ".lock").write_text(f"{os.getpid()} {socket.gethostname()}\n")  # even while another process runs it
    assert train_evaluate_fold("ich_classifier", d, 0, "report_test.json") is False


def _busy_fold(d, holder_pid):
    d.mkdir(parents=True)
    (d / ".lock").write_text(f"{holder_pid} {socket.gethostname()}\n")


def test_cv_commands_skip_busy_folds_so_processes_share_the_folds(tmp_path, synthetic_root, capsys):
    from hemwsl.cli import main

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        cv = tmp_path / "cv"
        _busy_fold(cv / "fold0", holder.pid)  # another process trains fold 0
        (cv / "fold1").mkdir()
        (cv / "fold1" / "report_test.json").write_text("{}")  # fold 1 is finished
        assert main(["train-cv", "--dataset-dir", str(synthetic_root), "--out", str(cv), "--folds", "2"]) == 0
        out = capsys.readouterr().out
        assert f"fold 0: skipped, {cv / 'fold0'}: this fold is being run by process {holder.pid}" in out
        assert "fold 1: done, skipped" in out
        assert not (cv / "cv_summary.md").exists()  # written by whichever process finishes the last fold

        seg = tmp_path / "seg"
        _busy_fold(seg / "fold0", holder.pid)
        assert main(["seg-cv", "--dataset-dir", str(synthetic_root), "--out", str(seg), "--folds", "2", "--only", "0"]) == 0
        assert f"fold 0: skipped, {seg / 'fold0'}: this fold is being run by process {holder.pid}" in capsys.readouterr().out
    finally:
        holder.kill()
        holder.wait()
