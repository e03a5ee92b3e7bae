"""The GPU benchmark runs on a CPU at tiny size (its GPU numbers need a GPU; its code must not
wait for one to be found broken), and every benchmark records the machine's load."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow  # a subprocess training two systems
def test_bench_gpu_runs_at_tiny_size_on_a_cpu(tmp_path):
    command = [
        sys.executable, str(BENCHMARKS / "bench_gpu.py"), "--size", "tiny", "--steps", "2",
        "--batch", "2", "--accumulation", "2", "--clips", "4", "--clip-seconds", "2",
        "--systems", "System 1",
        "System 5", "--output", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "load average (1 min)" in done.stdout
    table = pd.read_csv(tmp_path / "bench_gpu.csv")
    assert list(table["system"]) == ["System 1", "System 5"]
    assert (table["steps"] == 2).all() and (table["steps_per_s"] > 0).all()
    assert table["data_wait_share"].between(0, 1).all()
    assert (table["resumed_from"] == 1).all()  # killed after step 1, resumed from its checkpoint
    assert (table["resume_max_abs_diff"] == 0).all()  # on a CPU: the very same weights


def test_every_benchmark_records_the_load():
    for script in BENCHMARKS.glob("bench_*.py"):
        assert "load_recorded" in script.read_text(), script.name
