"""``hemwsl package`` and ``hemwsl predict``: self-describing models, one scan in (NIfTI or DICOM), outputs out."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from hemwsl.cli import main
from hemwsl.data.synthetic import make_phantom
from hemwsl.errors import HemwslInputError
from hemwsl.networks import build_network
from hemwsl.predict import MODEL_FILE, ModelPackage, Predictor, pack_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SETTINGS = {"backbone": "resnet10", "spatial_size": [64, 64], "skull_strip": True, "windows": ["brain", "blood"],
            "num_slices": 3, "tta": True}


def _fake_cv(root: Path, settings: dict, folds=(0, 1), in_channels: int = 6, seed: int = 0) -> Path:
    """A train-cv folder with random-init weights (the network and the plumbing are under test, not accuracy)."""
    root.mkdir(parents=True)
    (root / "cv_settings.json").write_text(json.dumps(settings))
    for k in folds:
        torch.manual_seed(seed + k)
        net = build_network(settings["backbone"], in_channels=in_channels, num_classes=1)
        (root / f"fold{k}" / "models").mkdir(parents=True)
        torch.save(net.state_dict(), root / f"fold{k}" / "models" / "model.pt")
    return root


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    p = make_phantom(5, shape=(64, 64, 10), spacing=(0.9, 0.9, 5.0), subtypes=["intraparenchymal"])
    d = tmp_path_factory.mktemp("scan")
    f = d / "p005.nii.gz"
    nib.save(nib.Nifti1Image(p["image"].astype(np.float32), p["affine"]), str(f))
    return f, p


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    cv = _fake_cv(root / "cv", SETTINGS)
    return pack_model(cv, root / "pkg")


def test_package_describes_itself(model):
    pkg = ModelPackage.load(model)
    s = pkg.settings
    # the run's overrides and the bundle's own defaults, resolved
    assert s["backbone"] == "resnet10" and s["in_channels"] == 6 and s["num_classes"] == 1
    assert s["spatial_size"] == [64, 64] and s["windows"] == ["brain", "blood"] and s["tta"] is True
    assert s["n_folds"] == 5 and s["seed"] == 0 and s["val_fraction"] == 0.15
    assert [m["fold"] for m in pkg.members] == [0, 1]
    assert pkg.recipe["threshold"] == "prior" and pkg.recipe["brain_erosion"] == 4
    assert set(pkg.meta["versions"]) == {"hemwsl", "monai", "torch"}
    with pytest.raises(HemwslInputError, match="already holds a model package"):
        pack_model(Path(pkg.meta["train_cv"]), model)
    with pytest.raises(HemwslInputError, match="contradicts the model"):
        pkg.check_settings(spatial_size=[128, 128])
    pkg.check_settings(spatial_size=[64, 64], num_slices=None)


def test_inputs_are_the_training_inputs(model, phantom):
    """predict feeds the networks exactly what the training data set served for the same file."""
    from hemwsl.constants import IMAGE, LABEL
    from hemwsl.data.dataset import SliceDataset

    f, p = phantom
    pred = Predictor(model)
    x, brain = pred._inputs(p["image"].astype(np.float32))
    ds = SliceDataset([{IMAGE: str(f), LABEL: None}], num_slices=3, windows=["brain", "blood"], spatial_size=[64, 64],
                      skull_strip=True)
    ref = torch.stack([ds[i][IMAGE] for i in range(len(ds))])
    assert x.shape == ref.shape == (10, 6, 64, 64)
    torch.testing.assert_close(x, ref)
    assert brain.shape == p["image"].shape and brain.any()


def test_predict_nifti_outputs(model, phantom, tmp_path):
    f, p = phantom
    rep = Predictor(model).predict(f, tmp_path)
    out = tmp_path / "p005"
    assert {x.name for x in out.iterdir()} == {"probabilities.csv", "mask.nii.gz", "report.json", "report.png"}
    assert not list(tmp_path.glob(".*partial"))
    mask = nib.load(str(out / "mask.nii.gz"))
    assert mask.shape == p["image"].shape and np.allclose(mask.affine, p["affine"])
    m = np.asarray(mask.dataobj) > 0
    assert rep["volume"]["ml"] == pytest.approx(m.sum() * 0.9 * 0.9 * 5.0 / 1000)
    assert len(rep["volume"]["members_ml"]) == 2 and rep["members"] == [0, 1]
    lines = (out / "probabilities.csv").read_text().splitlines()
    assert lines[0] == "slice,prob_any,positive" and len(lines) == 11
    # the prior recipe: every mask voxel is hyperdense (50-90 HU) and on a slice called positive
    hu = p["image"]
    assert ((hu[m] >= 50) & (hu[m] <= 90)).all()
    assert set(np.flatnonzero(m.any((0, 1)))) <= set(rep["slices"]["positive"])
    # a finished scan is skipped; another model's outputs are refused
    assert Predictor(model).predict(f, tmp_path) == rep
    with pytest.raises(HemwslInputError, match="another model"):
        Predictor(model, members=[1]).predict(f, tmp_path)
    Predictor(model, members=[1]).predict(f, tmp_path, overwrite=True)
    assert json.loads((out / "report.json").read_text())["members"] == [1]


def test_predict_with_heatmap_recipe(tmp_path, phantom):
    """An LSE heatmap network with the benchmark's validated priorcomp recipe, read from its report."""
    f, p = phantom
    settings = {**SETTINGS, "backbone": "lse_resnet10"}
    cv = _fake_cv(tmp_path / "cv", settings, folds=(0,))
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "choices.csv").write_text("fold,method,layer,threshold,selection_dice\n0,-,-,prior,0.3\n"
                                       "0,lse_heatmap,levels.1.conv,priorcomp+search,0.4\n"
                                       "0,gradcam,levels.0.conv,priorcomp+search,0.35\n")
    (bench / "thresholds.csv").write_text(
        "fold,method,layer,threshold,value,selection_dice,selection_patients,selection_slices,selection_metric\n"
        "0,lse_heatmap,levels.1.conv,priorcomp+search,0.3,0.4,4,8,dice\n"
        "0,gradcam,levels.0.conv,priorcomp+search,0.5,0.35,4,8,dice\n")
    (bench / "config.json").write_text(json.dumps({"prob_threshold": 0.5, "hu_range": [50.0, 90.0],
                                                   "brain_erosion": 2, "min_size": 5}))
    pkg = ModelPackage.load(pack_model(cv, tmp_path / "pkg", benchmark_dir=bench))
    assert pkg.recipe["method"] == "lse_heatmap" and pkg.recipe["threshold"] == "priorcomp+search"
    assert pkg.recipe["brain_erosion"] == 2 and pkg.recipe["min_size"] == 5
    assert pkg.members[0]["layer"] == "levels.1.conv" and pkg.members[0]["cam_threshold"] == 0.3
    rep = Predictor(pkg).predict(f, tmp_path / "out")
    heat = nib.load(str(tmp_path / "out" / "p005" / "heatmap.nii.gz"))
    assert heat.shape == p["image"].shape and rep["files"]["heatmap"] == "heatmap.nii.gz"
    assert rep["recipe"]["method"] == "lse_heatmap"


