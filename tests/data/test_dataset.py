from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from hemwsl.data.dataset import LoadCTVolumed, SliceDataset, balanced_sampler
from hemwsl.errors import HemwslInputError


def _window(hu, level, width):
    return np.clip((hu - (level - width / 2)) / width, 0, 1)


def test_slices_match_hand_computed_stack(synthetic_datalist):
    entry = synthetic_datalist[0]
    ds = SliceDataset([entry], num_slices=3, windows=["brain", (60, 40)], spatial_size=None)
    hu = np.asarray(nib.load(entry["image"]).dataobj, dtype=np.float32)
    mask = np.asarray(nib.load(entry["label"]).dataobj)
    depth = hu.shape[-1]
    assert len(ds) == depth
    for z in (0, 5, depth - 1):
        s = ds[z]
        idx = [max(z - 1, 0), z, min(z + 1, depth - 1)]
        expected = np.concatenate([_window(hu[..., idx], 40, 80), _window(hu[..., idx], 60, 40)], axis=-1)
        np.testing.assert_allclose(s["image"].numpy(), np.moveaxis(expected, -1, 0), atol=1e-6)
        np.testing.assert_array_equal(s["mask"][0].numpy(), mask[..., z])
        assert s["label"].tolist() == [float(entry["slice_labels"][z])]
        assert s["slice_index"] == z and s["patient"] == entry["patient"]


def test_reads_each_volume_once(synthetic_datalist, monkeypatch):
    import hemwsl.data.dataset as mod

    calls = []
    real = mod.load_pair

    def counting(*a, **k):
        calls.append(a[0])
        return real(*a, **k)

    monkeypatch.setattr(mod, "load_pair", counting)
    ds = SliceDataset(synthetic_datalist[:3], spatial_size=(32, 32))
    for _ in range(2):  # two epochs
        for i in range(len(ds)):
            ds[i]
    assert len(calls) == 3


def test_resize_and_multilabel(synthetic_datalist):
    ds = SliceDataset(synthetic_datalist[:2], num_slices=5, windows=["brain"], spatial_size=(32, 48), multilabel=True)
    s = ds[3]
    assert s["image"].shape == (5, 32, 48) and s["mask"].shape == (1, 32, 48)
    entry = synthetic_datalist[0]
    assert s["label"].tolist() == [float(entry["slice_labels"][3])] + [float(v) for v in entry["subtype_labels"][3]]
    assert ds.in_channels == 5


def test_balanced_sampler_draws_positives(synthetic_datalist):
    ds = SliceDataset(synthetic_datalist, spatial_size=(16, 16))
    labels = ds.labels()
    assert 0 < labels.mean() < 0.5
    sampler = balanced_sampler(ds, pos_fraction=0.5, num_samples=4000, seed=1)
    drawn = labels[list(sampler)]
    assert abs(drawn.mean() - 0.5) < 0.05
    with pytest.raises(HemwslInputError, match="pos_fraction"):
        balanced_sampler(ds, pos_fraction=1.5)


def test_bad_arguments(synthetic_datalist):
    with pytest.raises(HemwslInputError, match="num_slices"):
        SliceDataset(synthetic_datalist[:1], num_slices=2)
    with pytest.raises(HemwslInputError, match="empty"):
        SliceDataset([])
    with pytest.raises(HemwslInputError, match="spatial_size"):
        LoadCTVolumed(spatial_size=(4,))


def test_slice_label_count_mismatch_names_file(synthetic_datalist):
    entry = dict(synthetic_datalist[0])
    entry["slice_labels"] = entry["slice_labels"][:-1]
    with pytest.raises(HemwslInputError, match=entry["image"].split("/")[-1]):
        SliceDataset([entry], spatial_size=(16, 16))


def test_skull_strip_blanks_outside_brain(synthetic_datalist):
    ds = SliceDataset(synthetic_datalist[:1], windows=[(500, 3000)], spatial_size=None, skull_strip=True)
    s = ds[6]
    brain = s["brain"][0].numpy() > 0
    assert brain.any()
    centre = s["image"][1].numpy()
    # outside the brain the image holds the volume minimum (air), i.e. the window's lowest value
    assert np.allclose(centre[~brain], centre.min())
    # bone (>= 500 HU, i.e. >= 0.5 in the [-1000, 2000] window) is gone
    assert (centre < 0.5).all()


