"""Embeddings of clips: batched extraction by any model with an ``embed`` method, cached under
a key of everything that changes them, and saved beside a system's results (the scoring stage
reads them back; :mod:`asd_utils.scoring.backends` turns them into scores).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from asd_utils import data
from asd_utils.files import atomic_path, write_table
from asd_utils.frontends.views import load_waveform


def _embed(model: nn.Module, waveform: torch.Tensor, lengths: torch.Tensor | None):
    out = model.embed(waveform, lengths)
    return out[0] if isinstance(out, tuple | list) else out


# What the embedding caches are keyed by besides their inputs: bump it whenever a change to the
# front-ends (fbank, ANC, clip loading) or to a model's forward pass changes the numbers. A
# version, not the hash of source files: moving or documenting a module must not throw every
# cached embedding away, and a change that does matter is said here, once.
EMBEDDING_VERSION = "asd_utils embeddings 2"


def embedding_cache_key(
    model: nn.Module, table: pd.DataFrame, channel: int | None, preprocess_key: str | None, autocast
) -> str:
    """SHA-256 over everything that changes the embeddings: :data:`EMBEDDING_VERSION`, the
    model's classes (their names), every weight and buffer (names, dtypes, shapes, bytes), each
    clip's path, size and mtime, the channel or preprocessing key, the model's
    ``cache_settings()`` where it has them, and the autocast dtype. The batch size and device
    are left out (they change float rounding only).
    """
    digest = hashlib.sha256(EMBEDDING_VERSION.encode())
    settings = {"channel": channel, "preprocess": preprocess_key, "autocast": str(autocast)}
    if hasattr(model, "cache_settings"):  # e.g. the blocks and pooling of a FrozenEncoder
        settings["model"] = model.cache_settings()
    settings["classes"] = sorted({type(m).__qualname__ for m in model.modules()})
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    digest.update(data.clip_fingerprint(table).encode())
    return digest.hexdigest()


def pad_clips(clips: list[torch.Tensor]) -> torch.Tensor:
    """Clips of ``(samples,)`` or ``(channels, samples)`` → one batch zero-padded at the end,
    ``(B, samples)`` or ``(B, channels, samples)``."""
    longest = max(c.shape[-1] for c in clips)
    return torch.stack([nn.functional.pad(c, (0, longest - c.shape[-1])) for c in clips])


@torch.no_grad()
def extract_embeddings(
    model: nn.Module,
    table: pd.DataFrame,
    batch_size: int = 16,
    channel: int | None = 0,
    preprocess: Callable | None = None,
    autocast: torch.dtype | None = None,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
    preprocess_key: str | None = None,
    write_cache: bool = True,
) -> np.ndarray:
    """Utterance embeddings of every clip of ``table``, (len(table), D) float32, row-aligned.

    ``model.embed(waveform (B, samples), lengths)`` gives ``(utterance (B, D), tokens)`` (a
    backbone, :class:`asd_utils.models.heads.EmbeddingModel`) or just (B, D). Pass the EMA
    weights (``TrainResult.ema_model``, or :func:`asd_utils.training.load_weights`). Runs in
    eval mode without gradients on the model's device (its mode is restored afterwards); whole
    clips, channel ``channel`` (None: both microphones) or ``preprocess(audio)`` as
    :func:`asd_utils.frontends.views.load_waveform`. Clips are batched in order of length; a batch
    of unequal clips is zero-padded and passes ``lengths``. ``autocast``: e.g. ``torch.bfloat16``
    (a system's :func:`asd_utils.systems.resolved_precision`), on a GPU or a CPU; the outputs
    are float32 either way. ``cache_dir``: reuse or write ``embeddings_<key>.npy`` under it,
    keyed by :func:`embedding_cache_key` (the autocast dtype included); with ``preprocess``
    this needs a ``preprocess_key`` string that names the preprocessing and all its settings
    (a callable cannot be hashed reliably); ``write_cache=False`` reuses a cached file but
    never writes one (a read-only command).
    """
    if table.empty:
        raise ValueError("extract_embeddings was given an empty table")
    cache = None
    if cache_dir is not None:
        if preprocess is not None and not preprocess_key:
            raise ValueError("caching embeddings of preprocessed audio needs a preprocess_key")
        key = embedding_cache_key(model, table, channel, preprocess_key, autocast)
        cache = Path(cache_dir) / f"embeddings_{key[:32]}.npy"
        if cache.is_file():
            return np.load(cache)
    parameter = next(iter(model.parameters()), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    frames = table["frames"].to_numpy() if "frames" in table else np.zeros(len(table))
    order = np.argsort(frames, kind="stable")
    paths = table["path"].to_numpy()
    was_training = model.training
    model.eval()
    embeddings = None
    try:
        for start in tqdm(
            range(0, len(order), batch_size), desc="embedding", unit="batch", disable=not progress
        ):
            rows = order[start : start + batch_size]
            clips = [torch.from_numpy(load_waveform(paths[i], channel, preprocess)) for i in rows]
            sizes = torch.tensor([c.shape[-1] for c in clips])
            waveform = pad_clips(clips).to(device)
            lengths = None if (sizes == sizes[0]).all() else sizes.to(device)
            with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                batch = _embed(model, waveform, lengths).float().cpu().numpy()
            if embeddings is None:
                embeddings = np.empty((len(table), batch.shape[1]), np.float32)
            embeddings[rows] = batch
    finally:
        model.train(was_training)
    if cache is not None and write_cache:
        with atomic_path(cache) as tmp, open(tmp, "wb") as f:
            np.save(f, embeddings)
    return embeddings


# --- embeddings on disk (training notebooks write them, the scoring notebook reads them) --------

EMBEDDINGS, CLIPS = "embeddings.npy", "clips.csv"


def save_embeddings(directory: str | os.PathLike, table: pd.DataFrame, embeddings: np.ndarray):
    """Write ``embeddings.npy`` (N, D) and the row-aligned clip table ``clips.csv``, atomically."""
    directory = Path(directory)
    if len(table) != len(embeddings):
        raise ValueError(f"{len(embeddings)} embeddings for {len(table)} clips")
    with atomic_path(directory / EMBEDDINGS) as tmp, open(tmp, "wb") as f:
        np.save(f, np.asarray(embeddings, dtype=np.float32))
    write_table(table.drop(columns=["embedding"], errors="ignore"), directory / CLIPS)


def load_embeddings(directory: str | os.PathLike) -> tuple[pd.DataFrame, np.ndarray]:
    """Read what :func:`save_embeddings` wrote: (clip table, embeddings)."""
    directory = Path(directory)
    table = pd.read_csv(
        directory / CLIPS,
        dtype={"section": str, "attributes": str},
        keep_default_na=False,
        na_values=[""],
    )
    table["attributes"] = table["attributes"].fillna("")
    embeddings = np.load(directory / EMBEDDINGS)
    if len(table) != len(embeddings):
        raise ValueError(f"{directory}: {len(embeddings)} embeddings for {len(table)} clips")
    return table, embeddings
