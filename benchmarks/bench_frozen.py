"""System 0's embedding throughput at base size, and what the real dev set would take.

Writes ``--clips`` stereo clips of 10 s (16 kHz, noise) to a temporary DCASE tree and runs
:func:`asd_utils.systems.training_free.embed_channels` on them as the chapter does: every clip read
once,
the near and far channels and the ANC-denoised near channel embedded by a frozen base-size
backbone (random weights: the arithmetic of the official ones), last block, band-preserving
pooling. Reported: embeddings per second (one channel of one clip), the threads torch used, the
machine's load average before and after (a shared machine is slower; the script warns), and the
extrapolated time for the real 2026 dev set (7,000 training + 1,400 test clips) with two
channels (near and far: the residual view) and with three (the ANC view too). ``--precision``
(``no``, ``bf16``, ``auto``: :mod:`asd_utils.models.precision`) as a profile's ``mixed_precision``.

    python benchmarks/bench_frozen.py [--backbone eat|beats] [--clips 16] [--batch 8]
                                      [--precision no|bf16|auto]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from machine import cpu_model, load_recorded

from asd_utils import config, data, systems
from asd_utils.frontends import anc
from asd_utils.models import precision
from asd_utils.models.frozen import FrozenEncoder
from asd_utils.systems import training_free

DEV_CLIPS = 7_000 + 1_400


def write_tree(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        name = f"section_00_source_train_normal_{i:04d}_noAttribute.wav"
        audio = rng.uniform(-0.3, 0.3, (2, 160_000)).astype(np.float32)
        data.write_wav(root / "dev_data" / "raw" / "fan" / "train" / name, audio)


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", choices=("eat", "beats"), default="eat")
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--precision", choices=precision.SETTINGS, default="auto")
    args = parser.parse_args()
    chosen = precision.resolve(args.precision, "cpu")
    torch.manual_seed(0)
    encoder = FrozenEncoder(systems.build_backbone(args.backbone, "base"), [-1], "time_mean")
    settings = anc.denoiser_settings(config.load_profile("paper").anc)
    with tempfile.TemporaryDirectory() as folder:
        write_tree(Path(folder), args.clips)
        table = data.index_dataset(folder)
        autocast = chosen.autocast
        training_free.embed_channels(  # warm-up
            encoder, table.iloc[:2], ["near"], autocast=autocast, progress=False
        )
        start = time.perf_counter()
        training_free.embed_channels(
            encoder, table, training_free.CHANNELS, settings, args.batch,
            autocast=autocast, progress=False,
        )  # fmt: skip
        seconds = time.perf_counter() - start
    rate = args.clips * len(training_free.CHANNELS) / seconds
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; precision {chosen.name} ({chosen.reason})"
    )
    print(
        f"System 0, frozen {args.backbone.upper()} base, 10 s stereo clips, batch {args.batch}: "
        f"{args.clips} clips x 3 channels in {seconds:.1f} s = {rate:.2f} embeddings/s"
    )
    for channels, what in ((2, "near + far (residual view)"), (3, "near + far + ANC")):
        hours = DEV_CLIPS * channels / rate / 3600
        print(f"real dev set, {DEV_CLIPS:,} clips x {channels} channels ({what}): {hours:.1f} h")


def main() -> None:
    with load_recorded():
        run()


if __name__ == "__main__":
    main()
