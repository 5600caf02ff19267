"""The dominant components (``min_share``): a slice's components under a share of its largest component's heat
mass are dropped. Hand values, the strategies, the benchmark's fast searches against the strategies, spec names,
the benchmark grid and the recipe of a model package."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from hemwsl.errors import HemwslInputError
from hemwsl.metrics import compute_dice
from hemwsl.thresholds import IntensityPrior
from hemwsl.thresholds.postprocess import check_min_share, component_mass, keep_dominant_components


def _two_blobs() -> np.ndarray:
    m = np.zeros((20, 20), bool)
    m[1:11, 1:11] = True  # 100 px
    m[15:17, 15:18] = True  # 6 px
    return m


def test_keep_dominant_components_by_size_hand_values():
    m = _two_blobs()
    # 6 / 100 = 0.06: kept at a share of 0.05, dropped at 0.1
    np.testing.assert_array_equal(keep_dominant_components(m, 0.05), m)
    kept = keep_dominant_components(m, 0.1)
    assert kept[1:11, 1:11].all() and not kept[15:17, 15:18].any() and kept.sum() == 100
    np.testing.assert_array_equal(keep_dominant_components(m, 0.0), m)  # 0: every component
    assert not keep_dominant_components(np.zeros((5, 5), bool), 0.5).any()
    # torch in, torch out
    t = keep_dominant_components(torch.from_numpy(m), 0.1)
    assert isinstance(t, torch.Tensor) and int(t.sum()) == 100


def test_keep_dominant_components_by_heat_mass_hand_values():
    """With weights the mass is size x mean heat: a small, strongly marked component can outweigh a large, faint
    one (6 x 1.0 = 6 against 100 x 0.05 = 5)."""
    m = _two_blobs()
    w = np.zeros((20, 20))
    w[1:11, 1:11] = 0.05
    w[15:17, 15:18] = 1.0
    kept = keep_dominant_components(m, 0.9, w)
    assert kept.sum() == 6 and kept[15:17, 15:18].all()
    np.testing.assert_array_equal(keep_dominant_components(m, 0.8, w), m)  # 5 >= 0.8 x 6
    labels = np.zeros((20, 20), int)
    labels[m & (w == 0.05)] = 1
    labels[m & (w == 1.0)] = 2
    np.testing.assert_allclose(component_mass(labels, 2, w), [5.0, 6.0])
    np.testing.assert_allclose(component_mass(labels, 2), [100.0, 6.0])
    # all-zero weights (no evidence): every component stays
    np.testing.assert_array_equal(keep_dominant_components(m, 0.5, np.zeros((20, 20))), m)


def test_keep_dominant_components_3d_and_bad_values():
    vol = np.zeros((10, 10, 4), bool)
    vol[1:6, 1:6, 0:3] = True  # 75 voxels
    vol[8, 8, 3] = True  # 1 voxel
    assert keep_dominant_components(vol, 0.1).sum() == 75  # 26-connectivity components of the volume
    for bad in (1.0, -0.1, float("nan"), True, "0.2", None):
        with pytest.raises(HemwslInputError, match="min_share"):
            check_min_share(bad)
    with pytest.raises(HemwslInputError, match="shape"):
        keep_dominant_components(vol, 0.1, np.ones((10, 10)))
    with pytest.raises(HemwslInputError, match="non-negative"):
        keep_dominant_components(vol, 0.1, -np.ones(vol.shape))
    with pytest.raises(HemwslInputError, match="min_share"):
        IntensityPrior(min_share=2)


def test_the_prior_alone_keeps_its_dominant_components_per_slice():
    """Without a heatmap the mass is the size; ``per_sample`` compares the components of each slice only."""
    hu = np.zeros((2, 20, 20))
    hu[0][_two_blobs()] = 70.0
    hu[1, 15:17, 15:18] = 70.0  # slice 1 holds the small component alone: it is that slice's largest
    pred = IntensityPrior(hu_range=(50, 90), min_share=0.1, per_sample=True)(None, image_hu=hu)
    assert pred[0].sum() == 100 and pred[1].sum() == 6
    assert "min_share=0.1" in repr(IntensityPrior(min_share=0.1))


def _scene(seed: int):
    rng = np.random.default_rng(seed)
    heat = rng.random((4, 28, 28)).astype(np.float32)
    heat[2] = 0.5  # a constant map: no heat evidence, every component weighs 0
    hu = rng.uniform(0, 100, (4, 28, 28))
    hu[:, 5:10, 5:10] = 70.0  # a large hyperdense blob per slice
    hu[:, 4, 4:12] = 45.0  # an edge to grow into
    hu[:, 15:18, 15:18] = 60.0  # a smaller one
    gt = np.zeros((4, 28, 28), bool)
    gt[:, 4:10, 5:11] = True
    gt[3] = False
    brain = np.ones((4, 28, 28), bool)
    brain[:, :, 24:] = False
    return heat, hu, gt, brain


@pytest.mark.parametrize("share", [0.1, 0.3, 0.6])
@pytest.mark.parametrize("grow", [0, 1])
def test_fast_component_search_with_share_equals_the_strategy(share, grow):
    """``component_counts`` with ``min_share`` (and growth) equals thresholding, keeping the touched prior
    components, dropping those under the share of the largest heat mass, growing, then Dice, per candidate."""
    from hemwsl.benchmark import component_counts, counts_dice, parse_threshold_spec
    from hemwsl.thresholds.base import GROW_HU_RANGE

    heat, hu, gt, brain = _scene(3)
    allowed = brain & (hu >= 50) & (hu <= 90)
    region = brain & (hu >= GROW_HU_RANGE[0]) & (hu <= GROW_HU_RANGE[1])
    cands = [0.0, 0.05, 0.5, 0.9, 0.99]
    got = counts_dice(component_counts(heat, gt, allowed, cands, 4, grow, region if grow else None, share))
    g = f",g{grow}" if grow else ""
    spec = parse_threshold_spec(f"priorcomp+search[e0,hu50-90,min4,s{share:g}{g}]")
    assert spec.min_share == share and spec.grow == grow and spec.base == "priorcomp+search"
    for j, t in enumerate(cands):
        pred = spec.strategy(t)(heat, image_hu=hu, brain=brain)
        np.testing.assert_allclose(got[:, j], compute_dice(pred, gt).numpy(), atol=1e-12)


@pytest.mark.parametrize("grow", [0, 1])
def test_fast_and_search_with_share_equals_the_strategy(grow):
    from hemwsl.benchmark import counts_dice, parse_threshold_spec
    from hemwsl.benchmark.runner import grown_candidate_counts
    from hemwsl.thresholds.base import GROW_HU_RANGE

    heat, hu, gt, brain = _scene(4)
    allowed = brain & (hu >= 50) & (hu <= 90)
    region = brain & (hu >= GROW_HU_RANGE[0]) & (hu <= GROW_HU_RANGE[1])
    cands = [0.1, 0.5, 0.8]
    got = counts_dice(grown_candidate_counts(heat, gt, allowed, cands, grow, region, min_size=3, min_share=0.3))
    spec = parse_threshold_spec(f"prior+search[e0,hu50-90,min3,s0.3{',g1' if grow else ''}]")
    for j, t in enumerate(cands):
        pred = spec.strategy(t)(heat, image_hu=hu, brain=brain)
        np.testing.assert_allclose(got[:, j], compute_dice(pred, gt).numpy(), atol=1e-12)


def test_spec_names_carry_the_share():
    from hemwsl.benchmark.specs import expand_post_grid, parse_threshold_spec, post_grid

    specs = expand_post_grid(["prior", "priorcomp+search"], post_grid(4, (50, 90), 50, [0, 1], [0, 0.25]))
    assert [s.text for s in specs] == [
        "prior[e4,hu50-90,min50]", "prior[e4,hu50-90,min50,g1]", "prior[e4,hu50-90,min50,s0.25]",
        "prior[e4,hu50-90,min50,s0.25,g1]", "priorcomp+search[e4,hu50-90,min50]",
        "priorcomp+search[e4,hu50-90,min50,g1]", "priorcomp+search[e4,hu50-90,min50,s0.25]",
        "priorcomp+search[e4,hu50-90,min50,s0.25,g1]"]
    for s in specs:  # each name parses back to its own settings
        back = parse_threshold_spec(s.text)
        assert (back.min_share, back.grow, back.min_size, back.erosion) == (s.min_share, s.grow, s.min_size, s.erosion)
    with pytest.raises(HemwslInputError, match="min_share"):
        post_grid(0, (45, 90), 0, 0, [0.2, 1.5])
    with pytest.raises(HemwslInputError, match="share"):
        parse_threshold_spec("prior[e0,hu50-90,min0,s1.5]")
    with pytest.raises(HemwslInputError, match="share"):
        parse_threshold_spec("prior[e0,hu50-90,min0,s0.2.1]")


def test_benchmark_chooses_the_share_and_a_package_applies_it(tmp_path):
    """The benchmark's grid with ``min_share``: recorded, chosen per fold, reported; its choice becomes the recipe of
    the members' post-processing when a model package is made from the report."""
    from hemwsl.benchmark import cv_folds, run_benchmark
    from hemwsl.data.datalist import build_datalist
    from hemwsl.data.synthetic import write_synthetic_ctich
    from hemwsl.predict import _recipe_from_benchmark

    write_synthetic_ctich(tmp_path / "data", n_patients=6, shape=(40, 40, 8), seed=5)
    datalist = build_datalist("ct-ich", tmp_path / "data")
    folds = cv_folds(datalist, n_folds=3, seed=0, val_fraction=0.25)
    # the prior alone needs no heatmaps, but the benchmark reads a CAM folder: give it one method of zeros
    import nibabel as nib

    for e in datalist:
        img = nib.load(e["label"])
        path = tmp_path / "cam" / "zero" / "l1" / f"{e['patient']}.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(np.zeros(img.shape, np.float32), img.affine), str(path))
    rep = run_benchmark(datalist, tmp_path / "cam", tmp_path / "rep", thresholds=["prior", "priorcomp+search"],
                        n_boot=10, progress=False, figures=False, min_share=[0, 0.5], folds=folds)
    config = json.loads((rep / "config.json").read_text())
    assert config["min_share"] == [0.0, 0.5]
    with open(rep / "choices.csv") as f:
        chosen = [r for r in csv.DictReader(f)]
    assert chosen and {r["threshold"].split("[")[1].rstrip("]").split(",")[-1] for r in chosen} <= {"min0", "s0.5"}
    summary = (rep / "summary.md").read_text()
    assert "| min share |" in summary and "share of the slice's largest component's heat mass [0, 0.5]" in summary
    recipe, per_fold = _recipe_from_benchmark(rep, [0, 1, 2], ["zero"])
    from hemwsl.benchmark import parse_threshold_spec

    first = parse_threshold_spec(per_fold[0]["threshold"])
    assert recipe.get("min_share", 0.0) == first.min_share and recipe["threshold"] == "priorcomp+search"
    assert {parse_threshold_spec(v["threshold"]).min_share for v in per_fold.values()} <= {0.0, 0.5}
    # a resume with another share grid is refused
    with pytest.raises(HemwslInputError, match="other settings"):
        run_benchmark(datalist, tmp_path / "cam", tmp_path / "rep", thresholds=["prior", "priorcomp+search"],
                      n_boot=10, progress=False, figures=False, min_share=[0, 0.3], folds=folds)