def test_recipe_of_a_grid_report_keeps_its_growth(tmp_path, phantom):
    """A post-processing grid names the chosen spec with its growth (``,g1``): the package records it and the
    predictor's masks grow by it."""
    cv = _fake_cv(tmp_path / "cv", {**SETTINGS, "backbone": "lse_resnet10"}, folds=(0,))
    bench = tmp_path / "bench"
    bench.mkdir()
    spec = "priorcomp+search[e2,hu50-90,min5,g1]"
    (bench / "choices.csv").write_text(
        f"fold,method,layer,threshold,selection_dice\n0,lse_heatmap,levels.1.conv,\"{spec}\",0.4\n")
    (bench / "thresholds.csv").write_text(
        "fold,method,layer,threshold,value,selection_dice,selection_patients,selection_slices,selection_metric\n"
        f"0,lse_heatmap,levels.1.conv,\"{spec}\",0.3,0.4,4,8,dice\n")
    (bench / "config.json").write_text(json.dumps({"prob_threshold": 0.5, "hu_range": [[45.0, 90.0], [50.0, 90.0]],
                                                   "brain_erosion": [0, 2], "min_size": 5, "grow": [0, 1]}))
    pkg = ModelPackage.load(pack_model(cv, tmp_path / "pkg", benchmark_dir=bench))
    assert pkg.recipe["threshold"] == "priorcomp+search" and pkg.recipe["grow"] == 1
    assert pkg.recipe["brain_erosion"] == 2 and pkg.recipe["hu_range"] == [50.0, 90.0]
    assert Predictor(pkg).spec.grow == 1
    plain = ModelPackage.load(pack_model(cv, tmp_path / "pkg0", benchmark_dir=bench, post_processing={"grow": 0}))
    assert plain.recipe["grow"] == 0 and Predictor(plain).spec.grow == 0


