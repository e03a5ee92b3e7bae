"""The report's chapters side by side write the files of a run one chapter at a time, byte for
byte (a module of its own: it shares the session's smoke report, so it runs in that report's
pytest-xdist worker, ``conftest.work_unit``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from asd_utils.report import pipeline


def official_files(root: Path) -> dict[str, bytes]:
    """Every score, decision, metrics and submission file of a run, by relative path."""
    names = ("anomaly_score_*.csv", "decision_result_*.csv", "*.meta.yaml", "scores.csv")
    found = {p for name in names for p in root.rglob(name) if "executed" not in p.parts}
    found |= {p for p in (root / "metrics.csv", root / "table2.csv") if p.exists()}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(found)}


@pytest.mark.slow
def test_side_by_side_writes_the_serial_runs_files_byte_for_byte(smoke_run):
    """The session's smoke report ran its groups side by side (two workers); chapters 00-60 run
    again one at a time on the same data and profile write the same official files."""
    tmp, _ = smoke_run
    # the chapters that run side by side and 50, which 60 needs (70 runs alone either way)
    side_by_side = sorted({c for group in pipeline.INDEPENDENT for c in group} | {"50"})
    other = 1 if pipeline.report_workers() > 1 else 2  # the mode the session's run did not use
    root = tmp / f"workers{other}"
    pipeline.run(str(tmp / "smoke.yaml"), output_root=str(root), book=False, workers=other,
                 only=side_by_side)  # fmt: skip
    files = official_files(root)
    assert len(files) > 40
    differ = [name for name in files if (tmp / "out" / name).read_bytes() != files[name]]
    assert not differ, f"side by side changed {differ}"
