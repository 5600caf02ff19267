"""Bad inputs of the commands that work on a train-cv run (cam-cv, pseudo, trust, seg-cv, ablation, pipeline,
train-cv --cache-dir): each is one line naming the option or file, exit 2, found before any costly work and before
any run record is written (a refused command leaves no file that would lock its output folder).

The train-cv run is faked (``cv_run.json``, ``cv_settings.json`` and empty checkpoints): every check here comes
before a checkpoint is read, so no network is trained.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from hemwsl.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """4 phantoms (32 x 32 x 6), a faked 2-fold train-cv run of resnet10 at 32 x 32 and an empty heatmap folder."""
    root = tmp_path_factory.mktemp("bad_runs")
    data = root / "data"
    assert main(["synth", "--out", str(data), "--patients", "4", "--size", "32", "--slices", "6"]) == 0
    cv = root / "cv"
    for k in range(2):
        (cv / f"fold{k}" / "models").mkdir(parents=True)
        (cv / f"fold{k}" / "models" / "model.pt").write_bytes(b"")
    settings = {"backbone": "resnet10", "spatial_size": [32, 32], "epochs": 1}
    (cv / "cv_settings.json").write_text(json.dumps(settings))
    (cv / "cv_run.json").write_text(json.dumps({"bundle": "ich_classifier", "folds": 2,
                                                "dataset_dir": str(data.resolve()), "settings": settings}))
    cams = root / "cams"
    (cams / "gradcam" / "layer4").mkdir(parents=True)
    text = root / "notes.txt"
    text.write_text("I am a text file\n")
    wrongkeys = root / "wrongkeys.json"
    wrongkeys.write_text(json.dumps([{"foo": 1}]))
    return {"data": data, "cv": cv, "cams": cams, "text": text, "wrongkeys": wrongkeys}


def refused(argv: list, capsys, named: str | list[str], absent: Path | None = None) -> str:
    """``hemwsl argv`` ends with exit 2 and one ``hemwsl <command>: error:`` line holding ``named``, no traceback;
    ``absent`` (the output folder) was not made."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as err:  # argparse's own checks (choices): its usage line, then one error line
        code = err.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, f"exit {code}: {err[-3:]}"
    text = "\n".join(err)
    assert text.count("Traceback (most recent call last)") == text.count("--- Logging error ---"), err[-5:]
    last = err[-1]
    assert last.startswith(f"hemwsl {argv[0]}: error: "), last
    for n in [named] if isinstance(named, str) else named:
        assert n in last, f"{last!r} does not name {n!r}"
    if absent is not None:
        assert not absent.exists(), f"left {sorted(p.name for p in absent.rglob('*'))}"
    return last


# --------------------------------------------------------------------------------------------- cam-cv
def _cam_cv(run, out, *extra, data=None):
    return ["cam-cv", "--dataset-dir", data or run["data"], "--cv-dir", run["cv"], "--out", out, *extra]


def test_cam_cv_unknown_method_leaves_no_marker(run, tmp_path, capsys):  # K01
    out = tmp_path / "cams"
    refused(_cam_cv(run, out, "--methods", "nosuchcam"), capsys, "unknown method(s) ['nosuchcam']", out)


def test_cam_cv_unknown_layer_leaves_no_marker(run, tmp_path, capsys):  # K02
    out = tmp_path / "cams"
    refused(_cam_cv(run, out, "--methods", "gradcam", "--layers", "layer9"), capsys,
            ["target layer 'layer9'", "layer2, layer3, layer4"], out)


def test_cam_cv_unknown_grid_does_not_lock_the_folder(run, tmp_path, capsys):  # K03, K09
    out = tmp_path / "cams"
    refused(_cam_cv(run, out, "--methods", "gradcam", "--grid", "pixels"), capsys, "unknown grid 'pixels'", out)
    # the corrected rerun into the same folder is not refused as "another run" (it gets to the checkpoints,
    # empty files here)
    assert main([str(a) for a in _cam_cv(run, out, "--methods", "gradcam", "--grid", "ct")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "another run" not in err and "model.pt" in err, err


def test_cam_cv_unknown_part(run, tmp_path, capsys):  # K04
    out = tmp_path / "cams"
    refused(_cam_cv(run, out, "--methods", "gradcam", "--part", "train_and_test"), capsys,
            ["--part", "train_and_test"], out)


def test_run_cam_unknown_part_is_named(tmp_path):  # M17 (the function the ich_cam bundle calls)
    import torch

    from hemwsl.engines.cam import run_cam
    from hemwsl.errors import HemwslInputError

    parts = {"train": [], "val": [], "test": []}
    with pytest.raises(HemwslInputError, match="unknown part 'holdout'; accepted values: train, val, test"):
        run_cam(torch.nn.Linear(1, 1), parts, tmp_path / "c", ["gradcam"], part="holdout")
    assert not (tmp_path / "c").exists()


def test_cam_cv_bad_dataset_leaves_no_marker(run, tmp_path, capsys):  # K07
    data = tmp_path / "data"
    shutil.copytree(run["data"], data)
    mask = sorted((data / "masks").glob("*.nii*"))[0]
    img = nib.load(str(mask))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:-2], img.affine), str(mask))
    out = tmp_path / "cams"
    refused(_cam_cv(run, out, "--methods", "gradcam", data=data), capsys, [mask.name, "shape"], out)


