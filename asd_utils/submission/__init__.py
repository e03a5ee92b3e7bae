"""The DCASE 2026 Task 2 submission package: write it from a finished run, and check it.

    python -m asd_utils.submission write --profile quick [--label Lastname_Institute]
        [--systems "System 4" "System 1"] [--zip] [--data-root D] [--output-root O]
    python -m asd_utils.submission check DIR [--data-root D] [--set eval|dev]

:func:`write_package` copies (never recomputes) the official CSVs of up to four systems of a
finished run (``<output_root>/systems/<system>/``) into this layout, built in a temporary
sibling folder and moved into place only once every folder has passed :func:`check`:

```
<destination>/                      default <output_root>/submission/
    task2/                          the package (dcase2026-task2.md, "The submission package")
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

import argparse
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
import yaml

from asd_utils import config, data, errors, registry
from asd_utils.config import prose
from asd_utils.evaluation import official
from asd_utils.evaluation.metrics import METRICS, describe_decision, machine_sort_key
from asd_utils.evaluation.official import KINDS, SubmissionError, csv_name
from asd_utils.files import (
    atomic_write_text,
    claim_folder,
    refuse_protected,
    unescape_formulas,
    write_marker,
)

log = logging.getLogger(__name__)

MAX_SYSTEMS = 4
FILL_IN = "FILL IN"
DEFAULT_LABEL = "Lastname_Institute"
# the paper's four submitted systems (its baselines are not submitted)
DEFAULT_SYSTEMS = tuple(n for n in registry.paper() if registry.get(n).kind != "autoencoder")
MAX_ABBREVIATION = 10  # "Use a maximum of 10 characters" (the DCASE meta template)
GROUND_TRUTH_DIRS = {
    "label": "ground_truth_data",
    "domain": "ground_truth_domain",
    "attributes": "ground_truth_attributes",
}
LABEL_CODES = {"normal": 0, "anomaly": 1}
DOMAIN_CODES = {"source": 0, "target": 1}
EVALUATOR_URL = "https://github.com/nttcslab/dcase2024_task2_evaluator"
AUDIOSET = {
    "name": "AudioSet",
    "url": "https://research.google.com/audioset/",
    "total_audio_length": f"{FILL_IN}: hours of AudioSet audio the checkpoint was trained on",
}
CHECKPOINT_ENV = registry.CHECKPOINT_ENV
BACKBONE_NAMES = prose.BACKBONE_NAMES
DESCRIPTION_FIELDS = (
    "input_sampling_rate",
    "acoustic_features",
    "data_augmentation",
    "front_end",
    "embeddings",
    "machine_learning_method",
    "aggregation_method",
    "domain_adaptation_method",
    "domain_generalization_method",
    "ensemble_method_subsystem_count",
    "decision_making",
    "attribute_usage",
    "external_data_usage",
    "development_data_usage",
)

_LABEL = re.compile(r"[A-Za-z][A-Za-z0-9-]*_[A-Za-z0-9-]+")  # matched whole (fullmatch)
_SYSTEM_FOLDER = re.compile(r"(?P<label>.+)_task2_(?P<n>\d+)")  # matched whole (fullmatch)

FBANK = prose.FBANK
BASELINE_FEATURES = "log-mel energies (128 bins, n_fft 1024, hop 512), 5 frames stacked (640-dim)"
NEAR = prose.NEAR
# What an ensemble's meta says member by member (one value when all members agree).
PER_MEMBER = (
    "acoustic_features",
    "data_augmentation",
    "front_end",
    "embeddings",
    "aggregation_method",
    "domain_generalization_method",
    "attribute_usage",
)


# --- checking --------------------------------------------------------------------------------


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
    folder name, and official CSVs that pass :func:`check` against ``test_clips``. Raises
    :class:`SubmissionError`; what is merely unfinished is :func:`meta_notes`' business."""
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


# --- ground truth ------------------------------------------------------------------------------


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


# --- the meta file -------------------------------------------------------------------------------


def _base(system: str) -> str:
    """``"System 2 (lambda 0)"`` → ``"System 2"``: an ablation shares its system's facts."""
    return system.split(" (", 1)[0]


_checkpoint, _embeddings = prose.checkpoint, prose.embeddings


