"""The CAM localisation benchmark: specs, vectorised threshold search, rows, statistics, the runner."""

from __future__ import annotations

import csv
from pathlib import Path
import math

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage, stats

from hemwsl.benchmark import (
    aggregate,
    counts_dice,
    candidate_dice,
    cv_folds,
    holm,
    paired_test,
    parse_threshold_grid,
    parse_threshold_spec,
    read_rows,
    run_benchmark,
    slice_rows,
    split_folds,
)
from hemwsl.benchmark.specs import DEFAULT_CANDIDATES
from hemwsl.errors import HemwslInputError
from hemwsl.metrics.localisation import compute_dice
from hemwsl.thresholds import FixedThreshold


# --------------------------------------------------------------------------------------------- specs
def test_specs_parse_and_build_strategies():
    s = parse_threshold_spec("fixed:200/255")
    assert s.kind == "fixed" and s.value == pytest.approx(200 / 255) and not s.prior
    heat = np.zeros((1, 4, 4))
    heat[0, 1, 1], heat[0, 2, 2] = 1.0, 0.5
    brain = np.ones((1, 4, 4), bool)
    assert s.strategy()(heat, brain=brain).sum() == 1
    p = parse_threshold_spec("prior+fixed:0.3")
    hu = np.full((1, 4, 4), 30.0)
    hu[0, 2, 2] = 60.0  # only the hyperdense pixel survives the AND
    mask = p.strategy()(heat, image_hu=hu, brain=brain)
    assert mask[0, 2, 2] and mask.sum() == 1
    assert parse_threshold_spec("prior").needs_heatmap is False
    assert parse_threshold_spec("search").needs_fit
    with pytest.raises(HemwslInputError, match="value chosen"):
        parse_threshold_spec("search").strategy()
    for bad, match in [("fixd:0.5", "unknown threshold"), ("fixed", "needs a value"), ("fixed:1.5", r"\[0, 1\)"),
                       ("percentile:120", "percentile"), ("otsu:3", "takes no value"), ("fixed:a/b", "not a number")]:
        with pytest.raises(HemwslInputError, match=match):
            parse_threshold_spec(bad)
    with pytest.raises(HemwslInputError, match="more than once"):
        parse_threshold_grid(["otsu", "otsu"])


def test_candidate_dice_equals_threshold_then_dice():
    rng = np.random.default_rng(0)
    heat = rng.random((5, 16, 16)).astype(np.float32)
    heat[3] = 0.0  # constant map: empty prediction
    gt = rng.random((5, 16, 16)) > 0.7
    gt[4] = False  # empty ground truth
    allowed = rng.random((5, 16, 16)) > 0.2
    cands = [0.1, 0.35, 0.6, 0.9]
    got = candidate_dice(heat, gt, allowed, cands)
    for j, t in enumerate(cands):
        pred = FixedThreshold(t, normalisation="minmax", per_sample=True)(heat, brain=allowed)
        np.testing.assert_allclose(got[:, j], compute_dice(pred, gt).numpy(), atol=1e-12)


def test_candidate_dice_on_quantised_maps_and_empty_slices():
    """Maps rendered in 20 levels put pixels exactly on the candidates: the search must count ``map > t`` as the
    applied threshold does (a ``searchsorted`` on the wrong side shifts its Dice); a slice empty in both the
    prediction and the truth scores 1 (the empty policy), not 0."""
    rng = np.random.default_rng(4)
    heat = (rng.integers(0, 21, (6, 16, 16)) / 20.0).astype(np.float32)  # values on the 0.05 grid
    heat[:, 0, 0], heat[:, 0, 1] = 0.0, 1.0  # min-max normalisation keeps the grid
    gt = rng.random((6, 16, 16)) > 0.6
    gt[5] = False
    allowed = np.ones((6, 16, 16), bool)
    allowed[5] = False  # nothing predicted on slice 5 either: empty and empty
    cands = list(DEFAULT_CANDIDATES)
    got = candidate_dice(heat, gt, allowed, cands)
    for j, t in enumerate(cands):
        pred = FixedThreshold(t, normalisation="minmax", per_sample=True)(heat, brain=allowed)
        np.testing.assert_allclose(got[:, j], compute_dice(pred, gt).numpy(), atol=1e-12)
    assert np.all(got[5] == 1.0)
    counts = np.zeros((2, 1, 3), np.int64)
    counts[1, 0] = (0, 5, 7)
    np.testing.assert_array_equal(counts_dice(counts), [[1.0], [0.0]])


