"""Bad inputs of the second robustness probe (cases named by their ids): each ends in one line naming the file or
argument at fault (a :class:`~hemwsl.errors.HemwslInputError`; ``hemwsl <command>: error: ...``, exit 2), before any
costly work and before any output is written; none is a traceback or a silent exit 0 with a wrong result.

Inputs are built here from the small phantoms of :mod:`tests.test_bad_inputs` and the fake (untrained) train-cv run
and model package of :mod:`tests.test_bad_inputs_data`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from hemwsl.cli import main
from tests import test_bad_inputs as shared
from tests import test_bad_inputs_data as runs
from tests.test_bad_inputs import _first
from tests.test_bad_inputs_data import _copy, _parser, one_line, raises_named

data = shared.data  # 4 phantoms (48 x 48 x 6) in the CT-ICH layout, and <data>/../dl.json
work = runs.work  # an empty folder that must stay empty
two_fold_run = runs.two_fold_run  # a fake 2-fold train-cv run of resnet10 at 32 x 32 on `data`
model = runs.model  # a model package of that run


def _spoilt_copy(data: Path, tmp: Path, name: str, edit) -> Path:
    """A copy of the first phantom CT, written as ``edit(image)`` returns it."""
    img = nib.load(str(_first(data)))
    out = tmp / name
    nib.save(edit(img), str(out))
    return out


# --------------------------------------------------------------------------------------------- volumes
def _singular(img):
    """The probe's fixture: no qform, an sform whose z column is zero."""
    hdr = img.header.copy()
    bad = img.affine.copy()
    bad[:3, 2] = 0
    hdr.set_qform(None, code=0)
    hdr.set_sform(bad, code=1)
    return nib.Nifti1Image(np.asarray(img.dataobj), None, hdr)


def test_R01_singular_affine_names_the_ct(model, data, tmp_path, work, capsys):
    from hemwsl.data.io import load_volume

    bad = _spoilt_copy(data, tmp_path, "singular.nii.gz", _singular)
    assert np.linalg.det(nib.load(str(bad)).affine[:3, :3]) == 0
    raises_named(lambda: load_volume(bad), f"{bad}: singular voxel-to-world affine")
    line = one_line(["predict", "--model", model, "--no-figures", "--input", bad, "--out", work / "p"], str(bad),
                    capsys, work)
    assert "singular" in line and "spacing" in line


def test_R04b_complex_ct_is_refused_naming_the_file(model, data, tmp_path, work, capsys):
    from hemwsl.data.io import load_volume

    bad = _spoilt_copy(data, tmp_path, "complex.nii.gz", lambda img: nib.Nifti1Image(
        np.asarray(img.dataobj).astype(np.complex64) + 5000j, img.affine))
    assert np.iscomplexobj(np.asanyarray(nib.load(str(bad)).dataobj))
    raises_named(lambda: load_volume(bad), f"{bad}: complex voxel values")
    raises_named(lambda: load_volume(bad, kind="mask"), f"{bad}: complex voxel values")
    one_line(["predict", "--model", model, "--no-figures", "--input", bad, "--out", work / "p"],
             f"{bad}: complex voxel values", capsys, work)


# --------------------------------------------------------------------------------------------- model package
def test_R16_recipe_threshold_of_bad_grammar_names_the_package_file(model, data, work, capsys):
    from hemwsl.predict import MODEL_FILE, ModelPackage

    f = model / MODEL_FILE
    meta = json.loads(f.read_text())
    meta["recipe"]["threshold"] = "fixed:0.5:0.2"
    f.write_text(json.dumps(meta))
    message = raises_named(lambda: ModelPackage.load(model), str(f))
    assert "recipe threshold 'fixed:0.5:0.2'" in message
    line = one_line(["predict", "--model", model, "--no-figures", "--input", _first(data), "--out", work / "p"],
                    str(f), capsys, work)
    assert "fixed:0.5:0.2" in line
    meta["recipe"]["threshold"] = 0.5
    f.write_text(json.dumps(meta))
    raises_named(lambda: ModelPackage.load(model), "recipe threshold must be a threshold spec")


# --------------------------------------------------------------------------------------------- dataset
def test_Ddupcol_duplicated_csv_column_is_named(data, tmp_path, work, capsys):
    from hemwsl.data.datalist import CTICH_CSV, build_datalist

    root = _copy(data, tmp_path)
    csv = root / CTICH_CSV
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([lines[0] + ",No_Hemorrhage", *(ln + ",0" for ln in lines[1:])]) + "\n")
    message = raises_named(lambda: build_datalist("ct-ich", root), f"{csv}: header line")
    assert "['No_Hemorrhage']" in message and "contradicts" not in message
    one_line(["datalist", "--layout", "ct-ich", "--root", root, "--out", work / "dl.json"], "No_Hemorrhage", capsys,
             work)


