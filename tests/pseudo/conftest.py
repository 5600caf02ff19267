"""Fixtures of the pseudo-label tests: hand-built CT volumes and CAMs written to ``tmp_path``."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every pseudo-label test runs with one intra-op torch thread (``one_torch_thread``)."""
    yield


AFFINE = np.diag([0.8, 0.8, 5.0, 1.0])


def box_volume(depth: int = 4, size: int = 24):
    """A hand-built CT (X, Y, Z) = (size, size, depth) in HU and its CAM.

    Air -20 HU (the minimum), a head of tissue at 30 HU (rows/cols 2..size-3), and in rows 6..13,
    cols 6..13 a lesion box: left half (cols 6..9) 20 HU, right half (cols 10..13) 70 HU (blood).
    The CAM is 1 inside the box and 0.2 elsewhere in the head, on every slice.
    """
    hu = np.full((size, size, depth), -20.0, dtype=np.float32)
    hu[2:size - 2, 2:size - 2] = 30.0
    hu[6:14, 6:10] = 20.0
    hu[6:14, 10:14] = 70.0
    cam = np.zeros(hu.shape, dtype=np.float32)
    cam[2:size - 2, 2:size - 2] = 0.2
    cam[6:14, 6:14] = 1.0
    box = np.zeros(hu.shape[:2], dtype=bool)
    box[6:14, 6:14] = True
    blood = np.zeros(hu.shape[:2], dtype=bool)
    blood[6:14, 10:14] = True
    return hu, cam, box, blood


class MeanWindowNet(torch.nn.Module):
    """Hand-built "classifier": logit = 100 x mean of the (windowed) input; counts its forward calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.batch_sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.batch_sizes.append(int(x.shape[0]))
        return 100.0 * x.float().mean(dim=(1, 2, 3))[:, None]


@pytest.fixture
def box_files(tmp_path):
    """The :func:`box_volume` CT written as ``ct/p1.nii.gz`` and its CAM in the ``run_cam`` layout."""
    from hemwsl.cam.volume import heatmap_path
    from hemwsl.data.io import save_nifti

    hu, cam, box, blood = box_volume()
    ct = tmp_path / "ct" / "p1.nii.gz"
    save_nifti(hu.astype(np.int16), AFFINE, ct)
    cam_dir = tmp_path / "cams"
    save_nifti(cam, AFFINE, heatmap_path(cam_dir, "p1", ("gradcam", "features")))
    return {"ct": ct, "cam_dir": cam_dir, "box": box, "blood": blood, "hu": hu, "cam": cam}
