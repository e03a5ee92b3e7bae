"""Index a DCASE Task 2 tree, parse clip names, read and write WAV clips, with clear errors.

A clip table (:func:`index_dataset`) has one row per WAV file; audio is read as float32 arrays of
shape ``(channels, samples)``. DCASE 2026 clips are stereo (channel 0 = near microphone, channel
1 = far microphone); 2020–2025 clips are mono, and their one channel equals the 2026 near mic.
A tree is walked as its edition lays it out (:mod:`asd_utils.data.editions`: folders, names,
channel map). This module knows nothing of features.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm import tqdm

from asd_utils import errors
from asd_utils.data import editions
from asd_utils.data.editions import AUTO, Edition
from asd_utils.errors import UserError
from asd_utils.files import atomic_path, atomic_write_text

COLUMNS = [
    "dataset",
    "machine_type",
    "section",
    "domain",
    "split",
    "label",
    "index",
    "attributes",
    "file_name",
    "path",
    "channels",
    "sample_rate",
    "duration",
    "frames",
]
SPLITS = ("train", "test")
PROGRESS_MIN = 500  # show a progress bar above this many files
PROGRESS_DELAY = 2.0  # … and only once the loop has taken this many seconds (fast local disks)


class DataError(UserError, ValueError):
    """Bad input data: a misnamed, missing, corrupt or unexpected file or folder."""


class DataWarning(UserWarning):
    """Suspicious but usable input data, e.g. a clip whose samples are all exactly 0."""


def parse_file_name(name: str | os.PathLike, edition: Edition | None = None) -> dict:
    """Split a DCASE clip name into its fields (``edition``'s pattern; default: the first of
    :data:`~asd_utils.data.editions.EDITIONS`).

    ``section_00_source_train_normal_0000_car_A2_spd_28V.wav`` gives ``{"section": "00",
    "domain": "source", "split": "train", "label": "normal", "index": 0, "attributes":
    "car_A2_spd_28V"}``. ``attributes`` is the raw key/value string ("" when absent or
    ``noAttribute``; see :func:`parse_attributes`). Anonymous evaluation names
    (``section_00_0000.wav``) give ``domain``, ``split`` and ``label`` None. A path is accepted;
    only its last component is parsed.
    """
    edition = edition or next(iter(editions.EDITIONS.values()))
    fields = edition.parse(name)
    if fields is None:
        raise DataError(f"{str(name)!r} is not a DCASE clip name; expected {edition.name_help}")
    return fields


def parse_attributes(attributes: str) -> dict[str, str]:
    """Turn ``"car_A2_spd_28V"`` into ``{"car": "A2", "spd": "28V"}``; values stay strings.

    A key may repeat within one name (2026 ToyCarEmu: ``..._mic_2_mic_1``); its second value is
    kept under ``"mic (2)"``, its third under ``"mic (3)"`` and so on. Classes use the raw string.
    """
    if attributes in ("", "noAttribute"):
        return {}
    tokens = attributes.split("_")
    if len(tokens) % 2:
        raise DataError(
            f"attributes {attributes!r} have {len(tokens)} '_'-separated tokens; "
            "expected key_value pairs (an even number)"
        )
    pairs: dict[str, str] = {}
    for key, value in zip(tokens[::2], tokens[1::2], strict=True):
        name, n = key, 1
        while name in pairs:
            n += 1
            name = f"{key} ({n})"
        pairs[name] = value
    return pairs


def _layout(data_root: Path, edition: str | Edition) -> Edition:
    """The edition whose folders ``data_root`` is walked by (:func:`editions.family`)."""
    return edition if isinstance(edition, Edition) else editions.family(data_root, edition)[0]


def _refuse_too_deep(data_root: Path, edition: Edition) -> None:
    """A DataError when ``data_root`` is a folder inside a DCASE tree (one holding ``raw/``,
    or a machine type folder holding ``train/``/``test/``), naming the root to give instead."""
    found = edition.too_deep(data_root)
    if found is None:
        return
    inner, parent = found
    raise DataError(
        f"data_root {str(data_root)!r} is a folder inside a DCASE tree (it holds {inner}): give "
        f"the tree's root, e.g. --data-root {parent}; expected {edition.layout}"
    )


def _machine_type_dirs(data_root: Path, edition: Edition) -> list[Path]:
    """Every machine type folder (one with a split folder) under ``data_root`` as ``edition``
    lays it out; a root one or more levels too deep is refused (:func:`_refuse_too_deep`)."""
    if not data_root.is_dir():
        raise DataError(f"data_root {str(data_root)!r} is not a folder; expected {edition.layout}")
    _refuse_too_deep(data_root, edition)
    dirs = []
    for root in edition.roots(data_root):
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name[0] != "."):
            if not any((folder / split).is_dir() for split in edition.splits.values()):
                raise DataError(
                    f"machine type folder {str(folder)!r} has neither "
                    f"{' nor '.join(f'{name}/' for name in edition.splits.values())}; "
                    f"expected {edition.layout}"
                )
            dirs.append(folder)
    if not dirs:
        raise DataError(f"no machine type folders in {str(data_root)!r}; expected {edition.layout}")
    return sorted(dirs, key=lambda p: (p.name.lower(), p.name, str(p)))


def machine_types(data_root: str | os.PathLike, edition: str | Edition = AUTO) -> list[str]:
    """The machine types found under ``data_root`` (laid out as ``edition``, default detected:
    :mod:`asd_utils.data.editions`), sorted case-insensitively."""
    root = Path(data_root).expanduser()
    names = {folder.name for folder in _machine_type_dirs(root, _layout(root, edition))}
    return sorted(names, key=lambda n: (n.lower(), n))


def clip_paths(data_root: str | os.PathLike, edition: str | Edition = AUTO) -> list[str]:
    """The paths of every clip under ``data_root`` as :func:`index_dataset` names them (same
    ``edition``), from a folder listing alone (no file is opened)."""
    root = Path(data_root).expanduser().absolute()
    layout = _layout(root, edition)
    return [str(path) for *_, path in _clip_files(_machine_type_dirs(root, layout), None, layout)]


def _truncation(path: Path) -> str | None:
    """Why a RIFF/WAVE file is truncated (data chunk longer than the file), or None."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:] != b"WAVE":
            return None  # not plain WAV: leave the verdict to libsndfile
        while len(chunk := f.read(8)) == 8:
            chunk_id, size = struct.unpack("<4sI", chunk)
            if chunk_id == b"data":
                available = os.fstat(f.fileno()).st_size - f.tell()
                if size > available and size != 0xFFFFFFFF:  # 0xFFFFFFFF: streamed, size unknown
                    return f"its header declares {size} bytes of audio but only {available} follow"
                return None
            f.seek(size + (size & 1), os.SEEK_CUR)
    return None


