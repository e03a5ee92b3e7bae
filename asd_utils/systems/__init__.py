"""The fine-tuned systems, each a registry entry, a recipe and a profile section.

| system   | profile section | recipe (:mod:`.recipes`) | backbone    | front-end                  |
|----------|-----------------|--------------------------|-------------|----------------------------|
| System 1 | ``osscl``       | ``OSSCL``                | EAT         | near channel               |
| System 2 | ``beats_grl``   | ``GRL``                  | BEATs       | near channel               |
| System 3 | ``osscl``       | ``OSSCL``                | EAT         | ANC-denoised near (``anc``)|
| System 5 | ``fusion``      | ``Fusion``               | EAT/BEATs   | near + far, fused inside   |
| System 7 | ``lora_beats``  | ``LoRASCAdaCos``         | LoRA BEATs  | W1 view of both channels   |

System 5 goes beyond the paper: cross-channel modules inside the encoder
(:class:`asd_utils.models.fusion.FusionBackbone`) let the near channel attend to the far one.
System 7 is the strongest public recipe (kasahart/asd-experiments ``reproduction/asd03``).

System 0 (``training_free``, :mod:`asd_utils.systems.training_free`) trains nothing;
:func:`settings` and :func:`asd_utils.stages.knn_k` serve it too.

:func:`build` turns (data root, profile, system) into ``(model, loss_fn, dataset)`` for
:func:`asd_utils.training.train`, asking the system's recipe for classes, model, loss and front
end; :func:`asd_utils.stages.train` calls it through :func:`train_system`, in every process of
``accelerate launch -m asd_utils.cli train``.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from asd_utils import data, errors, registry, training
from asd_utils.config.schema import Profile, Section
from asd_utils.files import atomic_write_text
from asd_utils.models import precision
from asd_utils.models.common import CheckpointError
from asd_utils.models.eat import EATConfig
from asd_utils.systems import recipes
from asd_utils.systems.classes import ASSIGNMENT, write_assignment
from asd_utils.systems.recipes import build_backbone

INFO = "system.json"  # beside a system's official files: its name and parameter count
CHECKPOINT_ENV = registry.CHECKPOINT_ENV
SAMPLE_RATE = 16000


def settings(profile: Profile, system: str) -> Section:
    """The typed profile section of a fine-tuned or training-free ``system``, with the backbone
    checkpoint resolved (:func:`asd_utils.registry.settings`)."""
    known = registry.of_kind("fine-tuned", "training-free")
    if system not in known:
        raise KeyError(f"unknown system {system!r}; known: {', '.join(known)}")
    return registry.settings(profile, system)


def unavailable(clips: pd.DataFrame) -> dict[str, str]:
    """The fine-tuned and training-free systems that cannot run on these clips, each with the
    reason.

    Decided from the clip table (:func:`asd_utils.data.index_dataset`, WAV headers only), so a
    run knows before anything trains: a system with an ANC front-end needs the far channel,
    which mono clips (the 2020–2025 editions) do not have.
    """
    reasons = {}
    mono = clips[clips["channels"] < 2]
    for system in registry.of_kind("fine-tuned", "training-free"):
        entry = registry.REGISTRY[system]
        if entry.needs_far and len(mono):
            needs = (
                "its encoder fuses"
                if entry.reads == registry.NEAR_FAR
                else f"its {entry.reads.upper()} front-end needs"
            )
            reasons[system] = (
                f"{needs} the far microphone (channel 1), but {len(mono):,} of "
                f"{len(clips):,} clips are mono (e.g. {mono['path'].iloc[0]})"
            )
    return reasons


def skip_notice(reasons: dict[str, str]) -> str:
    """One line per system that does not run, for the console and the book ("" if none)."""
    return " ".join(f"{system} is skipped: {why}." for system, why in reasons.items())


def check_checkpoints(
    profile: Profile, skip: Iterable[str] = (), only: Iterable[str] | None = None
) -> list[str]:
    """Load, once each, the backbone checkpoints the profile's systems name (``$EAT_CHECKPOINT``
    / ``$BEATS_CHECKPOINT`` over a section's ``checkpoint``), before any stage runs: every
    system (fine-tuned and training-free) or those in ``only``, less those in ``skip`` (the
    ones the data cannot feed). Returns the checkpoints checked.

    Raises :class:`asd_utils.errors.RunError` naming the system, where the path came from, the path
    and what was expected: a missing file or folder, or one of the wrong kind (not an EAT
    Hugging Face folder, not a BEATs ``.pt`` …), so that a run on ``paper`` does not fail in
    chapter 30 after hours of the baseline.
    """
    seen: dict[tuple[str, str], str] = {}
    skip = set(skip)
    backbones = registry.of_kind("fine-tuned", "training-free")
    for system in backbones if only is None else list(only):
        section = registry.get(system).section
        if system in skip or not registry.has_section(profile, section):
            continue
        values = settings(profile, system)
        kind, path = values.backbone, values.checkpoint
        if not path or (kind, path) in seen:
            continue
        env = CHECKPOINT_ENV[kind]
        origin = f"${env}" if os.environ.get(env) else f"the profile's {section}.checkpoint"
        try:
            build_backbone(kind, values.size, path)
        except (OSError, CheckpointError, ValueError, KeyError) as err:
            expected = (
                "an EAT Hugging Face folder (config.json, model.safetensors)"
                if kind == "eat"
                else "an official BEATs .pt file"
            )
            raise errors.RunError(
                f"{system}: the {kind.upper() if kind == 'eat' else 'BEATs'} checkpoint "
                f"{path} (from {origin}) cannot be used: {errors.one_line(err)}; "
                f"expected {expected}"
            ) from None
        seen[(kind, path)] = system
    return [path for _, path in seen]


def class_names(table: pd.DataFrame, profile: Profile, system: str) -> tuple[np.ndarray, list[str]]:
    """The classes a system learns from the training clips ``table``: ``(ids, names)``, as its
    recipe makes them (:meth:`asd_utils.systems.recipes.Recipe.classes`): machine type ×
    section × attribute string (:func:`asd_utils.data.attribute_classes`), × domain where the
    recipe or its section says so, or pseudo-attributes (System 7). Over the training clips of
    all twelve 2026 machine types (dev and eval) the name classes are the paper's 80 (XJU report,
    Table 1: "Number of Classes: 80")."""
    classes = recipes.of(system).classes(profile, table)
    return classes.ids, classes.names


def parameter_count(model: nn.Module) -> int:
    """Parameters of a model as it scores (the backbone and head that embed a clip)."""
    return int(sum(p.numel() for p in model.parameters()))


def max_seconds(profile: Profile, system: str) -> float | None:
    """The longest clip ``system``'s encoder takes whole, in seconds (EAT: its position table,
    :meth:`asd_utils.models.eat.EATConfig.max_seconds`); ``None`` for no limit (BEATs' relative
    positions, the models without a backbone)."""
    if not registry.has_section(profile, registry.get(system).section):
        return None
    values = settings(profile, system)
    if values.backbone != "eat":
        return None
    if not values.checkpoint:
        return getattr(EATConfig, values.size)().max_seconds()
    path = Path(values.checkpoint) / "config.json"
    try:
        return EATConfig.from_dict(json.loads(path.read_text())).max_seconds()
    except (OSError, ValueError, CheckpointError) as err:
        raise errors.RunError(f"{system}: {path}: {errors.one_line(err)}") from None


def check_clip_lengths(profile: Profile, clips: pd.DataFrame, skip: Iterable[str] = ()) -> None:
    """The door for clip lengths: a :class:`~asd_utils.data.DataError` naming the longest clip
    and the limit in seconds when it is longer than an encoder of the profile's systems (less
    ``skip``) takes whole (:func:`max_seconds`), before anything trains."""
    if clips.empty:
        return
    longest = clips.loc[clips["duration"].idxmax()]
    for system in registry.of_kind("fine-tuned", "training-free"):
        limit = None if system in set(skip) else max_seconds(profile, system)
        if limit is not None and longest["duration"] > limit:
            raise data.DataError(
                f"{longest['path']!r} is {longest['duration']:.1f} s long, longer than "
                f"{system}'s EAT encoder takes ({limit:.1f} s, its position table): cut the "
                f"clips into parts of at most {limit:.0f} s"
            )


def write_info(directory: str | Path, system: str, parameters: int, **extra) -> Path:
    """``<directory>/system.json``: the system's name, parameter count and ``extra`` (e.g.
    ``members`` of an ensemble, ``classes``), read by :mod:`asd_utils.submission`."""
    payload = {"system": system, "parameters": int(parameters), **extra}
    return atomic_write_text(Path(directory) / INFO, json.dumps(payload, indent=2))


def mixed_precision(profile: Profile, system: str) -> str:
    """The section's ``mixed_precision`` setting (``train.mixed_precision`` of a fine-tuned
    system, ``mixed_precision`` of System 0): ``no``, ``bf16`` or ``auto``."""
    section = settings(profile, system)
    train = getattr(section, "train", None)
    return train.mixed_precision if train is not None else section.mixed_precision


def resolved_precision(profile: Profile, system: str) -> precision.Precision:
    """What the system computes in on this machine (:func:`asd_utils.models.precision.resolve` of
    :func:`mixed_precision` on the GPU when there is one, else the CPU): training and
    embedding alike; pass its ``autocast`` to :func:`asd_utils.scoring.extract_embeddings`."""
    return precision.resolve(mixed_precision(profile, system))


def precisions(profile: Profile) -> dict[str, dict]:
    """Every system's resolved precision, for ``run_record.json``: ``{system: {setting,
    device, precision, reason, ...}}``."""
    names = registry.of_kind("training-free", "fine-tuned")
    return {name: resolved_precision(profile, name).to_dict() for name in names}


def train_config(profile: Profile, system: str) -> training.TrainConfig:
    """The system's training settings; the seed is the profile's unless the section sets one."""
    return training.TrainConfig.from_section(settings(profile, system).train, profile.seed)


def front_end(profile: Profile, system: str) -> tuple[int | None, Callable | None, str | None]:
    """How a system reads a clip: ``(channel, preprocess, preprocess_key)`` for
    :class:`asd_utils.training.ClipDataset` and :func:`asd_utils.scoring.extract_embeddings`,
    as its recipe says (:meth:`asd_utils.systems.recipes.Recipe.front_end`): System 3 denoises
    with the ANC chapter's settings, System 5 reads both microphones (channel None), System 7
    the W1 view."""
    return recipes.of(system).front_end(profile)


def bands(profile: Profile, system: str) -> int:
    """Frequency bands in a trained system's embeddings (1: one vector per clip)."""
    recipe = recipes.of(system)
    return recipe.bands(recipe.settings(profile))


