"""Bad inputs of the data, training-settings, checkpoint, quantify, package, predict, split and benchmark steps
(the robustness probe's cases, named by their ids): each ends in one line naming the file or argument and the
problem, before any costly work and before any output is written.

CLI cases run ``hemwsl.cli.main`` in-process on the small phantoms of :mod:`tests.test_bad_inputs`; bundle cases
evaluate the configs' ``initialize`` expressions (what ``python -m monai.bundle run`` runs first) or the one
component at fault, without training anything.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from hemwsl.cli import main
from hemwsl.errors import input_error_message
from tests import test_bad_inputs as shared
from tests.test_bad_inputs import _first, _rewrite

data = shared.data  # the fixture of 4 phantoms (48 x 48 x 6) in the CT-ICH layout, and <data>/../dl.json

REPO = Path(__file__).resolve().parents[1]
TRAIN = "--set backbone=resnet10 spatial_size=[32,32] samples_per_epoch=8 batch_size=4 cache_workers=0".split()


def one_line(argv: list[str], named: str, capsys, work: Path | None = None) -> str:
    """Run ``hemwsl argv``: exit 2, no traceback, the last line ``hemwsl <cmd>: error: ...`` holding ``named``,
    and nothing new in ``work``. Returns that line."""
    before = sorted(p.name for p in work.iterdir()) if work is not None else None
    try:
        code = main([str(a) for a in argv])
    except SystemExit as err:
        code = err.code
    err = capsys.readouterr().err.strip().splitlines()
    text = "\n".join(err)
    assert code == 2, f"exit {code}: {err[-3:]}"
    assert text.count("Traceback (most recent call last)") == text.count("--- Logging error ---"), err[-5:]
    last = err[-1]
    assert last.startswith(f"hemwsl {argv[0]}: error: "), last
    assert named in last, f"{last!r} does not name {named!r}"
    if work is not None:
        assert sorted(p.name for p in work.iterdir()) == before, f"left {sorted(p.name for p in work.iterdir())}"
    return last


def raises_named(fn, named: str, max_len: int | None = None) -> str:
    """``fn()`` raises a :class:`~hemwsl.errors.HemwslInputError` (possibly wrapped by MONAI) whose one-line message
    holds ``named``."""
    with pytest.raises(Exception) as info:
        fn()
    message = input_error_message(info.value)
    assert message is not None, f"not a HemwslInputError: {info.value!r}"
    assert named in message, f"{message!r} does not name {named!r}"
    assert "\n" not in str(message)
    if max_len is not None:
        assert len(message) <= max_len, f"{len(message)} chars: {message}"
    return message


@pytest.fixture
def work(tmp_path) -> Path:
    w = tmp_path / "work"
    w.mkdir()
    return w


def _copy(data: Path, tmp: Path) -> Path:
    out = tmp / "data"
    shutil.copytree(data, out)
    return out


# --------------------------------------------------------------------------------------------- training settings
@pytest.mark.parametrize("setting, value, named", [
    ("epochs", 0, "epochs must be >= 1"),                           # T12, M11, Y08
    ("epochs", "two", "epochs must be an integer"),                 # T19
    ("learning_rate", -1, "learning_rate must be > 0"),             # T13, M06
    ("batch_size", 0, "batch_size must be >= 1"),                   # T14
    ("val_fraction", 1.5, "val_fraction must be in [0, 1)"),        # T20
    ("windows", "brain", "windows must be a list"),                 # T24
    ("skull_strip", "maybe", "skull_strip must be true or false"),  # T25
], ids=["T12", "T19", "T13", "T14", "T20", "T24", "T25"])
def test_train_settings_are_checked_one_line(setting, value, named):
    from hemwsl.engines.classifier import check_train_settings

    raises_named(lambda: check_train_settings(**{setting: value}), named)


def test_T12_train_cv_epochs_zero_refused_and_no_fold_folder_left(data, work, capsys):
    one_line(["train-cv", "--dataset-dir", data, "--out", work / "cv", "--folds", "2", *TRAIN, "epochs=0"],
             "epochs must be >= 1", capsys, work)


def test_T20_val_fraction_named_by_the_fold_split(synthetic_datalist):
    from hemwsl.engines.classifier import fold_datalists

    raises_named(lambda: fold_datalists(synthetic_datalist, n_folds=2, val_fraction=1.5), "val_fraction must be")


def test_T24_T25_slice_dataset_refuses_a_window_string_and_a_non_boolean_skull_strip(synthetic_datalist):
    from hemwsl.data.dataset import SliceDataset

    raises_named(lambda: SliceDataset(synthetic_datalist, windows="brain", spatial_size=(32, 32)), "windows")
    raises_named(lambda: SliceDataset(synthetic_datalist, skull_strip="maybe", spatial_size=(32, 32)), "skull_strip")


def _parser(bundle: str, configs: list[str], **overrides):
    from monai.bundle import ConfigParser

    from hemwsl.engines.bundle import config_files

    parser = ConfigParser()
    parser.read_config(config_files(bundle, configs))
    parser.update(overrides)
    return parser


@pytest.mark.parametrize("setting, value, named", [("epochs", 0, "epochs"), ("learning_rate", -0.5, "learning_rate")],
                         ids=["M11", "M06"])
def test_classifier_bundle_checks_its_settings_first(setting, value, named, tmp_path):
    """The first ``initialize`` expression of train.yaml (and multi_gpu_train.yaml) checks the settings."""
    for configs in (["train"], ["train", "multi_gpu_train"]):
        parser = _parser("ich_classifier", configs, output_dir=str(tmp_path / "o"), **{setting: value})
        raises_named(lambda: parser.get_parsed_content("initialize#0"), named)
        assert "check_train_settings" in parser["initialize"][0]
    assert not (tmp_path / "o").exists()


def test_M20_unet_bundle_patch_size_of_two_sizes(tmp_path):
    from hemwsl.engines.segmentation import check_unet_settings

    raises_named(lambda: check_unet_settings([96, 96]), "patch_size must be 3 sizes")
    for configs in (["train"], ["train", "multi_gpu_train"]):
        parser = _parser("ich_unet3d", configs, output_dir=str(tmp_path / "o"), patch_size=[96, 96])
        raises_named(lambda: parser.get_parsed_content("initialize#0"), "patch_size")
    _parser("ich_unet3d", ["train"]).get_parsed_content("initialize#0")  # the defaults pass


def test_M07_evaluate_without_a_trained_checkpoint_names_it(tmp_path):
    parser = _parser("ich_classifier", ["train", "evaluate"], output_dir=str(tmp_path / "o"))
    missing = str(tmp_path / "o" / "fold0" / "models" / "model.pt")
    raises_named(lambda: parser.get_parsed_content("checkpoint"), f"{missing}: best checkpoint not found")


def test_M10_classifier_inference_with_no_images():
    from monai.data import Dataset

    from hemwsl.engines.classifier import ClassifierInference

    raises_named(lambda: ClassifierInference(torch.nn.Identity(), Dataset([]), "unused"), "images")


def test_M11_bundle_run_last_line_names_the_setting(data, tmp_path):
    """``python -m monai.bundle run``: the named problem is the last line of the output."""
    import subprocess
    import sys

    cfg = REPO / "bundles" / "ich_classifier"
    r = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", str(cfg / "configs" / "train.yaml"),
                        "--bundle_root", str(cfg), "--dataset_dir", str(data), "--output_dir", str(tmp_path / "o"),
                        "--backbone", "resnet10", "--epochs", "0", "--n_folds", "2"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert (r.stdout + r.stderr).strip().splitlines()[-1] == "hemwsl: error: epochs must be >= 1, got 0"
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------------------------- volumes
def test_T23_train_cv_refuses_a_blank_volume(data, tmp_path, work, capsys):
    root = _copy(data, tmp_path)
    _rewrite(_first(root), lambda a, af: (np.zeros_like(a), af))
    one_line(["train-cv", "--dataset-dir", root, "--out", work / "cv", "--folds", "2", *TRAIN, "epochs=1"],
             f"{_first(root)}: every voxel has the value 0", capsys, work)


# --------------------------------------------------------------------------------------------- checkpoints
@pytest.fixture
def text_file(work) -> Path:
    f = work / "notes.txt"
    f.write_text("I am a text file\nwith two lines\n")
    return f


def test_R14_T22_A07_a_text_file_as_weights_is_one_short_line(text_file):
    from hemwsl.networks import build_network
    from hemwsl.networks.checkpoint import load_weights

    net = build_network("resnet10", in_channels=9)
    m = raises_named(lambda: load_weights(net, text_file), f"{text_file}: cannot read checkpoint", max_len=250)
    assert "not a PyTorch weights file" in m and "weights_only" not in m
    m = raises_named(lambda: build_network("resnet10", in_channels=9, pretrained_path=text_file),
                     f"{text_file}: cannot read pretrained weights", max_len=250)
    assert "not a PyTorch weights file" in m


def test_M09_checkpoint_of_another_backbone_is_one_short_line(tmp_path):
    from hemwsl.networks import build_network
    from hemwsl.networks.checkpoint import load_weights

    ckpt = tmp_path / "model.pt"
    torch.save(build_network("resnet10", in_channels=9).state_dict(), ckpt)
    m = raises_named(lambda: load_weights(build_network("resnet18", in_channels=9), ckpt),
                     f"{ckpt}: checkpoint does not match the network", max_len=260)
    assert "missing key(s), e.g. 'layer1.1.conv1.weight'" in m


# --------------------------------------------------------------------------------------------- predict
def test_R18_unavailable_cuda_device_names_device(data, work, capsys):
    one_line(["predict", "--model", work / "nomodel", "--input", _first(data), "--device", "cuda:7",
              "--out", work / "p"], "--device cuda:7", capsys, work)




# --------------------------------------------------------------------------------------------- quantify
@pytest.fixture
def predictions(data, tmp_path) -> Path:
    from hemwsl.data.datalist import build_datalist

    lines = ["patient,slice,label_any,prob_any"]
    for e in build_datalist("ct-ich", data):
        lines += [f"{e['patient']},{z},{v},{0.2 + 0.6 * v:.2f}" for z, v in enumerate(e["slice_labels"])]
    f = tmp_path / "predictions.csv"
    f.write_text("\n".join(lines) + "\n")
    return f


def _quantify(data, masks, predictions, work) -> list:
    return ["quantify", "--dataset-dir", data, "--masks", masks, "--predictions", predictions, "--out", work / "q",
            "--folds", "2", "--no-figures", "--n-boot", "10"]


def test_Q01_masks_folder_without_any_mask(data, predictions, work, capsys):
    empty = work / "empty"
    empty.mkdir()
    one_line(_quantify(data, empty, predictions, work), f"{empty}: no predicted mask", capsys, work)


def test_Q05_ct_volumes_given_as_masks(data, predictions, work, capsys):
    one_line(_quantify(data, data / "ct_scans", predictions, work), "must hold 0 and 1 only", capsys, work)


def test_Q06_Q07_masks_off_the_ct_grid(data, predictions, tmp_path, work, capsys):
    masks = tmp_path / "pred"
    shutil.copytree(data / "masks", masks)
    bad = _first(masks, ".")
    _rewrite(bad, lambda a, af: ((a[::2, ::2] > 0).astype(np.uint8), af))
    one_line(_quantify(data, masks, predictions, work), f"{bad}: mask shape", capsys, work)


# --------------------------------------------------------------------------------------------- package
@pytest.mark.parametrize("args, named", [(["--min-sensitivity", "-1"], "--min-sensitivity"),
                                         (["--min-slices", "0"], "--min-slices")], ids=["G03", "G04"])
def test_package_options_out_of_range(args, named, work, capsys):
    one_line(["package", "--cv-dir", work / "nocv", "--out", work / "m", *args], named, capsys, work)


@pytest.fixture
def two_fold_run(data, tmp_path) -> Path:
    """A (fake, untrained) 2-fold train-cv run: cv_run.json, settings, checkpoints and test predictions."""
    from hemwsl.data.datalist import build_datalist
    from hemwsl.networks import build_network

    cv = tmp_path / "cv"
    settings = {"backbone": "resnet10", "spatial_size": [32, 32]}
    cv.mkdir()
    (cv / "cv_settings.json").write_text(json.dumps(settings))
    (cv / "cv_run.json").write_text(json.dumps({"bundle": "ich_classifier", "folds": 2, "dataset_dir": str(data),
                                                "settings": settings}))
    state = build_network("resnet10", in_channels=9).state_dict()
    entries = build_datalist("ct-ich", data)
    for k in range(2):
        (cv / f"fold{k}" / "models").mkdir(parents=True)
        torch.save(state, cv / f"fold{k}" / "models" / "model.pt")
        rows = [f"{e['patient']},{z},{v},0.5" for e in entries[k::2] for z, v in enumerate(e["slice_labels"])]
        (cv / f"fold{k}" / "predictions_test.csv").write_text("\n".join(["patient,slice,label_any,prob_any", *rows]))
    return cv


def test_G05_package_takes_the_fold_count_of_the_run(two_fold_run, data, tmp_path):
    from hemwsl.predict import MODEL_FILE, pack_model

    root = pack_model(two_fold_run, tmp_path / "model", dataset_dir=data, scan_call="none")
    meta = json.loads((root / MODEL_FILE).read_text())
    assert meta["settings"]["n_folds"] == 2
    assert [m["fold"] for m in meta["members"]] == [0, 1] and all(m["test_patients"] for m in meta["members"])


def test_G08_package_names_the_labels_csv_of_a_dataset_with_an_extra_patient(two_fold_run, data, tmp_path):
    from hemwsl.predict import pack_model

    root = _copy(data, tmp_path)
    csv = root / "hemorrhage_diagnosis_raw_ct.csv"
    lines = csv.read_text().splitlines()
    row = lines[1].split(",")
    row[0] = "99"
    csv.write_text("\n".join([*lines, ",".join(row)]) + "\n")
    raises_named(lambda: pack_model(two_fold_run, tmp_path / "model", dataset_dir=root, scan_call="none"),
                 "have slice rows but no scan")
    assert not (tmp_path / "model").exists()


@pytest.fixture
def model(two_fold_run, tmp_path) -> Path:
    """A model package of the fake 2-fold run."""
    from hemwsl.predict import pack_model

    return pack_model(two_fold_run, tmp_path / "model", scan_call="none")


def test_R17_every_input_checked_before_any_output(model, data, tmp_path, work, capsys):
    bad = tmp_path / "nan.nii.gz"
    img = nib.load(str(_first(data)))
    arr = np.asarray(img.dataobj, dtype=np.float32)
    arr[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(arr, img.affine), str(bad))
    one_line(["predict", "--model", model, "--no-figures", "--input", _first(data), bad, "--out", work / "p"],
             f"{bad}: 1 NaN/inf voxel", capsys, work)


def test_R19_two_inputs_with_one_output_name(model, data, tmp_path, work, capsys):
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(_first(data), other / _first(data).name)
    one_line(["predict", "--model", model, "--no-figures", "--input", _first(data), other / _first(data).name,
              "--out", work / "p"], "would both be written to", capsys, work)


# --------------------------------------------------------------------------------------------- split, datalist
def test_S07_empty_datalist_named(work, capsys):
    f = work / "empty.json"
    f.write_text("[]")
    one_line(["split", "--datalist", f, "--out", work / "s.json", "--folds", "2"], f"{f}: empty datalist", capsys, work)


def test_S08_datalist_that_is_a_directory(data, work, capsys):
    one_line(["split", "--datalist", data, "--out", work / "s.json", "--folds", "2"], f"{data}: a directory", capsys,
             work)


def test_S10_split_with_a_zero_fraction(data, work, capsys):
    one_line(["split", "--datalist", data.parent / "dl.json", "--out", work / "s.json", "--folds", "0",
              "--fractions", "1", "0", "0"], "--fractions 1 0 0", capsys, work)


def test_D03_scan_path_that_is_a_directory(data, tmp_path, work, capsys):
    root = _copy(data, tmp_path)
    scan = sorted((root / "ct_scans").glob("*.nii*"))[1]
    scan.unlink()
    scan.mkdir()
    one_line(["datalist", "--layout", "ct-ich", "--root", root, "--out", work / "dl.json"], f"{scan}: a directory",
             capsys, work)


def test_L01_unwritable_output_folder_names_the_output(data, work, capsys, monkeypatch):
    """The folder refuses the temporary file: the line names --out, not the temporary name."""
    import errno
    import tempfile

    def refuse(suffix="", prefix="", dir=None):
        raise PermissionError(errno.EACCES, "Permission denied", str(Path(dir) / f"{prefix}abc{suffix}"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    out = work / "dl.json"
    line = one_line(["datalist", "--layout", "ct-ich", "--root", data, "--out", out], f"{out}: permission denied",
                    capsys, work)
    assert ".tmp-" not in line


# --------------------------------------------------------------------------------------------- benchmark
def test_B13_predictions_file_that_is_not_a_predictions_csv(data, text_file, work, capsys):
    line = one_line(["benchmark", "--dataset-dir", data, "--cam-dir", work, "--out", work / "b", "--folds", "2",
                     "--thresholds", "fixed:0.7", "--slices", "predicted", "--predictions", text_file],
                    f"{text_file}: not a predictions CSV", capsys, work)
    assert "patient, slice, label_<output>..., prob_<output>..." in line


# --------------------------------------------------------------------------------------------- demo
@pytest.mark.parametrize("args, named", [(["--patients", "1"], "--patients must be >= 8"),
                                         (["--epochs", "-1"], "--epochs must be >= 1")], ids=["Y07", "Y08"])
def test_demo_checks_before_writing_data(args, named, work, capsys):
    one_line(["demo", "--out", work / "demo", "--size", "32", *args], named, capsys, work)


# ----------------------------------------------------------------------- the second fresh set (2026-12-07)
def test_seed_out_of_range_and_fractional_spatial_size(data, work, capsys):
    """A seed of 1e400 (recorded as Infinity, then refusing the corrected rerun) and spatial_size=[32.5, 32]
    (trained at 32 and recorded as 32.5): one line each, before anything is written."""
    from hemwsl.engines.classifier import check_train_settings

    raises_named(lambda: check_train_settings(seed=1e400), "seed must be an integer")
    raises_named(lambda: check_train_settings(seed=-1), "seed must be >= 0")
    one_line(["train-cv", "--dataset-dir", data, "--out", work / "cv", "--folds", "2", *TRAIN, "seed=1e400"],
             "seed", capsys, work)
    from hemwsl.data.dataset import LoadCTVolumed

    raises_named(lambda: LoadCTVolumed(spatial_size=[32.5, 32]), "spatial_size must be two ints")


def test_members_and_package_folds_given_twice(model, data, work, capsys):
    from hemwsl.predict import Predictor

    raises_named(lambda: Predictor(model, members=[0, 0]), "given twice")
    one_line(["package", "--cv-dir", work.parent / "nocv", "--out", work / "m", "--folds", "0", "0"], "--folds", capsys,
             work)


def test_truncated_report_of_an_interrupted_prediction(model, data, work, capsys):
    """A report.json cut short by a kill: one line without --overwrite, recomputed with it."""
    stem = _first(data).name.split(".")[0]
    (work / "p" / stem).mkdir(parents=True)
    (work / "p" / stem / "report.json").write_text('{"model_fingerp')
    one_line(["predict", "--model", model, "--no-figures", "--input", _first(data), "--out", work / "p"],
             "not a hemwsl prediction report", capsys)
    assert main(["predict", "--model", str(model), "--no-figures", "--input", str(_first(data)), "--out",
                 str(work / "p"), "--overwrite"]) == 0
    assert json.loads((work / "p" / stem / "report.json").read_text())["input"] == str(_first(data))


@pytest.mark.parametrize("edit, named", [
    (lambda m: m.update(settings=None), "'settings' must be a mapping"),
    (lambda m: m["recipe"].update(slice_threshold="high"), "recipe slice_threshold must be a probability"),
    (lambda m: m["recipe"].update(hu_range=[90, 50]), "recipe hu_range must be [low, high]"),
    (lambda m: m.update(members=[{"fold": 0}]), "'members' must be a list"),
], ids=["settings-null", "threshold-string", "hu-reversed", "member-without-weights"])
def test_an_edited_package_description_is_one_line_naming_it(model, edit, named):
    from hemwsl.predict import MODEL_FILE, ModelPackage

    f = model / MODEL_FILE
    meta = json.loads(f.read_text())
    edit(meta)
    f.write_text(json.dumps(meta))
    message = raises_named(lambda: ModelPackage.load(model), named)
    assert str(f) in message


def test_weights_that_differ_from_the_recorded_sha1_are_refused(model):
    from hemwsl.predict import ModelPackage, Predictor

    pkg = ModelPackage.load(model)
    w = model / pkg.members[0]["weights"]
    state = torch.load(w, weights_only=True)
    key = next(iter(state))
    state[key] = state[key] + 1
    torch.save(state, w)
    raises_named(lambda: Predictor(pkg), "differ from those the package recorded")


def test_split_refuses_fractions_with_folds_and_overwriting_its_datalist(data, work, capsys):
    dl = work / "dl.json"
    assert main(["datalist", "--layout", "ct-ich", "--root", str(data), "--out", str(dl)]) == 0
    before = dl.read_text()
    one_line(["split", "--datalist", dl, "--out", work / "s.json", "--folds", "2", "--fractions", "0.7", "0.15", "0.15"],
             "--fractions and --folds", capsys)
    one_line(["split", "--datalist", dl, "--out", dl, "--folds", "2"], "is the --datalist itself", capsys)
    assert dl.read_text() == before
    assert main(["split", "--datalist", str(dl), "--out", str(work / "s.json"), "--folds", "2"]) == 0
    assert main(["split", "--datalist", str(dl), "--out", str(work / "t.json")]) == 0


def test_api_refuses_nan_slices_non_binary_masks_and_negative_sizes():
    from hemwsl.cam import CAMEngine
    from hemwsl.metrics.agreement import abc2_volume_ml, volume_agreement
    from hemwsl.networks import build_network

    engine = CAMEngine(build_network("resnet10", in_channels=3), ["gradcam"])
    raises_named(lambda: engine(torch.full((2, 3, 32, 32), float("nan"))), "NaN/inf")
    cube = np.zeros((3, 3, 2))
    cube[1, 1, :] = 1
    raises_named(lambda: abc2_volume_ml(cube, spacing=[1.0, 1.0, -5.0]), "spacing must be three positive")
    raises_named(lambda: abc2_volume_ml(np.full((8, 8, 4), 0.4), spacing=[1.0, 1.0, 5.0]), "binary mask")
    assert abc2_volume_ml(cube, spacing=[1.0, 1.0, 5.0]) > 0
    raises_named(lambda: volume_agreement([1.0, 5.0, 9.0], [1.5, 4.0, 9.5], tolerance_ml=-5), "tolerance_ml")


def test_threshold_options_of_the_wrong_type_and_quiet_with_verbose(capsys):
    from hemwsl.thresholds import get_threshold

    raises_named(lambda: get_threshold("percentile", q=None), "threshold 'percentile'")
    raises_named(lambda: get_threshold("fixed", bogus=1), "threshold 'fixed'")
    with pytest.raises(SystemExit) as err:
        main(["-q", "-v", "synth", "--help"])
    assert err.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
