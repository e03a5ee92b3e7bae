"""Training and embedding speed of the fine-tuned systems at paper size, on one GPU.

One prepared, short script for the minutes a GPU is lent (issue 37). First the batched fbank
on the device against the CPU's (largest difference, clips/s of each). Then for each trained
system (``--systems``: any fine-tuned system of :mod:`asd_utils.registry`; default the first
of each of the paper's recipes, :func:`asd_utils.registry.one_per_recipe`: Systems 1 and 2)
and each precision (``--precisions``; default bf16 and fp32 on CUDA, fp32 on a CPU) with its
``paper`` profile section (base backbones, batch 16 x accumulation 8), on a synthetic set with
the real development set's clip lengths (12 s ToyCar, 10 s the others): ``--steps`` optimizer
steps through the project's own training loop, then

- optimizer steps/s and clips/s, and the extrapolated wall time of the profile's full run;
- peak GPU memory (``torch.cuda.max_memory_allocated``);
- the share of the loop spent waiting for the next batch (a data loader that starves the GPU
  shows here);
- embedding throughput of the trained model (clips/s, whole clips, batch 16);
- kill and resume: the same run stopped after half its steps and resumed must end with the
  uninterrupted run's weights (the largest difference is printed: 0 on a CPU; on a GPU
  non-deterministic kernels may leave float noise);
- ``non_finite``: empty, or the message of the NaN guard (a non-finite loss or embedding,
  :class:`asd_utils.errors.NonFiniteError`) — the row's other numbers are then missing.

``--size tiny`` with a few steps runs the same on a CPU in about a minute (a test does). The
machine's load is recorded (``machine.load_recorded``). Results: a table on stdout and
``bench_gpu.csv`` in ``--output``.

    python benchmarks/bench_gpu.py                      # on a GPU machine (a few minutes)
    python benchmarks/bench_gpu.py --size tiny --steps 2 --batch 2 --accumulation 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from machine import load_recorded

from asd_utils import config, data, registry, scoring, systems, training
from asd_utils.config import schema
from asd_utils.data import synth
from asd_utils.errors import NonFiniteError
from asd_utils.frontends.features import beats_fbank

DEFAULT_SYSTEMS = registry.one_per_recipe(registry.paper())
SIZE_KEYS = ("blocks", "width", "heads")  # a section's architecture beside its backbone size


class Stop(Exception):
    """Raised by :class:`StopAfter`: a run killed mid-training."""


class StopAfter(torch.utils.data.Dataset):
    def __init__(self, dataset, items: int):
        self.dataset, self.items, self.served = dataset, items, 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        self.served += 1
        if self.served > self.items:
            raise Stop
        return self.dataset[key]


def fbank_check(device: str, clips: int = 64, seconds: float = 10.0) -> dict:
    """BEATs' batched fbank of ``clips`` random clips on ``device`` against the CPU's: the
    largest absolute difference and clips/s of each (the device's timed after a warm-up)."""
    waveform = 0.1 * torch.randn(clips, int(seconds * 16000), generator=torch.Generator())
    rates = {}
    for where in dict.fromkeys(("cpu", device)):
        moved = waveform.to(where)
        beats_fbank(moved[:2])  # warm-up (cuFFT plans)
        if where == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = beats_fbank(moved)
        if where == "cuda":
            torch.cuda.synchronize()
        rates[where] = (clips / (time.perf_counter() - start), out.cpu())
    difference = float((rates[device][1] - rates["cpu"][1]).abs().max())
    return {
        "fbank_max_abs_diff": difference,
        "fbank_cpu_clips_per_s": rates["cpu"][0],
        "fbank_device_clips_per_s": rates[device][0],
    }


def bench_profile(args, device: str, precision: str = "fp32") -> schema.Profile:
    """The paper profile (``model_copy``), at ``--size``, with ``--steps``, the batch settings
    asked and ``precision`` (bf16 or fp32), in the sections of the ``--systems`` (at tiny size
    with the quick profile's :data:`SIZE_KEYS`)."""
    profile = config.load_profile("paper")
    quick = config.load_profile("quick")
    train_changes = dict(
        steps=args.steps,
        warmup_steps=max(1, args.steps // 4),
        checkpoint_every=max(1, args.steps // 2),
        mixed_precision="bf16" if precision == "bf16" else "no",
    )
    if args.batch:
        train_changes["batch_size"] = args.batch
    if args.accumulation:
        train_changes["grad_accumulation"] = args.accumulation
    sections = {}
    for name in dict.fromkeys(registry.get(system).section for system in args.systems):
        section, small = getattr(profile, name), getattr(quick, name)
        changes = {"size": args.size, "checkpoint": ""}
        if args.size == "tiny":
            changes.update(
                {k: getattr(small, k) for k in SIZE_KEYS if k in type(small).model_fields}
            )
        changes["train"] = section.train.model_copy(update=train_changes)
        sections[name] = section.model_copy(update=changes)
    return profile.model_copy(update=sections)


def run_system(system: str, profile: schema.Profile, root: Path, out: Path, device):
    """One system's row; a non-finite loss or embedding gives a row that says so."""
    try:
        return measure_system(system, profile, root, out, device)
    except NonFiniteError as err:
        return {"system": system, "non_finite": str(err)}


def measure_system(system: str, profile: schema.Profile, root: Path, out: Path, device):
    settings = systems.train_config(profile, system)
    clips_per_step = settings.batch_size * settings.grad_accumulation
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    result = systems.train_system(root, profile, system, out / "full", progress=False)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    steps_per_s = result.steps / result.loop_seconds
    full_steps = registry.settings(config.load_profile("paper"), system).train.steps

    clips = data.index_dataset(root)
    channel, preprocess, _ = systems.front_end(profile, system)
    model = result.ema_model.to(device)
    autocast = result.precision.autocast
    start = time.perf_counter()
    scoring.extract_embeddings(
        model, clips, 16, channel, preprocess, autocast, progress=False, name=system
    )
    embed_rate = len(clips) / (time.perf_counter() - start)

    # kill after half the steps (past the checkpoint there), then resume in a new call
    model, loss, dataset = systems.build(str(root), profile, system, progress=False)
    folder = out / "cut" / system.replace(" ", "_")
    half = result.steps // 2
    try:
        training.train(
            model, loss, StopAfter(dataset, (half + 1) * clips_per_step), settings, folder,
            progress=False,
        )  # fmt: skip
    except Stop:
        pass
    model, loss, dataset = systems.build(str(root), profile, system, progress=False)
    resumed = training.train(model, loss, dataset, settings, folder, resume=True, progress=False)
    full_state, resumed_state = result.ema_model.state_dict(), resumed.ema_model.state_dict()
    difference = max(
        float((full_state[k].float().cpu() - resumed_state[k].float().cpu()).abs().max())
        for k in full_state
    )
    return {
        "system": system,
        "steps": result.steps,
        "steps_per_s": steps_per_s,
        "clips_per_s": steps_per_s * clips_per_step,
        "data_wait_share": result.data_seconds / result.loop_seconds,
        "peak_gib": peak,
        f"hours_for_{full_steps}_steps": full_steps / steps_per_s / 3600,
        "embed_clips_per_s": embed_rate,
        "resumed_from": resumed.start_step,
        "resume_max_abs_diff": difference,
        "non_finite": "",
    }


def run(args) -> pd.DataFrame:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}; size {args.size}, {args.steps} steps")
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        lengths = {"default": 10.0, "ToyCar": 12.0}
        if args.clip_seconds:
            lengths = {"default": args.clip_seconds}
        tree = synth.SynthConfig(
            machine_types=("ToyCar", "fan"), n_train_source=args.clips, n_train_target=2,
            n_test=2, clip_seconds=lengths,
        )  # fmt: skip
        synth.generate_dataset(tmp / "data", tree, progress=False)
        fbank = fbank_check(device)
        print(", ".join(f"{k} {v:.4g}" for k, v in fbank.items()))
        rows = []
        for precision in args.precisions or (("bf16", "fp32") if device == "cuda" else ("fp32",)):
            profile = bench_profile(args, device, precision)
            out = tmp / "out" / precision
            rows += [
                {**run_system(system, profile, tmp / "data", out, device),
                 "precision": precision}
                for system in args.systems
            ]  # fmt: skip
    table = pd.DataFrame(rows).assign(device=name, size=args.size, **fbank)
    print(table.round(4).to_markdown(index=False))
    if args.output:
        args.output.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.output / "bench_gpu.csv", index=False)
    return table


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--systems", nargs="+", choices=registry.of_kind("fine-tuned"), default=DEFAULT_SYSTEMS
    )
    parser.add_argument("--size", choices=("base", "tiny"), default="base")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument(
        "--precisions", nargs="+", choices=("bf16", "fp32"), help="default: both on CUDA"
    )
    parser.add_argument("--batch", type=int, help="clips per micro-batch (default: the profile's)")
    parser.add_argument("--accumulation", type=int, help="micro-batches per step (the profile's)")
    parser.add_argument("--clips", type=int, default=24, help="training clips per machine type")
    parser.add_argument("--clip-seconds", type=float, help="clip length (default: the real ones)")
    parser.add_argument("--output", type=Path, help="folder for bench_gpu.csv")
    parser.add_argument(
        "--settle", type=float, default=120.0, help="wait this long for idle cores (s; 0: not)"
    )
    args = parser.parse_args(argv)
    with load_recorded(args.settle):
        return run(args)


if __name__ == "__main__":
    main()
