"""DCASE Task 2 editions as data: one :class:`Edition` per layout of a data tree, in one table.

An edition says where a tree keeps its clips (the folder of each ``dataset``, ``dev`` and
``eval``, under the data root; a bare ``<machine_type>/`` tree counts as one dataset), how a
machine type folder names its ``train`` and ``test`` folders, the clip-name pattern, what each
audio channel is (the channel map) and where the ground truth lies. :data:`EDITIONS` holds the
editions there are; the profile's ``data.edition`` names one, or ``auto`` (the default) detects
it from the tree: its folders choose the layout, and among editions of one layout the clips'
channel counts choose the channel map (:func:`choose`). A new edition is one more entry.
Nothing here reads audio or raises on bad data: :mod:`asd_utils.data` walks a tree with the
edition it is given. torch-free.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from asd_utils.errors import UserError

AUTO = "auto"  # the profile's data.edition when the tree decides

DCASE_NAMES = re.compile(
    r"""
    ^section_(?P<section>\d+)_
    (?:
        (?P<domain>source|target)_(?P<split>train|test)_(?P<label>normal|anomaly)_(?P<index>\d+)
        (?:_(?P<attributes>[^_\s](?:\S*[^_\s])?))?
      | (?P<anonymous_index>\d+)
    )
    \.(?i:wav)$
    """,
    re.VERBOSE,
)
DCASE_NAME_HELP = (
    "section_<NN>_<source|target>_<train|test>_<normal|anomaly>_<NNNN>[_<key>_<value>...].wav "
    "or section_<NN>_<NNNN>.wav (.wav in any letter case)"
)
FIELDS = ("section", "domain", "split", "label", "index", "attributes")
GROUND_TRUTH = ("names",)  # the kinds of ground truth the indexing knows (test names' fields)


@dataclass(frozen=True, eq=False)
class Edition:
    """One DCASE data layout.

    ``datasets``: dataset (``dev``/``eval``) -> its folder under the data root, holding one
    folder per machine type (``dev_data/raw``); ``bare``: the dataset of a tree whose machine
    type folders lie directly in the data root (None: not accepted). ``splits``: split
    (``train``/``test``) -> its folder name in a machine type folder. ``pattern``: a clip name,
    matched whole, with named groups ``section`` and ``index`` (or ``anonymous_index``) and
    optionally ``domain``, ``split``, ``label``, ``attributes`` in the package's words
    (``source``, ``normal`` ...); ``name_help`` says it in words. ``channels``: the microphone
    of each channel (a clip may hold fewer, never more); ``channel_help`` says it in words.
    ``ground_truth``: where a test clip's domain and label come from: ``"names"`` (the labelled
    dev names; eval names are anonymous, so eval test clips get no metrics).
    """

    name: str
    datasets: dict[str, str]
    splits: dict[str, str]
    channels: tuple[str, ...]
    channel_help: str
    pattern: re.Pattern = DCASE_NAMES
    name_help: str = DCASE_NAME_HELP
    bare: str | None = "dev"
    ground_truth: str = "names"

    def __post_init__(self):
        if self.ground_truth not in GROUND_TRUTH:
            raise ValueError(
                f"{self.name}: ground_truth {self.ground_truth!r}: one of {GROUND_TRUTH}"
            )

    @property
    def layout(self) -> str:
        """The folders this edition reads, in words (for error messages)."""
        splits = ",".join(self.splits.values())
        places = [f"<data_root>/{folder}/<machine_type>" for folder in self.datasets.values()]
        places += ["<data_root>/<machine_type>"] if self.bare else []
        places = [f"{place}/{{{splits}}}/*.wav" for place in places]
        return ", ".join(places[:-1]) + f", or {places[-1]}" if len(places) > 1 else places[0]

    @property
    def split_help(self) -> str:
        """The split folders in words: ``train/ or test/``."""
        return " or ".join(f"{folder}/" for folder in self.splits.values())

    def same_layout(self, other: Edition) -> bool:
        """True when ``other`` reads the same folders and names (it may map channels otherwise)."""
        mine = (self.datasets, self.splits, self.pattern.pattern, self.bare)
        return mine == (other.datasets, other.splits, other.pattern.pattern, other.bare)

    def parse(self, name: str | os.PathLike) -> dict | None:
        """The fields (:data:`FIELDS`) of a clip name (its last path component), or None when
        the name does not match :attr:`pattern`; ``attributes`` is "" when absent or
        ``noAttribute``; a field the pattern lacks is None."""
        match = self.pattern.match(Path(name).name)
        if match is None:
            return None
        found = match.groupdict()
        attributes = found.get("attributes") or ""
        return {
            "section": found["section"],
            "domain": found.get("domain"),
            "split": found.get("split"),
            "label": found.get("label"),
            "index": int(found.get("index") or found["anonymous_index"]),
            "attributes": "" if attributes == "noAttribute" else attributes,
        }

    def roots(self, data_root: Path) -> list[Path]:
        """The folders of machine type folders under ``data_root``: each dataset folder that
        exists, else ``data_root`` itself (a bare tree) when :attr:`bare` allows it."""
        found = [data_root / folder for folder in self.datasets.values()]
        found = [root for root in found if root.is_dir()]
        return found or ([data_root] if self.bare else [])

    def dataset_of(self, folder: Path) -> str:
        """The dataset of a machine type ``folder``: the one whose folder path ends its parent
        (``.../eval_data/raw/ToyDrone`` is ``eval``), else :attr:`bare`."""
        parent = folder.parent.parts
        for dataset, path in self.datasets.items():
            parts = Path(path).parts
            if parent[-len(parts) :] == parts:
                return dataset
        return self.bare or next(iter(self.datasets))

    def too_deep(self, data_root: Path) -> tuple[str, Path] | None:
        """``(what it holds, the root to give instead)`` when ``data_root`` is a folder inside
        a tree of this edition (part of a dataset folder's path, a dataset folder when a bare
        tree is not accepted, or a machine type folder); else None."""
        for path in self.datasets.values():
            parts = Path(path).parts
            for k in range(1, len(parts)):
                if (data_root / Path(*parts[k:])).is_dir():
                    return f"{parts[k]}/", data_root.parents[k - 1]
            if not self.bare and data_root.parts[-len(parts) :] == parts:  # a dataset folder
                return "machine type folders", data_root.parents[len(parts) - 1]
        if not any((data_root / folder).is_dir() for folder in self.splits.values()):
            return None
        parent = data_root.parent
        for path in self.datasets.values():
            parts = Path(path).parts
            if parent.parts[-len(parts) :] == parts:
                return self.split_help, parent.parents[len(parts) - 1]
        return self.split_help, parent

    def finds(self, data_root: Path) -> bool:
        """True when ``data_root`` holds one of this edition's dataset folders, or (bare) a
        folder holding one of its split folders."""
        if any((data_root / folder).is_dir() for folder in self.datasets.values()):
            return True
        if not self.bare or not data_root.is_dir():
            return False
        children = (p for p in data_root.iterdir() if p.is_dir() and p.name[0] != ".")
        return any((child / s).is_dir() for child in children for s in self.splits.values())


_DCASE_DATASETS = {"dev": "dev_data/raw", "eval": "eval_data/raw"}
_DCASE_SPLITS = {"train": "train", "test": "test"}

EDITIONS: dict[str, Edition] = {
    "dcase2026": Edition(
        name="dcase2026",
        datasets=_DCASE_DATASETS,
        splits=_DCASE_SPLITS,
        channels=("near", "far"),
        channel_help="stereo, 2026: channel 0 near microphone, channel 1 far microphone",
    ),
    "dcase2022-2025": Edition(
        name="dcase2022-2025",
        datasets=_DCASE_DATASETS,
        splits=_DCASE_SPLITS,
        channels=("near",),
        channel_help="mono, editions before 2026",
    ),
}
"""The editions there are, the preferred first (auto detection tries them in this order).
2020 (``normal_id_<NN>_<NNNNNNNN>.wav`` names, no domains) and 2021 (``source_test/`` and
``target_test/`` folders) are not entries; 2022-2025 mono clips equal the 2026 near mic."""


def get(name: str) -> Edition:
    """The edition called ``name``; an unknown name is a UserError listing the known ones."""
    if name not in EDITIONS:
        known = ", ".join([AUTO, *EDITIONS])
        raise UserError(f"data.edition: unknown edition {name!r}; known: {known}")
    return EDITIONS[name]


def family(data_root: str | os.PathLike, name: str = AUTO) -> list[Edition]:
    """The editions ``data_root`` may be read as: ``[get(name)]``, or for :data:`AUTO` every
    edition of the layout first found in the tree (table order; else of the first edition
    whose tree holds ``data_root``, so that it is refused as too deep; else the first edition's
    layout), fewest channels first. The first of them reads the tree."""
    if name != AUTO:
        return [get(name)]
    root = Path(data_root).expanduser()
    table = list(EDITIONS.values())
    first = next((edition for edition in table if edition.finds(root)), None)
    first = first or next((edition for edition in table if edition.too_deep(root)), table[0])
    same = [edition for edition in table if edition.same_layout(first)]
    return sorted(same, key=lambda edition: len(edition.channels))


def choose(data_root: str | os.PathLike, name: str = AUTO, channels: int = 1) -> Edition:
    """The edition of a tree whose clips hold at most ``channels`` channels: the first of
    :func:`family` whose channel map holds that many (the last when none does)."""
    candidates = family(data_root, name)
    return next((e for e in candidates if len(e.channels) >= channels), candidates[-1])
