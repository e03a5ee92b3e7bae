"""Training speed in float32 and in bf16, at the quick profile's size or at base size.

The systems: ``--systems`` (any fine-tuned system of :mod:`asd_utils.registry`), by default the
first of each recipe (:func:`asd_utils.registry.one_per_recipe`: Systems 1, 2, 5 and 7), so a
new recipe joins unasked.

Each system's ``quick`` profile section as it is (tiny backbones, 2 s crops, batch 16), with
``mixed_precision`` set to ``no`` and to ``bf16`` in turn, trained for ``--steps`` optimizer
steps through the project's own loop (:func:`asd_utils.systems.train_system`) on a small
synthetic set with the quick profile's clip lengths, after a warm-up run of a few steps (oneDNN
builds its kernels on the first calls). The two precisions alternate, ``--repeats`` times, and
the best steps/s of each is kept, so a busy moment of a shared machine hits both alike. Also:
the :func:`asd_utils.models.precision.resolve` decision of ``auto`` on this machine, and the final
training loss of each run (bf16 must learn as float32 does). The machine's load is recorded
(``machine.load_recorded``). Results: a table on stdout and ``bench_precision.csv`` in
``--output``.

    python benchmarks/bench_precision.py [--systems "System 1" "System 2" "System 5"]
    python benchmarks/bench_precision.py --size base --steps 3 --repeats 1   # the paper's size

``--size base``: the paper profile's base-size backbones (random weights: the arithmetic of the
official ones), still 2 s crops and batch 16 (the paper trains on whole clips, 5-8x longer, which
changes the time per step, not the ratio of the two precisions much).
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
from pathlib import Path

import pandas as pd
import torch
import yaml
from machine import cpu_model, load_recorded

from asd_utils import config, registry, systems
from asd_utils.data import synth
from asd_utils.models import precision

DEFAULT_SYSTEMS = registry.one_per_recipe()
SIZE_KEYS = ("blocks", "width", "heads")  # a section's architecture beside its backbone size
PRECISIONS = ("no", "bf16")


def bench_profile(setting: str, steps: int, size: str = "tiny", systems=DEFAULT_SYSTEMS) -> dict:
    """The quick profile with ``steps`` optimizer steps and ``mixed_precision: setting`` in the
    sections of ``systems``; with ``size`` "base", the paper profile's backbones (and its
    :data:`SIZE_KEYS`)."""
    profile = copy.deepcopy(config.load_profile("quick"))
    paper = config.load_profile("paper")
    for section in dict.fromkeys(registry.get(system).section for system in systems):
        if size == "base":
            profile[section]["size"] = "base"
            for key in SIZE_KEYS:
                if key in paper[section]:
                    profile[section][key] = paper[section][key]
        profile[section]["train"].update(
            steps=steps,
            warmup_steps=max(1, steps // 4),
            checkpoint_every=0,
            mixed_precision=setting,
        )
    return profile


def train_once(
    system: str, setting: str, steps: int, root: Path, out: Path, size: str = "tiny"
) -> dict:
    """One run from scratch; its steps/s over the loop and its last logged loss."""
    profile = bench_profile(setting, steps, size, (system,))
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"profile-{setting}-{steps}-{size}.yaml"
    path.write_text(yaml.safe_dump(profile))
    result = systems.train_system(root, str(path), system, out / "runs", progress=False)
    return {
        "steps_per_s": result.steps / result.loop_seconds,
        "loss": float(result.history["loss"].iloc[-1]),
        "precision": result.precision.name,
    }


def run(args) -> pd.DataFrame:
    chosen = precision.resolve("auto", "cpu")
    print(
        f"CPU: {cpu_model()}, bf16 flags: {', '.join(precision.cpu_flags()) or 'none'}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads\n"
        f"auto on this CPU: {chosen.name} ({chosen.reason})"
    )
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        quick = config.load_profile("quick")["synth"]
        tree = synth.SynthConfig(
            machine_types=("ToyCar", "fan"),
            n_train_source=args.clips,
            n_train_target=2,
            n_test=2,
            clip_seconds=quick["clip_seconds"],
        )
        synth.generate_dataset(tmp / "data", tree, progress=False)
        for system in args.systems:
            best = {}
            for setting in PRECISIONS:  # warm-up
                train_once(system, setting, 2, tmp / "data", tmp / "warm", args.size)
            for repeat in range(args.repeats):
                for setting in PRECISIONS:
                    out = tmp / f"out-{repeat}"
                    got = train_once(system, setting, args.steps, tmp / "data", out, args.size)
                    if got["steps_per_s"] > best.get(setting, {}).get("steps_per_s", 0):
                        best[setting] = got
            fp32, bf16 = best["no"], best["bf16"]
            rows.append(
                {
                    "system": system,
                    "size": args.size,
                    "steps": args.steps,
                    "fp32_steps_per_s": fp32["steps_per_s"],
                    "bf16_steps_per_s": bf16["steps_per_s"],
                    "speedup": bf16["steps_per_s"] / fp32["steps_per_s"],
                    "fp32_final_loss": fp32["loss"],
                    "bf16_final_loss": bf16["loss"],
                }
            )
    table = pd.DataFrame(rows)
    print(table.round(3).to_markdown(index=False))
    if args.output:
        args.output.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.output / "bench_precision.csv", index=False)
    return table


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--systems", nargs="+", choices=registry.of_kind("fine-tuned"), default=DEFAULT_SYSTEMS
    )
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per timed run")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per precision")
    parser.add_argument("--clips", type=int, default=24, help="training clips per machine type")
    parser.add_argument("--size", choices=["tiny", "base"], default="tiny", help="backbone size")
    parser.add_argument("--output", type=Path, help="folder for bench_precision.csv")
    args = parser.parse_args(argv)
    torch.set_num_threads(os.cpu_count())
    with load_recorded():
        return run(args)


if __name__ == "__main__":
    main()
