"""Bad inputs of the fifth robustness probe: every option of every subcommand given twice (argparse would keep the
last value silently), integer settings beyond 64 bits, and ``predict --members`` with no fold number. Each ends in
one line naming the option and the problem, exit status 2, no traceback.

The repeated options are checked at the parser level (fast: nothing runs); the others run ``hemwsl.cli.main``
in-process, on the small phantoms of :mod:`tests.test_bad_inputs` where data must exist.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from hemwsl.cli import COMMANDS, build_parser, main
from hemwsl.errors import HemwslInputError
from tests import test_bad_inputs as shared
from tests import test_bad_inputs_data as runs
from tests.test_bad_inputs import _first

data = shared.data  # 4 phantoms (48 x 48 x 6) in the CT-ICH layout
work = runs.work  # an empty folder that must stay empty
two_fold_run = runs.two_fold_run  # a fake 2-fold train-cv run (real state dicts, nothing trained)
model = runs.model  # a model package of that run

_PARSER = build_parser()
_SUBPARSERS = next(a for a in _PARSER._actions if isinstance(a, argparse._SubParsersAction)).choices
_REPEATABLE = (argparse._AppendAction, argparse._AppendConstAction, argparse._ExtendAction, argparse._CountAction,
               argparse._HelpAction, argparse._VersionAction)


def _values(action: argparse.Action, second: bool = False) -> list[str]:
    """Tokens that ``action`` accepts (``second``: other ones where the type allows, to show last-wins)."""
    if action.nargs == 0:
        return []
    if action.choices:
        choices = list(action.choices)
        one = str(choices[1 if second and len(choices) > 1 else 0])
    elif action.type is int:
        one = "2" if second else "1"
    elif action.type is float or getattr(action.type, "__name__", "") == "_number_or_none":
        one = "0.25" if second else "0.5"
    else:
        one = "b" if second else "a"
    n = action.nargs if isinstance(action.nargs, int) else 1
    return [one] * n


def _cases() -> list:
    cases = []
    for name in COMMANDS:
        for action in _SUBPARSERS[name]._actions:
            if not action.option_strings or isinstance(action, _REPEATABLE):
                continue
            cases.append(pytest.param(name, action.option_strings[-1], id=f"{name}{action.option_strings[-1]}"))
    return cases


@pytest.mark.parametrize("command, option", _cases())
def test_every_option_refuses_a_repeat(command, option, capsys):
    sub = _SUBPARSERS[command]
    action = sub._option_string_actions[option]
    argv = [command, option, *_values(action), option, *_values(action, second=True)]
    for other in sub._actions:  # the required options, once
        if other.required and other.option_strings and other is not action:
            argv += [other.option_strings[-1], *_values(other)]
    with pytest.raises(SystemExit) as err:
        build_parser().parse_args(argv)
    assert err.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"hemwsl {command}: error: argument ")
    names = "/".join(action.option_strings)
    assert f"argument {names}: given more than once (" in lines[0], lines[0]
    assert lines[0].endswith("; give it once"), lines[0]


def test_repeats_allowed_where_meant(capsys):
    """``-v -v`` counts; benchmark's --hu-range appends; one parse does not leak into the next."""
    args = build_parser().parse_args(["-v", "-v", "split", "--datalist", "d", "--out", "o", "--folds", "2"])
    assert args.verbose == 2 and args.folds == 2
    hu = next(a for a in _SUBPARSERS["benchmark"]._actions if "--hu-range" in a.option_strings)
    assert isinstance(hu, argparse._AppendAction)
    parser = build_parser()
    for folds in ("3", "4"):  # the same parser twice: each parse starts afresh
        assert parser.parse_args(["split", "--datalist", "d", "--out", "o", "--folds", folds]).folds == int(folds)
    assert parser.parse_args(["predict", "--model", "m", "--input", "x", "--overwrite"]).overwrite


def test_set_twice_on_the_command_line(capsys):
    with pytest.raises(SystemExit) as err:
        main(["train-cv", "--dataset-dir", "d", "--out", "o", "--set", "epochs=1", "--set", "batch_size=2"])
    assert err.value.code == 2
    line = capsys.readouterr().err.strip()
    assert line == ("hemwsl train-cv: error: argument --set: given more than once (['epochs=1'], then "
                    "['batch_size=2']); give it once")


@pytest.mark.parametrize("setting", ["seed", "train_seed"])
def test_seed_beyond_64_bits(setting):
    from hemwsl.engines.classifier import check_train_settings

    with pytest.raises(HemwslInputError, match=rf"^{setting} must be in \[0, 2\*\*32\), got 18446744073709551616$"):
        check_train_settings(**{setting: 2 ** 64})


@pytest.mark.parametrize("setting, value, named", [
    ("patience", float("inf"), "patience must be an integer >= 1"),
    ("learning_rate", 10 ** 400, "learning_rate must be a number in the float range"),
    ("weight_decay", -(2 ** 64), "weight_decay must be >= 0"),
])
def test_int_settings_of_any_size(setting, value, named):
    from hemwsl.engines.classifier import check_train_settings

    with pytest.raises(HemwslInputError, match=named):
        check_train_settings(**{setting: value})


def test_train_seed_beyond_64_bits_cli(data, work, capsys):
    code = main(["train-cv", "--dataset-dir", str(data), "--out", str(work / "cv"), "--set",
                 f"train_seed={2 ** 64}"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2, lines[-3:]
    assert lines[-1].startswith("hemwsl train-cv: error: ") and "train_seed must be in [0, 2**32)" in lines[-1]
    assert not any("Traceback" in line for line in lines)
    assert not (work / "cv").exists()


def test_predict_members_without_a_fold(tmp_path: Path, capsys):
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(b"")
    code = main(["predict", "--model", str(tmp_path / "model"), "--input", str(scan), "--out", str(tmp_path / "p"),
                 "--members"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("hemwsl predict: error: --members: give the fold numbers"), lines[0]
    assert not (tmp_path / "p").exists()


def test_predictor_empty_members(model):
    from hemwsl.predict import Predictor

    with pytest.raises(HemwslInputError, match="members: give at least one fold number"):
        Predictor(model, members=[])


def test_predict_members_without_a_fold_on_a_package(model, data, work, capsys):
    code = main(["predict", "--model", str(model), "--input", str(_first(data)), "--out", str(work / "p"),
                 "--members"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert "--members: give the fold numbers" in lines[0]
    assert not (work / "p").exists()
