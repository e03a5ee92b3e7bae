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

from asd_utils import data, errors
from asd_utils.errors import BF16_OFF_HINT, NonFiniteError
from asd_utils.files import atomic_path, unescape_formulas, write_table
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


def length_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Row indices in batches of at most ``batch_size`` clips of one length each: lengths
    ascending, table order within a length. A batch of equal clips needs no padding and no
    mask (BEATs' padding mask is unreliable in batches: microsoft/unilm#1427)."""
    order = np.argsort(lengths, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(lengths[order])) + 1)
    return [
        batch
        for group in groups
        for batch in np.split(group, np.arange(batch_size, len(group), batch_size))
    ]


def check_finite(batch: np.ndarray, paths, name: str, autocast) -> None:
    """Raise :class:`asd_utils.errors.NonFiniteError` when a row of ``batch`` (clips, D) is not
    finite, naming ``name`` (the system), the precision, the first such clip (``paths``, the
    batch's) and how to turn bf16 off."""
    bad = np.flatnonzero(~np.isfinite(batch).all(axis=1))
    if bad.size == 0:
        return
    precision = "bf16 (autocast)" if autocast == torch.bfloat16 else str(autocast or "float32")
    more = f" and {bad.size - 1} more clip(s) of its batch" if bad.size > 1 else ""
    hint = BF16_OFF_HINT if autocast is not None else "float32: check the clip and the weights"
    raise NonFiniteError(
        f"{name}: non-finite embedding of {paths[bad[0]]}{more}, computed in {precision}; {hint}"
    )


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
    name: str = "the model",
) -> np.ndarray:
    """Utterance embeddings of every clip of ``table``, (len(table), D) float32, row-aligned.

    ``model.embed(waveform (B, samples), lengths)`` gives ``(utterance (B, D), tokens)`` (a
    backbone, :class:`asd_utils.models.heads.EmbeddingModel`) or just (B, D). Pass the EMA
    weights (``TrainResult.ema_model``, or :func:`asd_utils.training.load_weights`). Runs in
    eval mode without gradients on the model's device (its mode is restored afterwards); whole
    clips, channel ``channel`` (None: both microphones) or ``preprocess(audio)`` as
    :func:`asd_utils.frontends.views.load_waveform`. Clips are batched by length
    (:func:`length_batches`: equal clips only, no padding; a clip whose audio is not the length
    the table says is zero-padded with ``lengths``). A non-finite embedding stops with
    :class:`asd_utils.errors.NonFiniteError` naming ``name`` (the system). ``autocast``: e.g.
    ``torch.bfloat16`` (a system's :func:`asd_utils.systems.resolved_precision`), on a GPU or a
    CPU; the outputs are float32 either way. ``cache_dir``: reuse or write
    ``embeddings_<key>.npy`` under it, keyed by :func:`embedding_cache_key` (the autocast
    dtype included); with ``preprocess`` this needs a ``preprocess_key`` string that names the
    preprocessing and all its settings (a callable cannot be hashed reliably);
    ``write_cache=False`` reuses a cached file but
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
            return load_array(cache, len(table))
    parameter = next(iter(model.parameters()), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    frames = table["frames"].to_numpy() if "frames" in table else np.zeros(len(table))
    paths = table["path"].to_numpy()
    was_training = model.training
    model.eval()
    embeddings = None
    try:
        for rows in tqdm(
            length_batches(frames, batch_size), desc="embedding", unit="batch", disable=not progress
        ):
            clips = [torch.from_numpy(load_waveform(paths[i], channel, preprocess)) for i in rows]
            sizes = torch.tensor([c.shape[-1] for c in clips])
            waveform = pad_clips(clips).to(device)
            lengths = None if (sizes == sizes[0]).all() else sizes.to(device)
            with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                batch = _embed(model, waveform, lengths).float().cpu().numpy()
            check_finite(batch, paths[rows], name, autocast)
            if embeddings is None:
                embeddings = np.empty((len(table), batch.shape[1]), np.float32)
            embeddings[rows] = batch
    finally:
        model.train(was_training)
    if cache is not None and write_cache:
        with atomic_path(cache) as tmp, open(tmp, "wb") as f:
            np.save(f, embeddings)
    return embeddings


# --- embeddings on disk (the embed stage writes them beside a system's results, score reads them) -

EMBEDDINGS = "embeddings.npy"
EMBEDDED_CLIPS = "embedded_clips.csv"  # the clips of embeddings.npy, row by row (not the manifest)


def save_embeddings(directory: str | os.PathLike, table: pd.DataFrame, embeddings: np.ndarray):
    """Write ``embeddings.npy`` (N, D) and its clips, row by row, ``embedded_clips.csv``
    (:data:`EMBEDDED_CLIPS`), atomically."""
    directory = Path(directory)
    if len(table) != len(embeddings):
        raise ValueError(f"{len(embeddings)} embeddings for {len(table)} clips")
    with atomic_path(directory / EMBEDDINGS) as tmp, open(tmp, "wb") as f:
        np.save(f, np.asarray(embeddings, dtype=np.float32))
    write_table(table.drop(columns=["embedding"], errors="ignore"), directory / EMBEDDED_CLIPS)


def load_embeddings(directory: str | os.PathLike) -> tuple[pd.DataFrame, np.ndarray]:
    """Read what :func:`save_embeddings` wrote: (clip table, embeddings). Embeddings without
    their clip table are a :class:`~asd_utils.errors.RunError` saying to embed again."""
    directory = Path(directory)
    if not (directory / EMBEDDED_CLIPS).is_file():
        raise errors.RunError(
            f"{directory} has no {EMBEDDED_CLIPS} (the clips of its {EMBEDDINGS}): run the "
            "embed stage again (`asd embed`)"
        )
    table = pd.read_csv(
        directory / EMBEDDED_CLIPS,
        dtype={"section": str, "attributes": str},
        keep_default_na=False,
        na_values=[""],
    )
    table = unescape_formulas(table)
    table["attributes"] = table["attributes"].fillna("")
    return table, load_array(directory / EMBEDDINGS, len(table))


def load_array(path: str | os.PathLike, rows: int) -> np.ndarray:
    """An embeddings file (``.npy``): a float array of ``rows`` rows, never a pickled object
    array (refused unread). Else a :class:`~asd_utils.errors.RunError` naming it."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        problem = errors.one_line(err)
    else:
        if array.dtype.kind == "f" and array.ndim >= 1 and len(array) == rows:
            return array
        problem = f"{array.dtype} array of shape {array.shape}, expected {rows} float rows"
    raise errors.RunError(
        f"embeddings file {path} cannot be used ({problem}); it is not one this project "
        "wrote: delete it and run the stage again"
    )
