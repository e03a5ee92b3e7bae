"""The project's BEATs and EAT against the upstream code: the same weights, clips and threads.

Embedding throughput (clips/s) of BEATs base and EAT base, each in two implementations: this
project's (:mod:`asd_utils.models.beats`, :mod:`asd_utils.models.eat`, ``embed``: batched fbank
and network) and the upstream code run from folders given on the command line — microsoft/unilm
``beats/`` (``BEATs.py``, ``backbone.py``, ``modules.py``; ``extract_features``, its
per-clip fbank loop, then the mean over tokens as upstream pools) and the EAT Hugging Face port
(``configuration_eat.py``, ``modeling_eat.py``, ``eat_model.py``, ``model_core.py`` in one folder;
per clip ``feature_extract.py``'s fbank, zero frames to 1024, normalised, then
``extract_features`` and the CLS token). The upstream code is read, never copied into the repo.

Both sides use the same Kaldi fbank, the project's (:func:`asd_utils.frontends.features.
kaldi_fbank`): ``torchaudio.compliance.kaldi`` is replaced by a module whose ``fbank`` calls it
(torchaudio is not installed; the two agree to 2e-6; upstream calls it clip by clip).
``transformers``, which the port uses only for two base classes, is replaced by stubs of them;
timm (the port's ``Mlp``, ``DropPath``, ``to_2tuple``, ``trunc_normal_``) comes from
``--timm-src`` when it is not installed (a folder as ``tests/fixtures/backbones/README.md``
builds). Random upstream init at base size, the state
dict loaded into the project's model (strict), eval mode, float32, ``torch.no_grad``, the same
batch of seeded 10 s clips at 16 kHz; best of ``--repeats`` after a warm-up, the four runs
interleaved. Prints the largest difference of the two utterance embeddings (same weights: ~1e-6)
and a Markdown table.

    python benchmarks/bench_upstream.py --beats-src DIR --eat-src DIR [--timm-src DIR]
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch
from bench_fbank import best_seconds
from machine import cpu_model, load_recorded
from torch import nn

from asd_utils.frontends.features import eat_normalize, kaldi_fbank
from asd_utils.models.beats import BEATs, BEATsConfig
from asd_utils.models.eat import EAT, EATConfig

SAMPLE_RATE = 16000
EAT_TARGET_LENGTH = 1024  # EAT's 10 s recipe (feature_extract.py --target_length)


def stub_modules() -> None:
    """``torchaudio.compliance.kaldi.fbank`` = the project's Kaldi fbank; ``transformers`` = the
    two base classes the EAT port derives from (configuration only, no computation)."""
    kaldi = types.ModuleType("torchaudio.compliance.kaldi")

    def fbank(waveform: torch.Tensor, sample_frequency: float = 16000.0, **options):
        """torchaudio's contract: (channels, samples) → (frames, bins) of channel 0."""
        return kaldi_fbank(waveform[0], sample_rate=sample_frequency, **options)

    kaldi.fbank = fbank
    compliance = types.ModuleType("torchaudio.compliance")
    compliance.kaldi, compliance.__path__ = kaldi, []
    torchaudio = types.ModuleType("torchaudio")
    torchaudio.compliance, torchaudio.__path__ = compliance, []
    transformers = types.ModuleType("transformers")

    class PretrainedConfig:
        def __init__(self, **kwargs):
            vars(self).update(kwargs)

    class PreTrainedModel(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.config = config

    transformers.PretrainedConfig, transformers.PreTrainedModel = PretrainedConfig, PreTrainedModel
    sys.modules.update(
        {
            "torchaudio": torchaudio,
            "torchaudio.compliance": compliance,
            "torchaudio.compliance.kaldi": kaldi,
            "transformers": transformers,
        }
    )


def beats_pair(beats_src: Path) -> tuple[nn.Module, nn.Module]:
    """(upstream BEATs base, the project's BEATs base with the upstream model's weights)."""
    sys.path.insert(0, str(beats_src))
    upstream_module = importlib.import_module("BEATs")
    config = BEATsConfig.base()
    upstream = upstream_module.BEATs(upstream_module.BEATsConfig(config.to_dict())).eval()
    ours = BEATs(config)
    ours.load_upstream_state_dict(upstream.state_dict(), source="upstream BEATs")
    return upstream, ours.eval()


def eat_pair(eat_src: Path) -> tuple[nn.Module, nn.Module]:
    """(the EAT port's EAT base, the project's EAT base with the port's weights)."""
    sys.path.insert(0, str(eat_src.parent))
    configuration = importlib.import_module(f"{eat_src.name}.configuration_eat")
    modeling = importlib.import_module(f"{eat_src.name}.modeling_eat")
    config = EATConfig.base()
    upstream = modeling.EATModel(configuration.EATConfig(**config.to_dict())).eval()
    ours = EAT(config, target_length=EAT_TARGET_LENGTH)
    ours._prefixed().load_state_dict(upstream.state_dict(), strict=True)
    return upstream, ours.eval()


def upstream_eat_input(clips: torch.Tensor) -> torch.Tensor:
    """feature_extract.py's input, clip by clip: the clip minus its mean, Kaldi fbank (hanning,
    128 bins, htk_compat, no energy, no dither), zero frames to 1024, (x + 4.268) / (2 · 4.569)
    → (batch, 1, 1024, 128)."""
    kaldi = sys.modules["torchaudio.compliance.kaldi"]
    mels = []
    for clip in clips:
        waveform = (clip - clip.mean()).unsqueeze(0)
        mel = kaldi.fbank(
            waveform,
            htk_compat=True,
            sample_frequency=SAMPLE_RATE,
            use_energy=False,
            window_type="hanning",
            num_mel_bins=128,
            dither=0.0,
            frame_shift=10,
        )
        mel = nn.ZeroPad2d((0, 0, 0, EAT_TARGET_LENGTH - mel.shape[0]))(mel)
        mels.append(eat_normalize(mel))
    return torch.stack(mels).unsqueeze(1)


def seeded_clips(n: int, seconds: float) -> torch.Tensor:
    """``n`` clips of ``seconds`` at 16 kHz: seeded noise plus a chirp, (n, samples)."""
    generator = torch.Generator().manual_seed(2026)
    t = torch.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    chirp = 0.3 * torch.sin(2 * torch.pi * (200 * t + 150 * t**2))
    return chirp + 0.05 * torch.randn(n, t.numel(), generator=generator)


def runs(args: argparse.Namespace, clips: torch.Tensor) -> dict[str, Callable[[], torch.Tensor]]:
    """The four timed runs, each clips → utterance embeddings (batch, 768)."""
    beats_up, beats_ours = beats_pair(args.beats_src)
    eat_up, eat_ours = eat_pair(args.eat_src)
    return {
        "BEATs ours": lambda: beats_ours.embed(clips)[0],
        "BEATs upstream": lambda: beats_up.extract_features(clips)[0].mean(1),
        "EAT ours": lambda: eat_ours.embed(clips)[0],
        "EAT upstream": lambda: eat_up.extract_features(upstream_eat_input(clips))[:, 0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--beats-src", type=Path, required=True, help="microsoft/unilm beats/")
    parser.add_argument("--eat-src", type=Path, required=True, help="the EAT port's folder")
    parser.add_argument("--timm-src", type=Path, help="a folder holding timm's layers")
    parser.add_argument("--clips", type=int, default=16, help="clips, all in one batch")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.timm_src is not None:
        sys.path.insert(0, str(args.timm_src))
    torch.set_num_threads(args.threads)
    stub_modules()
    clips = seeded_clips(args.clips, args.seconds)
    timed = runs(args, clips)
    with torch.no_grad():
        for model in ("BEATs", "EAT"):
            gap = (timed[f"{model} ours"]() - timed[f"{model} upstream"]()).abs().max()
            print(f"{model}: largest difference of the utterance embeddings {float(gap):.2e}")
        with load_recorded(limit_s=0.0) as load:
            best = best_seconds(timed, args.repeats)
    print(
        f"\n{cpu_model()}, torch {torch.__version__}, {args.threads} threads, float32, "
        f"{args.clips} clips of {args.seconds:g} s in one batch, best of {args.repeats} after a "
        f"warm-up, load average {load['load_before']} → {load['load_after']}, "
        f"{time.strftime('%Y-%m-%d')}\n"
    )
    print("| model | ours clips/s | upstream clips/s | ratio (ours / upstream) |")
    print("| --- | ---: | ---: | ---: |")
    for model in ("BEATs base", "EAT base"):
        name = model.split()[0]
        ours, upstream = args.clips / best[f"{name} ours"], args.clips / best[f"{name} upstream"]
        print(f"| {model} | {ours:.2f} | {upstream:.2f} | {ours / upstream:.2f} |")


if __name__ == "__main__":
    main()
