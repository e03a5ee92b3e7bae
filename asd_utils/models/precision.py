"""What ``mixed_precision: bf16 | no | auto`` means on the machine a run is on.

``bf16`` is torch's autocast to bfloat16 on the device the model runs on (a GPU or a CPU): the
matrix products (linear, convolution, attention) run in bfloat16, the weights stay float32
(the master copy the optimizer updates), and what numerics need stays float32 because it turns
autocast off: the Kaldi fbank (:func:`asd_utils.models.common.autocast_off`), the ANC (run
before the model), the losses (:mod:`asd_utils.models.losses`) and the pooled embeddings (cast back
to
float32 before pooling and scoring). ``no`` is float32 throughout. ``auto`` is bf16 where it
pays: on a GPU that supports it; on a CPU where a short matmul probe (:func:`matmul_probe`)
measures bf16 at least :data:`PAYS` times as fast as float32. CPUs with AMX-BF16 (Intel
Sapphire Rapids and later) multiply bf16 matrices several times faster than float32; a CPU
without the bf16 units (``amx_bf16`` / ``avx512_bf16`` in ``/proc/cpuinfo``, e.g. an AMD EPYC
before Zen 4) emulates it and is slower. The choice is measured, not assumed from the flags;
the flags are recorded beside it.

:func:`resolve` makes the decision (a :class:`Precision`, with the reason); the probe and the
flag reader are arguments, so a test can hand in its own.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

SETTINGS = ("no", "bf16", "auto")
CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # the CPU's bf16 matrix / vector units
PAYS = 1.5  # ``auto`` takes bf16 on a CPU when the probe measures at least this speed-up
PROBE_SIZE = 1024  # the probe's square matrices
PROBE_REPEATS = 5


@dataclass(frozen=True)
class Precision:
    """A resolved precision: ``setting`` as the profile gave it, the ``device`` type, whether it
    computes in ``bf16``, why (``reason``), and the CPU's bf16 ``flags`` and the ``probe``
    (:func:`matmul_probe`) where they were looked at."""

    setting: str
    device: str
    bf16: bool
    reason: str
    flags: tuple[str, ...] = ()
    probe: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        """``"bf16"`` or ``"fp32"``: what the run computes in."""
        return "bf16" if self.bf16 else "fp32"

    @property
    def mixed_precision(self) -> str:
        """The value accelerate and :class:`asd_utils.training.TrainConfig` take: bf16 or no."""
        return "bf16" if self.bf16 else "no"

    @property
    def autocast(self) -> torch.dtype | None:
        """The autocast dtype for :func:`asd_utils.scoring.extract_embeddings` (None: fp32)."""
        return torch.bfloat16 if self.bf16 else None

    def to_dict(self) -> dict:
        """For ``run_record.json`` and a training run's ``finished.json``."""
        out = {"setting": self.setting, "device": self.device, "precision": self.name}
        out |= {"reason": self.reason, "cpu_flags": list(self.flags)}
        return out | ({"probe": dict(self.probe)} if self.probe else {})


def cpu_flags(path: str | Path = "/proc/cpuinfo") -> tuple[str, ...]:
    """The bf16 flags of :data:`CPU_FLAGS` the CPU reports (none where ``path`` is absent, e.g.
    not Linux)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ()
    words = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            words |= set(line.split(":", 1)[-1].split())
    return tuple(flag for flag in CPU_FLAGS if flag in words)


def _best_seconds(call: Callable[[], object], repeats: int) -> float:
    call()  # warm-up: oneDNN builds its kernels on the first call
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_probe(size: int = PROBE_SIZE, repeats: int = PROBE_REPEATS) -> dict:
    """One ``size``² ``torch.matmul`` on the CPU in float32 and in bfloat16, each the best of
    ``repeats`` after a warm-up, on torch's current threads: ``{"size", "threads",
    "fp32_gflops", "bf16_gflops", "speedup"}`` (GFLOP/s = 2 · size³ / seconds / 1e9). About
    0.1 s where bf16 pays; longer on a CPU that emulates bf16."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator)
    b = torch.randn(size, size, generator=generator)
    flops = 2 * size**3
    with torch.inference_mode():
        fp32 = _best_seconds(lambda: torch.matmul(a, b), repeats)
        a16, b16 = a.bfloat16(), b.bfloat16()
        bf16 = _best_seconds(lambda: torch.matmul(a16, b16), repeats)
    return {
        "size": size,
        "threads": torch.get_num_threads(),
        # unrounded: at a small size a GFLOP/s rounded to 0.1 is far from the speed-up it gives
        "fp32_gflops": flops / fp32 / 1e9,
        "bf16_gflops": flops / bf16 / 1e9,
        "speedup": fp32 / bf16,
    }


@functools.cache
def _cached_probe(threads: int) -> dict:
    """:func:`matmul_probe`, once per process and thread count."""
    return matmul_probe()


def cached_probe() -> dict:
    """:func:`matmul_probe` measured once per process (and torch thread count)."""
    return _cached_probe(torch.get_num_threads())


def default_device() -> torch.device:
    """Where the systems run: the GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve(
    setting: str,
    device: torch.device | str | None = None,
    flags: Callable[[], tuple[str, ...]] | None = None,
    probe: Callable[[], dict] | None = None,
) -> Precision:
    """The precision ``setting`` (:data:`SETTINGS`) means on ``device`` (None:
    :func:`default_device`).

    ``no``: float32. ``bf16``: bf16 autocast on any device (on a CPU without bf16 units it is
    emulated: correct, slow). ``auto``: on a GPU, bf16 where ``torch.cuda.is_bf16_supported()``;
    on a CPU, bf16 where ``probe()`` (:func:`cached_probe`) measures a speed-up of at least
    :data:`PAYS`, float32 otherwise; ``flags()`` (:func:`cpu_flags`) is recorded with it (the
    probe decides: an ARM CPU's bf16 units have other names, and no flags are read off Linux).
    None: this module's :func:`cpu_flags` and :func:`cached_probe`, looked up at the call (a
    test may replace them).
    """
    flags = flags or globals()["cpu_flags"]
    probe = probe or globals()["cached_probe"]
    if setting not in SETTINGS:
        raise ValueError(f"mixed_precision must be one of {SETTINGS}, not {setting!r}")
    kind = torch.device(device if device is not None else default_device()).type
    cpu = kind == "cpu"
    found = tuple(flags()) if cpu else ()
    if setting == "no":
        return Precision(setting, kind, False, "mixed_precision: no (float32)", found)
    if setting == "bf16":
        return Precision(setting, kind, True, "mixed_precision: bf16", found)
    if not cpu:
        supported = kind == "cuda" and torch.cuda.is_bf16_supported()
        why = "the GPU supports bf16" if supported else f"no bf16 support on {kind}"
        return Precision(setting, kind, supported, f"auto: {why}")
    measured = probe()
    pays = measured["speedup"] >= PAYS
    units = f"CPU flags: {', '.join(found)}" if found else f"none of {', '.join(CPU_FLAGS)}"
    why = (
        f"auto ({units}): a {measured['size']}² matmul ran {measured['speedup']:.1f}x as fast "
        f"in bf16 as in float32 ({measured['bf16_gflops']:.0f} against "
        f"{measured['fp32_gflops']:.0f} GFLOP/s; bf16 from {PAYS}x)"
    )
    return Precision(setting, kind, pays, why, found, measured)