def _describe(
    system: str, profile: dict, members: Sequence[str], info: dict | None = None
) -> tuple[dict, list[str]]:
    """``(system.description fields, backbones with a checkpoint)`` of one system, described by
    what the registry says it is (:mod:`asd_utils.registry`: its kind and section). A trained
    system describes itself: its recipe's words, kept in its ``system.json`` (``info``:
    ``description`` and ``checkpoints``) when it trained; an ensemble's members are described
    from their own (``info["member_info"]``)."""
    base = _base(system)
    entry = registry.REGISTRY.get(base)
    kind = entry.kind if entry else None
    info = info or {}
    fields = {field: None for field in DESCRIPTION_FIELDS}
    decision = describe_decision(**profile.get("decision", {}))
    fields.update(input_sampling_rate="16kHz", front_end=NEAR, decision_making=decision)
    checkpoints: list[str] = []
    if info.get("description"):
        described, checkpoints = dict(info["description"]), list(info.get("checkpoints", []))
    elif kind == "ensemble":
        described, checkpoints = _describe_ensemble(profile, members, info.get("member_info"))
    elif kind == "autoencoder":
        described = _describe_autoencoder(base, profile)
    elif kind == "frozen":
        described, checkpoints = _describe_frozen(entry, profile)
    else:
        described = {f: f"{FILL_IN}: {f.replace('_', ' ')}" for f in DESCRIPTION_FIELDS[1:]}
    fields.update(described)
    return fields, checkpoints


FRONT_ENDS = {
    "near": NEAR,
    "far": "the far microphone (channel 1)",
    "residual": "near - alpha x far embeddings of the two microphones",
    "concat": "near and far embeddings side by side",
    "anc": "the near channel after the adaptive far-microphone canceller (FBLMS)",
    "w1": (
        "W1: the near channel less the far one through a fixed per-bin complex filter fitted "
        "over the clip (STFT 1024/512)"
    ),
    "ss": "the near channel's magnitude spectrum less the far one's (spectral subtraction)",
}


def _describe_frozen(entry, profile: dict) -> tuple[dict, list[str]]:
    """:func:`_describe` of a frozen-encoder system (System 0, System 6), from its section."""
    section = registry.settings(profile, entry.name)
    backend = section.get("backend", "default")
    if backend == "default":
        backend = profile.get("backends", {}).get("default", "knn")
    pooling = section.get("pooling")
    if pooling == "time_rdp":
        pooling = (
            f"relative-deviation pooling over time per frequency band (gamma {section['gamma']})"
        )
    fields = dict(
        acoustic_features=FBANK,
        front_end=FRONT_ENDS.get(section.get("view"), section.get("view")),
        embeddings=_embeddings(section),
        machine_learning_method=(
            f"no training: a frozen pre-trained encoder; anomaly score by the {backend} back end"
            + (f" (after {entry.source})" if entry.source else "")
        ),
        aggregation_method=f"block {section.get('layer')} output tokens, {pooling}",
        attribute_usage="none",
        external_data_usage=(
            f"pre-trained {BACKBONE_NAMES.get(section['backbone'])} checkpoint"
            if _checkpoint(section)
            else None
        ),
    )
    return fields, [section["backbone"]] if _checkpoint(section) else []


def _describe_ensemble(
    profile: dict, members: Sequence[str], member_info: dict | None = None
) -> tuple[dict, list[str]]:
    """:func:`_describe` of an ensemble (System 4): each of :data:`PER_MEMBER` the members'
    common value or one per member, the members' checkpoints, how scores are combined.
    ``member_info``: each member's ``system.json`` (its recipe's words)."""
    ensemble = profile.get("ensemble", {})
    members = list(members) or list(ensemble.get("members", []))
    described, checkpoints = [], []
    for member in members:
        member_fields, member_checkpoints = _describe(
            member, profile, (), (member_info or {}).get(member)
        )
        described.append(member_fields)
        checkpoints += [c for c in member_checkpoints if c not in checkpoints]
    fields = {}
    for field in PER_MEMBER:
        values = [d[field] for d in described]
        fields[field] = (
            values[0]
            if len(set(values)) == 1 and field != "embeddings"
            else "; ".join(f"{m}: {v}" for m, v in zip(members, values, strict=True))
        )
    fields.update(
        machine_learning_method=(
            f"ensemble of {', '.join(members)}: each member's anomaly scores standardised "
            f"per machine type and section ({ensemble.get('normalisation', 'zscore')}) with "
            "statistics of its training-clip scores, then combined "
            f"({ensemble.get('how', 'sum')}, weights {ensemble.get('weights')})"
        ),
        ensemble_method_subsystem_count=len(members),
        external_data_usage=(
            "; ".join(d["external_data_usage"] for d in described if d["external_data_usage"])
            or None
        ),
    )
    return fields, checkpoints


