"""Shared fixtures: the clustered synthetic data (tests/synthetic.py) and the real data sets folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from modalrec.data.dataset import Dataset
from synthetic import make_clustered

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def clustered() -> Dataset:
    return make_clustered()


@pytest.fixture
def featured() -> Dataset:
    """``clustered`` with two item modalities (text clean, image noisy and partly missing)."""
    return make_clustered(with_features=True)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data sets not found at {SHARED_DATA}")
    return SHARED_DATA