def test_slice_rows_hand_values():
    gt = np.zeros((2, 8, 8), bool)
    gt[0, 2:4, 2:4] = True  # 4 pixels
    gt[1, 0, 0] = True
    pred = np.zeros_like(gt)
    pred[0, 2:4, 2:6] = True  # 8 pixels, 4 overlap
    heat = np.zeros((2, 8, 8), np.float32)
    heat[0, 3, 3] = 1.0  # inside the lesion
    heat[1, 5, 5] = 1.0  # outside
    r = slice_rows(pred, gt, heat)
    np.testing.assert_allclose(r["dice"], [2 * 4 / 12, 0.0])
    np.testing.assert_allclose(r["iou"], [4 / 8, 0.0])
    np.testing.assert_allclose(r["hit"], [1.0, 0.0])
    np.testing.assert_allclose(r["pointing"], [1.0, 0.0])
    np.testing.assert_array_equal(r["tp"], [4, 0])
    np.testing.assert_array_equal(r["fp"], [4, 0])
    np.testing.assert_array_equal(r["fn"], [0, 1])


def test_slice_rows_equal_the_metric_functions():
    from hemwsl.metrics.localisation import (
        compute_box_dice,
        compute_box_iou,
        compute_hit,
        compute_iou,
        compute_pointing_game,
    )

    rng = np.random.default_rng(1)
    gt = rng.random((6, 20, 20)) > 0.85
    pred = rng.random((6, 20, 20)) > 0.8
    gt[0], pred[0] = False, False  # both empty
    gt[1] = False  # false alarm
    pred[2] = False  # miss
    heat = rng.random((6, 20, 20)).astype(np.float32)
    r = slice_rows(pred, gt, heat)
    for name, fn in [("dice", compute_dice), ("iou", compute_iou), ("box_dice", compute_box_dice),
                     ("box_iou", compute_box_iou), ("hit", compute_hit)]:
        np.testing.assert_allclose(r[name], fn(pred, gt).numpy(), atol=1e-12, err_msg=name)
    np.testing.assert_allclose(r["pointing"], compute_pointing_game(heat, gt).numpy())


def test_holm_and_paired_test_against_scipy():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, float("nan")])[:3], [0.03, 0.06, 0.06])
    assert math.isnan(holm([float("nan")])[0])
    a = {str(i): v for i, v in enumerate([0.5, 0.6, 0.2, 0.9, 0.4, 0.7])}
    b = {str(i): v for i, v in enumerate([0.4, 0.3, 0.25, 0.5, 0.1, 0.65])}
    b["extra"] = 1.0  # not paired: ignored
    t = paired_test(a, b)
    d = np.array([a[k] - b[k] for k in sorted(a)])
    assert t["n"] == 6 and t["mean_diff"] == pytest.approx(d.mean())
    assert t["p"] == pytest.approx(stats.wilcoxon(d).pvalue)


def test_aggregate_global_dice_pools_pixels():
    rows = [
        {"level": "slice", "patient": "a", "dice": 1.0, "iou": 1.0, "box_dice": 1, "box_iou": 1, "hit": 1,
         "pointing": 1, "tp": 10, "fp": 0, "fn": 0},
        {"level": "slice", "patient": "b", "dice": 0.0, "iou": 0.0, "box_dice": 0, "box_iou": 0, "hit": 0,
         "pointing": 0, "tp": 0, "fp": 5, "fn": 90},
    ]
    a = aggregate(rows, n_boot=20)
    assert a["dice"] == 0.5  # per-slice mean
    assert a["global_dice"] == pytest.approx(20 / (20 + 5 + 90))  # pooled
    assert a["low_iou_rate"] == 0.5
    lo, hi = a["dice_ci"]
    assert 0.0 <= lo <= hi <= 1.0


# --------------------------------------------------------------------------------------------- runner
@pytest.fixture(scope="module")
def bench_data(tmp_path_factory):
    """Phantoms + two hand-made 'methods': a blurred ground truth (oracle) and uniform noise."""
    from hemwsl.data.datalist import build_datalist
    from hemwsl.data.synthetic import write_synthetic_ctich

    root = tmp_path_factory.mktemp("bench")
    write_synthetic_ctich(root / "data", n_patients=8, shape=(48, 48, 10), seed=3)
    datalist = build_datalist("ct-ich", root / "data")
    rng = np.random.default_rng(0)
    cam = root / "cam"
    for e in datalist:
        mask_img = nib.load(e["label"])
        gt = np.asarray(mask_img.dataobj) > 0
        oracle = np.stack([ndimage.gaussian_filter(gt[:, :, z].astype(np.float32), 1.0) for z in range(gt.shape[2])], -1)
        small = oracle.reshape(24, 2, 24, 2, -1).mean((1, 3))  # the 'input' grid of a classifier at half size
        from hemwsl.cam import resized_affine

        for method, arr, aff in [("oracle", oracle, mask_img.affine),
                                 ("noise", rng.random(gt.shape).astype(np.float32), mask_img.affine),
                                 ("oracle_small", small, resized_affine(mask_img.affine, gt.shape[:2], small.shape[:2]))]:
            path = cam / method / "l1" / f"{e['patient']}.nii.gz"
            path.parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(np.ascontiguousarray(arr), aff), str(path))
    return datalist, cam


