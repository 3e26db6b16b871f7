"""Shared pytest fixtures."""

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def sample_data() -> Path:
    """Folder of the real sample files (env ``MEDGUIDE_SAMPLE_DATA``, default ``<repo>/../shared/data``)."""
    root = Path(os.environ.get("MEDGUIDE_SAMPLE_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    if not root.is_dir():
        pytest.skip(f"real sample data not found at {root}; set MEDGUIDE_SAMPLE_DATA to the shared data folder")
    return root
