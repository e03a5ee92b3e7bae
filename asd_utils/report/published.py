"""Others' published results on the real DCASE 2026 Task 2 data, for the book to show beside
this project's (which are on synthetic data): read from the package file
``asd_utils/reference/published_2026.csv``, never typed into a chapter.

Each row is one published official score (hmean %, dev and/or eval) with the pipeline that made
it (``step``: encoder and pooling; ``front_end``: :mod:`asd_utils.frontends.twochannel`'s view
names; ``back_end``) and its ``source``. No torch here: the book reads it.
"""

from __future__ import annotations

from importlib import resources

import pandas as pd

PUBLISHED = "published_2026.csv"
TABLES = ("front_ends", "ladder", "systems")
COLUMNS = ("step", "front_end", "back_end", "dev", "eval", "source")
OTHERS = (
    "Others' results on the real DCASE 2026 Task 2 data with official pre-trained weights "
    "(official score, hmean %, as published: not run here)"
)


def published(table: str) -> pd.DataFrame:
    """The rows of one published ``table`` (:data:`TABLES`: ``front_ends``, System 0-6's front
    ends on frozen BEATs; ``ladder``, MERL's back-end ladder on frozen BEATs; ``systems``, whole
    systems), columns :data:`COLUMNS`, in the file's order; ``dev`` / ``eval`` NaN where the
    source states none."""
    if table not in TABLES:
        raise ValueError(f"unknown published table {table!r}; choose one of {list(TABLES)}")
    source = resources.files("asd_utils") / "reference" / PUBLISHED
    with source.open("r", encoding="utf-8") as f:
        rows = pd.read_csv(f, comment="#", dtype={"front_end": str, "back_end": str})
    part = rows[rows["table"] == table].reset_index(drop=True)
    return part[list(COLUMNS)].fillna({"front_end": "", "back_end": ""})


def shown(table: str) -> pd.DataFrame:
    """:func:`published` as a chapter shows it, narrow enough for the column: the scores as
    printed ("–" where none is stated), without the sources (:func:`sources` says them)."""
    frame = published(table).drop(columns="source")
    frame = frame.rename(columns={"front_end": "front end", "back_end": "back end"})
    for column in ("dev", "eval"):
        frame[column] = frame[column].map(lambda v: "–" if pd.isna(v) else f"{v:.2f}")
    return frame


def sources(table: str) -> str:
    """One sentence naming where the rows of ``table`` come from (each source once)."""
    names = list(dict.fromkeys(published(table)["source"]))
    return f"{OTHERS}. Sources: {'; '.join(names)}."
