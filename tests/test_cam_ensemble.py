"""``hemwsl cam-ensemble``: the mean of several cam-cv folders' heatmaps, checked members, resumable."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from hemwsl.engines.ensemble import ensemble_heatmaps, ensemble_members
from hemwsl.cam.volume import heatmap_path
from hemwsl.cli import main
from hemwsl.errors import HemwslInputError

KEY = ("lse_heatmap", "levels.2.conv")


def _member(root: Path, maps: dict, cv_dir: Path | str | None = None, checkpoint: str = "last", folds: int = 5,
            affine=None, **settings) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cam_checkpoint.json").write_text(json.dumps(
        {"cv_dir": str(cv_dir or f"/runs/{root.name}"), "checkpoint": checkpoint,
         "settings": {"grid": "input", "folds": folds, **settings}}))
    for stem, arr in maps.items():
        p = heatmap_path(root, stem, KEY)
        p.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(np.asarray(arr, np.float32), np.diag([2.0, 2.0, 5.0, 1.0]) if affine is None
                                 else affine), str(p))
    return root


def _load(path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).get_fdata(dtype=np.float32))


def _slice_minmax(a: np.ndarray) -> np.ndarray:
    lo, hi = a.min(axis=(0, 1), keepdims=True), a.max(axis=(0, 1), keepdims=True)
    return (a - lo) / (1e-7 + hi - lo)


@pytest.fixture()
def two(tmp_path):
    rng = np.random.default_rng(0)
    a = {s: rng.random((6, 5, 3)) for s in ("049", "050")}
    b = {s: 3.0 * rng.random((6, 5, 3)) + 1.0 for s in ("049", "050")}
    return a, b, _member(tmp_path / "a", a), _member(tmp_path / "b", b, cv_dir="/runs/b")


@pytest.mark.parametrize("mode", ["slice", "volume", "none"])
def test_mean_of_the_members_by_hand(two, tmp_path, mode):
    a, b, da, db = two
    done = ensemble_heatmaps([da, db], tmp_path / "ens", normalise=mode)
    assert done == {"pairs": [list(KEY)], "patients": 2, "written": 2, "predictions": None,
                    "no_predictions": "the train-cv run /runs/a is not here"}
    for stem in ("049", "050"):
        got = _load(heatmap_path(tmp_path / "ens", stem, KEY))
        if mode == "slice":
            want = (_slice_minmax(a[stem]) + _slice_minmax(b[stem])) / 2
        elif mode == "volume":
            want = (a[stem] / a[stem].max() + b[stem] / b[stem].max()) / 2
        else:
            want = (a[stem] + b[stem]) / 2
        np.testing.assert_allclose(got, want, atol=1e-5)
        assert np.allclose(nib.load(str(heatmap_path(tmp_path / "ens", stem, KEY))).affine, np.diag([2, 2, 5, 1.0]))
    rec = json.loads((tmp_path / "ens" / "cam_checkpoint.json").read_text())
    assert rec["checkpoint"] == "last" and rec["normalise"] == mode
    assert [m["cv_dir"] for m in rec["members"]] == ["/runs/a", "/runs/b"]
    # resumed: nothing rewritten; another normalisation into the same folder is refused
    assert ensemble_heatmaps([da, db], tmp_path / "ens", normalise=mode)["written"] == 0
    other = "none" if mode != "none" else "slice"
    with pytest.raises(HemwslInputError, match="holds another ensemble"):
        ensemble_heatmaps([da, db], tmp_path / "ens", normalise=other)
    with pytest.raises(HemwslInputError, match="holds another ensemble .*other members"):
        ensemble_heatmaps([db, da], tmp_path / "ens", normalise=mode)


def test_a_partly_written_ensemble_is_finished(two, tmp_path):
    _, _, da, db = two
    out = tmp_path / "ens"
    ensemble_heatmaps([da, db], out)
    keep = heatmap_path(out, "049", KEY)
    gone = heatmap_path(out, "050", KEY)
    mtime = keep.stat().st_mtime_ns
    gone.unlink()
    assert ensemble_heatmaps([da, db], out)["written"] == 1
    assert keep.stat().st_mtime_ns == mtime and gone.is_file()


def test_members_are_checked_before_anything_is_written(two, tmp_path):
    a, b, da, db = two
    out = tmp_path / "ens"
    cases = [
        ([da], "at least two"),
        ([da, tmp_path / "a" / "."], "more than once"),
        ([da, tmp_path / "nothing"], "not a folder"),
        ([da, _member(tmp_path / "c", b, checkpoint="best")], "best checkpoints"),
        ([da, _member(tmp_path / "d", b, folds=4)], "folds 4"),
        ([da, _member(tmp_path / "e", {"049": b["049"]})], "holds 1 patients"),
        ([da, _member(tmp_path / "f", {s: np.zeros((6, 5, 4)) for s in b})], "shape"),
        ([da, _member(tmp_path / "g", b, affine=np.eye(4))], "another affine"),
    ]
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "lse_heatmap").mkdir()
    cases.append(([da, tmp_path / "h"], "no cam_checkpoint.json"))
    for members, named in cases:
        with pytest.raises(HemwslInputError, match=named):
            ensemble_heatmaps(members, out)
        assert not out.exists(), named
    with pytest.raises(HemwslInputError, match="--methods gradcam"):
        ensemble_members([da, db], methods=["gradcam"])
    with pytest.raises(HemwslInputError, match="--layers levels.0.conv"):
        ensemble_members([da, db], layers=["levels.0.conv"])
    with pytest.raises(HemwslInputError, match="inside the member"):
        ensemble_heatmaps([da, db], da / "ens")
    with pytest.raises(HemwslInputError, match="--normalise"):
        ensemble_heatmaps([da, db], tmp_path / "x", normalise="max")
    ensemble_heatmaps([da, db], tmp_path / "ens2")
    with pytest.raises(HemwslInputError, match="an ensemble already"):
        ensemble_heatmaps([tmp_path / "ens2", da], tmp_path / "ens3")


def test_benchmark_takes_the_ensemble_with_a_members_run(two, tmp_path):
    from hemwsl.commands.benchmark import check_made_from_run

    _, _, da, db = two
    runs = tmp_path / "runs"
    ra, rb, rc = (runs / n for n in "abc")
    for r in (ra, rb, rc):
        r.mkdir(parents=True)
    _member(da, {}, cv_dir=ra.resolve())
    _member(db, {}, cv_dir=rb.resolve())
    ensemble_heatmaps([da, db], tmp_path / "ens")
    check_made_from_run(tmp_path / "ens", ra, "last")
    check_made_from_run(tmp_path / "ens", rb, "last")
    with pytest.raises(HemwslInputError, match="an ensemble of the train-cv runs .* not of --cv-dir"):
        check_made_from_run(tmp_path / "ens", rc, "last")
    with pytest.raises(HemwslInputError, match="last checkpoints"):
        check_made_from_run(tmp_path / "ens", ra, "best")


def test_cli_writes_the_ensemble_and_refuses_in_one_line(two, tmp_path, capsys):
    _, _, da, db = two
    assert main(["cam-ensemble", "--cam-dirs", str(da), str(db), "--out", str(tmp_path / "ens")]) == 0
    assert "mean of 2 members: 1 (method, layer) pairs x 2 patients" in capsys.readouterr().out
    assert main(["cam-ensemble", "--cam-dirs", str(da), "--out", str(tmp_path / "ens")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "at least two" in err[0]


def test_an_ensemble_is_scored_by_the_benchmark(synthetic_root, tmp_path):
    """Two noisy copies of the true masks as members; their mean is scored by `hemwsl benchmark` and is
    closer to the masks than either member (the noise of the members is independent)."""
    from hemwsl.data.datalist import build_datalist

    rng = np.random.default_rng(1)
    members = {}
    for name in ("a", "b"):
        maps = {}
        for e in build_datalist("ct-ich", synthetic_root):
            img = nib.load(e["label"])
            mask = np.asarray(img.get_fdata()) > 0
            maps[e["patient"]] = mask + rng.normal(0, 0.4, mask.shape)
        members[name] = _member(tmp_path / name, maps, cv_dir=tmp_path / f"nowhere_{name}", checkpoint="best",
                                affine=img.affine)
    ensemble_heatmaps(list(members.values()), tmp_path / "ens")
    dice = {}
    for name, cam in (*members.items(), ("ens", tmp_path / "ens")):
        out = tmp_path / f"bench_{name}"
        assert main(["benchmark", "--dataset-dir", str(synthetic_root), "--cam-dir", str(cam), "--out", str(out),
                     "--folds", "2", "--thresholds", "fixed:0.5", "--no-figures", "--n-boot", "50"]) == 0
        import csv

        with open(out / "summary.csv") as f:
            dice[name] = [float(r["dice"]) for r in csv.DictReader(f) if r["method"] == KEY[0]][0]
    assert dice["ens"] > max(dice["a"], dice["b"]), dice


def _run(root: Path, probs: dict, which: str = "last", folds: int = 2) -> Path:
    """A train-cv folder with only its out-of-fold predictions: fold k tests patients probs[k]."""
    for k in range(folds):
        f = root / f"fold{k}" / ("predictions_test_last.csv" if which == "last" else "predictions_test.csv")
        f.parent.mkdir(parents=True, exist_ok=True)
        lines = ["patient,slice,label_any,prob_any"] + [f"{p},{z},{int(v > 0.5)},{v}" for p, zs in probs[k].items()
                                                        for z, v in enumerate(zs)]
        f.write_text("\n".join(lines) + "\n")
    return root


def test_the_members_slice_probabilities_are_averaged(tmp_path, capsys):
    import csv

    from hemwsl.engines.ensemble import ensemble_predictions

    ra = _run(tmp_path / "ra", {0: {"049": [0.1, 0.9]}, 1: {"050": [0.2, 0.6, 0.7]}})
    rb = _run(tmp_path / "rb", {0: {"049": [0.3, 0.7]}, 1: {"050": [0.4, 0.8, 0.9]}})
    rb_labels = _run(tmp_path / "rc", {0: {"049": [0.3, 0.2]}, 1: {"050": [0.4, 0.8, 0.9]}})
    rd = _run(tmp_path / "rd", {0: {"049": [0.3, 0.7]}, 1: {"050": [0.4, 0.8]}})
    f = ensemble_predictions([ra, rb], tmp_path / "p.csv", folds=2, which="last")
    with open(f) as fh:
        rows = [(r["patient"], int(r["slice"]), int(r["label_any"]), float(r["prob_any"])) for r in csv.DictReader(fh)]
    assert rows == [("049", 0, 0, 0.2), ("049", 1, 1, 0.8), ("050", 0, 0, 0.3), ("050", 1, 1, 0.7), ("050", 2, 1, 0.8)]
    with pytest.raises(HemwslInputError, match="labels differ"):
        ensemble_predictions([ra, rb_labels], tmp_path / "q.csv", folds=2, which="last")
    with pytest.raises(HemwslInputError, match="other slices"):
        ensemble_predictions([ra, rd], tmp_path / "q.csv", folds=2, which="last")
    with pytest.raises(HemwslInputError, match="not found"):
        ensemble_predictions([ra, rb], tmp_path / "q.csv", folds=2, which="best")
    assert not (tmp_path / "q.csv").exists()
    # through cam-ensemble: members whose records name these runs give the ensemble's predictions beside its maps
    rng = np.random.default_rng(0)
    maps = {s: rng.random((6, 5, 3)) for s in ("049", "050")}
    da = _member(tmp_path / "a", maps, cv_dir=ra.resolve(), folds=2)
    db = _member(tmp_path / "b", maps, cv_dir=rb.resolve(), folds=2)
    done = ensemble_heatmaps([da, db], tmp_path / "ens")
    assert done["predictions"] == str(tmp_path / "ens" / "predictions_test.csv")
    assert (tmp_path / "ens" / "predictions_test.csv").read_text() == f.read_text()


def test_members_of_one_run_or_of_other_splits_are_refused(two, tmp_path):
    a, b, da, db = two
    with pytest.raises(HemwslInputError, match="same train-cv run as"):
        ensemble_heatmaps([da, _member(tmp_path / "same", b, cv_dir="/runs/a")], tmp_path / "ens")
    # a seed the other record leaves out is the default 0: another patient split
    with pytest.raises(HemwslInputError, match="seed 1, .* 0; members share the folds"):
        ensemble_heatmaps([da, _member(tmp_path / "s1", b, seed=1)], tmp_path / "ens")
    # the runs' own records of their splits, where the runs are here
    ra, rb = tmp_path / "ra", tmp_path / "rb"
    for r, seed in ((ra, 0), (rb, 3)):
        r.mkdir()
        (r / "cv_run.json").write_text(json.dumps({"folds": 5, "settings": {"seed": seed}}))
    with pytest.raises(HemwslInputError, match="splits the patients otherwise .*seed 3 vs 0"):
        ensemble_heatmaps([_member(tmp_path / "m1", a, cv_dir=ra), _member(tmp_path / "m2", b, cv_dir=rb)],
                          tmp_path / "ens")
    assert not (tmp_path / "ens").exists()


def test_a_nan_map_and_a_symlink_loop_are_named(two, tmp_path):
    a, b, da, db = two
    bad = dict(b)
    bad["050"] = b["050"].copy()
    bad["050"][0, 0, 0] = np.nan
    with pytest.raises(HemwslInputError, match="1 voxels are NaN or infinite"):
        ensemble_heatmaps([da, _member(tmp_path / "nan", bad)], tmp_path / "ens")
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(HemwslInputError, match="a symlink loop"):
        ensemble_heatmaps([da, loop], tmp_path / "ens2")
    with pytest.raises(HemwslInputError, match="a symlink loop"):
        ensemble_heatmaps([da, db], loop)


def test_one_runs_outputs_never_go_into_an_ensemble_folder(two, tmp_path):
    from hemwsl.engines.runs import check_checkpoint_marker

    _, _, da, db = two
    ensemble_heatmaps([da, db], tmp_path / "ens")
    with pytest.raises(HemwslInputError, match="holds an ensemble of heatmaps"):
        check_checkpoint_marker(tmp_path / "ens", "/runs/a", "last", "heatmaps", settings={"grid": "input"})


def test_a_corrupt_members_predictions_csv_is_named_before_any_map(tmp_path):
    """The members' slice probabilities are read and checked before the first mean map is written (a corrupt CSV
    used to be named after every map had been written)."""
    ra = _run(tmp_path / "ra", {0: {"049": [0.1, 0.9]}, 1: {"050": [0.2, 0.6, 0.7]}})
    rb = _run(tmp_path / "rb", {0: {"049": [0.3, 0.7]}, 1: {"050": [0.4, 0.8, 0.9]}})
    bad = rb / "fold1" / "predictions_test_last.csv"
    bad.write_text("patient,slice,label_any,prob_any\n050,zero,1,0.4\n")
    rng = np.random.default_rng(0)
    maps = {s: rng.random((6, 5, 3)) for s in ("049", "050")}
    da = _member(tmp_path / "a", maps, cv_dir=ra.resolve(), folds=2)
    db = _member(tmp_path / "b", maps, cv_dir=rb.resolve(), folds=2)
    with pytest.raises(HemwslInputError, match="predictions_test_last.csv"):
        ensemble_heatmaps([da, db], tmp_path / "ens")
    assert not list((tmp_path / "ens").rglob("*.nii.gz"))
