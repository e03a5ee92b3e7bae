"""The official files of a system, in one place: their names, writing, reading and checking.

Per machine type and section, a system submits
``anomaly_score_<machine_type>_section_<NN>_test.csv`` and
``decision_result_<machine_type>_section_<NN>_test.csv``: no header, one row
``<wav file name>,<value>`` per test clip, sorted by name (the official evaluator aligns rows
to its ground truth by sorting names and checks only the row count, so a wrong name misaligns
silently: :func:`check` refuses it). torch-free.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from asd_utils.errors import UserError
from asd_utils.evaluation.metrics import decision_threshold
from asd_utils.files import atomic_path

KINDS = ("anomaly_score", "decision_result")
CSV_NAME = re.compile(
    r"(?P<kind>anomaly_score|decision_result)_(?P<machine_type>.+)_section_(?P<section>\d+)"
    r"_test\.csv"
)  # matched whole (fullmatch)
TEST_WAV = re.compile(r"^section_[^_]+_(?P<domain>source|target)_test_(?P<label>normal|anomaly)_")


class SubmissionError(UserError, ValueError):
    """A submission folder or package that the official evaluator or the organisers would
    reject or misread: the message names the file and the first offending row."""


# --- writing ---------------------------------------------------------------------------------


def _section_id(section) -> str:
    """``"00"`` stays ``"00"``; an integer 0 becomes ``"00"``."""
    return section if isinstance(section, str) else f"{int(section):02d}"


def _format_value(value) -> str:
    """Full-precision text of a score (``repr`` of the float round-trips exactly)."""
    return repr(float(value))


def _write_rows(path: Path, file_names: Sequence[str], values: Sequence, fmt) -> Path:
    """Write ``<basename>,<fmt(value)>`` rows sorted by name, atomically, one row per file."""
    names = [os.path.basename(str(n)) for n in file_names]
    values = list(values)
    if len(names) != len(values):
        raise ValueError(f"{path.name}: {len(names)} file names but {len(values)} values")
    duplicates = sorted(n for n, count in Counter(names).items() if count > 1)
    if duplicates:
        raise ValueError(f"{path.name}: duplicate file names {duplicates[:5]}")
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        for name, value in sorted(zip(names, values, strict=True)):
            f.write(f"{name},{fmt(value)}\n")
    return path


def write_anomaly_scores(
    directory, machine_type: str, section, file_names: Sequence[str], anomaly_scores
) -> Path:
    """Write ``anomaly_score_<machine_type>_section_<section>_test.csv`` into ``directory``.

    No header; rows ``<wav file name>,<score>`` sorted by file name (the evaluator aligns rows
    to ground truth by sorting names), basenames only, full float precision. Raises ValueError
    on duplicate names or a length mismatch. Returns the path written.
    """
    path = Path(directory) / csv_name("anomaly_score", machine_type, _section_id(section))
    return _write_rows(path, file_names, np.asarray(anomaly_scores).ravel(), _format_value)


def write_decision_results(
    directory, machine_type: str, section, file_names: Sequence[str], decisions
) -> Path:
    """Write ``decision_result_<machine_type>_section_<section>_test.csv`` (rows ``<name>,<0|1>``).

    Same conventions as :func:`write_anomaly_scores`; decisions must be 0/1 (1 = anomaly).
    """
    decisions = np.asarray(decisions).ravel()
    if not np.isin(decisions, (0, 1)).all():
        raise ValueError("decisions must be 0 or 1")
    path = Path(directory) / csv_name("decision_result", machine_type, _section_id(section))
    return _write_rows(path, file_names, decisions, lambda d: str(int(d)))


def read_submission(path) -> pd.DataFrame:
    """Read one anomaly-score or decision CSV into columns ``file_name, value`` (float).

    Raises ValueError naming the file and line for a row that is not ``<name>,<number>``, and
    for duplicate file names.
    """
    path = Path(path)
    names, values = [], []
    with open(path, encoding="utf-8", newline="") as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            try:
                name, value = row
                values.append(float(value))
            except ValueError:
                raise ValueError(
                    f"{path}: line {line_no}: expected '<file name>,<value>', got {row!r}"
                ) from None
            names.append(name)
    table = pd.DataFrame({"file_name": names, "value": values})
    if table["file_name"].duplicated().any():
        raise ValueError(f"{path}: duplicate file names")
    return table


def read_system_scores(directory, kind: str = "anomaly_score") -> pd.DataFrame:
    """Read every ``<kind>_*_section_*_test.csv`` of a system's output directory.

    ``kind``: ``"anomaly_score"`` (default) or ``"decision_result"``. Machine type and section
    come from the CSV name; domain and label from each wav name
    (``section_00_source_test_anomaly_0001_...``); anonymous eval names
    (``section_00_0000.wav``) get None for both. Output columns: ``machine_type, section,
    file_name, domain, label, <kind>``, in CSV-name then file-name order.
    """
    directory = Path(directory)
    frames = []
    if kind not in ("anomaly_score", "decision_result"):
        raise ValueError(f"kind must be anomaly_score or decision_result, not {kind!r}")
    for path in sorted(directory.glob(f"{kind}_*_section_*_test.csv")):
        match = CSV_NAME.fullmatch(path.name)
        if match is None or match["kind"] != kind:
            continue
        table = read_submission(path).rename(columns={"value": kind})
        parsed = table["file_name"].str.extract(TEST_WAV)
        table["domain"] = parsed["domain"].astype(object).where(parsed["domain"].notna(), None)
        table["label"] = parsed["label"].astype(object).where(parsed["label"].notna(), None)
        table["machine_type"] = match["machine_type"]
        table["section"] = match["section"]
        frames.append(table)
    if not frames:
        raise FileNotFoundError(f"no {kind}_*_section_*_test.csv in {directory}")
    columns = ["machine_type", "section", "file_name", "domain", "label", kind]
    return pd.concat(frames, ignore_index=True)[columns]


def write_submission(
    scores: pd.DataFrame,
    directory,
    score_column: str = "anomaly_score",
    quantile: float = 0.9,
    rule: str = "gamma",
) -> pd.DataFrame:
    """Write a system's official files for every (machine_type, section) in ``scores``.

    ``scores`` holds train and test clips (columns ``machine_type, section, split, file_name`` and
    ``score_column``). Per section, the decision threshold is :func:`decision_threshold` of the
    training clips' scores (``quantile``, ``rule``); ``anomaly_score_*`` and
    ``decision_result_*`` get one row per test clip. Returns one row per section:
    ``machine_type, section, threshold, n_test``.
    """
    rows = []
    for (machine_type, section), group in scores.groupby(["machine_type", "section"], sort=True):
        train = group[group["split"] == "train"]
        test = group[group["split"] == "test"]
        if train.empty or test.empty:
            raise ValueError(f"{machine_type} section {section}: need train and test clips")
        threshold = decision_threshold(train[score_column], quantile, rule)
        write_anomaly_scores(
            directory, machine_type, section, test["file_name"], test[score_column]
        )
        decisions = (test[score_column].to_numpy() > threshold).astype(int)
        write_decision_results(directory, machine_type, section, test["file_name"], decisions)
        rows.append(
            {
                "machine_type": machine_type,
                "section": section,
                "threshold": threshold,
                "n_test": len(test),
            }
        )
    return pd.DataFrame(rows)


# --- checking ----------------------------------------------------------------------------------


def csv_name(kind: str, machine_type: str, section: str) -> str:
    """``<kind>_<machine_type>_section_<section>_test.csv``, the official file name."""
    return f"{kind}_{machine_type}_section_{section}_test.csv"


def expected_names(test_clips: pd.DataFrame) -> dict[tuple[str, str], set[str]]:
    """``{(machine_type, section): {file names}}`` of the test clips that must be scored."""
    missing = [c for c in ("machine_type", "section", "file_name") if c not in test_clips.columns]
    if missing:
        raise ValueError(f"test_clips lacks columns {missing}")
    return {
        (str(machine_type), str(section)): set(group["file_name"])
        for (machine_type, section), group in test_clips.groupby(["machine_type", "section"])
    }


def _row_error(path: Path, line_no: int, line: str, problem: str) -> SubmissionError:
    return SubmissionError(f"{path}: line {line_no}: {problem}: {line!r}")


def _check_rows(path: Path, kind: str, names: set[str]) -> None:
    """Every row of one official CSV is ``<test clip name>,<value>``, one per clip."""
    seen: dict[str, int] = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    for line_no, line in enumerate(lines, start=1):
        row = next(csv.reader([line]), [])
        if len(row) != 2:
            raise _row_error(path, line_no, line, "expected '<wav file name>,<value>'")
        name, text = row
        try:
            value = float(text)
        except ValueError:
            problem = (
                "a header line; official files have no header"
                if line_no == 1
                else f"{kind} {text!r} is not a number"
            )
            raise _row_error(path, line_no, line, problem) from None
        if not math.isfinite(value):
            raise _row_error(path, line_no, line, f"{kind} {text!r} is not a finite number")
        if kind == "decision_result" and text.strip() not in ("0", "1"):
            raise _row_error(path, line_no, line, f"decision {text!r} is not exactly 0 or 1")
        if name not in names:
            problem = f"{name!r} is not one of the {len(names)} test clips of this machine type"
            raise _row_error(path, line_no, line, problem)
        if name in seen:
            raise _row_error(path, line_no, line, f"{name!r} already appears on line {seen[name]}")
        seen[name] = line_no
    if len(seen) != len(names):
        first = sorted(names - set(seen))[0]
        raise SubmissionError(
            f"{path}: {len(seen)} rows but {len(names)} test clips; first clip without a row: "
            f"{first!r}"
        )


def check(directory: str | os.PathLike, test_clips: pd.DataFrame) -> None:
    """Check one system folder against the test clips it must score; raise or return None.

    ``test_clips``: rows of the clip table (:func:`asd_utils.data.index_dataset`, split "test")
    of the machine types expected, columns ``machine_type, section, file_name``. The folder
    must hold, for each (machine_type, section), ``anomaly_score_*`` and ``decision_result_*``
    (:func:`csv_name`) with exactly one row ``<wav file name>,<value>`` per test clip, named as
    the clip, and no header; scores finite numbers, decisions exactly 0 or 1; no official CSV of
    a machine type that is not expected (other files, e.g. the meta file, are ignored).
    Raises :class:`SubmissionError` naming the file and the first offending row.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise SubmissionError(f"{directory} is not a folder")
    expected = expected_names(test_clips)
    for path in sorted(directory.glob("*.csv")):
        match = CSV_NAME.fullmatch(path.name)
        if match is None:
            raise SubmissionError(
                f"{path}: not an official file name "
                f"(anomaly_score|decision_result)_<machine_type>_section_<NN>_test.csv"
            )
        if (match["machine_type"], match["section"]) not in expected:
            known = ", ".join(f"{m} section {s}" for m, s in sorted(expected)) or "none"
            raise SubmissionError(
                f"{path}: machine type {match['machine_type']} section {match['section']} is "
                f"not expected here (expected: {known})"
            )
    for (machine_type, section), names in sorted(expected.items()):
        for kind in KINDS:
            path = directory / csv_name(kind, machine_type, section)
            if not path.is_file():
                raise SubmissionError(
                    f"{path}: missing; {machine_type} section {section} has {len(names)} "
                    "test clips to score"
                )
            _check_rows(path, kind, names)
