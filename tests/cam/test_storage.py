"""uint16 heatmap files (``save_heatmaps(storage="uint16")``, ``run_cam(storage=...)``, ``cam-cv --storage``)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from hemwsl.cam import save_heatmaps
from hemwsl.cam.volume import HEATMAP_STORAGE, quantise_uint16
from hemwsl.errors import HemwslInputError


def test_quantise_by_hand():
    raw, slope, inter = quantise_uint16(np.array([[-1.0, 0.0], [0.5, 2.0]]))
    assert raw.dtype == np.uint16 and inter == -1.0
    assert slope == pytest.approx(3.0 / 65535, rel=1e-7)
    assert raw.tolist() == [[0, round(1 / slope)], [round(1.5 / slope), 65535]]
    raw, slope, inter = quantise_uint16(np.full((2, 3), 0.25))  # constant: exact
    assert not raw.any() and slope == 1.0 and inter == 0.25
    with pytest.raises(HemwslInputError, match="NaN or inf"):
        quantise_uint16(np.array([0.0, np.nan]))


def test_uint16_files_read_back_within_about_half_a_step(tmp_path):
    rng = np.random.default_rng(0)
    maps = {("gradcam", "layer4"): (rng.random((20, 16, 5)) * 3 - 1).astype(np.float32),
            ("layercam", "layer3"): rng.random((20, 16, 5)).astype(np.float32) * 1e-3}
    a = save_heatmaps(maps, np.diag([0.5, 0.5, 5.0, 1.0]), tmp_path / "f", "p1")
    b = save_heatmaps(maps, np.diag([0.5, 0.5, 5.0, 1.0]), tmp_path / "u", "p1", storage="uint16")
    for key, arr in maps.items():
        f, u = nib.load(str(a[key])), nib.load(str(b[key]))
        assert f.get_data_dtype() == np.float32 and u.get_data_dtype() == np.uint16
        np.testing.assert_array_equal(np.asarray(f.dataobj), arr)  # float32: as computed
        step = (arr.max() - arr.min()) / 65535
        back = np.asarray(u.dataobj, dtype=np.float64)  # the reader applies the scale factor and offset
        assert np.abs(back - arr).max() <= 0.51 * step  # half a step, and float32 rounding
        np.testing.assert_allclose(u.affine, f.affine)
        assert b[key].stat().st_size < a[key].stat().st_size


def test_benchmark_reader_gives_the_same_masks(tmp_path):
    """The benchmark's reader on both files: the min-max normalised maps agree within 1e-4, the threshold masks at
    the grid's candidates agree on all but boundary pixels."""
    from hemwsl.benchmark.runner import load_heatmap

    rng = np.random.default_rng(1)
    arr = torch.nn.functional.interpolate(torch.from_numpy(rng.random((1, 6, 8, 8)).astype(np.float32)),
                                          size=(32, 32), mode="bilinear").numpy()[0].transpose(1, 2, 0)
    a = save_heatmaps({("m", "l"): arr}, np.eye(4), tmp_path / "f", "p")[("m", "l")]
    b = save_heatmaps({("m", "l"): arr}, np.eye(4), tmp_path / "u", "p", storage="uint16")[("m", "l")]
    fa, fb = load_heatmap(a, (32, 32, 6), range(6)), load_heatmap(b, (32, 32, 6), range(6))
    norm = [(x - x.min((1, 2), keepdims=True)) / np.ptp(x, (1, 2), keepdims=True) for x in (fa, fb)]
    assert np.abs(norm[0] - norm[1]).max() < 1e-4
    for t in (0.05, 0.3, 0.7):
        assert ((norm[0] > t) != (norm[1] > t)).mean() < 1e-3


def test_storage_is_checked_and_recorded(synthetic_datalist, tmp_path):
    from hemwsl.data.settings import InputSettings
    from hemwsl.engines.cam import run_cam
    from hemwsl.networks import build_network

    torch.manual_seed(0)
    net = build_network("resnet10", in_channels=3)
    kw = dict(methods=["layercam"], layers=["layer4"], inputs=InputSettings(windows=["brain"], spatial_size=(32, 32)),
              progress=False, grid="input")
    with pytest.raises(HemwslInputError, match="storage"):
        run_cam(net, synthetic_datalist[:1], tmp_path, storage="float16", **kw)
    assert not tmp_path.joinpath("layercam").exists()  # refused before any file
    plain = run_cam(net, synthetic_datalist[:1], tmp_path, **kw)
    before = np.asarray(nib.load(str(plain[0])).dataobj)
    small = run_cam(net, synthetic_datalist[:1], tmp_path, storage="uint16", **kw)
    img = nib.load(str(small[0]))
    assert img.get_data_dtype() == np.uint16  # recomputed, not taken as done by the float32 run
    np.testing.assert_allclose(np.asarray(img.dataobj), before, atol=np.ptp(before) / 65535)
    assert len(list((tmp_path / ".done").iterdir())) == 2


def test_cli_choices_are_the_library_s():
    from hemwsl.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["cam-cv", "--dataset-dir", "d", "--cv-dir", "c", "--out", "o", "--storage", "uint16"])
    assert args.storage == "uint16"
    sub = next(a for a in parser._subparsers._group_actions[0].choices["cam-cv"]._actions if a.dest == "storage")
    assert tuple(sub.choices) == HEATMAP_STORAGE and sub.default == "float32"
    with pytest.raises(SystemExit):
        parser.parse_args(["cam-cv", "--dataset-dir", "d", "--cv-dir", "c", "--out", "o", "--storage", "float16"])


def test_cam_cv_records_the_storage(tmp_path):
    """cam-cv records a non-default storage in its folder's record: a rerun with the other storage is refused."""
    from hemwsl.engines.runs import check_checkpoint_marker

    check_checkpoint_marker(tmp_path / "cams", tmp_path / "cv", "last", "heatmaps",
                            settings={"grid": "input", "storage": "uint16"})
    with pytest.raises(HemwslInputError, match='storage "uint16" -> <unset>'):
        check_checkpoint_marker(tmp_path / "cams", tmp_path / "cv", "last", "heatmaps", settings={"grid": "input"})
    assert json.loads((tmp_path / "cams" / "cam_checkpoint.json").read_text())["settings"]["storage"] == "uint16"
