"""The component filter learned from slice labels (:mod:`hemwsl.pseudo.components`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hemwsl.errors import HemwslInputError
from hemwsl.pseudo.components import COMPONENT_FEATURES, ComponentFilter, component_features, label_components

SIZE, DEPTH = 64, 10
AFFINE = np.diag([0.8, 0.8, 5.0, 1.0])


def phantom(positive, seed=0):
    """A hand-built head (X, Y, Z) = (64, 64, 10) in HU, its brain mask and its blood mask.

    Air -20 HU, a skull ring of 100 HU (radius 24 to 28 pixels), brain 30 HU inside. On **every** slice a
    look-alike: the same 3 x 8 patch of 85 HU at the brain's edge, next to the skull (the partial-volume rim).
    On the slices in ``positive`` a 6 x 6 patch of 65 HU blood (placed by ``seed``) in the brain, away from the skull.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    r = np.hypot(yy - 32, xx - 32)
    hu = np.full((SIZE, SIZE, DEPTH), -20.0, np.float32)
    hu[r <= 28] = 100.0
    hu[r < 24] = 30.0
    brain = np.repeat((r < 24)[..., None], DEPTH, axis=-1)
    blood = np.zeros(hu.shape, bool)
    y0, x1 = int(rng.integers(26, 32)), int(rng.integers(24, 34))
    for z in range(DEPTH):
        hu[10:13, 28:36, z] = 85.0  # rows 10-12: inside the brain, 2 pixels from the skull at row 8
        if z in positive:
            hu[y0:y0 + 6, x1:x1 + 6, z] = 65.0
            blood[y0:y0 + 6, x1:x1 + 6, z] = True
    return hu, brain, blood


def region_of(hu, brain):
    return brain & (hu >= 50) & (hu <= 90)


def test_label_components_per_slice():
    region = np.zeros((8, 8, 2), bool)
    region[1:3, 1:3, 0] = True
    region[5:7, 5:7, 0] = True
    region[3, 3, 1] = True
    region[4, 4, 1] = True  # diagonal neighbours: one component (8-connectivity)
    labels, counts = label_components(region)
    assert counts == [2, 1] and labels[..., 0].max() == 2 and labels[..., 1].max() == 1
    with pytest.raises(HemwslInputError, match="X, Y, Z"):
        label_components(region[..., 0])


def test_component_features_values():
    hu, brain, blood = phantom(positive={3, 4})
    feats, slices, labels = component_features(hu, brain, region_of(hu, brain))
    assert feats.shape == (DEPTH + 2, len(COMPONENT_FEATURES)) and feats.dtype == np.float32
    assert slices.tolist() == sorted([*range(DEPTH), 3, 4])
    col = {n: i for i, n in enumerate(COMPONENT_FEATURES)}
    blood_rows = [j for j, z in enumerate(slices) if blood[..., z][labels[..., z] == (j - np.flatnonzero(slices == z)[0] + 1)].all()]
    assert len(blood_rows) == 2
    rim_rows = [j for j in range(len(slices)) if j not in blood_rows]
    b, rim = feats[blood_rows[0]], feats[rim_rows[0]]
    assert b[col["log_area"]] == pytest.approx(np.log(36)) and rim[col["log_area"]] == pytest.approx(np.log(24))
    assert b[col["hu_mean"]] == pytest.approx(65) and rim[col["hu_mean"]] == pytest.approx(85)
    assert b[col["hu_std"]] == pytest.approx(0, abs=1e-6) and rim[col["frac_ge_80"]] == 1 and b[col["frac_lt_60"]] == 0
    assert b[col["ring_frac_bone"]] == 0 and rim[col["ring_frac_bone"]] > 0.1  # the rim touches the skull
    assert rim[col["edge_dist_min"]] <= 2 and b[col["edge_dist_min"]] > 10
    assert b[col["continues_above"]] == 1 and b[col["continues_below"]] == 0  # blood on slices 3 and 4: z = 3
    assert feats[slices.tolist().index(0), col["slice_height"]] == 0
    assert np.isfinite(feats).all()
    empty, s, lab = component_features(hu, brain, np.zeros(hu.shape, bool))
    assert empty.shape == (0, len(COMPONENT_FEATURES)) and s.size == 0 and lab.max() == 0
    with pytest.raises(HemwslInputError, match="one shape"):
        component_features(hu, brain[..., :3], region_of(hu, brain))


