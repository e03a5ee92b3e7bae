"""Writing the submission package of a finished run.

:func:`write_package` copies (never recomputes) the official CSVs of up to four systems of a
finished run (``<output_root>/systems/<system>/``) into this layout, built in a temporary
sibling folder and moved into place only once every folder has passed
:func:`~asd_utils.evaluation.official.check`:

```
<destination>/                      default <output_root>/submission/
    task2/                          the package, as the DCASE 2026 Task 2 rules ask for it
        README.txt                  what is left to do (authors, source code, the report PDF)
        <label>_task2_<n>/          n = 1.. in the order of the systems given
            <label>_task2_<n>.meta.yaml
            anomaly_score_<machine_type>_section_<section>_test.csv     every EVAL machine type
            decision_result_<machine_type>_section_<section>_test.csv
    dev/<label>_task2_<n>/          the same system's CSVs of every DEV machine type
    ground_truth/                   the dev test clips' ground truth, as the evaluator reads it
        ground_truth_data/ground_truth_<machine_type>_section_<section>_test.csv
        ground_truth_domain/ground_truth_<machine_type>_section_<section>_test.csv
        ground_truth_attributes/ground_truth_<machine_type>_section_<section>_test.csv
    <label>_task2.zip               with --zip: task2/ without its README.txt
```

The ground truth and the official evaluator's command: :mod:`asd_utils.submission.ground_truth`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from asd_utils import config, data, registry
from asd_utils.evaluation import official
from asd_utils.evaluation.metrics import METRICS
from asd_utils.evaluation.official import KINDS, SubmissionError, csv_name
from asd_utils.files import (
    atomic_write_text,
    claim_folder,
    refuse_protected,
    unescape_formulas,
    write_marker,
)
from asd_utils.submission.check import MAX_SYSTEMS, check_package, meta_notes
from asd_utils.submission.ground_truth import evaluator_command, write_ground_truth
from asd_utils.submission.meta import build_meta, meta_text

log = logging.getLogger(__name__)

DEFAULT_LABEL = "Lastname_Institute"
# the paper's four submitted systems (its baselines are not submitted)
DEFAULT_SYSTEMS = tuple(n for n in registry.paper() if registry.get(n).kind != "autoencoder")
_LABEL = re.compile(r"[A-Za-z][A-Za-z0-9-]*_[A-Za-z0-9-]+")  # matched whole (fullmatch)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise SubmissionError(f"{path}: not valid JSON ({err})") from None
    return value if isinstance(value, dict) else {}


def _read_metrics(output_root: Path) -> pd.DataFrame | None:
    path = output_root / "metrics.csv"
    if not path.is_file():
        return None
    table = pd.read_csv(path, dtype={"section": str, "machine_type": str, "system": str})
    table = unescape_formulas(table)
    missing = [c for c in ("machine_type", "system", *METRICS) if c not in table.columns]
    if missing:
        raise SubmissionError(f"{path} lacks columns {missing}")
    return table


def choose_systems(
    output_root: str | os.PathLike, profile: dict, systems: Iterable[str] | None = None
) -> list[str]:
    """The systems to submit: ``systems``, else the profile's ``submission.systems``, else
    those of System 1-4 that ran. Refuses more than 4, repeats, and systems that did not run
    (the error lists those that did)."""
    systems_dir = Path(output_root) / "systems"
    ran = (
        sorted(p.name for p in systems_dir.iterdir() if p.is_dir()) if systems_dir.is_dir() else []
    )
    chosen = list(systems or (profile.get("submission") or {}).get("systems") or [])
    if not chosen:
        chosen = [s for s in DEFAULT_SYSTEMS if s in ran]
    if not chosen:
        raise SubmissionError(f"no systems to submit in {systems_dir}; systems that ran: {ran}")
    if len(chosen) > MAX_SYSTEMS:
        raise SubmissionError(
            f"{len(chosen)} systems given ({', '.join(chosen)}); a submission holds at most "
            f"{MAX_SYSTEMS}"
        )
    repeated = sorted({s for s in chosen if chosen.count(s) > 1})
    if repeated:
        raise SubmissionError(f"systems given twice: {repeated}")
    unknown = [s for s in chosen if s not in ran]
    if unknown:
        raise SubmissionError(
            f"systems {unknown} did not run in {systems_dir}; systems that ran: {ran}"
        )
    return chosen


def _copy_csvs(source: Path, target: Path, test_clips: pd.DataFrame, system: str) -> None:
    """Copy the official CSVs of every (machine_type, section) of ``test_clips``."""
    target.mkdir(parents=True, exist_ok=True)
    for machine_type, section in sorted(official.expected_names(test_clips)):
        for kind in KINDS:
            path = source / csv_name(kind, machine_type, section)
            if not path.is_file():
                raise SubmissionError(
                    f"{path}: missing; {system} has no {kind} file for {machine_type} "
                    f"section {section}"
                )
            shutil.copyfile(path, target / path.name)


def _readme(
    label: str,
    folders: Sequence[str],
    has_eval: bool,
    notes: Sequence[str] = (),
    has_dev: bool = False,
) -> str:
    """The package's ``task2/README.txt``: what is left to do before submitting (every note of
    :func:`meta_notes`), and the official evaluator's commands for the development folders."""
    lines = [
        f"DCASE 2026 Task 2 submission package of {label}, written by asd_utils.submission.",
        "",
        "Before submitting:",
        "- replace every 'FILL IN' value in each <label>_task2_<n>.meta.yaml (authors, "
        "source code, ...);",
        f"- add the technical report as task2/{label}_task2.technical_report.pdf: it is not "
        "written here, and not in the zip this tool makes (add it with "
        f"'zip {label}_task2.zip task2/{label}_task2.technical_report.pdf');",
        "- this README is not part of the zip.",
        "",
        "Systems: " + ", ".join(folders),
    ]
    if notes:
        lines += ["", "Left to fill in:", *(f"- {note}" for note in notes)]
    if has_dev:
        lines += [
            "",
            "The official evaluator on the development folders (from this folder):",
            evaluator_command(Path("..")),
        ]
    if not has_eval:
        lines += [
            "",
            "The data had no evaluation machine types (eval_data/raw/<machine_type>/): the "
            "system folders hold only their meta files. Run the systems on the evaluation set "
            "and write the package again.",
        ]
    return "\n".join(lines) + "\n"


