"""Time and memory of BEAM and BEAM + VarMin (``asd_utils.scoring.beam``) at the real size of one
machine type: 1,000 normal training clips × 8 bands × 768 (BEATs base), 200 test clips, and
2,000 to show that memory stays flat in the number of test clips (run by hand or `make bench`).

Peak memory is what numpy allocates inside each step (``tracemalloc``), the inputs not counted
(1,000 × 8 × 768 float32 = 24.6 MB); times are the best of a few runs after a warm-up.

    python benchmarks/bench_beam.py [--settle 120]
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc

import numpy as np
from machine import load_recorded

from asd_utils.scoring.beam import Beam

REFERENCE, BANDS, DIM = 1000, 8, 768


def measured(fn, repeats: int = 3) -> tuple[float, float, object]:
    """(best wall seconds, peak MB allocated, result) of ``fn()`` after one warm-up run."""
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return min(times), peak, result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle", type=float, default=120.0, help="wait for an idle machine (s)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    centre = rng.standard_normal((1, BANDS, DIM), dtype=np.float32)
    reference = centre + rng.standard_normal((REFERENCE, BANDS, DIM), dtype=np.float32)
    queries = centre + rng.standard_normal((2000, BANDS, DIM), dtype=np.float32)
    with load_recorded(args.settle):
        print(f"\n{REFERENCE} references × {BANDS} bands × {DIM}\n")
        print("| back end | step | clips | wall s | peak MB |")
        print("|---|---|---:|---:|---:|")
        for name, varmin in (("BEAM", False), ("BEAM + VarMin(4)", True)):
            backend = Beam(varmin=varmin, k=4)
            secs, peak, _ = measured(lambda b=backend: b.fit(reference))
            print(f"| {name} | fit | {REFERENCE} | {secs:.3f} | {peak:.1f} |")
            secs, peak, _ = measured(backend.training_scores)
            print(f"| {name} | training_scores | {REFERENCE} | {secs:.3f} | {peak:.1f} |")
            for n in (200, 2000):
                secs, peak, _ = measured(lambda b=backend, n=n: b.score(queries[:n]))
                print(f"| {name} | score | {n} | {secs:.3f} | {peak:.1f} |")
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
        print(f"\nthe process's peak resident memory: {rss:.0f} MB (2,000 queries held: 49 MB)")


if __name__ == "__main__":
    main()
