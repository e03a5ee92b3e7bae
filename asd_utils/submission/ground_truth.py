"""The dev test clips' ground truth, written as the official evaluator reads it, and the
command that runs the evaluator.

The official evaluator (``nttcslab/dcase2024_task2_evaluator``, the same reading code as
``dcase2023_task2_evaluator``) reads its ground truth from three folders in its CURRENT
directory (``ground_truth_data``, ``ground_truth_domain``, ``ground_truth_attributes``), each
with one ``ground_truth_<machine_type>_section_<section>_test.csv`` per machine type and section:
no header, rows ``<wav file name>,<0|1>`` (data: 0 normal, 1 anomaly; domain: 0 source,
1 target) and, for attributes, ``<anonymous name>,<labelled name without .wav>,<labelled name>``
(it renames a system's row ``<column 2>.wav`` to column 1; here each dev name maps to itself).
Machine types come from the data folder's file names (``name.split("_")[2]``), and a system
folder missing a file of any of them is skipped. It aligns a system's rows with the ground truth
by SORTING both by file name. With ``--dir_depth 1`` every folder under ``--teams_root_dir`` is
one system. It imports its own ``tools/`` package from the script's folder and needs Python 3.11
or older (``distutils``). The command, with this package's folders::

    git clone https://github.com/nttcslab/dcase2024_task2_evaluator
    cd <destination>/ground_truth
    python /path/to/dcase2024_task2_evaluator/dcase2024_task2_evaluator.py \
        --teams_root_dir ../dev --dir_depth 1 --result_dir ../evaluator_result

It writes ``<destination>/evaluator_result/<label>_task2_<n>_result.csv`` (AUC (source),
AUC (target), pAUC, precision, recall, F1 per machine type, and the official score).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from asd_utils.evaluation.official import SubmissionError
from asd_utils.files import (
    atomic_write_text,
)

GROUND_TRUTH_DIRS = {
    "label": "ground_truth_data",
    "domain": "ground_truth_domain",
    "attributes": "ground_truth_attributes",
}
LABEL_CODES = {"normal": 0, "anomaly": 1}
DOMAIN_CODES = {"source": 0, "target": 1}
EVALUATOR_URL = "https://github.com/nttcslab/dcase2024_task2_evaluator"


def write_ground_truth(test_clips: pd.DataFrame, directory: str | os.PathLike) -> list[Path]:
    """Write the ground truth of the labelled test clips as the official evaluator reads it.

    ``test_clips``: clip table rows (columns ``machine_type, section, file_name, domain,
    label``); anonymous clips (no label or domain) are left out. Writes, per (machine_type,
    section), ``ground_truth_<machine_type>_section_<section>_test.csv`` into
    ``<directory>/ground_truth_data`` (rows ``<file name>,<0 normal | 1 anomaly>``),
    ``ground_truth_domain`` (``<file name>,<0 source | 1 target>``) and
    ``ground_truth_attributes`` (``<file name>,<file name without .wav>,<file name>``: each
    name maps to itself), no header, rows sorted by file name. Returns the paths written.
    """
    labelled = test_clips[test_clips["label"].notna() & test_clips["domain"].notna()]
    if labelled.empty:
        raise SubmissionError("no labelled test clips: there is no ground truth to write")
    directory = Path(directory)
    written = []
    for (machine_type, section), group in labelled.groupby(["machine_type", "section"]):
        if "_" in str(machine_type):
            raise SubmissionError(
                f"machine type {machine_type!r} contains '_': the evaluator reads the machine "
                "type as the third '_'-separated part of the ground-truth file name"
            )
        group = group.sort_values("file_name")
        names = list(group["file_name"])
        columns = {
            "label": [[n, LABEL_CODES[v]] for n, v in zip(names, group["label"], strict=True)],
            "domain": [[n, DOMAIN_CODES[v]] for n, v in zip(names, group["domain"], strict=True)],
            "attributes": [[n, Path(n).stem, n] for n in names],
        }
        for what, rows in columns.items():
            path = (
                directory
                / GROUND_TRUTH_DIRS[what]
                / f"ground_truth_{machine_type}_section_{section}_test.csv"
            )
            text = "".join(",".join(str(v) for v in row) + "\n" for row in rows)
            written.append(atomic_write_text(path, text))
    return written


def evaluator_command(destination: str | os.PathLike) -> str:
    """The shell commands that run the official evaluator on a package's dev folders."""
    destination = Path(destination)
    return (
        f"git clone {EVALUATOR_URL}\n"
        f"cd {destination / 'ground_truth'}\n"
        "python /path/to/dcase2024_task2_evaluator/dcase2024_task2_evaluator.py "
        "--teams_root_dir ../dev --dir_depth 1 --result_dir ../evaluator_result"
    )
