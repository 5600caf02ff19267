"""Fifth bad-input probe, second round of mends (the cases an independent tester's fifth set still found failing;
docs/reliability.md): another dataset under the run's patient ids, package options that do not apply or contradict,
pseudo-label inputs of another run, self-train's output folder, trust's options and record, seg-cv's --only, and
clearer messages. Each ends in one line naming the file or argument, before any costly work and before any output
is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from hemwsl.errors import HemwslInputError
from tests import test_bad_inputs as shared
from tests import test_bad_inputs_data as runs
from tests.test_bad_inputs_data import raises_named
from tests.test_bad_inputs_probe4 import _trust, only_line

data = shared.data  # 4 phantoms (48 x 48 x 6) in the CT-ICH layout
work = runs.work  # an empty folder that must stay empty
two_fold_run = runs.two_fold_run  # a fake 2-fold train-cv run of resnet10 at 32 x 32 on `data` (real state dicts)


def _flip_label(run: Path, fold: int = 0) -> str:
    """Flip the first slice label of fold ``fold``'s predictions: the run now 'was tested on' another head under the
    same id. Returns that patient."""
    f = run / f"fold{fold}" / "predictions_test.csv"
    lines = f.read_text().splitlines()
    pat, z, lab, prob = lines[1].split(",")
    lines[1] = ",".join([pat, z, str(1 - int(lab)), prob])
    f.write_text("\n".join(lines))
    return pat


def _other_run(run: Path, tmp_path: Path) -> Path:
    """A copy of ``run`` with other weights and other slice probabilities (another train-cv run, same settings)."""
    from hemwsl.networks import build_network

    other = tmp_path / "cv_other"
    shutil.copytree(run, other)
    torch.manual_seed(7)
    for k in range(2):
        torch.save(build_network("resnet10", in_channels=9).state_dict(), other / f"fold{k}" / "models" / "model.pt")
        f = other / f"fold{k}" / "predictions_test.csv"
        f.write_text(f.read_text().replace(",0.5\n", ",0.6\n").replace(",0.5", ",0.6"))
    return other


# --------------------------------------------------------------------------- another dataset under the same ids
def test_dataset_of_the_run_passes_another_is_named(two_fold_run, data):
    """C11 Q31 S14 ST11 K09: the shared check compares the dataset with the run's out-of-fold slices and labels."""
    from hemwsl.data.datalist import build_datalist
    from hemwsl.engines.runs import check_dataset_dir_matches_run, check_dataset_matches_run

    check_dataset_dir_matches_run(two_fold_run, data)  # the run's own dataset (any path to it)
    entries = build_datalist("ct-ich", data)
    pat = _flip_label(two_fold_run)
    raises_named(lambda: check_dataset_matches_run(two_fold_run, entries, data),
                 f"--dataset-dir {data}: patient {pat}'s slice 0 is labelled")
    shorter = [{**e, "num_slices": e["num_slices"] + 2} for e in entries]  # scans of other lengths
    raises_named(lambda: check_dataset_matches_run(two_fold_run, shorter, "d2", "--datalist"),
                 "--datalist d2: patient")


def test_cam_cv_quantify_package_refuse_another_dataset(two_fold_run, data, work, capsys):
    pat = _flip_label(two_fold_run)
    named = [f"--dataset-dir {data}", f"patient {pat}", "another dataset than the run's"]
    only_line(["cam-cv", "--dataset-dir", data, "--cv-dir", two_fold_run, "--out", work / "c", "--methods",
               "gradcam"], named, capsys, work / "c")                                                    # C11
    only_line(["quantify", "--dataset-dir", data, "--cv-dir", two_fold_run, "--masks", data / "masks",
               "--n-boot", "10", "--no-figures", "--out", work / "q"], named, capsys, work / "q")        # Q31
    only_line(["package", "--cv-dir", two_fold_run, "--dataset-dir", data, "--scan-call", "none", "--out",
               work / "p"], named, capsys, work / "p")                                                   # K09


# --------------------------------------------------------------------------------------------------- package
@pytest.mark.parametrize("folds", ["5", "-1"])
def test_package_folds_outside_the_run(folds, two_fold_run, work, capsys):                              # K01 K02
    only_line(["package", "--cv-dir", two_fold_run, "--out", work / "p", "--folds", folds, "--scan-call", "none"],
              [f"--folds {folds}: not a fold of the train-cv run", "its folds: 0, 1"], capsys, work / "p")


