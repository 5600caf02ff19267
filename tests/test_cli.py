from __future__ import annotations

import json

import pytest

from hemwsl.cli import COMMANDS, main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_synth_datalist_split(tmp_path, capsys):
    root = tmp_path / "syn"
    assert main(["synth", "--out", str(root), "--patients", "5", "--size", "48", "--slices", "8"]) == 0
    dl = tmp_path / "dl.json"
    assert main(["datalist", "--layout", "ct-ich", "--root", str(root), "--out", str(dl)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    entries = json.loads(dl.read_text())
    n_pos = sum(sum(e["slice_labels"]) for e in entries)
    assert line == f"patients=5 slices=40 positive_slices={n_pos}"
    sp = tmp_path / "split.json"
    assert main(["split", "--datalist", str(dl), "--out", str(sp), "--fractions", "0.6", "0.2", "0.2"]) == 0
    split = json.loads(sp.read_text())
    assert sorted(sum(split.values(), [])) == sorted(e["patient"] for e in entries)


def test_errors_name_the_problem(tmp_path, capsys):
    assert main(["datalist", "--layout", "nope", "--root", str(tmp_path), "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert "unknown layout 'nope'" in err and "ct-ich" in err
    assert main(["datalist", "--layout", "ct-ich", "--root", str(tmp_path / "missing"), "--out", "x.json"]) == 2
    assert "missing" in capsys.readouterr().err


def test_demo_runs_end_to_end(tmp_path, capsys):
    """The README's main job, at tiny settings: data -> classifier -> evaluation -> CAM -> localisation."""
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--patients", "8", "--size", "48", "--epochs", "1"]) == 0
    text = capsys.readouterr().out
    for k in range(1, 10):
        assert f"[{k}/9]" in text
    assert "| gradcam |" in text and "| lse_heatmap |" in text and "Dice per slice" in text
    assert (out / "ich_lse" / "fold0" / "report_test.json").is_file()
    assert (out / "ich_classifier" / "fold0" / "cam" / "lse_heatmap" / "levels.0.conv").is_dir()
    assert (out / "benchmark" / "summary.md").is_file() and (out / "benchmark" / "per_case.csv").is_file()
    assert "| CAM + K-means + U-Net |" in text and (out / "ablation.md").is_file()
    assert (out / "ich_unet3d" / "fold0" / "metrics_test.csv").is_file()
    # step 9: the packed heatmap network on one held-out scan, NIfTI and DICOM (with its DICOM SEG)
    assert (out / "model" / "hemwsl_model.json").is_file()
    scans = sorted(p.name for p in (out / "predict").iterdir())
    assert len(scans) == 2 and scans[1] == scans[0] + "_dicom" and (out / "predict" / scans[1] / "seg.dcm").is_file()
    assert (out / "predict" / scans[0] / "heatmap.nii.gz").is_file() and "mL (true" in text
    fold = out / "ich_classifier" / "fold0"
    assert (fold / "report_test.json").is_file() and (fold / "cam" / "gradcam" / "layer4").is_dir()
    # a second run resumes: nothing is retrained
    mtime = (fold / "models" / "model.pt").stat().st_mtime_ns
    assert main(["demo", "--out", str(out), "--patients", "8", "--size", "48", "--epochs", "1"]) == 0
    assert (fold / "models" / "model.pt").stat().st_mtime_ns == mtime


def test_resumed_runs_with_other_settings_are_refused(tmp_path, synthetic_root, capsys):
    """train-cv and cam-cv never mix two recipes in one folder: a rerun that differs is one line, exit 2."""
    out = tmp_path / "cv"
    out.mkdir()
    record = {"bundle": "ich_classifier", "folds": 2, "dataset_dir": str(synthetic_root.resolve()),
              "settings": {"backbone": "resnet10"}}
    (out / "cv_run.json").write_text(json.dumps(record))
    for extra, what in ((["--folds", "3", "--set", "backbone=resnet10"], "folds 2 -> 3"),
                        (["--folds", "2", "--set", "backbone=resnet18"], 'settings.backbone "resnet10" -> "resnet18"'),
                        (["--folds", "2", "--set", "backbone=resnet10", "epochs=3"], "settings.epochs <unset>")):
        assert main(["train-cv", "--dataset-dir", str(synthetic_root), "--out", str(out)] + extra) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "other settings" in err and what.replace("<unset>", '"<unset>"') in err, err
    assert json.loads((out / "cv_run.json").read_text()) == record  # not overwritten
    # cam-cv: heatmaps of another train-cv run, or of other input settings, are refused
    for k in range(2):
        (out / f"fold{k}" / "models").mkdir(parents=True)
        (out / f"fold{k}" / "models" / "model.pt").write_bytes(b"")
    cams = tmp_path / "cams"
    cams.mkdir()
    (cams / "cam_checkpoint.json").write_text(json.dumps({"cv_dir": str(out.resolve()), "checkpoint": "best",
                                                          "settings": {"grid": "ct", "folds": 2}}))
    argv = ["cam-cv", "--dataset-dir", str(synthetic_root), "--cv-dir", str(out), "--out", str(cams), "--folds", "2"]
    assert main(argv + ["--grid", "input"]) == 2
    err = capsys.readouterr().err
    assert "another run" in err and 'grid "ct" -> "input"' in err and len(err.strip().splitlines()) == 1
    (cams / "cam_checkpoint.json").write_text(json.dumps({"cv_dir": str(tmp_path.resolve()), "checkpoint": "best"}))
    assert main(argv) == 2
    assert "another run (cv_dir" in capsys.readouterr().err


def test_later_commands_take_the_folds_of_the_train_cv_run(tmp_path, capsys):
    from hemwsl.commands.benchmark import resolve_cv_folds
    from hemwsl.errors import HemwslInputError

    (tmp_path / "cv_run.json").write_text(json.dumps({"folds": 3, "settings": {"seed": 7}}))
    assert resolve_cv_folds(tmp_path) == (3, 7, 0.15)
    assert resolve_cv_folds(tmp_path, 3, 7, 0.15) == (3, 7, 0.15)
    with pytest.raises(HemwslInputError, match="used folds = 3, not 5"):
        resolve_cv_folds(tmp_path, 5)
    assert resolve_cv_folds(tmp_path / "none") == (5, 0, 0.15)
    assert resolve_cv_folds(None, 4, 1, 0.2) == (4, 1, 0.2)


def test_pseudo_and_trust_take_the_classifier_settings_of_the_run(tmp_path, capsys):
    import argparse

    from hemwsl.commands.benchmark import apply_run_settings
    from hemwsl.errors import HemwslInputError

    cv = tmp_path / "cv"
    cv.mkdir()
    (cv / "cv_settings.json").write_text(json.dumps({"backbone": "resnet10", "spatial_size": [64, 64],
                                                     "skull_strip": True, "multilabel": True}))
    (cv / "cv_run.json").write_text(json.dumps({"folds": 4, "settings": {}}))
    blank = dict(backbone=None, windows=None, num_slices=None, spatial_size=None, skull_strip=None, num_classes=None,
                 folds=None, fold_seed=None, val_fraction=None)
    args = argparse.Namespace(cv_dir=str(cv), **blank)
    apply_run_settings(args)
    assert (args.backbone, args.spatial_size, args.skull_strip, args.num_classes, args.folds) == \
        ("resnet10", [64, 64], True, 6, 4)
    assert args.windows == ["brain", "subdural", "blood"] and args.num_slices == 3  # the bundle's own defaults
    with pytest.raises(HemwslInputError, match="--spatial-size \\[128, 128\\] contradicts the train-cv run"):
        apply_run_settings(argparse.Namespace(cv_dir=str(cv), **{**blank, "spatial_size": [128, 128]}))
    args = argparse.Namespace(cv_dir=None, **blank)
    apply_run_settings(args)  # no run: the documented defaults
    assert (args.backbone, args.spatial_size, args.skull_strip, args.folds) == ("resnet18", [256, 256], False, 5)
    # through the command line: one line
    assert main(["trust", "--dataset-dir", str(tmp_path), "--out", str(tmp_path / "t"), "--model", "x.pt",
                 "--cv-dir", str(cv), "--backbone", "resnet50"]) == 2
    assert "--backbone 'resnet50' contradicts the train-cv run" in capsys.readouterr().err


def test_misspelt_set_key_names_the_closest_setting(tmp_path, capsys):
    assert main(["train-cv", "--dataset-dir", str(tmp_path), "--out", str(tmp_path / "cv"),
                 "--set", "learning_rat=5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("--set learning_rat: not a setting of bundle ich_classifier; did you mean learning_rate?"), err
    assert not (tmp_path / "cv").exists()


def test_split_does_not_overwrite_an_unrelated_file_and_n_boot_is_checked(tmp_path, capsys):
    root = tmp_path / "syn"
    assert main(["synth", "--out", str(root), "--patients", "4", "--size", "48", "--slices", "6"]) == 0
    dl = tmp_path / "dl.json"
    assert main(["datalist", "--layout", "ct-ich", "--root", str(root), "--out", str(dl)]) == 0
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    assert main(["split", "--datalist", str(dl), "--out", str(notes)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err and notes.read_text() == "my notes"
    assert main(["benchmark", "--dataset-dir", str(root), "--cam-dir", str(tmp_path), "--out", str(tmp_path / "b"),
                 "--n-boot", "0"]) == 2
    assert "--n-boot must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("setting, named", [
    ("backbone=foo", "unknown network 'foo'"),
    ("num_slices=2", "num_slices must be a positive odd number, got 2"),
    ("spatial_size=[0,0]", "spatial_size must be two ints >= 8"),
    ('windows=["nope"]', "unknown windows[0] 'nope'"),
])
def test_errors_inside_bundle_components_are_one_line_and_leave_no_run(tmp_path, synthetic_root, capsys, setting, named):
    """MONAI wraps what a bundle component raises in RuntimeError("Failed to instantiate ..."); the command
    still prints the named problem on one line, exits 2 and removes the run folder it had started."""
    out = tmp_path / "cv"
    assert main(["train-cv", "--dataset-dir", str(synthetic_root), "--out", str(out), "--folds", "2",
                 "--set", setting, "epochs=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("hemwsl train-cv: error: ") and named in err[-1], err[-1]
    text = "\n".join(err)  # the only tracebacks allowed: Python's "--- Logging error ---" reports of a log
    # handler that an earlier in-process test left bound to its closed captured stream
    assert text.count("Traceback (most recent call last)") == text.count("--- Logging error ---"), text[-2000:]
    assert not out.exists()
    out.mkdir()
    (out / "mine.txt").write_text("kept")
    assert main(["train-cv", "--dataset-dir", str(synthetic_root), "--out", str(out), "--folds", "2",
                 "--set", setting, "epochs=1"]) == 2
    assert [p.name for p in out.iterdir()] == ["mine.txt"]  # what was there before stays, nothing else


def test_input_error_message_follows_the_exception_chain():
    from hemwsl.errors import HemwslInputError, input_error_message

    try:
        try:
            raise HemwslInputError("bad\n  thing")
        except HemwslInputError as inner:
            raise RuntimeError("Failed to instantiate component") from inner
    except RuntimeError as err:
        assert input_error_message(err) == "bad thing"
    assert input_error_message(RuntimeError("other")) is None


def test_monai_bundle_run_ends_with_the_named_problem(tmp_path, synthetic_root):
    """`python -m monai.bundle run` on a hemwsl bundle: the last line names the problem, not MONAI's wrapper."""
    import subprocess
    import sys
    from pathlib import Path

    bundle = Path(__file__).resolve().parents[1] / "bundles" / "ich_classifier"
    proc = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file",
                           str(bundle / "configs" / "train.yaml"), "--bundle_root", str(bundle), "--dataset_dir",
                           str(synthetic_root), "--output_dir", str(tmp_path / "out"), "--backbone", "foo"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("hemwsl: error: unknown network 'foo'"), proc.stderr[-500:]


def test_bad_volumes_and_missing_gate_are_found_before_any_training(tmp_path, capsys):
    """A NaN volume stops train-cv before fold 0 trains; a missing --gate-cv-dir stops seg-cv before the U-Net."""
    import nibabel as nib
    import numpy as np

    root = tmp_path / "syn"
    assert main(["synth", "--out", str(root), "--patients", "4", "--size", "48", "--slices", "6"]) == 0
    ct = sorted((root / "ct_scans").glob("*.nii*"))[1]
    img = nib.load(str(ct))
    arr = np.asarray(img.dataobj, dtype=np.float32)
    arr[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(arr, img.affine), str(ct))
    out = tmp_path / "cv"
    assert main(["train-cv", "--dataset-dir", str(root), "--out", str(out), "--folds", "2", "--set", "epochs=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"{ct}: 1 NaN/inf voxel(s) in the image"), err
    assert not out.exists()
    assert main(["seg-cv", "--dataset-dir", str(root), "--out", str(tmp_path / "seg"), "--folds", "2",
                 "--gate-cv-dir", str(tmp_path / "nothing")]) == 2
    assert "--gate-cv-dir" in capsys.readouterr().err and not (tmp_path / "seg").exists()


def test_train_cv_refuses_a_dataset_without_hemorrhage(tmp_path, capsys):
    root = tmp_path / "syn"
    assert main(["synth", "--out", str(root), "--patients", "3", "--size", "48", "--slices", "6",
                 "--negative-fraction", "1.0"]) == 0
    assert main(["train-cv", "--dataset-dir", str(root), "--out", str(tmp_path / "cv"), "--folds", "2"]) == 2
    err = capsys.readouterr().err
    assert "none of the 18 slices of 3 patients show hemorrhage" in err and not (tmp_path / "cv").exists()


def test_seg_cv_refuses_to_resume_with_other_settings_or_labels(tmp_path, synthetic_root, capsys, monkeypatch):
    import hemwsl.commands.classifier as classifier

    monkeypatch.setattr(classifier, "run_cv_fold", lambda *a, **k: False)  # the folds themselves are not the point
    dl = tmp_path / "pseudo.json"
    assert main(["datalist", "--layout", "ct-ich", "--root", str(synthetic_root), "--out", str(dl)]) == 0
    out = str(tmp_path / "seg")
    base = ["seg-cv", "--datalist", str(dl), "--out", out, "--folds", "2", "--set", "epochs=2"]
    assert main(base) == 0 and main(base) == 0  # the same command resumes
    capsys.readouterr()
    assert main([*base[:-1], "epochs=3"]) == 2
    assert "holds a seg-cv run with other settings (settings.epochs 2 -> 3)" in capsys.readouterr().err
    assert main([*base[:6], "3", *base[7:]]) == 2
    assert "folds 2 -> 3" in capsys.readouterr().err
    dl.write_text(dl.read_text().replace("]", " ]", 1))  # other pseudo-labels in the same file
    assert main(base) == 2
    assert "datalist.sha1" in capsys.readouterr().err