def test_predict_dicom_series_gives_a_dicom_seg(model, phantom, tmp_path):
    import highdicom as hd

    from hemwsl.data.dicom import write_dicom_series

    f, p = phantom
    series = tmp_path / "dicom" / "p005"
    files = write_dicom_series(p["image"], p["affine"], series)
    for i, x in enumerate(files):  # names without .dcm, in shuffled order: the reader sorts by position
        x.rename(series / f"IM{(7 * i) % len(files):03d}")
    rep_dcm = Predictor(model).predict(series, tmp_path / "out")
    rep_nii = Predictor(model).predict(f, tmp_path / "out_nii")
    assert rep_dcm["volume"]["ml"] == pytest.approx(rep_nii["volume"]["ml"])
    assert rep_dcm["slices"]["positive"] == rep_nii["slices"]["positive"]
    seg = hd.seg.segread(str(tmp_path / "out" / "p005" / "seg.dcm"))
    src = sorted(series.iterdir())
    import pydicom

    uid = pydicom.dcmread(str(src[0]), stop_before_pixels=True).SeriesInstanceUID
    assert seg.get_source_image_uids()[0][1] == uid
    mask = np.asarray(nib.load(str(tmp_path / "out" / "p005" / "mask.nii.gz")).dataobj) > 0
    assert int(seg.pixel_array.astype(bool).sum()) == int(mask.sum()) or not mask.any()


def test_cli_predict_and_bad_input(model, phantom, tmp_path, capsys):
    f, _ = phantom
    assert main(["predict", "--model", str(model), "--input", str(f), "--out", str(tmp_path / "o"), "--no-figures"]) == 0
    assert "p005:" in capsys.readouterr().out
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((32, 32), np.float32), np.eye(4)), str(flat))
    scaled = tmp_path / "scaled.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((32, 32, 8)).astype(np.float32), np.eye(4)), str(scaled))
    noskull = tmp_path / "noskull.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).uniform(-20, 60, (32, 32, 8)).astype(np.float32), np.eye(4)),
             str(noskull))
    empty_dir = tmp_path / "nodicom"
    empty_dir.mkdir()
    (empty_dir / "readme.txt").write_text("no DICOM here")
    other = tmp_path / "other"
    other.mkdir()
    (other / MODEL_FILE).write_text(json.dumps({"kind": "something-else"}))
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / MODEL_FILE).write_text("{not json")
    broken = tmp_path / "broken"
    broken.mkdir()
    meta = json.loads((model / MODEL_FILE).read_text())
    (broken / MODEL_FILE).write_text(json.dumps(meta))
    (broken / "fold0.pt").write_bytes(b"not a checkpoint")
    cases = [
        (["--input", str(flat)], "expected a 3D volume"),
        (["--input", str(scaled)], "do not look like CT in Hounsfield units"),
        (["--input", str(noskull)], "no brain inside a skull"),
        (["--input", str(empty_dir)], "no DICOM image series found"),
        (["--input", str(tmp_path / "missing.nii.gz")], "input not found"),
        (["--input", str(f), "--model", str(other)], "a model of another kind"),
        (["--input", str(f), "--model", str(corrupt)], "corrupt model description"),
        (["--input", str(f), "--model", str(broken)], "cannot read checkpoint"),
        (["--input", str(f), "--model", str(tmp_path)], "not a hemwsl model package"),
        (["--input", str(f), "--spatial-size", "128", "128"], "contradicts the model"),
    ]
    for extra, message in cases:
        argv = ["predict", "--model", str(model), "--out", str(tmp_path / "bad"), "--no-figures"]
        if "--model" in extra:
            i = extra.index("--model")
            argv[2] = extra[i + 1]
            extra = extra[:i] + extra[i + 2:]
        assert main(argv + extra) == 2, message
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, (message, err)
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


