"""The run's headline (asd_utils.report.headline) and the machine it names (asd_utils.machine)."""

import json
import logging
import sys
import warnings

import pandas as pd
import pytest

from asd_utils import errors, machine
from asd_utils.report import headline

CPUINFO = """processor\t: 0
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse avx2 fma avx512f avx512_bf16 amx_tile amx_bf16 rdrand
"""


def _metrics(folder, scores: dict[str, float]) -> None:
    """A metrics.csv where every metric of a system equals its official score."""
    rows = [
        {
            "system": system,
            "machine_type": "fan",
            "section": "00",
            "auc_source": value,
            "auc_target": value,
            "pauc": value,
        }
        for system, value in scores.items()
    ]
    pd.DataFrame(rows).to_csv(folder / "metrics.csv", index=False)


@pytest.fixture
def run_folder(tmp_path):
    _metrics(
        tmp_path,
        {
            "System 1": 0.52,
            "System 2": 0.50,
            "System 4": 0.51,
            "log-mel floor": 0.56,
            "baseline-MSE": 0.59,
            "System 2 (lambda 0)": 0.99,  # an ablation: not in the headline
        },
    )
    record = {"machine": {"processor": "Intel(R) Xeon(R) Processor"}}
    (tmp_path / "run_record.json").write_text(json.dumps(record))
    return tmp_path


def test_score_lines_mark_the_best_and_the_floor(run_folder):
    lines = headline.score_lines(run_folder)
    assert "Intel(R) Xeon(R) Processor" in lines[0]
    body = {line.split()[0] + " " + line.split()[1]: line for line in lines[1:]}
    assert len(lines) == 6, "one line per registered system, the ablation left out"
    assert "<- best" in body["baseline-MSE 59.00"]
    assert "<- floor" in body["log-mel floor"]
    assert "(below the floor)" in body["System 1"] and "best" not in body["System 1"]
    assert [line.split()[0] for line in lines[1:3]] == ["baseline-MSE", "System"]


def test_score_lines_without_metrics(tmp_path):
    assert "not evaluated yet" in headline.score_lines(tmp_path)[0]


def test_meaning_says_best_floor_and_ensemble(run_folder):
    scores = headline.official_scores(run_folder)
    said = " ".join(headline.meaning(scores, ["System 1", "System 2"]))
    assert "**baseline-MSE**'s (59.00 %)" in said
    assert "1 of the 4 systems clears the log-mel floor (56.00 %" in said
    assert "System 4 (51.00 %) is below System 1 and above System 2" in said
    assert "as its best: 65.80" in said  # the paper's System 4 against 63.86 / 62.85


def test_cpu_sentence_names_the_cpu_and_the_measured_spread():
    said = headline.cpu_sentence("AMD EPYC 7B13")
    assert "this CPU (AMD EPYC 7B13)" in said and "identical" not in said
    assert "System 5 53.12 vs 51.34" in said and "up to 1.78 points" in said


def test_machine_reads_model_and_speed_flags():
    assert machine.cpu_model(CPUINFO) == "Intel(R) Xeon(R) Processor"
    assert machine.cpu_flags(CPUINFO) == [
        "avx2",
        "fma",
        "avx512f",
        "avx512_bf16",
        "amx_tile",
        "amx_bf16",
    ]
    assert machine.cpu_vendor("AMD EPYC 7B13 64-Core Processor") == "AMD EPYC"
    described = machine.describe()
    assert described["processor"] and described["cpus"] >= 1
    if "torch" in sys.modules:
        assert described["blas"] and described["threads"] >= 1


def test_warnings_become_one_log_line(caplog, monkeypatch):
    monkeypatch.setenv(errors.LOG_LEVEL_ENV, "INFO")  # restored after: configure_logging sets it
    errors.configure_logging()
    logger = logging.getLogger("asd_utils")
    logger.addHandler(caplog.handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = errors._warning_as_line
            warnings.warn("first line /tmp/x\nsecond line", UserWarning, stacklevel=1)
    finally:
        logger.removeHandler(caplog.handler)
    assert caplog.messages == ["UserWarning: first line /tmp/x"]


def test_progress_bars_only_on_a_terminal(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert errors.progress_bars(True) is False
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert errors.progress_bars(True) is True and errors.progress_bars(False) is False


def test_glue_prints_in_jupyterlab_only(monkeypatch, capsys):
    from asd_utils.report import notebook

    monkeypatch.delenv(errors.LOG_LEVEL_ENV, raising=False)
    notebook.glue("verdict", "System 4 is best")
    assert capsys.readouterr().out == "[verdict] System 4 is best\n"
    monkeypatch.setenv(errors.LOG_LEVEL_ENV, "INFO")  # a kernel an asd command started
    notebook.glue("verdict", "System 4 is best")
    assert capsys.readouterr().out == ""


def test_asd_status_ends_with_the_score_lines(run_folder, capsys, monkeypatch):
    from asd_utils import cli

    monkeypatch.setenv(errors.LOG_LEVEL_ENV, "INFO")  # restored after: the command sets it
    assert cli.main(["status", "--profile", "smoke", "--output-root", str(run_folder)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-6].startswith("official score") and out[-1].split()[:2] == ["log-mel", "floor"]
