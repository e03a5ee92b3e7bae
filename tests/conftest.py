"""Shared test fixtures."""

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES_2023 = REPO_ROOT.parent / "shared" / "fixtures" / "dcase2023_dev_samples"


@pytest.fixture(scope="session")
def dcase2023_samples() -> Path:
    """The real DCASE 2023 dev clips (mono, 10/12 s) shipped beside the project."""
    if not FIXTURES_2023.is_dir():
        pytest.skip(f"real DCASE fixtures not found at {FIXTURES_2023}")
    return FIXTURES_2023
