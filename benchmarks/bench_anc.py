"""Speed and noise reduction of the ANC filters in ``asd_utils.frontends.anc`` (run by hand or
`make bench`).

Speed is "times real time" = seconds of audio processed / wall-clock seconds, on one torch
thread, best of a few runs after a warm-up. Noise reduction is measured on synthetic near/far
clips with a known 128-tap acoustic path (``known_path_mixture``, machine and noise equally loud
at the near mic), after convergence: ``snr_db(noise, output - clean)`` over seconds 5–10.

    python benchmarks/bench_anc.py

padasip (``pip install -r benchmarks/requirements.txt``) is timed too when it imports.
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np
import torch
from machine import load_recorded

from asd_utils.frontends import anc
from asd_utils.studies import denoising

SR = 16_000
REPEATS = 5


def best_seconds(fn, repeats: int = REPEATS) -> float:
    """Wall time of ``fn()``: the best of ``repeats`` runs after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def clips(n: int, seconds: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` different float32 clips, (near, far), each ``(n, samples)``."""
    mixes = [denoising.known_path_mixture(seconds, SR, path_taps=128, seed=i) for i in range(n)]
    near = torch.tensor(np.stack([m.primary for m in mixes]), dtype=torch.float32)
    far = torch.tensor(np.stack([m.reference for m in mixes]), dtype=torch.float32)
    return near, far


def padasip_nlms(near: np.ndarray, far: np.ndarray, taps: int, step: float) -> np.ndarray:
    """padasip's NLMS as a canceller: the error signal, aligned with ``near[taps - 1:]``."""
    import padasip as pa

    f = pa.filters.FilterNLMS(n=taps, mu=step, w="zeros")
    return f.run(near[taps - 1 :], pa.input_from_history(far, taps))[1]


def speed_rows() -> list[tuple]:
    rows = []
    near16, far16 = clips(16, 10.0)
    for block in (512, 2048):
        for n in (16, 1):
            secs = best_seconds(lambda n=n, b=block: anc.fblms(near16[:n], far16[:n], block_size=b))
            rows.append(("FBLMS (asd_utils)", 512, block, n, 10.0, secs))
    near, far = (x[0, : 2 * SR].double().numpy() for x in (near16, far16))
    secs = best_seconds(lambda: anc.nlms(near, far, 256, 0.5), repeats=1)
    rows.append(("NLMS (asd_utils)", 256, 1, 1, 2.0, secs))
    try:
        import padasip  # noqa: F401
    except ImportError:
        print("padasip not installed: pip install -r benchmarks/requirements.txt")
    else:
        short = SR + 255  # 1 s of output after the 255-sample history
        secs = best_seconds(lambda: padasip_nlms(near[:short], far[:short], 256, 0.5), repeats=1)
        rows.append(("NLMS (padasip)", 256, 1, 1, 1.0, secs))
    return rows


def noise_reduction_rows() -> list[tuple]:
    rows = []
    for coloured in (False, True):
        m = denoising.known_path_mixture(10.0, SR, path_taps=128, machine_db=0.0, coloured=coloured)
        runs = [
            ("FBLMS", 512, 0.1, lambda m=m: anc.fblms(m.primary, m.reference).numpy()),
            ("NLMS, matched", 256, 0.05, lambda m=m: anc.nlms(m.primary, m.reference, 256, 0.05)),
            ("NLMS", 256, 0.5, lambda m=m: anc.nlms(m.primary, m.reference, 256, 0.5)),
        ]
        for name, taps, step, run in runs:
            out = run()[5 * SR :]
            nr = float(denoising.snr_db(m.noise[5 * SR :], out - m.clean[5 * SR :]))
            rows.append((name, taps, step, "AR(1) 0.9" if coloured else "white", nr))
    return rows


def run() -> None:
    torch.set_num_threads(1)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
        f"(load average {os.getloadavg()[0]:.1f}), torch {torch.__version__} on 1 thread, "
        f"numpy {np.__version__}, Python {platform.python_version()}\n"
    )
    speed = speed_rows()
    print("| filter | taps | block | clips × s | wall s | × real time |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, taps, block, n, seconds, secs in speed:
        rt = n * seconds / secs
        print(f"| {name} | {taps} | {block} | {n} × {seconds:g} | {secs:.4f} | {rt:,.0f} |")

    quality = noise_reduction_rows()
    print("\n| filter | taps | step | far-mic noise | noise reduction dB (5–10 s) |")
    print("|---|---:|---:|---|---:|")
    for name, taps, step, noise, nr in quality:
        print(f"| {name} | {taps} | {step:g} | {noise} | {nr:.1f} |")

    batch = next(n * s / secs for _, _, b, n, s, secs in speed if (b, n) == (512, 16))
    print(f"\nFBLMS 512 taps, 16 clips: {batch:,.0f}× real time (target ≥ 1000×)")
    nr = {(name, noise): value for name, _, _, noise, value in quality}
    for noise in ("white", "AR(1) 0.9"):
        gap = nr["FBLMS", noise] - nr["NLMS, matched", noise]
        print(f"FBLMS minus matched-step NLMS, {noise} noise: {gap:+.1f} dB (target ≥ -1 dB)")


def main() -> None:
    with load_recorded():
        run()


if __name__ == "__main__":
    main()