def _open_checked(path: Path) -> sf.SoundFile:
    """Open ``path`` with soundfile, turning every way it can be broken into a DataError."""
    if not path.is_file():
        raise DataError(f"audio file {str(path)!r} does not exist or is not a file")
    try:
        audio = sf.SoundFile(path)
    except (sf.SoundFileError, RuntimeError) as err:
        raise DataError(f"cannot read {str(path)!r} as audio ({err}); expected a WAV file") from err
    problem = _truncation(path) or ("it holds no audio frames" if audio.frames == 0 else None)
    if problem:
        audio.close()
        raise DataError(f"audio file {str(path)!r} is truncated or corrupt: {problem}")
    return audio


SAMPLE_RATE = 16000  # Hz, every DCASE edition
# Shortest clip index_dataset accepts by default, in seconds: the floor of the front-ends that
# read every clip. The autoencoder baseline needs five 1024-sample frames at hop 512 (0.192 s);
# BEATs and EAT one 16-frame fbank patch (25 ms + 15 x 10 ms = 0.175 s). A clip shorter than a
# system's training crop is zero-padded there, which works. Real DCASE clips are 6 s or longer.
MIN_SECONDS = 0.2
FLOAT_SUBTYPES = frozenset({"FLOAT", "DOUBLE"})  # the only WAV encodings that can hold NaN / inf
SCAN_FIRST_FRAMES = 4096  # the first block of a sample check is small: most clips end it there
SCAN_BLOCK_FRAMES = 65536  # frames per later block (512 KiB of float32 stereo)
SAMPLE_CACHE_VERSION = "asd_utils.data sample checks 1"
MAX_SILENT_WARNINGS = 10  # silent clips named one warning each; the rest are counted in one more