def _training_set(n=DEPTH):
    """``n`` phantoms' components labelled with their slice labels; with ``n = DEPTH`` every slice height is
    positive in half of the volumes, so that the height does not tell the slice label."""
    xs, ys = [], []
    for i in range(n):
        pos = {(i + j) % DEPTH for j in range(5)}
        hu, brain, _ = phantom(pos, seed=i)
        feats, slices, _ = component_features(hu, brain, region_of(hu, brain))
        xs.append(feats)
        ys.append(np.isin(slices, sorted(pos)).astype(int))
    return np.concatenate(xs), np.concatenate(ys)


def test_filter_learns_blood_from_slice_labels_and_round_trips(tmp_path):
    x, y = _training_set()
    flt = ComponentFilter().fit(x, y)
    assert flt.n_train == {"components": len(y), "on_positive_slices": int(y.sum()), "on_negative_slices": int((1 - y).sum())}
    hu, brain, blood = phantom(positive={2, 7}, seed=99)
    kept, info = flt.keep(hu, brain, region_of(hu, brain))
    # the rim (on every slice, with or without blood) goes; the blood stays
    np.testing.assert_array_equal(kept, blood)
    assert info["components"] == [1, 1, 2, 1, 1, 1, 1, 2, 1, 1] and info["kept"] == [0, 0, 1, 0, 0, 0, 0, 1, 0, 0]
    flt.save(tmp_path / "f.pkl")
    again = ComponentFilter.load(tmp_path / "f.pkl")
    np.testing.assert_allclose(again.score(x), flt.score(x))
    assert again.describe() == flt.describe() and ComponentFilter.load(tmp_path / "f.pkl", threshold=0.9).threshold == 0.9
    assert flt.score(np.zeros((0, len(COMPONENT_FEATURES)))).shape == (0,)


def test_filter_bad_inputs(tmp_path):
    x, y = _training_set(2)
    with pytest.raises(HemwslInputError, match="not trained"):
        ComponentFilter().score(x)
    with pytest.raises(HemwslInputError, match="nothing to save"):
        ComponentFilter().save(tmp_path / "f.pkl")
    with pytest.raises(HemwslInputError, match=r"in \[0, 1\]"):
        ComponentFilter(threshold=1.5)
    with pytest.raises(HemwslInputError, match="with and without"):
        ComponentFilter().fit(x, np.ones_like(y))
    with pytest.raises(HemwslInputError, match="0 or 1"):
        ComponentFilter().fit(x, y * 2)
    with pytest.raises(HemwslInputError, match=r"\(N, 24\)"):
        ComponentFilter().fit(x[:, :3], y)
    with pytest.raises(HemwslInputError, match="not found"):
        ComponentFilter.load(tmp_path / "missing.pkl")
    (tmp_path / "bad.pkl").write_bytes(b"not a pickle")
    with pytest.raises(HemwslInputError, match="bad.pkl: not a component filter"):
        ComponentFilter.load(tmp_path / "bad.pkl")


def _write_patients(tmp_path, n):
    """``n`` phantom patients as NIfTI CTs + prior-only heatmaps (zeros) + a datalist with slice labels."""
    from hemwsl.cam.volume import heatmap_path
    from hemwsl.data.datalist import save_datalist
    from hemwsl.data.io import save_nifti

    entries = []
    for i in range(n):
        pos = {(i + j) % DEPTH for j in range(5)}
        hu, _, blood = phantom(pos, seed=i)
        pid = f"p{i}"
        save_nifti(hu.astype(np.int16), AFFINE, tmp_path / "ct" / f"{pid}.nii.gz")
        save_nifti(blood.astype(np.uint8), AFFINE, tmp_path / "mask" / f"{pid}.nii.gz")
        save_nifti(np.zeros(hu.shape, np.float32), AFFINE, heatmap_path(tmp_path / "cams", pid, ("gradcam", "l")))
        entries.append({"image": str(tmp_path / "ct" / f"{pid}.nii.gz"), "label": str(tmp_path / "mask" / f"{pid}.nii.gz"),
                        "patient": pid, "slice_labels": [int(z in pos) for z in range(DEPTH)], "subtype_labels": None,
                        "spacing": [0.8, 0.8, 5.0], "num_slices": DEPTH, "positive": 1})
    save_datalist(entries[:-1], tmp_path / "train.json")
    save_datalist(entries[-1:], tmp_path / "apply.json")
    csv = tmp_path / "pred.csv"  # every slice of the new patient called positive: the filter alone decides
    csv.write_text("patient,slice,label_any,prob_any\n" + "".join(f"{entries[-1]['patient']},{z},0,0.9\n" for z in range(DEPTH)))
    return entries, csv


