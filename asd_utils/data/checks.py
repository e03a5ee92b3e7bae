"""The checks of every clip a tree holds: its name, folder and WAV header, its samples (NaN,
inf, silence; cached by path, size and mtime), duplicates, and what each machine type needs."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from asd_utils.data.audio import _open_checked
from asd_utils.data.dcase import SPLITS, DataError, DataWarning, _progress, parse_file_name
from asd_utils.files import atomic_write_text

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
    """One clip-table row (:data:`~asd_utils.data.dcase.COLUMNS`) from a clip's name, folder and WAV
    header; every refusal (misnamed, misfiled, corrupt, wrong rate, too many channels, too short) a
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
    """Refuse a clip table (:func:`~asd_utils.data.manifest.index_dataset`) that the stages cannot
    use, before any runs: a DataError naming the machine type, its folder and what is missing.

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
