"""The pipeline's stages, each a function here and a sub-command of ``asd`` (:mod:`asd_utils.cli`);
the notebooks call them and show what they return (``architecture.md``).

One clip's way, left to right; each stage reads the files the one before wrote::

    prepare ─→ train ─→ embed ─→ score ─→ ensemble ─→ evaluate ─→ package
    (clips     (per     (per     (per     (System 4   (metrics,   (the DCASE
     manifest)  system)  system)  system)  from its    Table 2)    submission)
                                           members)

beside them the systems that are not trained by the common loop make their official files
directly: :func:`baseline` (the autoencoder, per machine type) and :func:`frozen` (System 0 and
the log-mel floor). Which stage makes a system is the registry's ``kind``
(:mod:`asd_utils.registry`), never a list of names here.

A :class:`Run` is what every stage receives: the validated profile, the run's paths, the profile
file the notebooks and the training command run (``<output root>/profile.yaml``) and the clip
manifest (``<output root>/clips.csv``, written by :func:`prepare`, read by every later stage and
notebook: the tree is indexed once per run). Finished work is found, not redone: training runs
and embeddings are cached under ``<output root>/training``, keyed by everything that changes
them.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from asd_utils import config, data, errors, registry
from asd_utils.evaluation import metrics, official
from asd_utils.files import atomic_write_text, write_table

log = logging.getLogger(__name__)

MANIFEST = "clips.csv"  # beside it: clips.json (data root, fingerprint, when)
SCORES = "scores.csv"  # a system's scores of every clip (train and test), beside its official files
METRICS = "metrics.csv"
TABLE2 = "table2.csv"
_TEXT_COLUMNS = ("dataset", "machine_type", "section", "attributes", "file_name", "path", "split")


@dataclass
class Run:
    """What every stage receives: ``profile`` (validated), ``paths``, ``profile_file`` (the frozen
    copy every notebook and training process loads) and the clip manifest (:attr:`clips`)."""

    profile: dict
    paths: config.RunPaths
    profile_file: Path
    _clips: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def seed(self) -> int:
        return int(self.profile["seed"])

    def system_dir(self, system: str) -> Path:
        return self.paths.system_dir(system)

    @property
    def clips(self) -> pd.DataFrame:
        """The run's clip table: the manifest :func:`prepare` wrote (prepared now if absent or
        written for another data root). A copy: callers may change it."""
        if self._clips is None:
            manifest = read_manifest(self.paths.output_root, self.paths.data_root)
            self._clips = manifest if manifest is not None else prepare(self)
        return self._clips.copy()


def open_run(
    profile: str | Path,
    data_root: str | Path | None = None,
    output_root: str | Path | None = None,
    progress: bool = True,
) -> Run:
    """The run of ``profile`` (a name or a YAML path) on ``data_root`` into ``output_root``
    (argument > ``$DATA_ROOT`` / ``$OUTPUT_ROOT`` > the profile's defaults): the profile
    validated, the synthetic data made when it is the run's data (idempotent), the validated
    profile frozen to ``<output root>/profile.yaml`` (written only when it changed)."""
    settings = config.load_profile(profile)
    paths = config.resolve_paths(
        settings,
        str(data_root) if data_root else None,
        str(output_root) if output_root else None,
    )
    _console()
    data.prepare_data(settings, paths, progress=progress)
    frozen = paths.output_root / "profile.yaml"
    if Path(profile).resolve() != frozen.resolve():
        config.freeze_profile(settings, frozen)
    return Run(settings, paths, frozen)


def _console() -> None:
    """Say what the stages do on standard error when nobody configured logging (a notebook's
    kernel: the report relays its standard error to the console live, the book leaves it out),
    at the level of the command that started it (``asd report -q``: warnings only)."""
    errors.configure_from_environment(prefix="    ")


# --- prepare -------------------------------------------------------------------------------------


def prepare(run: Run) -> pd.DataFrame:
    """The door and the manifest: index and check every clip of the run's data
    (:func:`asd_utils.data.index_dataset`: names, headers, samples; the sample checks cached
    under ``<output root>/cache``), check what the stages will need (every machine type with
    train and test clips and training clips of both domains, the checkpoints the profile names:
    the report's pre-flight checks), say which machine types get no metrics and which systems
    the data cannot feed, and write the clip manifest ``<output root>/clips.csv`` with
    ``clips.json`` (data root, fingerprint). Returns the clip table."""
    from asd_utils import systems

    start = time.perf_counter()
    clips = data.index_dataset(run.paths.data_root, cache_dir=run.paths.output_root / "cache")
    data.check_machine_types(clips)  # the door: train and test, both domains in training
    skipped = systems.unavailable(clips)
    systems.check_checkpoints(run.profile, skip=set(skipped))
    write_manifest(run.paths.output_root, run.paths.data_root, clips)
    run._clips = clips
    _, no_truth = metrics.labelled(clips)
    if no_truth:
        log.info("prepare: %s", metrics.no_ground_truth_note(no_truth))
    if skipped:
        log.info("prepare: %s", systems.skip_notice(skipped))
    log.info(
        "prepare: %s clips indexed and checked in %.1f s",
        f"{len(clips):,}",
        time.perf_counter() - start,
    )
    return clips.copy()


def write_manifest(output_root: str | Path, data_root: str | Path, clips: pd.DataFrame) -> Path:
    """Write the clip manifest ``clips.csv`` of ``clips`` (indexed from ``data_root``) and its
    ``clips.json`` (data root, count, fingerprint) into ``output_root``; atomically."""
    output_root = Path(output_root)
    write_table(clips, output_root / MANIFEST)
    about = {
        "data_root": str(data_root),
        "clips": len(clips),
        "fingerprint": data.clip_fingerprint(clips),
    }
    atomic_write_text(output_root / "clips.json", json.dumps(about, indent=2))
    return output_root / MANIFEST


def read_manifest(output_root: str | Path, data_root: str | Path) -> pd.DataFrame | None:
    """The clip manifest of ``output_root`` if it was written for ``data_root`` and its clips are
    unchanged on disk (same fingerprint); else ``None``. Same columns and types as
    :func:`asd_utils.data.index_dataset`."""
    output_root = Path(output_root)
    try:
        about = json.loads((output_root / "clips.json").read_text())
        if about["data_root"] != str(data_root):
            return None
        clips = pd.read_csv(
            output_root / MANIFEST,
            dtype={c: str for c in _TEXT_COLUMNS},
            keep_default_na=False,
            na_values={"domain": [""], "label": [""]},
        )
    except (OSError, ValueError, KeyError):
        return None
    clips = clips[data.COLUMNS]
    try:
        if data.clip_fingerprint(clips) != about["fingerprint"]:
            return None
    except OSError:  # a clip is gone
        return None
    return clips


# --- the systems that make their official files directly ------------------------------------------


def write_system(
    run: Run, system: str, scores: pd.DataFrame, parameters: int, **info
) -> dict[str, float]:
    """One system's results: the official files (scores and decisions per machine type and
    section, with the profile's decision rule), ``scores.csv`` (every clip) and ``system.json``
    (its name, parameter count and ``info``). Returns the decision thresholds."""
    from asd_utils.systems import write_info  # torch: only when a system is written

    directory = run.system_dir(system)
    thresholds = official.write_submission(scores, directory, **run.profile["decision"])
    write_table(scores, directory / SCORES)
    write_info(directory, system, parameters, **info)
    return thresholds


@dataclass
class BaselineOutcome:
    """What :func:`baseline` made: per variant the scores of every clip, the training history
    of every machine type, and the seconds each machine type took."""

    scores: dict[str, pd.DataFrame]
    history: pd.DataFrame
    seconds: dict[str, float]


def baseline(run: Run, progress: bool = False) -> BaselineOutcome:
    """The official autoencoder baseline: one autoencoder per machine type on its training clips
    (the profile's ``baseline`` section), every clip scored; its two variants (mean squared
    error, selective Mahalanobis) written as systems (:func:`write_system`)."""
    from asd_utils.models.autoencoder import AETrainConfig
    from asd_utils.systems import baseline as ae
    from asd_utils.systems import parameter_count

    clips = run.clips
    training = AETrainConfig(**run.profile["baseline"], seed=run.seed)
    features = ae.AEFeatureConfig()
    results = {}
    for machine_type, part in clips.groupby("machine_type", sort=False):
        ae.seed_everything(run.seed)
        results[machine_type] = ae.run_autoencoder(part, features, training, progress=progress)
        log.info(
            "baseline: %s, %d clips, %d epochs in %.1f s",
            machine_type,
            len(part),
            len(results[machine_type].history),
            results[machine_type].seconds,
        )
    scores = pd.concat([r.scores for r in results.values()], ignore_index=True)
    history = pd.concat(
        [r.history.assign(machine_type=m) for m, r in results.items()], ignore_index=True
    )
    parameters = sum(parameter_count(r.model) for r in results.values())  # one per machine type
    variants = {}
    for system, column in zip(registry.of_kind("autoencoder"), ae.SCORE_COLUMNS, strict=True):
        variants[system] = scores.drop(columns=list(ae.SCORE_COLUMNS)).assign(
            anomaly_score=scores[column]
        )
        write_system(run, system, variants[system], parameters)
    write_table(history, run.system_dir(registry.of_kind("autoencoder")[0]) / "history.csv")
    return BaselineOutcome(variants, history, {m: r.seconds for m, r in results.items()})


@dataclass
class FrozenOutcome:
    """What :func:`frozen` made: the embeddings of every channel, the encoder and its settings,
    the view scored, the log-mel floor's vectors and the seconds each took."""

    embeddings: dict[str, np.ndarray]
    encoder: object
    section: dict
    views: list[str]
    view: str
    mono_note: str
    floor: np.ndarray
    seconds: dict[str, float]

    @property
    def position(self) -> int:
        from asd_utils.systems import training_free

        return training_free.layer_position(self.encoder, self.section["layer"])

    def vector(self, view: str | None = None, alpha: float | None = None, position=None):
        """The embeddings of one view (default: the one scored) at one block."""
        from asd_utils.systems import training_free

        return training_free.view(
            self.embeddings,
            view or self.view,
            self.section["alpha"] if alpha is None else alpha,
            self.position if position is None else position,
        )


def frozen(run: Run, progress: bool = False) -> FrozenOutcome:
    """System 0 (a frozen encoder, no training: :mod:`asd_utils.systems.training_free`) and the
    log-mel
    floor: every channel the clips allow embedded once (cached under ``training/frozen``), the
    profile's view and the floor scored by the default back end and written as systems."""
    from asd_utils.systems import parameter_count, training_free

    clips = run.clips
    cache = run.paths.output_root / "training" / "frozen"
    start = time.perf_counter()
    embeddings, encoder, section = training_free.embed(
        run.profile, clips, cache_dir=cache, progress=progress
    )
    seconds = {"embed": time.perf_counter() - start}
    start = time.perf_counter()
    floor = training_free.floor_embeddings(clips, cache, progress=progress)
    seconds["floor"] = time.perf_counter() - start
    views, mono_note = training_free.available_views(clips)
    view = section["view"] if section["view"] in views else "near"
    outcome = FrozenOutcome(embeddings, encoder, section, views, view, mono_note, floor, seconds)
    system, floor_name = registry.of_kind("frozen")[0], registry.of_kind("floor")[0]
    backend, options = backend_settings(run.profile)
    k = int(section["knn_k"])
    for name, vector, parameters, what in (
        (system, outcome.vector(), parameter_count(encoder), view),
        (floor_name, floor, 0, "log-mel statistics"),
    ):
        scores = _score(clips, vector, k, backend, options, run.seed)
        write_system(run, name, scores, parameters, view=what, backend=backend)
    log.info(
        "frozen: %s and the %s in %.1f s (%s view)",
        system,
        floor_name,
        sum(seconds.values()),
        view,
    )
    return outcome


# --- train, embed --------------------------------------------------------------------------------


def trainable(run: Run) -> list[str]:
    """The fine-tuned systems this run's data can feed (the others are :func:`skipped`)."""
    return [s for s in registry.of_kind("fine-tuned") if s not in skipped(run)]


def skipped(run: Run) -> dict[str, str]:
    """The systems the data cannot feed, each with the reason (mono clips: no far channel)."""
    from asd_utils import systems

    return systems.unavailable(run.clips)


def train(
    run: Run,
    system: str,
    overrides: dict | None = None,
    name: str | None = None,
    progress: bool = False,
):
    """Train one fine-tuned system (resumed, or found finished, in its run folder under
    ``training/``); ``overrides`` replace keys of its loss settings (an ablation, written as
    ``name``). Writes ``system.json``; returns :class:`asd_utils.training.TrainResult`."""
    from asd_utils import systems

    if not registry.get(system).trainable:
        raise errors.UserError(
            f"{system} is not trained by the common loop ({registry.get(system).kind})"
        )
    reason = skipped(run).get(system)
    if reason:
        raise data.DataError(f"{system} cannot run on this data: {reason}")
    clips = run.clips
    classes = systems.class_names(clips[clips["split"] == "train"], run.profile, system)[1]
    result = systems.train_system(
        run.paths.data_root,
        run.profile_file,
        system,
        run.paths.output_root,
        progress=progress,
        overrides=overrides,
        clips=clips,
    )
    extra = {}
    if registry.get(system).reads == registry.NEAR_FAR:
        extra["gates"] = result.ema_model.backbone.gates()
    systems.write_info(
        run.system_dir(name or system),
        name or system,
        systems.parameter_count(result.ema_model),
        classes=len(classes),
        **extra,
    )
    log.info("train: %s: %s", name or system, result.summary)
    return result


def embed(run: Run, system: str, result=None, name: str | None = None, progress: bool = False):
    """Embed every clip of the run with a trained system's EMA weights (cached in its run
    folder) and save the embeddings beside its results. ``result``: its
    :class:`~asd_utils.training.TrainResult` (found by :func:`train` when not given). Returns
    the embeddings, (clips, dim) float32."""
    from asd_utils import scoring, systems

    result = result if result is not None else train(run, system, progress=progress)
    clips = run.clips
    channel, preprocess, key = systems.front_end(run.profile, system)
    start = time.perf_counter()
    embeddings = scoring.extract_embeddings(
        result.ema_model,
        clips,
        systems.settings(run.profile, system)["embed_batch_size"],
        channel,
        preprocess,
        result.precision.autocast,  # as it trained: bf16 where the profile resolved to it
        progress=progress,
        cache_dir=result.output_dir,
        preprocess_key=key,
        name=name or system,
    )
    scoring.save_embeddings(run.system_dir(name or system), clips, embeddings)
    log.info(
        "embed: %s, %s clips in %.1f s",
        name or system,
        f"{len(clips):,}",
        time.perf_counter() - start,
    )
    return embeddings


# --- score, ensemble, evaluate, package -----------------------------------------------------------


def backend_settings(profile: dict) -> tuple[str, dict]:
    """The profile's default scoring back end and the back ends' settings: ``(name, options)``."""
    section = dict(profile["backends"])
    return section.pop("default"), section


def knn_k(profile: dict, name: str) -> int:
    """K of the KNN score of a system by its output name (an ablation uses its system's)."""
    return int(registry.settings(profile, name)["knn_k"])


def _score(clips, embeddings, k, backend, options, seed) -> pd.DataFrame:
    from asd_utils import scoring

    return scoring.score_system(clips, embeddings, k, backend, options, seed)


def embedded(run: Run) -> list[str]:
    """The systems with saved embeddings in this run (the fine-tuned ones and their ablations)."""
    from asd_utils import scoring

    root = run.paths.output_root / "systems"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / scoring.EMBEDDINGS).is_file())


