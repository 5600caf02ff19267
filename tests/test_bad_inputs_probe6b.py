"""Sixth bad-input probe (6b): predictions CSVs (probabilities outside [0, 1], NaN, repeated and missing slices,
another dataset's), benchmark reports of other folds or with a chosen share outside their own grid, reruns into a
report folder of other settings (named), options that change nothing, output folders inside an input folder,
model package recipes, a DICOM series of two patients, and heatmaps that are truncated or hold a NaN (named before
the first output of cam-ensemble and pseudo). Each ends in one line naming the file or argument, exit status 2 on
the command line, before any output (docs/reliability.md)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from hemwsl.errors import HemwslInputError
from tests import test_bad_inputs as shared
from tests import test_bad_inputs_data as runs
from tests.test_bad_inputs_data import raises_named
from tests.test_bad_inputs_probe4 import only_line

data = shared.data  # 4 phantoms (48 x 48 x 6) in the CT-ICH layout
two_fold_run = runs.two_fold_run  # a fake 2-fold train-cv run of resnet10 at 32 x 32 on `data`

HEADER = "patient,slice,label_any,prob_any"


def _rows(data: Path) -> list[str]:
    """One predictions row per slice of every phantom (probability 0.5)."""
    from hemwsl.data.datalist import build_datalist

    return [f"{e['patient']},{z},{v},0.5" for e in build_datalist("ct-ich", data)
            for z, v in enumerate(e["slice_labels"])]


def _csv(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def _set_prob(row: str, p: str) -> str:
    return ",".join(row.split(",")[:-1] + [p])


# --------------------------------------------------------------------------- predictions CSVs
@pytest.mark.parametrize("spoil, named", [
    (lambda r: r + [r[2]], "repeats line 4"),                                        # AB04
    (lambda r: r + [_set_prob(r[2], "0.01")], "repeats line 4"),                     # AB05
    (lambda r: [_set_prob(r[0], "1.5")] + r[1:], "probability 1.5"),               # AB06, BM23, PS03
    (lambda r: [_set_prob(r[0], "-0.2")] + r[1:], "probability -0.2"),             # AB07
    (lambda r: [_set_prob(r[0], "nan")] + r[1:], "probability nan"),               # AB08
], ids=["AB04", "AB05", "AB06", "AB07", "AB08"])
def test_predictions_rows_are_checked_where_read(data, tmp_path, spoil, named):
    """Every reader of a predictions CSV (read_predictions_csv: ablation, benchmark, pseudo, quantify) refuses a
    probability outside [0, 1] or NaN and a repeated slice, naming the file and the line."""
    from hemwsl.engines.runs import read_predictions_csv
    from hemwsl.pseudo import read_slice_probabilities

    f = _csv(tmp_path / "p.csv", spoil(_rows(data)))
    msg = raises_named(lambda: read_predictions_csv(f, labels=False), named)
    assert str(f) in msg
    raises_named(lambda: read_slice_probabilities(f), named)  # pseudo's reader (PS03)


@pytest.mark.parametrize("spoil, named", [
    (lambda r: [x for x in r if not x.startswith("001,3,")], "patient 001: no prediction for slice(s) 3 of its 6"),
    (lambda r: r + ["001,6,0,0.5", "001,7,0,0.5"], "patient 001: slice 7 is outside its scan's 6 slices"),
], ids=["AB03", "AB10"])
def test_ablation_predictions_cover_every_slice(data, tmp_path, spoil, named):
    """--predictions missing a slice, or of another dataset's scans, is named (the CSV, not the CT) before any
    pseudo-label is made."""
    from hemwsl.data.datalist import build_datalist
    from hemwsl.experiments.ablation import _check_predictions

    f = _csv(tmp_path / "p.csv", spoil(_rows(data)))
    msg = raises_named(lambda: _check_predictions(f, build_datalist("ct-ich", data)), named)
    assert str(f) in msg
    _check_predictions(_csv(tmp_path / "ok.csv", _rows(data)), build_datalist("ct-ich", data))  # sound: passes


def test_benchmark_predictions_refused_before_the_report(data, tmp_path, capsys):
    """BM23: a probability 1.5; BM24: --slices predicted with a patient missing from --predictions: one line, and
    no report folder (the missing patient was found only after seven patients were scored)."""
    cam = tmp_path / "cam"
    cam.mkdir()
    rows = _rows(data)
    base = ["benchmark", "--dataset-dir", data, "--cam-dir", cam, "--folds", "2", "--n-boot", "10", "--no-figures",
            "--thresholds", "prior", "--slices", "predicted"]
    bad = _csv(tmp_path / "p15.csv", [_set_prob(rows[0], "1.5")] + rows[1:])
    only_line(base + ["--predictions", bad, "--out", tmp_path / "o1"], "probability 1.5", capsys, tmp_path / "o1")
    first = rows[0].split(",")[0]
    short = _csv(tmp_path / "short.csv", [r for r in rows if not r.startswith(first + ",")])
    only_line(base + ["--predictions", short, "--out", tmp_path / "o2"],
              [f"--predictions {short}", f"no slice probabilities of patient(s) {first}"], capsys, tmp_path / "o2")


# --------------------------------------------------------------------------- benchmark reports
def _bench(root: Path, folds: dict, min_share=None, spec: str = "prior[e0,hu45-90,min0,s0.3]") -> Path:
    """A minimal benchmark report: config.json (every patient's test fold), choices.csv and thresholds.csv."""
    root.mkdir(parents=True)
    cfg = {"folds": folds, "hu_range": [45.0, 90.0], "brain_erosion": 0, "min_size": 0, "prob_threshold": 0.5}
    if min_share is not None:
        cfg["min_share"] = min_share
    (root / "config.json").write_text(json.dumps(cfg))
    hs = spec.replace("prior[", "search[").replace(",hu45-90", "")
    (root / "choices.csv").write_text("fold,method,layer,threshold,selection_dice\n" + "".join(
        f'{k},-,-,"{spec}",0.3\n{k},gradcam,layer4,"{hs}",0.2\n' for k in (0, 1)))
    (root / "thresholds.csv").write_text("fold,method,layer,threshold,value\n" + "".join(
        f'{k},gradcam,layer4,"{hs}",0.5\n' for k in (0, 1)))
    return root


def _run_folds(run: Path) -> dict:
    out = {}
    for k in range(2):
        for line in (run / f"fold{k}" / "predictions_test.csv").read_text().splitlines()[1:]:
            out[line.split(",")[0]] = k
    return out


def test_benchmark_of_other_folds_is_refused(two_fold_run, tmp_path):
    """AB15, PK01: a report whose patients sit in other test folds than the run's (another split) is named by the
    shared check of ablation and package; the run's own folds pass."""
    from hemwsl.benchmark.runner import check_benchmark_of_run

    folds = _run_folds(two_fold_run)
    check_benchmark_of_run(_bench(tmp_path / "mine", folds, [0.0, 0.3]), two_fold_run)
    other = {p: 1 - k for p, k in folds.items()}
    bench = _bench(tmp_path / "other", other, [0.0, 0.3])
    msg = raises_named(lambda: check_benchmark_of_run(bench, two_fold_run), "a report of other folds than --cv-dir")
    assert "--benchmark-dir" in msg and "patient" in msg


@pytest.mark.parametrize("grid, spec, named", [
    ([0.0, 1.5], "prior[e0,hu45-90,min0,s0.3]", "min_share must be a number in [0, 1), got 1.5"),    # AB17 PK02
    ("abc", "prior[e0,hu45-90,min0,s0.3]", "min_share must be a number in [0, 1), got 'abc'"),      # AB18
    ([0.0, 0.3], "prior[e0,hu45-90,min0,s0.7]", "names the share 0.7, not one of the report's"),   # AB19 PK03
    (None, "prior[e0,hu45-90,min0,s0.3]", "names the share 0.3, not one of the report's"),         # PK04
], ids=["AB17", "AB18", "AB19", "PK04"])
def test_chosen_share_must_be_in_the_reports_grid(two_fold_run, tmp_path, grid, spec, named):
    """A report edited by hand (a grid value that is no share, a chosen share the report never validated) is
    refused by ablation's prior rows and by package's recipe reader alike."""
    from hemwsl.experiments.ablation import prior_choices
    from hemwsl.predict import _recipe_from_benchmark

    bench = _bench(tmp_path / "b", _run_folds(two_fold_run), grid, spec)
    raises_named(lambda: prior_choices(bench, 2), named)
    raises_named(lambda: _recipe_from_benchmark(bench, [0, 1], ["gradcam"]), named)
    good = _bench(tmp_path / "good", _run_folds(two_fold_run), [0.0, 0.3])
    assert prior_choices(good, 2)[0].min_share == 0.3


def _heatmaps(cam: Path, data: Path) -> None:
    rng = np.random.default_rng(0)
    for ct in sorted((data / "ct_scans").glob("*.nii.gz")):
        img = nib.load(str(ct))
        f = cam / "gradcam" / "layer4" / ct.name
        f.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(rng.random(img.shape).astype(np.float32), img.affine), str(f))