def test_T06_dataset_dir_that_is_a_symlink_loop(tmp_path, work, capsys):
    from hemwsl.data.datalist import build_datalist, resolve_dataset_dir

    a, b = tmp_path / "loopA", tmp_path / "loopB"
    os.symlink(b, a)
    os.symlink(a, b)
    raises_named(lambda: resolve_dataset_dir(a), f"{a}: a symlink loop")
    raises_named(lambda: build_datalist("ct-ich", a), f"{a}: a symlink loop")
    one_line(["train-cv", "--dataset-dir", a, "--folds", "2", "--out", work / "cv", *runs.TRAIN, "epochs=1"],
             f"{a}: a symlink loop, not a folder (--dataset-dir)", capsys, work)
    one_line(["datalist", "--layout", "ct-ich", "--root", a, "--out", work / "dl.json"], f"{a}: a symlink loop",
             capsys, work)
    assert resolve_dataset_dir(tmp_path / "absent") == (tmp_path / "absent").resolve()  # named later by the builder


# --------------------------------------------------------------------------------------------- split
def test_S02_split_folds_given_twice(data, work, capsys):
    line = one_line(["split", "--datalist", data.parent / "dl.json", "--out", work / "s.json", "--folds", "2",
                     "--folds", "3"], "argument --folds: given more than once", capsys, work)
    assert "2" in line and "3" in line
    assert main(["split", "--datalist", str(data.parent / "dl.json"), "--out", str(work / "s.json"), "--folds",
                 "2"]) == 0  # given once: as before


# --------------------------------------------------------------------------------------------- cam-cv, package
def test_K03_cam_cv_out_equal_to_or_inside_the_run(two_fold_run, data, capsys):
    cv = two_fold_run
    for out, where in ((cv, "is the train-cv run"), (cv / "cams", "is inside the train-cv run")):
        line = one_line(["cam-cv", "--dataset-dir", data, "--cv-dir", cv, "--out", out, "--methods", "gradcam",
                         "--layers", "layer4"], where, capsys)
        assert "--out" in line and "--cv-dir" in line
        assert not (cv / "cam_checkpoint.json").exists() and not (cv / "gradcam").exists()
        assert not (cv / "cams").exists()


def test_G04_package_out_equal_to_or_inside_the_run(two_fold_run, tmp_path, capsys):
    from hemwsl.predict import MODEL_FILE, pack_model

    cv = two_fold_run
    for out in (cv, cv / "model"):
        line = one_line(["package", "--cv-dir", cv, "--out", out, "--scan-call", "none"], "the train-cv run", capsys)
        assert str(out) in line and "--cv-dir" in line
        raises_named(lambda: pack_model(cv, out, scan_call="none"), "the train-cv run")
        assert not (cv / MODEL_FILE).exists() and not (cv / "model").exists() and not (cv / "fold0.pt").exists()
    assert (pack_model(cv, tmp_path / "model", scan_call="none") / MODEL_FILE).is_file()  # outside: as before


def test_K01_cam_cv_empty_layer_name_refused_before_any_folder(two_fold_run, data, tmp_path, capsys):
    from hemwsl.engines.cam import check_cam_request
    from hemwsl.networks import build_network
    from hemwsl.networks.registry import get_target_layers

    out = tmp_path / "cams"
    one_line(["cam-cv", "--dataset-dir", data, "--cv-dir", two_fold_run, "--out", out, "--methods", "gradcam",
              "--layers", ""], "empty target layer name ''", capsys)
    assert not out.exists()
    raises_named(lambda: check_cam_request(["gradcam"], ["layer4", " "]), "empty target layer name ' '")
    raises_named(lambda: get_target_layers(build_network("resnet10", in_channels=9), [""]), "target layer ''")


# --------------------------------------------------------------------------------------------- benchmark
@pytest.fixture
def cams(data, tmp_path) -> Path:
    """A heatmap folder gradcam/layer4/<patient>.nii.gz (random maps on the CT grid) for every phantom."""
    root = tmp_path / "cams"
    (root / "gradcam" / "layer4").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for f in sorted((data / "ct_scans").glob("*.nii*")):
        img = nib.load(str(f))
        stem = f.name.split(".")[0]
        nib.save(nib.Nifti1Image(rng.random(img.shape).astype(np.float32), img.affine),
                 str(root / "gradcam" / "layer4" / f"{stem}.nii.gz"))
    return root


def _benchmark(data, cams, out, *extra):
    return ["benchmark", "--dataset-dir", data, "--cam-dir", cams, "--out", out, "--folds", "2", "--methods", "gradcam",
            "--thresholds", "fixed:0.7", "--no-figures", *extra]


