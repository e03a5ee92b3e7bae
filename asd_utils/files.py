"""Atomic file output: a crash never leaves a half-written file that looks complete."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


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


def write_table(table, path: str | os.PathLike) -> Path:
    """Write a pandas DataFrame as CSV (with header, no index) atomically; return the path."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    return Path(path)