def test_cam_cv_set_contradicting_the_run(run, tmp_path, capsys):  # K08
    out = tmp_path / "cams"
    refused(_cam_cv(run, out, "--methods", "gradcam", "--set", "spatial_size=[64,64]"), capsys,
            ["--set spatial_size", "contradicts the train-cv run", "[32, 32]"], out)
    refused(_cam_cv(run, out, "--methods", "gradcam", "--set", "backbone=resnet18"), capsys, "--set backbone", out)


def test_cam_cv_set_without_a_settings_file_gives_the_settings():  # K08: a run without cv_settings.json
    from hemwsl.commands.benchmark import _cam_cv_settings

    assert _cam_cv_settings("/nonexistent", ["spatial_size=[64,64]"]) == {"spatial_size": [64, 64]}


# --------------------------------------------------------------------------------------------- pseudo
def _pseudo(run, out, *extra):
    return ["pseudo", "--dataset-dir", run["data"], "--cam-dir", run["cams"], "--cv-dir", run["cv"], "--checkpoint",
            run["cv"] / "fold0" / "models" / "model.pt", "--fold", "0", "--method", "gradcam", "--layer", "layer4",
            "--no-progress", "--out", out, *extra]


def test_pseudo_bad_k_leaves_no_params_file(run, tmp_path, capsys):  # P02, P11
    out = tmp_path / "p"
    refused(_pseudo(run, out, "--k", "0"), capsys, "k must be a positive int, got 0", out)


def test_pseudo_bad_context_slices_leaves_no_params_file(run, tmp_path, capsys):  # P13
    out = tmp_path / "p"
    refused(_pseudo(run, out, "--context", "--context-slices", "4"), capsys, "context_slices", out)


def test_pseudo_threshold_outside_the_min_max_range(run, tmp_path, capsys):  # P03
    out = tmp_path / "p"
    refused(_pseudo(run, out, "--threshold", "2.5"), capsys, ["--threshold 2.5", "[0, 1)"], out)
    refused(_pseudo(run, out, "--prob-threshold", "1.5"), capsys, "--prob-threshold", out)


def test_build_threshold_refuses_a_fraction_above_1():  # P03 (API)
    from hemwsl.errors import HemwslInputError
    from hemwsl.pseudo import build_threshold

    with pytest.raises(HemwslInputError, match="threshold 2.5"):
        build_threshold("fixed", 2.5)
    with pytest.raises(HemwslInputError, match="threshold -0.1"):
        build_threshold("intensity", -0.1)
    assert build_threshold("fixed", 0.7).value == 0.7


def test_pseudo_component_threshold_without_the_filter(run, tmp_path, capsys):  # P14
    out = tmp_path / "p"
    refused(_pseudo(run, out, "--component-threshold", "7"), capsys, ["--component-threshold", "--component-filter"],
            out)


def test_pseudo_predictions_that_are_no_csv(run, tmp_path, capsys):  # P15
    out = tmp_path / "p"
    refused(_pseudo(run, out, "--predictions-csv", run["text"]), capsys,
            [str(run["text"]), "not a predictions CSV", "patient, slice and prob_any"], out)


# --------------------------------------------------------------------------------------------- trust
def _trust(run, out, *extra):
    return ["trust", "--dataset-dir", run["data"], "--model", str(run["cv"] / "fold{fold}" / "models" / "model.pt"),
            "--cv-dir", run["cv"], "--methods", "gradcam", "--steps", "0", "--subsets", "4", "--out", out, *extra]


def test_trust_method_options_not_json(run, tmp_path, capsys):  # U01
    out = tmp_path / "t"
    refused(_trust(run, out, "--method-options", "{smoothgrad: 16"), capsys, ["--method-options", "not valid JSON"],
            out)


def test_trust_method_option_a_method_does_not_take(run, tmp_path, capsys):  # U08
    out = tmp_path / "t"
    refused(_trust(run, out, "--method-options", '{"gradcam": {"bogus_option": 3}}'), capsys,
            ["--method-options", "gradcam", "'bogus_option'"], out)
    refused(_trust(run, out, "--method-options", '{"scorecam": {"batch_size": 4}}'), capsys,
            ["--method-options", "'scorecam'", "not among the methods"], out)


