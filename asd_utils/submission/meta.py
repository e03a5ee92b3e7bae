"""The ``.meta.yaml`` of a submitted system (the DCASE template), pre-filled with what the run
knows; what it cannot know is a ``FILL IN`` placeholder."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import yaml

from asd_utils import registry
from asd_utils.config import prose
from asd_utils.config.schema import Profile
from asd_utils.evaluation.metrics import METRICS, describe_decision, machine_sort_key

FILL_IN = "FILL IN"
MAX_ABBREVIATION = 10  # "Use a maximum of 10 characters" (the DCASE meta template)
AUDIOSET = {
    "name": "AudioSet",
    "url": "https://research.google.com/audioset/",
    "total_audio_length": f"{FILL_IN}: hours of AudioSet audio the checkpoint was trained on",
}
BACKBONE_NAMES = prose.BACKBONE_NAMES
DESCRIPTION_FIELDS = (
    "input_sampling_rate",
    "acoustic_features",
    "data_augmentation",
    "front_end",
    "embeddings",
    "machine_learning_method",
    "aggregation_method",
    "domain_adaptation_method",
    "domain_generalization_method",
    "ensemble_method_subsystem_count",
    "decision_making",
    "attribute_usage",
    "external_data_usage",
    "development_data_usage",
)
FBANK = prose.FBANK
BASELINE_FEATURES = "log-mel energies (128 bins, n_fft 1024, hop 512), 5 frames stacked (640-dim)"
NEAR = prose.NEAR
# What an ensemble's meta says member by member (one value when all members agree).
PER_MEMBER = (
    "acoustic_features",
    "data_augmentation",
    "front_end",
    "embeddings",
    "aggregation_method",
    "domain_generalization_method",
    "attribute_usage",
)


def _base(system: str) -> str:
    """The registered system ``system`` is: an ablation's system (``"System 2 (lambda 0)"`` →
    ``"System 2"``, :data:`asd_utils.registry.ABLATIONS`; it shares its system's facts), else
    itself."""
    ablation = registry.ablation(system)
    return ablation.system if ablation else system


_checkpoint, _embeddings = prose.checkpoint, prose.embeddings


def _describe(
    system: str, profile: Profile, members: Sequence[str], info: dict | None = None
) -> tuple[dict, list[str]]:
    """``(system.description fields, backbones with a checkpoint)`` of one system, described by
    what the registry says it is (:mod:`asd_utils.registry`: its kind and section). A trained
    system describes itself: its recipe's words, kept in its ``system.json`` (``info``:
    ``description`` and ``checkpoints``) when it trained; an ensemble's members are described
    from their own (``info["member_info"]``)."""
    base = _base(system)
    entry = registry.REGISTRY.get(base)
    kind = entry.kind if entry else None
    info = info or {}
    fields = {field: None for field in DESCRIPTION_FIELDS}
    decision = describe_decision(**profile.decision.plain())
    fields.update(input_sampling_rate="16kHz", front_end=NEAR, decision_making=decision)
    checkpoints: list[str] = []
    if info.get("description"):
        described, checkpoints = dict(info["description"]), list(info.get("checkpoints", []))
    elif kind in DESCRIBED_BY_KIND:
        described, checkpoints = DESCRIBED_BY_KIND[kind](base, entry, profile, members, info)
    else:
        described = {f: f"{FILL_IN}: {f.replace('_', ' ')}" for f in DESCRIPTION_FIELDS[1:]}
    fields.update(described)
    return fields, checkpoints


DESCRIBED_BY_KIND = {
    # registry kind -> (base name, registry entry, profile, members, info) -> (fields, checkpoints)
    # for the systems that keep no description of their own in system.json
    "ensemble": lambda base, entry, profile, members, info: _describe_ensemble(
        profile, members, info.get("member_info")
    ),
    "autoencoder": lambda base, entry, profile, members, info: (
        _describe_autoencoder(base, profile),
        [],
    ),
    "training-free": lambda base, entry, profile, members, info: _describe_training_free(
        entry, profile
    ),
}
"""How :func:`_describe` words a system by its registry kind when its ``system.json`` holds no
description (a trained system's recipe writes its own)."""


FRONT_ENDS = {
    "near": NEAR,
    "far": "the far microphone (channel 1)",
    "residual": "near - alpha x far embeddings of the two microphones",
    "concat": "near and far embeddings side by side",
    "anc": "the near channel after the adaptive far-microphone canceller (FBLMS)",
    "w1": (
        "W1: the near channel less the far one through a fixed per-bin complex filter fitted "
        "over the clip (STFT 1024/512)"
    ),
    "ss": "the near channel's magnitude spectrum less the far one's (spectral subtraction)",
}


def _describe_training_free(entry, profile: Profile) -> tuple[dict, list[str]]:
    """:func:`_describe` of a training-free system (System 0, System 6), from its section."""
    section = registry.settings(profile, entry.name)
    backend = section.backend
    if backend == "default":
        backend = profile.backends.default
    pooling = section.pooling
    if pooling == "time_rdp":
        pooling = f"relative-deviation pooling over time per frequency band (gamma {section.gamma})"
    fields = dict(
        acoustic_features=FBANK,
        front_end=FRONT_ENDS.get(section.view, section.view),
        embeddings=_embeddings(section),
        machine_learning_method=(
            f"no training: a frozen pre-trained encoder; anomaly score by the {backend} back end"
            + (f" (after {entry.source})" if entry.source else "")
        ),
        aggregation_method=f"block {section.layer} output tokens, {pooling}",
        attribute_usage="none",
        external_data_usage=(
            f"pre-trained {BACKBONE_NAMES.get(section.backbone)} checkpoint"
            if _checkpoint(section)
            else None
        ),
    )
    return fields, [section.backbone] if _checkpoint(section) else []


def _describe_ensemble(
    profile: Profile, members: Sequence[str], member_info: dict | None = None
) -> tuple[dict, list[str]]:
    """:func:`_describe` of an ensemble (System 4): each of :data:`PER_MEMBER` the members'
    common value or one per member, the members' checkpoints, how scores are combined.
    ``member_info``: each member's ``system.json`` (its recipe's words)."""
    ensemble = profile.ensemble
    members = list(members) or list(ensemble.members)
    described, checkpoints = [], []
    for member in members:
        member_fields, member_checkpoints = _describe(
            member, profile, (), (member_info or {}).get(member)
        )
        described.append(member_fields)
        checkpoints += [c for c in member_checkpoints if c not in checkpoints]
    fields = {}
    for field in PER_MEMBER:
        values = [d[field] for d in described]
        fields[field] = (
            values[0]
            if len(set(values)) == 1 and field != "embeddings"
            else "; ".join(f"{m}: {v}" for m, v in zip(members, values, strict=True))
        )
    fields.update(
        machine_learning_method=(
            f"ensemble of {', '.join(members)}: each member's anomaly scores standardised "
            f"per machine type and section ({ensemble.normalisation}) with "
            "statistics of its training-clip scores, then combined "
            f"({ensemble.how}, weights {ensemble.weights})"
        ),
        ensemble_method_subsystem_count=len(members),
        external_data_usage=(
            "; ".join(d["external_data_usage"] for d in described if d["external_data_usage"])
            or None
        ),
    )
    return fields, checkpoints


def _describe_autoencoder(base: str, profile: Profile) -> dict:
    """:func:`_describe` of the official autoencoder baseline (MSE, or selective Mahalanobis
    when ``base`` names MAHALA)."""
    baseline = profile.baseline
    mahala = "MAHALA" in base  # the selective Mahalanobis variant
    return dict(
        acoustic_features=BASELINE_FEATURES,
        machine_learning_method=(
            "dense autoencoder 640-128-128-128-128-8-128-128-128-128-640 (the official "
            f"baseline), Adam, learning rate {baseline.learning_rate}, "
            f"{baseline.epochs} epochs, batch {baseline.batch_size}; "
            + (
                "anomaly score: selective Mahalanobis distance of the clip's mean "
                "reconstruction residual"
                if mahala
                else "anomaly score: mean squared reconstruction error"
            )
        ),
        aggregation_method="mean over the clip's frame vectors",
        domain_generalization_method=(
            "separate source and target residual covariances; the smaller distance"
            if mahala
            else None
        ),
        attribute_usage="domain labels of the training clips" if mahala else None,
    )


def development_results(metrics_table: pd.DataFrame | None, system: str) -> dict:
    """``{machine_type: {auc_source, auc_target, pauc}}`` of one system, in % to 2 decimals.

    ``metrics_table``: the run's ``metrics.csv`` (columns ``machine_type, section, auc_source,
    auc_target, pauc, system``, values in [0, 1]); several sections of a machine type are
    averaged. Machine types are sorted as the paper's tables; None gives ``{}``.
    """
    if metrics_table is None or metrics_table.empty:
        return {}
    rows = metrics_table[metrics_table["system"] == system]
    means = rows.groupby("machine_type")[list(METRICS)].mean()
    return {
        str(machine_type): {m: round(float(means.loc[machine_type, m]) * 100, 2) for m in METRICS}
        for machine_type in sorted(means.index, key=machine_sort_key)
    }


def build_meta(
    label: str,
    system: str,
    profile: Profile,
    system_info: dict | None = None,
    metrics_table: pd.DataFrame | None = None,
    development_data: str = "development dataset (training clips)",
) -> dict:
    """The ``.meta.yaml`` content of one submitted system, pre-filled with what the run knows.

    ``label``: the folder name ``<Lastname>_<Institute>_task2_<n>``; ``system``: the run's
    system name; ``profile``: the run's profile (its ``submission.descriptions[system]`` may
    give ``name`` and ``abbreviation``);
    ``system_info``: the system's ``system.json`` (``parameters``, ``members``);
    ``metrics_table``: the run's ``metrics.csv``. Authors and source code are ``FILL IN``
    placeholders (:func:`~asd_utils.submission.check.placeholders` lists what is left).
    """
    system_info = system_info or {}
    descriptions = {s: d.plain() for s, d in profile.submission.descriptions.items()}
    given = descriptions.get(system, {})
    # name and abbreviation: the profile's, of the system or else of its base system (an
    # ablation "System 2 (lambda 0)" is named after System 2, with its label); else the name
    base = descriptions.get(_base(system), {})
    name = base.get("name", system)
    ablation = registry.ablation(system)
    if ablation and "name" in base:
        name = f"{name} ({ablation.label})"
    abbreviation = base.get("abbreviation", system[:MAX_ABBREVIATION])
    description, checkpoints = _describe(
        system, profile, system_info.get("members") or (), system_info
    )
    description["development_data_usage"] = development_data
    parameters = system_info.get("parameters")
    return {
        "submission": {
            "label": label,
            "name": given.get("name", name),
            "abbreviation": given.get("abbreviation", abbreviation),
            "authors": [
                {
                    "lastname": f"{FILL_IN}: lastname",
                    "firstname": f"{FILL_IN}: firstname",
                    "email": f"{FILL_IN}: email",
                    "corresponding": True,
                    "affiliation": {
                        "abbreviation": f"{FILL_IN}: institute abbreviation",
                        "institute": f"{FILL_IN}: institute",
                        "department": f"{FILL_IN}: department",
                        "location": f"{FILL_IN}: city, country",
                    },
                }
            ],
        },
        "system": {
            "description": description,
            "complexity": {
                "total_parameters": (
                    int(parameters)
                    if isinstance(parameters, int | float)
                    else f"{FILL_IN}: total parameters (no system.json)"
                )
            },
            "external_datasets": [dict(AUDIOSET)] if checkpoints else [],
            "source_code": f"{FILL_IN}: URL of the public source code",
        },
        "results": {"development_dataset": development_results(metrics_table, system)},
    }


def meta_text(meta: dict) -> str:
    """The meta mapping as YAML, after a comment on what is pre-filled and what is not."""
    header = (
        "# DCASE 2026 Task 2 system meta information, pre-filled by asd_utils.submission.\n"
        f"# Replace every '{FILL_IN}' value before submitting; development results are in %.\n"
    )
    return header + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=4096)
