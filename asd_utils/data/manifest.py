"""The clip table of a DCASE tree (the run's manifest, :func:`index_dataset`, every clip
checked) and what is read from it: its edition, fingerprint, format in a sentence and
classes; :func:`prepare_data` makes the synthetic tree when the run uses one.

Trees: the DCASE editions (:mod:`asd_utils.data.editions`) accept
``dev_data/raw/<machine_type>/{train,test}``, ``eval_data/raw/<machine_type>/...`` (both are
indexed when both exist) or a bare ``<machine_type>/{train,test}`` tree; clips are the ``.wav``
files (any letter case of the extension). A row's ``dataset`` is ``"dev"`` or ``"eval"``
(:meth:`~asd_utils.data.editions.Edition.dataset_of`), its ``split`` comes from the folder
(anonymous eval names carry none), its ``channels``, ``sample_rate``, ``frames`` and
``duration`` (seconds) from the WAV header.

The sample checks read each clip (:func:`~asd_utils.data.checks.scan_samples`) once: with a
``cache_dir`` their results are kept in :func:`~asd_utils.data.checks.sample_cache_path` (never
inside the data root, which is only read), keyed by each file's path, size and mtime_ns, so
indexing the same tree again reads WAV headers only; without one every call reads the samples
again.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from asd_utils import errors
from asd_utils.data import editions
from asd_utils.data.checks import (
    MIN_SECONDS,
    _check_samples,
    _header_row,
    _refuse_duplicates,
    _sample_cache_file,
)
from asd_utils.data.dcase import (
    COLUMNS,
    SAMPLE_RATE,
    SPLITS,
    DataError,
    _clip_files,
    _machine_type_dirs,
    _progress,
)
from asd_utils.data.editions import AUTO, Edition


def index_dataset(
    data_root: str | os.PathLike,
    split: str | None = None,
    machine_types: Iterable[str] | None = None,
    *,
    sample_rate: int | None = SAMPLE_RATE,
    min_seconds: float = MIN_SECONDS,
    cache_dir: str | os.PathLike | None = None,
    check_samples: bool = True,
    edition: str | Edition = AUTO,
) -> pd.DataFrame:
    """One row per clip under ``data_root`` (columns :data:`COLUMNS`), every clip checked, rows
    sorted by machine_type (case-insensitively), split and file_name.

    The tree is read as ``edition`` lays it out (a name of
    :data:`~asd_utils.data.editions.EDITIONS`, or ``auto``: detected, :func:`edition_of`; the
    layouts: the module docstring). ``split`` ("train" or "test") and ``machine_types`` filter
    the table. Refused up front, each with a DataError naming the file or folder and what was
    expected: a malformed name, a clip in the wrong split folder, a corrupt or truncated file, a
    sample rate other than ``sample_rate`` Hz (None = any), more channels than the edition's
    channel map (``auto``: 2), a clip shorter than ``min_seconds`` (default
    :data:`MIN_SECONDS`, the front-ends' floor), an existing but empty ``train/`` or ``test/``
    folder, a clip found twice, and (``check_samples``) NaN or infinite samples, read once per
    file and cached in ``cache_dir`` (the module docstring). A silent clip (every sample exactly
    0) is a :class:`~asd_utils.data.dcase.DataWarning`.
    """
    if split not in (None, *SPLITS):
        raise ValueError(f"split must be None, 'train' or 'test', not {split!r}")
    if min_seconds < 0:
        raise ValueError(f"min_seconds must be >= 0, not {min_seconds!r}")
    data_root = Path(data_root).expanduser().absolute()
    family = [edition] if isinstance(edition, Edition) else editions.family(data_root, edition)
    folders = _machine_type_dirs(data_root, family[0])
    cache_path = _sample_cache_file(cache_dir, data_root) if check_samples else None
    if machine_types is not None:
        wanted = [machine_types] if isinstance(machine_types, str) else list(machine_types)
        unknown = sorted(set(wanted) - {folder.name for folder in folders})
        if unknown:
            raise DataError(
                f"machine types {unknown} not found in {str(data_root)!r}; "
                f"found {[folder.name for folder in folders]}"
            )
        folders = [folder for folder in folders if folder.name in wanted]

    files = _clip_files(folders, split, family[0])
    if not files:
        raise DataError(f"no {split} clips in {str(data_root)!r}; expected {family[0].layout}")

    expected = {"sample_rate": sample_rate, "min_seconds": min_seconds, "editions": family}
    rows = [_header_row(*entry, expected) for entry in _progress(files, "indexing clips")]
    table = pd.DataFrame(rows, columns=COLUMNS)
    table = table.sort_values(
        ["machine_type", "split", "file_name"],
        key=lambda col: col.str.lower() if col.name == "machine_type" else col,
        kind="stable",
        ignore_index=True,
    )
    _refuse_duplicates(table, data_root)
    if check_samples:
        _check_samples(table, data_root, cache_path)
    return table


def edition_of(data_root: str | os.PathLike, clips: pd.DataFrame, edition: str = AUTO) -> Edition:
    """The edition of the tree ``data_root`` whose clip table (:func:`index_dataset`, same
    ``edition``) is ``clips``: the named one, or (``auto``) of the editions of the layout the
    tree has, the one with the fewest channels that holds the clips' (a mono DCASE 2023 tree
    is ``dcase2022-2025``; a stereo or mixed one ``dcase2026``)."""
    channels = int(clips["channels"].max()) if len(clips) else 1
    return editions.choose(Path(data_root).expanduser().absolute(), edition, channels)


def clip_fingerprint(table: pd.DataFrame) -> str:
    """SHA-256 of the clips of ``table`` as files: each path, size and modification time.

    Part of every cache key that depends on the audio (training runs, embeddings): a dataset
    made again in the same folder, or a clip replaced, gives a new key.
    """
    digest = hashlib.sha256()
    for path in table["path"]:
        stat = os.stat(path)
        digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def describe_channels(table: pd.DataFrame) -> str:
    """One sentence on a clip table's format, e.g.
    ``"1,400 clips, all stereo (ch0 near, ch1 far), 16 kHz, 10.0–12.0 s"``."""
    n = len(table)
    if n == 0:
        return "0 clips"
    counts = table["channels"].value_counts().sort_index()
    kinds = {1: "mono (pre-2026 format)", 2: "stereo (ch0 near, ch1 far)"}
    if len(counts) == 1:
        layout = f"all {kinds.get(counts.index[0], f'{counts.index[0]}-channel')}"
    else:
        names = {1: "mono", 2: "stereo"}
        layout = "mixed: " + ", ".join(
            f"{count:,} {names.get(ch, f'{ch}-channel')}" for ch, count in counts.items()
        )
    rates = ", ".join(f"{rate / 1000:g}" for rate in sorted(table["sample_rate"].unique()))
    low, high = table["duration"].min(), table["duration"].max()
    durations = f"{low:.1f} s" if f"{low:.1f}" == f"{high:.1f}" else f"{low:.1f}–{high:.1f} s"
    return f"{n:,} clip{'s' * (n != 1)}, {layout}, {rates} kHz, {durations}"


def attribute_classes(table: pd.DataFrame, by_domain: bool = False) -> tuple[np.ndarray, list[str]]:
    """The classes the margin classifier learns: one per (machine_type, section, attributes).

    Returns ``(class_ids, class_names)``: int64 ids of shape ``(len(table),)``, aligned with the
    rows, and the sorted names, so ``class_names[class_ids[i]]`` names row i's class. A name is
    ``"<machine_type>/<section>/<attributes>"``, or ``"<machine_type>/<section>"`` for clips
    without attributes (then the whole section is one class); ``by_domain`` appends
    ``"/<domain>"``. The XJU paper's "number of classes 80" is whatever this gives on its data
    (``xju2026``): derived from the table, never typed in. Sorting makes the ids deterministic.
    """
    missing = [c for c in ("machine_type", "section", "attributes") if c not in table.columns]
    if missing:
        raise ValueError(f"the clip table lacks columns {missing}")
    if table.empty:
        raise ValueError("attribute_classes was given an empty table")
    parts = [table["machine_type"].astype(str), table["section"].astype(str)]
    attributes = table["attributes"].fillna("").astype(str)
    names = parts[0] + "/" + parts[1] + np.where(attributes != "", "/" + attributes, "")
    if by_domain:
        if table["domain"].isna().any():
            raise ValueError("by_domain needs a domain for every clip (anonymous eval test clips?)")
        names = names + "/" + table["domain"].astype(str)
    class_names = sorted(set(names))
    class_ids = pd.Index(class_names).get_indexer(names).astype(np.int64)
    return class_ids, class_names


def prepare_data(profile: dict, paths, progress: bool = True) -> Path:
    """Make sure the run's dataset exists: generate the synthetic one if needed (idempotent).

    A user-given data root is never written to; it must already hold a DCASE tree. The
    profile's own synthetic root is made again when its settings or the generator changed, and
    only when it is the generator's (never a real tree, the output root or the checkout).
    ``paths``: the run's :class:`asd_utils.config.RunPaths`.
    """
    if paths.synthetic:
        from asd_utils.config import REPO_ROOT
        from asd_utils.data.synth import SynthConfig, generate_dataset
        from asd_utils.files import refuse_protected

        protected = {"the output root": paths.output_root, "the checkout": REPO_ROOT}
        refuse_protected(paths.data_root, "the synthetic data root", protected)
        generate_dataset(
            paths.data_root,
            SynthConfig.from_dict(profile["synth"]),
            progress=errors.progress_bars(progress),
            replace=True,
        )
    elif not paths.data_root.is_dir():
        raise FileNotFoundError(f"data_root {paths.data_root} does not exist")
    return paths.data_root