def test_B09_benchmark_names_the_layer_without_heatmaps(data, cams, work, capsys):
    from hemwsl.benchmark import run_benchmark
    from hemwsl.data.datalist import build_datalist

    line = one_line(_benchmark(data, cams, work / "b", "--n-boot", "10", "--layers", "features.6"),
                    "no heatmaps of layer(s) ['features.6']", capsys, work)
    assert "layers there: layer4" in line and "method(s) ['gradcam'] under" not in line
    # one layer of two missing: named too (not silently dropped)
    raises_named(lambda: run_benchmark(build_datalist("ct-ich", data), cams, work / "b", methods=["gradcam"],
                                       layers=["layer4", "features.6"], thresholds=["fixed:0.7"], n_boot=10,
                                       progress=False, figures=False), "['features.6']")
    assert not (work / "b").exists()


@pytest.mark.parametrize("n_boot", ["0", "1", "9"])
def test_B08_too_few_bootstrap_replicates_refused_in_every_command(n_boot, data, cams, work, capsys):
    from hemwsl.benchmark import run_benchmark
    from hemwsl.data.datalist import build_datalist
    from hemwsl.metrics.classification import MIN_N_BOOT, check_n_boot

    assert MIN_N_BOOT == 10 and check_n_boot(10) == 10
    one_line(_benchmark(data, cams, work / "b", "--n-boot", n_boot), "--n-boot must be >= 10", capsys, work)
    one_line(["quantify", "--dataset-dir", data, "--masks", data / "masks", "--predictions", work / "p.csv", "--out",
              work / "q", "--folds", "2", "--no-figures", "--n-boot", n_boot], "--n-boot must be >= 10", capsys, work)
    raises_named(lambda: run_benchmark(build_datalist("ct-ich", data), cams, work / "b", thresholds=["fixed:0.7"],
                                       n_boot=int(n_boot), progress=False, figures=False), "n_boot must be >= 10")
    assert not (work / "b").exists()


def test_B08_help_documents_the_minimum(capsys):
    for cmd in ("benchmark", "quantify"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        assert "at least 10" in " ".join(capsys.readouterr().out.split())


def test_B01_heatmaps_of_another_run_are_refused(data, cams, two_fold_run, tmp_path, work, capsys):
    from hemwsl.commands.benchmark import check_made_from_run
    from hemwsl.engines.runs import check_checkpoint_marker

    cv = two_fold_run
    settings = json.loads((cv / "cv_settings.json").read_text())
    # the heatmaps were made (cam-cv's record) from another run: other input size
    other = tmp_path / "other_cv"
    shutil.copytree(cv, other)
    (other / "cv_settings.json").write_text(json.dumps({**settings, "spatial_size": [48, 48]}))
    check_checkpoint_marker(cams, other, "best", "heatmaps", settings={**settings, "spatial_size": [48, 48],
                                                                      "grid": "input", "folds": 2})
    line = one_line(_benchmark(data, cams, work / "b", "--n-boot", "10", "--cv-dir", cv), f"--cam-dir {cams}", capsys,
                    work)
    assert str(other.resolve()) in line and f"--cv-dir {cv}" in line and "spatial_size [48, 48] -> [32, 32]" in line
    # another checkpoint of the same run
    (cams / "cam_checkpoint.json").unlink()
    check_checkpoint_marker(cams, cv, "best", "heatmaps", settings={**settings, "grid": "input", "folds": 2})
    raises_named(lambda: check_made_from_run(cams, cv, "last"), "heatmaps of the best checkpoints")
    check_made_from_run(cams, cv, "best")  # the run that made them
    # a copy of the run (another path, same settings and weights) is the same run; other weights are not
    copy = tmp_path / "cv_copy"
    shutil.copytree(cv, copy)
    check_made_from_run(cams, copy, "best")
    import torch

    state = torch.load(copy / "fold0" / "models" / "model.pt", weights_only=True)
    key = next(iter(state))
    state[key] = state[key] + 1
    torch.save(state, copy / "fold0" / "models" / "model.pt")
    raises_named(lambda: check_made_from_run(cams, copy, "best"), "fold 0's best weights differ")


# --------------------------------------------------------------------------------------------- bundles/ich_predict
def test_M03_M04_predict_bundle_batch_size_and_overwrite(model, data, tmp_path):
    from hemwsl.predict import Predictor, PredictWorkflow

    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(_first(data), scans / _first(data).name)
    out = tmp_path / "o"
    for key, value, named in (("batch_size", -3, "batch_size must be an integer >= 1 (slices per forward pass), "
                                                 "got -3"),
                              ("batch_size", 0, "batch_size must be"),
                              ("overwrite", "maybe", "overwrite must be true or false, got 'maybe'"),
                              ("figures", "perhaps", "figures must be true or false")):
        parser = _parser("ich_predict", ["inference"], model_dir=str(model), dataset_dir=str(scans),
                         output_dir=str(out), device="cpu", **{key: value})
        raises_named(lambda: parser.get_parsed_content("evaluator"), named)
    assert not out.exists()
    raises_named(lambda: Predictor(model, batch_size=-3), "batch_size")
    # the words monai.bundle run passes for --overwrite false / --figures true are booleans
    flow = PredictWorkflow(None, [], out, figures="true", overwrite="false")
    assert flow.figures is True and flow.overwrite is False