def _zip(task2: Path, path: Path) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(task2.rglob("*")):
            if file.is_file() and file != task2 / "README.txt":
                archive.write(file, Path("task2") / file.relative_to(task2))
    return path


def _replace_dir(new: Path, destination: Path) -> None:
    """Move the finished folder ``new`` onto ``destination``; an old one goes only after."""
    if not destination.exists():
        os.replace(new, destination)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".old", dir=new.parent))
    os.replace(destination, old / destination.name)
    try:
        os.replace(new, destination)
    except BaseException:
        os.replace(old / destination.name, destination)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _destination(output_root: Path, data_root, destination) -> Path:
    """Where the package goes: ``<output_root>/submission`` (the run's own), or a
    ``destination`` that is new, empty or a package this project wrote (its marker and nothing
    else), and never the output root, the data root, the checkout or a folder holding one."""
    if not destination:
        return output_root / "submission"
    protected = {
        "the output root": output_root,
        "the data root": Path(data_root),
        "the checkout": config.REPO_ROOT,
    }
    destination = refuse_protected(destination, "--destination", protected)
    return claim_folder(destination, "--destination")


def write_package(
    output_root: str | os.PathLike,
    data_root: str | os.PathLike,
    profile: dict,
    systems: list[str] | None = None,
    label: str | None = None,
    destination: str | os.PathLike | None = None,
    zip: bool = False,
    clips: pd.DataFrame | None = None,
) -> Path:
    """Write the submission package of a finished run; return its folder.

    ``output_root``: the run's results (``systems/<system>/`` with the official CSVs of every
    machine type, ``system.json``, ``metrics.csv``); ``data_root``: its DCASE tree (the test
    clips to check against); ``profile``: the run's profile (its ``submission`` section gives
    label, systems and descriptions). ``systems`` (at most 4) and ``label``
    (``<Lastname>_<Institute>``) override the profile. ``destination`` defaults to
    ``<output_root>/submission``; ``zip`` adds ``<label>_task2.zip``. ``clips``: the run's clip
    table (its manifest), else ``data_root`` is indexed. Layout in the module
    docstring. Everything is built in a temporary sibling folder and checked
    (:func:`~asd_utils.evaluation.official.check`, :func:`check_package`) before it replaces
    ``destination``: a failed write leaves an old package as it was.
    """
    output_root = Path(output_root)
    settings = profile.get("submission") or {}
    label = label or settings.get("label") or DEFAULT_LABEL
    if not _LABEL.fullmatch(label):
        raise SubmissionError(
            f"label {label!r} is not <Lastname>_<Institute> (letters, digits and '-', one '_')"
        )
    destination = _destination(output_root, data_root, destination)
    chosen = choose_systems(output_root, profile, systems)
    clips = data.index_dataset(data_root) if clips is None else clips
    train_sets = set(clips.loc[clips["split"] == "train", "dataset"])
    clips = clips[clips["split"] == "test"]
    eval_clips = clips[clips["dataset"] == "eval"]
    dev_clips = clips[clips["dataset"] == "dev"]
    metrics_table = _read_metrics(output_root)
    development_data = "development dataset (training clips)" + (
        " and the evaluation dataset's training clips" if "eval" in train_sets else ""
    )

    destination.parent.mkdir(parents=True, exist_ok=True)
    build = Path(
        tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".part", dir=destination.parent)
    )
    try:
        folders, notes = [], []
        for n, system in enumerate(chosen, start=1):
            folder = f"{label}_task2_{n}"
            folders.append(f"{folder} = {system}")
            system_dir = output_root / "systems" / system
            info = _read_json(system_dir / "system.json")
            info["member_info"] = {
                m: _read_json(output_root / "systems" / m / "system.json")
                for m in info.get("members") or ()
            }
            made = {**profile, **info.get("made_with", {})}  # the settings it was made with
            meta = build_meta(folder, system, made, info, metrics_table, development_data)
            notes += [f"{folder}: {note}" for note in meta_notes(meta)]
            _write_system_folder(build, folder, system, meta, system_dir, clips)
        check_package(build / "task2", eval_clips)
        readme = _readme(label, folders, not eval_clips.empty, notes, not dev_clips.empty)
        atomic_write_text(build / "task2" / "README.txt", readme)
        if not dev_clips.empty:
            write_ground_truth(dev_clips, build / "ground_truth")
        if zip:
            _zip(build / "task2", build / f"{label}_task2.zip")
        write_marker(build, [p.name for p in build.iterdir()])
        _replace_dir(build, destination)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    _say_written(destination, folders, notes, eval_clips.empty, dev_clips.empty)
    return destination


