"""The two-channel noise study: detection against the near microphone's SNR, over seeds.

Where the far microphone can matter, the question can be answered: the same machine sounds at
several near-microphone SNRs (the profile's ``noise_study`` section), the far microphone
carrying the noise more strongly, the noise non-stationary (impacts, babble) and reaching the
near microphone by a long reverberant path that System 3's 128-tap canceller cannot fully
model. One small synthetic set per SNR (:mod:`asd_utils.data.synth`); on each, for every seed:
System 1 (near channel only), System 3 (ANC), System 5 (fusion inside the encoder), trained by
the common loop at the study's size, and System 0's residual view (no training), all scored by
the profile's default back end. With ``ablations``, System 5 variants at the middle SNR (where
the modules go, a frozen backbone): analysis.

    asd study noise --profile quick [--output-root DIR]    (make noise-study)

Rows go to ``<output_root>/noise_study.csv`` (written after every run, atomically), each with
the :func:`study_key` of the settings; a rerun skips the rows of the same key already there, so
an interrupted study resumes, and drops rows of other settings.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from pathlib import Path

import pandas as pd

from asd_utils import config, data, files, registry, scoring, stages, systems
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
ABLATIONS = {  # name → changes to the fusion section (analysis, at the middle SNR)
    f"{FUSION} (first block)": {"blocks": [1]},
    f"{FUSION} (first and last block)": {"blocks": [1, -1]},
    f"{FUSION} (frozen backbone)": {"freeze_backbone": True},
}


def dataset_config(study: dict, snr_db: float) -> synth.SynthConfig:
    """The synthetic set at one near-microphone SNR."""
    return synth.SynthConfig(
        machine_types=tuple(study["machine_types"]),
        n_train_source=study["n_train_source"],
        n_train_target=study["n_train_target"],
        n_test=study["n_test"],
        clip_seconds={"default": study["clip_seconds"]},
        near_snr_db=(snr_db, snr_db),
        far_snr_db=tuple(study["far_snr_db"]),
        noise_path_ms=tuple(study["noise_path_ms"]),
        noise_path_taps=study["noise_path_taps"],
        seed=study["data_seed"],
    )


def study_profile(profile: dict, seed: int, fusion_changes: dict | None = None) -> dict:
    """The profile a study run trains with: its seed, the study's steps for the trained systems
    (warm-up and checkpoints scaled along), and ``fusion_changes`` for an ablation."""
    out = copy.deepcopy(profile)
    out["seed"] = seed
    steps = profile["noise_study"]["steps"]
    for section in SECTIONS:
        train = out[section]["train"]
        train["warmup_steps"] = max(1, min(train["warmup_steps"], steps // 10))
        train["checkpoint_every"] = steps
        train["steps"] = steps
    out[registry.get(FUSION).section].update(fusion_changes or {})
    return out


def read(path: str | Path) -> pd.DataFrame:
    """``noise_study.csv`` as written (the key kept a string: "1e5…" is not a number)."""
    return pd.read_csv(path, dtype={"study_key": str})


def study_key(profile: dict) -> str:
    """A hash of every setting that changes the study's numbers, the precisions as resolved
    on this machine (``auto``: bf16 or float32); rows of other keys are old."""
    every = (*TRAINED, training_free.SYSTEM)
    sections = ("noise_study", *dict.fromkeys(registry.get(s).section for s in every))
    values = {s: profile[s] for s in (*sections, "backends", "anc")}
    chosen = {s: systems.resolved_precision(profile, s).name for s in every}
    if any(p == "bf16" for p in chosen.values()):  # float32 runs keep their old key
        values["precision"] = chosen
    payload = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def _summary(scores: pd.DataFrame) -> dict:
    return metrics.summarise(metrics.evaluate(metrics.labelled(scores)[0]))


def run(
    profile_name: str,
    output_root: str | Path | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Run (or resume) the study of the profile; returns every row of ``noise_study.csv``."""
    profile = config.load_profile(profile_name)
    study = profile["noise_study"]
    paths = config.resolve_paths(profile, None, None if output_root is None else str(output_root))
    folder = paths.output_root / "noise_study"
    csv = paths.output_root / CSV
    this_key = study_key(profile)
    rows = read(csv).to_dict("records") if csv.exists() else []
    rows = [r for r in rows if r.get("study_key") == this_key]  # settings changed: measured anew
    done = {(r["snr_db"], r["seed"], r["system"]) for r in rows}
    middle = sorted(study["near_snr_db"])[len(study["near_snr_db"]) // 2]
    for snr in study["near_snr_db"]:
        root = folder / "data" / f"snr_{snr:+g}dB"
        synth.generate_dataset(root, dataset_config(study, snr), progress=False, replace=True)
        clips = data.index_dataset(root)
        for seed in study["seeds"]:
            runs = {s: None for s in (*TRAINED, training_free.SYSTEM)}
            if study["ablations"] and snr == middle:
                runs.update(ABLATIONS)
            for name, changes in runs.items():
                if (snr, seed, name) in done:
                    continue
                start = time.perf_counter()
                derived = study_profile(profile, seed, changes)
                path = config.freeze_profile(derived, folder / "profiles" / f"{name}-{seed}.yaml")
                extra = {}
                if name == training_free.SYSTEM:
                    embeddings, encoder, section = training_free.embed(
                        derived, clips, folder / "cache", progress
                    )
                    block = training_free.layer_position(encoder, section["layer"])
                    vector = training_free.view(embeddings, "residual", section["alpha"], block)
                    k = section["knn_k"]
                else:  # the stages the report runs: train, embed (asd_utils.stages)
                    system = name.split(" (")[0]
                    run_paths = config.RunPaths(root, folder / "runs", synthetic=False)
                    study_run = stages.Run(derived, run_paths, path, clips)
                    result = stages.train(study_run, system, name=name, progress=progress)
                    vector = stages.embed(study_run, system, result, name)
                    k = stages.knn_k(derived, system)
                    if registry.get(system).reads == registry.NEAR_FAR:
                        extra["gates"] = json.dumps(result.ema_model.backbone.gates())
                scorer = scoring.make(profile["backends"], k=k, seed=seed)
                scores = scoring.score_system(clips, vector, scorer)
                rows.append({
                    "study_key": this_key, "snr_db": snr, "seed": seed, "system": name,
                    **_summary(scores),
                    "seconds": round(time.perf_counter() - start, 1), **extra,
                })  # fmt: skip
                files.write_table(pd.DataFrame(rows), csv)
                log.info("SNR %+g dB, seed %s, %s: official score %.2f %% (%.0f s)",
                         snr, seed, name, 100 * rows[-1]["hmean"], rows[-1]["seconds"])  # fmt: skip
    return pd.DataFrame(rows)
