"""Bad inputs of the fourth robustness probe (cases named by their ids, P4-<n>): each ends in exactly one line
``hemwsl <command>: error: ...`` naming the file or argument at fault, exit status 2, no traceback, before any costly
work (or, for the resume state of a long run, the patient is made again with a warning naming the file: a long run
never loses finished work and never uses corrupt state).

Inputs are built here in ``tmp_path`` from the small phantoms of :mod:`tests.test_bad_inputs`, the fake (untrained)
train-cv run and model package of :mod:`tests.test_bad_inputs_data`, and flat heatmaps; nothing is trained.
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
from hemwsl.data.io import check_value, read_json_file, record_value
from tests import test_bad_inputs as shared
from tests import test_bad_inputs_data as runs
from tests.test_bad_inputs import _first
from tests.test_bad_inputs_data import _parser, raises_named

data = shared.data  # 4 phantoms (48 x 48 x 6) in the CT-ICH layout, and <data>/../dl.json
work = runs.work  # an empty folder that must stay empty
two_fold_run = runs.two_fold_run  # a fake 2-fold train-cv run of resnet10 at 32 x 32 on `data` (real state dicts)
model = runs.model  # a model package of that run
predictions = runs.predictions  # a valid predictions CSV of every slice of `data`

TRAIN = runs.TRAIN  # --set backbone=resnet10 spatial_size=[32,32] samples_per_epoch=8 batch_size=4 cache_workers=0
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64)


def only_line(argv: list, named: str | list[str], capsys, absent: Path | None = None) -> str:
    """``hemwsl argv`` ends with exit status 2 and exactly one stderr line ``hemwsl <command>: error: ...`` holding
    ``named``; ``absent`` (an output folder) was not made. Returns the line."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as err:
        code = err.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, f"exit {code}: {err[-3:]}"
    assert len(err) == 1, err[-5:]
    line = err[0]
    assert line.startswith(f"hemwsl {argv[0]}: error: "), line
    for n in [named] if isinstance(named, str) else named:
        assert n in line, f"{line!r} does not name {n!r}"
    if absent is not None:
        assert not absent.exists(), f"left {sorted(p.name for p in absent.rglob('*'))}"
    return line


def ok(argv: list, capsys) -> str:
    """``hemwsl argv`` succeeds; returns its stderr."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 0, err[-2000:]
    assert "Traceback" not in err
    return err


def _copy_run(run: Path, tmp_path: Path) -> Path:
    cv = tmp_path / "cvcopy"
    shutil.copytree(run, cv)
    return cv


def _edit(f: Path, fn) -> None:
    d = json.loads(f.read_text())
    fn(d)
    f.write_text(json.dumps(d))


@pytest.fixture(scope="module")
def cams(data, tmp_path_factory) -> Path:
    """Flat heatmaps gradcam/layer4/<patient>.nii.gz of every phantom, on the CT grid."""
    root = tmp_path_factory.mktemp("cams") / "cams"
    folder = root / "gradcam" / "layer4"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for f in sorted((data / "ct_scans").glob("*.nii.gz")):
        img = nib.load(str(f))
        nib.save(nib.Nifti1Image(rng.random(img.shape).astype(np.float32), img.affine), str(folder / f.name))
    return root


# --------------------------------------------------------------------------------------------- shared readers
@pytest.mark.parametrize("content, named", [
    (None, "a folder, not the thing file"),
    (b"\xff\xfe\x00binary", "corrupt thing (not UTF-8 text"),
    (b'{"a": ', "corrupt thing (not valid JSON"),
    (b"[1, 2]", "corrupt thing (a JSON object expected, got a JSON list)"),
], ids=["folder", "binary", "truncated", "list"])
def test_read_json_file_names_the_file(content, named, tmp_path):
    f = tmp_path / "x.json"
    if content is None:
        f.mkdir()
    else:
        f.write_bytes(content)
    raises_named(lambda: read_json_file(f, "thing"), f"{f}: {named}")


def test_read_json_file_symlink_loop_and_missing(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    raises_named(lambda: read_json_file(tmp_path / "a", "thing"), f"{tmp_path / 'a'}: cannot read the thing")
    raises_named(lambda: read_json_file(tmp_path / "no.json", "thing"), "thing not found")
    (tmp_path / "ok.json").write_text("[1]")
    assert read_json_file(tmp_path / "ok.json", "thing", expect=list) == [1]


def test_typed_fields_of_a_record():
    assert check_value(3.0, "folds", "int", minimum=2) == 3
    assert check_value([45, 90], "hu_range", "numbers", length=2) == [45.0, 90.0]
    raises_named(lambda: check_value(True, "folds", "int"), "folds must be an integer, got True")
    raises_named(lambda: check_value(float("nan"), "x", "number", where="f.json"), "f.json: x must be a finite number")
    raises_named(lambda: check_value("12", "hu_range", "numbers", length=2), "hu_range must be a list of 2 finite")
    raises_named(lambda: check_value("maybe", "tta", "bool"), "tta must be true or false, got 'maybe'")
    assert record_value({}, "seed", "f.json", "int", default=0) == 0
    raises_named(lambda: record_value({}, "folds", "f.json", "int"), "f.json: no 'folds' entry")
    raises_named(lambda: record_value([], "folds", "f.json", "int"), "f.json: a JSON object expected, got a JSON list")


# --------------------------------------------------------------------------------------------- train-cv
@pytest.mark.parametrize("extra, named", [
    (["epochs#x=1"], "--set epochs#x: epochs is 20, not a mapping or a list"),      # P4-01
    (["patience=-1"], "patience must be >= 1, got -1"),                             # P4-05
    (["multilabel=maybe"], "multilabel must be true or false, got 'maybe'"),       # P4-07
    (["epochs=0", "epochs=1"], "--set epochs: given more than once"),               # P4-08
    (["lse_pixel=-1"], "lse_pixel must be a number >= 0"),
], ids=["P4-01", "P4-05", "P4-07", "P4-08", "lse_pixel"])
def test_train_cv_settings_refused_before_any_file(extra, named, data, work, capsys):
    only_line(["train-cv", "--dataset-dir", data, "--out", work / "cv", "--folds", "2", *TRAIN, *extra], named,
              capsys, work / "cv")


def test_P4_14_train_cv_cache_procs_below_one(data, work, capsys):
    only_line(["train-cv", "--dataset-dir", data, "--out", work / "cv", "--folds", "2", "--cache-dir", work / "c",
               "--cache-procs", "-1", *TRAIN], "--cache-procs must be an integer >= 1", capsys, work / "cv")
    assert not (work / "c").exists()


def test_override_paths_into_lists_and_mappings_still_pass():
    from hemwsl.engines.cv import check_override_keys

    check_override_keys({"windows#0": "bone", "train#dataloader#num_workers": 0}, "ich_classifier")
    raises_named(lambda: check_override_keys({"windows#7": "bone"}, "ich_classifier"), "windows is a list of 3")
    raises_named(lambda: check_override_keys({"train#nope#x": 1}, "ich_classifier"), "train has no entry 'nope'")


@pytest.mark.parametrize("setting, value, named", [("patience", -1, "patience"), ("multilabel", "maybe", "multilabel"),
                                                   ("tta", "yes", "tta")], ids=["P4-162", "P4-163", "tta"])
def test_classifier_bundle_checks_patience_and_booleans_first(setting, value, named, tmp_path):
    """``python -m monai.bundle run`` evaluates train.yaml's first ``initialize`` expression before anything else."""
    for configs in (["train"], ["train", "multi_gpu_train"]):
        parser = _parser("ich_classifier", configs, output_dir=str(tmp_path / "o"), **{setting: value})
        raises_named(lambda: parser.get_parsed_content("initialize#0"), named)
    _parser("ich_classifier", ["train"]).get_parsed_content("initialize#0")  # the defaults pass


