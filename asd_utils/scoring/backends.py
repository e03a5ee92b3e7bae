"""Scoring back ends: what an anomaly score is, given the normal training embeddings of a machine
type and section (the reference) and their domains.

Every system scores the same way (XJU report, sec. 3.2): embed the normal training clips and
score a clip by the cosine distance to its nearest training embeddings (Table 1: K = 1), against
the source and the target training clips separately, keeping the smaller distance
(Wilkinghoff's practice, as in his ssl4asd), so that the 10 target clips are not drowned by the 990
source clips. The other back ends keep that per-domain minimum.

A back end is a class with one interface (:class:`Backend`): ``fit(reference, domains)``, then
``score(queries)``; ``training_scores()`` gives the reference clips' own honest scores (for the
decision threshold and for normalising across systems) from the same two calls. Its options
are one typed model (:attr:`Backend.Options`) whose values the profile's ``backends`` section
holds under the back end's name; :data:`BACKENDS` is the table, keyed by name. A back end
declares what it takes (:attr:`Backend.takes`): one vector per clip ``[N, D]`` (``"clip"``) or
a band matrix ``[N, B, D]`` (``"bands"``, a frequency-preserving pooling).

Which back end scores a machine type is chosen by hand in the profile (``backends.
per_machine_type``: ``{machine type: back end}``, ``default``: the system's own); a machine type
not listed there (an evaluation-set machine type, never seen in development) is scored by
``backends.untuned``, Z-MIN in the shipped profiles: the label-free combination
(:func:`for_machine_types`, :class:`ByMachineType`).

Written here rather than taken from a library: scikit-learn's neighbour and outlier classes have
no per-domain minimum, no cosine k-means and no leave-one-out self-scores; the arithmetic is a
few matrix products. k-means itself is scikit-learn's.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import numpy as np
import pandas as pd
import pydantic
from pydantic import BaseModel, ConfigDict, Field

from asd_utils.config import ProfileError
from asd_utils.config.schema import Backends

Folds = Annotated[int, Field(ge=2)]


class Options(BaseModel):
    """A back end's options (none): unknown keys refused, no value coerced from another type."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Backend:
    """A scoring back end: :meth:`fit` on the reference, then :meth:`score` queries (N,).

    ``options``: an instance of the class's :attr:`Options`; ``k``: the system's K (the
    KNN-based back ends); ``seed``: fixes whatever is random. :meth:`training_scores`: the
    reference's own scores, out-of-fold (``options.folds`` folds dealt in turn within each
    domain, each scored by a fresh back end fitted on the others: a back end fitted on a clip
    scores it too well); a back end with a cheaper honest score (the KNN's leave-one-out)
    overrides it."""

    name: ClassVar[str]
    description: ClassVar[str]
    Options: ClassVar[type[BaseModel]] = Options
    takes: ClassVar[Literal["clip", "bands"]] = "clip"

    def __init__(self, options: BaseModel | None = None, k: int = 1, seed: int = 0) -> None:
        self.options = options if options is not None else self.Options()
        self.k, self.seed = k, seed

    def fresh(self) -> Backend:
        """An unfitted back end of the same class and settings."""
        return type(self)(self.options, self.k, self.seed)

    def for_machine_type(self, machine_type: str) -> Backend:
        """The unfitted back end that scores ``machine_type``'s clips: a fresh copy of this one."""
        return self.fresh()

    def fit(self, reference: np.ndarray, domains: np.ndarray | None) -> Backend:
        """Keep the normal ``reference`` embeddings and their ``domains`` (M,) (None: one set)."""
        domains = None if domains is None else np.asarray(domains)
        if domains is not None and len(domains) != len(reference):
            raise ValueError(f"{len(domains)} domains for {len(reference)} training embeddings")
        self.reference, self.domains = np.asarray(reference), domains
        return self

    def score(self, queries: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def training_scores(self) -> np.ndarray:
        labels = np.zeros(len(self.reference), dtype=object)
        labels = labels if self.domains is None else self.domains
        fold = np.empty(len(self.reference), dtype=int)
        for value in pd.unique(labels):
            members = np.flatnonzero(labels == value)
            fold[members] = np.arange(len(members)) % self.options.folds
        scores = np.full(len(self.reference), np.nan)
        for f in np.unique(fold):
            held_out = fold == f
            domains = None if self.domains is None else labels[~held_out]
            fitted = self.fresh().fit(self.reference[~held_out], domains)
            scores[held_out] = fitted.score(self.reference[held_out])
        return scores


# --- the KNN and the back ends built on it -------------------------------------------------------


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
    the others only. (M, D) and (N, D) inputs; one (N, M) matrix product.
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


def _cosine_distance(queries: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return 1.0 - _normalise(queries) @ _normalise(reference).T


class KNN(Backend):
    """The paper's KNN: mean cosine distance to the ``k`` nearest references
    (:func:`knn_scores`); its training scores leave-one-out."""

    name = "knn"
    description = "the paper's KNN: cosine distance to the nearest reference (K from the system)"

    def score(self, queries: np.ndarray) -> np.ndarray:
        return knn_scores(self.reference, self.domains, queries, self.k)

    def training_scores(self) -> np.ndarray:
        return knn_scores(self.reference, self.domains, None, self.k)


class _PerDomain(Backend):
    """Each domain's references made into a set (:meth:`prepare`), scored separately, the
    minimum kept."""

    def fit(self, reference: np.ndarray, domains: np.ndarray | None) -> Backend:
        super().fit(reference, domains)
        labels = np.zeros(len(reference), dtype=object) if domains is None else self.domains
        sets = [(str(d), self.reference[labels == d]) for d in pd.unique(labels)]
        self.rng = np.random.default_rng(self.seed)
        alone = domains is None or len(sets) == 1
        self.sets = [self.prepare(name, members, alone) for name, members in sets]
        return self

    def prepare(self, domain: str, members: np.ndarray, alone: bool):
        return members

    def score_set(self, prepared, queries: np.ndarray) -> np.ndarray:
        return knn_scores(prepared, None, queries, self.k)

    def score(self, queries: np.ndarray) -> np.ndarray:
        scores = np.full(len(queries), np.inf)
        for prepared in self.sets:
            scores = np.minimum(scores, self.score_set(prepared, queries))
        return scores


class KMeans(_PerDomain):
    """The source references (all when no domains are given) replaced by ``centroids`` k-means
    centroids on the sphere (Wilkinghoff's DCASE 2023 system uses 16), the other domains kept
    clip by clip; then KNN."""

    name = "kmeans"
    description = "KNN against k-means centroids of the source clips (target clips as they are)"

    class Options(Options):
        centroids: Annotated[int, Field(gt=0)]
        folds: Folds

    def prepare(self, domain: str, members: np.ndarray, alone: bool):
        if not (domain == "source" or alone):
            return members
        from sklearn.cluster import KMeans as SKLearnKMeans

        points = _normalise(members)
        n = min(self.options.centroids, len(points))
        if n == len(points):
            return points
        fit = SKLearnKMeans(n_clusters=n, n_init=1, random_state=self.seed).fit(points)
        return _normalise(fit.cluster_centers_)


class SMOTE(_PerDomain):
    """The target references joined by ``per_clip`` interpolations each, ``x + u (x_j - x)``
    toward one x_j of their ``neighbours`` nearest target neighbours (cosine), u ~ U(0, 1)
    (Chawla et al., JAIR 2002); then KNN. The few target clips cover the space between them."""

    name = "smote"
    description = "KNN after oversampling the target clips (SMOTE-style interpolation)"

    class Options(Options):
        per_clip: Annotated[int, Field(ge=0)]
        neighbours: Annotated[int, Field(gt=0)]
        folds: Folds

    def prepare(self, domain: str, members: np.ndarray, alone: bool):
        if domain != "target":
            return members
        points, per_clip = _normalise(members), self.options.per_clip
        if len(points) < 2 or per_clip == 0:
            return points
        distance = _cosine_distance(points, points)
        np.fill_diagonal(distance, np.inf)
        kk = min(self.options.neighbours, len(points) - 1)
        nearest = np.argsort(distance, axis=1)[:, :kk]  # (n, kk)
        origin = np.repeat(np.arange(len(points)), per_clip)
        partner = nearest[origin, self.rng.integers(0, kk, size=len(origin))]
        u = self.rng.random((len(origin), 1))
        synthetic = points[origin] + u * (points[partner] - points[origin])
        return np.concatenate([points, synthetic])


class Local(_PerDomain):
    """The nearest reference r's cosine distance divided by r's own neighbourhood distance (mean
    distance to its ``neighbours`` nearest other references of its domain): a domain whose
    clips lie far apart (the ten target clips) is measured in its own units."""

    name = "local"
    description = "KNN divided by the nearest reference's own neighbourhood distance"

    class Options(Options):
        neighbours: Annotated[int, Field(gt=0)]
        folds: Folds

    def prepare(self, domain: str, members: np.ndarray, alone: bool):
        if len(members) < 2:
            return members, None
        own = _cosine_distance(members, members)
        np.fill_diagonal(own, np.inf)
        kk = min(self.options.neighbours, len(members) - 1)
        return members, np.partition(own, kk - 1, axis=1)[:, :kk].mean(1)  # (M,)

    def score_set(self, prepared, queries: np.ndarray) -> np.ndarray:
        members, radius = prepared
        if radius is None:
            return knn_scores(members, None, queries, 1)
        distance = _cosine_distance(queries, members)  # (N, M)
        nearest = distance.argmin(1)
        return distance[np.arange(len(queries)), nearest] / np.maximum(radius[nearest], 1e-9)


# --- the frequency-preserving back ends and the label-free combination -----------------------


class BEAM(Backend):
    """BEAM over band embeddings ``[N, B, D]`` (:class:`asd_utils.scoring.beam.Beam`): per band
    the scaled cosine distance to the nearest reference, the mean over bands; source and target
    references in one memory. Training scores: each reference against the others."""

    name = "beam"
    description = "per-band nearest-reference distance, the mean over bands (MERL's BEAM)"
    takes = "bands"
    varmin = False

    class Options(Options):
        chunk_size: Annotated[int, Field(gt=0)]

    def fit(self, reference: np.ndarray, domains: np.ndarray | None) -> Backend:
        from asd_utils.scoring.beam import Beam

        super().fit(reference, domains)
        neighbours = getattr(self.options, "neighbours", 1)
        self.model = Beam(self.varmin, neighbours, self.options.chunk_size)
        self.model.fit(self.reference, self.domains)
        return self

    def score(self, queries: np.ndarray) -> np.ndarray:
        return self.model.score(queries).astype(np.float64)

    def training_scores(self) -> np.ndarray:
        return self.model.training_scores().astype(np.float64)


class BEAMVarMin(BEAM):
    """:class:`BEAM` with VarMin: each reference's distance offset by α · its local density
    (``neighbours`` nearest references; α per band fitted leave-one-out on the references)."""

    name = "beam_varmin"
    description = "BEAM with variance-minimising rescaling by each reference's local density"
    varmin = True

    class Options(Options):
        neighbours: Annotated[int, Field(gt=0)]
        chunk_size: Annotated[int, Field(gt=0)]


class ZMin(Backend):
    """Z-MIN (:mod:`asd_utils.scoring.fusion`): each member back end's scores z-normalised by its
    own out-of-fold training scores, then ``rule`` over members (``min``; ``mean``/``max`` for
    the ablation). No test label, no choice per machine type. Takes band embeddings and hands a
    member that takes one vector per clip the bands side by side."""

    name = "zmin"
    description = "the members' scores z-normalised by their training scores, the minimum"
    takes = "bands"

    class Options(Options):
        members: list[str] = Field(min_length=1)
        rule: Literal["min", "mean", "max"]

    members: list[Backend] = []

    def fresh(self) -> Backend:
        out = super().fresh()
        out.members = [m.fresh() for m in self.members]
        return out

    @staticmethod
    def _as(member: Backend, x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), -1) if member.takes == "clip" else x

    def fit(self, reference: np.ndarray, domains: np.ndarray | None) -> Backend:
        from asd_utils.scoring import fusion

        super().fit(reference, domains)
        for member in self.members:
            member.fit(self._as(member, self.reference), self.domains)
        self._training = {m.name: m.training_scores() for m in self.members}
        self._combine = fusion.combine
        return self

    def score(self, queries: np.ndarray) -> np.ndarray:
        scores = {m.name: m.score(self._as(m, np.asarray(queries))) for m in self.members}
        return self._combine(scores, self._training, self.options.rule)[0]

    def training_scores(self) -> np.ndarray:
        return self._combine(self._training, self._training, self.options.rule)[1]


class ByMachineType(Backend):
    """One back end per machine type: ``chosen`` ``{machine type: back end}``, any other machine
    type scored by ``otherwise`` (:func:`for_machine_types` builds it from the profile). Not
    fitted itself: :func:`score_system` asks :meth:`for_machine_type` per machine type."""

    name = "by_machine_type"
    description = "a back end chosen by hand per machine type, another for the untuned ones"

    def __init__(self, chosen: dict[str, Backend], otherwise: Backend) -> None:
        super().__init__()
        self.chosen, self.otherwise = dict(chosen), otherwise

    def fresh(self) -> Backend:
        return ByMachineType(self.chosen, self.otherwise)

    def for_machine_type(self, machine_type: str) -> Backend:
        return self.chosen.get(machine_type, self.otherwise).fresh()

    def fit(self, reference: np.ndarray, domains: np.ndarray | None) -> Backend:
        raise TypeError("by_machine_type scores per machine type: fit its for_machine_type()")


BACKENDS: dict[str, type[Backend]] = {
    b.name: b for b in (KNN, KMeans, SMOTE, Local, BEAM, BEAMVarMin, ZMin)
}
"""Every back end, keyed by the name a profile's ``backends.default`` gives."""


def make(section: Backends, name: str | None = None, k: int = 1, seed: int = 0) -> Backend:
    """The back end ``name`` (default: the section's ``default``) of a profile's ``backends``
    ``section``, its options validated from the section's ``name`` key (:class:`ProfileError`
    naming the key path on a misspelt key, a wrong type, an out-of-range value or an unknown
    back end)."""
    name = section.default if name is None else name
    if name not in BACKENDS:
        raise ProfileError(
            f"backends: unknown back end {name!r}; choose one of {', '.join(sorted(BACKENDS))}"
        )
    cls = BACKENDS[name]
    try:
        options = cls.Options.model_validate((section.model_extra or {}).get(name, {}))
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in ("backends", name, *first["loc"]))
        raise ProfileError(f"{where}: {first['msg']}") from None
    backend = cls(options, k, seed)
    for member in getattr(options, "members", ()):  # a combination of other back ends
        if member == name or BACKENDS.get(member) is ZMin:
            raise ProfileError(f"backends.{name}.members: {member!r} cannot be a member")
        backend.members = [*backend.members, make(section, member, k, seed)]
    return backend


