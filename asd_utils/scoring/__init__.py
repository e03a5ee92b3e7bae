"""Anomaly scores from embeddings: batched extraction (optionally cached), KNN scoring and the
other scoring back ends (:data:`BACKENDS`).

Every system scores the same way (XJU report, sec. 3.2): embed the normal training clips of a
machine type and section, and score a clip by the cosine distance to its nearest training
embeddings (Table 1: K = 1), against the source and the target training clips separately,
keeping the smaller distance (Wilkinghoff's practice, xju-system.md), so that the 10 target
clips are not drowned by the 990 source clips. Works for any model with an ``embed`` method.
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
from asd_utils.errors import BF16_OFF_HINT, NonFiniteError
from asd_utils.files import atomic_path, write_table
from asd_utils.frontends.views import load_waveform

# --- embeddings ----------------------------------------------------------------------------------


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
    ``embeddings_<key>.npy`` under it, keyed by :func:`embedding_cache_key` (the autocast dtype
    included); with ``preprocess`` this needs a ``preprocess_key`` string that names the
    preprocessing and all its settings (a callable cannot be hashed reliably).
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
    if cache is not None:
        with atomic_path(cache) as tmp, open(tmp, "wb") as f:
            np.save(f, embeddings)
    return embeddings


# --- KNN scores ----------------------------------------------------------------------------------


def _normalise(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_scores(
    train_embeddings: np.ndarray,
    train_domain: np.ndarray | None,
    test_embeddings: np.ndarray | None = None,
    k: int = 1,
) -> np.ndarray:
    """KNN anomaly scores: mean cosine distance to the k nearest training embeddings, (N,).

    Cosine distance = 1 − cos(a, b), in [0, 2]. The k nearest are taken within each domain of
    ``train_domain`` (M,) separately (e.g. ``"source"`` and ``"target"``) and the smallest of
    the per-domain scores is kept; ``train_domain=None``: one reference set. With k = 1 (Table 1)
    the score is the distance to the nearest embedding; for k > 1 it is the MEAN distance of the
    k nearest (smoother than the k-th alone), over fewer when a domain has fewer than k clips.
    ``test_embeddings=None`` scores the training clips themselves, leave-one-out: each against
    the others only, as honest training scores for the decision threshold and for normalising
    scores across systems. (M, D) and (N, D) inputs; one (N, M) matrix product.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, not {k}")
    reference = _normalise(train_embeddings)
    queries = reference if test_embeddings is None else _normalise(test_embeddings)
    if queries.shape[1] != reference.shape[1]:
        raise ValueError(f"embedding sizes differ: {queries.shape[1]} vs {reference.shape[1]}")
    distance = 1.0 - queries @ reference.T  # (N, M)
    if test_embeddings is None:
        np.fill_diagonal(distance, np.inf)
    domain = np.zeros(len(reference)) if train_domain is None else np.asarray(train_domain)
    if len(domain) != len(reference):
        raise ValueError(f"{len(domain)} domains for {len(reference)} training embeddings")
    scores = np.full(len(queries), np.inf)
    for value in np.unique(domain):
        block = distance[:, domain == value]
        kk = min(k, block.shape[1])
        nearest = np.partition(block, kk - 1, axis=1)[:, :kk]
        finite = np.isfinite(nearest)
        count = finite.sum(1)
        mean = np.where(finite, nearest, 0.0).sum(1) / np.maximum(count, 1)
        scores = np.minimum(scores, np.where(count > 0, mean, np.inf))
    if not np.isfinite(scores).all():
        raise ValueError("a clip has no reference embedding (one training clip, leave-one-out?)")
    return scores


# --- scoring back ends ---------------------------------------------------------------------------
#
# What a score is, given the normal training embeddings of a section (the reference) and their
# domains. Every back end scores each domain's reference set separately and keeps the smaller
# score, as the paper's KNN does, so the ten target clips are never drowned by the source clips.
# Written here rather than taken from a library: scikit-learn's neighbour and outlier classes
# have no per-domain minimum, no cosine k-means, and no leave-one-out self-scores; the arithmetic
# is a few matrix products. k-means itself is scikit-learn's.

