"""The trust report end to end on tiny synthetic phantoms (random-weight resnet10 at 32 px)."""

from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest
import torch

from hemwsl.constants import IMAGE, LABEL, PATIENT, SLICE_LABELS
from hemwsl.errors import HemwslInputError

SIZE = 32
METHODS = ["gradcam", "cam", "saliency", "input_x_gradient"]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    from hemwsl.data.synthetic import write_synthetic_ctich

    root = tmp_path_factory.mktemp("trust_synth")
    write_synthetic_ctich(root, n_patients=3, seed=5, shape=(48, 48, 6), negative_fraction=0.34)
    return root


@pytest.fixture(scope="module")
def tiny_datalist(tiny_root):
    from hemwsl.data import build_datalist

    return build_datalist("ct-ich", tiny_root)


@pytest.fixture(scope="module")
def net():
    from tests.cam.helpers import calibrated

    return calibrated(in_channels=1, size=SIZE, seed=2)


def _report(datalist, out, net, **kw):
    from hemwsl.trust.report import TrustConfig, run_trust_report

    config = TrustConfig(patch_size=8, n_subsets=8, subset_fraction=0.25, n_steps=4, curve_slices=1, ring_mm=6.0)
    return run_trust_report(datalist, out, net, METHODS, layers=["layer3", "layer4"], config=config,
                            windows=["brain"], num_slices=1, spatial_size=(SIZE, SIZE), skull_strip=True,
                            batch_size=4, perturbation_batch=16, progress=False, **kw)


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_report_values_files_and_resume(tiny_datalist, net, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    paths = _report(tiny_datalist, tmp_path, net)
    for name in ("per_case", "per_patient", "tests", "summary", "fig_faithfulness", "fig_regions"):
        assert paths[name].exists(), name
    rows = _rows(paths["per_case"])
    positives = [(e[PATIENT], z) for e in tiny_datalist for z, v in enumerate(e[SLICE_LABELS]) if v]
    keys = {("gradcam", "layer3"), ("gradcam", "layer4"), ("cam", "layer4"), ("saliency", "input"),
            ("input_x_gradient", "input")}  # cam only at the head layer
    assert {(r["method"], r["layer"]) for r in rows} == keys
    assert len(rows) == len(positives) * len(keys)
    for r in rows:  # the four regions tile the slice
        assert sum(int(r[f"px_{g}"]) for g in ("hemorrhage", "perihematomal", "brain", "background")) == SIZE * SIZE
        assert int(r["px_hemorrhage"]) == int(float(r["lesion_px"]))
    # curves only on the largest-lesion slice of each patient
    with_curves = {(r["patient"], r["slice"]) for r in rows if r["deletion_auc"] != "nan"}
    assert len(with_curves) == len({p for p, _ in positives})

    # recompute the faithfulness of the first batch of one patient independently
    from hemwsl.cam import CAMEngine
    from hemwsl.data.dataset import SliceDataset
    from hemwsl.trust.faithfulness import faithfulness_correlation

    entry = next(e for e in tiny_datalist if any(e[SLICE_LABELS]))
    pos = [z for z, v in enumerate(entry[SLICE_LABELS]) if v]
    ds = SliceDataset([{IMAGE: entry[IMAGE], LABEL: entry[LABEL]}], num_slices=1, windows=["brain"],
                      spatial_size=(SIZE, SIZE), skull_strip=True, slice_filter=lambda e, z: z in pos)
    x = torch.stack([ds[i][IMAGE] for i in range(min(4, len(ds)))])
    maps = CAMEngine(net, ["saliency"])(x)
    ref = faithfulness_correlation(net, x, maps[("saliency", "input")], patch_size=8, n_subsets=8,
                                   subset_fraction=0.25, seed=0)
    got = {int(r["slice"]): float(r["faithfulness"]) for r in rows
           if r["patient"] == entry[PATIENT] and r["method"] == "saliency"}
    # float32 convolutions of another batch composition (the report's batch is the patient's positive slices)
    # differ in the last bits with two intra-op threads; a correlation near 0 then moves by ~1.5e-5
    np.testing.assert_allclose([got[z] for z in pos[: len(ref)]], ref, atol=1e-4)

    summary = paths["summary"].read_text()
    assert "| saliency |" in summary and "## Paired tests" in summary
    tests = _rows(paths["tests"])
    assert {t["a"] for t in tests if t["kind"] == "paired"} == {"hemorrhage", "perihematomal"}

    # resume: nothing is recomputed when the per-case files exist with the same settings
    import hemwsl.trust.report as report

    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(report, "explain_entry", boom)
    before = {p.name: p.read_text() for p in (tmp_path / "per_case").glob("*.json")}
    _report(tiny_datalist, tmp_path, net)
    assert {p.name: p.read_text() for p in (tmp_path / "per_case").glob("*.json")} == before


def test_command_with_fold_models(tiny_root, net, tmp_path):
    """``run_trust`` loads the fold model whose test part holds each patient."""
    from hemwsl.commands.trust import add_trust_arguments, run_trust
    from hemwsl.data import build_datalist
    from hemwsl.engines.classifier import fold_datalists

    for k in range(2):
        (tmp_path / f"fold{k}").mkdir()
        torch.save(net.state_dict(), tmp_path / f"fold{k}" / "model.pt")
    parser = argparse.ArgumentParser()
    add_trust_arguments(parser)
    argv = [
        "--dataset-dir", str(tiny_root), "--out", str(tmp_path / "rep"),
        "--model", str(tmp_path / "fold{fold}" / "model.pt"), "--folds", "2", "--backbone", "resnet10",
        "--windows", "brain", "--num-slices", "1", "--spatial-size", "32", "32",
        "--skull-strip", "--methods", "saliency", "--subsets", "4", "--steps", "0", "--threads", "1",
        "--max-slices", "1",
    ]
    args = parser.parse_args(argv)
    assert run_trust(args) == 0
    rows = _rows(tmp_path / "rep" / "per_case.csv")
    datalist = build_datalist("ct-ich", tiny_root)
    owner = {e[PATIENT]: f"fold{k}" for k in range(2) for e in fold_datalists(datalist, 2, k, 0, 0.15)["test"]}
    assert rows and all(r["model"] == owner[r["patient"]] for r in rows)
    # --max-slices 1: one slice per positive patient, the one with the largest lesion
    assert len(rows) == len({r["patient"] for r in rows}) == sum(any(e[SLICE_LABELS]) for e in datalist)
    from hemwsl.data.io import load_volume

    for r in rows:
        entry = next(e for e in datalist if e[PATIENT] == r["patient"])
        mask = torch.as_tensor(load_volume(entry[LABEL], kind="mask").array).permute(2, 0, 1)[:, None].float()
        areas = torch.nn.functional.interpolate(mask, size=(SIZE, SIZE), mode="nearest").sum(dim=(1, 2, 3))
        assert int(r["slice"]) == int(np.argmax(areas.numpy()))  # ties: the lowest index
    info = json.loads(next((tmp_path / "rep" / "per_case").glob("*.json")).read_text())
    assert info["config"]["n_subsets"] == 4

    # the folder records settings and models: the same command resumes, another setting or model is refused
    before = (tmp_path / "rep" / "per_case.csv").read_text()
    assert run_trust(parser.parse_args(argv)) == 0
    assert (tmp_path / "rep" / "per_case.csv").read_text() == before
    with pytest.raises(HemwslInputError, match=r"other settings \(config.n_subsets 4 -> 5\)"):
        run_trust(parser.parse_args([a if a != "4" else "5" for a in argv]))
    other = calibrated_other()
    torch.save(other.state_dict(), tmp_path / "fold1" / "model.pt")
    with pytest.raises(HemwslInputError, match=r"other settings \(models.checkpoints.*fold1"):
        run_trust(parser.parse_args(argv))
    assert (tmp_path / "rep" / "per_case.csv").read_text() == before  # nothing mixed in


def calibrated_other():
    from tests.cam.helpers import calibrated

    return calibrated(in_channels=1, size=SIZE, seed=7)


def test_bad_arguments(tiny_datalist, net, tmp_path):
    from hemwsl.trust.report import run_trust_report, summarize

    with pytest.raises(HemwslInputError, match="method"):
        run_trust_report(tiny_datalist, tmp_path, net, ["nosuchcam"])
    with pytest.raises(HemwslInputError, match="empty"):
        run_trust_report([], tmp_path, net, ["saliency"])
    with pytest.raises(HemwslInputError, match="no per-case"):
        summarize(tmp_path / "nothing")
