"""What a benchmark says about the machine it ran on: the CPU, its cores, and how busy it was.

A benchmark shares the machine with whatever else runs, and a busy machine is slower: each
benchmark waits (up to ``limit_s``) for the 1-minute load average to fall below ``IDLE``, then
prints the load average before and after it ran, and a warning when the machine was busy when
it started. Numbers taken with that warning are not the machine's; the README's are not.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from pathlib import Path

IDLE = 0.5  # 1-minute load average under which the cores count as idle


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else the platform's processor."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or "unknown model"
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else "unknown model"


def settle(limit_s: float = 120.0) -> float:
    """Wait until the 1-minute load average is under IDLE (at most ``limit_s``); returns it."""
    waited = 0.0
    while os.getloadavg()[0] > IDLE and waited < limit_s:
        time.sleep(5)
        waited += 5
    return os.getloadavg()[0]


@contextlib.contextmanager
def load_recorded(limit_s: float = 120.0):
    """``with load_recorded(): ...``: settle, then print the load before and after the block,
    and a warning when the cores were not idle at the start. Yields a dict that gets
    ``load_before`` and ``load_after`` (for a benchmark that writes its numbers to a file)."""
    before = settle(limit_s)
    record = {"load_before": round(before, 2)}
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} CPUs; load average (1 min) {before:.2f} at start"
    )
    if before > IDLE:
        print(
            f"WARNING: the machine was busy (load {before:.2f} > {IDLE}) after waiting "
            f"{limit_s:.0f} s: these numbers are slower than the machine is"
        )
    try:
        yield record
    finally:
        after = os.getloadavg()[0]
        record["load_after"] = round(after, 2)
        print(
            f"load average (1 min) {after:.2f} at the end (includes this benchmark's own threads)"
        )