def _progress(items: Sequence, desc: str):
    """A progress bar over many files, shown only when the loop is slow (a fast local disk
    indexes thousands of clips in a second)."""
    hidden = len(items) <= PROGRESS_MIN or not errors.progress_bars()
    return tqdm(items, desc=desc, unit="file", disable=hidden, delay=PROGRESS_DELAY)


def _wav_files(folder: Path) -> list[Path]:
    """The ``.wav`` files of one folder (any letter case of the extension), sorted; hidden files
    (``._*`` AppleDouble files, temporary files) are left out."""
    return sorted(
        path
        for path in folder.iterdir()
        if path.suffix.lower() == ".wav" and not path.name.startswith(".")
    )


def _clip_files(
    folders: Sequence[Path], split: str | None, edition: Edition
) -> list[tuple[str, str, str, Path]]:
    """``(dataset, machine_type, split, path)`` of every clip in the machine type ``folders``
    (laid out as ``edition``), filtered by ``split`` (None = both). A machine type without any
    ``.wav`` file, or with an existing but empty split folder, is a DataError naming the
    folder."""
    files = []
    for folder in folders:
        found = {
            folder_split: _wav_files(folder / name)
            for folder_split, name in edition.splits.items()
            if (folder / name).is_dir()
        }
        if not any(found.values()):
            raise DataError(
                f"machine type folder {str(folder)!r} has no .wav files in "
                f"{edition.split_help}; expected {edition.layout}"
            )
        for folder_split, paths in found.items():
            if not paths:
                name = edition.splits[folder_split]
                raise DataError(
                    f"{name}/ folder {str(folder / name)!r} of machine type "
                    f"{folder.name!r} has no .wav files; expected its {folder_split} clips "
                    f"(add them, or remove the empty folder), as in {edition.layout}"
                )
        files += [
            (edition.dataset_of(folder), folder.name, folder_split, path)
            for folder_split, paths in found.items()
            if split in (None, folder_split)
            for path in paths
        ]
    return files


def _check_header(path: Path, channels: int, sample_rate: int, frames: int, expected: dict) -> None:
    """Refuse a clip whose WAV header breaks ``expected`` (``sample_rate``: Hz or None for any;
    ``min_seconds``; ``editions``: those the tree may be, fewest channels first, whose largest
    channel map bounds the channels): a DataError naming the file and what was expected."""
    wanted_rate = expected["sample_rate"]
    if wanted_rate is not None and sample_rate != wanted_rate:
        raise DataError(
            f"{str(path)!r} has sample rate {sample_rate} Hz, but {wanted_rate} Hz was expected; "
            f"resample the clip to {wanted_rate} Hz, the rate of every DCASE edition (from "
            "Python, index_dataset(sample_rate=None) indexes clips of any rate)"
        )
    family = expected["editions"]
    if channels > len(family[-1].channels):
        kinds = " or ".join(f"{len(e.channels)} ({e.channel_help})" for e in family)
        chosen = f" (data.edition: {family[0].name})" if len(family) == 1 else ""
        raise DataError(f"{str(path)!r} has {channels} channels; expected {kinds}{chosen}")
    if frames < expected["min_seconds"] * sample_rate:
        raise DataError(
            f"{str(path)!r} lasts {frames / sample_rate:.3f} s ({frames} frames at "
            f"{sample_rate} Hz); expected at least {expected['min_seconds']:g} s, the shortest "
            "clip the front-ends accept: remove the clip or give it its whole recording (from "
            "Python, index_dataset(min_seconds=...) sets this floor)"
        )


