"""How much the quick profile's official scores move with the seed (run by hand).

The report trains every system once, with the profile's seed. At the quick profile's size (tiny
random-init backbones, ten target clips per machine type) a single run says little about which
of two systems is better, so this benchmark repeats System 1 and the autoencoder baseline with
other seeds (the seed of the weights, the crops, SpecAugment and the batches; the data stays the
same) and prints each run's official score and the spread.

    python benchmarks/bench_seeds.py                      # quick, seeds 13711 7 99
    python benchmarks/bench_seeds.py --seeds 1 2 3 4 5 --profile quick

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
import yaml
from machine import load_recorded

from asd_utils import baseline, config, data, files, metrics, scoring, systems
from asd_utils.models.autoencoder import AETrainConfig


def autoencoder_scores(clips: pd.DataFrame, profile: dict) -> dict[str, float]:
    """Official scores (%) of baseline-MSE and baseline-MAHALA, as chapter 20 computes them."""
    training = AETrainConfig(**profile["baseline"], seed=profile["seed"])
    parts = []
    for _, part in clips.groupby("machine_type", sort=False):
        baseline.seed_everything(profile["seed"])
        parts.append(baseline.run_autoencoder(part, training=training, progress=False).scores)
    scores = pd.concat(parts, ignore_index=True)
    test = scores[scores["split"] == "test"]
    return {
        system: 100
        * metrics.summarise(
            metrics.evaluate(metrics.labelled(test.assign(anomaly_score=test[col]))[0])
        )["hmean"]
        for system, col in (("baseline-MSE", "mse"), ("baseline-MAHALA", "mahalanobis"))
    }


def system_score(clips, data_root, profile_path: Path, profile: dict, system: str, out: Path):
    """Official score (%) of one fine-tuned system, as chapters 30 and 50 compute it."""
    result = systems.train_system(data_root, str(profile_path), system, out, progress=False)
    channel, preprocess, _ = systems.front_end(profile, system)
    section = systems.settings(profile, system)
    embeddings = scoring.extract_embeddings(
        result.ema_model, clips, section["embed_batch_size"], channel, preprocess, progress=False
    )
    scores = scoring.score_system(clips, embeddings, k=systems.knn_k(profile, system))
    test = scores[scores["split"] == "test"]
    return 100 * metrics.summarise(metrics.evaluate(metrics.labelled(test)[0]))[
        "hmean"
    ], result.seconds


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--seeds", type=int, nargs="+", default=[13711, 7, 99])
    parser.add_argument("--system", default="System 1")
    parser.add_argument("--output", default="", help="default: <output root>/bench_seeds.csv")
    args = parser.parse_args()
    base = config.load_profile(args.profile)
    paths = config.resolve_paths(base)
    config.prepare_data(base, paths, progress=False)
    clips = data.index_dataset(paths.data_root)
    print(
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"profile {base['name']}, data {paths.data_root}"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            profile = {**base, "seed": seed}
            profile_path = Path(tmp) / f"{base['name']}-seed{seed}.yaml"
            profile_path.write_text(yaml.safe_dump(profile))
            start = time.perf_counter()
            row = {"seed": seed, "data_root": str(paths.data_root)}
            row.update(autoencoder_scores(clips, profile))
            row["baseline seconds"] = round(time.perf_counter() - start, 1)
            score, seconds = system_score(
                clips, paths.data_root, profile_path, profile, args.system, Path(tmp) / str(seed)
            )
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
