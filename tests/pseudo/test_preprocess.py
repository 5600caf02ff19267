"""Contrast enhancement and classifier inputs (:mod:`hemwsl.pseudo.preprocess`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hemwsl.constants import IMAGE, LABEL
from hemwsl.errors import HemwslInputError
from hemwsl.pseudo import ClassifierInput, enhance_slices


def test_classifier_input_matches_slice_dataset(tmp_path):
    """The stacks scored by differential prediction are the classifier's training inputs."""
    from hemwsl.data.dataset import SliceDataset
    from hemwsl.data.io import save_nifti
    from hemwsl.transforms.array import stack_indices

    rng = np.random.default_rng(0)
    hu = rng.uniform(-20, 100, (40, 36, 5)).astype(np.float32)
    path = tmp_path / "ct.nii.gz"
    save_nifti(hu, np.eye(4), path)
    windows = ["brain", "blood"]
    ds = SliceDataset([{IMAGE: str(path), LABEL: None}], num_slices=3, windows=windows, spatial_size=(16, 16))
    prep = ClassifierInput(windows, (16, 16))
    stacks = torch.stack([torch.from_numpy(np.moveaxis(hu[..., stack_indices(z, 3, 5)], -1, 0)) for z in range(5)])
    got = prep(stacks)
    assert got.shape == (5, 6, 16, 16)
    for z in range(5):
        torch.testing.assert_close(got[z], ds[z][IMAGE], atol=1e-6, rtol=0)


def test_enhance_window_and_brain():
    hu = np.array([[[0.0, 40.0], [80.0, 200.0]]])
    np.testing.assert_allclose(enhance_slices(hu, method="none"), [[[0.0, 0.5], [1.0, 1.0]]])
    brain = np.array([[[True, True], [True, False]]])
    out = enhance_slices(hu, brain, method="none")
    np.testing.assert_allclose(out, [[[0.0, 0.5], [1.0, 0.0]]])
    # global equalisation over the brain: values 0, 0.5, 1 (one each) -> 0, 1/2, 1
    out = enhance_slices(hu, brain, method="global", num_bins=4)
    np.testing.assert_allclose(out, [[[0.0, 0.5], [1.0, 0.0]]])
    with pytest.raises(HemwslInputError, match="enhancement"):
        enhance_slices(hu, method="gamma")
    with pytest.raises(HemwslInputError, match="brain has shape"):
        enhance_slices(hu, brain[:, :1])
