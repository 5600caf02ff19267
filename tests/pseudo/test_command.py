"""``hemwsl pseudo`` command module (:mod:`hemwsl.commands.pseudo`)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from hemwsl.commands.pseudo import add_pseudo_arguments, run_pseudo
from hemwsl.errors import HemwslInputError


def _parse(argv):
    p = argparse.ArgumentParser()
    add_pseudo_arguments(p)
    return p.parse_args(argv)


def test_run_pseudo_cam_mode_from_predictions(box_files, tmp_path, capsys):
    from hemwsl.data.datalist import save_datalist
    from hemwsl.data.io import load_volume, save_nifti

    ref = tmp_path / "masks" / "p1.nii.gz"
    truth = np.zeros((24, 24, 4), np.uint8)
    truth[6:14, 10:14, 0] = 1  # the blood half of the box, slice 0 only
    save_nifti(truth, np.diag([0.8, 0.8, 5.0, 1.0]), ref)
    save_datalist([{"image": str(box_files["ct"]), "label": str(ref), "patient": "p1", "slice_labels": [1, 0, 0, 0],
                    "subtype_labels": None, "spacing": [0.8, 0.8, 5.0], "num_slices": 4, "positive": 1}],
                  tmp_path / "dl.json")
    csv = tmp_path / "pred.csv"
    csv.write_text("patient,slice,label_any,prob_any\np1,0,1,0.9\np1,1,0,0.1\np1,2,0,0.2\np1,3,0,0.3\n")
    out = tmp_path / "pseudo"
    args = _parse(["--datalist", str(tmp_path / "dl.json"), "--cam-dir", str(box_files["cam_dir"]), "--out", str(out),
                   "--mode", "cam", "--predictions-csv", str(csv), "--windows", "brain", "--num-slices", "1",
                   "--evaluate", "--no-progress"])
    assert run_pseudo(args) == 0
    mask = load_volume(out / "p1.nii.gz", kind="mask").array
    np.testing.assert_array_equal(mask[..., 0], box_files["box"])
    assert mask[..., 1:].sum() == 0
    # Dice by hand: pseudo = 64-voxel box, truth = its 32-voxel half: 2 * 32 / (64 + 32) = 2/3
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scores["n"] == 1 and scores["mean_dice"] == pytest.approx(2 / 3)
    assert json.loads((out / "datalist.json").read_text())[0]["reference"] == str(ref)


def test_run_pseudo_bad_arguments(box_files, tmp_path):
    from hemwsl.data.datalist import save_datalist

    save_datalist([{"image": str(box_files["ct"]), "label": None, "patient": "p1", "slice_labels": None,
                    "subtype_labels": None, "spacing": [0.8, 0.8, 5.0], "num_slices": 4, "positive": 0}],
                  tmp_path / "dl.json")
    args = _parse(["--datalist", str(tmp_path / "dl.json"), "--cam-dir", str(box_files["cam_dir"]), "--out", "o"])
    with pytest.raises(HemwslInputError, match="--checkpoint is required for --mode cam_kmeans"):
        run_pseudo(args)
    args = _parse(["--datalist", "x.json", "--cam-dir", str(box_files["cam_dir"]), "--out", str(tmp_path / "o")])
    with pytest.raises(HemwslInputError, match="x.json: datalist file not found"):
        run_pseudo(args)
    args = _parse(["--dataset-dir", str(tmp_path), "--datalist", "x.json", "--cam-dir", "c", "--out", "o"])
    with pytest.raises(HemwslInputError, match="exactly one of --datalist and --dataset-dir"):
        run_pseudo(args)
