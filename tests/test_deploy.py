"""The MONAI Deploy application (deploy/): its DICOM volume conversions always; the whole app where the App SDK
is installed (``pip install -r deploy/requirements.txt``; about 560 MB, so not in the default environment)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hemwsl.data.dicom import frames_from_volume, read_dicom_series, volume_from_frames, write_dicom_series
from hemwsl.data.synthetic import make_phantom

ROOT = Path(__file__).resolve().parents[1]


def _has_sdk() -> bool:
    try:
        return importlib.util.find_spec("monai.deploy") is not None and importlib.util.find_spec("holoscan") is not None
    except (ImportError, ValueError):
        return False


def test_volume_from_sdk_frames_matches_the_reader(tmp_path):
    """The operator's conversion of the SDK's (slices, rows, columns) frames gives the volume and affine of
    hemwsl's own DICOM reader, and the mask goes back to frames in the datasets' order."""
    p = make_phantom(2, shape=(48, 40, 6), spacing=(0.8, 0.7, 5.0))
    write_dicom_series(p["image"], p["affine"], tmp_path / "s")
    ref = read_dicom_series(tmp_path / "s")
    frames = np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in ref.datasets])
    vol = volume_from_frames(frames, ref.datasets)
    np.testing.assert_array_equal(vol.array, ref.volume.array)
    np.testing.assert_allclose(vol.affine, ref.volume.affine)
    np.testing.assert_array_equal(frames_from_volume(vol.array), frames)
    # the SDK may hand the slices in the other order: the affine follows
    rev = volume_from_frames(frames[::-1], ref.datasets[::-1])
    world = lambda v, ijk: (v.affine @ np.array([*ijk, 1.0]))[:3]  # noqa: E731
    np.testing.assert_allclose(world(rev, (3, 4, 0)), world(vol, (3, 4, 5)), atol=1e-4)
    assert rev.array[3, 4, 0] == vol.array[3, 4, 5]


@pytest.mark.skipif(not _has_sdk(), reason="monai-deploy-app-sdk not installed (pip install -r deploy/requirements.txt)")
def test_deploy_app_runs_on_a_dicom_series(tmp_path):
    from hemwsl.networks import build_network
    from hemwsl.predict import pack_model

    cv = tmp_path / "cv"
    (cv / "fold0" / "models").mkdir(parents=True)
    (cv / "cv_settings.json").write_text(json.dumps({"backbone": "resnet10", "spatial_size": [64, 64],
                                                     "skull_strip": True, "windows": ["brain", "blood"]}))
    torch.manual_seed(0)
    torch.save(build_network("resnet10", in_channels=6).state_dict(), cv / "fold0" / "models" / "model.pt")
    model = pack_model(cv, tmp_path / "model")
    p = make_phantom(5, shape=(64, 64, 10), spacing=(0.9, 0.9, 5.0), subtypes=["intraparenchymal"])
    write_dicom_series(p["image"], p["affine"], tmp_path / "dicom")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = f"ulimit -s 32768; exec {sys.executable} {ROOT / 'deploy' / 'app.py'} -i {tmp_path / 'dicom'} " \
          f"-o {tmp_path / 'out'} -m {model}"
    run = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    segs = list((tmp_path / "out" / "seg").glob("*.dcm"))
    reports = list((tmp_path / "out" / "hemwsl").glob("*/report.json"))
    assert len(segs) == 1 and len(reports) == 1
    import highdicom as hd

    seg = hd.seg.segread(str(segs[0]))
    assert seg.SegmentSequence[0].SegmentLabel == "Hemorrhage"
    assert json.loads(reports[0].read_text())["shape"] == [64, 64, 10]
