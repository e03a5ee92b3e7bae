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
        "System 5", "--output", str(tmp_path), "--settle", "0",  # its code, not idle cores
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
    assert profile.lora_beats.size == "base"
    assert profile.lora_beats.train.steps == 3
    assert profile.osscl == quick.osscl  # only the systems asked for change
    args = argparse.Namespace(size="tiny", steps=2, batch=None, accumulation=None)
    profile = bench_gpu.bench_profile(argparse.Namespace(**vars(args), systems=["System 5"]), "cpu")
    assert profile.fusion.blocks == quick.fusion.blocks != paper.fusion.blocks
    assert profile.fusion.train.steps == 2 and profile.osscl == paper.osscl

    new = registry.System("System 9", "osscl", "near", "fine-tuned", "30_osscl_training", False,
                          "a new recipe", recipe="NewRecipe")  # fmt: skip
    monkeypatch.setitem(registry.REGISTRY, "System 9", new)
    assert registry.one_per_recipe() == ["System 1", "System 2", "System 5", "System 7", "System 9"]


def test_bench_seeds_compares_the_class_schemes_of_the_registrys_systems(monkeypatch):
    """``bench_seeds.py --classes``: the fine-tuned systems from the registry, each section's
    class scheme set in memory; the chapter's table: mean ± sd over seeds, with / without
    attributes, the lift of pseudo-attributes and whether it beats the autoencoder."""
    import importlib

    from asd_utils import config
    from asd_utils.report import analysis

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    bench_seeds = importlib.import_module("bench_seeds")
    quick = config.load_profile("quick")
    systems = (["System 1", "System 2", "System 3", "System 5"], ["System 7"])
    assert bench_seeds.class_systems(quick) == systems
    auto = bench_seeds.with_classes(quick, "System 1", "auto")
    assert (auto.osscl.classes.scheme, auto.osscl.classes.by_domain) == ("auto", True)
    assert quick.osscl.classes is None  # the base profile unchanged
    assert config.validate_profile(auto.plain()).osscl.classes.scheme == "auto"
    names = bench_seeds.with_classes(quick, "System 7", "names").lora_beats.classes
    assert (names.scheme, names.seed) == ("names", 42)  # the section's other keys kept
    assert bench_seeds.with_classes(quick, "System 1", "profile") is quick

    kinds = (("all", None, 0), ("fan", True, 1), ("ToyCar", False, -1))  # machine types
    runs = (("S", "names", 50), ("S", "auto", 56), ("AE", "none", 55))
    rows = [
        {"system": system, "classes": classes, "seed": seed, "machine_type": machine,
         "attributes": attributes, "hmean": score + seed + offset}
        for system, classes, score in runs
        for seed in (0, 2)
        for machine, attributes, offset in kinds
    ]  # fmt: skip
    comparison = analysis.class_comparison(pd.DataFrame(rows))
    assert comparison.loc[("S", "auto"), "all mean"] == 57 and comparison["seeds"].eq(2).all()
    assert comparison.loc[("S", "auto"), "all sd"] == pytest.approx(2**0.5)
    assert comparison.loc[("S", "names"), ["with mean", "without mean"]].tolist() == [52, 50]
    lift = analysis.pseudo_lift(comparison, reference="AE")
    assert lift.loc["S", ["names", "pseudo", "lift", "AE"]].tolist() == [51, 57, 6, 56]
    assert bool(lift.loc["S", "above"])