def repeat_target_clips(table, repeats: int = 1):
    """The training table with each target-domain clip listed ``repeats`` times (1: unchanged).

    A DCASE section has 10 target clips beside 990 (here: ``n_train_source``) source clips, so a
    uniform sampler shows the target classes so rarely that they stay spread out in the
    embedding, and the nearest-neighbour distances of target clips come out larger than those
    of source clips; AUC (target) then ranks normal target clips above source-domain anomalies.
    Repeating the target clips (each repeat gets its own random crop and SpecAugment masks)
    balances the domains in training. Not in the paper's Table 1 (``target_repeats: 1`` in the
    ``paper`` profile).
    """
    if repeats < 1:
        raise ValueError(f"target_repeats must be >= 1, not {repeats}")
    target = table[table["domain"] == "target"]
    if repeats == 1 or target.empty:
        return table
    return pd.concat([table] + [target] * (repeats - 1), ignore_index=True)


def _training_clips(data_root, clips: pd.DataFrame | None) -> pd.DataFrame:
    """The training clips of ``clips`` (the run's manifest), or of ``data_root`` indexed now
    (a process of ``accelerate launch`` that was handed primitives only)."""
    if clips is None:
        return data.index_dataset(data_root, split="train")
    return clips[clips["split"] == "train"].reset_index(drop=True)