def test_pseudo_command_with_component_filter(tmp_path, monkeypatch, capsys):
    """``hemwsl pseudo --component-filter`` trains on other patients' slice labels, saves the filter, drops the
    rim from the new patient's HU-prior labels, records it in pseudo_params.json and resumes from the saved filter."""
    import argparse

    import hemwsl.pseudo.volume as volume
    from hemwsl.commands.pseudo import add_pseudo_arguments, run_pseudo
    from hemwsl.data.io import load_volume

    entries, csv = _write_patients(tmp_path, DEPTH + 1)
    out = tmp_path / "pseudo"
    argv = ["--datalist", str(tmp_path / "apply.json"), "--cam-dir", str(tmp_path / "cams"), "--method", "gradcam",
            "--out", str(out), "--mode", "cam", "--threshold-strategy", "intensity", "--threshold", "none",
            "--hu-range", "50", "90", "--predictions-csv", str(csv), "--component-filter",
            "--filter-datalist", str(tmp_path / "train.json"), "--evaluate", "--no-progress"]
    p = argparse.ArgumentParser()
    add_pseudo_arguments(p)
    assert run_pseudo(p.parse_args(argv)) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["mean_dice"] == pytest.approx(1.0)
    truth = load_volume(entries[-1]["label"], kind="mask").array
    np.testing.assert_array_equal(load_volume(out / f"p{DEPTH}.nii.gz", kind="mask").array, truth)
    params = json.loads((out / "pseudo_params.json").read_text())
    assert params["component_filter"]["threshold"] == 0.5 and "train.json" in params["component_filter"]["trained"]
    assert (out / "component_filter" / "filter.pkl").is_file()
    assert len(list((out / "component_filter" / "features").glob("*.npz"))) == DEPTH
    done = json.loads((out / ".done" / f"p{DEPTH}.json").read_text())
    assert sum(done["components"]) == DEPTH + 5 and sum(done["kept_components"]) == 5

    # a second call (another output patient, same folder) loads the saved filter instead of training again
    monkeypatch.setattr(volume, "fit_component_filter", lambda *a, **k: pytest.fail("trained again"))
    (out / f"p{DEPTH}.nii.gz").unlink()
    assert run_pseudo(p.parse_args(argv)) == 0

    with pytest.raises(HemwslInputError, match="--fold or --filter-datalist"):
        run_pseudo(p.parse_args([a for a in argv if a not in ("--filter-datalist", str(tmp_path / "train.json"))]))
    with pytest.raises(HemwslInputError, match="drop --context"):
        run_pseudo(p.parse_args(argv + ["--context"]))


def test_pseudo_label_volume_filter_and_context_exclusive(tmp_path):
    from hemwsl.pseudo import PseudoLabelSettings, pseudo_label_volume

    hu, _, _ = phantom({1})
    x, y = _training_set(2)
    flt = ComponentFilter(min_samples_leaf=2).fit(x, y)
    with pytest.raises(HemwslInputError, match="without context"):
        pseudo_label_volume(tmp_path / "missing.nii.gz", np.zeros(hu.shape),
                            settings=PseudoLabelSettings(mode="cam", context=True), probabilities=np.ones(DEPTH),
                            component_filter=flt)


def test_filter_before_kmeans(tmp_path):
    """With cam_kmeans, K-means clusters the filtered region: the rim never reaches the pseudo mask."""
    from hemwsl.data.io import save_nifti
    from hemwsl.pseudo import PseudoLabelSettings, build_threshold, pseudo_label_volume

    x, y = _training_set()
    flt = ComponentFilter().fit(x, y)
    hu, _, blood = phantom({2, 7}, seed=99)
    save_nifti(hu.astype(np.int16), AFFINE, tmp_path / "ct.nii.gz")
    mask, _, info = pseudo_label_volume(tmp_path / "ct.nii.gz", np.zeros(hu.shape, np.float32),
                                        settings=PseudoLabelSettings(
                                            mode="cam_kmeans", select="brightest", k=2,
                                            threshold=build_threshold("intensity", None, hu_range=(50, 90))),
                                        probabilities=np.full(DEPTH, 0.9), component_filter=flt)
    assert mask.sum() > 0 and not (mask.astype(bool) & ~blood).any()
    assert info["kept_components"] == [0, 0, 1, 0, 0, 0, 0, 1, 0, 0]
