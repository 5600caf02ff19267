"""Value tests of hemwsl.engines.segmentation, the logic of bundles/ich_unet3d."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from hemwsl.data.dataset import LoadCTVolumed
from hemwsl.data.io import load_volume, save_nifti
from hemwsl.engines.classifier import fold_datalists
from hemwsl.engines.segmentation import (
    SegmentationHistory,
    equalize_transform,
    evaluate_segmentation,
    gate_segmentation,
    load_segmentation_datalist,
    read_metrics_csv,
    resize_to_grid,
    run_segmentation_inference,
    segmentation_datalists,
    summarize_segmentation,
)
from hemwsl.errors import HemwslInputError
from hemwsl.metrics.volume import lesion_volume_ml, volume_metrics

SPACING = (0.5, 0.5, 5.0)
AFFINE = np.diag([*SPACING, 1.0])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _blocks(shape=(32, 32, 4), boxes=((4, 12, 8, 20, 1, 3),)) -> np.ndarray:
    """A mask made of boxes whose in-plane edges are multiples of 4 (exact at a 4x in-plane resize)."""
    m = np.zeros(shape, np.uint8)
    for x0, x1, y0, y1, z0, z1 in boxes:
        m[x0:x1, y0:y1, z0:z1] = 1
    return m


# ------------------------------------------------------------------------------------------- resizing
def test_resize_back_to_ct_grid_restores_hand_built_mask():
    mask = _blocks((64, 64, 3), ((4, 12, 8, 28, 0, 2), (40, 60, 36, 40, 1, 3)))
    small = LoadCTVolumed(spatial_size=(16, 16))._resize(torch.from_numpy(mask)[None].float(), "nearest")[0]
    assert small.shape == (16, 16, 3)
    assert int(small.sum()) * 16 == int(mask.sum())  # nearest down-sampling kept whole 4x4 blocks
    # nearest: exactly the original mask
    np.testing.assert_array_equal(resize_to_grid(small, (64, 64), mode="nearest").numpy(), mask)
    # bilinear then > 0.5: the same but for one voxel at each box corner per slice, where the
    # interpolated value is 0.625 * 0.625 < 0.5 (2 boxes x 4 corners x 2 slices each)
    back = (resize_to_grid(small, (64, 64), mode="bilinear") > 0.5).numpy()
    diff = np.argwhere(back != mask.astype(bool))
    assert len(diff) == 16 and not back[tuple(diff.T)].any()
    corners = {(x, y) for x in (4, 11) for y in (8, 27)} | {(x, y) for x in (40, 59) for y in (36, 39)}
    assert {(x, y) for x, y, _ in diff} == corners
    same = torch.rand(8, 8, 2)
    assert resize_to_grid(same, (8, 8)) is same
    with pytest.raises(HemwslInputError, match="mode"):
        resize_to_grid(same, (16, 16), mode="cubic")
    with pytest.raises(HemwslInputError, match="volume"):
        resize_to_grid(torch.zeros(8, 8), (16, 16))


# ------------------------------------------------------------------------------------------- datalists
def test_bad_datalist_entries_name_the_file(tmp_path, synthetic_datalist):
    p = tmp_path / "dl.json"
    with pytest.raises(HemwslInputError, match="dl.json: datalist file not found"):
        load_segmentation_datalist(p)
    p.write_text("{not json")
    with pytest.raises(HemwslInputError, match="dl.json: corrupt"):
        load_segmentation_datalist(p)
    e = synthetic_datalist[0]
    p.write_text(json.dumps([{"image": e["image"], "patient": e["patient"]}]))
    with pytest.raises(HemwslInputError, match=r"dl.json: entry 0: missing or empty key\(s\) \['label'\]"):
        load_segmentation_datalist(p)
    p.write_text(json.dumps([{"image": e["image"], "label": str(tmp_path / "nope.nii.gz"), "patient": e["patient"]}]))
    with pytest.raises(HemwslInputError, match="label file .*nope.nii.gz not found"):
        load_segmentation_datalist(p)
    # relative paths are found next to the datalist
    save_nifti(np.zeros((4, 4, 2), np.uint8), AFFINE, tmp_path / "rel.nii.gz")
    p.write_text(json.dumps([{"image": e["image"], "label": "rel.nii.gz", "patient": 7}]))
    (entry,) = load_segmentation_datalist(p)
    assert entry["label"] == str(tmp_path / "rel.nii.gz") and entry["patient"] == "7"


def test_pseudo_labels_train_true_masks_evaluate(tmp_path, synthetic_root, synthetic_datalist):
    """Folds are the classifier's; training labels come from the pseudo datalist, val/test from the true masks."""
    pseudo = []
    for e in synthetic_datalist:
        path = tmp_path / f"pseudo_{e['patient']}.nii.gz"
        vol = load_volume(e["image"])
        save_nifti(np.zeros(vol.shape, np.uint8), vol.affine, path)
        pseudo.append({"image": e["image"], "label": str(path), "patient": e["patient"], "positive": 0})
    (tmp_path / "pseudo.json").write_text(json.dumps(pseudo))
    reference = fold_datalists(synthetic_datalist, n_folds=4, fold=2, seed=0, val_fraction=0.15)
    parts = segmentation_datalists(synthetic_root, datalist_file=tmp_path / "pseudo.json", n_folds=4, fold=2)
    for name in ("train", "val", "test"):
        assert [e["patient"] for e in parts[name]] == [e["patient"] for e in reference[name]]
    assert all("pseudo_" in e["label"] for e in parts["train"])
    evaluated = parts["val"] + parts["test"]
    assert [e["label"] for e in evaluated] == [e["label"] for e in reference["val"] + reference["test"]]
    # fully supervised: the true masks everywhere, the same folds
    assert segmentation_datalists(synthetic_root, n_folds=4, fold=2) == reference
    # an eval datalist without positivity keys gets it from the masks, so the folds still match
    minimal = [{"image": e["image"], "label": e["label"], "patient": e["patient"]} for e in synthetic_datalist]
    (tmp_path / "true.json").write_text(json.dumps(minimal))
    parts2 = segmentation_datalists(eval_datalist_file=tmp_path / "true.json", n_folds=4, fold=2)
    assert [e["patient"] for e in parts2["test"]] == [e["patient"] for e in reference["test"]]
    pseudo.append(dict(pseudo[0], patient="999"))
    (tmp_path / "pseudo.json").write_text(json.dumps(pseudo))
    with pytest.raises(HemwslInputError, match=r"pseudo.json: patient\(s\) \['999'\] are not in the evaluation"):
        segmentation_datalists(synthetic_root, datalist_file=tmp_path / "pseudo.json", n_folds=4, fold=2)
    with pytest.raises(HemwslInputError, match="dataset_dir"):
        segmentation_datalists()


