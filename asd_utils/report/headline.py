"""The run's result in a few lines: the official score of every system, the best and the log-mel
floor marked, and sentences that say what the numbers mean. What ``asd run``, ``asd evaluate``,
``asd report`` and ``asd status`` end with, and what the book's landing page says first.

Everything is computed from the run's ``metrics.csv`` (per machine type and section, as
:func:`asd_utils.stages.evaluate` writes it) and the registry (:mod:`asd_utils.registry`: which
systems there are, which is the floor, which are the paper's); the paper's reported scores come
from :func:`asd_utils.evaluation.metrics.reported_table2`. No torch here: the book reads it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from asd_utils import registry
from asd_utils.evaluation import metrics

METRICS_NAME = "metrics.csv"
CROSS_CPU = "cross_cpu_quick.csv"  # the reference folder's measured scores on two CPU kinds


def official_scores(output_root: Path) -> pd.Series:
    """The official score (hmean, %) of every registered system in ``<output_root>/metrics.csv``
    with ground truth, in the book's order (ablations left out); empty without the file."""
    path = Path(output_root) / METRICS_NAME
    if not path.exists():
        return pd.Series(dtype=float)
    table = pd.read_csv(path, dtype={"section": str})
    names = [n for n in registry.ordered(table["system"].unique()) if n in registry.REGISTRY]
    scores = {n: 100 * metrics.summarise(table[table["system"] == n])["hmean"] for n in names}
    return pd.Series(scores, dtype=float).dropna()


def floor_name() -> str | None:
    """The registered system that is a floor (no model), if there is one."""
    floors = registry.of_kind("floor")
    return floors[0] if floors else None


def best(scores: pd.Series) -> str | None:
    """The system with the highest official score, the floor aside (a yardstick, not a system)."""
    learned = scores.drop(floor_name(), errors="ignore")
    return learned.idxmax() if len(learned) else None


def score_lines(output_root: Path) -> list[str]:
    """One line per system: its official score, ``best`` and ``floor`` marked; a line saying why
    when nothing was scored. For the end of ``asd run`` / ``evaluate`` / ``report`` / ``status``."""
    scores = official_scores(output_root)
    if scores.empty:
        return [f"no official scores in {Path(output_root) / METRICS_NAME} (not evaluated yet)"]
    width = max(len(name) for name in scores.index)
    top, floor = best(scores), floor_name()
    cpu = recorded_machine(output_root).get("processor") or "not recorded"
    lines = [f"official score (hmean of AUC-s, AUC-t and pAUC, %) on this CPU ({cpu}):"]
    for name, value in scores.items():
        mark = " <- best" if name == top else ""
        if name == floor:
            mark = " <- floor (no model)"
        elif floor in scores and value <= scores[floor]:
            mark += " (below the floor)"
        lines.append(f"  {name:<{width}}  {value:6.2f}{mark}")
    return lines


def recorded_machine(output_root: Path) -> dict:
    """The ``machine`` of ``<output_root>/run_record.json`` (empty when there is none)."""
    try:
        return json.loads((Path(output_root) / "run_record.json").read_text()).get("machine", {})
    except (OSError, ValueError):
        return {}


def reported() -> pd.Series:
    """The paper's official score per system (%, real dev set, pre-trained weights)."""
    return metrics.reported_table2().loc[metrics.OFFICIAL_ROW].astype(float)


def meaning(scores: pd.Series, members: list[str] | None = None) -> list[str]:
    """Sentences of what ``scores`` (:func:`official_scores`) say: which system is best, which
    clear the log-mel floor, and each ensemble against its ``members`` (the profile's) beside
    what the paper reports for them. Nothing without scores."""
    if scores.empty:
        return []
    top, floor = best(scores), floor_name()
    said = [f"The best official score here is **{top}**'s ({scores[top]:.2f} %)."]
    if floor in scores:
        learned = [n for n in scores.index if n != floor]
        above = [n for n in learned if scores[n] > scores[floor]]
        named = f": {', '.join(above)}." if 0 < len(above) < len(learned) else "."
        said.append(
            f"{_count(above, learned)} clear{'s' if len(above) == 1 else ''} the log-mel floor "
            f"({scores[floor]:.2f} %, no model){named}"
        )
    for ensemble in [n for n in registry.of_kind("ensemble") if n in scores]:
        said.append(ensemble_sentence(ensemble, scores, members or []))
    return said


def _count(some: list, of: list) -> str:
    if len(some) == len(of):
        return f"All {len(of)} systems"
    return f"{len(some) or 'None'} of the {len(of)} systems"


def ensemble_sentence(ensemble: str, scores: pd.Series, members: list[str]) -> str:
    """The ensemble's score against each member's here, and the same in the paper."""
    present = [m for m in members if m in scores]
    if not present:
        return f"{ensemble} scores {scores[ensemble]:.2f} % (no member scored in this run)."
    below = [m for m in present if scores[m] > scores[ensemble]]
    above = [m for m in present if m not in below]
    here = ", ".join(f"{m} {scores[m]:.2f}" for m in present)
    verdict = (
        "above every member"
        if not below
        else "below every member"
        if not above
        else f"below {', '.join(below)} and above {', '.join(above)}"
    )
    paper = reported()
    if ensemble in paper and all(m in paper for m in present):
        told = ", ".join(f"{m} {paper[m]:.2f}" for m in present)
        best_there = "as its best: " if paper[ensemble] >= paper[present].max() else ""
        versus = (
            f"; the paper reports it {best_there}{paper[ensemble]:.2f} against {told} "
            "(real data, pre-trained weights)"
        )
    else:
        versus = ""
    return f"{ensemble} ({scores[ensemble]:.2f} %) is {verdict} ({here}){versus}."


def cross_cpu() -> pd.DataFrame:
    """The quick profile's official scores measured on two CPU kinds (``system``, one column per
    CPU kind), from the package's reference folder: the spread a CPU alone makes."""
    from importlib import resources

    source = resources.files("asd_utils") / "reference" / CROSS_CPU
    with source.open("r", encoding="utf-8") as f:
        return pd.read_csv(f, comment="#")


def cpu_sentence(processor: str | None) -> str:
    """Results are this CPU's: the sentence naming it and the measured cross-CPU spread."""
    spread = cross_cpu()
    kinds = [c for c in spread.columns if c != "system"]
    gaps = (spread[kinds[0]] - spread[kinds[1]]).abs()
    pairs = "; ".join(
        f"{name} {a:.2f} vs {b:.2f}"
        for name, a, b in zip(spread["system"], spread[kinds[0]], spread[kinds[1]], strict=True)
    )
    return (
        f"These scores are this run's on this CPU ({processor or 'not recorded'}). The same "
        f"profile and seed on another CPU kind give other scores (float32 sums in another "
        f"order): quick profile, {kinds[0]} vs {kinds[1]}: {pairs} (up to "
        f"{gaps.max():.2f} points), comparable to the spread over seeds."
    )