def _describe_autoencoder(base: str, profile: dict) -> dict:
    """:func:`_describe` of the official autoencoder baseline (MSE, or selective Mahalanobis
    when ``base`` names MAHALA)."""
    baseline = profile.get("baseline", {})
    mahala = "MAHALA" in base  # the selective Mahalanobis variant
    return dict(
        acoustic_features=BASELINE_FEATURES,
        machine_learning_method=(
            "dense autoencoder 640-128-128-128-128-8-128-128-128-128-640 (the official "
            f"baseline), Adam, learning rate {baseline.get('learning_rate')}, "
            f"{baseline.get('epochs')} epochs, batch {baseline.get('batch_size')}; "
            + (
                "anomaly score: selective Mahalanobis distance of the clip's mean "
                "reconstruction residual"
                if mahala
                else "anomaly score: mean squared reconstruction error"
            )
        ),
        aggregation_method="mean over the clip's frame vectors",
        domain_generalization_method=(
            "separate source and target residual covariances; the smaller distance"
            if mahala
            else None
        ),
        attribute_usage="domain labels of the training clips" if mahala else None,
    )


def development_results(metrics_table: pd.DataFrame | None, system: str) -> dict:
    """``{machine_type: {auc_source, auc_target, pauc}}`` of one system, in % to 2 decimals.

    ``metrics_table``: the run's ``metrics.csv`` (columns ``machine_type, section, auc_source,
    auc_target, pauc, system``, values in [0, 1]); several sections of a machine type are
    averaged. Machine types are sorted as the paper's tables; None gives ``{}``.
    """
    if metrics_table is None or metrics_table.empty:
        return {}
    rows = metrics_table[metrics_table["system"] == system]
    means = rows.groupby("machine_type")[list(METRICS)].mean()
    return {
        str(machine_type): {m: round(float(means.loc[machine_type, m]) * 100, 2) for m in METRICS}
        for machine_type in sorted(means.index, key=machine_sort_key)
    }


def build_meta(
    label: str,
    system: str,
    profile: dict,
    system_info: dict | None = None,
    metrics_table: pd.DataFrame | None = None,
    development_data: str = "development dataset (training clips)",
) -> dict:
    """The ``.meta.yaml`` content of one submitted system, pre-filled with what the run knows.

    ``label``: the folder name ``<Lastname>_<Institute>_task2_<n>``; ``system``: the run's
    system name; ``profile``: the run's profile (its ``submission.descriptions[system]`` may
    give ``name``, ``abbreviation`` and any ``system.description`` field);
    ``system_info``: the system's ``system.json`` (``parameters``, ``members``);
    ``metrics_table``: the run's ``metrics.csv``. Authors and source code are ``FILL IN``
    placeholders (:func:`placeholders` lists what is left).
    """
    system_info = system_info or {}
    descriptions = (profile.get("submission") or {}).get("descriptions") or {}
    given = dict(descriptions.get(system) or {})
    unknown = sorted(set(given) - {"name", "abbreviation", *DESCRIPTION_FIELDS})
    if unknown:
        raise SubmissionError(
            f"profile submission.descriptions[{system!r}] has unknown keys {unknown}; allowed: "
            f"name, abbreviation, {', '.join(DESCRIPTION_FIELDS)}"
        )
    # name and abbreviation: the profile's, of the system or else of its base system (an
    # ablation "System 2 (lambda 0)" is named after System 2, with its suffix); else the name
    base = dict(descriptions.get(_base(system)) or {})
    name = base.get("name", system)
    if _base(system) != system and "name" in base:
        name = f"{name} {system[len(_base(system)) :].strip()}"
    abbreviation = base.get("abbreviation", system[:MAX_ABBREVIATION])
    description, checkpoints = _describe(
        system, profile, system_info.get("members") or (), system_info
    )
    description["development_data_usage"] = development_data
    description.update({k: v for k, v in given.items() if k in DESCRIPTION_FIELDS})
    parameters = system_info.get("parameters")
    return {
        "submission": {
            "label": label,
            "name": given.get("name", name),
            "abbreviation": given.get("abbreviation", abbreviation),
            "authors": [
                {
                    "lastname": f"{FILL_IN}: lastname",
                    "firstname": f"{FILL_IN}: firstname",
                    "email": f"{FILL_IN}: email",
                    "corresponding": True,
                    "affiliation": {
                        "abbreviation": f"{FILL_IN}: institute abbreviation",
                        "institute": f"{FILL_IN}: institute",
                        "department": f"{FILL_IN}: department",
                        "location": f"{FILL_IN}: city, country",
                    },
                }
            ],
        },
        "system": {
            "description": description,
            "complexity": {
                "total_parameters": (
                    int(parameters)
                    if isinstance(parameters, int | float)
                    else f"{FILL_IN}: total parameters (no system.json)"
                )
            },
            "external_datasets": [dict(AUDIOSET)] if checkpoints else [],
            "source_code": f"{FILL_IN}: URL of the public source code",
        },
        "results": {"development_dataset": development_results(metrics_table, system)},
    }


