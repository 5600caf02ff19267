"""Shared fixtures: small synthetic datasets written once per session, and the real-data location."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO.parent / "shared" / "data" / "ct-ich"


@pytest.fixture
def one_torch_thread():
    """One intra-op torch thread during the test, restored afterwards: on a small shared CPU (CI has 2 cores)
    two competing threads run several times slower than one."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def real_data_available(root: Path = REAL_DATA) -> bool:
    """The real CT-ICH copy is there with its labels CSV and at least one scan (an empty or half-copied folder
    makes the real-data tests skip, not error)."""
    return (root / "hemorrhage_diagnosis_raw_ct.csv").is_file() and any((root / "ct_scans").glob("*.nii*"))


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    if not real_data_available():
        pytest.skip(f"real CT-ICH data not found at {REAL_DATA}")
    return REAL_DATA


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """8 synthetic patients (64 x 64 x 12) in the CT-ICH layout."""
    from hemwsl.data.synthetic import write_synthetic_ctich

    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic_ctich(root, n_patients=8, seed=3, shape=(64, 64, 12), negative_fraction=0.25)
    return root


@pytest.fixture(scope="session")
def synthetic_datalist(synthetic_root):
    from hemwsl.data.datalist import build_datalist

    return build_datalist("ct-ich", synthetic_root)
