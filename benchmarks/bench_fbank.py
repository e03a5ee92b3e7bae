"""Throughput of asd_utils.frontends.features.kaldi_fbank against torchaudio's Kaldi fbank (BEATs
settings).

Clips per second for 10 s clips at 16 kHz, BEATs' parameters (× 2^15, 128 mel bins, 25 / 10 ms),
batches of 8 and of 1, torch limited to 1 and to 2 threads. Ours takes the batch in one call;
torchaudio's ``kaldi.fbank`` takes one clip per call, so it loops over the batch as
``BEATs.preprocess`` does. torchaudio is found at ``--torchaudio-kaldi PATH`` (its
``compliance/kaldi.py`` extracted from a wheel, see tests/fixtures/fbank/README.md) or as an
importable ``torchaudio``; without either its rows are skipped. Each figure is the best of
``--repeats`` timed runs (the least disturbed by other load), ours and torchaudio's interleaved.

    python benchmarks/bench_fbank.py \
        --torchaudio-kaldi /tmp/ta_wheel/extracted/torchaudio/compliance/kaldi.py
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch
from machine import cpu_model, load_recorded  # noqa: F401 (cpu_model: used by the others)

from asd_utils.frontends.features import kaldi_fbank

SAMPLE_RATE = 16000
BEATS_OPTIONS = {"num_mel_bins": 128, "frame_length": 25.0, "frame_shift": 10.0}


def load_torchaudio_fbank(path: Path | None) -> Callable | None:
    """torchaudio's ``compliance.kaldi.fbank``: from the file ``path``, else the package."""
    if path is None:
        try:
            from torchaudio.compliance import kaldi
        except Exception as error:  # absent, or its compiled part fails to load
            print(f"torchaudio not importable ({error}); its rows are skipped", file=sys.stderr)
            return None
        return kaldi.fbank
    stubbed = "torchaudio" not in sys.modules
    if stubbed:  # kaldi.py imports torchaudio only for mfcc's DCT
        sys.modules["torchaudio"] = types.ModuleType("torchaudio")
    try:
        spec = importlib.util.spec_from_file_location("torchaudio_kaldi", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if stubbed:
            del sys.modules["torchaudio"]
    return module.fbank


def best_seconds(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Shortest wall time of each run over ``repeats`` rounds, runs interleaved, warmed up."""
    for run in runs.values():
        run()
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):  # interleaved, so that a change in other load hits all alike
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torchaudio-kaldi", type=Path, help="path of torchaudio's kaldi.py")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 1])
    args = parser.parse_args()

    ta_fbank = load_torchaudio_fbank(args.torchaudio_kaldi)
    generator = torch.Generator().manual_seed(0)
    n_samples = int(args.seconds * SAMPLE_RATE)
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in args.batches:
            waveforms = torch.rand(batch, n_samples, generator=generator) * 2 - 1

            def ours(waveforms=waveforms):
                return kaldi_fbank(waveforms * 2**15, sample_rate=SAMPLE_RATE, **BEATS_OPTIONS)

            def theirs(waveforms=waveforms):
                return torch.stack(
                    [
                        ta_fbank(w[None] * 2**15, sample_frequency=SAMPLE_RATE, **BEATS_OPTIONS)
                        for w in waveforms
                    ]
                )

            runs = {"asd_utils kaldi_fbank": ours}
            if ta_fbank is not None:
                runs["torchaudio kaldi.fbank"] = theirs
            best = best_seconds(runs, args.repeats)
            rows += [(name, threads, batch, batch / seconds) for name, seconds in best.items()]

    print(
        f"Machine: {platform.processor() or platform.machine()} ({cpu_model()}), "
        f"{os.cpu_count()} CPUs, {platform.system()}, torch {torch.__version__}; "
        f"{args.seconds:g} s clips, BEATs fbank, best of {args.repeats} runs\n"
    )
    print("| implementation | torch threads | batch | clips/s | ms/clip |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, threads, batch, rate in rows:
        print(f"| {name} | {threads} | {batch} | {rate:.0f} | {1000 / rate:.2f} |")


def main() -> None:
    with load_recorded():
        run()


if __name__ == "__main__":
    main()
