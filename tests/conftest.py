"""Shared fixtures: small synthetic datasets written once per session, and the real-data location."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO.parent / "shared" / "data" / "ct-ich"


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    if not (REAL_DATA / "hemorrhage_diagnosis_raw_ct.csv").exists():
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
