"""``asd train``: opens the run like every stage (the lock, the record, the clip manifest: the
data indexed once), trains through :func:`asd_utils.stages.train` into the run folder the
notebooks find, reuses a finished run, refuses a system the data cannot feed; under
``accelerate launch`` the main process prepares and the others read the manifest."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import yaml

from asd_utils import cli, config, data, runs, stages, systems, training
from asd_utils.config import REPO_ROOT
from asd_utils.data import synth


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    settings = synth.SynthConfig(
        machine_types=("fan",), n_train_source=6, n_train_target=2, n_test=2,
        clip_seconds={"default": 1.0},
    )  # fmt: skip
    synth.generate_dataset(tmp / "data", settings, progress=False)
    values = config.load_profile("smoke").plain()
    values["osscl"]["train"].update(steps=2, checkpoint_every=1)
    path = tmp / "profile.yaml"  # the command's input
    path.write_text(yaml.safe_dump(values))
    return tmp, path, config.validate_profile(values)


def _counting(monkeypatch) -> list:
    """Every call of the indexing function, counted."""
    calls = []
    index = data.index_dataset
    monkeypatch.setattr(data, "index_dataset", lambda *a, **k: calls.append(a) or index(*a, **k))
    return calls


def test_trains_into_the_notebooks_run_folder_indexing_once_and_finds_it_finished(
    tree, tmp_path, monkeypatch, capsys
):
    tmp, path, profile = tree
    out = tmp_path / "out"
    argv = ["train", "--profile", str(path), "--system", "System 1", "--data-root",
            str(tmp / "data"), "--output-root", str(out), "-v"]  # fmt: skip
    calls = _counting(monkeypatch)
    assert cli.main(argv) == 0
    assert len(calls) == 1  # the door; the manifest then serves build and the run folder
    clips = stages.read_manifest(out, tmp / "data")
    folder = systems.run_dir(out, profile, "System 1", tmp / "data", clips)
    assert json.loads((folder / training.FINISHED).read_text())["steps"] == 2
    assert f"in {folder}" in capsys.readouterr().err  # logged: trained, with its run folder
    record = json.loads((out / runs.RECORD_NAME).read_text())
    assert record["status"] == "finished" and record["chapter"] == "train System 1"
    assert (out / stages.MANIFEST).is_file() and not (out / runs.LOCK_NAME).exists()
    before = sorted(p.relative_to(out) for p in (out / "training").rglob("*"))
    assert cli.main(argv) == 0
    assert len(calls) == 1  # the manifest: nothing indexed again
    assert "found the finished run (2 steps, trained in" in capsys.readouterr().err
    assert sorted(p.relative_to(out) for p in (out / "training").rglob("*")) == before


def test_refuses_a_system_the_data_cannot_feed_before_training(tmp_path, tree, capsys):
    _, path, _ = tree
    rng = np.random.default_rng(0)
    for split, domain, label in [
        ("train", "source", "normal"),
        ("train", "target", "normal"),
        ("test", "source", "normal"),
        ("test", "source", "anomaly"),
    ]:
        name = f"section_00_{domain}_{split}_{label}_0000_noAttribute.wav"
        audio = rng.uniform(-0.1, 0.1, (1, 8000)).astype(np.float32)
        data.write_wav(tmp_path / "mono" / "fan" / split / name, audio)
    argv = ["train", "--profile", str(path), "--system", "System 3", "--data-root",
            str(tmp_path / "mono"), "--output-root", str(tmp_path / "out"), "-q"]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "System 3 is skipped: its ANC front-end needs the far" in err and err.count("\n") == 1
    assert not (tmp_path / "out" / "training").exists()
    # argparse: System 0 trains nothing
    assert cli.main(["train", "--profile", str(path), "--system", "System 0"]) == 2
    assert "invalid choice: 'System 0'" in capsys.readouterr().err


RUNNER = """
import json, os, sys
from asd_utils import cli, data
calls = []
index = data.index_dataset
data.index_dataset = lambda *a, **k: calls.append(1) or index(*a, **k)
status = cli.main(sys.argv[2:])
with open(os.path.join(sys.argv[1], f"calls-{os.environ['RANK']}.json"), "w") as f:
    json.dump(len(calls), f)
sys.exit(status)
"""


@pytest.mark.slow  # two processes (torchrun, gloo on the CPU)
def test_two_processes_index_once_and_read_the_manifest(tree, tmp_path):
    tmp, path, profile = tree
    out = tmp_path / "out"
    runner = tmp_path / "runner.py"
    runner.write_text(textwrap.dedent(RUNNER))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               "2", str(runner), str(tmp_path), "train", "--profile", str(path), "--system",
               "System 1", "--data-root", str(tmp / "data"), "--output-root", str(out),
               "-q"]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    counts = [json.loads((tmp_path / f"calls-{rank}.json").read_text()) for rank in (0, 1)]
    assert counts == [1, 0]  # the main process indexes; the other reads the manifest
    folder = systems.run_dir(out, profile, "System 1", tmp / "data")
    assert json.loads((folder / training.FINISHED).read_text())["steps"] == 2
    assert json.loads((out / runs.RECORD_NAME).read_text())["status"] == "finished"