def build(
    data_root: str,
    profile: Profile,
    system: str,
    progress: bool = True,
    loss_overrides: dict | None = None,
    clips: pd.DataFrame | None = None,
    frames: bool = False,
):
    """``(model, loss_fn, dataset)`` of one system, trained on the training clips of ``data_root``
    (those of ``clips``, the run's clip manifest, when given). ``frames``: the data set gives
    crops in frames of each clip's fbank, computed once (what :func:`train_system` trains on
    where :func:`crops_in_frames`), else crops in samples (waveforms).

    The recipe (:mod:`asd_utils.systems.recipes`) makes the classes (over the training clips of
    every machine type present, dev and eval together), the model and the loss.
    """
    recipe = recipes.of(system)
    settings_ = recipe.settings(profile)
    table = repeat_target_clips(_training_clips(data_root, clips), settings_.target_repeats)
    classes = recipe.classes(profile, table, progress)
    targets, names = classes.ids, classes.names
    train = train_config(profile, system)
    # Random weights (backbone, heads, class centres) come from the run's seed, not from whatever
    # the global RNG holds at call time: a system's score must not depend on what ran before.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train.seed)
        model = recipe.model(settings_)
        loss = recipe.loss(settings_, model, names, train, loss_overrides)
    channel, preprocess, _ = front_end(profile, system)
    crop = settings_.crop_seconds
    dataset = training.ClipDataset(
        table,
        targets,
        length=int(crop * SAMPLE_RATE) if crop else None,
        channel=channel,
        preprocess=preprocess,
        progress=progress,
        fbank=model.fbank if frames else None,
    )
    return model, loss, dataset