def for_machine_types(
    section: Backends, name: str | None, machine_types, k: int = 1, seed: int = 0
) -> Backend:
    """The back end of a system whose own is ``name`` (None: the section's ``default``) on clips
    of ``machine_types``: each machine type's from the section's ``per_machine_type`` (a back end
    of the table, or ``default``: the system's own), one not listed there ``untuned``. The one
    back end when every machine type gets the same, else a :class:`ByMachineType` of them."""
    own = section.default if name is None else name
    listed = section.per_machine_type
    names = {m: listed.get(m, section.untuned) for m in pd.unique(pd.Series(machine_types))}
    names = {m: own if n == "default" else n for m, n in names.items()}
    made = {n: make(section, n, k, seed) for n in sorted(set(names.values()) | {own})}
    if len(set(names.values())) == 1:
        return made[next(iter(names.values()))]
    untuned = section.untuned
    otherwise = made.get(untuned) or make(section, untuned, k, seed)
    return ByMachineType({m: made[n] for m, n in names.items()}, otherwise)


def check(section: Backends) -> None:
    """Validate the options of every back end in the table that ``section`` configures (and
    that its default, its ``untuned`` and those of ``per_machine_type`` exist), at the door:
    :func:`make` of each."""
    make(section)
    for name in BACKENDS:
        if name in (section.model_extra or {}):
            make(section, name)
    chosen = {n for n in section.per_machine_type.values() if n != "default"}
    for name in sorted({*chosen, section.untuned}):
        make(section, name)