def test_benchmark_rerun_names_what_differs(data, tmp_path):
    """BM17, BM18: a rerun into a report folder of other settings names the setting that differs."""
    from hemwsl.benchmark import cv_folds, run_benchmark
    from hemwsl.data.datalist import build_datalist

    cam, out = tmp_path / "cam", tmp_path / "bench"
    _heatmaps(cam, data)
    dl = build_datalist("ct-ich", data)
    kw = dict(thresholds=["prior"], folds=cv_folds(dl, n_folds=2), n_boot=10, figures=False, progress=False)
    run_benchmark(dl, cam, out, **kw)
    raises_named(lambda: run_benchmark(dl, cam, out, min_share=0.3, **kw), "other settings (min_share <unset> -> 0.3")
    raises_named(lambda: run_benchmark(dl, cam, out, hu_reference=37, **kw), "hu_reference <unset> -> 37")


def test_benchmark_options_that_change_nothing_or_write_among_the_maps(data, tmp_path, capsys):
    """BM15: --hu-reference with no threshold that reads HU; BM22: --out inside --cam-dir."""
    cam = tmp_path / "cam"
    _heatmaps(cam, data)
    base = ["benchmark", "--dataset-dir", data, "--cam-dir", cam, "--folds", "2", "--n-boot", "10", "--no-figures"]
    only_line(base + ["--thresholds", "search", "--hu-reference", "37", "--out", tmp_path / "o"],
              ["--hu-reference", "no threshold (search) uses them"], capsys, tmp_path / "o")
    only_line(base + ["--thresholds", "prior", "--out", cam / "gradcam" / "report"],
              ["--out", "is inside the heatmap folder", "--cam-dir"], capsys, cam / "gradcam" / "report")


