"""Runs that cannot hurt each other: one run at a time per output root, and what a run is doing.

A run (the pipeline, the training command) holds :class:`OutputLock` on its output root for as
long as it writes there: the file ``<output_root>/.run.lock`` holds the holder's pid, host,
start time and command, and an exclusive ``flock`` on it lasts exactly as long as the holder's
process (the kernel releases it when the process ends, however it ends). A second run into the
same root is refused at once, naming the first; a lock file left by a run that died (killed
outright, a power cut) is recognised, said in one line, and taken over.

:func:`status` reads ``run_record.json`` and the lock file and says in one line what the run in
an output root is doing or how it ended, telling a dead run from a running one.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import platform
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

from asd_utils.errors import RunError

LOCK_NAME = ".run.lock"
RECORD_NAME = "run_record.json"


class OutputBusy(RunError):
    """Another live run holds the output root."""


def check_output_root(output_root: str | os.PathLike) -> Path:
    """Make sure ``output_root`` is a folder this process can write (making it if needed), or
    raise :class:`RunError` naming it: a file in its place, a folder that cannot be made or
    written (read-only, no permission)."""
    root = Path(output_root)
    for part in (root, *root.parents):
        if part.exists() and not part.is_dir():
            raise RunError(
                f"output root {root} cannot be used: {part} is a file, not a folder; "
                "choose another --output-root"
            )
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunError(
            f"output root {root} cannot be made ({err.strerror}); choose another --output-root"
        ) from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise RunError(
            f"output root {root} is not writable (read-only or no permission); "
            "choose another --output-root"
        )
    return root


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def describe_holder(holder: dict) -> str:
    """``pid 123 on host h since 2026-05-01T10:00:00+00:00 (asd report --profile quick)``."""
    command = holder.get("command") or "unknown command"
    return (
        f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since "
        f"{holder.get('started', '?')} ({command})"
    )


def _read_holder(path: Path) -> dict:
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


class OutputLock:
    """An exclusive lock on an output root for one run (a context manager).

    ``acquire`` refuses with :class:`OutputBusy` (one line naming the holder: pid, host, start,
    command) when a live process holds it; a lock file whose process is gone is taken over, and
    ``taken_over`` then holds what it said (the caller says so in one line). The lock file is
    removed on release. ``command`` defaults to this process's command line. The output root is
    checked (:func:`check_output_root`) and made first.
    """

    def __init__(self, output_root: str | os.PathLike, command: str | None = None) -> None:
        self.path = Path(output_root) / LOCK_NAME
        self.command = command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])
        self.taken_over: dict | None = None
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        check_output_root(self.path.parent)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                holder = _read_holder(self.path)
                raise OutputBusy(
                    f"output root {self.path.parent} is in use by another run: "
                    f"{describe_holder(holder)}; wait for it to end, or choose another "
                    "--output-root"
                ) from None
            try:  # the file we locked is still the lock file (not one a holder just removed)
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        earlier = _read_holder(self.path)
        if earlier:  # written by a process that ended without releasing: a dead run
            self.taken_over = earlier
        holder = {
            "pid": os.getpid(),
            "host": platform.node(),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": self.command,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def takeover_note(holder: dict, output_root: str | os.PathLike) -> str:
    """One line on a lock taken over from a run that ended without releasing it (killed
    outright), with the chapter its record was in when it died."""
    record = _read_holder(Path(output_root) / RECORD_NAME)
    died = ""
    if record.get("status") == "running":
        chapter = record.get("chapter")
        died = f" in chapter {chapter}" if chapter and chapter != "notebooks" else ""
        died = f"; its record said running{died}, last written {record.get('written', '?')}"
    return (
        f"an earlier run into {output_root} died without finishing ({describe_holder(holder)}"
        f"{died}); took over its lock"
    )


def status(output_root: str | os.PathLike) -> str:
    """One line on the run in ``output_root``: running (pid, chapter; a stage command such as
    ``asd train``, which keeps no record, by its lock), finished, failed, interrupted — or dead:
    a record that says ``running`` while no process holds the lock (killed outright). "no run"
    when there is no record and no live lock."""
    root = Path(output_root)
    record = _read_holder(root / RECORD_NAME)
    holder = _read_holder(root / LOCK_NAME)
    state = record.get("status", "unknown")
    if holder_alive(holder) and state != "running":  # a stage command (it keeps no record)
        last = f"; the last recorded run: {state}" if record else ""
        return f"{root}: running: {describe_holder(holder)}{last}"
    if not record:
        return f"{root}: no run recorded"
    chapter = record.get("chapter")
    when = record.get("written", "?")
    if state != "running":
        return f"{root}: {state} (recorded {when})"
    if holder_alive(holder):
        where = f" in chapter {chapter}" if chapter else ""
        return f"{root}: running{where}: {describe_holder(holder)}"
    where = f" in chapter {chapter}" if chapter else ""
    return (
        f"{root}: dead: its record says running{where} (last written {when}) but no process "
        "holds its lock (killed outright?); run the same command to resume"
    )


def holder_alive(holder: dict) -> bool:
    """Whether the lock holder ``holder`` (the lock file's contents) still runs: its pid
    exists on this host; a holder on another host (a shared file system) counts as alive, since
    it cannot be checked from here; no holder is not alive."""
    if not holder.get("pid"):
        return False
    if holder.get("host") != platform.node():
        return True
    return _alive(int(holder["pid"]))
