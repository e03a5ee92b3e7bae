"""Embedding throughput of the BEATs and EAT backbones, and how close it comes to the machine.

For 10 s clips (16 kHz) in batches of 8, random weights, eval mode, ``torch.inference_mode``:
clips/s of ``model.embed`` (fbank + network) and of ``model.forward_features`` alone (the
network), the network's FLOPs per clip counted from the config (every matmul of the
projections, attention and MLP, the patch convolution, BEATs' position convolution; 2 FLOPs
per multiply-add; norms, softmax and activations left out), cross-checked with torch's
``FlopCounterMode``, and the achieved GFLOP/s as a fraction of a measured peak: the best rate
of a large ``torch.matmul`` on the same device in the same precision (float32 or bfloat16).
On the CPU torch uses as many threads as there are CPUs; on CUDA (when present) the same runs
again. Each device runs three precisions side by side: float32; ``bf16 autocast`` (what
``mixed_precision: bf16`` does, :mod:`asd_utils.models.precision`: fbank in float32, matrix products
in bfloat16); and ``bf16 weights``, the network only, a copy of the model cast to bfloat16
(inference only: what a frozen encoder could do). Each bf16 row gives the smallest cosine
similarity of its utterance embeddings to float32's. The CPU's name and bf16 flags (``amx_bf16``,
``avx512_bf16``) are printed with what ``mixed_precision: auto`` decides there. Each figure is
the best of ``--repeats`` runs after a warm-up (base models: ``--base-repeats``, kept short),
the precisions interleaved. EAT runs with ``target_length=1024`` (its 10 s recipe).

    python benchmarks/bench_backbones.py [--configs tiny base] [--repeats 5]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import time
from collections.abc import Callable
from functools import partial

import torch
from bench_fbank import best_seconds, cpu_model
from machine import load_recorded
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from asd_utils.models import precision as precision_
from asd_utils.models.beats import BEATs, BEATsConfig
from asd_utils.models.common import n_frames
from asd_utils.models.eat import EAT, EATConfig

SAMPLE_RATE = 16000


def beats_flops(cfg: BEATsConfig, frames: int) -> int:
    """BEATs' forward FLOPs for one clip of ``frames`` fbank frames (2 per multiply-add)."""
    p, e, d, f = (
        cfg.input_patch_size,
        cfg.embed_dim,
        cfg.encoder_embed_dim,
        cfg.encoder_ffn_embed_dim,
    )
    n = (frames // p) * (128 // p)
    flops = 2 * n * p * p * e  # patch Conv2d
    flops += 2 * n * e * d if e != d else 0  # post_extract_proj
    flops += 2 * n * d * (d // cfg.conv_pos_groups) * cfg.conv_pos  # grouped position Conv1d
    per_layer = 4 * 2 * n * d * d  # q, k, v, out projections
    per_layer += 2 * 2 * n * n * d  # q·kᵀ and weights·v
    per_layer += 2 * n * d * 8 if cfg.gru_rel_pos else 0  # grep_linear per head
    per_layer += 2 * 2 * n * d * f  # fc1, fc2
    return flops + cfg.encoder_layers * per_layer


def eat_flops(cfg: EATConfig, frames: int) -> int:
    """EAT's forward FLOPs for one clip of ``frames`` fbank frames (2 per multiply-add)."""
    p, d = cfg.patch_size, cfg.embed_dim
    n = (frames // p) * (cfg.mel_bins // p)
    length, hidden = n + 1, int(d * cfg.mlp_ratio)  # + the CLS token
    flops = 2 * n * p * p * d  # patch Conv2d
    per_block = 2 * length * d * 3 * d + 2 * length * d * d  # qkv, proj
    per_block += 2 * 2 * length * length * d  # q·kᵀ and weights·v
    per_block += 2 * 2 * length * d * hidden  # fc1, fc2
    return flops + cfg.depth * per_block


def counted_flops(model: torch.nn.Module, fbank: torch.Tensor, mask: torch.Tensor) -> int:
    """FLOPs of one ``forward_features`` call as torch's FlopCounterMode counts them. Its
    registry knows the CUDA attention kernels only; the CPU ones (reached through the composite
    ``scaled_dot_product_attention``) get torch's own formula for those here."""
    aten = torch.ops.aten

    def attention(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query, key, value)  # arguments arrive as shapes

    cpu_ops = (aten.scaled_dot_product_attention, aten._scaled_dot_product_flash_attention_for_cpu)
    mapping = {op: attention for op in cpu_ops}
    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        model.forward_features(fbank, mask)
    return counter.get_total_flops()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int, repeats: int) -> float:
    """Best GFLOP/s of a (size × size) @ (size × size) matmul on ``device`` in ``dtype``."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    inner = 1 if device.type == "cpu" else 20

    def run() -> None:
        for _ in range(inner):
            torch.matmul(a, b)
        synchronize(device)

    seconds = best_seconds({"matmul": run}, repeats)["matmul"]
    return 2 * size**3 * inner / seconds / 1e9


def timed(device: torch.device, autocast: bool, call: Callable[[], object]) -> Callable[[], None]:
    """``call`` under inference mode (and bfloat16 autocast if asked), synchronised."""

    def run() -> None:
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=autocast):
            call()
        synchronize(device)

    return run


# name → (autocast, weights cast to bf16, the matmul peak it is measured against)
PRECISIONS = {
    "fp32": (False, False, "fp32"),
    "bf16 autocast": (True, False, "bf16"),
    "bf16 weights": (False, True, "bf16"),
}
PEAK_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def min_cosine(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Smallest cosine similarity between matching rows (float64)."""
    return float(torch.nn.functional.cosine_similarity(reference.double(), other.double()).min())


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["tiny", "base"], choices=["tiny", "base"])
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs, tiny models")
    parser.add_argument("--base-repeats", type=int, default=2, help="timed runs, base models")
    parser.add_argument("--matmul-size", type=int, default=2048)
    args = parser.parse_args()

    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    n_samples = int(args.seconds * SAMPLE_RATE)
    frames = n_frames(n_samples)
    rows, checks, all_peaks = [], [], {}
    for device in devices:

        def measure_peaks(device=device) -> dict[str, float]:
            return {
                name: matmul_peak(device, dtype, args.matmul_size, 5)
                for name, dtype in PEAK_DTYPES.items()
            }

        peaks = measure_peaks()
        waveform = (torch.rand(args.batch, n_samples) * 1.6 - 0.8).to(device)
        for size in args.configs:
            models = {
                "BEATs": (BEATs(getattr(BEATsConfig, size)()), beats_flops),
                "EAT": (EAT(getattr(EATConfig, size)(), target_length=1024), eat_flops),
            }
            for name, (model, flops_of) in models.items():
                model = model.to(device).eval()
                with torch.inference_mode():
                    fbank, mask = model.features(waveform)
                flops = flops_of(model.config, fbank.shape[1])
                if device.type == "cpu":
                    counted = counted_flops(model, fbank[:1], mask[:1])
                    checks.append((f"{name} {size}", flops, counted))
                repeats = args.base_repeats if size == "base" else args.repeats
                cast = copy.deepcopy(model).to(torch.bfloat16)
                runs, outputs = {}, {}
                for precision, (autocast, weights, _) in PRECISIONS.items():
                    net = cast if weights else model
                    network = partial(net.forward_features, fbank, mask)
                    with (
                        torch.inference_mode(),
                        torch.autocast(device.type, torch.bfloat16, enabled=autocast),
                    ):
                        outputs[precision] = network()[0].float()
                    runs[(precision, "network")] = timed(device, autocast, network)
                    if not weights:  # the fbank needs float32 weights' buffers
                        embed = partial(model.embed, waveform)
                        runs[(precision, "embed")] = timed(device, autocast, embed)
                best = best_seconds(runs, repeats)
                for precision, (_, _, peak) in PRECISIONS.items():
                    embed_s = best.get((precision, "embed"), float("nan"))
                    rows.append(
                        (
                            f"{name} {size}",
                            device.type,
                            precision,
                            peak,
                            sum(p.numel() for p in model.parameters()),
                            flops / 1e9,
                            args.batch / embed_s,
                            args.batch / best[(precision, "network")],
                            flops * args.batch / best[(precision, "network")] / 1e9,
                            min_cosine(outputs["fp32"], outputs[precision]),
                        )
                    )
                del model, cast
        # the peak again after the models, keeping the better: a busy moment lowers one of them
        again = measure_peaks()
        peaks = {k: max(v, again[k]) for k, v in peaks.items()}
        all_peaks[device.type] = peaks
        peak_text = ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items())
        checks.append(
            (
                f"matmul peak on {device.type} ({args.matmul_size}², best before/after)",
                peak_text,
                None,
            )
        )

    gpu = f"; GPU: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "; no GPU"
    auto = precision_.resolve("auto", "cpu")
    print(
        f"CPU bf16 flags: {', '.join(precision_.cpu_flags()) or 'none'}; "
        f"mixed_precision auto on this CPU: {auto.name} ({auto.reason})"
    )
    print(
        f"Machine: {platform.processor() or platform.machine()} ({cpu_model()}), "
        f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}{gpu}, "
        f"{platform.system()}, torch {torch.__version__}; {args.seconds:g} s clips "
        f"({frames} frames), batch {args.batch}, best of {args.repeats} runs "
        f"({args.base_repeats} for base) after a warm-up; {time.strftime('%Y-%m-%d')}\n"
    )
    print(
        "| model | device | precision | parameters | GFLOP/clip | embed clips/s | × fp32 (embed) "
        "| network clips/s | × fp32 (network) | network GFLOP/s | of the matmul peak "
        "| cosine to fp32 (min) |"
    )
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    fp32_rates = {(r[0], r[1]): r[7] for r in rows if r[2] == "fp32"}
    fp32_embed = {(r[0], r[1]): r[6] for r in rows if r[2] == "fp32"}
    for name, device, precision, peak, params, gflop, embed_rate, net_rate, achieved, cos in rows:
        fraction = achieved / all_peaks[device][peak]
        embed_text, embed_ratio = "–", "–"
        if embed_rate == embed_rate:  # NaN: not run
            embed_text = f"{embed_rate:.2f}"
            embed_ratio = f"{embed_rate / fp32_embed[(name, device)]:.2f}"
        print(
            f"| {name} | {device} | {precision} | {params / 1e6:.2f} M | {gflop:.2f} "
            f"| {embed_text} | {embed_ratio} | {net_rate:.2f} "
            f"| {net_rate / fp32_rates[(name, device)]:.2f} "
            f"| {achieved:.1f} | {fraction:.0%} of {peak} | {cos:.5f} |"
        )
    print("\nFLOPs per clip, from the config vs torch's FlopCounterMode (one clip, CPU):")
    for name, ours, counted in checks:
        if counted is None:
            print(f"- {name}: {ours}")
        else:
            print(
                f"- {name}: {ours / 1e9:.3f} vs {counted / 1e9:.3f} GFLOP ({counted / ours:.3f}×)"
            )


def main() -> None:
    with load_recorded():
        run()


if __name__ == "__main__":
    main()