def test_trust_bad_measures_leave_no_run_record(run, tmp_path, capsys):  # U02, U03, U09
    out = tmp_path / "t"
    refused(_trust(run, out, "--patch-size", "0"), capsys, "patch_size must be a positive int, got 0", out)
    refused(_trust(run, out, "--subset-fraction", "2"), capsys, "subset_fraction must be in (0, 1]", out)


def test_trust_unknown_group_before_any_volume(run, tmp_path, capsys):  # U04
    out = tmp_path / "t"
    refused(_trust(run, out, "--groups", "bleeding"), capsys, ["--groups", "'bleeding'"], out)


def test_trust_unknown_patient(run, tmp_path, capsys):  # U05
    out = tmp_path / "t"
    refused(_trust(run, out, "--patients", "042"), capsys, ["--patients", "042"], out)


# --------------------------------------------------------------------------------------------- seg-cv
def test_seg_cv_datalist_without_its_keys_leaves_no_run_record(run, tmp_path, capsys):  # X05
    out = tmp_path / "seg"
    refused(["seg-cv", "--datalist", run["wrongkeys"], "--out", out, "--folds", "2"], capsys,
            [str(run["wrongkeys"]), "missing"], out)


def test_seg_cv_misspelt_set_key(run, tmp_path, capsys):  # X06
    out = tmp_path / "seg"
    refused(["seg-cv", "--dataset-dir", run["data"], "--out", out, "--folds", "2", "--set", "learnin_rate=0.1"],
            capsys, ["--set learnin_rate", "did you mean learning_rate"], out)


def test_seg_cv_gate_threshold_above_1(run, tmp_path, capsys):  # X07
    out = tmp_path / "seg"
    refused(["seg-cv", "--dataset-dir", run["data"], "--out", out, "--folds", "2", "--gate-cv-dir", run["cv"],
             "--gate-threshold", "1.7"], capsys, ["--gate-threshold", "1.7"], out)


# --------------------------------------------------------------------------------------------- ablation
def _ablation(run, out, *extra):
    return ["ablation", "--dataset-dir", run["data"], "--cv-dir", run["cv"], "--cam-dir", run["cams"], "--out", out,
            *extra]


def test_ablation_takes_the_folds_of_the_run(run, tmp_path, capsys):  # AB04, AB07 (and AB01, AB03: no fold 2)
    out = tmp_path / "a"
    refused(_ablation(run, out, "--layer", "layer4", "--rows", "cam", "--unet-folds", "4"), capsys,
            ["--unet-folds", "[4] not in [0, 1]"], out)
    refused(_ablation(run, out, "--folds", "2", "--layer", "layer4", "--rows", "cam", "--unet-folds", "4"), capsys,
            "--unet-folds", out)


def test_ablation_unknown_layer_leaves_no_marker(run, tmp_path, capsys):  # AB01, AB05
    out = tmp_path / "a"
    last = refused(_ablation(run, out, "--layer", "layer9", "--rows", "cam", "--unet-folds", "0"), capsys,
                   ["--layer layer9", "layer4"], out)
    assert "fold2" not in last


def test_ablation_prior_rows_without_a_benchmark_leave_no_marker(run, tmp_path, capsys):  # AB03, AB06
    out = tmp_path / "a"
    refused(_ablation(run, out, "--layer", "layer4", "--rows", "prior"), capsys, "--benchmark-dir", out)


# --------------------------------------------------------------------------------------------- pipeline
def _pipeline(run, out, *extra):
    return ["pipeline", "--dataset-dir", run["data"], "--out", out, "--folds", "2", "--set", "backbone=resnet10",
            "spatial_size=[32,32]", "epochs=1", *extra]


def test_pipeline_unknown_method_before_train_cv(run, tmp_path, capsys):  # L02
    out = tmp_path / "pl"
    refused(_pipeline(run, out, "--methods", "gradcam", "nosuchcam"), capsys, "unknown method(s) ['nosuchcam']", out)


def test_pipeline_unknown_layer_before_train_cv(run, tmp_path, capsys):  # L03
    out = tmp_path / "pl"
    refused(_pipeline(run, out, "--methods", "gradcam", "--layer", "layer9"), capsys,
            ["--layer 'layer9'", "layer2, layer3, layer4"], out)


def test_pipeline_misspelt_unet_set_key(run, tmp_path, capsys):  # L04
    out = tmp_path / "pl"
    refused(_pipeline(run, out, "--methods", "gradcam", "--unet-set", "epochz=1"), capsys,
            ["--unet-set epochz", "ich_unet3d", "did you mean epochs"], out)


# --------------------------------------------------------------------------------------------- train-cv
def test_train_cv_cache_dir_that_is_a_file(run, tmp_path, capsys):  # T28
    out = tmp_path / "cv"
    refused(["train-cv", "--dataset-dir", run["data"], "--out", out, "--folds", "2", "--cache-dir", run["text"]],
            capsys, [str(run["text"]), "--cache-dir"], out)
