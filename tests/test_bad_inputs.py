"""The bad-input catalogue: every case ends in one line that names the file or argument and the problem, exit
status 2, no traceback and no output folder left behind (docs/reliability.md counts them).

Each case is a command line of ``hemwsl`` run in-process (``hemwsl.cli.main``) on small synthetic phantoms, some
of them spoilt on purpose. Cases of the bundles and of the Python API are in the tests of those modules (named in
docs/reliability.md).
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
def data(tmp_path_factory) -> Path:
    """4 phantoms (48 x 48 x 6) in the CT-ICH layout, written once; cases copy them before spoiling them."""
    root = tmp_path_factory.mktemp("bad_inputs") / "data"
    assert main(["synth", "--out", str(root), "--patients", "4", "--size", "48", "--slices", "6"]) == 0
    assert main(["datalist", "--layout", "ct-ich", "--root", str(root), "--out", str(root.parent / "dl.json")]) == 0
    return root


def _copy(data: Path, tmp: Path) -> Path:
    out = tmp / "data"
    shutil.copytree(data, out)
    return out


def _first(root: Path, sub: str = "ct_scans") -> Path:
    return sorted((root / sub).glob("*.nii*"))[0]


def _rewrite(path: Path, fn) -> None:
    img = nib.load(str(path))
    arr, affine = fn(np.asarray(img.dataobj), img.affine.copy())
    nib.save(nib.Nifti1Image(arr, affine), str(path))


# --------------------------------------------------------------------------------------------- spoilers
def nan_voxel(root):
    _rewrite(_first(root), lambda a, af: (np.where(np.arange(a.size).reshape(a.shape) == 0, np.nan, a.astype(np.float32)), af))


def stored_values(root):
    _rewrite(_first(root), lambda a, af: ((a.astype(np.int32) + 1024).astype(np.uint16), af))


def truncated(root):
    p = _first(root)
    p.write_bytes(p.read_bytes()[:300])


def text_as_nifti(root):
    _first(root).write_text("not an image")


def volume_2d(root):
    _rewrite(_first(root), lambda a, af: (a[:, :, 0], af))


def volume_4d(root):
    _rewrite(_first(root), lambda a, af: (np.stack([a, a], -1), af))


def mask_other_shape(root):
    _rewrite(_first(root, "masks"), lambda a, af: (a[:-2], af))


def mask_other_affine(root):
    def f(a, af):
        af[0, 3] += 7.0
        return a, af
    _rewrite(_first(root, "masks"), f)


def csv_non_numeric(root):
    csv = root / "hemorrhage_diagnosis_raw_ct.csv"
    lines = csv.read_text().splitlines()
    head = lines[0].split(",")
    row = lines[1].split(",")
    row[head.index("No_Hemorrhage")] = "maybe"
    csv.write_text("\n".join([lines[0], ",".join(row), *lines[2:]]) + "\n")


def csv_missing_column(root):
    csv = root / "hemorrhage_diagnosis_raw_ct.csv"
    lines = [line.split(",") for line in csv.read_text().splitlines()]
    drop = lines[0].index("No_Hemorrhage")
    csv.write_text("\n".join(",".join(v for i, v in enumerate(row) if i != drop) for row in lines) + "\n")


def csv_duplicate_row(root):
    csv = root / "hemorrhage_diagnosis_raw_ct.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([*lines, lines[1]]) + "\n")


def no_scans(root):
    for p in (root / "ct_scans").glob("*"):
        p.unlink()


def all_negative(root):
    for p in (root / "masks").glob("*.nii*"):
        _rewrite(p, lambda a, af: (np.zeros_like(a), af))
    csv = root / "hemorrhage_diagnosis_raw_ct.csv"
    lines = csv.read_text().splitlines()
    head = lines[0].split(",")
    rows = []
    for line in lines[1:]:
        row = line.split(",")
        for i, name in enumerate(head):
            if name not in ("PatientNumber", "SliceNumber"):
                row[i] = "1" if name == "No_Hemorrhage" else "0"
        rows.append(",".join(row))
    csv.write_text("\n".join([lines[0], *rows]) + "\n")


# --------------------------------------------------------------------------------------------- cases
# (id, spoiler or None, argv with {data} / {tmp} / {file}, text the one line must hold)
CASES = [
    # datasets and volumes
    ("dataset folder missing", None, ["train-cv", "--dataset-dir", "{tmp}/nowhere", "--out", "{tmp}/cv"], "nowhere"),
    ("dataset folder empty", None, ["datalist", "--layout", "ct-ich", "--root", "{tmp}", "--out", "{tmp}/dl.json"], "{tmp}"),
    ("no scans", no_scans, ["datalist", "--layout", "ct-ich", "--root", "{data}", "--out", "{tmp}/dl.json"], "ct_scans"),
    ("NaN voxel", nan_voxel, ["train-cv", "--dataset-dir", "{data}", "--out", "{tmp}/cv", "--folds", "2"], "NaN/inf"),
    ("stored CT values", stored_values, ["train-cv", "--dataset-dir", "{data}", "--out", "{tmp}/cv", "--folds", "2"],
     "RescaleIntercept"),
    ("truncated gzip", truncated, ["train-cv", "--dataset-dir", "{data}", "--out", "{tmp}/cv", "--folds", "2"],
     "cannot read as NIfTI"),
    ("text named .nii.gz", text_as_nifti, ["datalist", "--layout", "ct-ich", "--root", "{data}", "--out", "{tmp}/dl.json"],
     "cannot read"),
    ("2D volume", volume_2d, ["train-cv", "--dataset-dir", "{data}", "--out", "{tmp}/cv", "--folds", "2"], "3D"),
    ("4D volume", volume_4d, ["train-cv", "--dataset-dir", "{data}", "--out", "{tmp}/cv", "--folds", "2"], "3D"),
    ("mask of another shape", mask_other_shape, ["datalist", "--layout", "ct-ich", "--root", "{data}", "--out",
                                                 "{tmp}/dl.json"], "shape"),
    ("mask of another affine", mask_other_affine, ["datalist", "--layout", "ct-ich", "--root", "{data}", "--out",
                                                   "{tmp}/dl.json"], "affine"),
    ("CSV non-numeric label", csv_non_numeric, ["datalist", "--layout", "ct-ich", "--root", "{data}", "--out",
                                                "{tmp}/dl.json"], "maybe"),
    ("CSV missing column", csv_missing_column, ["datalist", "--layout", "ct-ich", "--root", "{data}", "--out",
                                                "{tmp}/dl.json"], "No_Hemorrhage"),
    ("CSV duplicated row", csv_duplicate_row, ["datalist", "--layout", "ct-ich", "--root", "{data}", "--out",
                                               "{tmp}/dl.json"], "hemorrhage_diagnosis_raw_ct.csv"),
    ("no hemorrhage anywhere", all_negative, ["train-cv", "--dataset-dir", "{data}", "--out", "{tmp}/cv", "--folds", "2"],
     "none of the"),
    # registries
    ("unknown backbone", None, ["train-cv", "--dataset-dir", "{data}", "--out", "{tmp}/cv", "--folds", "2", "--set",
                                "backbone=foo", "epochs=1"], "unknown network 'foo'"),
    ("unknown window", None, ["train-cv", "--dataset-dir", "{data}", "--out", "{tmp}/cv", "--folds", "2", "--set",
                              'windows=["nope"]', "epochs=1"], "nope"),
    ("unknown threshold spec", None, ["benchmark", "--dataset-dir", "{data}", "--cam-dir", "{tmp}", "--out", "{tmp}/b", "--folds", "2",
                                      "--thresholds", "foo"], "unknown threshold 'foo'"),
    ("unknown slice mode", None, ["benchmark", "--dataset-dir", "{data}", "--cam-dir", "{tmp}", "--out", "{tmp}/b", "--folds", "2",
                                  "--slices", "foo"], "foo"),
    ("unknown layout", None, ["datalist", "--layout", "foo", "--root", "{data}", "--out", "{tmp}/dl.json"], "foo"),
    ("unknown aggregation", None, ["quantify", "--dataset-dir", "{data}", "--masks", "{tmp}", "--cv-dir", "{tmp}",
                                   "--out", "{tmp}/q", "--aggregations", "foo"], "--aggregations"),
    # sizes and numbers
    ("spatial size zero", None, ["train-cv", "--dataset-dir", "{data}", "--out", "{tmp}/cv", "--folds", "2", "--set",
                                 "spatial_size=[0,0]", "epochs=1"], "spatial_size"),
    ("even slice count", None, ["train-cv", "--dataset-dir", "{data}", "--out", "{tmp}/cv", "--folds", "2", "--set",
                                "num_slices=2", "epochs=1"], "num_slices"),
    ("synth size zero", None, ["synth", "--out", "{tmp}/s", "--size", "0"], "--size"),
    ("synth no patients", None, ["synth", "--out", "{tmp}/s", "--patients", "0"], "patients"),
    ("synth negative fraction 2", None, ["synth", "--out", "{tmp}/s", "--negative-fraction", "2"], "negative"),
    ("one fold", None, ["train-cv", "--dataset-dir", "{data}", "--out", "{tmp}/cv", "--folds", "1"], "--folds must be >= 2"),
    ("more folds than patients", None, ["train-cv", "--dataset-dir", "{data}", "--out", "{tmp}/cv", "--folds", "9"],
     "fold"),
    ("bootstrap zero", None, ["benchmark", "--dataset-dir", "{data}", "--cam-dir", "{tmp}", "--out", "{tmp}/b", "--folds", "2",
                              "--n-boot", "0"], "--n-boot"),
    ("negative erosion", None, ["benchmark", "--dataset-dir", "{data}", "--cam-dir", "{tmp}", "--out", "{tmp}/b", "--folds", "2",
                                "--thresholds", "prior", "--brain-erosion", "-1"], "brain_erosion"),
    ("negative growth", None, ["benchmark", "--dataset-dir", "{data}", "--cam-dir", "{tmp}", "--out", "{tmp}/b", "--folds", "2",
                               "--thresholds", "prior", "--grow", "-1"], "grow"),
    ("negative component size", None, ["benchmark", "--dataset-dir", "{data}", "--cam-dir", "{tmp}", "--out", "{tmp}/b", "--folds", "2",
                                       "--thresholds", "prior", "--min-size", "-5"], "min_size"),
    ("HU range reversed", None, ["benchmark", "--dataset-dir", "{data}", "--cam-dir", "{tmp}", "--out", "{tmp}/b", "--folds", "2",
                                 "--thresholds", "prior", "--hu-range", "90", "45"], "hu_range"),
    ("fixed threshold above 1", None, ["benchmark", "--dataset-dir", "{data}", "--cam-dir", "{tmp}", "--out", "{tmp}/b", "--folds", "2",
                                       "--thresholds", "fixed:1.5"], "fixed:1.5"),
    # --set syntax
    ("--set without =", None, ["train-cv", "--dataset-dir", "{data}", "--out", "{tmp}/cv", "--set", "epochs"], "epochs"),
    ("--set misspelt key", None, ["train-cv", "--dataset-dir", "{data}", "--out", "{tmp}/cv", "--set", "learning_rat=5"],
     "did you mean learning_rate"),
    # outputs
    ("datalist that is not a list", None, ["split", "--datalist", "{file}", "--out", "{tmp}/s.json"], "JSON list"),
    # missing inputs of later steps
    ("cam-cv without a run", None, ["cam-cv", "--dataset-dir", "{data}", "--cv-dir", "{tmp}/nocv", "--out", "{tmp}/c"],
     "nocv"),
    ("benchmark without heatmaps", None, ["benchmark", "--dataset-dir", "{data}", "--cam-dir", "{tmp}/nocam", "--out",
                                          "{tmp}/b", "--folds", "2"], "nocam"),
    ("benchmark folds beyond the patients", None, ["benchmark", "--dataset-dir", "{data}", "--cam-dir", "{tmp}",
                                                   "--out", "{tmp}/b"], "n_folds=5 is more than the 4 patients"),
    ("benchmark run without predictions", None, ["benchmark", "--dataset-dir", "{data}", "--cam-dir", "{tmp}", "--out",
                                                 "{tmp}/b", "--cv-dir", "{tmp}", "--folds", "2", "--thresholds",
                                                 "prior"], "predictions"),
    ("quantify without a run", None, ["quantify", "--dataset-dir", "{data}", "--masks", "{tmp}", "--cv-dir",
                                      "{tmp}/nocv", "--out", "{tmp}/q", "--folds", "2"], "nocv"),
    ("package without a run", None, ["package", "--cv-dir", "{tmp}/nocv", "--out", "{tmp}/m"], "nocv"),
    ("predict without a model", None, ["predict", "--model", "{tmp}/nomodel", "--input", "{file}", "--out", "{tmp}/p"],
     "nomodel"),
    ("pseudo with a checkpoint that is not one", None, ["pseudo", "--dataset-dir", "{data}", "--cam-dir", "{tmp}",
                                                       "--out", "{tmp}/p", "--checkpoint", "{file}"],
     "notes.json: cannot read checkpoint"),
    ("seg-cv without its gate run", None, ["seg-cv", "--dataset-dir", "{data}", "--out", "{tmp}/seg", "--folds", "2",
                                           "--gate-cv-dir", "{tmp}/nogate"], "--gate-cv-dir"),
    ("--set value that is not JSON", None, ["train-cv", "--dataset-dir", "{data}", "--out", "{tmp}/cv", "--folds", "2",
                                            "--set", "spatial_size=[128", "epochs=1"], "'[128'"),
    ("probability above 1", None, ["benchmark", "--dataset-dir", "{data}", "--cam-dir", "{tmp}", "--out", "{tmp}/b",
                                   "--folds", "2", "--prob-threshold", "2"], "--prob-threshold"),
    ("sensitivity above 1", None, ["quantify", "--dataset-dir", "{data}", "--masks", "{tmp}", "--cv-dir", "{tmp}",
                                   "--out", "{tmp}/q", "--folds", "2", "--min-sensitivity", "2"], "--min-sensitivity"),
    ("datalist output under a file", None, ["datalist", "--layout", "ct-ich", "--root", "{data}", "--out",
                                            "{file}/dl.json"], "notes.json: a file is where a folder must be"),
    ("train-cv output is a file", None, ["train-cv", "--dataset-dir", "{data}", "--out", "{file}", "--folds", "2"],
     "notes.json: a file is where a folder must be"),
    ("benchmark output is a file", None, ["benchmark", "--dataset-dir", "{data}", "--cam-dir", "{tmp}", "--out", "{file}",
                                          "--folds", "2", "--thresholds", "prior"], "notes.json"),
    ("synth no slices", None, ["synth", "--out", "{tmp}/s", "--slices", "0"], "--slices"),
    ("split fractions beyond 1", None, ["split", "--datalist", "{data}/../dl.json", "--out", "{tmp}/s.json",
                                        "--fractions", "0.5", "0.5", "0.5"], "fractions must be >= 0 and sum to 1"),
    ("split into one fold", None, ["split", "--datalist", "{file}", "--out", "{tmp}/s.json", "--folds", "1"],
     "--folds must be >= 2"),
    ("unknown selection metric", None, ["benchmark", "--dataset-dir", "{data}", "--cam-dir", "{tmp}", "--out", "{tmp}/b",
                                        "--folds", "2", "--select-metric", "foo", "--thresholds", "prior"],
     "unknown select_metric 'foo'"),
    ("fold outside the run", None, ["train-cv", "--dataset-dir", "{data}", "--out", "{tmp}/cv", "--folds", "2", "--only",
                                    "7"], "--only: fold(s) [7]"),
    ("split file missing", None, ["benchmark", "--dataset-dir", "{data}", "--cam-dir", "{tmp}", "--out", "{tmp}/b",
                                  "--split", "{tmp}/nosplit.json", "--thresholds", "prior"], "nosplit.json"),
    ("trust model missing", None, ["trust", "--dataset-dir", "{data}", "--out", "{tmp}/t", "--model", "{tmp}/nomodel.pt"],
     "nomodel.pt"),
    ("validation fraction above 1", None, ["benchmark", "--dataset-dir", "{data}", "--cam-dir", "{tmp}", "--out",
                                           "{tmp}/b", "--folds", "2", "--val-fraction", "1.5", "--thresholds", "prior"],
     "1.5"),
    ("split of a missing datalist", None, ["split", "--datalist", "{tmp}/nodl.json", "--out", "{tmp}/s.json"], "nodl.json"),
]


@pytest.mark.parametrize("case, spoil, argv, named", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_named_line(case, spoil, argv, named, data, tmp_path, capsys):
    root = data
    if spoil is not None:
        root = _copy(data, tmp_path)
        spoil(root)
    work = tmp_path / "work"
    work.mkdir()
    file = work / "notes.json"
    file.write_text(json.dumps({"mine": 1}))

    def fill(s: str) -> str:
        return s.replace("{data}", str(root)).replace("{tmp}", str(work)).replace("{file}", str(file))

    before = sorted(p.name for p in work.iterdir())
    try:
        code = main([fill(a) for a in argv])
    except SystemExit as err:  # argparse's own checks (choices, types): its usage line, then one error line
        code = err.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, f"{case}: exit {code}"
    text = "\n".join(err)  # a traceback only inside "--- Logging error ---" (a log handler of an earlier
    # in-process run bound to its closed captured stream), never one of the command's
    assert err and text.count("Traceback (most recent call last)") == text.count("--- Logging error ---"), \
        f"{case}: {err[-5:]}"
    last = err[-1]
    command = argv[0]
    assert last.startswith(f"hemwsl {command}: error: "), f"{case}: {last}"
    assert fill(named) in last, f"{case}: {last!r} does not name {fill(named)!r}"
    assert sorted(p.name for p in work.iterdir()) == before, f"{case}: left {sorted(p.name for p in work.iterdir())}"
    assert file.read_text() == json.dumps({"mine": 1})
