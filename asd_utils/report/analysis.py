"""Analyses the chapters show beside the stages: every combination of systems, a sweep of
ensemble weights (every back end on every embedding is a stage:
:func:`asd_utils.stages.compare_backends`). They read test labels to *measure*, so
their results are labelled analysis in the book and never choose a profile setting.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import pandas as pd

from asd_utils import scoring, stages
from asd_utils.evaluation import metrics
from asd_utils.systems import ensemble

# System 0's views of the two microphones, by the front-end names of
# :mod:`asd_utils.frontends.twochannel` (its ``anc`` view is the ``fblms`` canceller's output;
# its ``residual`` is near − α · far of the two embeddings)
FRONT_ENDS = {"near": "near", "anc": "fblms", "w1": "w1", "ss": "ss", "residual": "residual"}


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


def view_scores(
    run: stages.Run,
    outcome: stages.TrainingFreeOutcome,
    backends: Sequence[str],
    views: Mapping[str, str] = FRONT_ENDS,
) -> pd.DataFrame:
    """The official score (%) of a training-free system (``outcome``,
    :func:`asd_utils.stages.training_free`) on each of its ``views`` ({view: name shown}) the run
    made, scored by each of ``backends`` (names of :data:`asd_utils.scoring.BACKENDS`, with the
    profile's options): one row per view (index "front end", the shown name), one column per back
    end. Reads test labels: analysis."""
    k = stages.knn_k(run.profile, outcome.system)
    rows = {}
    for view, name in views.items():
        if view not in outcome.views:
            continue
        vector = outcome.vector(view)
        rows[name] = {}
        for backend in backends:
            scorer = scoring.make(run.profile.backends, backend, k, run.seed)
            scores = scoring.score_system(run.clips, vector, scorer, outcome.bands)
            rows[name][backend] = 100 * summary(scores)["hmean"]
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(backends)).rename_axis(
        "front end"
    )


def class_comparison(table: pd.DataFrame) -> pd.DataFrame:
    """The class-scheme comparison of ``benchmarks/bench_seeds.py --classes``
    (``bench_classes.csv``: one row per system, classes, seed and machine type, official score
    ``hmean`` in %): per system
    × classes the mean and standard deviation over seeds of the official score (``all``), and
    of the mean per-machine-type score of the machine types ``with`` and ``without``
    attributes in their names; ``seeds`` the number of seeds. Sorted by the mean score."""
    overall = table[table["machine_type"] == "all"].set_index(["system", "classes", "seed"])
    types = table[table["machine_type"] != "all"].assign(
        part=lambda t: (
            t["attributes"].astype(str).str.lower().map({"true": "with", "false": "without"})
        )
    )
    per_seed = types.pivot_table("hmean", ["system", "classes", "seed"], "part", "mean")
    per_seed["all"] = overall["hmean"]
    grouped = per_seed.groupby(level=["system", "classes"])
    parts = [c for c in ("all", "with", "without") if c in per_seed]
    out = pd.concat({"mean": grouped[parts].mean(), "sd": grouped[parts].std()}, axis=1)
    out.columns = [f"{part} {stat}" for stat, part in out.columns]
    out = out[[f"{p} {s}" for p in parts for s in ("mean", "sd")]]
    out["seeds"] = grouped.size()
    return out.sort_values("all mean", ascending=False)


def pseudo_lift(comparison: pd.DataFrame, reference: str = "baseline-MAHALA") -> pd.DataFrame:
    """Per system trained with name classes and with pseudo-attributes (``auto`` or ``pseudo``)
    in :func:`class_comparison`'s table: the two mean official scores, the lift and whether
    the pseudo-attribute score beats ``reference``'s (the autoencoder's) mean."""
    means = comparison["all mean"].unstack("classes")
    pseudo = [c for c in ("auto", "pseudo") if c in means]
    if "names" not in means or not pseudo or reference not in means.index:
        return pd.DataFrame(columns=["names", "classes", "pseudo", "lift", reference, "above"])
    rows = means[["names", *pseudo]].dropna(subset=["names"]).drop(reference, errors="ignore")
    out = []
    for scheme in pseudo:
        part = rows[["names", scheme]].dropna().rename(columns={scheme: "pseudo"})
        out.append(part.assign(classes=scheme))
    out = pd.concat(out)
    out["lift"] = out["pseudo"] - out["names"]
    out[reference] = means.loc[reference].dropna().iloc[0]
    out["above"] = out["pseudo"] > out[reference]
    return out[["names", "classes", "pseudo", "lift", reference, "above"]]