def test_package_quantify_dir_with_scan_call_none(two_fold_run, tmp_path, work, capsys):                  # K03
    only_line(["package", "--cv-dir", two_fold_run, "--out", work / "p", "--quantify-dir", tmp_path,
               "--scan-call", "none"], ["--quantify-dir", "--scan-call none contradict"], capsys, work / "p")


@pytest.mark.parametrize("extra, option", [
    (["--benchmark-dir", "bench"], "--benchmark-dir"),                                                   # K04
    (["--checkpoint", "last"], "--checkpoint"),                                                          # K05
    (["--min-slices", "3"], "--min-slices"),                                                             # K06
    (["--quantify-dir", "q"], "--quantify-dir"),
])
def test_package_options_that_do_not_apply_to_a_unet(extra, option, tmp_path, work, capsys):
    only_line(["package", "--seg-cv-dir", tmp_path, "--out", work / "p", *extra],
              [f"{option} does not apply to a U-Net package", "--seg-cv-dir"], capsys, work / "p")


def test_package_quantify_report_of_another_run(two_fold_run, tmp_path):                                # K08
    from hemwsl.predict import _check_quantify_made_from_run

    q = tmp_path / "q"
    q.mkdir()
    rows = ["patient,fold,score_max"] + [f"{p},0,{v}" for p, v in (("001", 0.5), ("002", 0.5), ("003", 0.5))]
    (q / "per_patient.csv").write_text("\n".join(rows) + "\n")
    _check_quantify_made_from_run(q, two_fold_run, "best", [0, 1], 2)  # the run's own probabilities
    (q / "per_patient.csv").write_text("\n".join(r.replace(",0.5", ",0.7") for r in rows) + "\n")
    raises_named(lambda: _check_quantify_made_from_run(q, two_fold_run, "best", [0, 1], 2),
                 f"--quantify-dir {q}: made from other slice probabilities than --cv-dir")


def test_package_min_slices_beyond_every_scan(two_fold_run, work, capsys):                              # K12
    only_line(["package", "--cv-dir", two_fold_run, "--out", work / "p", "--min-slices", "100", "--scan-call", "none"],
              "--min-slices 100 exceeds the slices of every scan the run was tested on (at most 6)", capsys, work / "p")


def _benchmark_of(tmp_path: Path, checkpoint: str) -> Path:
    cam, bench = tmp_path / "cam", tmp_path / "bench"
    cam.mkdir()
    bench.mkdir()
    (cam / "cam_checkpoint.json").write_text(json.dumps({"cv_dir": "x", "checkpoint": checkpoint}))
    (bench / "config.json").write_text(json.dumps({"cam_dir": str(cam)}))
    return bench


def test_package_last_checkpoint_with_a_benchmark_of_the_best(two_fold_run, tmp_path, work, capsys):    # K17
    for k in range(2):
        shutil.copy(two_fold_run / f"fold{k}" / "models" / "model.pt", two_fold_run / f"fold{k}" / "models" / "model_last.pt")
    bench = _benchmark_of(tmp_path, "best")
    only_line(["package", "--cv-dir", two_fold_run, "--out", work / "p", "--checkpoint", "last", "--benchmark-dir",
               bench, "--scan-call", "none"],
              ["--checkpoint last: the benchmark report", "heatmaps of the best checkpoints"], capsys, work / "p")


def test_benchmark_checkpoint_check(tmp_path):                                                           # ST10
    from hemwsl.experiments.benchmark import check_benchmark_checkpoint

    bench = _benchmark_of(tmp_path, "best")
    check_benchmark_checkpoint(bench, "best")
    raises_named(lambda: check_benchmark_checkpoint(bench, "last"), "give --checkpoint best")


# ---------------------------------------------------------------------------------------------------- pseudo
def _pseudo(data, cam, out, *extra) -> list:
    return ["pseudo", "--dataset-dir", data, "--cam-dir", cam, "--method", "gradcam", "--layer", "layer4",
            "--mode", "cam", "--no-progress", "--out", out, *extra]


def test_pseudo_context_slices_without_context(data, tmp_path, work, capsys):                           # PS24
    only_line(_pseudo(data, tmp_path, work / "o", "--context-slices", "5"),
              ["--context-slices", "give --context too"], capsys, work / "o")