def _resumed_out(tmp_path: Path, name: str, content: bytes) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_bytes(content)
    return out


@pytest.mark.parametrize("name, content, named", [
    ("cv_run.json", b'{"bundle": "ich_classifier", "folds": 2,\n', "corrupt train-cv run record (not valid JSON"),  # P4-11
    ("cv_settings.json", PNG, "corrupt train-cv settings record (not UTF-8 text"),                               # P4-12
    ("cv_run.json", b"[1, 2]", "corrupt train-cv run record (a JSON object expected"),
], ids=["P4-11", "P4-12", "list"])
def test_train_cv_unreadable_record_in_out(name, content, named, data, tmp_path, capsys):
    out = _resumed_out(tmp_path, name, content)
    only_line(["train-cv", "--dataset-dir", data, "--out", out, "--folds", "2", *TRAIN], [f"{out / name}: ", named],
              capsys)


def test_P4_13_resumed_run_with_an_empty_report(data, tmp_path, capsys):
    """Every fold done (skipped), fold 1's report_test.json is {}: the summary names it."""
    from hemwsl.data.datalist import resolve_dataset_dir
    from hemwsl.engines.cv import parse_overrides

    out = tmp_path / "cv"
    settings = parse_overrides(TRAIN[1:])
    for k in range(2):
        (out / f"fold{k}").mkdir(parents=True)
        (out / f"fold{k}" / "report_test.json").write_text("{}")
    (out / "cv_run.json").write_text(json.dumps({"bundle": "ich_classifier", "folds": 2,
                                                 "dataset_dir": str(resolve_dataset_dir(data)), "settings": settings}))
    f = out / "fold0" / "report_test.json"
    only_line(["train-cv", "--dataset-dir", data, "--out", out, "--folds", "2", *TRAIN],
              [f"{f}: not the evaluation report of fold 0", "remove it to evaluate the fold again"], capsys)


# --------------------------------------------------------------------------------------------- cam-cv on edited runs
def _settings(fn):
    return ("cv_settings.json", lambda f: _edit(f, fn))


def _record(fn):
    return ("cv_run.json", lambda f: _edit(f, fn))


