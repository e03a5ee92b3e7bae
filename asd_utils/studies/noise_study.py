"""The two-channel noise study: detection against the near microphone's SNR, over seeds.

Where the far microphone can matter, the question can be answered: the same machine sounds at
several near-microphone SNRs (the profile's ``noise_study`` section), the far microphone
carrying the noise more strongly, the noise non-stationary (impacts, babble) and reaching the
near microphone by a long reverberant path that System 3's 128-tap canceller cannot fully
model. One small synthetic set per SNR (:mod:`asd_utils.data.synth`); on each, for every seed,
one row per :class:`Arm` (:func:`arms`): System 1 (near channel only), System 3 (ANC), System 5
(fusion inside the encoder), trained by the common loop at the study's size, and the
training-free systems (System 0's view of a frozen encoder), each scored by its own back end.
With ``w1``, the arms of the fixed far-mic canceller W1: the training-free systems that read it
(System 6) and System 3 with the other canceller (``anc.canceller: w1`` beside the profile's
``fblms``, "System 3 (w1)"). With ``ablations``, System 5 variants at the middle SNR (where the
modules go, a frozen backbone): analysis.

    asd study noise --profile quick [--output-root DIR]    (make noise-study)

Seed by seed, each over every SNR, rows go to ``<output_root>/noise_study.csv`` (written after
every run, atomically), each with the :func:`study_key` of the settings; a rerun skips the rows
of the same key already there, so an interrupted study resumes, and drops rows of other
settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from asd_utils import config, data, files, registry, scoring, stages, systems
from asd_utils.config.schema import NoiseStudy, Profile
from asd_utils.data import synth
from asd_utils.evaluation import metrics
from asd_utils.systems import recipes, training_free

log = logging.getLogger(__name__)

CSV = "noise_study.csv"
# the kinds of trained system the study covers (asd_utils.systems.recipes): the OSSCL systems,
# one per input: near (System 1), ANC-denoised near (3), near + far (5)
KINDS = (recipes.OSSCL.kind, recipes.Fusion.kind)
TRAINED = tuple(s for s in registry.of_kind("fine-tuned") if recipes.kind(s) in KINDS)
FUSION = next(s for s in TRAINED if registry.get(s).reads == registry.NEAR_FAR)  # System 5
SECTIONS = tuple(dict.fromkeys(registry.get(s).section for s in TRAINED))  # their profile sections
TRAINING_FREE = tuple(registry.of_kind("training-free"))  # System 0; System 6 (W1) with ``w1``
KEYED_AS = {"training_free": "frozen"}  # System 0's section by its first name in study keys
CANCELLERS = typing.get_args(config.schema.Anc.model_fields["canceller"].annotation)
ABLATIONS = {  # name → changes to the fusion section (analysis, at the middle SNR)
    f"{FUSION} (first block)": {"blocks": [1]},
    f"{FUSION} (first and last block)": {"blocks": [1, -1]},
    f"{FUSION} (frozen backbone)": {"freeze_backbone": True},
}


@dataclass(frozen=True)
class Arm:
    """One row of the study per SNR and seed: ``system`` (a registry name) run with ``changes``
    to its profile (``{section: {key: value}}``; none: as the profile says), shown as ``label``
    (the ``system`` column: the system's name when unchanged)."""

    system: str
    label: str
    changes: dict = field(default_factory=dict, hash=False)


def arms(profile: Profile, snr_db: float | None = None) -> list[Arm]:
    """The study's arms under ``profile`` at one SNR: the trained systems of :data:`KINDS` and
    the training-free systems as the profile says; with ``noise_study.w1``, beside a system that
    reads the ANC the same with each other canceller (:data:`CANCELLERS`), else the systems that
    read W1 left out; with ``ablations``, :data:`ABLATIONS` at the middle SNR (``snr_db`` None:
    not the middle)."""
    study = profile.noise_study
    w1 = study.w1
    others = [c for c in CANCELLERS if c != profile.anc.canceller]
    out = []
    for s in (*TRAINED, *TRAINING_FREE):
        if w1 or registry.get(s).reads != registry.W1:
            out.append(Arm(s, s))
        if w1 and registry.get(s).reads == registry.ANC:  # beside it, the other canceller
            out += [Arm(s, f"{s} ({c})", {"anc": {"canceller": c}}) for c in others]
    middle = sorted(study.near_snr_db)[len(study.near_snr_db) // 2]
    if study.ablations and snr_db == middle:
        fusion = registry.get(FUSION).section
        out += [Arm(FUSION, name, {fusion: c}) for name, c in ABLATIONS.items()]
    return out


def dataset_config(study: NoiseStudy, snr_db: float) -> synth.SynthConfig:
    """The synthetic set at one near-microphone SNR."""
    return synth.SynthConfig(
        machine_types=tuple(study.machine_types),
        n_train_source=study.n_train_source,
        n_train_target=study.n_train_target,
        n_test=study.n_test,
        clip_seconds={"default": study.clip_seconds},
        near_snr_db=(snr_db, snr_db),
        far_snr_db=tuple(study.far_snr_db),
        noise_path_ms=tuple(study.noise_path_ms),
        noise_path_taps=study.noise_path_taps,
        seed=study.data_seed,
    )


def study_profile(profile: Profile, seed: int, changes: dict | None = None) -> Profile:
    """The profile a study run trains with (derived in memory, ``model_copy``): its seed, the
    study's steps for the trained systems (warm-up and checkpoints scaled along), and an arm's
    ``changes`` (``{section: {key: value}}``)."""
    steps = profile.noise_study.steps
    changes = changes or {}

    def shortened(name: str):
        section = getattr(profile, name)
        train = section.train.model_copy(
            update={
                "warmup_steps": max(1, min(section.train.warmup_steps, steps // 10)),
                "checkpoint_every": steps,
                "steps": steps,
            }
        )
        return section.model_copy(update={"train": train, **changes.get(name, {})})

    update = {s: getattr(profile, s).model_copy(update=v) for s, v in changes.items()}
    return profile.model_copy(
        update={"seed": seed, **update, **{s: shortened(s) for s in SECTIONS}}
    )


def read(path: str | Path) -> pd.DataFrame:
    """``noise_study.csv`` as written (the key kept a string: "1e5…" is not a number)."""
    return pd.read_csv(path, dtype={"study_key": str})


def study_key(profile: Profile) -> str:
    """A hash of every setting that changes the study's numbers, the precisions as resolved
    on this machine (``auto``: bf16 or float32); rows of other keys are old. A section is keyed
    by the name it had when the study began (:data:`KEYED_AS`), so a renamed one keeps its rows."""
    every = (*TRAINED, *TRAINING_FREE)
    sections = ("noise_study", *dict.fromkeys(registry.get(s).section for s in every))
    values = {
        KEYED_AS.get(s, s): getattr(profile, s).plain() for s in (*sections, "backends", "anc")
    }
    chosen = {s: systems.resolved_precision(profile, s).name for s in every}
    if any(p == "bf16" for p in chosen.values()):  # float32 runs keep their old key
        values["precision"] = chosen
    payload = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def _summary(scores: pd.DataFrame) -> dict:
    return metrics.summarise(metrics.evaluate(metrics.labelled(scores)[0]))


def _measure(arm: Arm, study_run: stages.Run, cache: Path, progress: bool):
    """One arm on one set: ``(scores, extra columns)``; a training-free system embedded (its
    section's view), a trained one by the stages the report runs (train, embed); each scored by
    its own back end (:func:`asd_utils.stages.backend`)."""
    derived, clips, extra = study_run.profile, study_run.clips, {}
    if arm.system in TRAINING_FREE:
        embeddings, encoder, section = training_free.embed(
            derived, clips, cache, progress, system=arm.system
        )
        block = training_free.layer_position(encoder, section.layer)
        vector = training_free.view(embeddings, section.view, section.alpha, block)
        bands = encoder.n_freq if section.pooling.startswith("time_") else 1
    else:
        result = stages.train(study_run, arm.system, name=arm.label, progress=progress)
        vector = stages.embed(study_run, arm.system, result, arm.label)
        bands = systems.bands(derived, arm.system)
        if registry.get(arm.system).reads == registry.NEAR_FAR:
            extra["gates"] = json.dumps(result.ema_model.backbone.gates())
    scorer = stages.backend(study_run, arm.system)
    return scoring.score_system(clips, vector, scorer, bands), extra


def run(
    profile: str | Path | Profile,
    output_root: str | Path | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Run (or resume) the study of the profile (a name, a path, or a validated profile:
    ``--set`` applied); returns every row of ``noise_study.csv``."""
    profile = config.load_profile(profile)
    study = profile.noise_study
    paths = config.resolve_paths(profile, None, None if output_root is None else str(output_root))
    folder = paths.output_root / "noise_study"
    csv = paths.output_root / CSV
    this_key = study_key(profile)
    rows = read(csv).to_dict("records") if csv.exists() else []
    rows = [r for r in rows if r.get("study_key") == this_key]  # settings changed: measured anew
    done = {(r["snr_db"], r["seed"], r["system"]) for r in rows}
    sets = {}  # seed by seed over every SNR: an interrupted study already spans the SNRs
    for snr in study.near_snr_db:
        root = folder / "data" / f"snr_{snr:+g}dB"
        synth.generate_dataset(root, dataset_config(study, snr), progress=False, replace=True)
        sets[snr] = root, data.index_dataset(root)
    for seed in study.seeds:
        for snr, (root, clips) in sets.items():
            for arm in arms(profile, snr):
                if (snr, seed, arm.label) in done:
                    continue
                start = time.perf_counter()
                derived = study_profile(profile, seed, arm.changes)
                run_paths = config.RunPaths(root, folder / "runs", synthetic=False)
                study_run = stages.Run(derived, run_paths, None, clips)
                scores, extra = _measure(arm, study_run, folder / "cache", progress)
                rows.append({
                    "study_key": this_key, "snr_db": snr, "seed": seed, "system": arm.label,
                    **_summary(scores),
                    "seconds": round(time.perf_counter() - start, 1), **extra,
                })  # fmt: skip
                files.write_table(pd.DataFrame(rows), csv)
                log.info("SNR %+g dB, seed %s, %s: official score %.2f %% (%.0f s)", snr, seed,
                         arm.label, 100 * rows[-1]["hmean"], rows[-1]["seconds"])  # fmt: skip
    return pd.DataFrame(rows)