def _header_row(
    dataset: str, machine_type: str, folder_split: str, path: Path, expected: dict
) -> dict:
    """One clip-table row (:data:`COLUMNS`) from a clip's name, folder and WAV header; every
    refusal (misnamed, misfiled, corrupt, wrong rate, too many channels, too short) a
    DataError. ``expected``: as :func:`_check_header`; its first edition reads the names."""
    layout = expected["editions"][0]
    fields = parse_file_name(path, layout)
    if fields["split"] not in (None, folder_split):
        raise DataError(
            f"{str(path)!r} is named as a {fields['split']} clip but lies in "
            f"{layout.splits[folder_split]}/"
        )
    with _open_checked(path) as audio:
        channels, sample_rate, frames = audio.channels, audio.samplerate, audio.frames
    _check_header(path, channels, sample_rate, frames, expected)
    return {
        **fields,
        "dataset": dataset,
        "machine_type": machine_type,
        "split": folder_split,
        "file_name": path.name,
        "path": str(path),
        "channels": channels,
        "sample_rate": sample_rate,
        "duration": frames / sample_rate,
        "frames": frames,
    }


def _sample_blocks(audio: sf.SoundFile) -> Iterator[np.ndarray]:
    """The samples of an open clip as float32 blocks of shape ``(frames, channels)``, in order:
    :data:`SCAN_FIRST_FRAMES` frames, then :data:`SCAN_BLOCK_FRAMES` at a time, so a long clip
    is never held whole (nor as float64)."""
    size = SCAN_FIRST_FRAMES
    while len(block := audio.read(size, dtype="float32", always_2d=True)):
        yield block
        size = SCAN_BLOCK_FRAMES


def scan_samples(path: str | os.PathLike) -> dict:
    """What one read of a clip's samples finds: ``{"silent": bool, "nonfinite": None | {"frame":
    int, "channel": int, "value": "nan" | "inf" | "-inf"}}`` (the first non-finite sample).

    ``silent`` is True when every sample is exactly 0. Only float WAVs (:data:`FLOAT_SUBTYPES`)
    can hold NaN or inf, so for integer PCM (every DCASE clip) the read stops at the first
    non-zero sample; a float WAV is read to its end (or its first non-finite sample).
    """
    path = Path(path)
    nonfinite, silent, start = None, True, 0
    try:
        with sf.SoundFile(path) as audio:
            full_read = audio.subtype in FLOAT_SUBTYPES
            for block in _sample_blocks(audio):
                bad = ~np.isfinite(block)
                if bad.any():
                    frame, channel = np.argwhere(bad)[0]
                    value = str(block[frame, channel]).lower()
                    nonfinite = {"frame": start + int(frame), "channel": int(channel)}
                    nonfinite["value"] = value
                    silent = False
                    break
                silent = silent and not block.any()
                if not (silent or full_read):
                    break
                start += len(block)
    except (sf.SoundFileError, RuntimeError) as err:
        raise DataError(f"cannot read the audio of {str(path)!r} ({err})") from err
    return {"silent": silent, "nonfinite": nonfinite}


def sample_cache_path(cache_dir: str | os.PathLike, data_root: str | os.PathLike) -> Path:
    """The sample-check cache file of ``data_root`` in ``cache_dir``:
    ``sample_checks_<first 16 hex digits of SHA-256 of the absolute data_root>.json``."""
    root = str(Path(data_root).expanduser().absolute())
    digest = hashlib.sha256(root.encode()).hexdigest()[:16]
    return Path(cache_dir).expanduser().absolute() / f"sample_checks_{digest}.json"


def _load_sample_cache(path: Path | None, data_root: Path) -> dict[str, dict]:
    """Cached sample checks by clip path (``{"size", "mtime_ns", "silent", "nonfinite"}``), or
    {} when there is no cache, or it is unreadable, of another version or of another root."""
    if path is None or not path.is_file():
        return {}
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if (
        not isinstance(stored, dict)
        or stored.get("version") != SAMPLE_CACHE_VERSION
        or stored.get("data_root") != str(data_root)
        or not isinstance(stored.get("clips"), dict)
    ):
        return {}
    return stored["clips"]


def _sample_cache_file(cache_dir: str | os.PathLike | None, data_root: Path) -> Path | None:
    """:func:`sample_cache_path`, or None without ``cache_dir``; a ValueError when it would lie
    inside ``data_root`` (only ever read)."""
    if cache_dir is None:
        return None
    path = sample_cache_path(cache_dir, data_root)
    if path.resolve().is_relative_to(data_root.resolve()):
        raise ValueError(
            f"cache_dir {str(cache_dir)!r} lies inside data_root {str(data_root)!r}, which is "
            "only read; put the cache elsewhere (e.g. under the output root)"
        )
    return path