BACKENDS = {
    "knn": "the paper's KNN: cosine distance to the nearest reference (K from the system)",
    "kmeans": "KNN against k-means centroids of the source clips (the target clips as they are)",
    "smote": "KNN after oversampling the target clips (SMOTE-style interpolation between them)",
    "local": "KNN divided by the nearest reference's own neighbourhood distance (locally rescaled)",
}
BACKEND_DEFAULTS = {
    "kmeans_centroids": 16,
    "smote_per_clip": 9,
    "smote_neighbours": 5,
    "local_k": 5,
    "folds": 5,
}


def _cosine_distance(queries: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return 1.0 - _normalise(queries) @ _normalise(reference).T


def _kmeans_centroids(points: np.ndarray, n_centroids: int, seed: int) -> np.ndarray:
    """Unit-length centroids of unit-length ``points`` (k-means on the sphere's chords)."""
    from sklearn.cluster import KMeans

    points = _normalise(points)
    n = min(n_centroids, len(points))
    if n == len(points):
        return points
    fit = KMeans(n_clusters=n, n_init=1, random_state=seed).fit(points)
    return _normalise(fit.cluster_centers_)


def _smote(points: np.ndarray, per_clip: int, neighbours: int, rng) -> np.ndarray:
    """``points`` plus ``per_clip`` synthetic points per point: ``x + u (x_j - x)``, x_j one of
    x's ``neighbours`` nearest others (cosine), u ~ U(0, 1) (Chawla et al., JAIR 2002)."""
    points = _normalise(points)
    if len(points) < 2 or per_clip == 0:
        return points
    distance = _cosine_distance(points, points)
    np.fill_diagonal(distance, np.inf)
    kk = min(neighbours, len(points) - 1)
    nearest = np.argsort(distance, axis=1)[:, :kk]  # (n, kk)
    origin = np.repeat(np.arange(len(points)), per_clip)
    partner = nearest[origin, rng.integers(0, kk, size=len(origin))]
    u = rng.random((len(origin), 1))
    synthetic = points[origin] + u * (points[partner] - points[origin])
    return np.concatenate([points, synthetic])


def _domain_sets(reference: np.ndarray, domain: np.ndarray | None) -> list[tuple[str, np.ndarray]]:
    domain = np.zeros(len(reference), dtype=object) if domain is None else np.asarray(domain)
    if len(domain) != len(reference):
        raise ValueError(f"{len(domain)} domains for {len(reference)} training embeddings")
    return [(str(d), reference[domain == d]) for d in pd.unique(domain)]


def backend_scores(
    reference: np.ndarray,
    domain: np.ndarray | None,
    queries: np.ndarray,
    backend: str = "knn",
    k: int = 1,
    options: dict | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Scores of ``queries`` (N, D) against the normal ``reference`` (M, D) with one back end
    (:data:`BACKENDS`), each domain of ``domain`` (M,) separately, the minimum kept; (N,).

    - ``knn``: :func:`knn_scores` (mean cosine distance to the ``k`` nearest).
    - ``kmeans``: the source references (domain ``"source"``, or all when no domains are given)
      replaced by ``kmeans_centroids`` k-means centroids (Wilkinghoff's DCASE 2023 system uses
      16), the other domains kept clip by clip; then KNN.
    - ``smote``: the target references (domain ``"target"``) joined by ``smote_per_clip``
      interpolations each toward one of their ``smote_neighbours`` nearest target neighbours;
      then KNN. The few target clips cover the space between them.
    - ``local``: the nearest reference r's cosine distance divided by r's own neighbourhood
      distance (mean distance to its ``local_k`` nearest other references of its domain):
      a domain whose clips lie far apart (the ten target clips) is measured in its own units.

    ``options`` override :data:`BACKEND_DEFAULTS`; ``seed`` fixes k-means and the interpolations.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown back end {backend!r}; choose one of {sorted(BACKENDS)}")
    settings = {**BACKEND_DEFAULTS, **(options or {})}
    if backend == "knn":
        return knn_scores(reference, domain, queries, k)
    rng = np.random.default_rng(seed)
    sets = _domain_sets(reference, domain)
    no_domains = domain is None or len(sets) == 1
    scores = np.full(len(queries), np.inf)
    for name, members in sets:
        if backend == "kmeans" and (name == "source" or no_domains):
            members = _kmeans_centroids(members, settings["kmeans_centroids"], seed)
        if backend == "smote" and name == "target":
            members = _smote(members, settings["smote_per_clip"], settings["smote_neighbours"], rng)
        if backend == "local":
            scores = np.minimum(scores, _local_scores(members, queries, settings["local_k"]))
        else:
            scores = np.minimum(scores, knn_scores(members, None, queries, k))
    return scores


def _local_scores(reference: np.ndarray, queries: np.ndarray, local_k: int) -> np.ndarray:
    if len(reference) < 2:
        return knn_scores(reference, None, queries, 1)
    own = _cosine_distance(reference, reference)
    np.fill_diagonal(own, np.inf)
    kk = min(local_k, len(reference) - 1)
    radius = np.partition(own, kk - 1, axis=1)[:, :kk].mean(1)  # (M,)
    distance = _cosine_distance(queries, reference)  # (N, M)
    nearest = distance.argmin(1)
    return distance[np.arange(len(queries)), nearest] / np.maximum(radius[nearest], 1e-9)


def training_scores(
    reference: np.ndarray,
    domain: np.ndarray | None,
    backend: str = "knn",
    k: int = 1,
    options: dict | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Honest scores of the training clips themselves, (M,): for the paper's KNN leave-one-out
    (each against the others, :func:`knn_scores`); for the other back ends out-of-fold: the
    clips of each domain dealt into ``folds`` folds in turn, each fold scored by the back end
    fitted on the other folds (a back end fitted on a clip scores it too well)."""
    if backend == "knn":
        return knn_scores(reference, domain, None, k)
    settings = {**BACKEND_DEFAULTS, **(options or {})}
    labels = np.zeros(len(reference), dtype=object) if domain is None else np.asarray(domain)
    fold = np.empty(len(reference), dtype=int)
    for value in pd.unique(labels):
        members = np.flatnonzero(labels == value)
        fold[members] = np.arange(len(members)) % settings["folds"]
    scores = np.full(len(reference), np.nan)
    for f in np.unique(fold):
        held_out = fold == f
        fit = ~held_out
        scores[held_out] = backend_scores(
            reference[fit],
            None if domain is None else labels[fit],
            reference[held_out],
            backend,
            k,
            settings,
            seed,
        )
    return scores


def score_system(
    table: pd.DataFrame,
    embeddings: np.ndarray | None = None,
    k: int = 1,
    backend: str = "knn",
    options: dict | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Scores of every clip, per (machine_type, section), for any embedding model.

    ``table``: clip table rows (train and test); ``embeddings`` (len(table), D) row-aligned, or
    None to take them from an ``embedding`` column of arrays. Test clips are scored against all
    training clips of their section with the back end ``backend`` (:func:`backend_scores`; the
    paper's KNN by default, source/target minimum), training clips by
    :func:`training_scores` (leave-one-out or out-of-fold). Returns the table's columns
    (without ``embedding``) plus ``anomaly_score``, same rows and index: the shape
    :func:`asd_utils.evaluation.official.write_submission` and
    :func:`asd_utils.evaluation.metrics.evaluate` take.
    """
    if embeddings is None:
        embeddings = np.stack(table["embedding"].to_numpy())
    embeddings = np.asarray(embeddings)
    if len(embeddings) != len(table):
        raise ValueError(f"{len(embeddings)} embeddings for {len(table)} clips")
    if backend not in BACKENDS:
        raise ValueError(f"unknown back end {backend!r}; choose one of {sorted(BACKENDS)}")
    scores = np.full(len(table), np.nan)
    groups = table.reset_index(drop=True).groupby(["machine_type", "section"], sort=False)
    for (machine_type, section), group in groups:
        rows = group.index.to_numpy()
        train = group["split"].to_numpy() == "train"
        if train.sum() < 2:
            raise ValueError(f"{machine_type} section {section}: needs at least 2 training clips")
        domain = group["domain"].to_numpy()[train]
        domain = None if pd.isna(domain).any() else domain.astype(str)
        reference = embeddings[rows[train]]
        scores[rows[train]] = training_scores(reference, domain, backend, k, options, seed)
        if (~train).any():
            scores[rows[~train]] = backend_scores(
                reference, domain, embeddings[rows[~train]], backend, k, options, seed
            )
    out = table.drop(columns=["embedding"], errors="ignore").copy()
    out["anomaly_score"] = scores
    return out


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