def test_dicom_reader_matches_itk_and_checks_spacing(tmp_path):
    from hemwsl.data.dicom import list_series, read_dicom_series, write_dicom_series
    from hemwsl.data.io import load_volume

    rng = np.random.default_rng(0)
    hu = rng.uniform(-20, 100, (24, 20, 6)).round().astype(np.float32)
    c, s = np.cos(0.2), np.sin(0.2)  # an oblique grid
    affine = np.array([[0.7 * c, -0.8 * s, 0, 10], [0.7 * s, 0.8 * c, 0, -20], [0, 0, 3.0, 30], [0, 0, 0, 1]])
    write_dicom_series(hu, affine, tmp_path / "a")
    ours = read_dicom_series(tmp_path / "a")
    itk = load_volume(tmp_path / "a")
    np.testing.assert_allclose(ours.volume.array, hu)
    np.testing.assert_allclose(ours.volume.affine, affine, atol=1e-4)
    np.testing.assert_allclose(itk.array, hu)
    np.testing.assert_allclose(itk.affine, affine, atol=1e-4)
    # two series in one folder: the one with more slices is chosen
    write_dicom_series(hu[..., :4], affine, tmp_path / "a" / "short", patient_id="B", seed=1)
    assert [r["n"] for r in list_series(tmp_path / "a")] == [6, 4]
    assert read_dicom_series(tmp_path / "a").volume.shape == (24, 20, 6)
    # a missing slice
    files = write_dicom_series(hu, affine, tmp_path / "gap")
    files[3].unlink()
    with pytest.raises(HemwslInputError, match="uneven slice spacing"):
        read_dicom_series(tmp_path / "gap")


def test_report_figure_is_radiological():
    """The same head stored RAS or LAS shows the same picture."""
    from hemwsl.reports.predict import radiological_slices

    vol = np.arange(4 * 5 * 3, dtype=float).reshape(4, 5, 3)
    ras = np.diag([1.0, 1.0, 2.0, 1.0])
    las = ras.copy()
    las[0, 0] = -1
    a = radiological_slices(vol, ras)
    b = radiological_slices(vol[::-1], las)
    np.testing.assert_array_equal(a, b)
    # rows run anterior -> posterior (RAS Y decreasing), columns the patient's right -> left (RAS X decreasing)
    assert a.shape == (5, 4, 3) and a[0, 0, 0] == vol[3, 4, 0] and a[-1, -1, 0] == vol[0, 0, 0]


@pytest.mark.parametrize("backbone,trace", [("resnet10", False), ("lse_resnet10", True)])
def test_ckpt_export_to_torchscript(tmp_path, backbone, trace):
    """MONAI's ckpt_export turns a classifier-bundle checkpoint into TorchScript: scripted for the backbones,
    traced (``use_trace``) for the LSE heatmap network, whose encoder plan is plain Python control flow."""
    from monai.bundle import ckpt_export

    from hemwsl.engines.bundle import config_files

    torch.manual_seed(0)
    net = build_network(backbone, in_channels=9, num_classes=1).eval()
    ckpt = tmp_path / "model.pt"
    torch.save(net.state_dict(), ckpt)
    root = Path(config_files("ich_classifier", ["train"])[0]).parents[1]
    ckpt_export(net_id="network_def", filepath=str(tmp_path / "model.ts"), ckpt_file=str(ckpt),
                meta_file=str(root / "configs" / "metadata.json"), config_file=config_files("ich_classifier", ["train"]),
                bundle_root=str(root), backbone=backbone, spatial_size=[64, 64], use_trace=trace,
                input_shape=[1, 9, 64, 64] if trace else None)
    ts = torch.jit.load(str(tmp_path / "model.ts"))
    x = torch.rand(2, 9, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ts(x), net(x), atol=1e-5, rtol=1e-4)


