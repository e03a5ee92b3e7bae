"""Checking a submission package: its system folders, their meta files and official CSVs.
Raises :class:`SubmissionError`; what is merely unfinished (``FILL IN`` values) is a note."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
import yaml

from asd_utils import data
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


def check_folder(
    directory: str | os.PathLike, data_root: str | os.PathLike, which: str | None = None
) -> str:
    """Check one system folder, or a folder of them (a package's ``task2/`` or ``dev/``), against
    the ``which`` (``eval`` or ``dev``; default eval if ``data_root`` has any) test clips of
    ``data_root`` (``asd package --check``): a package's against its meta files too. Returns
    the ``ok:`` line and a ``to do:`` line per :func:`meta_notes` note; else
    :class:`SubmissionError`."""
    directory = Path(directory)
    clips = data.index_dataset(Path(data_root), split="test")
    which = which or ("eval" if (clips["dataset"] == "eval").any() else "dev")
    test_clips = clips[clips["dataset"] == which]
    subfolders = [p for p in directory.iterdir() if p.is_dir()] if directory.is_dir() else []
    if not any(_SYSTEM_FOLDER.fullmatch(p.name) for p in subfolders):
        official.check(directory, test_clips)
        kinds = test_clips.groupby(["machine_type", "section"]).ngroups
        return f"ok: {directory}: {kinds} machine types pass against the {which} test clips"
    if which == "eval":
        check_package(directory, test_clips)
    else:
        for folder in system_folders(directory):
            official.check(folder, test_clips)
    names = [folder.name for folder in system_folders(directory)]
    notes = [
        f"{name}: {note}"
        for name in names
        if (meta := directory / name / f"{name}.meta.yaml").is_file()
        for note in meta_notes(read_meta(meta))
    ]
    summary = f"{len(names)} system folders ({', '.join(names)})"
    return f"ok: {directory}: {summary} pass against the {which} test clips" + "".join(
        f"\nto do: {note}" for note in notes
    )