def test_pseudo_heatmaps_and_predictions_of_another_run(two_fold_run, data, tmp_path, work, capsys):     # PS15 PS16
    other = _other_run(two_fold_run, tmp_path)
    cam = tmp_path / "cam"
    cam.mkdir()
    (cam / "cam_checkpoint.json").write_text(json.dumps({"cv_dir": str(other), "checkpoint": "best"}))
    preds = [two_fold_run / f"fold{k}" / "predictions_test.csv" for k in range(2)]
    only_line(_pseudo(data, cam, work / "o", "--cv-dir", two_fold_run, "--predictions-csv", *preds),
              ["--cam-dir", "made from the train-cv run", "fold 0's best weights differ"], capsys, work / "o")
    (cam / "cam_checkpoint.json").unlink()
    theirs = [other / f"fold{k}" / "predictions_test.csv" for k in range(2)]
    only_line(_pseudo(data, cam, work / "o", "--cv-dir", two_fold_run, "--predictions-csv", *theirs),
              [f"--predictions-csv {theirs[0]}: slice probabilities of the train-cv run", "not of --cv-dir"],
              capsys, work / "o")


def test_pseudo_heatmap_of_another_grid(data, tmp_path, work, capsys):                                   # PS20
    from hemwsl.data.datalist import build_datalist

    cam = tmp_path / "cam"
    folder = cam / "gradcam" / "layer4"
    folder.mkdir(parents=True)
    (cam / "cam_checkpoint.json").write_text(json.dumps({"cv_dir": "x", "checkpoint": "best",
                                                         "settings": {"grid": "input"}}))
    entries = build_datalist("ct-ich", data)
    for i, e in enumerate(entries):
        shape = (30, 32, 6) if i == len(entries) - 1 else (32, 32, 6)
        nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), str(folder / f"{e['patient']}.nii.gz"))
    bad = folder / f"{entries[-1]['patient']}.nii.gz"
    only_line(_pseudo(data, cam, work / "o", "--predictions-csv", _preds(data, tmp_path)),
              [f"{bad}: a heatmap of 30 x 32 pixels in-plane", "32 x 32"], capsys, work / "o")


def _preds(data, tmp_path) -> Path:
    from hemwsl.data.datalist import build_datalist

    f = tmp_path / "preds.csv"
    rows = [f"{e['patient']},{z},{v},0.5" for e in build_datalist("ct-ich", data) for z, v in enumerate(e["slice_labels"])]
    f.write_text("\n".join(["patient,slice,label_any,prob_any", *rows]))
    return f


# ------------------------------------------------------------------------------------------------ self-train
def test_self_train_out_inside_the_run(two_fold_run, data, tmp_path, capsys):                           # ST07
    only_line(["self-train", "--dataset-dir", data, "--cv-dir", two_fold_run, "--benchmark-dir", tmp_path,
               "--out", two_fold_run / "st"], ["--out", "is inside the train-cv run"], capsys, two_fold_run / "st")


def test_writable_out_checked_up_front(tmp_path, monkeypatch):                                          # ST09
    import errno
    import tempfile

    from hemwsl.engines.runs import check_writable_dir

    check_writable_dir(tmp_path / "new" / "deeper")
    assert not (tmp_path / "new").exists()  # nothing made
    afile = tmp_path / "afile"
    afile.write_text("x")
    raises_named(lambda: check_writable_dir(afile / "o"), f"--out {afile / 'o'}: cannot write there")

    def refuse(*a, **kw):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    raises_named(lambda: check_writable_dir(tmp_path), "cannot write there (permission denied")


# ----------------------------------------------------------------------------------------------------- trust
@pytest.mark.parametrize("extra, named", [
    (["--patch-size", "100"], ["--patch-size 100 is larger than the classifier's input", "32 x 32"]),    # TR07
    (["--curve-layers", "layer9"], ["--curve-layers: unknown layer(s) layer9", "layer4"]),                # TR23
    (["--exclude", "gradcam"], ["--exclude gradcam leaves none of --methods gradcam"]),                   # TR26
    (["--seed", "-1"], ["--seed must be in [0, 2**32)"]),                                                 # TR29
], ids=["TR07", "TR23", "TR26", "TR29"])
def test_trust_options_probe5b(extra, named, two_fold_run, data, work, capsys):
    only_line(_trust(data, two_fold_run / "fold0" / "models" / "model.pt", work / "t", *extra), named, capsys,
              work / "t")