def _text(name: str, content: bytes | None):
    def spoil(f: Path) -> None:
        f.unlink()
        if content is None:
            f.mkdir()
        else:
            f.write_bytes(content)
    return (name, spoil)


EDITED_RUNS = {
    "P4-17": (_text("cv_settings.json", b"[1, 2]"), "corrupt train-cv settings record (a JSON object expected"),
    "P4-18": (_text("cv_settings.json", b"\xff\xfe\x00binary"), "corrupt train-cv settings record (not UTF-8"),
    "P4-19": (_text("cv_settings.json", None), "a folder, not the train-cv settings record file"),
    "P4-20": (_record(lambda d: d.update(folds="two")), "folds must be an integer >= 2, got 'two'"),
    "P4-21": (_record(lambda d: d.pop("folds")), "no 'folds' entry"),
    "P4-22": (_record(lambda d: d.update(folds=0)), "folds must be an integer >= 2, got 0"),
    "P4-23": (_record(lambda d: d.update(settings=[])), "settings must be a JSON object"),
    "P4-26": (_settings(lambda d: d.update(windows=5)), "windows must be a non-empty list"),
    "P4-27": (_settings(lambda d: d.update(backbone=5)), "backbone must be a non-empty string, got 5"),
    "P4-28": (_record(lambda d: d.update(folds=1.5)), "folds must be an integer >= 2, got 1.5"),
    "P4-99": (_settings(lambda d: d.update(network_options=[1, 2])), "network_options must be a JSON object"),
    "P4-100": (_settings(lambda d: d.update(backbone="resnet_nope")), "unknown network 'resnet_nope'"),
    "P4-110": (_settings(lambda d: d.update(layout=7)), "unknown layout 7"),
    "seed": (_record(lambda d: d["settings"].update(seed="x")), "settings: seed must be an integer >= 0"),
}


@pytest.fixture(params=sorted(EDITED_RUNS), ids=sorted(EDITED_RUNS))
def edited_run(request, two_fold_run, tmp_path):
    """A copy of the fake run with one record spoilt: (run, spoilt file, what the line must say)."""
    (name, spoil), named = EDITED_RUNS[request.param]
    cv = _copy_run(two_fold_run, tmp_path)
    spoil(cv / name)
    return cv, cv / name, named


def test_cam_cv_names_the_record_of_an_edited_run(edited_run, data, work, capsys):
    cv, f, named = edited_run
    only_line(["cam-cv", "--dataset-dir", data, "--cv-dir", cv, "--methods", "gradcam", "--layers", "layer4",
               "--out", work / "c"], [f"{f}: ", named], capsys, work / "c")


def test_package_names_the_record_of_an_edited_run(edited_run, work, capsys):  # P4-98..101, P4-110
    cv, f, named = edited_run
    only_line(["package", "--cv-dir", cv, "--out", work / "m", "--scan-call", "none"], [f"{f}: ", named], capsys,
              work / "m")


@pytest.mark.parametrize("which", ["P4-17", "P4-27", "P4-26"])
def test_self_train_and_pseudo_name_the_settings_file(which, two_fold_run, data, cams, tmp_path, work, capsys):
    """P4-66, P4-67 (self-train), P4-64 (pseudo --cv-dir)."""
    (name, spoil), named = EDITED_RUNS[which]
    cv = _copy_run(two_fold_run, tmp_path)
    spoil(cv / name)
    only_line(["self-train", "--dataset-dir", data, "--cv-dir", cv, "--benchmark-dir", tmp_path / "b", "--out",
               work / "s"], [f"{cv / name}: ", named], capsys, work / "s")
    only_line(["pseudo", "--dataset-dir", data, "--cam-dir", cams, "--layer", "layer4", "--mode", "cam",
               "--cv-dir", cv, "--out", work / "p"], [f"{cv / name}: ", named], capsys, work / "p")


def test_P4_30_cv_dir_symlink_loop(data, tmp_path, work, capsys):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    only_line(["cam-cv", "--dataset-dir", data, "--cv-dir", tmp_path / "a", "--out", work / "c"],
              [f"{tmp_path / 'a'}: a symlink loop", "--cv-dir"], capsys, work / "c")


@pytest.mark.parametrize("content, named", [(b'{"cv_dir": \n', "not valid JSON"),           # P4-24, P4-85
                                            (b'["best"]', "a JSON object expected")],        # P4-25
                         ids=["P4-24", "P4-25"])
def test_unreadable_checkpoint_marker_in_out(content, named, two_fold_run, data, cams, tmp_path, capsys):
    out = _resumed_out(tmp_path, "cam_checkpoint.json", content)
    f = out / "cam_checkpoint.json"
    only_line(["cam-cv", "--dataset-dir", data, "--cv-dir", two_fold_run, "--methods", "gradcam", "--out", out],
              [f"{f}: corrupt record of the run that made the heatmaps", named], capsys)
    only_line(["ablation", "--dataset-dir", data, "--cv-dir", two_fold_run, "--cam-dir", cams, "--layer", "layer4",
               "--rows", "cam", "--out", out], [f"{f}: corrupt record of the run that made the pseudo-labels", named],
              capsys)
    assert sorted(p.name for p in out.iterdir()) == ["cam_checkpoint.json"]


