"""The scripts' text reports: printed and kept, and one line with status 2 for a bad input."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

from hemwsl.errors import HemwslInputError
from hemwsl.reports.text import emit, run_script

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def test_emit_prints_and_writes(tmp_path, capsys):
    emit("| a |\n", tmp_path / "new" / "table.md")
    assert capsys.readouterr().out == "| a |\n\n"
    assert (tmp_path / "new" / "table.md").read_text() == "| a |\n"
    emit("x\n")  # no copy asked for
    assert not list(tmp_path.glob("*.tmp*"))


def test_run_script_statuses(capsys):
    assert run_script(lambda: 0, "s") == 0 and run_script(lambda: None, "s") == 0

    def bad():
        raise HemwslInputError("report/choices.csv: not found")

    assert run_script(bad, "compare") == 2
    assert capsys.readouterr().err == "compare: error: report/choices.csv: not found\n"
    with pytest.raises(ZeroDivisionError):  # a bug is not a bad input: its traceback stays
        run_script(lambda: 1 / 0, "s")


@pytest.mark.parametrize("script, args", [
    ("compare_benchmarks.py", ["--reports", "{t}/a", "{t}/b"]),
    ("compare_benchmarks.py", ["--reports", "{t}/a"]),
    ("compare_classifiers.py", ["--runs", "{t}/nothing"]),
])
def test_scripts_bad_folders_are_one_line(script, args, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [script] + [a.format(t=tmp_path) for a in args])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(str(SCRIPTS / script), run_name="__main__")
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{script}: error: ")
