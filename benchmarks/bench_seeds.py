"""How much the quick profile's official scores move with the seed (run by hand).

The report trains every system once, with the profile's seed. At the quick profile's size (tiny
random-init backbones, ten target clips per machine type) a single run says little about which
of two systems is better, so this benchmark repeats System 1 and the autoencoder baseline with
other seeds (the seed of the weights, the crops, SpecAugment and the batches; the data stays the
same) and prints each run's official score and the spread.

    python benchmarks/bench_seeds.py                      # quick, seeds 13711 7 99
    python benchmarks/bench_seeds.py --seeds 1 2 3 4 5 --profile quick
    python benchmarks/bench_seeds.py --mixed-precision bf16 --output bf16.csv   # System 1 in bf16

About 3.5 minutes per seed on two CPU cores under quick. Runs go to a temporary folder; the CSV
of results goes beside the profile's results (``outputs/<profile>/bench_seeds.csv``, or
``--output``), where the results chapter shows it the next time the book is built.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from machine import load_recorded

from asd_utils import config, data, files, registry, stages
from asd_utils.config import schema
from asd_utils.report import analysis


def seed_run(clips, paths, profile: schema.Profile, out: Path) -> stages.Run:
    """The run of one seed (a profile derived in memory): the report's data (its clip table),
    its own output folder."""
    return stages.Run(profile, config.RunPaths(paths.data_root, out, False), None, clips)


def autoencoder_scores(run: stages.Run) -> dict[str, float]:
    """Official scores (%) of baseline-MSE and baseline-MAHALA: the baseline stage."""
    outcome = stages.baseline(run)
    return {s: 100 * analysis.summary(scores)["hmean"] for s, scores in outcome.scores.items()}


def system_score(run: stages.Run, system: str) -> tuple[float, float]:
    """Official score (%) of one fine-tuned system and its training seconds: the train, embed
    and score stages, as the report runs them."""
    result = stages.train(run, system)
    stages.embed(run, system, result)
    scores = stages.score(run, [system])[system]
    return 100 * analysis.summary(scores)["hmean"], result.seconds


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--seeds", type=int, nargs="+", default=[13711, 7, 99])
    parser.add_argument("--system", default="System 1")
    parser.add_argument("--output", default="", help="default: <output root>/bench_seeds.csv")
    parser.add_argument(
        "--mixed-precision",
        choices=["no", "bf16", "auto"],
        help="train and embed the fine-tuned system in this precision (default: the profile's)",
    )
    args = parser.parse_args()
    base = config.load_profile(args.profile)
    if args.mixed_precision:  # e.g. bf16 against the profile's float32, seed for seed
        name = registry.get(args.system).section
        section = getattr(base, name)
        train = section.train.model_copy(update={"mixed_precision": args.mixed_precision})
        base = base.model_copy(update={name: section.model_copy(update={"train": train})})
    paths = config.resolve_paths(base)
    data.prepare_data(base, paths, progress=False)
    clips = data.index_dataset(paths.data_root)
    print(
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"profile {base.name}, data {paths.data_root}"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            profile = base.model_copy(update={"seed": seed})
            start = time.perf_counter()
            row = {"seed": seed, "data_root": str(paths.data_root)}
            run = seed_run(clips, paths, profile, Path(tmp) / str(seed))
            row.update(autoencoder_scores(run))
            row["baseline seconds"] = round(time.perf_counter() - start, 1)
            score, seconds = system_score(run, args.system)
            row.update({args.system: score, f"{args.system} seconds": round(seconds, 1)})
            rows.append(row)
            print(
                {k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}, flush=True
            )
    table = pd.DataFrame(rows)
    output = Path(args.output) if args.output else paths.output_root / "bench_seeds.csv"
    files.write_table(table, output)
    columns = ["baseline-MSE", "baseline-MAHALA", args.system]
    print(table[columns].agg(["mean", "std", "min", "max"]).round(2).to_string())
    print(f"written to {output}")


def main() -> None:
    with load_recorded():
        run()


if __name__ == "__main__":
    main()