# --------------------------------------------------------------------------- quantify
def test_quantify_options_that_change_nothing_and_out_among_the_masks(data, tmp_path, capsys):
    """QU11: --hu-reference without the model aggregation; QU13: --checkpoint with --predictions; QU17: --out is
    the --masks folder."""
    preds = _csv(tmp_path / "p.csv", _rows(data))
    masks = tmp_path / "masks"
    masks.mkdir()
    base = ["quantify", "--dataset-dir", data, "--masks", masks, "--predictions", preds, "--folds", "2",
            "--n-boot", "10", "--no-figures"]
    only_line(base + ["--aggregations", "max", "top3", "--hu-reference", "37", "--out", tmp_path / "o1"],
              ["--hu-reference", "has no model"], capsys, tmp_path / "o1")
    only_line(base + ["--aggregations", "max", "--checkpoint", "last", "--out", tmp_path / "o2"],
              ["--checkpoint last", "with --predictions it changes nothing"], capsys, tmp_path / "o2")
    only_line(base + ["--aggregations", "max", "--out", masks], ["--out", "is the masks folder", "--masks"], capsys)


@pytest.mark.parametrize("old, new, recorded, named", [
    ({"aggregations": ["max", "top3"]}, {"aggregations": ["max"]}, {"aggregations": ["max"]},
     'aggregations ["max", "top3"] -> ["max"]'),                                                           # QU14
    ({"min_slices": [1]}, {"min_slices": 2}, {"min_slices": [2]}, "min_slices [1] -> [2]"),              # QU15
], ids=["QU14", "QU15"])
def test_quantify_rerun_of_other_settings_is_refused(data, tmp_path, old, new, recorded, named):
    """A quantify report folder of other settings is refused before any work, naming what differs; the same
    settings (another path to the masks folder, another number of bootstrap replicates) pass that check."""
    from hemwsl.data.datalist import build_datalist
    from hemwsl.quantify import run_quantify

    out, masks = tmp_path / "q", tmp_path / "masks"
    out.mkdir()
    masks.mkdir()
    settings = {"aggregations": ["max"], "min_sensitivity": 0.9, "calibrate": False, "min_slices": [1],
                "masks_dir": str(masks), "n_boot": 2000, "hu_reference": None}
    (out / "summary.json").write_text(json.dumps({"settings": {**settings, **old}}))
    kw = {"aggregations": ["max"], "min_slices": 1, **new}
    dl = build_datalist("ct-ich", data)
    preds = _csv(tmp_path / "p.csv", _rows(data))
    raises_named(lambda: run_quantify(dl, masks, [preds], out, ({}, {}), n_boot=10, **kw),
                 "holds a quantify report of other settings (" + named)
    (out / "summary.json").write_text(json.dumps({"settings": {**settings, **recorded,
                                                               "masks_dir": str(tmp_path / "." / "masks")}}))
    with pytest.raises(HemwslInputError) as info:  # past the rerun check: the empty masks folder is what is named
        run_quantify(dl, masks, [preds], out, ({}, {}), n_boot=10, **kw)
    assert "other settings" not in str(info.value)