def test_predict_bundle_runs_with_monai_bundle(model, phantom, tmp_path):
    """bundles/ich_predict: the inference workflow's MONAI properties, and a real run over a folder holding a
    NIfTI file and a DICOM series."""
    from hemwsl.data.dicom import write_dicom_series
    from hemwsl.engines.bundle import check_bundle, run_bundle

    assert check_bundle("ich_predict", "infer") == []
    f, p = phantom
    scans = tmp_path / "scans"
    scans.mkdir()
    (scans / f.name).write_bytes(f.read_bytes())
    write_dicom_series(p["image"], p["affine"], scans / "p005_dicom")
    run_bundle("ich_predict", ["inference"], workflow_type="infer", model_dir=str(model), dataset_dir=str(scans),
               output_dir=str(tmp_path / "out"), figures=False)
    assert (tmp_path / "out" / "p005" / "report.json").is_file()
    assert (tmp_path / "out" / "p005_dicom" / "seg.dcm").is_file()


def test_six_output_model_reports_subtype_volumes(tmp_path, phantom):
    """A six-output (any + five subtypes) model: per-subtype mL that add up to the mask's."""
    from hemwsl.constants import SUBTYPES

    f, _ = phantom
    settings = {**SETTINGS, "multilabel": True}
    root = tmp_path / "cv"
    root.mkdir()
    (root / "cv_settings.json").write_text(json.dumps(settings))
    torch.manual_seed(0)
    net = build_network("resnet10", in_channels=6, num_classes=6)
    (root / "fold0" / "models").mkdir(parents=True)
    torch.save(net.state_dict(), root / "fold0" / "models" / "model.pt")
    pkg = ModelPackage.load(pack_model(root, tmp_path / "pkg", post_processing={"slice_threshold": 0.0}))
    assert pkg.meta["outputs"][1:] == list(SUBTYPES)
    rep = Predictor(pkg).predict(f, tmp_path / "out", figures=False)
    sub = rep["volume"]["subtypes_ml"]
    assert set(sub) == set(SUBTYPES) | {"unassigned"}
    assert sum(sub.values()) == pytest.approx(rep["volume"]["ml"])
    header = (tmp_path / "out" / "p005" / "probabilities.csv").read_text().splitlines()[0]
    assert header == "slice,prob_any," + ",".join(f"prob_{s}" for s in SUBTYPES) + ",positive"


def test_lse_fast_path_equals_the_cam_engine(tmp_path, phantom):
    """An LSE network's probabilities and heatmap from one forward equal the generic path (TTA inferer + CAM
    engine's lse_heatmap), which the benchmark validated."""
    f, p = phantom
    cv = _fake_cv(tmp_path / "cv", {**SETTINGS, "backbone": "lse_resnet10"}, folds=(0,))
    pkg = ModelPackage.load(pack_model(cv, tmp_path / "pkg"))
    pkg.meta["recipe"].update(method="lse_heatmap", layer="levels.1.conv")
    pred = Predictor(pkg)
    x, _ = pred._inputs(p["image"].astype(np.float32))
    net = pred.networks[0]
    probs, heat = pred._lse_pass(net, x, "levels.1.conv", p["image"].shape)
    np.testing.assert_allclose(probs, pred._probabilities(net, x), atol=1e-5)
    np.testing.assert_allclose(heat, pred._heatmap(pred.engines[0], x, p["image"].shape), atol=1e-5)


