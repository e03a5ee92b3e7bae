"""Shared test fixtures, and how ``make test`` splits the suite over two processes."""

import contextlib
import functools
import logging
import os
from pathlib import Path

import pytest

# `make test` runs the suite in pytest-xdist workers, one per core: each worker (and the
# kernels and commands it starts) takes its share of the CPUs as its threads, so that no worker
# spins on the core another needs. (Sleeping idle threads, OMP_WAIT_POLICY=PASSIVE, were used
# before: they made the tiny models' steps 1.7 times slower.) Set before torch is imported.
if os.environ.get("PYTEST_XDIST_WORKER"):
    _workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    _threads = str(max(1, len(os.sched_getaffinity(0)) // _workers))
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_name, _threads)

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


@pytest.fixture(scope="session")
def on_chapter_threads():
    """A context manager: torch and the OpenMP/BLAS pools on the thread count of the report's
    side-by-side chapters (:func:`asd_utils.report.pipeline.chapter_threads`), so that what runs
    in this process writes their bytes."""
    import torch
    from threadpoolctl import threadpool_limits

    from asd_utils.report import pipeline

    @contextlib.contextmanager
    def on_them():
        before, threads = torch.get_num_threads(), pipeline.chapter_threads()
        with threadpool_limits(threads):
            torch.set_num_threads(threads)
            try:
                yield
            finally:
                torch.set_num_threads(before)

    return on_them


# --- `make test` in pytest-xdist workers (-n 2 --dist loadgroup) -------------------------------


@functools.cache
def work_unit(module: Path) -> str:
    """The xdist work unit of a test module: ``smoke_run`` for every module that uses the
    session's smoke run (its text names the fixture), so that the pipeline and book run once;
    else the module itself, so that its module-scoped fixtures are built once."""
    return "smoke_run" if "smoke_run" in module.read_text(encoding="utf-8") else str(module)


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """With ``--dist loadgroup``: whole work units (:func:`work_unit`) to the workers, in the
    order the workers collected them (:func:`pytest_collection_modifyitems`). xdist's own
    loadgroup marks do not group under pytest 9 (its node ids can no longer be renamed)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByWorkUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(config.rootpath / nodeid.split("::", 1)[0])

    config.option.loadscopereorder = False
    return ByWorkUnit(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """In an xdist worker the longest work comes first, so that no long unit starts last: the
    smoke run's unit, then the modules with slow tests, then the rest, each in collection
    order. A run in one process keeps the collection order."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: (work_unit(item.path) != "smoke_run", item.path not in slow))


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