# --------------------------------------------------------------------------- model packages, DICOM
@pytest.mark.parametrize("edit, named", [
    (lambda r: r.update(hu_reference="37"), "recipe hu_reference must be a brain HU"),      # PM07
    (lambda r: r.update(min_slices=0), "recipe min_slices must be an integer >= 1"),        # PM12
], ids=["PM07", "PM12"])
def test_package_recipe_checked_at_load(two_fold_run, tmp_path, edit, named):
    from hemwsl.predict import MODEL_FILE, ModelPackage, pack_model

    root = pack_model(two_fold_run, tmp_path / "model", scan_call="none")
    meta = json.loads((root / MODEL_FILE).read_text())
    edit(meta["recipe"])
    (root / MODEL_FILE).write_text(json.dumps(meta))
    msg = raises_named(lambda: ModelPackage.load(root), named)
    assert str(root / MODEL_FILE) in msg


def test_dicom_series_of_two_patients_is_named(data, tmp_path):
    """PN08: one slice of the series carries another PatientID."""
    import pydicom

    from hemwsl.data.dicom import read_dicom_series, write_dicom_series

    img = nib.load(str(sorted((data / "ct_scans").glob("*.nii.gz"))[0]))
    folder = tmp_path / "dcm"
    write_dicom_series(img.get_fdata(), img.affine, folder, patient_id="P1")
    read_dicom_series(folder)  # sound
    f = sorted(folder.glob("*.dcm"))[2]
    ds = pydicom.dcmread(str(f))
    ds.PatientID = "SOMEONE-ELSE"
    ds.save_as(str(f), enforce_file_format=True)
    raises_named(lambda: read_dicom_series(folder), f"{f}: PatientID 'SOMEONE-ELSE'")