# ------------------------------------------------------------------------------------------- transforms
def test_equalize_transform_toggle():
    img = torch.rand(1, 8, 8, 2)
    brain = torch.zeros(1, 8, 8, 2, dtype=torch.uint8)
    brain[:, 2:6, 2:6] = 1
    d = {"image": img, "brain": brain}
    assert torch.equal(equalize_transform(False)(d)["image"], img)
    from hemwsl.transforms import HistogramEqualize

    expected = HistogramEqualize()(img, mask=brain)
    np.testing.assert_allclose(np.asarray(equalize_transform(True)(d)["image"]), np.asarray(expected))


# ------------------------------------------------------------------------------------------- evaluation
class _Oracle(torch.nn.Module):
    """Logits +-10 from the (already down-sampled) mask the test transform puts in the image."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return (x[:, :1] * 2 - 1) * 10


def _case(tmp_path, name, gt, pred):
    img = np.full(gt.shape, 30.0, np.float32)
    save_nifti(img, AFFINE, tmp_path / f"{name}_ct.nii.gz")
    save_nifti(gt, AFFINE, tmp_path / f"{name}_gt.nii.gz")
    small = LoadCTVolumed(spatial_size=(8, 8))._resize(torch.from_numpy(pred)[None].float(), "nearest")
    return {"image": str(tmp_path / f"{name}_ct.nii.gz"), "label": str(tmp_path / f"{name}_gt.nii.gz"),
            "patient": name}, small


def test_evaluate_writes_metrics_of_hemwsl_volume_and_resumes(tmp_path):
    gt_a = _blocks(boxes=((4, 12, 8, 20, 1, 3),))
    pred_a = _blocks(boxes=((8, 16, 8, 20, 1, 4),))  # shifted and one slice longer
    gt_b = np.zeros((32, 32, 4), np.uint8)  # a negative patient with a false positive
    pred_b = _blocks(boxes=((20, 24, 20, 24, 0, 1),))
    entries, smalls = zip(*[_case(tmp_path, "a", gt_a, pred_a), _case(tmp_path, "b", gt_b, pred_b)])
    small_by_image = {e["image"]: s for e, s in zip(entries, smalls)}

    def transform(d):
        return {"image": small_by_image[d["image"]]}

    net = _Oracle()
    inferer = lambda x, network: network(x)  # noqa: E731
    out = tmp_path / "fold0"
    summary = evaluate_segmentation(net, list(entries), out, transform, inferer, name="test", resample="nearest")
    assert net.calls == 2
    np.testing.assert_array_equal(load_volume(out / "predictions_test" / "a.nii.gz", kind="mask").array, pred_a)
    assert np.allclose(load_volume(out / "predictions_test" / "a.nii.gz", kind="mask").affine, AFFINE)
    rows = read_metrics_csv(out / "metrics_test.csv")
    assert [r["patient"] for r in rows] == ["a", "b"] and [r["gt_positive"] for r in rows] == [1, 0]
    for r, gt, pred in zip(rows, (gt_a, gt_b), (pred_a, pred_b)):
        ref = volume_metrics(pred, gt, SPACING)
        for k, v in ref.items():
            assert (math.isnan(v) and math.isnan(r[k])) or r[k] == pytest.approx(v, rel=1e-5), k
        assert r["inter_ml"] == pytest.approx(lesion_volume_ml(pred & gt, SPACING), rel=1e-5)
    # by hand: |gt_a| = 8*12*2 = 192 voxels, |pred_a| = 8*12*3 = 288, overlap 4*12*2 = 96
    assert rows[0]["dice"] == pytest.approx(2 * 96 / (192 + 288))
    assert rows[0]["gt_ml"] == pytest.approx(192 * 1.25 / 1000)
    assert summary["positive"]["dice"]["mean"] == pytest.approx(2 * 96 / 480)
    assert summary["negative"] == {"n": 1, "with_false_positive": 1, "mean_pred_ml": pytest.approx(16 * 1.25 / 1000)}
    assert summary["pooled"]["dice"] == pytest.approx(2 * 96 / (192 + 288 + 16))
    assert json.loads((out / "summary_test.json").read_text())["n_positive"] == 1

    # resume: the existing prediction of "a" is reused, only "b" is predicted again
    (out / "predictions_test" / "b.nii.gz").unlink()
    net2 = _Oracle()
    again = evaluate_segmentation(net2, list(entries), out, transform, inferer, name="test", resample="nearest")
    assert net2.calls == 1
    assert again["pooled"] == summary["pooled"]

    bad = dict(entries[0], label=None)
    with pytest.raises(HemwslInputError, match="patient 'a'.*no true mask"):
        evaluate_segmentation(net, [bad], tmp_path / "x", transform, inferer)

    # gated by the slice classifier: "a" keeps slices 1-2 (its slice 3 is called negative), "b" loses its
    # false positive on slice 0; the predictions written above are not touched
    probs = {"a": np.array([0.9, 0.8, 0.6, 0.2]), "b": np.array([0.1, 0.9, 0.9, np.nan])}
    gated = gate_segmentation(list(entries), out, probs, prob_threshold=0.5)
    kept_a = pred_a * np.array([1, 1, 1, 0], np.uint8)[None, None, :]
    np.testing.assert_array_equal(load_volume(out / "predictions_test_gated" / "a.nii.gz", kind="mask").array, kept_a)
    assert not load_volume(out / "predictions_test_gated" / "b.nii.gz", kind="mask").array.any()
    np.testing.assert_array_equal(load_volume(out / "predictions_test" / "a.nii.gz", kind="mask").array, pred_a)
    g_rows = read_metrics_csv(out / "metrics_test_gated.csv")
    assert g_rows[0]["dice"] == pytest.approx(2 * 96 / (192 + 192))  # the extra slice is gone
    assert gated["negative"]["with_false_positive"] == 0
    assert json.loads((out / "summary_test_gated.json").read_text())["gated_from"] == "test"
    with pytest.raises(HemwslInputError, match="patient b: 3 slice probabilities for a prediction of 4 slices"):
        gate_segmentation(list(entries), out, {**probs, "b": np.ones(3)})
    with pytest.raises(HemwslInputError, match="patient b: no slice probabilities"):
        gate_segmentation(list(entries), out, {"a": probs["a"]})
    with pytest.raises(HemwslInputError, match="predictions_x.*not found"):
        gate_segmentation(list(entries), out, probs, name="x")


def test_inference_writes_mask_and_volume(tmp_path):
    pred = _blocks(boxes=((4, 12, 8, 20, 1, 3),))
    entry, small = _case(tmp_path, "c", pred, pred)
    net = _Oracle()
    res = run_segmentation_inference(net, entry["image"], tmp_path / "inf", lambda d: {"image": small},
                                     lambda x, n: n(x), resample="nearest")
    assert res[0]["volume_ml"] == pytest.approx(8 * 12 * 2 * 0.5 * 0.5 * 5 / 1000)
    np.testing.assert_array_equal(load_volume(tmp_path / "inf" / "c_ct_mask.nii.gz", kind="mask").array, pred)
    assert json.loads((tmp_path / "inf" / "c_ct_volume.json").read_text())["voxels"] == 192
    run_segmentation_inference(net, [entry["image"]], tmp_path / "inf", lambda d: {"image": small}, lambda x, n: n(x))
    assert net.calls == 1  # second call skipped the done volume
    with pytest.raises(HemwslInputError, match="images is empty"):
        run_segmentation_inference(net, [], tmp_path / "inf", None, None)


def test_summary_by_hand():
    rows = [
        {"patient": "1", "gt_positive": 1, "dice": 0.5, "rvd": 0.2, "tpr": 0.6, "hd95": 4.0, "assd": 1.0,
         "surface_dice": 0.7, "pred_ml": 3.0, "gt_ml": 1.0, "inter_ml": 1.0},
        {"patient": "2", "gt_positive": 1, "dice": 0.0, "rvd": -1.0, "tpr": 0.0, "hd95": float("nan"),
         "assd": float("nan"), "surface_dice": 0.0, "pred_ml": 0.0, "gt_ml": 2.0, "inter_ml": 0.0},
        {"patient": "3", "gt_positive": 0, "dice": 1.0, "rvd": 0.0, "tpr": float("nan"), "hd95": 0.0, "assd": 0.0,
         "surface_dice": 1.0, "pred_ml": 0.0, "gt_ml": 0.0, "inter_ml": 0.0},
    ]
    s = summarize_segmentation(rows)
    assert s["n_patients"] == 3 and s["n_positive"] == 2
    assert s["positive"]["dice"] == {"mean": 0.25, "sd": pytest.approx(np.std([0.5, 0.0], ddof=1)), "n": 2}
    assert s["positive"]["hd95"]["n"] == 1 and s["positive"]["hd95"]["mean"] == 4.0
    assert s["negative"] == {"n": 1, "with_false_positive": 0, "mean_pred_ml": 0.0}
    assert s["pooled"]["dice"] == pytest.approx(2 * 1.0 / (3.0 + 3.0))


def test_history_records_validation_epochs(tmp_path):
    class State:
        def __init__(self, epoch, metrics=None, output=None):
            self.epoch, self.metrics, self.output = epoch, metrics or {}, output

    class Eng:
        def __init__(self, state):
            self.state = state

    ev = Eng(State(1, {"val_mean_dice": 0.25}))
    h = SegmentationHistory(tmp_path, evaluator=ev)
    trainer = Eng(State(1))
    h._start(trainer)
    for loss in (1.0, 0.5):
        trainer.state.output = [{"loss": torch.tensor(loss)}]
        h._iteration(trainer)
    h(trainer)
    trainer.state.epoch = 2  # no validation at epoch 2
    h._start(trainer)
    h(trainer)
    recs = json.loads((tmp_path / "history.json").read_text())["epochs"]
    assert recs[0]["train_loss"] == 0.75 and recs[0]["val_mean_dice"] == 0.25
    assert recs[1]["epoch"] == 2 and "val_mean_dice" not in recs[1]


@pytest.mark.slow
@pytest.mark.realdata
def test_real_data_folds_are_the_classifiers(real_data_dir):
    from hemwsl.data.datalist import build_datalist

    reference = fold_datalists(build_datalist("ct-ich", real_data_dir), n_folds=5, fold=0, seed=0, val_fraction=0.15)
    parts = segmentation_datalists(real_data_dir, n_folds=5, fold=0, seed=0, val_fraction=0.15)
    for name in ("train", "val", "test"):
        assert [e["patient"] for e in parts[name]] == [e["patient"] for e in reference[name]]
    assert [len(parts[k]) for k in ("train", "val", "test")] == [37, 7, 11]
