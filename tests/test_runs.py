"""Runs that cannot hurt each other: the output root's lock, a dead run recognised, the output
root checked, interruptions recorded, and the kernels' sockets kept out of the repository."""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import nbformat
import pytest
import yaml

from asd_utils import cli, config, errors, runs
from asd_utils.config import REPO_ROOT
from asd_utils.data import synth
from asd_utils.report import pipeline

pytestmark = pytest.mark.slow  # real pipelines at once, interrupted and killed


def _dead_pid() -> int:
    """The pid of a process that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_second_run_into_a_locked_output_root_is_refused_naming_the_first(tmp_path):
    with runs.OutputLock(tmp_path, command="make report") as first:
        assert first.taken_over is None
        holder = json.loads((tmp_path / runs.LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["command"] == "make report"
        with pytest.raises(runs.OutputBusy) as refused:
            runs.OutputLock(tmp_path).acquire()
        message = str(refused.value)
        assert "\n" not in message and f"pid {os.getpid()}" in message
        assert "make report" in message and socket.gethostname() in message
        with runs.OutputLock(tmp_path / "other"):  # another output root: no conflict
            pass
    assert not (tmp_path / runs.LOCK_NAME).exists()  # released and removed
    with runs.OutputLock(tmp_path):  # free again
        pass


def test_a_stale_lock_of_a_dead_run_is_taken_over_and_said(tmp_path):
    dead = {"pid": _dead_pid(), "host": socket.gethostname(), "started": "then", "command": "x"}
    (tmp_path / runs.LOCK_NAME).write_text(json.dumps(dead))
    record = {"status": "running", "chapter": "30_osscl_training", "written": "then"}
    (tmp_path / runs.RECORD_NAME).write_text(json.dumps(record))
    assert runs.status(tmp_path).startswith(f"{tmp_path}: dead: its record says running in chapter")
    with runs.OutputLock(tmp_path) as lock:
        assert lock.taken_over == dead
        note = runs.takeover_note(lock.taken_over, tmp_path)
        assert "\n" not in note and "died without finishing" in note
        assert f"pid {dead['pid']}" in note and "30_osscl_training" in note


def test_status_says_what_the_run_is_doing_or_how_it_ended(tmp_path):
    assert runs.status(tmp_path) == f"{tmp_path}: no run recorded"
    record = {"status": "running", "chapter": "20_baseline_autoencoder", "written": "now"}
    (tmp_path / runs.RECORD_NAME).write_text(json.dumps(record))
    with runs.OutputLock(tmp_path):
        line = runs.status(tmp_path)
        assert "running in chapter 20_baseline_autoencoder" in line and str(os.getpid()) in line
    (tmp_path / runs.RECORD_NAME).write_text(json.dumps({**record, "status": "finished"}))
    assert runs.status(tmp_path).startswith(f"{tmp_path}: finished")


def test_an_output_root_that_is_a_file_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    for root in (tmp_path / "file", tmp_path / "file" / "below"):
        with pytest.raises(errors.RunError, match="is a file, not a folder"):
            runs.check_output_root(root)
    status = cli.main(["report", "--profile", "smoke", "--output-root", str(tmp_path / "file")])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and err.startswith("error: output root")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_read_only_output_root_is_refused_in_one_line(tmp_path):
    (tmp_path / "ro").mkdir(mode=0o555)
    with pytest.raises(errors.RunError, match="not writable"):
        runs.check_output_root(tmp_path / "ro")
    with pytest.raises(errors.RunError, match="cannot be made"):
        runs.check_output_root(tmp_path / "ro" / "below")


def test_the_pipeline_refuses_a_busy_output_root_before_anything(tmp_path, capsys):
    with runs.OutputLock(tmp_path, command="asd report --profile quick"):
        status = cli.main(["report", "--profile", "smoke", "--output-root", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert "is in use by another run" in err and "--profile quick" in err
    assert not (tmp_path / runs.RECORD_NAME).exists()
    assert cli.main(["status", "--profile", "smoke", "--output-root", str(tmp_path)]) == 0
    said = capsys.readouterr().out.splitlines()  # `asd status`: then the scores' headline
    assert said[0] == f"{tmp_path}: no run recorded" and "no official scores" in said[1]


def test_errors_are_one_line_and_a_traceback_only_when_asked(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(errors.DEBUG_ENV, raising=False)
    missing = str(tmp_path / "missing.yaml")
    assert cli.main(["report", "--profile", missing]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: profile") and err.count("\n") == 1
    assert cli.main(["report", "--profile", missing, "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv(errors.DEBUG_ENV, "1")
    assert cli.main(["report", "--profile", missing]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_the_training_command_gives_one_line_errors(tmp_path):
    command = [sys.executable, "-m", "asd_utils.cli", "train", "--profile", "smoke"]
    command += ["--system", "System 1", "--data-root", str(tmp_path / "missing")]
    command += ["--output-root", str(tmp_path / "out")]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop(errors.DEBUG_ENV, None)
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"error: data_root {tmp_path / 'missing'} does not exist\n"


# --- whole runs in subprocesses ------------------------------------------------------------------

RUNNER = """
import sys
from pathlib import Path
from asd_utils import cli
from asd_utils.report import pipeline
pipeline.NOTEBOOK_DIR = Path(sys.argv[1])
sys.exit(cli.main(["report", *sys.argv[2:]]))
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny data tree, a profile for it, and a notebook folder of one chapter that writes
    ``started`` in the output root, waits ``SLEEP`` seconds (from the environment) or until a
    file ``release`` appears there, and writes ``done``."""
    tmp = tmp_path_factory.mktemp("runs")
    settings = synth.SynthConfig(
        machine_types=("fan",), n_train_source=3, n_train_target=1, n_test=2,
        clip_seconds={"default": 0.5},
    )  # fmt: skip
    synth.generate_dataset(tmp / "data", settings, progress=False)
    profile = config.load_profile("smoke")
    (tmp / "profile.yaml").write_text(yaml.safe_dump(profile))
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "profile = ''\ndata_root = ''\noutput_root = ''", metadata={"tags": ["parameters"]}
        ),
        nbformat.v4.new_code_cell(
            "import os, time, pathlib\n"
            "out = pathlib.Path(output_root)\n"
            "(out / 'started').write_text('yes')\n"
            "deadline = time.time() + float(os.environ.get('SLEEP', '0'))\n"
            "while time.time() < deadline and not (out / 'release').exists():\n"
            "    time.sleep(0.1)\n"
            "(out / 'done').write_text('yes')"
        ),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nb.metadata["kernelspec"]["language"] = "python"
    (tmp / "notebooks").mkdir()
    nbformat.write(nb, tmp / "notebooks" / "00_sleep.ipynb")
    return tmp


def _start(tiny, output_root, sleep=0.0, cwd=None):
    command = [sys.executable, "-c", textwrap.dedent(RUNNER), str(tiny / "notebooks")]
    command += ["--profile", str(tiny / "profile.yaml"), "--data-root", str(tiny / "data")]
    command += ["--output-root", str(output_root), "--no-book"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "SLEEP": str(sleep)}
    env.pop(errors.DEBUG_ENV, None)
    return subprocess.Popen(
        command, cwd=cwd or tiny, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for_chapter(output_root, chapter="00_sleep", timeout=120):
    """Until the run records ``chapter`` and the chapter's cell has started."""
    record = output_root / runs.RECORD_NAME
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (output_root / "started").exists():
            assert json.loads(record.read_text())["chapter"] == chapter
            return
        time.sleep(0.2)
    raise AssertionError(f"the run did not reach {chapter}")