# --------------------------------------------------------------------------- heatmaps checked before any output
def _member(root: Path, maps: dict, cv_dir: str) -> Path:
    root.mkdir(parents=True)
    (root / "cam_checkpoint.json").write_text(json.dumps(
        {"cv_dir": cv_dir, "checkpoint": "last", "settings": {"grid": "input", "folds": 5}}))
    for stem, arr in maps.items():
        f = root / "gradcam" / "layer4" / f"{stem}.nii.gz"
        f.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(np.asarray(arr, np.float32), np.diag([2.0, 2.0, 5.0, 1.0])), str(f))
    return root


@pytest.mark.parametrize("spoil, named", [
    ("truncate_last", "cannot read as a heatmap"),   # EN01
    ("nan_last", "1 voxels are NaN or infinite"),    # EN02
    ("truncate_first", "cannot read as a heatmap"),  # EN03
], ids=["EN01", "EN02", "EN03"])
def test_cam_ensemble_bad_member_map_leaves_nothing(tmp_path, capsys, spoil, named):
    """A truncated or NaN member map is named before the ensemble record or any mean map is written."""
    rng = np.random.default_rng(0)
    stems = ("001", "002", "003")
    a = _member(tmp_path / "a", {s: rng.random((6, 5, 3)) for s in stems}, "/runs/a")
    maps = {s: rng.random((6, 5, 3)) for s in stems}
    if spoil == "nan_last":
        maps["003"][0, 0, 0] = np.nan
    b = _member(tmp_path / "b", maps, "/runs/b")
    if spoil.startswith("truncate"):
        f = b / "gradcam" / "layer4" / ("003.nii.gz" if spoil == "truncate_last" else "001.nii.gz")
        f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    out = tmp_path / "ens"
    only_line(["cam-ensemble", "--cam-dirs", a, b, "--out", out], named, capsys, out)


@pytest.mark.parametrize("spoil, named", [("nan", "1 NaN/inf voxel(s) in the image"),
                                          ("truncate", "cannot read as NIfTI")], ids=["PS01", "PS02"])
def test_pseudo_heatmaps_checked_before_the_first_label(data, tmp_path, spoil, named):
    """A NaN or truncated heatmap of the last patient is named before any pseudo-label (it was found after the
    patients before it had been labelled)."""
    from hemwsl.pseudo import check_heatmaps_readable as _check_heatmaps_finite
    from hemwsl.data.datalist import build_datalist

    cam = tmp_path / "cam"
    _heatmaps(cam, data)
    dl = build_datalist("ct-ich", data)
    _check_heatmaps_finite(cam, "gradcam", "layer4", dl)  # sound maps pass
    f = sorted((cam / "gradcam" / "layer4").glob("*.nii.gz"))[-1]
    if spoil == "nan":
        img = nib.load(str(f))
        arr = img.get_fdata().astype(np.float32)
        arr[1, 1, 1] = np.nan
        nib.save(nib.Nifti1Image(arr, img.affine), str(f))
    else:
        f.write_bytes(f.read_bytes()[:200])
    msg = raises_named(lambda: _check_heatmaps_finite(cam, "gradcam", "layer4", dl), named)
    assert str(f) in msg


def test_rows_without_slice_metadata_are_read(tmp_path):
    """Slice -1 is what PredictionCollector writes for batches without slice indices: such rows are read (and may
    repeat); any other negative index is one line."""
    from hemwsl.engines.runs import read_predictions_csv

    f = tmp_path / "p.csv"
    f.write_text("patient,slice,label_any,prob_any\n,-1,0,0.2\n,-1,1,0.7\n")
    assert read_predictions_csv(f)["slice"].tolist() == [-1, -1]
    f.write_text("patient,slice,label_any,prob_any\na,0,0,0.2\na,-2,1,0.7\n")
    raises_named(lambda: read_predictions_csv(f), "line 3: negative slice index -2")