def test_thin_components_are_dropped():
    from hemwsl.metrics.volume import drop_thin_components as _drop_thin_components

    m = np.zeros((10, 10, 6), bool)
    m[1:3, 1:3, 2] = True  # one slice
    m[6:9, 6:9, 1:4] = True  # three slices
    m[1, 8, 4:6] = True  # two slices
    out = _drop_thin_components(m, 2)
    assert not out[:, :, 2][1:3, 1:3].any() and out[6:9, 6:9, 1:4].all() and out[1, 8, 4:6].all()
    assert (_drop_thin_components(m, 3) == (m & (np.arange(10)[:, None, None] >= 6))).all()
    assert _drop_thin_components(m, 1) is m
    # several rules from one labelling equal one rule at a time, on random masks too
    from hemwsl.metrics.volume import drop_thin_components_by_rule

    rng = np.random.default_rng(0)
    for mask in (m, rng.random((24, 24, 12)) > 0.8, np.zeros((4, 4, 3), bool)):
        many = drop_thin_components_by_rule(mask, [3, 1, 2, 5])
        assert sorted(many) == [1, 2, 3, 5]
        for n, kept in many.items():
            want = _drop_thin_components(mask, n)
            assert kept.dtype == bool and (kept == want).all()
        # the reference: keep a component when its z extent reaches n
        from scipy import ndimage

        lab, k = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
        for n in (2, 5):
            ref = np.zeros_like(mask)
            for i in range(1, k + 1):
                z = np.flatnonzero((lab == i).any(axis=(0, 1)))
                if z.max() - z.min() + 1 >= n:
                    ref |= lab == i
            assert (many[n] == ref).all()


def test_package_takes_each_members_thin_component_rule_from_a_quantify_report(tmp_path, phantom):
    """`hemwsl quantify --min-slices` chooses the rule per fold on selection patients; a package built with
    --quantify-dir carries each fold's choice to its member, unless --min-slices fixes one for all."""
    f, _ = phantom
    cv = _fake_cv(tmp_path / "cv", SETTINGS, folds=(0, 1))
    quant = tmp_path / "quant"
    quant.mkdir()
    (quant / "summary.json").write_text(json.dumps({"choices": {
        "0": {"aggregation": "max", "threshold": 0.5, "min_slices": 3},
        "1": {"aggregation": "top3", "threshold": 0.4, "min_slices": 1}}}))
    pkg = ModelPackage.load(pack_model(cv, tmp_path / "pkg", quantify_dir=quant))
    assert [m.get("min_slices") for m in pkg.members] == [3, 1]
    assert [m["scan_aggregation"] for m in pkg.members] == ["max", "top3"]
    fixed = ModelPackage.load(pack_model(cv, tmp_path / "pkg2", quantify_dir=quant, post_processing={"min_slices": 2}))
    assert [m.get("min_slices") for m in fixed.members] == [None, None] and fixed.recipe["min_slices"] == 2
    rep = Predictor(pkg).predict(f, tmp_path / "out")  # runs with the members' own rules
    assert rep["members"] == [0, 1]


def test_slice_sequence_model_sees_the_whole_volume(tmp_path, phantom):
    """A seq_* package: the slice probabilities come from one sequence of every slice of the scan (flip TTA
    included), as the evaluator scored them; its CAMs explain the fine-tuned encoder."""
    from hemwsl.engines.classifier import predict_volume

    f, p = phantom
    cv = _fake_cv(tmp_path / "cv", {**SETTINGS, "backbone": "seq_resnet10"}, folds=(0,))
    pkg = ModelPackage.load(pack_model(cv, tmp_path / "pkg", post_processing={"slice_threshold": 0.0}))
    pred = Predictor(pkg)
    x, _ = pred._inputs(p["image"].astype(np.float32))
    net = pred.networks[0]
    with torch.no_grad():
        want = torch.sigmoid((net(x[None]) + net(torch.flip(x[None], (-1,)))) / 2).numpy()
    np.testing.assert_allclose(pred._probabilities(net, x), want, atol=1e-5)
    rep = Predictor(pkg).predict(f, tmp_path / "out", figures=False)
    assert rep["volume"]["ml"] >= 0
    # the classifier bundle's inference path (predict_volume) gives the same sequence probabilities
    from hemwsl.engines.classifier import FlipTTAInferer

    got = predict_volume(net, f, windows=SETTINGS["windows"], num_slices=3, spatial_size=(64, 64), skull_strip=True,
                         inferer=FlipTTAInferer())
    assert got.shape == want.shape