def as_taken(embeddings: np.ndarray, takes: str, bands: int = 1) -> np.ndarray:
    """Embeddings in the shape a back end takes: ``[N, D]`` for ``"clip"`` (band matrices laid
    side by side), ``[N, B, D]`` for ``"bands"`` (a vector of ``bands`` bands laid side by side,
    band-major, as :class:`asd_utils.models.frozen.FrozenEncoder` writes them; ``bands=1``: the
    whole vector is one band)."""
    embeddings = np.asarray(embeddings)
    if takes == "clip":
        return embeddings.reshape(len(embeddings), -1) if embeddings.ndim == 3 else embeddings
    if embeddings.ndim == 2:
        if embeddings.shape[1] % bands:
            raise ValueError(f"{embeddings.shape[1]} values do not split into {bands} bands")
        return embeddings.reshape(len(embeddings), bands, -1)
    return embeddings


def _taken(embeddings: np.ndarray, backend: Backend, bands: int) -> np.ndarray:
    """:func:`as_taken` for ``backend``, refusing embeddings of the wrong number of axes."""
    embeddings = as_taken(embeddings, backend.takes, bands)
    expected = {"clip": 2, "bands": 3}[backend.takes]
    if embeddings.ndim != expected:
        raise ValueError(
            f"back end {backend.name!r} takes {backend.takes} embeddings ({expected} axes), "
            f"not {embeddings.shape}"
        )
    return embeddings


