"""benchmarks/rehearse.py: every stage as its own ``asd`` process, timed, with its peak memory."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from asd_utils import config, registry

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import rehearse  # noqa: E402


def test_a_child_is_timed_and_its_peak_memory_measured(capsys):
    code = "import time; x = bytearray(300_000_000); x[::4096] = b'1' * len(x[::4096]); print('hi')"
    measured = rehearse.run_child([sys.executable, "-c", code], env=None)
    assert measured["returncode"] == 0 and measured["wall_s"] > 0
    assert 0.28 < measured["peak_rss_gib"] < 2  # 300 MB touched, counted once
    assert "hi" in capsys.readouterr().out  # streamed to the console
    failed = rehearse.run_child([sys.executable, "-c", "raise SystemExit('broken here')"], None)
    assert failed["returncode"] == 1 and "broken here" in failed["tail"]


def test_a_quarter_of_the_training_clips():
    profile, note = rehearse.train_fraction_profile(config.load_profile("rehearsal"), 0.25)
    assert profile.synth.n_train_source == 248 and profile.synth.n_test == 50
    assert profile.synth.n_train_target == 10
    assert profile.name == "rehearsal-train25"
    assert profile.data.synthetic_root == "data/synthetic/rehearsal-train25"
    assert "248 source training clips per machine type instead of 990" in note


def test_the_table_has_a_row_per_stage():
    row = rehearse._row("prepare", {"wall_s": 2.0, "cpu_s": 1.5, "peak_rss_gib": 0.3,
                                    "returncode": 0}, 100, "clips", 0.5)  # fmt: skip
    assert row["clips_per_s"] == 50.0
    record = {
        "profile": "p", "machine": rehearse.describe_machine(), "data_root": "d",
        "output_root": "o", "clips": 100, "status": "finished", "total_wall_s": 2.0,
        "notes": ["a note"], "stages": [row],
    }  # fmt: skip
    text = rehearse.markdown(record)
    assert "| prepare | 2.0 | 1.5 | 0.3 | 100 | 50.0 | 0.5 | clips |" in text
    assert "a note" in text and record["machine"]["cores"] >= 1


def test_the_plan_trains_and_embeds_every_fine_tuned_system_the_data_allows():
    clips = pd.DataFrame({"split": ["train", "test"], "label": [None, "normal"],
                          "channels": [2, 2], "machine_type": ["fan", "fan"]})  # fmt: skip
    profile = config.load_profile("smoke")
    names = [name for name, *_ in rehearse.stage_plan(profile, clips)]
    trained = [name.removeprefix("train ") for name in names if name.startswith("train ")]
    assert trained == registry.of_kind("fine-tuned") and len(trained) >= 5
    assert [n for n in names if n.startswith("embed ")] == [f"embed {s}" for s in trained]
    only = [name for name, *_ in rehearse.stage_plan(profile, clips, ["System 2"])]
    assert [n for n in only if n.startswith(("train ", "embed "))] == [
        "train System 2",
        "embed System 2",
    ]
    assert only[-5:] == names[-5:] == ["score", "training-free", "ensemble", "evaluate", "package"]


def test_it_stops_at_the_first_failing_stage_with_its_message(tmp_path):
    command = [
        sys.executable, str(BENCHMARKS / "rehearse.py"), "--profile", "smoke", "--no-settle",
        "--data-root", str(tmp_path / "nowhere"), "--output-root", str(tmp_path / "out"),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    record = json.loads((tmp_path / "out" / "rehearsal.json").read_text())
    assert record["status"].startswith("failed at prepare")
    assert [row["stage"] for row in record["stages"]] == ["prepare"]  # a given root: no synthesis
    assert "nowhere" in record["failure"] and "rehearsal stopped: prepare failed" in done.stdout


@pytest.mark.slow  # every stage of the smoke profile, each its own process (~1-3 min)
def test_rehearsal_of_the_smoke_profile_times_every_stage(tmp_path):
    """One fine-tuned system (``--systems``; the plan of every one: the test below), so that
    the test times the harness, not every system again (the smoke run trains them all)."""
    command = [
        sys.executable, str(BENCHMARKS / "rehearse.py"), "--profile", "smoke", "--no-settle",
        "--output-root", str(tmp_path / "out"), "--systems", "System 1",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = json.loads((tmp_path / "out" / "rehearsal.json").read_text())
    assert record["status"] == "finished"
    expected = ["synthesise", "prepare", "baseline", "train System 1", "embed System 1"]
    expected += ["score", "training-free", "ensemble", "evaluate", "package"]
    stages = record["stages"]
    assert [row["stage"] for row in stages] == expected
    assert all(row["wall_s"] > 0 and row["peak_rss_gib"] > 0 for row in stages)
    assert all(row["clips"] > 0 and row["clips_per_s"] > 0 for row in stages)
    table = (tmp_path / "out" / "rehearsal.md").read_text()
    assert all(f"| {name} |" in table for name in expected)
    assert "amx_bf16" in table or "bf16 flags: none" in table
    assert (tmp_path / "out" / "metrics.csv").is_file()  # the stages' own results are there


def test_the_fraction_variant_is_its_set_arguments():
    # the stage processes get --set arguments; they build the profile the model_copy made
    base = config.load_profile("rehearsal")
    overrides, _ = rehearse.train_fraction(base, 0.25)
    assert overrides == [
        "name=rehearsal-train25",
        "synth.n_train_source=248",
        "data.synthetic_root=data/synthetic/rehearsal-train25",
    ]
    by_set = config.load_profile("rehearsal", overrides)
    data = base.data.model_copy(update={"synthetic_root": "data/synthetic/rehearsal-train25"})
    synth = base.synth.model_copy(update={"n_train_source": 248})
    by_copy = base.model_copy(update={"name": "rehearsal-train25", "synth": synth, "data": data})
    assert by_set == by_copy and by_set.plain() == by_copy.plain()
