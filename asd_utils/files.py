"""Atomic file output: a crash never leaves a half-written file that looks complete."""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from asd_utils.errors import RunError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it onto ``path`` in one step.

    Write to the yielded path (with any library); if the block raises, the temporary file is
    removed and ``path`` is left as it was. The final ``os.replace`` is atomic on POSIX.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


FORMULA_START = "=+-@\t\r"
"""What starts a cell a spreadsheet runs as a formula (OWASP's CSV injection list)."""


def _text_cells(column, pattern: str):
    """Which cells of ``column`` are text matching ``pattern`` at their start."""
    import pandas as pd  # only where tables are written: the light modules import this one

    if not (column.dtype == object or pd.api.types.is_string_dtype(column)):
        return None
    text = column.map(lambda value: isinstance(value, str))
    return text & column.where(text, "").astype(str).str.match(pattern)


def escape_formulas(table):
    """``table`` (a pandas DataFrame) with every text cell that starts with one of
    :data:`FORMULA_START` prefixed by ``'``, so that a spreadsheet shows it as text; numbers
    are left alone. :func:`unescape_formulas` undoes it."""
    table = table.copy()
    for name in table.columns:
        cells = _text_cells(table[name], f"[{re.escape(FORMULA_START)}]")
        if cells is not None and cells.any():
            table.loc[cells, name] = "'" + table.loc[cells, name]
    return table


def unescape_formulas(table):
    """``table`` as it was before :func:`escape_formulas` (a CSV read back)."""
    for name in table.columns:
        cells = _text_cells(table[name], f"'[{re.escape(FORMULA_START)}]")
        if cells is not None and cells.any():
            table.loc[cells, name] = table.loc[cells, name].str[1:]
    return table


def write_table(table, path: str | os.PathLike) -> Path:
    """Write a pandas DataFrame as CSV (with header, no index) atomically, its text cells
    escaped against formulas (:func:`escape_formulas`); return the path."""
    with atomic_path(path) as tmp:
        escape_formulas(table).to_csv(tmp, index=False)
    return Path(path)


# --- what the project may overwrite --------------------------------------------------------------

MARKER = ".asd_utils"
"""The file the project writes into a folder it made and may later replace (a submission
package, a synthetic dataset): its name list says what the project wrote there."""


def _within(path: Path, other: Path) -> bool:
    return path == other or other in path.parents


def refuse_protected(path: str | os.PathLike, what: str, protected: dict[str, Path]) -> Path:
    """``path`` (normalised, absolute) unless it is one of ``protected`` (name → folder: the
    output root, the data root, the checkout …) or a parent of one, or lies inside the data
    root; else :class:`~asd_utils.errors.RunError` naming both."""
    path = Path(os.path.normpath(Path(path).expanduser().absolute()))
    for name, folder in protected.items():
        folder = Path(os.path.normpath(Path(folder).absolute()))
        inside = name == "the data root" and _within(path, folder)
        if _within(folder, path) or inside:
            where = "is" if path == folder else "is inside" if inside else "holds"
            raise RunError(
                f"{what} {path} {where} {name} ({folder}); it is never written: choose a new "
                "or empty folder"
            )
    return path


def claim_folder(path: str | os.PathLike, what: str, made: Iterable[str] = ()) -> Path:
    """``path`` if the project may write it whole: new, empty, or holding :data:`MARKER` and
    only the entries the marker lists (or ``made``: what an older version wrote there without a
    marker, passed only when its own proof is there); else :class:`~asd_utils.errors.RunError`
    naming an entry the project did not write."""
    path = Path(path)
    if not path.exists():
        return path
    if not path.is_dir():
        raise RunError(f"{what} {path} is a file, not a folder; it is never overwritten")
    entries = sorted(p.name for p in path.iterdir())
    listed = set(made) | set(_marked(path / MARKER))
    foreign = [name for name in entries if name != MARKER and name not in listed]
    proven = bool(made) or (path / MARKER).is_file()
    if foreign or (entries and not proven):
        raise RunError(
            f"{what} {path} holds files this project did not write (e.g. "
            f"{(foreign or entries)[0]!r}); it is never overwritten or deleted: choose a new or "
            "empty folder"
        )
    return path


def _marked(marker: Path) -> list[str]:
    """The entries a :data:`MARKER` file lists ([] when there is none or it is not ours)."""
    try:
        written = json.loads(marker.read_text())["written"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [name for name in written if isinstance(name, str)] if isinstance(written, list) else []


def write_marker(folder: str | os.PathLike, written: Iterable[str]) -> Path:
    """Mark ``folder`` as the project's (:data:`MARKER`, listing the entries it wrote)."""
    text = json.dumps({"written_by": "asd_utils", "written": sorted(written)}, indent=2)
    return atomic_write_text(Path(folder) / MARKER, text)