def _kernel_files() -> set[str]:
    return {p.name for p in REPO_ROOT.glob("kernel-*")}


@pytest.mark.slow
def test_two_runs_at_once_same_root_refused_other_roots_both_fine(tiny):
    before = _kernel_files()
    first = _start(tiny, tiny / "a", sleep=120)
    _wait_for_chapter(tiny / "a")
    same = _start(tiny, tiny / "a")
    other = _start(tiny, tiny / "b", sleep=120)
    _, err = same.communicate(timeout=120)
    assert same.returncode == 2 and err.count("\n") == 1
    assert f"is in use by another run: pid {first.pid}" in err
    _wait_for_chapter(tiny / "b")  # both kernels run at once
    for root in (tiny / "a", tiny / "b"):
        (root / "release").write_text("")
    for proc in (first, other):
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    for root in (tiny / "a", tiny / "b"):
        assert (root / "done").read_text() == "yes"
        assert json.loads((root / runs.RECORD_NAME).read_text())["status"] == "finished"
        assert not (root / runs.LOCK_NAME).exists()
    assert _kernel_files() <= before and not list(tiny.glob("kernel-*"))


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_says_where_in_one_line_and_records_it(tiny, tmp_path, signum):
    proc = _start(tiny, tmp_path / "out", sleep=60)
    _wait_for_chapter(tmp_path / "out")
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    # what it did is logged before; the interruption is one line, the last, no traceback
    assert err.endswith("\ninterrupted in chapter 00_sleep; run the same command to resume\n")
    assert "Traceback" not in err and err.count("interrupted in") == 1
    record = json.loads((tmp_path / "out" / runs.RECORD_NAME).read_text())
    assert record["status"] == "interrupted at 00_sleep"
    assert runs.status(tmp_path / "out").startswith(f"{tmp_path / 'out'}: interrupted at 00_sleep")
    assert not (tmp_path / "out" / runs.LOCK_NAME).exists()


@pytest.mark.slow
def test_a_run_killed_outright_is_recognised_as_dead_by_the_next(tiny, tmp_path):
    proc = _start(tiny, tmp_path / "out", sleep=60)
    _wait_for_chapter(tmp_path / "out")
    proc.kill()
    proc.communicate()
    line = runs.status(tmp_path / "out")
    assert ": dead: its record says running in chapter 00_sleep" in line
    again = _start(tiny, tmp_path / "out")
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert f"an earlier run into {tmp_path / 'out'} died without finishing (pid {proc.pid}" in err
    assert runs.status(tmp_path / "out").startswith(f"{tmp_path / 'out'}: finished")
    left = Path(tempfile.gettempdir()).glob(f"{pipeline.KERNEL_DIR_PREFIX}{proc.pid}-*")
    assert not list(left)  # the killed run's kernel folder, removed by the next run
