"""The training-free systems (a frozen encoder, no training: System 0 on both microphones, System
6 on W1 audio) and the log-mel floor.

**System 0** embeds every clip with a pre-trained EAT or BEATs as it is
(:class:`asd_utils.models.frozen.FrozenEncoder`, the profile's ``training_free`` section), once
per channel: the near microphone, the far microphone, and the ANC-denoised near channel (System
3's front-end, the profile's ``anc`` section). A clip is read once for all three; each channel's
embeddings are cached under a key of everything that changes them. The **channel views**
(:data:`VIEWS`) are computed from the cached embeddings, so comparing them costs no further
pass of the encoder.

The **log-mel floor** is no model at all: each clip's mean and standard deviation per mel band
(the 128-band Kaldi fbank of the backbones, near channel), standardised per machine type with the
statistics of its training clips, scored by the same back ends. A learned system that does not
beat it has learned nothing a spectrum analyser does not show.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from asd_utils import data, registry, scoring, systems
from asd_utils.config.schema import Profile, TrainingFree
from asd_utils.files import atomic_path
from asd_utils.frontends import anc, twochannel
from asd_utils.frontends.features import kaldi_fbank
from asd_utils.models import precision
from asd_utils.models.common import n_frames, prefix_mask
from asd_utils.models.frozen import FrozenEncoder, block_numbers, transformer_blocks

SYSTEM = registry.of_kind("training-free")[0]  # System 0
FLOOR = registry.of_kind("floor")[0]  # the log-mel floor
CHANNELS = ("near", "far", "anc", "w1", "ss")
VIEWS = {
    "near": "the near microphone",
    "far": "the far microphone",
    "residual": "near − α · far: what the near microphone has that the far one does not",
    "concat": "[near, far]: both embeddings side by side",
    "anc": "the ANC-denoised near channel (System 3's front-end)",
    "w1": "the near channel less the far one through a fixed per-bin filter (W1)",
    "ss": "the near channel's magnitude less the far one's (spectral subtraction)",
}
VIEW_CHANNELS = {
    "near": ("near",),
    "far": ("far",),
    "residual": ("near", "far"),
    "concat": ("near", "far"),
    "anc": ("anc",),
    "w1": ("w1",),
    "ss": ("ss",),
}


def available_views(clips: pd.DataFrame) -> tuple[list[str], str]:
    """The views these clips allow, and a sentence when some are missing ("" otherwise): mono
    clips (the 2020–2025 editions) have no far microphone, so only the near view is left."""
    mono = clips[clips["channels"] < 2]
    if mono.empty:
        return list(VIEWS), ""
    note = (
        f"{SYSTEM} runs with the near view only: {len(mono):,} of {len(clips):,} clips are mono "
        f"(no far microphone, e.g. {mono['path'].iloc[0]}), so the far, residual, concatenated "
        "and ANC views do not exist for this data"
    )
    return ["near"], note


def cache_dir(output_root: str | os.PathLike) -> Path:
    """Where a run caches the frozen encoders' embeddings and the floor's statistics:
    ``<output root>/training/frozen`` (the folder's name is kept, so nothing cached moves)."""
    return Path(output_root) / "training" / "frozen"


def channels_for(views: Sequence[str]) -> list[str]:
    """The channels the views need, in :data:`CHANNELS` order."""
    needed = {c for v in views for c in VIEW_CHANNELS[v]}
    return [c for c in CHANNELS if c in needed]


def view(
    embeddings: dict[str, np.ndarray], name: str, alpha: float = 0.5, layer: int = -1
) -> np.ndarray:
    """One view (:data:`VIEWS`) of per-channel embeddings ``{channel: (N, layers, dim)}`` at
    position ``layer`` of the stored layers: (N, dim), or (N, 2 · dim) for ``concat``."""
    if name not in VIEWS:
        raise ValueError(f"unknown view {name!r}; choose one of {list(VIEWS)}")
    missing = [c for c in VIEW_CHANNELS[name] if c not in embeddings]
    if missing:
        raise ValueError(f"view {name!r} needs the {' and '.join(missing)} channel embeddings")
    at = {c: np.asarray(e[:, layer], dtype=np.float32) for c, e in embeddings.items()}
    if name == "residual":
        return twochannel.residual(at["near"], at["far"], alpha)
    if name == "concat":
        return np.concatenate([at["near"], at["far"]], axis=1)
    return at[name]


# --- the encoder ----------------------------------------------------------------------------------


def stored_layers(section: TrainingFree) -> list[int]:
    """The profile's ``layer`` and the analysis ``sweep_layers``, as the encoder stores them."""
    return [section.layer, *section.sweep_layers]


def build_encoder(
    profile: Profile, seed: int | None = None, system: str = SYSTEM
) -> tuple[FrozenEncoder, TrainingFree]:
    """A training-free system's frozen encoder (default System 0, the profile's ``training_free``
    section), and its section (checkpoint resolved as for Systems 1–2: ``$EAT_CHECKPOINT`` /
    ``$BEATS_CHECKPOINT`` first). Without a checkpoint the backbone has random weights drawn from
    the profile's seed."""
    section = systems.settings(profile, system)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(profile.seed if seed is None else seed)
        backbone = systems.build_backbone(section.backbone, section.size, section.checkpoint)
    encoder = FrozenEncoder(backbone, stored_layers(section), section.pooling, section.gamma)
    return encoder, section


def layer_position(encoder: FrozenEncoder, layer: int) -> int:
    """Where block ``layer`` (profile numbering, −1 = last) sits among the stored blocks."""
    number = block_numbers([layer], len(transformer_blocks(encoder.backbone)))[0]
    if number not in encoder.blocks:
        raise ValueError(f"block {layer} is not stored (stored: blocks {encoder.blocks})")
    return encoder.blocks.index(number)


# --- one pass over the clips -------------------------------------------------------------------


def _batches(
    table: pd.DataFrame, batch_size: int, progress: bool, desc: str
) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """``(rows, audio (B, channels, samples), lengths (B,))``, clips of one length per batch
    (:func:`asd_utils.scoring.length_batches`; zero-padded only where a clip's audio is not the
    length the table says), every clip read once."""
    frames = table["frames"].to_numpy() if "frames" in table else np.zeros(len(table))
    paths = table["path"].to_numpy()
    for rows in tqdm(
        scoring.length_batches(frames, batch_size), desc=desc, unit="batch", disable=not progress
    ):
        clips = [torch.from_numpy(data.read_audio(paths[i])) for i in rows]
        lengths = torch.tensor([c.shape[1] for c in clips])
        width = max(c.shape[0] for c in clips)
        audio = torch.zeros(len(clips), width, int(lengths.max()))
        for j, clip in enumerate(clips):
            audio[j, : clip.shape[0], : clip.shape[1]] = clip
        yield rows, audio, lengths


def _channel_key(encoder: nn.Module, table, channel: str, denoiser: dict, autocast) -> str:
    front = "anc:" + ",".join(f"{k}={v}" for k, v in sorted(denoiser.items()))
    ss = f"ss:beta={twochannel.SS_BETA},gamma={twochannel.SS_GAMMA}"
    preprocess = {"near": "near", "far": "far", "anc": front, "w1": "w1", "ss": ss}[channel]
    return scoring.embedding_cache_key(
        encoder, table, CHANNELS.index(channel), preprocess, autocast
    )


def _per_clip(front, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """A whole-clip two-channel front end (:mod:`asd_utils.frontends.twochannel`) of each clip
    of a zero-padded batch ``(B, channels, samples)``, on its own samples: ``(B, samples)``."""
    out = torch.zeros(audio.shape[0], audio.shape[2])
    for j, n in enumerate(lengths.tolist()):
        clip = audio[j, :2, :n].numpy()
        out[j, :n] = torch.from_numpy(front(clip[0], clip[1]))
    return out


def embed_channels(
    encoder: FrozenEncoder,
    table: pd.DataFrame,
    channels: Sequence[str] = CHANNELS,
    denoiser: dict | None = None,
    batch_size: int = 32,
    cache_dir: str | os.PathLike | None = None,
    autocast: torch.dtype | None = None,
    progress: bool = True,
    write_cache: bool = True,
) -> dict[str, np.ndarray]:
    """Embeddings of every clip of ``table`` per channel: ``{channel: (N, layers, dim)}``.

    ``channels`` from :data:`CHANNELS`; ``anc`` denoises the near channel with the far one
    (:func:`asd_utils.frontends.anc.denoise` with the keyword options ``denoiser``, from
    :func:`asd_utils.frontends.anc.denoiser_settings`), a whole batch at once (the canceller is
    causal, so the zero padding after a short clip does not change it). Each channel is cached
    as ``frozen_<key>.npy`` under ``cache_dir``, keyed by the weights, blocks, pooling, clips,
    channel and front-end settings (:func:`asd_utils.scoring.embedding_cache_key`): a cached
    channel is read, the others computed in one pass that reads each clip once (and cached
    unless ``write_cache`` is False: a read-only run, ``asd detect``).
    """
    if table.empty:
        raise ValueError("embed_channels was given an empty table")
    unknown = [c for c in channels if c not in CHANNELS]
    if unknown:
        raise ValueError(f"unknown channel(s) {unknown}; choose from {CHANNELS}")
    denoiser = dict(denoiser or {})
    out, paths = {}, {}
    for channel in channels:
        if cache_dir is not None:
            key = _channel_key(encoder, table, channel, denoiser, autocast)
            paths[channel] = Path(cache_dir) / f"frozen_{key[:32]}.npy"
            if paths[channel].is_file():
                out[channel] = np.load(paths[channel])
    todo = [c for c in channels if c not in out]
    if not todo:
        return {c: out[c] for c in channels}
    parameter = next(iter(encoder.parameters()), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    computed_in = autocast or (parameter.dtype if parameter is not None else None)  # bf16 copy
    computed_in = None if computed_in == torch.float32 else computed_in
    result = {c: np.empty((len(table), len(encoder.blocks), encoder.dim), np.float32) for c in todo}
    for rows, audio, lengths in _batches(
        table, batch_size, progress, f"embedding {'+'.join(todo)}"
    ):
        valid = None if bool((lengths == lengths[0]).all()) else lengths.to(device)
        inputs = {}
        if "near" in todo:
            inputs["near"] = audio[:, 0]
        if "far" in todo:
            if audio.shape[1] < 2:
                raise data.DataError(f"{table['path'].iloc[rows[0]]} has no far channel (mono)")
            inputs["far"] = audio[:, 1]
        if "anc" in todo:
            denoised = anc.denoise(audio[:, :2], **denoiser).float()
            inputs["anc"] = denoised.masked_fill(~prefix_mask(lengths, denoised.shape[1]), 0.0)
        for name in ("w1", "ss"):
            if name in todo:  # fitted over the whole clip: each on its own samples, no padding
                inputs[name] = _per_clip(getattr(twochannel, name), audio, lengths)
        for channel, waveform in inputs.items():
            with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                batch = encoder.embed(waveform.to(device), valid).float().cpu().numpy()
            name = f"{SYSTEM} ({channel})"
            scoring.check_finite(batch, table["path"].to_numpy()[rows], name, computed_in)
            result[channel][rows] = batch
    for channel in todo:
        if channel in paths and write_cache:
            with atomic_path(paths[channel]) as tmp, open(tmp, "wb") as f:
                np.save(f, result[channel])
        out[channel] = result[channel]
    return {c: out[c] for c in channels}


def embed(
    profile: Profile,
    table: pd.DataFrame,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    system: str = SYSTEM,
    write_cache: bool = True,
) -> tuple[dict[str, np.ndarray], FrozenEncoder, TrainingFree]:
    """A training-free system for a run (default System 0): the frozen encoder of its section, on
    the channels of its ``view`` and ``sweep_views`` (an analysis) that the clips allow, on the
    GPU when there is one, in the precision ``mixed_precision`` resolves to there
    (:func:`asd_utils.models.precision.resolve`; the fbank, the ANC and the pooling stay float32).
    bf16 is autocast on a GPU; on a CPU it is a copy of the encoder with bf16 weights (a frozen
    encoder needs no float32 master weights, and on the Xeon's AMX it ran EAT base at 3.75x
    float32 against autocast's 2.62x, cosine to float32 0.99993;
    ``benchmarks/bench_backbones.py``). Returns ``(embeddings, encoder, section)``: the float32
    encoder with its ``precision`` (the decision,
    :meth:`asd_utils.models.precision.Precision.to_dict`, and ``how``), the section;
    see :func:`embed_channels` (the cache key holds the weights' dtype and the autocast;
    ``write_cache``: False reads the cache, writes none)."""
    encoder, section = build_encoder(profile, system=system)
    chosen = systems.resolved_precision(profile, system)
    device = precision.default_device()
    encoder.to(device)
    runner, autocast, how = encoder, chosen.autocast, "bf16 autocast" if chosen.bf16 else "float32"
    if chosen.bf16 and device.type == "cpu":
        runner, autocast, how = copy.deepcopy(encoder).to(torch.bfloat16), None, "bf16 weights"
    encoder.precision = {**chosen.to_dict(), "how": how}
    views, _ = available_views(table)
    views = [v for v in (section.view, *section.sweep_views) if v in views]
    embeddings = embed_channels(
        runner,
        table,
        channels_for(views),
        anc.denoiser_settings(profile.anc),
        section.embed_batch_size,
        cache_dir,
        autocast,
        progress,
        write_cache,
    )
    return embeddings, encoder.cpu(), section


def bands(encoder: FrozenEncoder, section: TrainingFree) -> int:
    """Frequency bands in one of the encoder's vectors: its ``n_freq`` for the band-preserving
    poolings (``time_*``), else 1."""
    return encoder.n_freq if section.pooling.startswith("time_") else 1


# --- the log-mel floor ----------------------------------------------------------------------------

N_MELS = 128


# bump when the log-mel statistics' numbers change (a version, not the hash of source files:
# see asd_utils.scoring.EMBEDDING_VERSION)
FLOOR_VERSION = "asd_utils log-mel floor 2"


def _source_key(table: pd.DataFrame) -> str:
    digest = hashlib.sha256(FLOOR_VERSION.encode())
    digest.update(data.clip_fingerprint(table).encode())
    return digest.hexdigest()


def logmel_statistics(
    table: pd.DataFrame,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 64,
    progress: bool = True,
    write_cache: bool = True,
) -> np.ndarray:
    """Each clip's mean and standard deviation per mel band over its frames, near channel:
    (N, 2 · 128) float32 ([means, deviations]). The log-mel is the backbones' 128-band Kaldi
    fbank (25 ms windows every 10 ms); only each clip's own frames count in a padded batch.
    Cached as ``logmel_<key>.npy`` under ``cache_dir`` (clips and code as the key; read only
    when ``write_cache`` is False)."""
    if table.empty:
        raise ValueError("logmel_statistics was given an empty table")
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"logmel_{_source_key(table)[:32]}.npy"
        if path.is_file():
            return np.load(path)
    out = np.empty((len(table), 2 * N_MELS), np.float32)
    for rows, audio, lengths in _batches(table, batch_size, progress, "log-mel statistics"):
        fbank = kaldi_fbank(audio[:, 0], 16000, N_MELS, window_type="hanning")  # (B, T, 128)
        mask = prefix_mask(n_frames(lengths), fbank.shape[1]).unsqueeze(-1).to(fbank.dtype)
        count = mask.sum(1)
        mean = (fbank * mask).sum(1) / count
        std = ((((fbank - mean.unsqueeze(1)) * mask) ** 2).sum(1) / count).sqrt()
        out[rows] = torch.cat([mean, std], dim=1).numpy()
    if path is not None and write_cache:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, out)
    return out


def standardise_per_machine(features: np.ndarray, table: pd.DataFrame) -> np.ndarray:
    """Each feature z-scored per machine type with the mean and standard deviation of that
    machine type's training clips (all sections): no test clip informs its own scale."""
    features = np.asarray(features, dtype=np.float64)
    out = np.empty_like(features)
    machine = table["machine_type"].to_numpy()
    train = table["split"].to_numpy() == "train"
    for value in pd.unique(machine):
        rows = machine == value
        reference = features[rows & train]
        if len(reference) < 2:
            raise ValueError(f"{value}: needs at least 2 training clips to standardise")
        out[rows] = (features[rows] - reference.mean(0)) / np.maximum(reference.std(0), 1e-6)
    return out.astype(np.float32)


def floor_embeddings(
    table: pd.DataFrame, cache_dir: str | os.PathLike | None = None, progress: bool = True
) -> np.ndarray:
    """The log-mel floor's vectors: :func:`logmel_statistics`, :func:`standardise_per_machine`."""
    return standardise_per_machine(logmel_statistics(table, cache_dir, progress=progress), table)
