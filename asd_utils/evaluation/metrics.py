"""DCASE Task 2 metrics (AUC, pAUC, the official score), thresholds and the paper's Table 2.

Everything here follows the official evaluator (nttcslab ``dcase2023_task2_evaluator``, used
unchanged in spirit for 2023-2026) and the official autoencoder baseline
(``dcase2023_task2_baseline_ae``). Only numpy, scipy, scikit-learn and pandas are used: no model
code.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

MAX_FPR = 0.1
# The evaluator's floor before the harmonic mean: numpy.maximum(x, sys.float_info.epsilon).
EPS = sys.float_info.epsilon
DOMAINS = ("source", "target")
METRICS = {"auc_source": "AUC-s", "auc_target": "AUC-t", "pauc": "pAUC"}
OFFICIAL_ROW = ("official score", "hmean")
AMEAN_ROW = ("arithmetic mean of AUC-s, AUC-t and pAUC", "amean")


# --- per-section metrics -----------------------------------------------------------------------


def _label_to_int(label) -> np.ndarray:
    """Map labels ``"normal"``/``"anomaly"`` or 0/1 to an int array (1 = anomaly)."""
    mapping = {"normal": 0, "anomaly": 1, 0: 0, 1: 1}
    values = pd.Series(np.asarray(label, dtype=object).ravel())
    unknown = sorted({repr(v) for v in values if v not in mapping})
    if unknown:
        raise ValueError(f"labels must be 'normal'/'anomaly' or 0/1, got {', '.join(unknown)}")
    return values.map(mapping).to_numpy(dtype=int)


def section_metrics(label, domain, anomaly_score, max_fpr: float = MAX_FPR) -> dict[str, float]:
    """AUC (source), AUC (target) and pAUC of one machine type and section, as the evaluator.

    Inputs: ``label`` (n,) with 1 = anomaly, 0 = normal (``"anomaly"``/``"normal"`` accepted);
    ``domain`` (n,) of ``"source"``/``"target"``; ``anomaly_score`` (n,), larger = more anomalous.

    Output: ``{"auc_source", "auc_target", "pauc"}`` as floats in [0, 1].

    - AUC (domain) is ``roc_auc_score`` over that domain's normal clips plus ALL anomalous clips
      of both domains (the evaluator's mask ``(y_domain == d) | (y_true != 0)``).
    - pAUC is ``roc_auc_score(y, score, max_fpr=0.1)`` over every clip of the section: the
      McClish-standardised partial AUC, not the raw area / 0.1.

    Raises ValueError, naming the missing group, if there are no anomalies or no normals of a
    domain.
    """
    y = _label_to_int(label)
    domain = np.asarray(domain, dtype=str).ravel()
    score = np.asarray(anomaly_score, dtype=float).ravel()
    if not len(y) == len(domain) == len(score):
        raise ValueError(
            f"lengths differ: label {len(y)}, domain {len(domain)}, score {len(score)}"
        )
    unknown = sorted(set(domain) - set(DOMAINS))
    if unknown:
        raise ValueError(f"domains must be 'source'/'target', got {unknown}")
    anomalies = y == 1
    if not anomalies.any():
        raise ValueError("no anomalous clips: AUC and pAUC are undefined")
    result = {}
    for d in DOMAINS:
        normals = (domain == d) & (y == 0)
        if not normals.any():
            raise ValueError(f"no {d}-domain normal clips: AUC ({d}) is undefined")
        mask = normals | anomalies
        result[f"auc_{d}"] = float(roc_auc_score(y[mask], score[mask]))
    result["pauc"] = float(roc_auc_score(y, score, max_fpr=max_fpr))
    return result


def machine_sort_key(machine_type: str) -> tuple[str, str]:
    """Sort key of the paper's tables: case-insensitive (bearingEmu, fan, ..., ToyCar, valveEmu)."""
    return machine_type.lower(), machine_type


ANONYMOUS = "anonymous evaluation-set test clips"
"""Why a machine type has no metrics when its test clips carry no labels (:func:`labelled`)."""


def _incomplete_ground_truth(test: pd.DataFrame) -> str | None:
    """Why the labelled test clips of one machine type give no metrics (no anomalous clips, or
    no normal clips of a domain, in some section), or None when every section has all three."""
    sections = test.groupby("section", sort=True) if "section" in test.columns else [(None, test)]
    for section, group in sections:
        where = f" of section {section}" if section is not None else ""
        labels = group["label"].astype(str).replace({"1": "anomaly", "0": "normal"})
        if not (labels == "anomaly").any():
            return (
                f"its labelled test clips{where} hold no anomalous clip, so AUC and pAUC are "
                "undefined"
            )
        for d in DOMAINS:
            if not ((labels == "normal") & (group["domain"] == d)).any():
                return (
                    f"its labelled test clips{where} hold no {d}-domain normal clip, so "
                    f"AUC ({d}) is undefined"
                )
    return None


def labelled(scores: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """The test clips that give metrics, and the machine types without any, each with why.

    ``scores``: rows with ``machine_type``, ``domain`` and ``label`` (a clip or score table; with
    a ``split`` column only its test rows count, so training clips never enter metrics). A
    machine type has ground truth when every one of its rows has a label and a domain (dev
    names); evaluation-set test clips are anonymous (``section_00_0000.wav``) and have neither
    (reason :data:`ANONYMOUS`). A labelled machine type whose test clips (in some section) hold
    no anomalous clip, or no normal clip of a domain, has no metrics either (AUC and pAUC are
    undefined): it is scored and decided like an evaluation machine type, and the reason says
    what is missing. Returns ``(rows that give metrics, {machine type: reason})``, the machine
    types sorted as the paper's tables. A machine type with some labelled and some anonymous
    clips is an error (its metrics would silently use part of the clips).
    """
    if "split" in scores.columns:
        scores = scores[scores["split"] == "test"]
    known = scores["label"].notna() & scores["domain"].notna()
    by_type = known.groupby(scores["machine_type"]).agg(["all", "any"])
    mixed = by_type.index[by_type["any"] & ~by_type["all"]].tolist()
    if mixed:
        raise ValueError(
            f"machine types {mixed} mix labelled and anonymous test clips; expected all of one kind"
        )
    missing = {machine_type: ANONYMOUS for machine_type in by_type.index[~by_type["any"]]}
    for machine_type, group in scores[known].groupby("machine_type"):
        reason = _incomplete_ground_truth(group)
        if reason:
            missing[machine_type] = reason
    keep = known & ~scores["machine_type"].isin(list(missing))
    return scores[keep], {m: missing[m] for m in sorted(missing, key=machine_sort_key)}


def no_ground_truth_note(machine_types: Sequence[str] | Mapping[str, str]) -> str:
    """A sentence naming the machine types scored without metrics (or saying there are none):
    ``machine_types`` as :func:`labelled` returns them (a list means :data:`ANONYMOUS`)."""
    if not machine_types:
        return "Every machine type's test clips have ground truth."
    if not isinstance(machine_types, Mapping):
        machine_types = dict.fromkeys(machine_types, ANONYMOUS)
    anonymous = [m for m, why in machine_types.items() if why == ANONYMOUS]
    sentences = []
    if anonymous:
        names = ", ".join(anonymous)
        sentences.append(
            f"No ground truth for {names} ({ANONYMOUS}): "
            f"{'it is' if len(anonymous) == 1 else 'they are'} scored and decided, "
            "with no metrics."
        )
    sentences += [
        f"No metrics for {m} ({why}): it is scored and decided all the same."
        for m, why in machine_types.items()
        if why != ANONYMOUS
    ]
    return " ".join(sentences)


def evaluate(scores: pd.DataFrame) -> pd.DataFrame:
    """Per-(machine type, section) metrics of a whole system.

    Input columns: ``machine_type, section, domain, label, anomaly_score`` (one row per test
    clip; label ``"normal"``/``"anomaly"`` or 0/1). Output: one row per (machine_type, section)
    with columns ``machine_type, section, auc_source, auc_target, pauc``, sorted by machine type
    case-insensitively (as the paper's Table 2), then section.
    """
    required = ["machine_type", "section", "domain", "label", "anomaly_score"]
    missing = [c for c in required if c not in scores.columns]
    if missing:
        raise ValueError(f"scores lack columns {missing}")
    unlabelled = scores.loc[scores["label"].isna() | scores["domain"].isna(), "machine_type"]
    if len(unlabelled):
        raise ValueError(
            f"{unlabelled.iloc[0]}: test clips without ground truth (anonymous evaluation-set "
            "names); evaluate only the rows metrics.labelled() keeps"
        )
    rows = []
    for (machine_type, section), group in scores.groupby(["machine_type", "section"], sort=False):
        try:
            metrics = section_metrics(group["label"], group["domain"], group["anomaly_score"])
        except ValueError as err:
            raise ValueError(f"{machine_type} section {section}: {err}") from err
        rows.append({"machine_type": machine_type, "section": section, **metrics})
    rows.sort(key=lambda r: (*machine_sort_key(r["machine_type"]), str(r["section"])))
    return pd.DataFrame(rows, columns=["machine_type", "section", *METRICS])


# --- summaries -----------------------------------------------------------------------------------


def official_score(values, eps: float = EPS) -> float:
    """Official score: ``scipy.stats.hmean(np.maximum(values, eps))`` over the flattened values.

    ``eps`` is ``sys.float_info.epsilon``, the evaluator's floor (a zero AUC would otherwise make
    the harmonic mean undefined).
    """
    values = np.asarray(values, dtype=float).ravel()
    if values.size == 0:
        raise ValueError("no values to average")
    return float(stats.hmean(np.maximum(values, eps)))


def arithmetic_mean(values) -> float:
    """Arithmetic mean of the flattened values (reported beside the official score)."""
    values = np.asarray(values, dtype=float).ravel()
    if values.size == 0:
        raise ValueError("no values to average")
    return float(values.mean())


def summarise(table: pd.DataFrame) -> dict[str, float]:
    """Summary of an ``evaluate()`` table, as the evaluator's "official score" block.

    Output keys: ``hmean`` (official score) and ``amean`` over the flat list of every
    auc_source, auc_target and pauc value of all rows (``amean``: the evaluator's paper table's
    "TOTAL score" a-mean); ``hmean_source`` over the auc_source values only, ``hmean_target``
    over the auc_target values only (the evaluator's "harmonic mean (source/target)"),
    ``hmean_pauc`` over the pauc values, and ``amean_auc`` over the auc_source and auc_target
    values, without the pAUCs: the column ``official_score.csv`` calls "arithmetic mean".
    """
    keys = ("hmean", "amean", "hmean_source", "hmean_target", "hmean_pauc", "amean_auc")
    if table.empty:  # no machine type with ground truth (an evaluation set alone)
        return dict.fromkeys(keys, np.nan)
    flat = table[list(METRICS)].to_numpy(dtype=float)
    return {
        "hmean": official_score(flat),
        "amean": arithmetic_mean(flat),
        "hmean_source": official_score(table["auc_source"]),
        "hmean_target": official_score(table["auc_target"]),
        "hmean_pauc": official_score(table["pauc"]),
        "amean_auc": arithmetic_mean(table[["auc_source", "auc_target"]].to_numpy(dtype=float)),
    }


# --- submission files ----------------------------------------------------------------------------


# --- decisions -----------------------------------------------------------------------------------


def gamma_threshold(train_scores, quantile: float = 0.9) -> float:
    """Decision threshold: the ``quantile`` of a gamma distribution fitted to training scores.

    As the official baseline: ``params = scipy.stats.gamma.fit(scores)`` (shape, loc, scale)
    and ``scipy.stats.gamma.ppf(quantile, *params)``, with ``scores`` the anomaly scores of the
    training clips. If the fit fails or gives a non-finite threshold, warns (RuntimeWarning) and
    returns the empirical quantile instead.
    """
    scores = np.asarray(train_scores, dtype=float).ravel()
    if scores.size == 0 or not np.isfinite(scores).all():
        raise ValueError("train_scores must be a non-empty array of finite numbers")
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            threshold = float(stats.gamma.ppf(quantile, *stats.gamma.fit(scores)))
        reason = "non-finite threshold"
    except (ValueError, RuntimeError) as err:
        threshold, reason = float("nan"), f"{type(err).__name__}: {err}"
    if not np.isfinite(threshold):
        warnings.warn(
            f"gamma fit failed ({reason}); using the empirical {quantile} quantile",
            RuntimeWarning,
            stacklevel=2,
        )
        threshold = float(np.quantile(scores, quantile))
    return threshold


DECISION_RULES = ("gamma", "empirical")


def decision_threshold(train_scores, quantile: float = 0.9, rule: str = "gamma") -> float:
    """The decision threshold of one machine type and section, from training-clip scores only.

    ``rule="gamma"``: the official baseline's, :func:`gamma_threshold`. ``rule="empirical"``: the
    ``quantile`` of the scores themselves (``numpy.quantile``). The official rule fits a gamma
    distribution by maximum likelihood with a free location, which heavy-tailed KNN distances
    can throw far above every test score: measured under the quick profile, Systems 1 and 3
    then flag no test clip of some machine types; the empirical quantile depends on ranks only
    and did not (``profiles/*.yaml``, ``decision``). Test scores never enter: the DCASE rules
    forbid statistics of the evaluation data in the decision making.
    """
    if rule not in DECISION_RULES:
        raise ValueError(f"unknown decision rule {rule!r}; choose from {DECISION_RULES}")
    if not 0 < quantile < 1:
        raise ValueError(f"the decision quantile must lie in (0, 1), not {quantile}")
    if rule == "gamma":
        return gamma_threshold(train_scores, quantile)
    scores = np.asarray(train_scores, dtype=float).ravel()
    if scores.size == 0 or not np.isfinite(scores).all():
        raise ValueError("train_scores must be a non-empty array of finite numbers")
    return float(np.quantile(scores, quantile))


def describe_decision(rule: str = "gamma", quantile: float = 0.9) -> str:
    """The decision rule in words (the results chapter and the submission's meta file)."""
    if rule == "gamma":
        how = f"the {quantile:g} quantile of a gamma distribution fitted to"
    else:
        how = f"the {quantile:g} quantile of"
    return f"per machine type and section: threshold = {how} the training clips' anomaly scores"


def decision_metrics(label, domain, decisions) -> pd.DataFrame:
    """Precision, recall and F1 of 0/1 decisions per domain, as the evaluator.

    Inputs as :func:`section_metrics`, with ``decisions`` (n,) of 0/1 (1 = anomaly). Output: a
    frame indexed by domain (source, target) with columns ``precision, recall, f1`` from
    ``precision_recall_fscore_support(average="binary", zero_division=0)``, which equals the
    evaluator's ``tp / max(tp + fp, eps)`` convention. Raises ValueError if a domain has no clips.
    """
    y = _label_to_int(label)
    domain = np.asarray(domain, dtype=str).ravel()
    decisions = np.asarray(decisions, dtype=int).ravel()
    rows = {}
    for d in DOMAINS:
        mask = domain == d
        if not mask.any():
            raise ValueError(f"no {d}-domain clips")
        p, r, f, _ = precision_recall_fscore_support(
            y[mask], decisions[mask], average="binary", zero_division=0
        )
        rows[d] = {"precision": float(p), "recall": float(r), "f1": float(f)}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("domain")


def flagged_share(decisions: pd.DataFrame) -> pd.Series:
    """The share of test clips a system flags as anomalous, per domain and overall.

    ``decisions``: :func:`read_system_scores` with ``kind="decision_result"`` (columns
    ``domain`` and ``decision_result``). Returns a Series indexed ``source``, ``target``,
    ``unknown`` (anonymous evaluation clips; only if present) and ``all``, values in [0, 1]. The
    test sets hold as many anomalies as normal clips, so a useful detector flags a share well
    inside (0, 1); 0 or 1 means its threshold does not transfer to the test clips.
    """
    flagged = decisions["decision_result"].astype(float)
    domain = decisions["domain"].fillna("unknown")
    share = flagged.groupby(domain).mean()
    order = [d for d in (*DOMAINS, "unknown") if d in share.index]
    return pd.concat([share.reindex(order), pd.Series({"all": flagged.mean()})])


# --- Table 2 -------------------------------------------------------------------------------------


def _table2_index(machine_types: Iterable[str]) -> pd.MultiIndex:
    rows = [
        (m, metric)
        for m in sorted(set(machine_types), key=machine_sort_key)
        for metric in METRICS.values()
    ]
    return pd.MultiIndex.from_tuples(
        [*rows, OFFICIAL_ROW, AMEAN_ROW], names=["machine_type", "metric"]
    )


def table2(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The paper's Table 2 layout from ``{system name: evaluate() output}``.

    Output: rows indexed by (machine_type, metric), metric in AUC-s / AUC-t / pAUC, then
    ("official score", "hmean") and :data:`AMEAN_ROW` ("amean"); one column per system in the
    given order; values in percent. Several sections of one machine type are averaged per
    machine type (as the evaluator's per-machine table); the summary rows come from
    :func:`summarise` over every section's values. A machine type a system lacks is NaN in its
    column, and that column's summary rows are over the machine types it has.
    """
    columns = {}
    for system, table in tables.items():
        per_machine = table.groupby("machine_type")[list(METRICS)].mean().rename(columns=METRICS)
        column = per_machine.stack() * 100
        summary = summarise(table)
        column[OFFICIAL_ROW] = summary["hmean"] * 100
        column[AMEAN_ROW] = summary["amean"] * 100
        columns[system] = column
    machine_types = {m for table in tables.values() for m in table["machine_type"]}
    return pd.DataFrame(columns).reindex(_table2_index(machine_types))


def table2_style(wide: pd.DataFrame):
    """A Table-2 layout frame ready to display: flat rows (machine_type, metric), 2 decimals.

    Returns a pandas Styler (HTML in notebooks and the book); missing values show as "–".
    """
    return wide.reset_index().style.format(precision=2, na_rep="–").hide(axis="index")


def table2_from_wide(wide: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Invert the Table 2 layout into ``{system: evaluate()-shaped frame}`` (values / 100).

    Only the per-machine rows are used (summary rows are dropped, so they can be recomputed);
    the section is ``"00"``; machine types that are NaN in a column are left out of it.
    """
    machines = wide.drop(index=[OFFICIAL_ROW, AMEAN_ROW], errors="ignore")
    names = {v: k for k, v in METRICS.items()}
    tables = {}
    for system in wide.columns:
        table = machines[system].unstack("metric").rename(columns=names)[list(METRICS)] / 100
        table = table.dropna().reset_index().rename_axis(columns=None)
        table.insert(1, "section", "00")
        tables[system] = table
    return tables


def reported_table2() -> pd.DataFrame:
    """Table 2 of the XJU report as printed (dev set, percent), in the layout of :func:`table2`.

    Read from the package file ``asd_utils/reference/xju_table2.csv`` (long format
    ``machine_type,metric,system,value``). The official-score row is the printed one; the paper
    prints no arithmetic mean, so that row is NaN.
    """
    source = resources.files("asd_utils") / "reference" / "xju_table2.csv"
    with source.open("r", encoding="utf-8") as f:
        long = pd.read_csv(f, comment="#")
    wide = long.pivot(index=["machine_type", "metric"], columns="system", values="value")
    machine_types = set(long["machine_type"]) - {OFFICIAL_ROW[0]}
    wide = wide.reindex(index=_table2_index(machine_types), columns=long["system"].unique())
    return wide.rename_axis(columns=None)
