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


def test_the_benchmarks_take_their_systems_from_the_registry(monkeypatch):
    # issue 33: no section or system list typed into a benchmark; a new recipe joins unasked
    import argparse
    import importlib

    from asd_utils import config, registry

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    bench_gpu = importlib.import_module("bench_gpu")
    bench_precision = importlib.import_module("bench_precision")
    assert bench_gpu.DEFAULT_SYSTEMS == ["System 1", "System 2"]  # the paper's recipes
    assert bench_precision.DEFAULT_SYSTEMS == ["System 1", "System 2", "System 5", "System 7"]
    with pytest.raises(SystemExit):  # an ensemble is not trained
        bench_gpu.main(["--systems", "System 4"])

    quick, paper = config.load_profile("quick"), config.load_profile("paper")
    profile = bench_precision.bench_profile("bf16", 3, "base", ["System 7"])
    assert profile["lora_beats"]["size"] == "base"
    assert profile["lora_beats"]["train"]["steps"] == 3
    assert profile["osscl"] == quick["osscl"]  # only the systems asked for change
    args = argparse.Namespace(size="tiny", steps=2, batch=None, accumulation=None)
    profile = bench_gpu.bench_profile(argparse.Namespace(**vars(args), systems=["System 5"]), "cpu")
    assert profile["fusion"]["blocks"] == quick["fusion"]["blocks"] != paper["fusion"]["blocks"]
    assert profile["fusion"]["train"]["steps"] == 2 and profile["osscl"] == paper["osscl"]

    new = registry.System("System 9", "osscl", "near", "fine-tuned", "30_osscl_training", False,
                          "a new recipe", recipe="NewRecipe")  # fmt: skip
    monkeypatch.setitem(registry.REGISTRY, "System 9", new)
    assert registry.one_per_recipe() == ["System 1", "System 2", "System 5", "System 7", "System 9"]
