"""BEAM and BEAM + VarMin: anomaly scores from band embeddings ``[clips, bands, dim]``.

**BEAM** (band-wise equalised anomaly measure, arXiv 2603.13749): every band of a clip is
compared with the same band of every normal training clip (one memory, source and target
together) by the scaled cosine distance ``D = 0.5 · (1 − cos)``; each band keeps its smallest
distance (each band may pick another reference), and the score is the plain mean over bands.

**VarMin** (variance-minimising rescaling, Matsumoto et al., DCASE 2025 Workshop): a reference
in a sparse region of its band is far from everything, so its distances are lowered by its own
local density ``b[i, f]``, the mean distance from reference ``i`` to its ``K`` nearest *other*
references (``K`` = 4): the band score is ``min_i (D[i, f] − α_f · b[i, f])``. ``α_f`` is
fitted leave-one-out on the references, per band: reference ``z``'s nearest other reference
``j(z, f)`` at distance ``u[z, f]``, ``v[z, f] = b[j(z, f), f]``, ``α_f = Cov_z(u, v) /
Var_z(v)`` (0 where ``Var ≤ 1e-12``), the α that makes ``u − α v`` vary least.

As kasahart/asd-experiments ``src/asd_min/{band_distance,varmin,beam}.py`` and
kasahart/dcase-asd-toolkit ``asdkit/backends/beam.py`` (MIT; the NA-BEATs paper's back end,
arXiv 2608.00447, ``docs/methods/beam_rdp_varmin.md`` there); ``tests/test_beam.py`` holds the
scores, densities and α to that code's outputs (``tests/fixtures/bands/``). Float32 as
upstream; queries are scored in chunks of ``chunk_size`` clips, so time grows linearly and
memory stays flat in the number of test clips (``chunk_size · clips · bands`` distances at a
time).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

EPS = 1e-12


def _bands(embeddings, name: str) -> np.ndarray:
    """``[clips, bands, dim]`` float32, finite, L2-normalised per band (a zero vector stays zero),
    as ``[bands, clips, dim]`` for one matrix product per band."""
    x = np.asarray(embeddings)
    if x.ndim != 3:
        raise ValueError(f"{name} must be [clips, bands, dim]; got shape {x.shape}")
    x = np.array(x.transpose(1, 0, 2), dtype=np.float32, order="C")  # a copy: normalised in place
    if not np.isfinite(x).all():
        raise ValueError(f"{name} must be finite")
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, np.where(norm > EPS, norm, np.inf), out=x)


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def band_distances(queries: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Scaled cosine distances ``0.5 · (1 − cos)`` of normalised ``[bands, q, dim]`` queries to
    ``[bands, r, dim]`` references, band by band: ``[bands, q, r]`` in [0, 1]."""
    similarity = np.matmul(queries, reference.transpose(0, 2, 1))
    np.clip(similarity, -1.0, 1.0, out=similarity)
    return np.multiply(np.subtract(1.0, similarity, out=similarity), 0.5, out=similarity)


def _self_excluded(reference: np.ndarray, chunk_size: int) -> Iterator[tuple[slice, np.ndarray]]:
    """Reference-to-reference distances ``[bands, chunk, r]`` by chunks of rows, each
    reference's distance to itself set to +inf."""
    n = reference.shape[1]
    for rows in _chunks(n, chunk_size):
        distance = band_distances(reference[:, rows], reference)
        distance[:, np.arange(rows.stop - rows.start), np.arange(rows.start, rows.stop)] = np.inf
        yield rows, distance