def meta_text(meta: dict) -> str:
    """The meta mapping as YAML, after a comment on what is pre-filled and what is not."""
    header = (
        "# DCASE 2026 Task 2 system meta information, pre-filled by asd_utils.submission.\n"
        f"# Replace every '{FILL_IN}' value before submitting; development results are in %.\n"
    )
    return header + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=4096)


# --- the package ---------------------------------------------------------------------------------


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
    docstring. Everything is built in a temporary sibling folder and checked (:func:`check`,
    :func:`check_package`) before it replaces ``destination``: a failed write leaves an old
    package as it was.
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


# --- command line --------------------------------------------------------------------------------


def _test_clips(data_root: Path, which: str | None) -> tuple[pd.DataFrame, str]:
    clips = data.index_dataset(data_root, split="test")
    which = which or ("eval" if (clips["dataset"] == "eval").any() else "dev")
    return clips[clips["dataset"] == which], which


def _check_command(directory: Path, data_root: Path, which: str | None) -> str:
    test_clips, which = _test_clips(data_root, which)
    subfolders = [p for p in directory.iterdir() if p.is_dir()] if directory.is_dir() else []
    if any(_SYSTEM_FOLDER.fullmatch(p.name) for p in subfolders):
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
    official.check(directory, test_clips)
    kinds = test_clips.groupby(["machine_type", "section"]).ngroups
    return f"ok: {directory}: {kinds} machine types pass against the {which} test clips"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    write = commands.add_parser("write", help="write the package of a finished run")
    write.add_argument("--profile", required=True, help="smoke, quick, paper, or a YAML path")
    write.add_argument("--data-root", help="the DCASE tree (default: $DATA_ROOT, else synthetic)")
    write.add_argument("--output-root", help="the run (default: $OUTPUT_ROOT, else outputs/<p>)")
    write.add_argument("--label", help="<Lastname>_<Institute> (default: the profile's)")
    write.add_argument("--systems", nargs="+", help="up to 4 systems (default: the profile's)")
    write.add_argument("--destination", help="default: <output_root>/submission")
    write.add_argument("--zip", action="store_true", help="also write <label>_task2.zip")
    check_ = commands.add_parser("check", help="check a system folder or a package's task2/")
    check_.add_argument("directory", help="one system folder, or a folder of them (task2/, dev/)")
    check_.add_argument("--data-root", help="the DCASE tree (default: $DATA_ROOT)")
    check_.add_argument("--profile", help="resolve the data root as the pipeline does")
    check_.add_argument(
        "--set",
        choices=["eval", "dev"],
        dest="which",
        help="the test clips to check against (default: eval if the data has any)",
    )
    errors.add_talk_options(parser)
    errors.add_debug_option(parser)

    def command(argv):
        args = parser.parse_args(argv)
        errors.configure_logging(args.quiet, args.verbose)
        if args.command == "write":
            profile = config.load_profile(args.profile)
            paths = config.resolve_paths(profile, args.data_root, args.output_root)
            written = write_package(
                paths.output_root,
                paths.data_root,
                profile,
                systems=args.systems,
                label=args.label,
                destination=args.destination,
                zip=args.zip,
            )
            if (written / "ground_truth").is_dir():  # asked for the package: say how to score it
                log.info("official evaluator on the dev folders:\n%s", evaluator_command(written))
        else:
            data_root = args.data_root or os.environ.get("DATA_ROOT")
            if args.profile:
                data_root = config.resolve_paths(config.load_profile(args.profile), data_root)
                data_root = data_root.data_root
            if not data_root:
                raise errors.UserError("give --data-root (or $DATA_ROOT, or --profile)")
            print(_check_command(Path(args.directory), Path(data_root), args.which))

    return errors.run_command(command, argv)