def test_trust_refused_weights_leave_no_record(data, tmp_path, work, capsys):                           # TR31
    from hemwsl.networks import build_network

    wrong = tmp_path / "wrong.pt"
    torch.save(build_network("resnet18", in_channels=9).state_dict(), wrong)
    only_line(_trust(data, wrong, work / "t"), [str(wrong), "does not match the network"], capsys, work / "t")


# ---------------------------------------------------------------------------------------------------- seg-cv
def test_seg_cv_only_without_a_fold(data, work, capsys):                                                # G25
    only_line(["seg-cv", "--dataset-dir", data, "--out", work / "s", "--folds", "2", "--only"],
              "--only: give the fold numbers to run", capsys, work / "s")


def test_unet_levels_named_by_the_setting():                                                            # G06
    from hemwsl.networks.unet3d import anisotropic_layout

    msg = raises_named(lambda: anisotropic_layout(0), "features: at least 2 channel counts")
    assert "filters" not in msg


# -------------------------------------------------------------------------------------------------- messages
def test_marker_names_only_the_settings_that_differ(tmp_path):                                          # C01 C02
    from hemwsl.engines.runs import check_checkpoint_marker

    base = {"epochs": 1, "backbone": "resnet10", "spatial_size": [32, 32], "grid": "input", "folds": 2}
    check_checkpoint_marker(tmp_path, tmp_path / "cv", "best", "heatmaps", settings=base)
    msg = raises_named(lambda: check_checkpoint_marker(tmp_path, tmp_path / "cv", "best", "heatmaps",
                                                       settings={**base, "flip_tta": True}),
                       "holds heatmaps of another run (flip_tta <unset> -> true)", max_len=200)
    assert "backbone" not in msg and "epochs" not in msg


def test_symlink_loop_member_map_said_so(tmp_path):                                                     # E33
    from hemwsl.engines.ensemble import _header

    loop = tmp_path / "008.nii.gz"
    loop.symlink_to(loop)
    raises_named(lambda: _header(loop), f"{loop}: cannot read as a heatmap (a symlink loop)")


def test_permuted_axes_said_to_be_the_slice_axis():                                                     # R23
    from hemwsl.predict import check_ct_geometry

    raises_named(lambda: check_ct_geometry((5.0, 0.9, 0.9), (10, 48, 48), "p.nii.gz"),
                 "the slice axis looks wrong: voxel axis 1 (10 voxels of 5 mm)")
    with pytest.raises(HemwslInputError, match="too small for a head CT") as err:  # a small scan: no axis hint
        check_ct_geometry((0.9, 0.9, 5.0), (10, 10, 6), "s.nii.gz")
    assert "slice axis" not in str(err.value)


def test_subtypes_refuses_another_dataset_than_the_packed_runs(synthetic_root, tmp_path):                  # S14
    """The package names its train-cv run (``train_cv``): a dataset whose slices that run's out-of-fold predictions
    label otherwise is another dataset under the same ids."""
    from hemwsl.data.datalist import build_datalist
    from hemwsl.predict import ModelPackage, pack_model
    from hemwsl.subtypes import run_subtype_benchmark
    from tests.test_subtypes import _six_output_cv

    cv = _six_output_cv(tmp_path / "cv")
    pkg = pack_model(cv, tmp_path / "pkg", dataset_dir=synthetic_root, scan_call="none")
    tests = ModelPackage.load(pkg).members[0]["test_patients"]
    entries = {e["patient"]: e for e in build_datalist("ct-ich", synthetic_root)}
    rows = [f"{p},{z},{1 - v},0.5" for p in tests for z, v in enumerate(entries[p]["slice_labels"])]
    (cv / "fold0" / "predictions_test.csv").write_text("\n".join(["patient,slice,label_any,prob_any", *rows]))
    raises_named(lambda: run_subtype_benchmark(pkg, synthetic_root, tmp_path / "out"),
                 f"--dataset-dir {synthetic_root}: patient {sorted(tests)[0]}'s slice 0 is labelled")
    assert not (tmp_path / "out").exists()