def score(run: Run, systems: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """Score every clip of each embedded system (default: all of this run's) with the profile's
    default back end against its training clips, and write its official files
    (:func:`write_system` less ``system.json``, which training wrote). Returns
    ``{system: scores}``."""
    from asd_utils import scoring

    backend, options = backend_settings(run.profile)
    out = {}
    for system in systems if systems is not None else embedded(run):
        clips, embeddings = scoring.load_embeddings(run.system_dir(system))
        scores = _score(clips, embeddings, knn_k(run.profile, system), backend, options, run.seed)
        official.write_submission(scores, run.system_dir(system), **run.profile["decision"])
        write_table(scores, run.system_dir(system) / SCORES)
        out[system] = scores
        log.info("score: %s, %s clips by %s", system, f"{len(clips):,}", backend)
    return out


def read_scores(run: Run, system: str) -> pd.DataFrame:
    """A system's ``scores.csv`` (every clip, train and test)."""
    return pd.read_csv(run.system_dir(system) / SCORES, dtype={"section": str})


def written(run: Run) -> list[str]:
    """The systems with scores written in this run, in the book's order."""
    root = run.paths.output_root / "systems"
    if not root.is_dir():
        return []
    return registry.ordered(sorted(p.name for p in root.iterdir() if (p / SCORES).is_file()))


@dataclass
class EnsembleOutcome:
    """System 4 as :func:`ensemble` made it: its scores, its members, those missing."""

    scores: pd.DataFrame | None
    members: list[str]
    missing: list[str]
    weights: dict[str, float]


def ensemble(run: Run) -> EnsembleOutcome:
    """The ensemble system (System 4): the profile's members' scores, normalised with their
    training clips' statistics and combined with their weights (:mod:`asd_utils.systems.ensemble`),
    written as a system. Members this run did not make are left out and named."""
    from asd_utils.systems import ensemble as combine

    spec = run.profile["ensemble"]
    (name,) = registry.of_kind("ensemble")
    ran = set(written(run))
    members = [m for m in spec["members"] if m in ran]
    missing = [m for m in spec["members"] if m not in ran]
    weights = dict(zip(spec["members"], spec["weights"], strict=True))
    if not members:
        log.info("ensemble: none of its members (%s) ran", ", ".join(spec["members"]))
        return EnsembleOutcome(None, [], missing, weights)
    scores = combine.combine(
        {m: read_scores(run, m) for m in members},
        {m: weights[m] for m in members},
        how=spec["how"],
        method=spec["normalisation"],
    )
    info = [json.loads((run.system_dir(m) / "system.json").read_text()) for m in members]
    write_system(run, name, scores, sum(i["parameters"] for i in info), members=members)
    log.info("ensemble: %s = %s", name, " + ".join(members))
    return EnsembleOutcome(scores, members, missing, weights)


@dataclass
class Evaluation:
    """What :func:`evaluate` computed from the written files: the systems found (book order),
    the test clips' scores of all of them, the per-section metrics of each, Table 2 (wide) and
    the machine types without ground truth."""

    systems: list[str]
    test: pd.DataFrame
    tables: dict[str, pd.DataFrame]
    wide: pd.DataFrame
    no_truth: list[str]


def evaluate(run: Run) -> Evaluation:
    """Read back every system's official anomaly-score files (as the official evaluator would),
    compute AUC (source), AUC (target) and pAUC per section where the test names carry ground
    truth, and write ``metrics.csv`` (long) and ``table2.csv`` (the paper's layout)."""
    root = run.paths.output_root / "systems"
    found = sorted(p.name for p in root.iterdir() if any(p.glob("anomaly_score_*.csv")))
    names = registry.ordered(found)
    scores = pd.concat(
        [official.read_system_scores(root / s).assign(system=s) for s in names], ignore_index=True
    )
    test, no_truth = metrics.labelled(scores)
    tables = {s: metrics.evaluate(test[test["system"] == s]) for s in names}
    long = pd.concat([t.assign(system=s) for s, t in tables.items()], ignore_index=True)
    write_table(long, run.paths.output_root / METRICS)
    wide = metrics.table2(tables)
    write_table(wide.reset_index(), run.paths.output_root / TABLE2)
    log.info("evaluate: %d systems, metrics in %s", len(names), run.paths.output_root / METRICS)
    return Evaluation(names, test, tables, wide, no_truth)


def package(run: Run, systems: list[str] | None = None, label: str | None = None):
    """The DCASE submission package of this run (:func:`asd_utils.submission.write_package`):
    the profile's submission systems that ran (or ``systems``), checked after writing. Returns
    its folder, or ``None`` when none of them ran."""
    from asd_utils import submission

    chosen = systems or [s for s in run.profile["submission"]["systems"] if s in written(run)]
    if not chosen:
        log.info("package: none of the submission systems ran; no package")
        return None
    folder = submission.write_package(
        run.paths.output_root,
        run.paths.data_root,
        run.profile,
        systems=chosen,
        label=label,
        clips=run.clips,
    )
    log.info("package: %s in %s", ", ".join(chosen), folder)
    return folder


# --- all of them ---------------------------------------------------------------------------------


def run_all(
    run: Run, progress: bool = True, seconds: dict | None = None, on_stage=None
) -> Evaluation:
    """Every stage in order, no notebook: prepare, the baseline, every fine-tuned system the data
    can feed (train, embed; the ablations the profile asks for), score, System 0 and the floor,
    the ensemble, evaluate, package. What ``asd run`` does; the report's notebooks call the same
    functions. ``seconds`` receives each stage's time as it ends; ``on_stage(name)`` is called
    as each begins."""
    seconds = {} if seconds is None else seconds

    def stage(name, function, *args, **kwargs):
        if on_stage is not None:
            on_stage(name)
        start = time.perf_counter()
        out = function(*args, **kwargs)
        seconds[name] = round(seconds.get(name, 0.0) + time.perf_counter() - start, 1)
        return out

    stage("prepare", prepare, run)
    stage("baseline", baseline, run, progress=progress)
    for system in trainable(run):
        for name, overrides in ablations(run, system).items():
            result = stage(f"train {name}", train, run, system, overrides, name, progress=progress)
            stage(f"embed {name}", embed, run, system, result, name, progress=progress)
    stage("score", score, run)
    stage("frozen", frozen, run, progress=progress)
    stage("ensemble", ensemble, run)
    evaluation = stage("evaluate", evaluate, run)
    stage("package", package, run)
    return evaluation


def ablations(run: Run, system: str) -> dict[str, dict | None]:
    """The runs of one fine-tuned system: itself (no overrides) and the ablations its profile
    section asks for (``ablation_lambda_zero``: the GRL with lambda 0, "System 2 (lambda 0)")."""
    runs: dict[str, dict | None] = {system: None}
    if registry.settings(run.profile, system).get("ablation_lambda_zero", False):
        runs[f"{system} (lambda 0)"] = {"lambda_max": 0.0}
    return runs


# --- new recordings ------------------------------------------------------------------------------


def new_clips(paths, channels: int = 1, machine_type: str = "", section: str = "") -> pd.DataFrame:
    """A clip table of new recordings: WAV files (any names) and the WAV files under folders.

    Every clip is checked before anything is scored; the first one that cannot be read as the
    systems read clips (not audio, truncated, a sample rate other than 16 kHz, more than two
    channels, fewer than ``channels`` channels, shorter than the front-ends' floor, NaN or
    infinite samples) is refused with a :class:`~asd_utils.data.DataError` naming it.
    """
    from pathlib import Path as P

    files = []
    for given in paths:
        path = P(given).expanduser().absolute()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() == ".wav" and p.is_file())
            if not found:
                raise data.DataError(f"no .wav files under {str(path)!r}")
            files += found
        else:
            files.append(path)
    rows = []
    for index, path in enumerate(files):
        with data._open_checked(path) as audio:
            rate, count, frames = audio.samplerate, audio.channels, audio.frames
        expected = {"sample_rate": data.SAMPLE_RATE, "min_seconds": data.MIN_SECONDS}
        data._check_header(path, count, rate, frames, expected)
        if count < channels:
            raise data.DataError(
                f"{str(path)!r} is mono, but this system reads both microphones: expected 2 "
                "channels (0 near, 1 far)"
            )
        found = data.scan_samples(path)["nonfinite"]
        if found:
            raise data.DataError(
                f"{str(path)!r} holds a non-finite sample ({found['value']} at frame "
                f"{found['frame']}, channel {found['channel']}); expected finite audio"
            )
        rows.append(
            {
                "dataset": "new",
                "machine_type": machine_type,
                "section": section,
                "domain": np.nan,
                "split": "test",
                "label": np.nan,
                "index": index,
                "attributes": "",
                "file_name": path.name,
                "path": str(path),
                "channels": count,
                "sample_rate": rate,
                "duration": frames / rate,
                "frames": frames,
            }
        )
    return pd.DataFrame(rows, columns=data.COLUMNS)