def test_P4_40_marker_of_another_run_with_a_word_for_folds(two_fold_run, cams, tmp_path):
    from hemwsl.commands.benchmark import check_made_from_run

    heat = tmp_path / "heat"
    shutil.copytree(cams, heat)
    (heat / "cam_checkpoint.json").write_text(json.dumps({"cv_dir": "/elsewhere/run", "checkpoint": "best", "settings": {
        "backbone": "resnet10", "spatial_size": [32, 32], "folds": "two"}}))
    raises_named(lambda: check_made_from_run(heat, two_fold_run),
                 f"{heat / 'cam_checkpoint.json'}: settings: folds must be an integer >= 2, got 'two'")
    _edit(heat / "cam_checkpoint.json", lambda d: d["settings"].update(folds=2, windows=5))
    raises_named(lambda: check_made_from_run(heat, two_fold_run), "settings: windows must be a non-empty list")


# --------------------------------------------------------------------------------------------- option given twice
@pytest.mark.parametrize("command", ["benchmark", "pseudo", "quantify"])
def test_P4_47_hu_reference_given_twice(command, data, work, capsys):
    argv = {"benchmark": ["benchmark", "--dataset-dir", data, "--cam-dir", work, "--out", work / "b"],
            "pseudo": ["pseudo", "--dataset-dir", data, "--cam-dir", work, "--out", work / "b"],
            "quantify": ["quantify", "--dataset-dir", data, "--masks", work, "--predictions", work / "p.csv",
                         "--out", work / "b"]}[command]
    only_line([*argv, "--hu-reference", "37", "--hu-reference", "40"],
              "argument --hu-reference: given more than once ([37.0], then [40.0])", capsys, work / "b")


# --------------------------------------------------------------------------------------------- benchmark
def _bench(data, cams, out, *extra) -> list:
    return ["benchmark", "--dataset-dir", data, "--cam-dir", cams, "--out", out, "--folds", "2", "--thresholds",
            "search", "prior", "--n-boot", "10", "--no-figures", *extra]


def test_P4_39_resumed_benchmark_with_a_truncated_config(data, cams, tmp_path, capsys):
    out = _resumed_out(tmp_path, "config.json", b'{"cam_dir": \n')
    only_line(_bench(data, cams, out), f"{out / 'config.json'}: corrupt benchmark settings record (not valid JSON",
              capsys)


@pytest.mark.parametrize("content", [PNG, b""], ids=["P4-41", "P4-42"])
def test_unreadable_heatmap_named_before_the_first_score(content, data, cams, tmp_path, work, capsys):
    """One line, no progress bar before it: every heatmap's header is read before the first patient is scored."""
    heat = tmp_path / "heat"
    shutil.copytree(cams, heat)
    bad = sorted((heat / "gradcam" / "layer4").glob("*.nii.gz"))[-1]
    bad.write_bytes(content)
    only_line(_bench(data, heat, work / "b"), f"{bad}: cannot read as NIfTI", capsys, work / "b")


@pytest.fixture(scope="module")
def bench_done(data, cams, tmp_path_factory) -> Path:
    """A finished benchmark report of the flat heatmaps (search and prior thresholds, 2 folds)."""
    out = tmp_path_factory.mktemp("bench") / "bench"
    assert main([str(a) for a in _bench(data, cams, out)]) == 0
    return out


