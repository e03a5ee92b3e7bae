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

With ``--classes`` it compares class schemes (issue 36): each system of ``--systems`` trains
once per scheme and seed, its profile section's ``classes`` block set to that scheme (``names``:
the name classes; ``pseudo``: clusters everywhere; ``auto``: clusters where names carry no
attributes; ``profile``: the section as it is), and ``bench_classes.csv`` gets one row per
(system, classes, seed, machine type) and one per run over all machine types (``all``), with the
official score, beside the autoencoder's rows. About 1-3 minutes per system, scheme and seed:

    python benchmarks/bench_seeds.py --classes names auto   # every fine-tuned system

Without ``--systems``, ``--classes`` takes every fine-tuned system of the registry: those whose
profile section has no ``classes`` block of its own (Systems 1, 2, 3, 5) once per scheme, the
others (System 7) once with their own (``--own-classes``).
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
from asd_utils.evaluation import metrics
from asd_utils.report import analysis
from asd_utils.systems import classes as class_schemes
from asd_utils.systems import recipes

SCHEMES = ("profile", *class_schemes.SCHEMES)


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


def with_classes(profile: schema.Profile, system: str, scheme: str) -> schema.Profile:
    """``profile`` with ``system``'s section's class scheme set to ``scheme`` (``profile``: as
    it is); a section without a ``classes`` block gets the recipe's domain rule for names."""
    if scheme == "profile":
        return profile
    recipe = recipes.of(system)
    name = recipe.entry.section
    section = getattr(profile, name)
    block = section.classes or schema.ClassSettings(by_domain=recipe.by_domain(section))
    classes = block.model_copy(update={"scheme": scheme})
    return profile.model_copy(update={name: section.model_copy(update={"classes": classes})})


def machine_rows(scores: pd.DataFrame, attributed: set[str]) -> list[dict]:
    """One row per machine type with ground truth (official score and its parts, %) and one
    for all of them (``machine_type`` ``all``); ``attributes``: whether the machine type's
    training names carry attributes."""
    table = metrics.evaluate(metrics.labelled(scores)[0])
    parts = [("all", table), *table.groupby("machine_type", sort=False)]
    rows = []
    for machine_type, part in parts:
        summary = metrics.summarise(part)
        rows.append(
            {
                "machine_type": machine_type,
                "attributes": None if machine_type == "all" else machine_type in attributed,
                "hmean": 100 * summary["hmean"],
                **{k: 100 * part[k].mean() for k in ("auc_source", "auc_target", "pauc")},
            }
        )
    return rows


def class_systems(profile: schema.Profile) -> tuple[list[str], list[str]]:
    """``(systems, own)``: the registry's fine-tuned systems without a ``classes`` block in
    their profile section (each trained once per scheme) and those with one (once, as set)."""
    fine_tuned = registry.of_kind("fine-tuned")
    own = [s for s in fine_tuned if getattr(profile, registry.get(s).section).classes]
    return [s for s in fine_tuned if s not in own], own


def class_runs(args, base: schema.Profile, clips: pd.DataFrame, paths, tmp: Path) -> pd.DataFrame:
    """The class-scheme comparison: per seed the autoencoder, then every system × scheme."""
    attributed = {g.split("/")[0] for g in class_schemes.named_groups(clips)}
    own = set(args.own_classes)
    runs = [(s, c) for s in args.systems if s not in own for c in args.classes]
    runs += [(s, "profile") for s in args.own_classes]
    rows = []
    for seed in args.seeds:
        common = {"seed": seed, "data_root": str(paths.data_root)}
        run = seed_run(clips, paths, base.model_copy(update={"seed": seed}), tmp / f"{seed}-ae")
        for variant, scores in stages.baseline(run).scores.items():
            for row in machine_rows(scores, attributed):
                rows.append({**common, "system": variant, "classes": "none", **row})
        for system, scheme in runs:
            profile = with_classes(base.model_copy(update={"seed": seed}), system, scheme)
            run = seed_run(clips, paths, profile, tmp / f"{seed}-{scheme}")
            result = stages.train(run, system)
            stages.embed(run, system, result)
            scores = stages.score(run, [system])[system]
            extra = {"seconds": round(result.seconds, 1)}
            made = [
                {**common, "system": system, "classes": scheme, **row, **extra}
                for row in machine_rows(scores, attributed)
            ]
            rows += made
            print({k: round(v, 2) if isinstance(v, float) else v for k, v in made[0].items()})
            files.write_table(pd.DataFrame(rows), args.output_path)  # what finished, so far
    return pd.DataFrame(rows)


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--seeds", type=int, nargs="+", default=[13711, 7, 99])
    parser.add_argument("--system", default="System 1")
    parser.add_argument("--systems", nargs="+", help="several systems (default: --system)")
    parser.add_argument(
        "--classes",
        nargs="+",
        choices=SCHEMES,
        help="compare class schemes: each system trains once per scheme (bench_classes.csv)",
    )
    parser.add_argument(
        "--own-classes",
        nargs="+",
        default=[],
        help="systems trained once with their profile's classes beside --classes (System 7)",
    )
    parser.add_argument("--output", default="", help="default: <output root>/bench_seeds.csv")
    parser.add_argument(
        "--mixed-precision",
        choices=["no", "bf16", "auto"],
        help="train and embed the fine-tuned system in this precision (default: the profile's)",
    )
    args = parser.parse_args()
    base = config.load_profile(args.profile)
    if args.classes and not args.systems:  # the registry's fine-tuned systems, none typed
        args.systems, args.own_classes = class_systems(base)
    args.systems = args.systems or [args.system]
    for system in args.systems if args.mixed_precision else []:  # e.g. bf16 against float32
        name = registry.get(system).section
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
    if args.classes or args.own_classes:
        name = "bench_classes.csv"
        args.output_path = Path(args.output) if args.output else paths.output_root / name
        args.classes = args.classes or []
        with tempfile.TemporaryDirectory() as tmp:
            table = class_runs(args, base, clips, paths, Path(tmp))
        files.write_table(table, args.output_path)
        comparison = analysis.class_comparison(table)
        print(comparison.round(2).to_string())
        print(analysis.pseudo_lift(comparison).round(2).to_string())
        print(f"written to {args.output_path}")
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            profile = base.model_copy(update={"seed": seed})
            start = time.perf_counter()
            row = {"seed": seed, "data_root": str(paths.data_root)}
            run = seed_run(clips, paths, profile, Path(tmp) / str(seed))
            row.update(autoencoder_scores(run))
            row["baseline seconds"] = round(time.perf_counter() - start, 1)
            for system in args.systems:
                score, seconds = system_score(run, system)
                row.update({system: score, f"{system} seconds": round(seconds, 1)})
            rows.append(row)
            print(
                {k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}, flush=True
            )
    table = pd.DataFrame(rows)
    output = Path(args.output) if args.output else paths.output_root / "bench_seeds.csv"
    files.write_table(table, output)
    columns = ["baseline-MSE", "baseline-MAHALA", *args.systems]
    print(table[columns].agg(["mean", "std", "min", "max"]).round(2).to_string())
    print(f"written to {output}")


def main() -> None:
    with load_recorded():
        run()


if __name__ == "__main__":
    main()