def crops_in_frames(profile: Profile, system: str) -> bool:
    """Whether a system trains on crops taken in frames of each clip's fbank, computed once
    (:class:`asd_utils.training.ClipDataset` with ``fbank``): yes unless it mixes waveforms
    (mixup, System 7), which needs crops in samples."""
    train = train_config(profile, system)
    return train.mixup_alpha == 0 and getattr(train, "mixup_prob", 0) == 0


def random_init_warning(settings_: Section, system: str) -> str | None:
    """A plain sentence when a system starts from random weights (no checkpoint given)."""
    if settings_.checkpoint:
        return None
    message = (
        f"{system}: no {settings_.backbone.upper()} checkpoint given "
        f"(${CHECKPOINT_ENV[settings_.backbone]} or the profile's 'checkpoint'), so the "
        f"'{settings_.size}' backbone starts from RANDOM weights, not the paper's "
        "pre-trained ones"
    )
    warnings.warn(message, stacklevel=2)
    return message


def run_dir(
    output_root: str | Path,
    profile: Profile,
    system: str,
    data_root: str | Path,
    clips: pd.DataFrame | None = None,
) -> Path:
    """Where a system's training run lives: ``<output_root>/training/<system>-<key>``, the key a
    hash of everything that changes the weights (section, front-end, seed, data root and its
    training clips as files, :func:`asd_utils.data.clip_fingerprint`), so a changed profile or
    dataset trains anew and an unchanged one resumes (or finds the run finished). The
    precision enters as resolved (``auto`` → ``bf16`` or ``no``): a run trained in float32 is
    never reused for bf16, nor the other way round. The recipe adds its own parts (System 7:
    the class assignment, :func:`asd_utils.systems.classes.assignment_key`)."""
    recipe = recipes.of(system)
    section = {k: v for k, v in recipe.settings(profile).plain().items() if k not in recipe.scoring}
    chosen = resolved_precision(profile, system).mixed_precision
    section["train"] = {**section["train"], "mixed_precision": chosen}
    training_clips = _training_clips(data_root, clips)
    payload = {
        "settings": section,
        "front_end": recipe.front_end(profile)[2],
        "seed": profile.seed,
        "data_root": str(data_root),
        "clips": data.clip_fingerprint(training_clips),
        **recipe.key(profile, recipe.classes(profile, training_clips)),
        **({"crops": "frames"} if crops_in_frames(profile, system) else {}),
    }
    key = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
    return Path(output_root) / "training" / f"{system.replace(' ', '_')}-{key[:10]}"


def train_system(
    data_root: str | Path,
    profile: Profile,
    system: str,
    output_root: str | Path,
    progress: bool = True,
    overrides: dict | None = None,
    clips: pd.DataFrame | None = None,
) -> training.TrainResult:
    """Build and train one system (resuming its run folder if it exists); EMA weights inside.

    The run folder gets the class assignment (``classes.csv``, clip → class) first.
    ``overrides`` replace keys of the system's ``loss`` settings (e.g. ``{"lambda_max": 0.0}``
    for the GRL ablation) and give the run its own folder. ``clips``: the run's clip manifest
    (:func:`asd_utils.stages.prepare`), so that nothing indexes the tree again.
    """
    frames = crops_in_frames(profile, system)
    model, loss, dataset = build(
        str(data_root), profile, system, progress, overrides, clips, frames
    )
    folder = run_dir(output_root, profile, system, data_root, clips)
    if overrides:
        tag = "-".join(f"{k}{v}" for k, v in sorted(overrides.items()))
        folder = folder.with_name(f"{folder.name}-{tag}")
    if not (folder / ASSIGNMENT).is_file():  # a finished run found by a read-only command: as is
        classes = recipes.of(system).classes(profile, _training_clips(data_root, clips))
        write_assignment(classes, folder)
    try:
        return training.train(
            model, loss, dataset, train_config(profile, system), folder, True, progress
        )
    except errors.NonFiniteError as err:
        raise errors.NonFiniteError(f"{system}: {err}") from None
