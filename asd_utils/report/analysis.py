"""Analyses the chapters show beside the stages: every combination of systems, a sweep of
ensemble weights (every back end on every embedding is a stage:
:func:`asd_utils.stages.compare_backends`). They read test labels to *measure*, so
their results are labelled analysis in the book and never choose a profile setting.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import pandas as pd

from asd_utils.evaluation import metrics
from asd_utils.systems import ensemble


def summary(scores: pd.DataFrame) -> dict[str, float]:
    """The official score and the harmonic means of one system's clip scores (fractions),
    over the machine types with ground truth (:func:`asd_utils.evaluation.metrics.summarise`)."""
    return metrics.summarise(metrics.evaluate(metrics.labelled(scores)[0]))


def combinations(
    systems: Mapping[str, pd.DataFrame], how: str = "sum", method: str = "zscore"
) -> pd.DataFrame:
    """Every combination of two or more of ``systems`` ({name: clip scores}) with equal weights:
    one row per combination (``systems``, then the summary in %)."""
    rows = []
    names = list(systems)
    for size in range(2, len(names) + 1):
        for combo in itertools.combinations(names, size):
            combined = ensemble.combine({m: systems[m] for m in combo}, how=how, method=method)
            rows.append(
                {"systems": " + ".join(combo), **{k: 100 * v for k, v in summary(combined).items()}}
            )
    return pd.DataFrame(rows)


def weight_sweep(
    first: tuple[str, pd.DataFrame],
    second: tuple[str, pd.DataFrame],
    weights=tuple(i / 10 for i in range(11)),
    method: str = "zscore",
) -> pd.DataFrame:
    """The official score (%) of the weighted sum ``w * first + (1 - w) * second`` for each
    ``w`` of ``weights``: columns ``w, hmean``."""
    rows = []
    for w in weights:
        combined = ensemble.combine(
            {first[0]: first[1], second[0]: second[1]},
            {first[0]: w, second[0]: 1 - w},
            method=method,
        )
        rows.append({"w": w, "hmean": 100 * summary(combined)["hmean"]})
    return pd.DataFrame(rows)