@pytest.mark.realdata
def test_real_data_cached_loader(real_data_dir):
    from hemwsl.data.datalist import build_datalist

    datalist = build_datalist("ct-ich", real_data_dir)[:2]
    ds = SliceDataset(datalist, spatial_size=(128, 128), windows=["brain", "subdural", "blood"])
    assert len(ds) == sum(e["num_slices"] for e in datalist)
    batch = torch.stack([ds[i]["image"] for i in range(8)])
    assert batch.shape == (8, 9, 128, 128)
    assert 0.0 <= float(batch.min()) and float(batch.max()) <= 1.0


def test_disk_cache_is_reused(synthetic_datalist, tmp_path, monkeypatch):
    import hemwsl.data.dataset as mod
    from hemwsl.data.dataset import warm_disk_cache

    assert warm_disk_cache(synthetic_datalist[:2], tmp_path, spatial_size=(32, 32), workers=2) == 2
    files = sorted(tmp_path.glob("*.pt"))
    assert len(files) == 2
    ref = SliceDataset(synthetic_datalist[:2], spatial_size=(32, 32))

    def fail(*a, **k):
        raise AssertionError("volume re-read although it is cached")

    monkeypatch.setattr(mod, "load_pair", fail)
    ds = SliceDataset(synthetic_datalist[:2], spatial_size=(32, 32), cache_dir=tmp_path)
    for i in (0, 5, len(ds) - 1):
        torch.testing.assert_close(ds[i]["image"], ref[i]["image"])
        torch.testing.assert_close(ds[i]["mask"], ref[i]["mask"])
    # another setting gets its own file
    monkeypatch.undo()
    SliceDataset(synthetic_datalist[:1], spatial_size=(16, 16), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.pt"))) == 3


def test_disk_cache_from_a_program_read_from_stdin(synthetic_datalist, tmp_path, monkeypatch, caplog):
    """`python - <<EOF` has no main file for spawned workers to import: the cache is filled in-process."""
    import sys

    from hemwsl.data.dataset import warm_disk_cache

    monkeypatch.setattr(sys.modules["__main__"], "__file__", "<stdin>", raising=False)
    with caplog.at_level("WARNING", logger="hemwsl.data.dataset"):
        assert warm_disk_cache(synthetic_datalist[:2], tmp_path, spatial_size=(32, 32), workers=2) == 2
    assert len(list(tmp_path.glob("*.pt"))) == 2
    assert "<stdin>" in caplog.text and "in this process" in caplog.text


def test_bad_volume_is_one_named_error_and_the_interpreter_exits_cleanly(tmp_path, synthetic_datalist):
    """MONAI's cache threads used to be terminated inside native code when one volume failed: the caught error
    was followed by SIGABRT at exit (134). Now the error names the file and the process exits 0."""
    import subprocess
    import sys

    import nibabel as nib

    img = nib.load(synthetic_datalist[0]["image"])
    arr = np.asarray(img.dataobj, dtype=np.float32)
    arr[0, 0, 0] = np.nan
    bad = tmp_path / "bad.nii.gz"
    nib.save(nib.Nifti1Image(arr, img.affine), str(bad))
    entries = [dict(e) for e in synthetic_datalist[:4]]
    entries[1]["image"] = str(bad)
    (tmp_path / "dl.json").write_text(json.dumps(entries))
    code = ("import json, sys\n"
            "from hemwsl.data.dataset import SliceDataset\n"
            "from hemwsl.errors import HemwslInputError\n"
            f"entries = json.load(open({str(tmp_path / 'dl.json')!r}))\n"
            "try:\n"
            "    SliceDataset(entries, spatial_size=[32, 32], num_workers=4)\n"
            "except HemwslInputError as err:\n"
            "    print('caught:', err)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == f"caught: {bad}: 1 NaN/inf voxel(s) in the image"
