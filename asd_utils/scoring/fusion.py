"""Z-MIN: combining back ends without a test label (Zhou & Wang, arXiv 2606.19269).

Each back end's scores are put on one scale by the mean and standard deviation of its own
out-of-fold training scores (the normal training clips, each scored without itself), then
combined clip by clip: the minimum (Z-MIN, the paper's rule: a clip is called anomalous only
when every back end finds it unusual for that back end), or the mean or the maximum (for the
ablation). Nothing is computed from the test clips, so one clip's score never moves another's,
and a machine type needs no tuning: the task forbids choosing a back end on the evaluation
machine types, and choosing one with proxy outliers fails in that paper (63.3 against 64.4
for the per-machine oracle choice, DCASE 2023 dev, frozen BEATs).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

RULES = {"min": np.min, "mean": np.mean, "max": np.max}


def standardise(scores, training_scores) -> np.ndarray:
    """``(scores − mean) / sd`` with the mean and (population) standard deviation of
    ``training_scores``; an sd under 1e-12 counts as 1e-12. float64."""
    training = np.asarray(training_scores, dtype=np.float64)
    if training.ndim != 1 or len(training) < 2 or not np.isfinite(training).all():
        raise ValueError(f"training scores must be finite (clips,), >= 2; got {training.shape}")
    return (np.asarray(scores, np.float64) - training.mean()) / max(training.std(), 1e-12)


def combine(
    scores: Mapping[str, np.ndarray],
    training_scores: Mapping[str, np.ndarray],
    rule: str = "min",
) -> tuple[np.ndarray, np.ndarray]:
    """Combined scores of the test clips ``[clips]`` and of the training clips ``[reference
    clips]`` (the latter for the decision threshold): each back end's scores (``{name: [clips]}``)
    standardised by its own training scores (:func:`standardise`), then ``rule`` over back ends,
    ``"min"`` (Z-MIN), ``"mean"`` or ``"max"``."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {list(RULES)}; got {rule!r}")
    if set(scores) != set(training_scores) or not scores:
        raise ValueError(
            f"scores and training scores must name the same back ends; got {sorted(scores)} "
            f"and {sorted(training_scores)}"
        )
    names = sorted(scores)
    test = np.stack([standardise(scores[n], training_scores[n]) for n in names])
    train = np.stack([standardise(training_scores[n], training_scores[n]) for n in names])
    return RULES[rule](test, axis=0), RULES[rule](train, axis=0)


class ZCombination:
    """Several back ends as one: ``fit`` fits each on the same reference, ``score`` and
    ``training_scores`` are :func:`combine` of theirs with ``rule``. The members take the same
    embeddings (:attr:`takes`, e.g. ``"bands"`` for :class:`asd_utils.scoring.beam.Beam`) and
    each has ``fit(reference, domains)``, ``score(queries)`` and ``training_scores()``."""

    def __init__(self, members: Mapping[str, object], rule: str = "min"):
        if rule not in RULES:
            raise ValueError(f"rule must be one of {list(RULES)}; got {rule!r}")
        kinds = {getattr(m, "takes", None) for m in members.values()}
        if not members or len(kinds) != 1:
            raise ValueError(f"members must take one kind of embedding; got {kinds}")
        self.members, self.rule, self.takes = dict(members), rule, kinds.pop()

    def fit(self, reference, domains=None) -> ZCombination:
        for member in self.members.values():
            member.fit(reference, domains)
        self._training = {n: m.training_scores() for n, m in self.members.items()}
        return self

    def score(self, queries) -> np.ndarray:
        scores = {n: m.score(queries) for n, m in self.members.items()}
        return combine(scores, self._training, self.rule)[0]

    def training_scores(self) -> np.ndarray:
        return combine(self._training, self._training, self.rule)[1]
