"""DCASE Task 2 clip names and trees: the clip table's columns, parsing a clip name and its
attributes, and walking a tree as its edition (:mod:`asd_utils.data.editions`) lays it out.
Bad input is a :class:`DataError` naming the file or folder and what was expected."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from asd_utils import errors
from asd_utils.data import editions
from asd_utils.data.editions import AUTO, Edition
from asd_utils.errors import UserError

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


SAMPLE_RATE = 16000  # Hz, every DCASE edition


def _progress(items: Sequence, desc: str):
    """A progress bar over many files, shown only when the loop is slow (a fast local disk
    indexes thousands of clips in a second)."""
    hidden = len(items) <= PROGRESS_MIN or not errors.progress_bars()
    return tqdm(items, desc=desc, unit="file", disable=hidden, delay=PROGRESS_DELAY)


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
    """The paths of every clip under ``data_root`` as :func:`~asd_utils.data.manifest.index_dataset`
    names them (same ``edition``), from a folder listing alone (no file is opened)."""
    root = Path(data_root).expanduser().absolute()
    layout = _layout(root, edition)
    return [str(path) for *_, path in _clip_files(_machine_type_dirs(root, layout), None, layout)]


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