def detect(
    run: Run,
    system: str,
    paths,
    output: str | Path,
    machine_type: str | None = None,
    section: str | None = None,
) -> pd.DataFrame:
    """Score new recordings with a system this run trained: each clip embedded by the system,
    scored against the training clips of ``machine_type`` / ``section`` (default: the run's only
    ones) with the profile's back end, and decided with that section's threshold (the profile's
    decision rule on its training clips' scores, as the official files). Writes ``output``
    (``file, path, anomaly_score, decision``) and returns it.
    """
    entry = registry.get(system)
    if not entry.trainable or system != entry.name:
        raise errors.UserError(
            f"detect scores with a fine-tuned system ({', '.join(registry.of_kind('fine-tuned'))}),"
            f" not {system!r}"
        )
    part, machine_type, section = _detect_reference(run, system, machine_type, section)
    new = new_clips(paths, 2 if entry.needs_far else 1, machine_type, section)
    scores = _detect_scores(run, system, part, new)
    train_scores = scores.loc[scores["split"] == "train", "anomaly_score"]
    threshold = metrics.decision_threshold(train_scores, **run.profile["decision"])
    found = scores[scores["dataset"] == "new"]
    out = pd.DataFrame(
        {
            "file": found["file_name"],
            "path": found["path"],
            "anomaly_score": found["anomaly_score"],
            "decision": (found["anomaly_score"] > threshold).astype(int),
        }
    )
    write_table(out, output)
    log.info(
        "detect: %d clips scored by %s against %s section %s (threshold %.6g): %s",
        len(out),
        system,
        machine_type,
        section,
        threshold,
        output,
    )
    return out


