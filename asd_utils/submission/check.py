"""Checking a submission package: its system folders, their meta files and official CSVs.
Raises :class:`SubmissionError`; what is merely unfinished (``FILL IN`` values) is a note."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
import yaml

from asd_utils.evaluation import official
from asd_utils.evaluation.official import SubmissionError
from asd_utils.submission.meta import FILL_IN, MAX_ABBREVIATION

MAX_SYSTEMS = 4
_SYSTEM_FOLDER = re.compile(r"(?P<label>.+)_task2_(?P<n>\d+)")  # matched whole (fullmatch)


def read_meta(path: str | os.PathLike) -> dict:
    """Read a ``.meta.yaml``: a mapping with ``submission``, ``system`` and ``results``."""
    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"{path}: missing (every system folder needs its meta file)")
    try:
        meta = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise SubmissionError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(meta, dict):
        raise SubmissionError(f"{path}: not a YAML mapping")
    missing = [key for key in ("submission", "system", "results") if key not in meta]
    if missing:
        raise SubmissionError(f"{path}: lacks the blocks {missing}")
    return meta


def placeholders(meta, prefix: str = "") -> list[str]:
    """The dotted keys of a meta mapping whose values still hold a ``FILL IN`` placeholder."""
    if isinstance(meta, dict):
        items = meta.items()
    elif isinstance(meta, list):
        items = enumerate(meta)
    else:
        return [prefix] if isinstance(meta, str) and meta.startswith(FILL_IN) else []
    return [
        key
        for name, value in items
        for key in placeholders(value, f"{prefix}.{name}" if prefix else str(name))
    ]


def meta_notes(meta: dict) -> list[str]:
    """What is still to do in a meta mapping (not errors): ``FILL IN`` values left, and an
    abbreviation longer than the template's 10 characters."""
    notes = []
    left = placeholders(meta)
    if left:
        shown = ", ".join(left[:3]) + (", ..." if len(left) > 3 else "")
        notes.append(f"{len(left)} {FILL_IN} values ({shown})")
    abbreviation = str((meta.get("submission") or {}).get("abbreviation", ""))
    if len(abbreviation) > MAX_ABBREVIATION:
        notes.append(
            f"abbreviation {abbreviation!r} is longer than the template's {MAX_ABBREVIATION} "
            "characters"
        )
    return notes


def system_folders(package_dir: str | os.PathLike) -> list[Path]:
    """The ``<label>_task2_<n>`` folders of a package folder (its other files are ignored)."""
    package_dir = Path(package_dir)
    if not package_dir.is_dir():
        raise SubmissionError(f"{package_dir} is not a folder")
    folders = sorted(p for p in package_dir.iterdir() if p.is_dir())
    for folder in folders:
        if not _SYSTEM_FOLDER.fullmatch(folder.name):
            raise SubmissionError(f"{folder}: not a system folder <Lastname>_<Institute>_task2_<n>")
    return folders


def check_package(package_dir: str | os.PathLike, test_clips: pd.DataFrame) -> None:
    """Check a package's ``task2/`` folder: 1 to 4 ``<label>_task2_<n>`` folders of one label,
    each with a parsable ``<label>_task2_<n>.meta.yaml`` whose ``submission.label`` is the
    folder name, and official CSVs that pass :func:`~asd_utils.evaluation.official.check` against
    ``test_clips``. Raises :class:`SubmissionError`; what is merely unfinished is
    :func:`meta_notes`' business."""
    folders = system_folders(package_dir)
    if not 1 <= len(folders) <= MAX_SYSTEMS:
        raise SubmissionError(
            f"{package_dir}: {len(folders)} system folders; a package holds 1 to {MAX_SYSTEMS}"
        )
    labels = {_SYSTEM_FOLDER.fullmatch(folder.name)["label"] for folder in folders}
    if len(labels) > 1:
        raise SubmissionError(f"{package_dir}: system folders of several labels {sorted(labels)}")
    for folder in folders:
        n = int(_SYSTEM_FOLDER.fullmatch(folder.name)["n"])
        if not 1 <= n <= MAX_SYSTEMS:
            raise SubmissionError(f"{folder}: submission index {n} is not 1 to {MAX_SYSTEMS}")
        meta_path = folder / f"{folder.name}.meta.yaml"
        meta = read_meta(meta_path)
        submission = meta["submission"] if isinstance(meta["submission"], dict) else {}
        if submission.get("label") != folder.name:
            raise SubmissionError(
                f"{meta_path}: submission.label is {submission.get('label')!r}, "
                f"not the folder name {folder.name!r}"
            )
        official.check(folder, test_clips)
