"""Shared test fixtures."""

import logging
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# The real clips live in the workspace's shared/ folder beside the checkout (or $DCASE_FIXTURES).
_CANDIDATES = [
    os.environ.get("DCASE_FIXTURES", ""),
    REPO_ROOT.parent / "shared" / "fixtures" / "dcase2023_dev_samples",
    Path("/work/shared/fixtures/dcase2023_dev_samples"),
]
FIXTURES_2023 = next((Path(c) for c in _CANDIDATES if c and Path(c).is_dir()), Path(_CANDIDATES[1]))


@pytest.fixture(scope="session")
def dcase2023_samples() -> Path:
    """The real DCASE 2023 dev clips (mono, 10/12 s) shipped beside the project."""
    if not FIXTURES_2023.is_dir():
        pytest.skip(f"real DCASE fixtures not found at {FIXTURES_2023}")
    return FIXTURES_2023


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The whole pipeline and the book on the smoke profile, once per test session:
    ``(folder, run record)``, the book under ``folder/build/_build/html``."""
    import yaml

    from asd_utils import config
    from asd_utils.report import pipeline

    tmp = tmp_path_factory.mktemp("pipeline")
    profile = config.load_profile("smoke").plain()  # values for a profile file
    profile["data"]["synthetic_root"] = str(tmp / "data")
    profile_path = tmp / "smoke.yaml"
    profile_path.write_text(yaml.safe_dump(profile))
    record = pipeline.run(
        str(profile_path), output_root=str(tmp / "out"), build_dir=str(tmp / "build")
    )
    return tmp, record


@pytest.fixture(autouse=True)
def _package_logging():
    """Each test starts with the package's logger as an unconfigured process has it (a command
    a test runs configures it: asd_utils.errors.configure_logging) and propagating, so that
    ``caplog`` sees what the package says."""
    package = logging.getLogger("asd_utils")
    saved = package.handlers[:], package.level, package.propagate
    package.handlers[:], package.propagate = [], True
    yield
    package.handlers[:], package.level, package.propagate = saved[0], saved[1], True