def _detect_reference(
    run: Run, system: str, machine_type: str | None, section: str | None
) -> tuple[pd.DataFrame, str, str]:
    """:func:`detect`'s reference: the run's training clips of ``machine_type`` / ``section``
    (default: the only ones), with both names; an error when there are none, when ``system``
    did not run on this data or has not finished training."""
    from asd_utils import systems, training

    train_clips = run.clips[run.clips["split"] == "train"]
    machine_type = machine_type or _only(train_clips["machine_type"], "machine type")
    part = train_clips[train_clips["machine_type"] == machine_type]
    if part.empty:
        raise errors.UserError(f"no training clips of machine type {machine_type!r} in this run")
    section = section or _only(part["section"], f"section of {machine_type}")
    part = part[part["section"] == section]
    if part.empty:
        raise errors.UserError(
            f"no training clips of {machine_type} section {section!r} in this run"
        )
    if skipped(run).get(system):
        raise data.DataError(f"{system} did not run on this data: {skipped(run)[system]}")
    folder = systems.run_dir(
        run.paths.output_root, run.profile, system, run.paths.data_root, run.clips
    )
    if not (folder / training.FINISHED).is_file():
        raise FileNotFoundError(
            f"{system} has not finished training in {folder}: run `asd train --system "
            f'"{system}"` (same profile, data and output root) first'
        )
    return part, machine_type, section


