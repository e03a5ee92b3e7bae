"""What the sample checks of ``asd_utils.data.index_dataset`` add to indexing a clip tree.

Times four ways of indexing one tree: WAV headers only (``check_samples=False``); with the
sample checks (NaN / inf, silence) and no cache (``cache_dir=None``, what a caller gets by
default); with a cold cache (a fresh ``cache_dir``); with a warm cache (the same ``cache_dir``
again: headers only plus one stat per file). Prints clips/s and seconds, and projects each time
to the real development set (7,000 clips of 10 s stereo) two ways: by total audio seconds (what
a full read scales with) and by clip count (what opening files and reading headers scales with).

The tree is ``--data-root``, or a synthetic one (``asd_utils.data.synth.generate_dataset``) made in
a
temporary folder, by default the size of the quick profile (7 machine types × 250 clips, 4 s
stereo, 4.8 s for ToyCar/ToyCarEmu; about 2 minutes to make). ``--float`` also times a copy of
the tree written as 32-bit float WAVs: integer PCM cannot hold NaN or inf, so its check stops at
the first non-zero sample, while a float WAV is read to the end (the worst case).

The files are in the operating system's page cache (just written, or read by the warm-up), so
"cold" means a cold sample cache, not a cold disk; on a network or spinning disk the reads cost
more. Each figure is the best of ``--repeats`` runs, the modes interleaved.

    python benchmarks/bench_indexing.py                      # quick-profile-sized synthetic tree
    python benchmarks/bench_indexing.py --n-train-source 20 --n-test 5 --float   # small, faster
    python benchmarks/bench_indexing.py --data-root /data/dcase2026
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import soundfile as sf
from machine import cpu_model, load_recorded

from asd_utils import data
from asd_utils.data import synth

DEV_SET_CLIPS = 7000  # the real 2026 development set: 7 machine types × 1,000 clips
DEV_SET_SECONDS = DEV_SET_CLIPS * 10.0  # … of 10 s (ToyCar/ToyCarEmu 12 s: a 3 % underestimate)


def make_tree(root: Path, args: argparse.Namespace) -> Path:
    """A synthetic tree of the requested size under ``root``; returns its data root."""
    toy_seconds = 1.2 * args.seconds  # ToyCar and ToyCarEmu clips are longer, as in 2026
    config = synth.SynthConfig(
        n_train_source=args.n_train_source,
        n_train_target=args.n_train_target,
        n_test=args.n_test,
        clip_seconds={"default": args.seconds, "ToyCar": toy_seconds, "ToyCarEmu": toy_seconds},
    )
    start = time.perf_counter()
    synth.generate_dataset(root, config, progress=True)
    print(f"generated {root} in {time.perf_counter() - start:.0f} s")
    return root


def float_copy(table, source_root: Path, target_root: Path) -> Path:
    """The clips of ``table`` rewritten as 32-bit float WAVs under ``target_root``, same layout."""
    for path in table["path"]:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        out = target_root / Path(path).relative_to(source_root)
        out.parent.mkdir(parents=True, exist_ok=True)
        sf.write(out, audio, rate, subtype="FLOAT")
    return target_root


def timed_modes(data_root: Path, scratch: Path) -> dict[str, Callable[[], object]]:
    """The four ways of indexing ``data_root``, each a call; caches go under ``scratch``."""
    counter = iter(range(10**6))
    warm = scratch / "warm"

    def cold():
        return data.index_dataset(data_root, cache_dir=scratch / f"cold{next(counter)}")

    return {
        "headers only (check_samples=False)": lambda: data.index_dataset(
            data_root, check_samples=False
        ),
        "sample checks, no cache": lambda: data.index_dataset(data_root),
        "sample checks, cold cache": cold,
        "sample checks, warm cache": lambda: data.index_dataset(data_root, cache_dir=warm),
    }


def best_seconds(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Shortest wall time of each run over ``repeats`` rounds, runs interleaved, after a warm-up
    round (which also fills the warm cache and the page cache)."""
    for run in runs.values():
        run()
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def report(label: str, table, best: dict[str, float]) -> None:
    """One markdown table: clips/s, seconds, and the projection to the real development set."""
    n, audio_seconds = len(table), float(table["duration"].sum())
    by_seconds, by_count = DEV_SET_SECONDS / audio_seconds, DEV_SET_CLIPS / n
    print(f"\n{label}: {data.describe_channels(table)}; {audio_seconds:,.0f} s of audio")
    print("| mode | seconds | clips/s | dev set (by audio s) | dev set (by clips) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, seconds in best.items():
        print(
            f"| {name} | {seconds:.3f} | {n / seconds:,.0f} | {seconds * by_seconds:.1f} s "
            f"| {seconds * by_count:.1f} s |"
        )


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, help="an existing tree (default: synthesise)")
    parser.add_argument("--n-train-source", type=int, default=140)
    parser.add_argument("--n-train-target", type=int, default=10)
    parser.add_argument("--n-test", type=int, default=25, help="clips per domain × label")
    parser.add_argument("--seconds", type=float, default=4.0, help="clip length (ToyCar × 1.2)")
    parser.add_argument("--float", action="store_true", help="also time a float-WAV copy")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_indexing_") as tmp:
        tmp = Path(tmp)
        root = args.data_root or make_tree(tmp / "tree", args)
        table = data.index_dataset(root, check_samples=False)
        trees = [("integer PCM tree" if args.data_root is None else str(root), root)]
        if args.float:
            start = time.perf_counter()
            copy = float_copy(table, Path(root).absolute(), tmp / "float_tree")
            print(f"wrote the float copy in {time.perf_counter() - start:.0f} s")
            trees.append(("the same tree as 32-bit float WAVs", copy))
        print(
            f"\nMachine: {platform.machine()} ({cpu_model()}), {os.cpu_count()} CPUs, "
            f"{platform.system()}; best of {args.repeats} runs; soundfile {sf.__version__} "
            f"(libsndfile {sf.__libsndfile_version__})"
        )
        for i, (label, tree_root) in enumerate(trees):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", data.DataWarning)
                best = best_seconds(timed_modes(tree_root, tmp / f"caches{i}"), args.repeats)
            report(label, data.index_dataset(tree_root, check_samples=False), best)


def main() -> None:
    with load_recorded():
        run()


if __name__ == "__main__":
    main()