def _word_for_dice(f: Path) -> None:
    import csv

    with open(f, newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows[0]["dice"] = "abc"
    with open(f, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


@pytest.mark.parametrize("spoil, warned", [
    (lambda b, p: (b / "selection" / f"{p}.npz").write_bytes(b""), "unreadable threshold-search statistics"),  # 155
    (lambda b, p: _word_for_dice(b / "per_case" / f"{p}.csv"), "column 'dice' holds 'abc', not a number"),     # 156
    (lambda b, p: (b / "per_case" / f"{p}.csv").write_text(
        (b / "per_case" / f"{p}.csv").read_text().splitlines()[0] + "\n"), "no rows"),                         # 157
], ids=["P4-155", "P4-156", "P4-157"])
def test_resumed_benchmark_remakes_a_corrupt_patient(spoil, warned, bench_done, data, cams, tmp_path, capsys):
    out = tmp_path / "bench"
    shutil.copytree(bench_done, out)
    patient = sorted(p.stem for p in (out / "per_case").glob("*.csv"))[0]
    spoil(out, patient)
    err = ok(_bench(data, cams, out), capsys)
    assert warned in err and patient in err, err[-1500:]
    assert (out / "per_case.csv").read_text() == (bench_done / "per_case.csv").read_text()
    assert (out / "choices.csv").read_text() == (bench_done / "choices.csv").read_text()


def test_benchmark_rows_reader_names_file_and_line(tmp_path):
    from hemwsl.benchmark.summary import read_rows

    f = tmp_path / "per_case.csv"
    f.write_text("level,patient,fold,dice\nslice,001,0,0.5\nslice,001,0,abc\n")
    raises_named(lambda: read_rows(f), f"{f}: line 3: column 'dice' holds 'abc', not a number")


# --------------------------------------------------------------------------------------------- pseudo
def _pseudo(data, cams, predictions, out, *extra) -> list:
    return ["pseudo", "--dataset-dir", data, "--cam-dir", cams, "--method", "gradcam", "--layer", "layer4",
            "--mode", "cam", "--predictions-csv", predictions, "--spatial-size", "32", "32", "--no-progress",
            "--out", out, *extra]


@pytest.mark.parametrize("content, named", [
    (b'{"cam_dir": "x",\n', "corrupt pseudo-label settings record (not valid JSON"),   # P4-51
    (b"[1, 2]", "corrupt pseudo-label settings record (a JSON object expected"),      # P4-52
    (None, "a folder, not the pseudo-label settings record file"),                    # P4-53
], ids=["P4-51", "P4-52", "P4-53"])
def test_pseudo_unreadable_params_record(content, named, data, cams, predictions, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    f = out / "pseudo_params.json"
    if content is None:
        f.mkdir()
    else:
        f.write_bytes(content)
    only_line(_pseudo(data, cams, predictions, out), f"{f}: {named}", capsys)


@pytest.mark.parametrize("text, warned", [("garbage{", "not valid JSON"),                  # P4-54
                                          ('{"spacing": [1, 1, 5]}', "no 'voxels' entry"),   # P4-55
                                          ('{"voxels": [1, "x"], "spacing": [1, 1, 5]}', "voxels must be counts")],
                         ids=["P4-54", "P4-55", "voxels-word"])
def test_pseudo_remakes_a_volume_with_a_corrupt_done_record(text, warned, data, cams, predictions, tmp_path, capsys):
    out = tmp_path / "out"
    ok(_pseudo(data, cams, predictions, out), capsys)
    done = sorted((out / ".done").glob("*.json"))[0]
    before = json.loads(done.read_text())
    done.write_text(text)
    err = ok(_pseudo(data, cams, predictions, out), capsys)
    assert f"{done}" in err and warned in err, err[-1500:]
    assert json.loads(done.read_text()) == before


@pytest.mark.parametrize("extra, named", [
    (["--prob-threshold", "f1_max", "--val-report", "DIR"], "--val-report DIR: a folder"),                   # P4-56
    (["--batch-size", "0"], "--batch-size must be >= 1"),                                                     # P4-58
    (["--device", "bogus"], "--device 'bogus': not a torch device"),                                          # P4-59
    (["--threshold-strategy", "percentile", "--threshold", "150"], "--threshold 150: the percentile"),       # P4-61
], ids=["P4-56", "P4-58", "P4-59", "P4-61"])
def test_pseudo_options(extra, named, data, cams, predictions, two_fold_run, tmp_path, work, capsys):
    folder = tmp_path / "report_val.json"
    folder.mkdir()
    extra = [str(folder) if a == "DIR" else a for a in extra]
    only_line(_pseudo(data, cams, predictions, work / "p", "--checkpoint", two_fold_run / "fold0" / "models" /
                      "model.pt", "--backbone", "resnet10", *extra), named.replace("DIR", str(folder)), capsys,
              work / "p")


def test_P4_63_unreadable_heatmap_named_before_any_volume(data, cams, predictions, tmp_path, work, capsys):
    heat = tmp_path / "heat"
    shutil.copytree(cams, heat)
    bad = sorted((heat / "gradcam" / "layer4").glob("*.nii.gz"))[-1]
    bad.write_bytes(PNG)
    only_line(_pseudo(data, heat, predictions, work / "p"), f"{bad}: cannot read as NIfTI", capsys, work / "p")


# --------------------------------------------------------------------------------------------- self-train
def _lse_run(two_fold_run: Path, tmp_path: Path) -> Path:
    cv = _copy_run(two_fold_run, tmp_path)
    (cv / "cv_settings.json").write_text(json.dumps({"backbone": "lse_resnet10", "spatial_size": [32, 32]}))
    _edit(cv / "cv_run.json", lambda d: d.update(settings={"backbone": "lse_resnet10", "spatial_size": [32, 32]}))
    return cv


def _lse_benchmark(folder: Path, header: str = "fold,method,layer,threshold,selection_dice") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "choices.csv").write_text(f"{header}\n0,lse_heatmap,levels.0,fixed:0.5,0.1\n"
                                        "1,lse_heatmap,levels.0,fixed:0.5,0.1\n")
    (folder / "thresholds.csv").write_text("fold,method,layer,threshold,value\n")
    (folder / "config.json").write_text(json.dumps({"hu_range": [50, 90], "brain_erosion": 0, "min_size": 0,
                                                    "prob_threshold": 0.5}))
    return folder


@pytest.mark.parametrize("extra, header, named", [
    (["--set", "epochs=0"], None, "epochs must be >= 1, got 0"),                                 # P4-69 (caught early)
    (["--pixel-weight", "inf"], None, "--pixel-weight must be > 0 and finite"),            # P4-70
    ([], "fold,meth,layer,threshold,selection_dice", "no column(s) method"),                     # P4-68
], ids=["P4-69", "P4-70", "P4-68"])
def test_self_train_checks_before_any_heatmap(extra, header, named, two_fold_run, data, tmp_path, work, capsys):
    cv = _lse_run(two_fold_run, tmp_path)
    b = _lse_benchmark(tmp_path / "b", *([header] if header else []))
    line = only_line(["self-train", "--dataset-dir", data, "--cv-dir", cv, "--benchmark-dir", b, "--out", work / "s",
                      *extra], named, capsys, work / "s")
    if header:
        assert str(b / "choices.csv") in line


# --------------------------------------------------------------------------------------------- trust
def _trust(data, ckpt, out, *extra) -> list:
    return ["trust", "--dataset-dir", data, "--model", ckpt, "--backbone", "resnet10", "--spatial-size", "32", "32",
            "--methods", "gradcam", "--max-slices", "1", "--subsets", "2", "--steps", "0", "--out", out, *extra]


@pytest.mark.parametrize("extra, model, named", [
    (["--threads", "-1"], None, "--threads must be >= 0"),                                   # P4-71
    (["--device", "bogus"], None, "--device 'bogus': not a torch device"),                   # P4-72
    (["--folds", "2"], "fold{fold}/models/{kind}.pt", "found {kind}"),                       # P4-73
    (["--batch-size", "0"], None, "--batch-size must be >= 1"),                              # P4-74
    (["--perturbation-batch", "0"], None, "--perturbation-batch must be >= 1"),              # P4-75
], ids=["P4-71", "P4-72", "P4-73", "P4-74", "P4-75"])
def test_trust_options(extra, model, named, two_fold_run, data, work, capsys):
    ckpt = two_fold_run / (model or "fold0/models/model.pt")
    only_line(_trust(data, ckpt, work / "t", *extra), named, capsys, work / "t")


def test_P4_79_binary_trust_run_record(two_fold_run, data, tmp_path, capsys):
    out = _resumed_out(tmp_path, "trust_run.json", b"\xff\xfe\x00")
    only_line(_trust(data, two_fold_run / "fold0" / "models" / "model.pt", out),
              [f"{out / 'trust_run.json'}: corrupt run record (not UTF-8 text", "use another folder"], capsys)


@pytest.mark.parametrize("text, warned", [("[]", "a JSON object expected"),                      # P4-158
                                          (None, "'rows' (a list of objects)")],                 # P4-159
                         ids=["P4-158", "P4-159"])
def test_resumed_trust_remakes_a_corrupt_patient(text, warned, two_fold_run, data, tmp_path, capsys, one_torch_thread):
    from hemwsl.data.datalist import build_datalist

    out = tmp_path / "t"
    patient = next(e["patient"] for e in build_datalist("ct-ich", data) if any(e["slice_labels"]))  # one explained
    argv = _trust(data, two_fold_run / "fold0" / "models" / "model.pt", out, "--patients", patient)
    ok(argv, capsys)
    f = out / "per_case" / f"{patient}.json"
    before = json.loads(f.read_text())
    if text is None:
        _edit(f, lambda d: d.pop("rows"))
    else:
        f.write_text(text)
    err = ok(argv, capsys)
    assert str(f) in err and warned in err, err[-1500:]
    assert json.loads(f.read_text())["rows"] == before["rows"]


def test_trust_summary_names_a_corrupt_per_case_file(tmp_path):
    from hemwsl.trust.report import read_rows

    (tmp_path / "per_case").mkdir()
    f = tmp_path / "per_case" / "001.json"
    f.write_text('{"patient": "001", "info": {}}')
    raises_named(lambda: read_rows(tmp_path), f"{f}: corrupt per-case trust result")


# --------------------------------------------------------------------------------------------- ablation
def _prior_benchmark(folder: Path, rows: list[str], config: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "choices.csv").write_text("\n".join(["fold,method,layer,threshold,selection_dice", *rows]) + "\n")
    (folder / "thresholds.csv").write_text("fold,method,layer,threshold,value\n")
    (folder / "config.json").write_text(config if config is not None else json.dumps({"hu_range": [50, 90]}))
    return folder


PRIOR = ["0,-,-,prior,0.1", "1,-,-,prior,0.1"]


@pytest.mark.parametrize("rows, config, file, named", [
    (PRIOR, None, "choices.csv", "no column(s) fold"),                                                     # P4-81
    (["x,-,-,prior,0.1", PRIOR[1]], None, "choices.csv", "line 2: fold 'x' is not a number"),              # P4-82
    (["0,-,-,prior+bogus,0.1", PRIOR[1]], None, "choices.csv", "line 2: unknown threshold 'prior+bogus'"),  # P4-83
    (PRIOR, "not json", "config.json", "corrupt benchmark config (not valid JSON"),                        # P4-84
    (PRIOR, json.dumps({"hu_reference": "abc"}), "config.json", "hu_reference must be a number of HU"),    # P4-154
], ids=["P4-81", "P4-82", "P4-83", "P4-84", "P4-154"])
def test_ablation_names_the_benchmark_file_before_any_output(rows, config, file, named, two_fold_run, data, cams,
                                                             tmp_path, work, capsys):
    b = _prior_benchmark(tmp_path / "b", rows, config)
    if "column(s) fold" in named:  # P4-81: the header lacks 'fold'
        (b / "choices.csv").write_text((b / "choices.csv").read_text().replace("fold,", "fold_id,", 1))
    only_line(["ablation", "--dataset-dir", data, "--cv-dir", two_fold_run, "--cam-dir", cams, "--layer", "layer4",
               "--rows", "prior", "--benchmark-dir", b, "--out", work / "a"], [f"{b / file}: ", named], capsys,
              work / "a")


def test_P4_88_ablation_heatmap_row_without_a_method_column(two_fold_run, data, cams, tmp_path, work, capsys):
    b = _prior_benchmark(tmp_path / "b", ["0,gradcam,layer4,fixed:0.5,0.1", "1,gradcam,layer4,fixed:0.5,0.1"])
    (b / "choices.csv").write_text((b / "choices.csv").read_text().replace("method", "meth", 1))
    only_line(["ablation", "--dataset-dir", data, "--cv-dir", two_fold_run, "--cam-dir", cams, "--layer", "layer4",
               "--rows", "heatmap", "--benchmark-dir", b, "--out", work / "a"],
              [f"{b / 'choices.csv'}: ", "no column(s) method"], capsys, work / "a")


def test_P4_87_ablation_unet_setting_checked_before_pseudo_labels(two_fold_run, data, cams, work, capsys):
    only_line(["ablation", "--dataset-dir", data, "--cv-dir", two_fold_run, "--cam-dir", cams, "--layer", "layer4",
               "--rows", "cam", "--set", "epochs=abc", "--out", work / "a"], "epochs must be an integer", capsys,
              work / "a")


# --------------------------------------------------------------------------------------------- quantify
def _quantify(data, masks, out, *extra) -> list:
    return ["quantify", "--dataset-dir", data, "--masks", masks, "--out", out, "--no-figures", "--n-boot", "10", *extra]


def test_P4_90_a_mask_that_is_a_folder(data, predictions, tmp_path, work, capsys):
    masks = tmp_path / "masks"
    shutil.copytree(data / "masks", masks)
    bad = sorted(masks.glob("*.nii.gz"))[0]
    bad.unlink()
    bad.mkdir()
    only_line(_quantify(data, masks, work / "q", "--predictions", predictions, "--folds", "2"),
              f"{bad}: not a mask file (a folder)", capsys, work / "q")


def test_P4_93_predictions_with_a_repeated_column(data, predictions, tmp_path, work, capsys):
    lines = predictions.read_text().splitlines()
    dup = tmp_path / "dup.csv"
    dup.write_text("\n".join([lines[0] + ",prob_any", *(r + ",0.999" for r in lines[1:])]) + "\n")
    only_line(_quantify(data, data / "masks", work / "q", "--predictions", dup, "--folds", "2"),
              f"{dup}: column(s) prob_any given more than once", capsys, work / "q")


def test_P4_94_quantify_names_a_fractional_fold_count(two_fold_run, data, tmp_path, work, capsys):
    cv = _copy_run(two_fold_run, tmp_path)
    _edit(cv / "cv_run.json", lambda d: d.update(folds=1.5))
    only_line(_quantify(data, data / "masks", work / "q", "--cv-dir", cv),
              f"{cv / 'cv_run.json'}: folds must be an integer >= 2, got 1.5", capsys, work / "q")


# --------------------------------------------------------------------------------------------- package
def test_P4_92_labels_that_are_not_binary(two_fold_run, tmp_path, work, capsys):
    cv = _copy_run(two_fold_run, tmp_path)
    f = cv / "fold1" / "predictions_test.csv"
    lines = f.read_text().splitlines()
    i = next(i for i, r in enumerate(lines) if r.split(",")[2] == "1")
    row = lines[i].split(",")
    row[2] = "2"
    lines[i] = ",".join(row)
    f.write_text("\n".join(lines) + "\n")
    only_line(["package", "--cv-dir", cv, "--folds", "0", "--scan-call", "select", "--out", work / "m"],
              f"{f}: line {i + 1}: labels must be 0 or 1, got label_any 2", capsys, work / "m")


@pytest.mark.parametrize("content, named", [
    (b"", "cannot read checkpoint (a truncated or corrupt PyTorch weights file)"),   # P4-96
    (PNG, "cannot read checkpoint (not a PyTorch weights file)"),                   # P4-108
    ("resnet18", "checkpoint does not match the network ResNet"),                    # P4-97 (another network's weights)
], ids=["P4-96", "P4-108", "P4-97"])
def test_package_weights_checked_before_any_output(content, named, two_fold_run, tmp_path, work, capsys):
    cv = _copy_run(two_fold_run, tmp_path)
    ckpt = cv / "fold0" / "models" / "model.pt"
    if isinstance(content, bytes):
        ckpt.write_bytes(content)
    else:
        from hemwsl.networks import build_network

        torch.save(build_network(content, in_channels=9).state_dict(), ckpt)
    only_line(["package", "--cv-dir", cv, "--folds", "0", "--scan-call", "none", "--out", work / "m"],
              f"{ckpt}: {named}", capsys, work / "m")


@pytest.mark.parametrize("config, named", [
    ({"hu_range": "12"}, "hu_range must be a list of 2 finite numbers, got '12'"),   # P4-105
    ({"brain_erosion": 2.7}, "brain_erosion must be an integer >= 0, got 2.7"),      # P4-106
], ids=["P4-105", "P4-106"])
def test_package_benchmark_config_values_not_coerced(config, named, two_fold_run, tmp_path, work, capsys):
    b = tmp_path / "b"
    b.mkdir()
    (b / "choices.csv").write_text("fold,method,layer,threshold,selection_dice\n0,gradcam,layer4,fixed:0.7,0.07\n"
                                   "1,gradcam,layer2,fixed:0.7,0.05\n")
    (b / "thresholds.csv").write_text("fold,method,layer,threshold,value\n")
    (b / "config.json").write_text(json.dumps({"hu_range": [50, 90], "brain_erosion": 4, "min_size": 50, "grow": 0,
                                               "prob_threshold": 0.5, **config}))
    only_line(["package", "--cv-dir", two_fold_run, "--benchmark-dir", b, "--scan-call", "none", "--out", work / "m"],
              [f"{b / 'config.json'}: corrupt benchmark config", named], capsys, work / "m")


def test_P4_107_package_folds_without_a_value(two_fold_run, work, capsys):
    only_line(["package", "--cv-dir", two_fold_run, "--folds", "--out", work / "m"], "--folds: give the fold numbers",
              capsys, work / "m")


# --------------------------------------------------------------------------------------------- predict: edited package
EDITED_PACKAGES = {
    "P4-111": (lambda m: m.update(format="one"), "format must be an integer >= 0, got 'one'"),
    "P4-112": (lambda m: m.update(format=None), "format must be an integer >= 0, got None"),
    "P4-113": (lambda m: m["settings"].pop("backbone"), "settings: no 'backbone' entry"),
    "P4-114": (lambda m: m["settings"].update(in_channels="nine"), "settings: in_channels must be an integer >= 1"),
    "P4-115": (lambda m: m["settings"].update(windows=["brain", "nope"]), "settings: unknown windows[1] 'nope'"),
    "P4-116": (lambda m: m["settings"].update(spatial_size=[0, 0]), "settings: spatial_size must be a list of 2"),
    "P4-117": (lambda m: m["recipe"].update(hu_range=[float("nan"), float("nan")]), "recipe hu_range must be"),
    "P4-118": (lambda m: m["members"][0].update(weights="../../elsewhere/model.pt"),
               "member fold0: weights must be a file inside the package folder"),
    "P4-120": (lambda m: m["settings"].update(num_classes=0), "settings: num_classes must be an integer >= 1"),
    "P4-123": (lambda m: m["members"][0].update(cam_threshold="high"), "member fold0: cam_threshold must be a number"),
    "P4-126": (lambda m: m["members"][0].update(cam_threshold=float("nan")), "member fold0: cam_threshold must be"),
}


@pytest.mark.parametrize("case", sorted(EDITED_PACKAGES), ids=sorted(EDITED_PACKAGES))
def test_predict_names_the_edited_package_description(case, model, data, work, capsys):
    from hemwsl.predict import MODEL_FILE, ModelPackage

    edit, named = EDITED_PACKAGES[case]
    f = model / MODEL_FILE
    _edit(f, edit)
    raises_named(lambda: ModelPackage.load(model), f"{f}: corrupt model description (")
    only_line(["predict", "--model", model, "--no-figures", "--input", _first(data), "--out", work / "p"],
              [f"{f}: corrupt model description (", named], capsys, work / "p")


def test_a_sound_package_still_loads_and_predicts(model, data, work, capsys):
    ok(["predict", "--model", model, "--no-figures", "--input", _first(data), "--out", work / "p"], capsys)


# --------------------------------------------------------------------------------------------- output paths
def test_P4_145_out_below_a_symlink_loop(tmp_path, capsys):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    only_line(["synth", "--out", tmp_path / "a" / "x", "--patients", "2", "--size", "32", "--slices", "4"],
              f"{tmp_path / 'a'}", capsys)
    only_line(["demo", "--out", tmp_path / "a" / "x", "--size", "32"], "Too many levels of symbolic links", capsys)


def test_P4_141_an_os_error_with_a_file_name_is_one_line(monkeypatch, work, capsys):
    """A folder that cannot be made (``/proc/x``): any ``OSError`` naming its file is one line."""
    import errno

    import hemwsl.commands.data as data_command

    def refuse(args):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/proc/hemwsl_demo")

    monkeypatch.setattr(data_command, "run_synth", refuse)
    only_line(["synth", "--out", work / "s"], "/proc/hemwsl_demo: No such file or directory", capsys)