def _detect_scores(run: Run, system: str, part: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """The reference clips ``part`` and the ``new`` ones embedded by the finished ``system``
    (its EMA weights; the reference's embeddings cached in its run folder) and scored
    together by the profile's back end: the scores table of both."""
    from asd_utils import scoring, systems

    result = train(run, system)  # found finished: loads its EMA weights, trains nothing
    channel, preprocess, key = systems.front_end(run.profile, system)
    batch = systems.settings(run.profile, system)["embed_batch_size"]
    autocast = result.precision.autocast
    reference = scoring.extract_embeddings(
        result.ema_model,
        part,
        batch,
        channel,
        preprocess,
        autocast,
        progress=False,
        cache_dir=result.output_dir,
        preprocess_key=key,
        name=system,
    )
    queries = scoring.extract_embeddings(
        result.ema_model, new, batch, channel, preprocess, autocast, progress=False, name=system
    )
    table = pd.concat([part, new], ignore_index=True)
    backend, options = backend_settings(run.profile)
    return _score(
        table,
        np.concatenate([reference, queries]),
        knn_k(run.profile, system),
        backend,
        options,
        run.seed,
    )


def _only(values: pd.Series, what: str) -> str:
    """The one value of ``values``; else an error asking for it by name."""
    unique = sorted(set(values))
    if len(unique) != 1:
        option = "--machine-type" if what == "machine type" else "--section"
        raise errors.UserError(
            f"this run has {len(unique)} of {what} ({', '.join(unique)}): choose one with {option}"
        )
    return unique[0]
