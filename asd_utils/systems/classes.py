"""Classes for every machine type: names where file names carry attributes, pseudo-attributes
(clusters of frozen features of the training clips) where they do not.

A fine-tuned system learns to tell classes apart; :func:`asd_utils.data.attribute_classes` makes
them from file names, so a machine type whose names carry no attribute (2026 dev: ToyCar,
bearingEmu, sliderEmu, valveEmu) is a single class per domain and teaches nothing. The public
fix (kasahart/asd-experiments ``reproduction/asd03/README.md``) clusters such a
machine type's training clips: k-means (seed 42 there) on frozen features, 7 clusters for the
source domain and 1 for the target domain, joined with attribute × domain classes of the others.
Fang et al. (arXiv 2509.12845) cluster with Ward's method instead.

Schemes (:data:`SCHEMES`), per machine type and section:

- ``names``: :func:`asd_utils.data.attribute_classes`, exactly (today's classes);
- ``pseudo``: clusters everywhere;
- ``auto``: clusters where no training clip of the machine type and section carries attributes,
  names elsewhere.

Only training clips are clustered: test clips neither add points nor move centres. A cluster
name is ``<machine_type>/<section>/pseudo-s<k>/source`` or ``…/pseudo-t<k>/target``, numbered
in order of each cluster's first clip in the table (so names do not depend on the algorithm's
internal order). This module imports no torch; :func:`logmel_features` (no weights) reaches
for the log-mel floor's statistics when called.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.cluster import AgglomerativeClustering, KMeans

from asd_utils import data
from asd_utils.config.schema import ClassSettings
from asd_utils.files import write_table

SCHEMES = ("names", "pseudo", "auto")
METHODS = ("kmeans", "ward")
__all__ = ["ClassSettings", "Classes", "make_classes", "write_assignment", "assignment_key"]
ASSIGNMENT = "classes.csv"  # a run's clip → class file (:func:`write_assignment`)
ASSIGNMENT_COLUMNS = ["dataset", "machine_type", "section", "domain", "file_name", "class"]


@dataclass(frozen=True)
class Classes:
    """The classes of a set of training clips: ``ids`` (N,) int64 aligned with ``table``'s rows,
    ``names`` sorted (``names[ids[i]]`` is row i's class), ``table`` the training clips, and
    ``clustered`` the ``(machine_type, section)`` groups that got pseudo-attributes."""

    ids: np.ndarray
    names: list[str]
    table: pd.DataFrame
    clustered: tuple[tuple[str, str], ...]

    def assignment(self) -> pd.DataFrame:
        """One row per training clip: :data:`ASSIGNMENT_COLUMNS` (``class`` = the name)."""
        out = self.table.reindex(columns=ASSIGNMENT_COLUMNS[:-1]).copy()
        out["class"] = np.asarray(self.names, dtype=object)[self.ids]
        return out.reset_index(drop=True)


def _groups(table: pd.DataFrame) -> pd.Series:
    return table["machine_type"].astype(str) + "/" + table["section"].astype(str)


def named_groups(table: pd.DataFrame) -> set[str]:
    """The ``<machine_type>/<section>`` groups with an attribute in some training clip's name."""
    train = table[table["split"] == "train"]
    carries = train["attributes"].fillna("").astype(str) != ""
    return set(_groups(train)[carries])


def _training_features(table: pd.DataFrame, features: np.ndarray) -> np.ndarray:
    """``features`` for the training rows: given for every row of ``table`` or for its training
    rows only (in table order)."""
    features = np.asarray(features)
    train = (table["split"] == "train").to_numpy()
    if len(features) == len(table):
        return features[train]
    if len(features) == int(train.sum()):
        return features
    raise ValueError(
        f"features have {len(features)} rows; the table has {len(table)} clips, "
        f"{int(train.sum())} of them training clips"
    )


def cluster(features: np.ndarray, n_clusters: int, method: str, seed: int, n_init: int = 10):
    """Cluster labels (N,) int64 of ``features`` (N, D): k-means or Ward, at most N clusters,
    renumbered in order of first appearance (the first row is in cluster 0)."""
    if method not in METHODS:
        raise ValueError(f"unknown clustering method {method!r}; choose one of {METHODS}")
    features = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    n = min(n_clusters, len(features))
    if n <= 1:
        return np.zeros(len(features), np.int64)
    if method == "kmeans":
        labels = KMeans(n, n_init=n_init, random_state=seed).fit_predict(features)
    else:
        labels = AgglomerativeClustering(n, linkage="ward").fit_predict(features)
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    return np.argsort(np.argsort(first))[inverse].astype(np.int64)


def _pseudo_names(table: pd.DataFrame, features: np.ndarray, settings: ClassSettings, seed: int):
    """Cluster names for the rows of one group (one machine type and section), per domain."""
    names = np.empty(len(table), dtype=object)
    group = f"{table['machine_type'].iloc[0]}/{table['section'].iloc[0]}"
    counts = {"source": settings.source_clusters, "target": settings.target_clusters}
    for domain, count in counts.items():
        rows = (table["domain"] == domain).to_numpy()
        if rows.any():
            labels = cluster(features[rows], count, settings.method, seed, settings.n_init)
            names[rows] = [f"{group}/pseudo-{domain[0]}{k}/{domain}" for k in labels]
    if pd.isna(names).any():
        raise ValueError(f"{group}: pseudo-attributes need a source or target domain per clip")
    return names


def make_classes(
    table: pd.DataFrame,
    features: np.ndarray | None = None,
    settings: ClassSettings | None = None,
    seed: int | None = None,
) -> Classes:
    """The classes of the training clips of ``table`` (test rows are dropped first).

    ``features``: (N, …) for every row of ``table``, or for its training rows only, in table
    order; needed only where a group is clustered. ``seed``: the run's seed, used when
    ``settings.seed`` is None. Under ``scheme="names"`` the result equals
    :func:`asd_utils.data.attribute_classes` of the training rows with ``by_domain``.
    """
    settings = settings or ClassSettings()
    seed = settings.seed if settings.seed is not None else (seed or 0)
    train = table[table["split"] == "train"].reset_index(drop=True)
    groups = _groups(train).to_numpy()
    unique = list(dict.fromkeys(groups))
    if settings.scheme == "names":
        clustered = []
    elif settings.scheme == "pseudo":
        clustered = unique
    else:
        clustered = [g for g in unique if g not in named_groups(train)]
    ids, known = data.attribute_classes(train, settings.by_domain)
    names = np.asarray(known, dtype=object)[ids]
    if clustered:
        if features is None:
            raise ValueError(f"pseudo-attributes for {', '.join(clustered)} need features")
        vectors = _training_features(table, features)
        for group in clustered:
            rows = groups == group
            names[rows] = _pseudo_names(train[rows], vectors[rows], settings, seed)
    class_names = sorted(set(names))
    ids = pd.Index(class_names).get_indexer(names).astype(np.int64)
    done = tuple(tuple(g.split("/", 1)) for g in clustered)
    return Classes(ids, class_names, train, done)


def write_assignment(classes: Classes, folder: str | os.PathLike) -> Path:
    """``<folder>/classes.csv`` (atomically): one row per training clip, its class."""
    return write_table(classes.assignment(), Path(folder) / ASSIGNMENT)


def assignment_key(classes: Classes) -> str:
    """sha256 of the assignment as written: for a run folder's key (same classes, same key)."""
    return hashlib.sha256(classes.assignment().to_csv(index=False).encode()).hexdigest()


def logmel_features(
    table: pd.DataFrame, cache_dir: str | os.PathLike | None = None, progress: bool = True
) -> np.ndarray:
    """Features for pseudo-attributes without weights: the log-mel floor's per-band mean and
    standard deviation of each training clip (near channel), z-scored per machine type with
    the training clips' statistics (:func:`asd_utils.systems.training_free.floor_embeddings`):
    (N_train, 256) float32 in table order of the training rows."""
    from asd_utils.systems import training_free  # torch: only when log-mel features are made

    train = table[table["split"] == "train"].reset_index(drop=True)
    return training_free.floor_embeddings(train, cache_dir, progress)


def frozen_features(
    encoder,
    table: pd.DataFrame,
    channel: str = "near",
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> np.ndarray:
    """Features for pseudo-attributes from a frozen backbone: ``encoder``
    (:class:`asd_utils.models.frozen.FrozenEncoder`; ``time_mean`` pooling is asd03's
    frequency-preserving average) on ``channel`` of each training clip
    (:func:`asd_utils.systems.training_free.embed_channels`, cached under ``cache_dir``), its
    last stored block: (N_train, dim) float32 in table order of the training rows."""
    from asd_utils.systems import training_free  # torch: only when a backbone embeds

    train = table[table["split"] == "train"].reset_index(drop=True)
    embedded = training_free.embed_channels(
        encoder, train, [channel], batch_size=batch_size, cache_dir=cache_dir, progress=progress
    )
    return embedded[channel][:, -1]
