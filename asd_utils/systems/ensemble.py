"""Score ensembles (System 4): normalise each system's scores with its own training statistics,
then combine.

Raw anomaly scores of two systems are not on one scale (a cosine distance of EAT embeddings and
one of BEATs embeddings have different typical sizes), so each system's scores are first
standardised per machine type and section with statistics of that system's scores on the
TRAINING clips (for KNN systems these are leave-one-out distances; see
:func:`asd_utils.scoring.score_system`). Test labels and test scores never enter the statistics,
so the ensemble is a legitimate unsupervised detector.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

KEYS = ["machine_type", "section", "file_name", "split"]
METHODS = ("zscore", "robust")


def normalise(scores: pd.DataFrame, method: str = "zscore") -> pd.DataFrame:
    """Standardise ``anomaly_score`` per (machine_type, section) with training-clip statistics.

    ``scores``: one system's clip table (train and test rows, column ``anomaly_score``).
    ``method``: ``"zscore"`` — (s − mean) / std of the training scores; ``"robust"`` —
    (s − median) / (IQR / 1.349), which a few outlying training clips cannot move much.
    Returns a copy with ``anomaly_score`` replaced. Raises if a section has no training clips.
    """
    if method not in METHODS:
        raise ValueError(f"unknown normalisation {method!r}; choose from {METHODS}")
    out = scores.copy()
    for _, index in scores.groupby(["machine_type", "section"]).groups.items():
        part = scores.loc[index]
        train = part.loc[part["split"] == "train", "anomaly_score"].to_numpy(dtype=float)
        if train.size < 2:
            raise ValueError(
                f"{part['machine_type'].iloc[0]} section {part['section'].iloc[0]}: "
                "normalisation needs at least two training-clip scores"
            )
        if method == "zscore":
            centre, spread = train.mean(), train.std(ddof=1)
        else:
            q25, centre, q75 = np.percentile(train, [25, 50, 75])
            spread = (q75 - q25) / 1.349  # the IQR of a unit normal
        spread = spread if spread > 0 else 1.0
        out.loc[index, "anomaly_score"] = (part["anomaly_score"] - centre) / spread
    return out


def combine(
    systems: Mapping[str, pd.DataFrame],
    weights: Mapping[str, float] | None = None,
    how: str = "sum",
    method: str = "zscore",
) -> pd.DataFrame:
    """Ensemble several systems' clip scores into one system.

    ``systems``: {name: clip table with ``anomaly_score``} over the same clips (train and test).
    ``weights``: {name: weight} for ``how="sum"`` (default: equal weights summing to 1); fixed in
    advance (from the profile), never tuned on test labels. ``how="min"``/``"max"`` take the
    smallest/largest normalised score. Returns a clip table (the first system's clip columns) with
    the combined ``anomaly_score``.
    """
    if not systems:
        raise ValueError("combine needs at least one system")
    if how not in ("sum", "min", "max"):
        raise ValueError(f"unknown combination {how!r}; choose sum, min or max")
    names = list(systems)
    weights = dict(weights) if weights else {name: 1.0 / len(names) for name in names}
    missing = set(names) - set(weights)
    if missing:
        raise ValueError(f"no weight for systems {sorted(missing)}")
    first = systems[names[0]]
    base = first.drop(columns=["anomaly_score"]).set_index(KEYS)
    columns = []
    for name in names:
        table = normalise(systems[name], method).set_index(KEYS)["anomaly_score"]
        if len(table) != len(base) or not table.index.sort_values().equals(
            base.index.sort_values()
        ):
            raise ValueError(f"system {name!r} does not score the same clips as {names[0]!r}")
        columns.append(table.reindex(base.index).rename(name))
    normalised = pd.concat(columns, axis=1)
    if how == "sum":
        combined = sum(weights[name] * normalised[name] for name in names)
    else:
        combined = getattr(normalised, how)(axis=1)
    return base.assign(anomaly_score=combined).reset_index()[list(first.columns)]
