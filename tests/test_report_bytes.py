"""The report's chapters side by side write the files of a serial computation byte for byte: the
same stages one after the other in one process (``asd run``, training from scratch on the
chapters' thread count). A module of its own: it shares the session's smoke report, so it runs
in that report's pytest-xdist worker (``conftest.work_unit``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from asd_utils import cli
from asd_utils.report import pipeline


def official_files(root: Path) -> dict[str, bytes]:
    """Every score, decision, metrics and submission file of a run, by relative path."""
    names = ("anomaly_score_*.csv", "decision_result_*.csv", "*.meta.yaml", "scores.csv")
    found = {p for name in names for p in root.rglob(name) if "executed" not in p.parts}
    found |= {p for p in (root / "metrics.csv", root / "table2.csv") if p.exists()}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(found)}


@pytest.mark.slow
def test_side_by_side_writes_the_serial_runs_files_byte_for_byte(smoke_run, on_chapter_threads):
    """The session's smoke report ran its chapter groups side by side (two workers, when there
    are two CPUs); ``asd run`` computes every stage one after the other, from scratch, on the
    thread count of the report's chapters."""
    tmp, _ = smoke_run
    assert pipeline.report_workers() > 1 or pipeline.cpus() < 2
    root = tmp / "serial"
    argv = ["run", "--profile", str(tmp / "smoke.yaml"), "--output-root", str(root), "-q"]
    with on_chapter_threads():
        assert cli.main(argv) == 0
    files = official_files(root)
    assert len(files) > 60 and files.keys() == official_files(tmp / "out").keys()
    differ = [name for name in files if (tmp / "out" / name).read_bytes() != files[name]]
    assert not differ, f"side by side changed {differ}"