def _grid():
    return ["fixed:0.5", "otsu", "search", "prior", "prior+search"]


def test_runner_ranks_oracle_first_and_never_tunes_on_test(bench_data, tmp_path):
    datalist, cam = bench_data
    folds = cv_folds(datalist, n_folds=4, seed=0, val_fraction=0.25)
    out = run_benchmark(datalist, cam, tmp_path / "rep", thresholds=_grid(), folds=folds, n_boot=30, progress=False,
                        candidates=[0.1, 0.3, 0.5, 0.7, 0.9])
    for name in ("per_case.csv", "summary.md", "summary.csv", "thresholds.csv", "choices.csv",
                 "figures/iou_histograms.png", "figures/overlay_oracle.png"):
        assert (out / name).is_file(), name
    rows = read_rows(out / "per_case.csv")
    patients_pos = {e["patient"] for e in datalist if any(e["slice_labels"])}
    assert {r["patient"] for r in rows if r["level"] == "slice"} == patients_pos
    with open(out / "summary.csv", newline="") as f:
        summ = {(r["method"], r["threshold"]): r for r in csv.DictReader(f)}
    assert float(summ[("oracle", "search")]["dice"]) > 0.6
    assert float(summ[("noise", "search")]["dice"]) < 0.3
    # the input-grid copy of the oracle, upsampled back, scores like the oracle
    assert float(summ[("oracle_small", "fixed:0.5")]["dice"]) == pytest.approx(
        float(summ[("oracle", "fixed:0.5")]["dice"]), abs=0.08)
    text = (out / "summary.md").read_text()
    first = [line for line in text.splitlines() if line.startswith("| ")][1]
    assert first.split("|")[1].strip().startswith("oracle")
    # each fold's searched threshold is the argmax over its selection patients only
    test_fold, selection = folds
    with open(out / "thresholds.csv", newline="") as f:
        chosen = [r for r in csv.DictReader(f) if r["method"] == "noise" and r["threshold"] == "search"]
    for r in chosen:
        k = int(r["fold"])
        per = [np.load(out / "selection" / f"{p}.npz") for p in sorted(selection[k])]
        per = [z["noise|l1|search"] for z in per if "noise|l1|search" in z.files]  # negatives: no scored slice
        scores = np.nanmean(counts_dice(np.concatenate(per)), 0)
        assert float(r["value"]) == [0.1, 0.3, 0.5, 0.7, 0.9][int(np.nanargmax(scores))]
        assert not (selection[k] & {p for p, f in test_fold.items() if f == k})


def test_runner_resumes_and_refuses_other_settings(bench_data, tmp_path):
    datalist, cam = bench_data
    kw = dict(thresholds=["fixed:0.5"], methods=["oracle"], n_boot=10, progress=False, figures=False,
              folds=cv_folds(datalist, n_folds=4, seed=0, val_fraction=0.25))
    out = run_benchmark(datalist, cam, tmp_path / "rep", **kw)
    before = {p: p.stat().st_mtime_ns for p in (out / "per_case").iterdir()}
    run_benchmark(datalist, cam, tmp_path / "rep", **kw)
    assert {p: p.stat().st_mtime_ns for p in (out / "per_case").iterdir()} == before
    with pytest.raises(HemwslInputError, match="other settings"):
        run_benchmark(datalist, cam, tmp_path / "rep", **{**kw, "thresholds": ["otsu"]})