def _write_system_folder(
    build: Path, folder: str, system: str, meta: dict, system_dir: Path, clips: pd.DataFrame
) -> None:
    """One system's ``task2/<folder>/`` (its meta file and the evaluation CSVs) and, when the
    data has development machine types, ``dev/<folder>/`` (their CSVs), each checked
    (:func:`asd_utils.evaluation.official.check`) against the test ``clips`` of its dataset."""
    eval_clips = clips[clips["dataset"] == "eval"]
    dev_clips = clips[clips["dataset"] == "dev"]
    atomic_write_text(build / "task2" / folder / f"{folder}.meta.yaml", meta_text(meta))
    _copy_csvs(system_dir, build / "task2" / folder, eval_clips, system)
    official.check(build / "task2" / folder, eval_clips)
    if not dev_clips.empty:
        _copy_csvs(system_dir, build / "dev" / folder, dev_clips, system)
        official.check(build / "dev" / folder, dev_clips)


def _say_written(
    destination: Path, folders: list[str], notes: list[str], no_eval: bool, no_dev: bool
) -> None:
    """What :func:`write_package` wrote, in a line or two: what is left to fill in and the
    evaluator's commands are in the package's ``task2/README.txt`` (said once, not per folder)."""
    log.info("wrote %s: %s", destination, "; ".join(folders))
    readme = destination / "task2" / "README.txt"
    if notes:
        log.info("to do before submitting (%d FILL IN notes): see %s", len(notes), readme)
    if no_eval:
        log.info("no evaluation machine types in the data: the task2/ folders hold only meta files")
    if no_dev:
        log.info("no development machine types in the data: no dev/ folders and no ground truth")
    else:
        log.debug("the official evaluator's commands: %s", readme)
