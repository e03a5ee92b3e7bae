"""What machine made the numbers: the CPU's model, the flags that change speed or numerics, and
the BLAS torch multiplies with, for ``run_record.json`` (the book's run table shows it).

The same profile and seed give different official scores on different CPUs (float32 sums in
another order: measured, quick profile, System 5 53.12 on an AMD EPYC against 51.34 on an Intel
Xeon), so every number is stated "on this CPU" and the record names it. Reading the CPU needs no
torch; :func:`describe` asks torch for its BLAS only when torch is already imported (a run that
trained anything), so the light modules stay light.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from pathlib import Path

SPEED_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "sve",
)
"""The CPU flags that change how fast (or in which order, so to the last bit how) a matrix
product runs: x86 vector and matrix units, ARM's NEON (``asimd``) and SVE."""


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name (``/proc/cpuinfo``'s ``model name``), else the platform's processor,
    else ``"unknown"``."""
    text = _cpuinfo() if cpuinfo is None else cpuinfo
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else platform.processor() or "unknown"


def cpu_flags(cpuinfo: str | None = None) -> list[str]:
    """The flags of :data:`SPEED_FLAGS` the CPU reports, in that order (none off Linux)."""
    text = _cpuinfo() if cpuinfo is None else cpuinfo
    found = re.search(r"^(?:flags|Features)\s*:\s*(.+)$", text, re.MULTILINE)
    words = set(found.group(1).split()) if found else set()
    return [flag for flag in SPEED_FLAGS if flag in words]


def cpu_vendor(model: str) -> str:
    """The CPU kind a reader compares by: ``Intel Xeon``, ``AMD EPYC`` … from the model name."""
    for kind in ("Xeon", "EPYC", "Ryzen", "Core", "Apple", "Graviton", "Neoverse"):
        if kind.lower() in model.lower():
            vendor = {"Xeon": "Intel", "Core": "Intel", "EPYC": "AMD", "Ryzen": "AMD"}.get(kind)
            return f"{vendor} {kind}" if vendor else kind
    return model


def blas() -> str | None:
    """The BLAS torch was built with (``BLAS_INFO`` of ``torch.__config__.show()``, e.g.
    ``mkl``) and the CPU capability it dispatches to (e.g. ``AVX512``); ``None`` when torch is
    not imported in this process."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    found = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
    name = found.group(1) if found else "unknown"
    return f"{name}, {torch.backends.cpu.get_cpu_capability()}"


def describe() -> dict:
    """The record's ``machine``: ``platform``, ``processor`` (the model name), ``cpu_kind``,
    ``cpu_flags`` (:data:`SPEED_FLAGS` present), ``cpus``, ``blas`` and torch's ``threads``
    (``None`` without torch imported)."""
    model = cpu_model()
    torch = sys.modules.get("torch")
    return {
        "platform": platform.platform(),
        "processor": model,
        "cpu_kind": cpu_vendor(model),
        "cpu_flags": cpu_flags(),
        "cpus": os.cpu_count(),
        "blas": blas(),
        "threads": torch.get_num_threads() if torch is not None else None,
    }


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""
