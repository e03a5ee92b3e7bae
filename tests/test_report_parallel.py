"""The report's independent chapters side by side: which run together, their threads, and the
same console order as one chapter at a time (the same files: ``test_report_bytes.py``)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import nbformat
import pytest

from asd_utils import config, errors
from asd_utils.report import pipeline


def test_waves_put_the_independent_chapters_together_in_order():
    names = ["00_a", "10_b", "20_c", "30_d", "35_e", "40_f", "45_g", "50_h", "60_i", "70_j"]
    grouped = pipeline.waves([Path(f"{n}.ipynb") for n in names])
    assert [[p.stem for p in wave] for wave in grouped] == [
        ["00_a", "10_b", "20_c", "30_d", "35_e", "40_f", "45_g"],
        ["50_h"],
        ["60_i"],
        ["70_j"],
    ]
    names.insert(8, "55_k")  # 55 and 60: a group of their own, after 50
    grouped = pipeline.waves([Path(f"{n}.ipynb") for n in names])
    assert [[p.stem[:2] for p in wave] for wave in grouped][1:] == [["50"], ["55", "60"], ["70"]]
    # side by side, the longest chapter starts right after the first (the console keeps the
    # numbered order)
    started = sorted(grouped[0], key=pipeline._start_rank)
    assert [p.stem[:2] for p in started] == ["00", "40", "10", "20", "30", "35", "45"]
    # an --only run of 30 and 50: 30 alone
    assert [len(w) for w in pipeline.waves([Path("30_d.ipynb"), Path("50_h.ipynb")])] == [1, 1]


def test_workers_from_the_argument_the_environment_or_the_cpus(monkeypatch):
    monkeypatch.setenv(pipeline.WORKERS_ENV, "1")
    assert pipeline.report_workers() == 1
    assert pipeline.report_workers(3) == 3
    monkeypatch.delenv(pipeline.WORKERS_ENV)
    monkeypatch.setattr(pipeline, "cpus", lambda: 2)
    assert pipeline.report_workers() == 2
    monkeypatch.delenv(pipeline.THREADS_ENV, raising=False)
    # half the CPUs each, whatever the workers (same bytes serial or side by side); no sleeping
    # threads while the chapters' threads fit the CPUs
    assert pipeline.thread_env(2) == dict.fromkeys(pipeline.THREAD_VARIABLES, "1")
    assert pipeline.thread_env(1) == pipeline.thread_env(2)
    monkeypatch.setattr(pipeline, "cpus", lambda: 16)
    assert pipeline.thread_env(2)["OMP_NUM_THREADS"] == "8"
    monkeypatch.setenv(pipeline.THREADS_ENV, "4")
    assert pipeline.thread_env(2)["MKL_NUM_THREADS"] == "4"
    assert pipeline.thread_env(5)["OMP_WAIT_POLICY"] == "PASSIVE"  # 20 threads on 16 CPUs
    monkeypatch.setenv(pipeline.THREADS_ENV, "0")
    with pytest.raises(errors.UserError, match=pipeline.THREADS_ENV):
        pipeline.thread_env()
    monkeypatch.setenv(pipeline.WORKERS_ENV, "0")
    with pytest.raises(errors.UserError, match=pipeline.WORKERS_ENV):
        pipeline.report_workers()


def console(text: str, root: Path) -> list[str]:
    """The chapters' lines with the run's folder, numbers and kernel names taken out (not the
    kernel processes' own, ``[IPKernelApp] …``, which are not the chapters')."""
    text = text.replace(str(root), "<out>")
    text = re.sub(r"ipykernel_\d+/\d+", "ipykernel", text)
    lines = [line for line in text.splitlines() if not line.startswith("[IPKernelApp]")]
    return [re.sub(r"\d+(\.\d+)?", "N", line) for line in lines]


class Kept(logging.Handler):
    """Keeps the records it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_the_console_keeps_the_numbered_order_side_by_side(tmp_path, monkeypatch, capsys):
    """20 sleeps while 30 and 35 finish beside it: the console (each chapter's standard error
    and the run's progress lines) reads as in a run one at a time."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    for name, code in (("20_slow", "time.sleep(3)"), ("30_quick", ""), ("35_quick", "")):
        notebook(
            folder, name, f"import sys, time\n{code}\nprint('line of {name}', file=sys.stderr)"
        )
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", folder)
    paths = config.RunPaths(tmp_path / "data", tmp_path / "out", synthetic=False)
    package = logging.getLogger("asd_utils")
    kept = Kept()
    monkeypatch.setattr(package, "handlers", [kept])
    monkeypatch.setattr(package, "propagate", False)
    package.setLevel("INFO")
    lines, steps = {}, {}
    for workers in (1, 2):
        capsys.readouterr()
        kept.records.clear()
        pipeline.execute_notebooks(
            config.load_profile("smoke").model_copy(update={"name": "x"}), paths,
            tmp_path / f"executed{workers}", workers=workers,
        )  # fmt: skip
        lines[workers] = console(capsys.readouterr().err, tmp_path)
        steps[workers] = [
            re.sub(r"in \d+ s", "in N s", r.getMessage())
            for r in kept.records
            if r.getMessage().startswith("[")
        ]
    chapters = [line for line in lines[1] if line.startswith("line of")]
    assert chapters == ["line of N_slow", "line of N_quick", "line of N_quick"]  # numbers: N
    assert lines[1] == lines[2] and steps[1] == steps[2] and len(steps[1]) == 6


def notebook(folder: Path, name: str, code: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("profile = ''", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(code),
    ]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, folder / f"{name}.ipynb")


def test_a_failing_chapter_side_by_side_stops_the_run_in_the_serial_order(tmp_path, monkeypatch):
    """30 fails while 20 runs beside it: 20 finishes and is timed, 30's failure is raised when
    its turn comes, with its name; 35 never finishes (stopped or never started)."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    notebook(
        folder,
        "20_slow",
        "import time\ntime.sleep(3)",
    )
    notebook(folder, "30_broken", "raise ValueError('broken on purpose')")
    notebook(folder, "35_never", "import time\ntime.sleep(60)")
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", folder)
    paths = config.RunPaths(tmp_path / "data", tmp_path / "out", synthetic=False)
    seconds, started = {}, []
    with pytest.raises(pipeline.NotebookFailed, match=r"30_broken.ipynb failed") as caught:
        pipeline.execute_notebooks(
            config.load_profile("smoke").model_copy(update={"name": "x"}), paths,
            tmp_path / "executed", seconds=seconds,
            on_start=started.append, workers=2,
        )  # fmt: skip
    assert caught.value.chapter == "30_broken"
    assert list(seconds) == ["20_slow"] and started == ["20_slow", "30_broken"]
    assert seconds["20_slow"] >= 3