def test_runner_split_mode_predicted_slices(bench_data, tmp_path):
    datalist, cam = bench_data
    patients = [e["patient"] for e in datalist]
    folds = split_folds({"train": patients[:2], "val": patients[2:5], "test": patients[5:]})
    preds = {"patient": [], "slice": [], "label": [], "prob": []}
    for e in datalist:
        for z, lab in enumerate(e["slice_labels"]):
            preds["patient"].append(e["patient"])
            preds["slice"].append(z)
            preds["label"].append([lab])
            preds["prob"].append([0.9 if (lab or z == 0) else 0.1])  # one false-positive slice per patient
    preds = {k: np.array(v) for k, v in preds.items()}
    out = run_benchmark(datalist, cam, tmp_path / "rep", thresholds=["search"], methods=["oracle"], folds=folds,
                        slices="predicted", predictions=preds, n_boot=10, progress=False)
    rows = read_rows(out / "per_case.csv")
    assert {r["patient"] for r in rows if r["part"] == "test"} == set(patients[5:])
    assert {r["patient"] for r in rows if r["part"] == "selection"} == set(patients[2:5])
    slices0 = {r["slice"] for r in rows if r["level"] == "slice" and r["patient"] == patients[5]}
    assert 0 in slices0
    assert (out / "figures" / "classifier_pr.png").is_file()
    assert "classifier calls positive" in (out / "summary.md").read_text()
    assert "pooled (global) Dice" in (out / "summary.md").read_text()  # the default selection with such slices
    with open(out / "thresholds.csv", newline="") as f:
        (choice,) = list(csv.DictReader(f))
    counts = np.concatenate([np.load(out / "selection" / f"{p}.npz")["oracle|l1|search"] for p in patients[2:5]])
    pooled = counts_dice(counts, pooled=True)
    assert float(choice["value"]) == DEFAULT_CANDIDATES[int(np.argmax(pooled))]
    assert choice["selection_metric"] == "global_dice"


def test_runner_bad_inputs_are_named(bench_data, tmp_path):
    datalist, cam = bench_data
    folds = cv_folds(datalist, n_folds=4, seed=0, val_fraction=0.25)
    with pytest.raises(HemwslInputError, match="gradcam"):
        run_benchmark(datalist, cam, tmp_path / "a", methods=["gradcam"], folds=folds, progress=False)
    with pytest.raises(HemwslInputError, match="unknown threshold"):
        run_benchmark(datalist, cam, tmp_path / "b", thresholds=["triangle"], folds=folds, progress=False)
    with pytest.raises(HemwslInputError, match="predictions"):
        run_benchmark(datalist, cam, tmp_path / "c", slices="predicted", folds=folds, progress=False)
    with pytest.raises(HemwslInputError, match="CAM folder not found"):
        run_benchmark(datalist, tmp_path / "nowhere", tmp_path / "d", folds=folds, progress=False)
    # a heatmap with the wrong number of slices names its file
    broken = tmp_path / "cam"
    victim = datalist[0]["patient"]
    for e in datalist:
        p = broken / "m" / "l" / f"{e['patient']}.nii.gz"
        p.parent.mkdir(parents=True, exist_ok=True)
        depth = 3 if e["patient"] == victim else nib.load(e["label"]).shape[2]
        nib.save(nib.Nifti1Image(np.zeros((48, 48, depth), np.float32), np.eye(4)), str(p))
    with pytest.raises(HemwslInputError, match=f"{victim}.nii.gz"):
        run_benchmark(datalist, broken, tmp_path / "e", thresholds=["otsu"], slices="all", folds=folds,
                      progress=False)
    torch.manual_seed(0)


