"""Pseudo-label volumes and the datalist driver (:mod:`hemwsl.pseudo.volume`)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from hemwsl.cam.volume import heatmap_path
from hemwsl.data.io import load_volume, save_nifti
from hemwsl.data.settings import InputSettings
from hemwsl.errors import HemwslInputError
from hemwsl.pseudo import (
    PseudoLabelSettings,
    build_threshold,
    make_pseudo_labels,
    pseudo_label_volume,
    read_slice_probabilities,
)
from tests.pseudo.conftest import AFFINE, MeanWindowNet

SETTINGS = {"windows": ("brain",), "num_slices": 1, "spatial_size": None, "skull_strip": False}
PROBS = np.array([0.9, 0.2, 0.6, 0.5])  # slices 0, 2, 3 positive at 0.5


def test_cam_mode_thresholds_positive_slices_only(box_files):
    mask, affine, info = pseudo_label_volume(box_files["ct"], box_files["cam"], None, PseudoLabelSettings(mode="cam"),
                                             inputs=InputSettings(**SETTINGS), probabilities=PROBS)
    assert mask.dtype == np.uint8 and mask.shape == (24, 24, 4)
    np.testing.assert_allclose(affine, AFFINE)
    for z in (0, 2, 3):  # min-max CAM: 1 in the box, 0.2 elsewhere in the head -> box > 0.7
        np.testing.assert_array_equal(mask[..., z], box_files["box"])
    assert not mask[..., 1].any()
    assert info["positive"] == [1, 0, 1, 1] and info["voxels"] == [64, 0, 64, 64]


def test_cam_kmeans_differential_picks_blood(box_files):
    net = MeanWindowNet()
    mask, _, info = pseudo_label_volume(box_files["ct"], box_files["cam"], net,
                                        PseudoLabelSettings(mode="cam_kmeans", k=4), inputs=InputSettings(**SETTINGS),
                                        probabilities=PROBS)
    assert net.batch_sizes == [3 * 5]  # the 3 positive slices x (original + 4 candidates), one forward
    for z in (0, 2, 3):
        np.testing.assert_array_equal(mask[..., z], box_files["blood"])
    assert not mask[..., 1].any()
    # brain window: 20 HU -> 0.25, 70 HU -> 0.875, fill = median head HU outside the box = 30 HU -> 0.375;
    # logit = 100 x mean over 576 pixels: removing the 32 pixels of cluster 0 adds 100*32*0.125/576,
    # removing the 32 blood pixels subtracts 100*32*0.5/576; clusters 2 and 3 do not exist
    assert info["clusters"] == [2, 0, 2, 2] and info["chosen"] == [1, -1, 1, 1]
    np.testing.assert_allclose(info["drops"][0][:2], [-100 * 32 * 0.125 / 576, 100 * 32 * 0.5 / 576], atol=1e-4)
    assert info["drops"][0][2:] == [None, None]


def test_brightest_selection_and_computed_probabilities(box_files):
    net = MeanWindowNet()  # logits of 100 x mean window > 0: every slice positive
    mask, _, info = pseudo_label_volume(box_files["ct"], box_files["cam"], net,
                                        PseudoLabelSettings(mode="cam_kmeans", select="brightest"),
                                        inputs=InputSettings(**SETTINGS))
    assert info["positive"] == [1, 1, 1, 1]
    for z in range(4):
        np.testing.assert_array_equal(mask[..., z], box_files["blood"])


def test_context_damps_a_one_slice_hot_spot(box_files):
    cam = box_files["cam"].copy()
    cam[18:20, 18:20, 2] = 1.0  # hot spot on slice 2 only
    probs = np.array([0.1, 0.9, 0.9, 0.9])
    plain, _, _ = pseudo_label_volume(box_files["ct"], cam, None, PseudoLabelSettings(mode="cam"),
                                      inputs=InputSettings(**SETTINGS), probabilities=probs)
    assert plain[18:20, 18:20, 2].all()
    # with context, slice 2's map is the mean of slices 1-3: the spot is 1/3 of the box's value -> below 0.7
    ctx, _, _ = pseudo_label_volume(box_files["ct"], cam, None, PseudoLabelSettings(mode="cam", context=True),
                                    inputs=InputSettings(**SETTINGS), probabilities=probs)
    assert not ctx[18:20, 18:20, 2].any()
    np.testing.assert_array_equal(ctx[..., 2], box_files["box"])
    assert not ctx[..., 0].any()


def _write_csv(path, rows):
    path.write_text("patient,slice,label_any,prob_any\n" + "".join(f"{p},{z},0,{v}\n" for p, z, v in rows))
    return path


def test_make_pseudo_labels_resume_and_datalist(box_files, tmp_path):
    csv = _write_csv(tmp_path / "pred.csv", [("p1", z, v) for z, v in enumerate(PROBS)])
    np.testing.assert_allclose(read_slice_probabilities(csv)["p1"], PROBS)
    datalist = [{"image": str(box_files["ct"]), "label": None, "patient": "p1", "slice_labels": [0, 1, 1, 0]}]
    out = tmp_path / "pseudo"
    kw = dict(settings=PseudoLabelSettings(mode="cam"), inputs=InputSettings(**SETTINGS), predictions_csv=csv,
              progress=False)
    result = make_pseudo_labels(None, datalist, box_files["cam_dir"], out, "gradcam", "features", **kw)
    nii = out / "p1.nii.gz"
    vol = load_volume(nii, kind="mask", dtype=np.uint8)
    np.testing.assert_allclose(vol.affine, AFFINE)
    assert vol.array[..., 0].sum() == 64 and not vol.array[..., 1].any()
    e = result[0]
    assert e["label"] == str(nii) and e["image"] == str(box_files["ct"]) and e["patient"] == "p1"
    assert e["slice_labels"] == [1, 0, 1, 1] and e["positive"] == 1 and e["num_slices"] == 4
    np.testing.assert_allclose(e["spacing"], [0.8, 0.8, 5.0])
    assert e["reference"] is None and e["weak_slice_labels"] == [0, 1, 1, 0]
    assert json.loads((out / "datalist.json").read_text()) == result
    mtime = os.stat(nii).st_mtime_ns
    again = make_pseudo_labels(None, datalist, box_files["cam_dir"], out, "gradcam", "features", **kw)
    assert again == result and os.stat(nii).st_mtime_ns == mtime  # resumed: not rewritten
    # another call (e.g. another fold) into the same folder: its entries are added to the datalist
    import shutil

    shutil.copy(box_files["ct"], box_files["ct"].with_name("p2.nii.gz"))
    p2cam = heatmap_path(box_files["cam_dir"], "p2", ("gradcam", "features"))
    shutil.copy(heatmap_path(box_files["cam_dir"], "p1", ("gradcam", "features")), p2cam)
    _write_csv(csv, [("p2", z, v) for z, v in enumerate(PROBS)])
    both = make_pseudo_labels(None, [{**datalist[0], "patient": "p2", "image": str(box_files["ct"].with_name("p2.nii.gz"))}],
                              box_files["cam_dir"], out, "gradcam", "features", **kw)
    assert [e["patient"] for e in both] == ["p1", "p2"] and both[0] == result[0]
    assert json.loads((out / "datalist.json").read_text()) == both
    with pytest.raises(HemwslInputError, match="other settings.*threshold"):
        make_pseudo_labels(None, datalist, box_files["cam_dir"], out, "gradcam", "features",
                           **{**kw, "settings": PseudoLabelSettings(mode="cam", threshold=0.5)})
    # the predictions' kind is part of the settings: the last checkpoint's are refused in this folder ...
    assert json.loads((out / "pseudo_params.json").read_text())["predictions"] == ["pred.csv"]
    last = _write_csv(tmp_path / "predictions_test_last.csv", [("p1", z, v) for z, v in enumerate(PROBS)])
    with pytest.raises(HemwslInputError, match="other settings.*predictions"):
        make_pseudo_labels(None, datalist, box_files["cam_dir"], out, "gradcam", "features",
                           **{**kw, "predictions_csv": last})
    # ... while a folder made before the kind was recorded still resumes
    params = json.loads((out / "pseudo_params.json").read_text())
    del params["predictions"]
    (out / "pseudo_params.json").write_text(json.dumps(params))
    assert result[0] in make_pseudo_labels(None, datalist, box_files["cam_dir"], out, "gradcam", "features", **kw)


def test_bad_inputs(box_files, tmp_path):
    entry = {"image": str(box_files["ct"]), "label": None, "patient": "p1"}
    kw = dict(probabilities=PROBS, inputs=InputSettings(**SETTINGS))
    with pytest.raises(HemwslInputError, match="unknown mode 'kmeans'"):
        pseudo_label_volume(box_files["ct"], box_files["cam"], None, PseudoLabelSettings(mode="kmeans"), **kw)
    with pytest.raises(HemwslInputError, match="network is required"):
        pseudo_label_volume(box_files["ct"], box_files["cam"], None, PseudoLabelSettings(mode="cam_kmeans"), **kw)
    bad = heatmap_path(tmp_path / "badcams", "p1", ("gradcam", "features"))
    save_nifti(np.zeros((24, 24, 3), np.float32), AFFINE, bad)
    with pytest.raises(HemwslInputError, match=f"{bad}.*shape \\(24, 24, 3\\).*\\(24, 24, 4\\)"):
        pseudo_label_volume(box_files["ct"], bad, None, PseudoLabelSettings(mode="cam"), **kw)
    missing = heatmap_path(box_files["cam_dir"], "p2", ("gradcam", "features"))
    with pytest.raises(HemwslInputError, match=f"{missing}.*not found"):
        make_pseudo_labels(None, [entry, {**entry, "patient": "p2"}], box_files["cam_dir"], tmp_path / "o1",
                           "gradcam", "features", PseudoLabelSettings(mode="cam"), inputs=InputSettings(**SETTINGS),
                           predictions_csv=_write_csv(tmp_path / "a.csv", []), progress=False)
    csv = _write_csv(tmp_path / "b.csv", [("p9", 0, 0.5)])
    with pytest.raises(HemwslInputError, match="b.csv: no predictions for patient 'p1'"):
        make_pseudo_labels(None, [entry], box_files["cam_dir"], tmp_path / "o2", "gradcam", "features",
                           PseudoLabelSettings(mode="cam"), inputs=InputSettings(**SETTINGS), predictions_csv=csv,
                           progress=False)
    csv = _write_csv(tmp_path / "c.csv", [("p1", 0, 0.5), ("p1", 1, 0.5)])
    with pytest.raises(HemwslInputError, match="missing for slice\\(s\\) \\[2, 3\\]|2 slice probabilities for 4"):
        make_pseudo_labels(None, [entry], box_files["cam_dir"], tmp_path / "o3", "gradcam", "features",
                           PseudoLabelSettings(mode="cam"), inputs=InputSettings(**SETTINGS), predictions_csv=csv,
                           progress=False)
    with pytest.raises(HemwslInputError, match="threshold strategy 'median'"):
        build_threshold("median")


def test_threshold_strategies_from_registry(box_files):
    # the box is 64 of 576 pixels (11 %): the 85th percentile of the slice map is 0.2, and map > 0.2 is the box
    mask, _, _ = pseudo_label_volume(box_files["ct"], box_files["cam"], None,
                                     PseudoLabelSettings(mode="cam", threshold=build_threshold("percentile", 85)),
                                     inputs=InputSettings(**SETTINGS), probabilities=PROBS)
    np.testing.assert_array_equal(mask[..., 0], box_files["box"])


def test_input_grid_heatmap_is_upsampled(box_files, tmp_path):
    """A heatmap stored at the classifier's input size (half the CT grid) gives the CT-grid result."""
    import torch

    from hemwsl.cam.base import upsample

    cam = np.asarray(box_files["cam"], dtype=np.float32)
    small = cam.reshape(12, 2, 12, 2, -1).mean((1, 3)).astype(np.float32)
    up = np.moveaxis(upsample(torch.from_numpy(np.moveaxis(small, -1, 0).copy()), (24, 24)).numpy(), 0, -1)
    ref, _, _ = pseudo_label_volume(box_files["ct"], up, None, PseudoLabelSettings(mode="cam"),
                                    inputs=InputSettings(**SETTINGS), probabilities=PROBS)
    got, _, _ = pseudo_label_volume(box_files["ct"], small, None, PseudoLabelSettings(mode="cam"),
                                    inputs=InputSettings(**SETTINGS), probabilities=PROBS)
    np.testing.assert_array_equal(got, ref)
    assert got[..., 0].any()