def varmin_fit(
    reference: np.ndarray, k: int = 4, chunk_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """VarMin's ``(b, α)`` for normalised ``[bands, r, dim]`` references, in one pass over the
    reference-to-reference distances:

    - ``b[f, i]`` ``[bands, r]``: the mean distance from reference ``i`` to its ``min(k, r − 1)``
      nearest other references in band ``f`` (the local density);
    - ``α_f`` ``[bands]``: ``Cov_z(u, v) / Var_z(v)`` (0 where ``Var_z(v) ≤ 1e-12``), leave-one-
      out: ``u[f, z]`` the distance from reference ``z`` to its nearest other ``j``, ``v[f, z] =
      b[f, j]``. Moments in float64, α float32.
    """
    kk = min(k, reference.shape[1] - 1)
    density = np.empty(reference.shape[:2], dtype=np.float32)
    u = np.empty_like(density)
    nearest = np.empty(density.shape, dtype=np.intp)
    for rows, distance in _self_excluded(reference, chunk_size):
        closest = np.partition(distance, kk - 1, axis=-1)[..., :kk]
        density[:, rows] = closest.mean(-1)
        u[:, rows] = closest.min(-1)
        nearest[:, rows] = distance.argmin(-1)
    v = density[np.arange(len(density))[:, None], nearest]
    u_centred = u - u.mean(1, dtype=np.float64, keepdims=True)
    v_centred = v - v.mean(1, dtype=np.float64, keepdims=True)
    covariance = (u_centred * v_centred).mean(1)
    variance = (v_centred * v_centred).mean(1)
    alpha = np.divide(covariance, variance, out=np.zeros_like(variance), where=variance > EPS)
    return density, alpha.astype(np.float32)


class Beam:
    """BEAM (``varmin=False``) or BEAM + VarMin (``varmin=True``, ``k`` neighbours) over band
    embeddings ``[clips, bands, dim]`` (:attr:`takes` = ``"bands"``).

    ``fit(reference, domains)``: the normal training clips, one memory (``domains``, an array of
    ``"source"``/``"target"`` or None, is checked and not used: BEAM keeps source and target
    clips together); ``score(queries)`` → ``[clips]`` float32 (may be negative with VarMin);
    ``band_scores(queries)`` → ``[clips, bands]``; ``training_scores()`` → each reference scored
    against the others (itself left out; its density and α stay those fitted on all), the
    out-of-fold scores for a decision threshold or a z-normalisation.
    """

    takes = "bands"

    def __init__(self, varmin: bool = True, k: int = 4, chunk_size: int = 256):
        if k < 1 or chunk_size < 1:
            raise ValueError(f"k and chunk_size must be >= 1; got {k} and {chunk_size}")
        self.varmin, self.k, self.chunk_size = bool(varmin), int(k), int(chunk_size)
        self.reference: np.ndarray | None = None  # [bands, r, dim], normalised

    def fit(self, reference, domains=None) -> Beam:
        """Keep the normalised references; with VarMin, fit the density and α (``[bands, r]``,
        ``[bands]``: :attr:`density`, :attr:`alpha`, zeros without VarMin)."""
        self.reference = _bands(reference, "reference")
        bands, n, _ = self.reference.shape
        if domains is not None and len(domains) != n:
            raise ValueError(f"{len(domains)} domains for {n} reference clips")
        if self.varmin and n < 2:
            raise ValueError("VarMin needs at least 2 reference clips")
        self.density = np.zeros((bands, n), dtype=np.float32)
        self.alpha = np.zeros(bands, dtype=np.float32)
        if self.varmin:
            self.density, self.alpha = varmin_fit(self.reference, self.k, self.chunk_size)
        self._offset = self.alpha[:, None, None] * self.density[:, None, :]  # [bands, 1, r]
        return self

    def _check(self, bands: int, dim: int) -> None:
        if self.reference is None:
            raise RuntimeError("fit() the back end before scoring")
        if (bands, dim) != (self.reference.shape[0], self.reference.shape[2]):
            raise ValueError(
                f"queries have {bands} bands of {dim}; the reference "
                f"{self.reference.shape[0]} of {self.reference.shape[2]}"
            )

    def _band_minima(self, queries: np.ndarray, rows: slice, exclude_self: bool) -> np.ndarray:
        """``[bands, n]``: the smallest (rescaled) distance of normalised ``[bands, n, dim]``
        queries (rows ``rows`` of all), their own reference left out with ``exclude_self``."""
        distance = band_distances(queries, self.reference)
        if self.varmin:
            distance -= self._offset
        if exclude_self:
            n = rows.stop - rows.start
            distance[:, np.arange(n), np.arange(rows.start, rows.stop)] = np.inf
        return distance.min(-1)

    def band_scores(self, queries) -> np.ndarray:
        """``[clips, bands]``: each band's smallest (rescaled) distance to the reference; the
        queries are normalised and scored ``chunk_size`` clips at a time."""
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim != 3:
            raise ValueError(f"queries must be [clips, bands, dim]; got shape {queries.shape}")
        self._check(queries.shape[1], queries.shape[2])
        out = np.empty(queries.shape[:2], dtype=np.float32)
        for rows in _chunks(len(queries), self.chunk_size):
            out[rows] = self._band_minima(_bands(queries[rows], "queries"), rows, False).T
        return out

    def score(self, queries) -> np.ndarray:
        """Anomaly scores ``[clips]``: :meth:`band_scores` averaged over bands."""
        return self.band_scores(queries).mean(1)

    def training_scores(self) -> np.ndarray:
        """Each reference clip's score against the other references, ``[r]``."""
        if self.reference is None:
            raise RuntimeError("fit() the back end before scoring")
        if self.reference.shape[1] < 2:
            raise ValueError("training scores need at least 2 reference clips")
        out = np.empty(self.reference.shape[1], dtype=np.float32)
        for rows in _chunks(len(out), self.chunk_size):
            out[rows] = self._band_minima(self.reference[:, rows], rows, True).mean(0)
        return out