def test_command_line(bench_data, tmp_path, capsys):
    from hemwsl.cli import main

    datalist, cam = bench_data
    root = str(Path(datalist[0]["image"]).parents[1])
    args = ["benchmark", "--dataset-dir", root, "--cam-dir", str(cam), "--out", str(tmp_path / "rep"), "--folds", "4",
            "--val-fraction", "0.25", "--methods", "oracle", "noise", "--thresholds", "otsu", "search", "--n-boot", "10",
            "--no-figures"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "| oracle |" in text and "Wilcoxon" in text
    assert (tmp_path / "rep" / "summary.md").is_file()
    assert main(args[:-9] + ["--thresholds", "triangle"]) == 2
    assert "triangle" in capsys.readouterr().err
    assert main(["cam-cv", "--dataset-dir", root, "--cv-dir", str(tmp_path / "nocv"), "--out", str(tmp_path / "c")]) == 2
    assert "fold0" in capsys.readouterr().err


def test_command_line_candidates(bench_data, tmp_path, capsys):
    """``--candidates``: the search chooses among the given values only (recorded in config.json and
    thresholds.csv); a changed grid is refused in the same folder; values outside [0, 1) are one line."""
    import csv
    import json

    from hemwsl.cli import main

    datalist, cam = bench_data
    root = str(Path(datalist[0]["image"]).parents[1])
    args = ["benchmark", "--dataset-dir", root, "--cam-dir", str(cam), "--out", str(tmp_path / "rep"), "--folds", "4",
            "--val-fraction", "0.25", "--methods", "oracle", "noise", "--thresholds", "search", "--n-boot", "10",
            "--no-figures", "--candidates", "0.3", "0.02", "0.6"]
    assert main(args) == 0
    capsys.readouterr()
    assert json.loads((tmp_path / "rep" / "config.json").read_text())["candidates"] == [0.02, 0.3, 0.6]
    with open(tmp_path / "rep" / "thresholds.csv", newline="") as f:
        values = {float(r["value"]) for r in csv.DictReader(f)}
    assert values and values <= {0.02, 0.3, 0.6}
    assert main(args[:-3] + ["0.4"]) == 2
    assert "other settings" in capsys.readouterr().err
    for bad in (["1.5"], ["-0.1"], ["0.2", "0.2"]):
        assert main(args[:-3] + bad) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--candidates must be distinct values in [0, 1)" in err[0]


def test_bundle_config(bench_data, tmp_path):
    """bundles/ich_cam/configs/benchmark.yaml, layered on the classifier's train.yaml, runs the runner."""
    from monai.bundle import ConfigWorkflow

    from hemwsl.engines.bundle import config_files

    datalist, cam = bench_data
    files = config_files("ich_classifier", ["train"]) + config_files("ich_cam", ["benchmark"])
    wf = ConfigWorkflow(config_file=files, workflow_type=None, dataset_dir=str(Path(datalist[0]["image"]).parents[1]),
                        output_dir=str(tmp_path), benchmark_cam_dir=str(cam), n_folds=4, val_fraction=0.25,
                        benchmark_methods=["oracle"], benchmark_thresholds=["fixed:0.5", "prior"], benchmark_n_boot=10,
                        benchmark_brain_erosion=[0, 1])
    wf.initialize()
    wf.run()
    assert (tmp_path / "benchmark" / "summary.md").is_file()
    text = (tmp_path / "benchmark" / "summary.md").read_text()
    assert "| oracle |" in text and "`fixed:0.5[e0,min0]`" in text and "erosion [0, 1] px" in text


def test_post_processing_options(bench_data, tmp_path):
    from hemwsl.benchmark import load_patient

    datalist, cam = bench_data
    entry = next(e for e in datalist if any(e["slice_labels"]))
    plain, eroded = load_patient(entry), load_patient(entry, brain_erosion=2)
    assert (eroded.brain <= plain.brain).all() and eroded.brain.sum() < plain.brain.sum()
    folds = cv_folds(datalist, n_folds=4, seed=0, val_fraction=0.25)
    out = run_benchmark(datalist, cam, tmp_path / "rep", thresholds=["fixed:0.5", "prior"], methods=["oracle"],
                        folds=folds, min_size=10**6, brain_erosion=1, n_boot=10, progress=False, figures=False)
    rows = [r for r in read_rows(out / "per_case.csv") if r["level"] == "slice"]
    assert rows and all(r["tp"] + r["fp"] == 0 for r in rows)  # every component is under 10**6 pixels
    assert "eroded by 1 px" in (out / "summary.md").read_text()


def test_post_processing_grid_is_chosen_on_selection_patients(bench_data, tmp_path):
    """Several erosions / HU ranges / component sizes: one spec per combination, chosen per fold on the
    selection patients like the (layer, threshold); the chosen one is the selection argmax."""
    from hemwsl.benchmark import load_patient
    from hemwsl.benchmark.specs import expand_post_grid, post_grid

    datalist, cam = bench_data
    entry = next(e for e in datalist if any(e["slice_labels"]))
    np.testing.assert_array_equal(load_patient(entry).brain_at(2), load_patient(entry, brain_erosion=2).brain)
    grid = post_grid([0, 1], [[45, 90], [50, 90]], [0, 10**6])
    specs = expand_post_grid(["search", "prior", "prior+search"], grid)
    names = [s.text for s in specs]
    assert len(grid) == 8 and len(names) == 4 + 8 + 8 and len(set(names)) == len(names)
    assert "search[e1,min0]" in names and "prior+search[e1,hu50-90,min1000000]" in names
    for s in specs:  # the name is the whole spec
        assert parse_threshold_spec(s.text) == s
    assert [s.text for s in expand_post_grid(["prior"], post_grid(1, (50, 90), 5))] == ["prior"]  # one: plain name
    with pytest.raises(HemwslInputError, match="min_size"):
        post_grid(0, (45, 90), [-1])
    with pytest.raises(HemwslInputError, match="hu_range"):
        post_grid(0, [[90, 45]], 0)

    folds = cv_folds(datalist, n_folds=4, seed=0, val_fraction=0.25)
    out = run_benchmark(datalist, cam, tmp_path / "rep", thresholds=["search", "prior", "prior+search"],
                        methods=["oracle"], folds=folds, brain_erosion=[0, 1], hu_range=[[45, 90], [50, 90]],
                        min_size=[0, 10**6], n_boot=10, progress=False, candidates=[0.1, 0.3, 0.5, 0.7])
    rows = read_rows(out / "per_case.csv")
    assert {r["threshold"] for r in rows} == set(names)
    huge = [r for r in rows if r["level"] == "slice" and r["threshold"].endswith("min1000000]")]
    assert huge and all(r["tp"] + r["fp"] == 0 for r in huge)
    with open(out / "choices.csv", newline="") as f:
        choices = list(csv.DictReader(f))
    _, selection = folds
    with open(out / "thresholds.csv", newline="") as f:
        searched = {(r["fold"], r["threshold"]): float(r["selection_dice"]) for r in csv.DictReader(f)}
    for c in choices:
        k, method = int(c["fold"]), c["method"]
        scores = {}
        for thr in {r["threshold"] for r in rows if r["method"] == method}:
            if (c["fold"], thr) in searched:
                scores[thr] = searched[(c["fold"], thr)]
                continue
            vals = [r["dice"] for r in rows if r["level"] == "slice" and r["method"] == method
                    and r["threshold"] == thr and r["patient"] in selection[k]]
            scores[thr] = float(np.mean(vals))
        assert float(c["selection_dice"]) == pytest.approx(max(scores.values()), abs=1e-6)
        assert scores[c["threshold"]] == pytest.approx(max(scores.values()), abs=1e-6)
        assert not c["threshold"].endswith("min1000000]")  # empty masks never win on lesion slices
    text = (out / "summary.md").read_text()
    assert "chosen per fold on the selection patients" in text and "Prior alone (no heatmap) at every" in text
    assert (out / "figures" / "overlay_oracle.png").is_file()


def test_command_line_post_processing_grid(bench_data, tmp_path, capsys):
    import json

    from hemwsl.cli import main

    datalist, cam = bench_data
    root = str(Path(datalist[0]["image"]).parents[1])
    args = ["benchmark", "--dataset-dir", root, "--cam-dir", str(cam), "--out", str(tmp_path / "rep"), "--folds", "4",
            "--val-fraction", "0.25", "--methods", "oracle", "--thresholds", "prior", "prior+otsu", "--n-boot", "10",
            "--no-figures", "--brain-erosion", "0", "1", "--min-size", "0", "5", "--hu-range", "45", "90",
            "--hu-range", "50", "90"]
    assert main(args) == 0
    config = json.loads((tmp_path / "rep" / "config.json").read_text())
    assert config["brain_erosion"] == [0, 1] and config["min_size"] == [0, 5]
    assert config["hu_range"] == [[45.0, 90.0], [50.0, 90.0]]
    assert "prior+otsu[e1,hu50-90,min5]" in config["thresholds"]
    assert main(args[:-3]) == 2  # other settings in the same folder are refused
    assert "other settings" in capsys.readouterr().err


def test_runner_reads_each_patient_once(bench_data, tmp_path, monkeypatch):
    """The threshold search and the scoring share each patient's loaded volume (within the memory budget)."""
    import hemwsl.benchmark.runner as runner

    datalist, cam = bench_data
    calls = []
    real = runner.load_patient
    monkeypatch.setattr(runner, "load_patient", lambda entry, *a, **k: calls.append(entry["patient"]) or real(entry, *a, **k))
    run_benchmark(datalist, cam, tmp_path / "rep", thresholds=["search"], methods=["oracle"], n_boot=10,
                  progress=False, figures=False, folds=cv_folds(datalist, n_folds=4, seed=0, val_fraction=0.25))
    assert sorted(calls) == sorted(e["patient"] for e in datalist)
    calls.clear()
    monkeypatch.setattr(runner, "_KEEP_BYTES", -1)  # nothing kept: loaded again for the scoring
    run_benchmark(datalist, cam, tmp_path / "rep2", thresholds=["search"], methods=["oracle"], n_boot=10,
                  progress=False, figures=False, folds=cv_folds(datalist, n_folds=4, seed=0, val_fraction=0.25))
    assert len(calls) == 2 * len(datalist)


def test_component_counts_equal_gating_then_dice():
    """The fast search of ``priorcomp+`` specs equals thresholding, keeping the touched prior components
    whole (after the size filter), then Dice, candidate by candidate."""
    from hemwsl.benchmark import component_counts, counts_dice
    from hemwsl.benchmark.specs import parse_threshold_spec

    rng = np.random.default_rng(1)
    heat = rng.random((4, 24, 24)).astype(np.float32)
    heat[2] = 0.0  # constant map: nothing touched
    hu = rng.uniform(0, 100, (4, 24, 24))
    hu[:, 5:10, 5:10] = 70.0  # one large hyperdense blob per slice
    gt = np.zeros((4, 24, 24), bool)
    gt[:, 6:10, 6:11] = True
    gt[3] = False  # empty ground truth
    brain = np.ones((4, 24, 24), bool)
    brain[:, :, 20:] = False
    allowed = brain & (hu >= 50) & (hu <= 90)
    cands = [0.1, 0.5, 0.8, 0.97]
    for min_size in (0, 10):
        got = counts_dice(component_counts(heat, gt, allowed, cands, min_size))
        spec = parse_threshold_spec(f"priorcomp+search[e0,hu50-90,min{min_size}]")
        assert spec.combine == "components" and spec.prior and spec.min_size == min_size
        for j, t in enumerate(cands):
            pred = spec.strategy(t)(heat, image_hu=hu, brain=brain)
            np.testing.assert_allclose(got[:, j], compute_dice(pred, gt).numpy(), atol=1e-12)
    # min_size 10 keeps only the blob: at a low threshold the prediction is the whole blob
    pred = parse_threshold_spec("priorcomp+search[e0,hu50-90,min10]").strategy(0.01)(heat, image_hu=hu, brain=brain)
    assert pred[0, 5:10, 5:10].all()


def test_grown_counts_equal_thresholding_growing_then_dice():
    """With ``grow``, the fast searches (components and AND) equal the strategies' masks grown into 40-100 HU
    inside the brain, then Dice, candidate by candidate."""
    from hemwsl.benchmark import component_counts, counts_dice
    from hemwsl.benchmark.runner import grown_candidate_counts
    from hemwsl.benchmark.specs import parse_threshold_spec
    from hemwsl.thresholds.base import GROW_HU_RANGE

    rng = np.random.default_rng(2)
    heat = rng.random((3, 28, 28)).astype(np.float32)
    hu = rng.uniform(0, 100, (3, 28, 28))
    hu[:, 5:10, 5:10] = 70.0
    hu[:, 4, 4:12] = 45.0  # an edge below the prior's range, inside the growth range
    hu[:, 15:19, 15:19] = 60.0
    hu[:, 14, 15:19] = 20.0  # not blood: never grown into
    gt = np.zeros((3, 28, 28), bool)
    gt[:, 4:10, 5:11] = True
    brain = np.ones((3, 28, 28), bool)
    brain[:, :, 24:] = False
    allowed = brain & (hu >= 50) & (hu <= 90)
    region = brain & (hu >= GROW_HU_RANGE[0]) & (hu <= GROW_HU_RANGE[1])
    cands = [0.05, 0.5, 0.9, 0.99]
    for grow in (1, 2):
        got = counts_dice(component_counts(heat, gt, allowed, cands, 10, grow, region))
        spec = parse_threshold_spec(f"priorcomp+search[e0,hu50-90,min10,g{grow}]")
        assert spec.grow == grow and spec.base == "priorcomp+search"
        for j, t in enumerate(cands):
            pred = spec.strategy(t)(heat, image_hu=hu, brain=brain)
            np.testing.assert_allclose(got[:, j], compute_dice(pred, gt).numpy(), atol=1e-12)
        got = counts_dice(grown_candidate_counts(heat, gt, allowed, cands, grow, region))
        spec = parse_threshold_spec(f"prior+search[e0,hu50-90,min0,g{grow}]")
        for j, t in enumerate(cands):
            pred = spec.strategy(t)(heat, image_hu=hu, brain=brain)
            np.testing.assert_allclose(got[:, j], compute_dice(pred, gt).numpy(), atol=1e-12)
    pred = parse_threshold_spec("priorcomp+search[e0,hu50-90,min10,g1]").strategy(0.0)(heat, image_hu=hu, brain=brain)
    assert pred[0, 4, 5:10].all()  # the 45 HU edge joined the blob
    assert not pred[0, 14, 15:19].any()  # the 20 HU row did not


def test_post_grid_with_growth_names_and_chooses_it(bench_data, tmp_path):
    import json

    from hemwsl.benchmark.specs import expand_post_grid, post_grid

    specs = expand_post_grid(["prior", "priorcomp+search"], post_grid(4, (50, 90), 50, [0, 1]))
    assert [s.text for s in specs] == ["prior[e4,hu50-90,min50]", "prior[e4,hu50-90,min50,g1]",
                                       "priorcomp+search[e4,hu50-90,min50]", "priorcomp+search[e4,hu50-90,min50,g1]"]
    assert [s.grow for s in specs] == [0, 1, 0, 1]
    with pytest.raises(HemwslInputError, match="grow"):
        post_grid(0, (45, 90), 0, [-1])
    datalist, cam = bench_data
    rep = run_benchmark(datalist, cam, tmp_path / "rep", thresholds=["prior"], n_boot=10, progress=False,
                        figures=False, grow=[0, 1], folds=cv_folds(datalist, n_folds=4, seed=0, val_fraction=0.25))
    assert json.loads((rep / "config.json").read_text())["grow"] == [0, 1]
    import csv

    with open(rep / "choices.csv") as f:
        chosen = {r["threshold"] for r in csv.DictReader(f)}
    assert chosen and chosen <= {"prior[e0,hu45-90,min0]", "prior[e0,hu45-90,min0,g1]"}
    summary = (rep / "summary.md").read_text()
    assert "| growth px |" in summary and "x growth into 40-100 HU [0, 1] px" in summary
    rows = [line for line in summary.splitlines() if line.startswith("| 0 | 45-90 | 0 |")]
    assert [line.split("|")[4].strip() for line in rows] == ["0", "1"]  # the prior at both growths


def test_grown_and_search_drops_small_components_before_growing():
    """The AND search with growth and a size filter equals the strategy: small components dropped, then grown."""
    from hemwsl.benchmark import counts_dice
    from hemwsl.benchmark.runner import grown_candidate_counts
    from hemwsl.benchmark.specs import parse_threshold_spec
    from hemwsl.thresholds.base import GROW_HU_RANGE

    rng = np.random.default_rng(5)
    heat = rng.random((3, 24, 24)).astype(np.float32)
    hu = rng.uniform(30, 95, (3, 24, 24))
    gt = rng.random((3, 24, 24)) > 0.7
    brain = np.ones((3, 24, 24), bool)
    allowed = brain & (hu >= 50) & (hu <= 90)
    region = brain & (hu >= GROW_HU_RANGE[0]) & (hu <= GROW_HU_RANGE[1])
    cands = [0.2, 0.5, 0.8]
    got = counts_dice(grown_candidate_counts(heat, gt, allowed, cands, 1, region, min_size=5))
    spec = parse_threshold_spec("prior+search[e0,hu50-90,min5,g1]")
    for j, t in enumerate(cands):
        pred = spec.strategy(t)(heat, image_hu=hu, brain=brain)
        np.testing.assert_allclose(got[:, j], compute_dice(pred, gt).numpy(), atol=1e-12)


def test_hu_calibration_makes_the_prior_blind_to_a_scanner_offset(bench_data, tmp_path):
    """The same phantoms stored 12 HU denser (another scanner's calibration): the uncalibrated prior's rows change,
    the calibrated ones (``hu_reference``) stay close to those of the original scans (the brain's median moves by
    the offset, within 1 HU where CSF voxels cross 0 HU); the setting is in the report's config and summary, and a
    resume with another value is refused."""
    import json
    import shutil

    from hemwsl.data.datalist import build_datalist

    datalist, cam = bench_data
    root = Path(datalist[0]["image"]).parents[1]
    shifted_root = tmp_path / "shifted"
    shutil.copytree(root, shifted_root)
    for f in (shifted_root / "ct_scans").glob("*.nii.gz"):
        img = nib.load(f)
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32) + 12.0, img.affine), str(f))
    shifted = build_datalist("ct-ich", shifted_root)
    folds = cv_folds(datalist, n_folds=4, seed=0, val_fraction=0.25)
    kw = dict(thresholds=["prior", "prior+search"], methods=["oracle"], folds=folds, n_boot=10, progress=False,
              figures=False, hu_range=(50.0, 90.0), candidates=[0.1, 0.5])

    def rows(out):
        return {(r["patient"], r["slice"], r["threshold"]): np.array([r["tp"], r["fp"], r["fn"]])
                for r in read_rows(out / "per_case.csv") if r["level"] == "slice"}

    def change(a, b):
        assert a.keys() == b.keys()
        return sum(int(np.abs(a[k] - b[k]).sum()) for k in a)

    plain = rows(run_benchmark(datalist, cam, tmp_path / "plain", **kw))
    moved = change(plain, rows(run_benchmark(shifted, cam, tmp_path / "plain_shifted", **kw)))
    ref = 37.0
    cal = run_benchmark(datalist, cam, tmp_path / "cal", hu_reference=ref, **kw)
    cal_shifted = run_benchmark(shifted, cam, tmp_path / "cal_shifted", hu_reference=ref, **kw)
    assert moved > 0 and change(rows(cal), rows(cal_shifted)) < moved / 4
    assert json.loads((cal / "config.json").read_text())["hu_reference"] == ref
    assert "HU calibrated per scan" in (cal / "summary.md").read_text()
    with pytest.raises(HemwslInputError, match="other settings"):
        run_benchmark(datalist, cam, tmp_path / "cal", hu_reference=30.0, **kw)
    with pytest.raises(HemwslInputError, match="hu_reference"):
        run_benchmark(datalist, cam, tmp_path / "bad", hu_reference="dense", **kw)
