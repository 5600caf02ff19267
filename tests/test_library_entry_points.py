"""The experiments are library code with explicit parameters (:mod:`hemwsl.experiments`): callable from Python
without ``argparse``, with the command line's defaults and its one-line errors; no command builds another
command's ``argparse.Namespace``."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from hemwsl.cli import build_parser, main
from hemwsl.errors import HemwslInputError
from hemwsl.experiments import (AblationConfig, BenchmarkConfig, run_ablation_experiment, run_benchmark_experiment,
                                seg_cv)

ROOT = Path(__file__).resolve().parents[1] / "hemwsl"


def _cli_defaults(argv: list[str]) -> dict:
    """The parsed options of ``hemwsl <argv>`` (the subcommand's defaults where ``argv`` gives nothing)."""
    args = vars(build_parser().parse_args(argv))
    return {k: v for k, v in args.items() if k not in ("command", "verbose", "quiet")}


def _same(a, b) -> bool:
    """Equal up to list / tuple (the command line gives lists, the settings objects hold tuples)."""
    def norm(v):
        return tuple(norm(x) for x in v) if isinstance(v, (list, tuple)) else v

    return norm(a) == norm(b)


# --------------------------------------------------------------------------------------------- defaults
def test_ablation_config_defaults_are_the_cli_defaults():
    from hemwsl.commands.pipeline import ablation_config

    need = dict(dataset_dir="d", cv_dir="c", cam_dir="h", out="o", layer="layer4")
    cli = _cli_defaults(["ablation", "--dataset-dir", "d", "--cv-dir", "c", "--cam-dir", "h", "--out", "o",
                         "--layer", "layer4"])
    names = {"set": "overrides"}
    fields = {f.name: f for f in dataclasses.fields(AblationConfig)}
    assert {names.get(k, k) for k in cli} == set(fields)  # every option is a setting, and nothing else
    config = AblationConfig(**need)
    for dest, value in cli.items():
        assert _same(getattr(config, names.get(dest, dest)), value), dest
    assert ablation_config(build_parser().parse_args(["ablation", *sum(
        ([f"--{k.replace('_', '-')}", v] for k, v in need.items()), [])])) == config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.threshold = 0.5


def test_benchmark_config_defaults_are_the_cli_defaults():
    from hemwsl.commands.benchmark import benchmark_config

    argv = ["benchmark", "--dataset-dir", "d", "--cam-dir", "h", "--out", "o"]
    cli = _cli_defaults(argv)
    fields = {f.name for f in dataclasses.fields(BenchmarkConfig)}
    assert {"figures" if k == "no_figures" else k for k in cli} == fields
    config = BenchmarkConfig(cam_dir="h", out="o", dataset_dir="d")
    for dest, value in cli.items():
        if dest == "no_figures":
            assert config.figures is (not value)
        else:
            assert _same(getattr(config, dest), value), dest
    assert benchmark_config(build_parser().parse_args(argv)) == config


def test_seg_cv_defaults_are_the_cli_defaults():
    cli = _cli_defaults(["seg-cv", "--out", "o"])
    params = inspect.signature(seg_cv).parameters
    names = {"set": "overrides"}
    assert {names.get(k, k) for k in cli} == set(params)
    for dest, value in cli.items():
        default = params[names.get(dest, dest)].default
        if default is inspect.Parameter.empty:  # the positional dataset_dir (None: datalists only) and out
            assert dest in ("dataset_dir", "out")
            continue
        if dest == "set":  # no overrides: None or []
            assert not default and not value
        else:
            assert _same(default, value), dest


# --------------------------------------------------------------------------------------------- errors
def _raised(call) -> str:
    with pytest.raises(HemwslInputError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message
    return message


def _cli_line(argv: list[str], capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("options, settings", [
    (["--threshold", "1.5"], {"threshold": 1.5}),
    (["--prob-threshold", "2"], {"prob_threshold": 2.0}),
    (["--unet-folds", "0", "5"], {"unet_folds": (0, 5)}),
    (["--rows", "cam", "prior"], {"rows": ("cam", "prior")}),
    (["--set", "epochs"], {"overrides": ("epochs",)}),
], ids=["threshold", "prob-threshold", "unet-folds", "rows-without-benchmark", "set-without-value"])
def test_a_bad_ablation_setting_is_the_cli_line(options, settings, tmp_path, capsys):
    base = dict(dataset_dir=str(tmp_path / "data"), cv_dir=str(tmp_path / "cv"), cam_dir=str(tmp_path / "cam"),
                layer="layer4", folds=2)
    argv = ["ablation", "--dataset-dir", base["dataset_dir"], "--cv-dir", base["cv_dir"], "--cam-dir",
            base["cam_dir"], "--layer", "layer4", "--folds", "2", "--out", str(tmp_path / "cli"), *options]
    message = _raised(lambda: run_ablation_experiment(AblationConfig(**base, out=str(tmp_path / "lib"), **settings)))
    assert _cli_line(argv, capsys) == f"hemwsl ablation: error: {message}"
    assert not (tmp_path / "lib").exists()  # checked before the first file


def test_an_ablation_row_of_no_kind_is_named():
    config = AblationConfig(dataset_dir="d", cv_dir="c", cam_dir="h", out="o", layer="layer4", folds=2,
                            rows=("cam", "gradcam"))
    assert "--rows: unknown row kind(s) ['gradcam']" in _raised(lambda: run_ablation_experiment(config))


@pytest.mark.parametrize("options, kwargs", [
    ([], {"dataset_dir": None}),
    (["--dataset-dir", "d", "--folds", "2", "--only", "3"], {"dataset_dir": "d", "folds": 2, "only": [3]}),
    (["--dataset-dir", "d", "--set", "epochs"], {"dataset_dir": "d", "overrides": ["epochs"]}),
], ids=["no-data", "only", "set-without-value"])
def test_a_bad_seg_cv_setting_is_the_cli_line(options, kwargs, tmp_path, capsys):
    kwargs = dict(kwargs)
    dataset_dir = kwargs.pop("dataset_dir")
    message = _raised(lambda: seg_cv(dataset_dir, tmp_path / "lib", **kwargs))
    line = _cli_line(["seg-cv", "--out", str(tmp_path / "cli"), *options], capsys)
    assert line == f"hemwsl seg-cv: error: {message}"
    assert not (tmp_path / "lib").exists()


def test_a_bad_benchmark_setting_is_the_cli_line(synthetic_root, tmp_path, capsys):
    config = BenchmarkConfig(cam_dir=tmp_path, out=tmp_path / "lib", dataset_dir=synthetic_root, folds=2,
                             candidates=(0.5, 1.5))
    message = _raised(lambda: run_benchmark_experiment(config))
    argv = ["benchmark", "--dataset-dir", str(synthetic_root), "--cam-dir", str(tmp_path), "--out",
            str(tmp_path / "cli"), "--folds", "2", "--candidates", "0.5", "1.5"]
    assert _cli_line(argv, capsys) == f"hemwsl benchmark: error: {message}"
    assert "one of --dataset-dir" in _raised(lambda: run_benchmark_experiment(BenchmarkConfig(cam_dir=tmp_path,
                                                                                               out=tmp_path / "x")))


# --------------------------------------------------------------------------------------------- a run
def test_the_benchmark_from_python_is_the_cli_report(synthetic_root, tmp_path, capsys):
    """Hand-made heatmaps (the true masks with noise) scored by the library function and by the command: the same
    report."""
    from hemwsl.cam.volume import heatmap_path
    from hemwsl.data.datalist import build_datalist

    rng = np.random.default_rng(0)
    cam = tmp_path / "cam"
    for e in build_datalist("ct-ich", synthetic_root):
        img = nib.load(e["label"])
        heat = (np.asarray(img.get_fdata()) > 0) + rng.normal(0, 0.4, img.shape)
        p = heatmap_path(cam, e["patient"], ("gradcam", "layer4"))
        p.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(heat.astype(np.float32), img.affine), str(p))
    config = BenchmarkConfig(cam_dir=str(cam), out=str(tmp_path / "lib"), dataset_dir=str(synthetic_root), folds=2,
                             thresholds=("fixed:0.5", "search"), figures=False, n_boot=50)
    assert run_benchmark_experiment(config) == tmp_path / "lib"
    printed = capsys.readouterr().out
    assert main(["benchmark", "--dataset-dir", str(synthetic_root), "--cam-dir", str(cam), "--out",
                 str(tmp_path / "cli"), "--folds", "2", "--thresholds", "fixed:0.5", "search", "--no-figures",
                 "--n-boot", "50"]) == 0
    assert capsys.readouterr().out == printed
    for name in ("summary.csv", "per_case.csv", "thresholds.csv", "config.json"):
        assert (tmp_path / "lib" / name).read_text() == (tmp_path / "cli" / name).read_text(), name
    # resumed from Python with the same settings: nothing changes; other settings are refused
    run_benchmark_experiment(config)
    assert "holds a benchmark run with other settings" in _raised(
        lambda: run_benchmark_experiment(dataclasses.replace(config, thresholds=("fixed:0.5",))))


# --------------------------------------------------------------------------------------------- the rule
def test_no_module_builds_an_argparse_namespace():
    """Commands parse arguments and call library functions: none builds another command's ``Namespace``."""
    found = []
    for p in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
                if name == "Namespace":
                    found.append(f"{p.relative_to(ROOT.parent)}:{node.lineno}")
    assert not found, found