def _cached_result(entry: object, stat: os.stat_result) -> dict | None:
    """A cache entry if it is well-formed and its file still has its size and mtime_ns, else
    None (the file is read again)."""
    keys = {"size", "mtime_ns", "silent", "nonfinite"}
    if not isinstance(entry, dict) or not keys <= entry.keys():
        return None
    same_file = (entry["size"], entry["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns)
    return entry if same_file else None


def _check_samples(table: pd.DataFrame, data_root: Path, cache_path: Path | None) -> None:
    """Read the samples of every clip of ``table`` not in the cache file ``cache_path`` (None =
    no cache; fingerprint: path, size, mtime_ns), update the cache, then refuse the first clip
    with NaN / inf samples (a DataError) and warn (:class:`DataWarning`) about silent ones."""
    cached = _load_sample_cache(cache_path, data_root)
    results, missing = {}, []
    for path in table["path"]:
        stat = os.stat(path)
        entry = _cached_result(cached.get(path), stat)
        if entry is not None:
            results[path] = entry
        else:
            missing.append((path, stat))
    for path, stat in _progress(missing, "checking samples"):
        results[path] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, **scan_samples(path)}
    if cache_path is not None and missing:
        stored = {"version": SAMPLE_CACHE_VERSION, "data_root": str(data_root)}
        stored["clips"] = {**cached, **results}
        atomic_write_text(cache_path, json.dumps(stored, separators=(",", ":")))
    _judge_samples(table, results)


def _judge_samples(table: pd.DataFrame, results: dict[str, dict]) -> None:
    """Refuse the first clip (table order) whose samples hold NaN / inf, naming it, the first
    bad sample and how many other clips have some; warn about each silent clip."""
    bad = [(row, results[row.path]["nonfinite"]) for row in table.itertuples()]
    bad = [(row, found) for row, found in bad if found]
    if bad:
        row, found = bad[0]
        others = f"; {len(bad) - 1} more clip(s) have some too" if len(bad) > 1 else ""
        raise DataError(
            f"{row.path!r} holds NaN or infinite samples (first: {found['value']} at "
            f"{found['frame'] / row.sample_rate:.4f} s, frame {found['frame']}, channel "
            f"{found['channel']}); expected finite audio{others}"
        )
    silent = [path for path in table["path"] if results[path]["silent"]]
    for path in silent[:MAX_SILENT_WARNINGS]:
        warnings.warn(
            f"{path!r} is silent (every sample is exactly 0): a dead microphone or a failed "
            "export? It is indexed all the same",
            DataWarning,
            stacklevel=4,
        )
    if len(silent) > MAX_SILENT_WARNINGS:
        warnings.warn(
            f"{len(silent) - MAX_SILENT_WARNINGS} more silent clips (every sample exactly 0)",
            DataWarning,
            stacklevel=4,
        )


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
    """One row per clip under ``data_root`` (columns :data:`COLUMNS`), every clip checked.

    The tree is read as ``edition`` lays it out (a name of
    :data:`~asd_utils.data.editions.EDITIONS`, or ``auto``: detected, :func:`edition_of`). The
    DCASE editions accept ``dev_data/raw/<machine_type>/{train,test}``,
    ``eval_data/raw/<machine_type>/...`` (both are indexed when both exist) or a bare
    ``<machine_type>/{train,test}`` tree; clips are the ``.wav`` files (any letter case of the
    extension). ``dataset`` is ``"dev"`` or ``"eval"`` (:meth:`Edition.dataset_of`). ``split``
    comes from the folder (anonymous eval names carry none); ``channels``, ``sample_rate``,
    ``frames`` and ``duration`` (seconds) come from each WAV header. Rows are sorted by
    machine_type (case-insensitively), split and file_name. ``split`` ("train" or "test") and
    ``machine_types`` filter the table.

    Refused up front, each with a DataError naming the file or folder and what was expected: a
    malformed name, a clip in the wrong split folder, a corrupt or truncated file, a sample rate
    other than ``sample_rate`` Hz (None = any), more channels than the edition's channel map
    (``auto``: 2), a clip shorter than
    ``min_seconds`` (default :data:`MIN_SECONDS`, the front-ends' floor), an existing but empty
    ``train/`` or ``test/`` folder, a clip found twice, and (``check_samples``) NaN or infinite
    samples. A silent clip (every sample exactly 0) is a :class:`DataWarning`.

    The sample checks read each clip (:func:`scan_samples`) once: with ``cache_dir`` their
    results are kept in :func:`sample_cache_path` (never inside ``data_root``, which is only
    read), keyed by each file's path, size and mtime_ns, so indexing the same tree again reads
    WAV headers only; without it every call reads the samples again.
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


def _refuse_duplicates(table: pd.DataFrame, data_root: Path) -> None:
    """A DataError for the first clip found twice: the same file name in one machine type and
    split (dev and eval trees both under ``data_root``), or two names in one folder that differ
    only in letter case (``x.wav`` and ``x.WAV``)."""
    duplicated = table.duplicated(["machine_type", "split", "file_name"])
    if duplicated.any():
        first = table.loc[duplicated.idxmax()]
        raise DataError(
            f"clip {first.file_name!r} of {first.machine_type} ({first.split}) appears twice "
            f"under {str(data_root)!r}; point data_root at dev_data/raw or eval_data/raw"
        )
    folder_and_name = table["path"].map(os.path.dirname) + "/" + table["file_name"].str.lower()
    twice = folder_and_name.duplicated()
    if twice.any():
        key = folder_and_name[twice].iloc[0]
        first, second = table.loc[folder_and_name == key, "path"].iloc[:2]
        raise DataError(
            f"{first!r} and {second!r} are one clip twice (their names differ only in letter "
            "case); keep one of them"
        )


def check_machine_types(table: pd.DataFrame) -> None:
    """Refuse a clip table (:func:`index_dataset`) that the stages cannot use, before any runs:
    a DataError naming the machine type, its folder and what is missing.

    Every system trains (or fits its normal model and decision threshold) on a machine type's
    training clips and scores its test clips, so each machine type needs both ``train/`` and
    ``test/`` clips, and training clips of both domains (the selective Mahalanobis score and
    the per-domain back ends fit one model per domain; DCASE gives every section ~990 source
    and 10 target training clips).
    """
    for machine_type, group in table.groupby("machine_type", sort=False):
        folder = os.path.dirname(os.path.dirname(group["path"].iloc[0]))
        for split in SPLITS:
            if not (group["split"] == split).any():
                raise DataError(
                    f"machine type {machine_type!r} ({folder}) has no {split} clips; every "
                    f"system needs its train and test clips: add {folder}/{split}/*.wav, or "
                    "remove the machine type"
                )
        domains = group.loc[group["split"] == "train", "domain"].value_counts()
        for domain in ("source", "target"):
            if domains.get(domain, 0) == 0:
                found = ", ".join(f"{n} {d}" for d, n in domains.items()) or "none named"
                raise DataError(
                    f"machine type {machine_type!r} ({folder}) has no {domain}-domain training "
                    f"clips (found {found}); the scores are fitted per domain, so each machine "
                    f"type needs section_<NN>_{domain}_train_normal_<NNNN>.wav clips in train/"
                )


def read_audio(
    path: str | os.PathLike,
    channels: int | None = None,
    expected_sample_rate: int | None = 16000,
) -> np.ndarray:
    """Read one clip as float32 of shape ``(channels, samples)``.

    16-bit PCM is scaled by 1/32768, so values lie in [-1, 1). ``channels=None`` returns what the
    file holds; ``channels=2`` requires a stereo file (2026: row 0 near mic, row 1 far mic);
    ``channels=1`` returns channel 0 only, which for 2026 stereo clips is the near microphone and
    for mono clips the clip itself. ``expected_sample_rate=None`` accepts any rate.
    """
    if channels not in (None, 1, 2):
        raise ValueError(f"channels must be None, 1 or 2, not {channels!r}")
    path = Path(path)
    with _open_checked(path) as audio:
        if expected_sample_rate is not None and audio.samplerate != expected_sample_rate:
            raise DataError(
                f"{str(path)!r} has sample rate {audio.samplerate} Hz, "
                f"but {expected_sample_rate} Hz was expected"
            )
        if channels == 2 and audio.channels != 2:
            found = (
                "is mono (1 channel)" if audio.channels == 1 else f"has {audio.channels} channels"
            )
            raise DataError(
                f"{str(path)!r} {found} but 2 channels (near, far) were expected — 2026 data is "
                "stereo; earlier editions are mono (pass channels=1 or None to read them)"
            )
        try:
            data = audio.read(dtype="float32", always_2d=True)
        except (sf.SoundFileError, RuntimeError) as err:
            raise DataError(f"cannot read the audio of {str(path)!r} ({err})") from err
    if channels == 1:
        data = data[:, :1]
    return np.ascontiguousarray(data.T)


def read_clips(
    paths: Sequence[str | os.PathLike],
    channels: int | None = None,
    length: int | None = None,
    expected_sample_rate: int | None = 16000,
) -> np.ndarray:
    """Read many clips into one float32 array of shape ``(batch, channels, samples)``.

    With ``length`` (in samples) each clip is cropped to its first ``length`` samples or padded
    with zeros at the end; without it all clips must be equally long. All clips must have the same
    number of channels (pass ``channels=1`` to take the near mic of a mixed mono/stereo set).
    """
    paths = list(paths)
    if not paths:
        raise DataError("read_clips was given no paths")
    batch = None
    for i, path in enumerate(
        tqdm(
            paths,
            desc="reading clips",
            unit="clip",
            disable=len(paths) <= PROGRESS_MIN or not errors.progress_bars(),
        )
    ):
        clip = read_audio(path, channels=channels, expected_sample_rate=expected_sample_rate)
        if batch is None:
            batch = np.zeros((len(paths), clip.shape[0], length or clip.shape[1]), np.float32)
        if clip.shape[0] != batch.shape[1]:
            raise DataError(
                f"{str(path)!r} has {clip.shape[0]} channel(s) but {str(paths[0])!r} has "
                f"{batch.shape[1]}; pass channels=1 to read channel 0 (near mic) of every clip"
            )
        if length is None and clip.shape[1] != batch.shape[2]:
            raise DataError(
                f"{str(path)!r} has {clip.shape[1]} samples but {str(paths[0])!r} has "
                f"{batch.shape[2]}; pass length= to crop or zero-pad every clip to one length"
            )
        n = min(clip.shape[1], batch.shape[2])
        batch[i, :, :n] = clip[:, :n]
    return batch


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


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int = 16000) -> Path:
    """Write float ``audio`` of shape ``(channels, samples)`` (or ``(samples,)`` for mono) as
    16-bit PCM WAV, atomically. Values are clipped to [-1, 1) and quantised as
    ``round(x * 32768)``, so :func:`read_audio` gives them back to within 1/65536."""
    audio = np.asarray(audio, dtype=np.float64)
    if audio.ndim == 1:
        audio = audio[np.newaxis]
    if audio.ndim != 2 or audio.shape[1] == 0 or audio.shape[0] > 8:
        raise DataError(
            f"audio for {str(path)!r} has shape {audio.shape}; expected (channels, samples) "
            "with at most 8 channels"
        )
    if not np.isfinite(audio).all():
        raise DataError(f"audio for {str(path)!r} contains NaN or infinite values")
    pcm = np.clip(np.round(audio * 32768), -32768, 32767).astype(np.int16)
    with atomic_path(path) as tmp:
        sf.write(tmp, pcm.T, sample_rate, subtype="PCM_16", format="WAV")
    return Path(path)


def attribute_classes(table: pd.DataFrame, by_domain: bool = False) -> tuple[np.ndarray, list[str]]:
    """The classes the margin classifier learns: one per (machine_type, section, attributes).

    Returns ``(class_ids, class_names)``: int64 ids of shape ``(len(table),)``, aligned with the
    rows, and the sorted names, so ``class_names[class_ids[i]]`` names row i's class. A name is
    ``"<machine_type>/<section>/<attributes>"``, or ``"<machine_type>/<section>"`` for clips
    without attributes (then the whole section is one class); ``by_domain`` appends
    ``"/<domain>"``. The XJU paper's "number of classes 80" is whatever this gives on its data
    (xju-system.md): derived from the table, never typed in. Sorting makes the ids deterministic.
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