def score_system(
    table: pd.DataFrame,
    embeddings: np.ndarray | None = None,
    backend: Backend | None = None,
    bands: int = 1,
) -> pd.DataFrame:
    """Scores of every clip, per (machine_type, section), for any embedding model.

    ``table``: clip table rows (train and test); ``embeddings`` row-aligned, ``[N, D]`` or
    ``[N, B, D]``, brought to what ``backend`` takes by :func:`as_taken` (``bands``: how many
    frequency bands an ``[N, D]`` vector holds), or None to take them from an ``embedding``
    column of arrays. Per section the back end of its machine type (:meth:`Backend.
    for_machine_type`, a fresh copy; default: the KNN, K = 1) is fitted on its training clips
    (domains: source/target); test clips get its :meth:`~Backend.score`, training clips its
    :meth:`~Backend.training_scores`. Returns the table's columns (without ``embedding``) plus
    ``anomaly_score``, same rows and index: the shape :func:`asd_utils.evaluation.official.
    write_submission` takes.
    """
    backend = KNN() if backend is None else backend
    if embeddings is None:
        embeddings = np.stack(table["embedding"].to_numpy())
    embeddings = np.asarray(embeddings)
    if len(embeddings) != len(table):
        raise ValueError(f"{len(embeddings)} embeddings for {len(table)} clips")
    scores = np.full(len(table), np.nan)
    groups = table.reset_index(drop=True).groupby(["machine_type", "section"], sort=False)
    for (machine_type, section), group in groups:
        rows = group.index.to_numpy()
        train = group["split"].to_numpy() == "train"
        if train.sum() < 2:
            raise ValueError(f"{machine_type} section {section}: needs at least 2 training clips")
        domain = group["domain"].to_numpy()[train]
        domain = None if pd.isna(domain).any() else domain.astype(str)
        chosen = backend.for_machine_type(machine_type)
        taken = _taken(embeddings[rows], chosen, bands)
        fitted = chosen.fit(taken[train], domain)
        scores[rows[train]] = fitted.training_scores()
        if (~train).any():
            scores[rows[~train]] = fitted.score(taken[~train])
    out = table.drop(columns=["embedding"], errors="ignore").copy()
    out["anomaly_score"] = scores
    return out
