"""The pipeline's stages, each a function here and a sub-command of ``asd`` (:mod:`asd_utils.cli`);
the notebooks call them and show what they return (README.md, "The stages and the `asd`
command").

One clip's way, left to right; each stage reads the files the one before wrote::

    prepare ─→ train ─→ embed ─→ score ─→ ensemble ─→ evaluate ─→ package
    (clips     (per     (per     (per     (System 4   (metrics,   (the DCASE
     manifest)  system)  system)  system)  from its    Table 2)    submission)
                                           members)

beside them the systems that are not trained by the common loop make their official files
directly: :func:`baseline` (the autoencoder, per machine type) and :func:`training_free` (System
0 and System 6, a frozen encoder each, and the log-mel floor). Which stage makes a system is the
registry's ``kind`` (:mod:`asd_utils.registry`), never a list of names here.

A :class:`Run` is what every stage receives: the validated profile (:class:`asd_utils.config.
schema.Profile`; a derived one is ``profile.model_copy(update=...)``), the run's paths, the
profile's record the notebooks load (``<output root>/profile.yaml``) and the clip
manifest (``<output root>/clips.csv``, written by :func:`prepare`, read by every later stage and
notebook: the tree is indexed once per run). A command opens its run with :class:`Session`, the
one wrapper of ``asd run``, ``asd report`` and every stage command: the output root's lock
before anything is written, the run record, interruptions. Finished work is found, not redone:
training runs and embeddings are cached under ``<output root>/training``, keyed by everything
that changes them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from asd_utils import config, data, errors, machine, registry, runs
from asd_utils.evaluation import metrics, official
from asd_utils.files import atomic_write_text, unescape_formulas, write_table

log = logging.getLogger(__name__)

MANIFEST = "clips.csv"  # beside it: clips.json (data root, fingerprint, when)
SCORES = "scores.csv"  # a system's scores of every clip (train and test), beside its official files
METRICS = "metrics.csv"
TABLE2 = "table2.csv"
_TEXT_COLUMNS = ("dataset", "machine_type", "section", "attributes", "file_name", "path", "split")


@dataclass
class Run:
    """What every stage receives: ``profile`` (the validated :class:`asd_utils.config.schema.
    Profile`), ``paths``, ``profile_file`` (the frozen record every notebook loads; a read-only
    run's own profile file; None for a run derived in memory, e.g. a study's) and the clip
    manifest (:attr:`clips`). ``writes``: False for a read-only run (``asd detect``)."""

    profile: config.schema.Profile
    paths: config.RunPaths
    profile_file: Path | None
    _clips: pd.DataFrame | None = field(default=None, repr=False)
    _fingerprint: str | None = field(default=None, repr=False)
    writes: bool = True

    @property
    def seed(self) -> int:
        return self.profile.seed

    def system_dir(self, system: str) -> Path:
        return self.paths.system_dir(system)

    @property
    def fingerprint(self) -> str:
        """The clip manifest's fingerprint (:func:`asd_utils.data.clip_fingerprint`)."""
        if self._fingerprint is None:
            self._fingerprint = data.clip_fingerprint(self.clips)
        return self._fingerprint

    @property
    def clips(self) -> pd.DataFrame:
        """The run's clip table: the manifest :func:`prepare` wrote (prepared now if absent or
        written for another data root; a read-only run refuses instead). A copy: callers may
        change it."""
        if self._clips is None:
            manifest = read_manifest(self.paths.output_root, self.paths.data_root)
            if manifest is None and not self.writes:
                raise errors.UserError(
                    f"no clip manifest of {self.paths.data_root} in {self.paths.output_root}: "
                    "run `asd prepare` (same profile, data and output root) first"
                )
            self._clips = manifest if manifest is not None else prepare(self)
        return self._clips.copy()


PROFILE_ENV = "ASD_PROFILE"  # the profile of a notebook opened by hand (``make lab PROFILE=…``)
DEFAULT_PROFILE = "quick"


def open_run(
    profile: str | Path | config.schema.Profile | None,
    data_root: str | Path | None = None,
    output_root: str | Path | None = None,
    progress: bool = True,
    write: bool = True,
) -> Run:
    """The run of ``profile`` (a name, a YAML path, or a validated profile: ``--set`` applied)
    on ``data_root`` into ``output_root`` (argument > ``$DATA_ROOT`` / ``$OUTPUT_ROOT`` > the
    profile's defaults), the profile validated.

    ``write=False`` writes nothing (``asd detect`` reading a finished run). Otherwise, while no
    other run holds the output root (:class:`asd_utils.runs.OutputLock`, held for the moment),
    the synthetic data is made when it is the run's data (idempotent) and the profile frozen to
    ``<output root>/profile.yaml``; under a run that holds it (a notebook of ``asd report``)
    nothing is written: that run made both. Commands open runs with :class:`Session`. An empty
    ``profile`` is ``$ASD_PROFILE``, else ``quick`` (a notebook's parameters cell left empty)."""
    profile = profile or os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE
    run = _located(profile, data_root, output_root)
    if not write:  # the profile as given, never the output root's frozen copy
        given = not isinstance(profile, config.schema.Profile)
        run.profile_file, run.writes = config.profile_path(profile) if given else None, False
        return run
    try:
        lock = runs.OutputLock(run.paths.output_root).acquire()
    except runs.OutputBusy:
        return run
    try:
        _make(run, progress)
    finally:
        lock.release()
    return run


def _located(profile: str | Path | config.schema.Profile, data_root, output_root) -> Run:
    """The run of ``profile`` with its paths resolved; reads the profile, writes nothing."""
    settings = config.load_profile(profile)
    paths = config.resolve_paths(
        settings,
        str(data_root) if data_root else None,
        str(output_root) if output_root else None,
    )
    _console()
    return Run(settings, paths, paths.output_root / "profile.yaml")


def _make(run: Run, progress: bool) -> None:
    """On the locked output root: the run's synthetic data (idempotent) and the validated
    profile frozen to ``run.profile_file`` (written only when it changed)."""
    data.prepare_data(run.profile, run.paths, progress=progress)
    config.freeze_profile(run.profile, run.profile_file)


def _console() -> None:
    """Say what the stages do on standard error when nobody configured logging (a notebook's
    kernel: the report relays its standard error to the console live, the book leaves it out),
    at the level of the command that started it (``asd report -q``: warnings only)."""
    errors.configure_from_environment(prefix="    ")


# --- the one way a command opens a run: lock, record, interrupt ----------------------------------

PACKAGES = (
    "torch",
    "numpy",
    "scipy",
    "scikit-learn",
    "pandas",
    "soundfile",
    "papermill",
    "jupyter-book",
    "matplotlib",
)


class Session:
    """A command's run, opened for writing (a context manager; ``asd run``, ``asd report`` and
    every stage command).

    On entry the output root's lock is taken (:class:`asd_utils.runs.OutputLock`: a second run
    into it is refused, naming this one) BEFORE anything is written; then the synthetic data is
    made, the profile frozen and ``run_record.json`` says ``running``. :meth:`begin` records the
    stage (or chapter) starting; on exit the record says ``finished``, ``failed at <stage>:
    <error>`` or ``interrupted at <stage>`` (Ctrl-C, SIGTERM: raised again as one line,
    :class:`asd_utils.errors.Interrupted`), and the lock is released. ``distributed`` (``asd
    train`` under ``accelerate launch``): the main process does all of this and writes the clip
    manifest; the others wait for it, read the manifest and write nothing. :attr:`seconds`
    receives each stage's time (:meth:`timed`; with ``add_to_record`` after those the record of
    the same settings holds), :attr:`summary` joins the record."""

    def __init__(
        self,
        profile: str | Path | config.schema.Profile,
        data_root: str | Path | None = None,
        output_root: str | Path | None = None,
        progress: bool = True,
        distributed: bool = False,
        unit: str = "stage",
        add_to_record: bool = False,
    ) -> None:
        self._args = (profile, data_root, output_root)
        self.progress, self.distributed, self.unit = progress, distributed, unit
        self.add_to_record = add_to_record
        self.seconds: dict[str, float] = {}
        self.summary: dict = {}
        self.stage: str | None = None
        self.main_process = True
        self._lock: runs.OutputLock | None = None
        self._signals = None

    def __enter__(self) -> Session:
        self.run = _located(*self._args)
        state = None
        if self.distributed:
            from accelerate import PartialState
            from accelerate.utils import parse_flag_from_env

            state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))  # as training
            self.main_process = state.is_main_process
        if self.main_process:
            self._lock = runs.OutputLock(self.run.paths.output_root).acquire()
            if self._lock.taken_over is not None:
                log.warning(runs.takeover_note(self._lock.taken_over, self.run.paths.output_root))
            self._signals = errors.interrupt_on_signals()
            self._signals.__enter__()
            if self.add_to_record:
                self.seconds.update(_earlier_seconds(self.run))
            try:
                _make(self.run, self.progress)
                if state is not None:
                    self.run.clips  # noqa: B018 - the manifest, for the other processes
            except BaseException:
                self._release()
                raise
            self.record("running")
        if state is not None:
            state.wait_for_everyone()
            if not self.main_process:
                self.run._clips = _manifest_of(self.run)
        return self

    def begin(self, stage: str) -> None:
        """Record ``stage`` as the one running."""
        self.stage = stage
        self.record("running")

    def timed(self, stage: str, function, *args, **kwargs):
        """``function(*args, **kwargs)`` as ``stage`` (:meth:`begin`); its seconds added to
        :attr:`seconds`."""
        self.begin(stage)
        start = time.perf_counter()
        out = function(*args, **kwargs)
        self.seconds[stage] = round(self.seconds.get(stage, 0.0) + time.perf_counter() - start, 1)
        return out

    def record(self, status: str) -> dict | None:
        """Write ``run_record.json`` (:func:`run_record`) with ``status`` (main process only)."""
        if not self.main_process:
            return None
        written = run_record(
            self.run.profile, self.run.paths, self.seconds, self.summary, status, self.stage
        )
        path = self.run.paths.output_root / runs.RECORD_NAME
        atomic_write_text(path, json.dumps(written, indent=2))
        return written

    def __exit__(self, kind, err, traceback) -> None:
        try:
            if err is None:
                self.record("finished")
                return
            self.stage = getattr(err, "chapter", self.stage)
            if isinstance(err, KeyboardInterrupt):
                self.record(f"interrupted at {self.stage}")
                where = self.stage or "the run"
                if where not in ("the run", "notebooks", "book"):
                    where = f"{self.unit} {where}"
                raise errors.Interrupted(
                    f"interrupted in {where}; run the same command to resume"
                ) from None
            self.record(f"failed at {self.stage}: {errors.one_line(err)}")
        finally:
            self._release()

    def _release(self) -> None:
        if self._signals is not None:
            self._signals.__exit__(None, None, None)
            self._signals = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def _earlier_seconds(run: Run) -> dict[str, float]:
    """Stage times of the record in the run's output root when it ran the same settings on the
    same data root (a command that adds to that run); otherwise none."""
    try:
        earlier = json.loads((run.paths.output_root / runs.RECORD_NAME).read_text())
    except (OSError, ValueError):
        return {}
    same = earlier.get("settings") == run.profile.plain()
    same = same and earlier.get("data_root") == str(run.paths.data_root)
    return dict(earlier.get("stage_seconds", {})) if same else {}


def _manifest_of(run: Run) -> pd.DataFrame:
    """The manifest the main process wrote, for another process of ``accelerate launch``."""
    clips = read_manifest(run.paths.output_root, run.paths.data_root)
    if clips is None:
        raise errors.RunError(
            f"no clip manifest for {run.paths.data_root} in {run.paths.output_root} after the "
            "main process prepared the run"
        )
    return clips


def git_commit() -> str:
    """The checked-out commit, with ``-dirty`` when tracked files have uncommitted changes."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=config.REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def run_record(
    profile: config.schema.Profile,
    paths: config.RunPaths,
    seconds: dict[str, float],
    data_summary: dict | None = None,
    status: str = "running",
    chapter: str | None = None,
) -> dict:
    """What ran: profile (in full), seed, data, commit, package versions, the machine (CPU model,
    speed flags, BLAS: :func:`asd_utils.machine.describe`), stage times,
    each system's precision as resolved here (:func:`asd_utils.systems.precisions`: ``auto`` →
    bf16 or float32, and why), ``status`` (``running``, ``finished``, ``failed at <chapter>:
    <error>`` or ``interrupted at <chapter>``), the ``chapter`` (stage) running or last run, and
    the ``pid`` and ``host`` of the run (with the output root's lock they tell a dead run from a
    live one)."""
    import os
    import platform
    import sys
    from datetime import UTC, datetime
    from importlib import metadata

    from asd_utils import systems

    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "profile": profile.name,
        "seed": profile.seed,
        "settings": profile.plain(),
        "data_root": str(paths.data_root),
        "data": "synthetic (asd_utils.data.synth)" if paths.synthetic else "user-given DCASE tree",
        **(data_summary or {}),
        "output_root": str(paths.output_root),
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "packages": versions,
        "machine": machine.describe(),
        "precision": systems.precisions(profile),
        "status": status,
        "chapter": chapter,
        "pid": os.getpid(),
        "host": platform.node(),
        "written": datetime.now(UTC).isoformat(timespec="seconds"),
        "stage_seconds": seconds,
    }


# --- prepare -------------------------------------------------------------------------------------


def prepare(run: Run) -> pd.DataFrame:
    """The door and the manifest (:func:`entry_check`); says which machine types get no metrics
    and which systems the data cannot feed. Returns the clip table."""
    start = time.perf_counter()
    clips, skipped = entry_check(run.paths, run.profile)
    run._clips, run._fingerprint = clips, None
    _, no_truth = metrics.labelled(clips)
    if no_truth:
        log.info("prepare: %s", metrics.no_ground_truth_note(no_truth))
    if skipped:
        from asd_utils import systems

        log.info("prepare: %s", systems.skip_notice(skipped))
    log.info(
        "prepare: %s clips (%s) indexed and checked in %.1f s",
        f"{len(clips):,}",
        data.edition_of(run.paths.data_root, clips, run.paths.edition).name,
        time.perf_counter() - start,
    )
    return clips.copy()


def entry_check(
    paths: config.RunPaths, profile: config.schema.Profile | None
) -> tuple[pd.DataFrame, dict[str, str]]:
    """The one entry check: index and check every clip of the run's data
    (:func:`asd_utils.data.index_dataset`: names, headers, samples; the sample checks cached
    under ``<output root>/cache``), check what the stages will need (every machine type with
    train and test clips and training clips of both domains, the checkpoints ``profile``
    names, the back ends' options), and write the clip manifest ``<output root>/clips.csv``
    with ``clips.json``. Returns the clip table and the systems the data cannot feed, each with
    the reason."""
    from asd_utils import scoring, systems

    cache = paths.output_root / "cache"
    clips = data.index_dataset(paths.data_root, cache_dir=cache, edition=paths.edition)
    data.check_machine_types(clips)  # the door: train and test, both domains in training
    skipped = systems.unavailable(clips)
    if profile is not None:
        scoring.check(profile.backends)  # the back end and its options
        systems.check_checkpoints(profile, skip=set(skipped))
        systems.check_clip_lengths(profile, clips, skip=set(skipped))
    edition = data.edition_of(paths.data_root, clips, paths.edition).name
    write_manifest(paths.output_root, paths.data_root, clips, edition)
    return clips, skipped


def write_manifest(
    output_root: str | Path, data_root: str | Path, clips: pd.DataFrame, edition: str = "auto"
) -> Path:
    """Write the clip manifest ``clips.csv`` of ``clips`` (indexed from ``data_root`` as
    ``edition`` lays it out) and its ``clips.json`` (data root, edition, count, fingerprint)
    into ``output_root``; atomically."""
    output_root = Path(output_root)
    write_table(clips, output_root / MANIFEST)
    about = {
        "data_root": str(data_root),
        "edition": edition,
        "clips": len(clips),
        "fingerprint": data.clip_fingerprint(clips),
    }
    atomic_write_text(output_root / "clips.json", json.dumps(about, indent=2))
    return output_root / MANIFEST


def read_manifest(output_root: str | Path, data_root: str | Path) -> pd.DataFrame | None:
    """The clip manifest of ``output_root`` if it was written for ``data_root`` and its clips are
    unchanged on disk (same fingerprint); else ``None``. Same columns and types as
    :func:`asd_utils.data.index_dataset`. Clips added or removed since (a folder listing of
    ``data_root``) are a :class:`~asd_utils.data.DataError`: a stage never mixes them."""
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
    clips = unescape_formulas(clips[data.COLUMNS])
    _refuse_changed_listing(clips, Path(data_root), about.get("edition", "auto"))
    if data.clip_fingerprint(clips) != about["fingerprint"]:
        return None
    return clips


def _refuse_changed_listing(clips: pd.DataFrame, data_root: Path, edition: str) -> None:
    """A :class:`~asd_utils.data.DataError` when the clips under ``data_root`` (a folder
    listing, as ``edition`` lays it out) are not the manifest's ``clips``: some added or
    removed since it was written."""
    listed = set(data.clip_paths(data_root, edition))
    added, removed = sorted(listed - set(clips["path"])), sorted(set(clips["path"]) - listed)
    if added or removed:
        example = (added or removed)[0]
        raise data.DataError(
            f"{len(added)} clips added and {len(removed)} removed under {data_root} since "
            f"`asd prepare` wrote the clip manifest (e.g. {example}): run `asd prepare` again, "
            "then the stages after it (or `asd run`)"
        )


# --- the systems that make their official files directly ------------------------------------------


def write_system(
    run: Run, system: str, scores: pd.DataFrame, parameters: int, **info
) -> dict[str, float]:
    """One system's results: the official files (scores and decisions per machine type and
    section, with the profile's decision rule), ``scores.csv`` (every clip) and ``system.json``
    (its name, parameter count and ``info``). Returns the decision thresholds."""
    from asd_utils.systems import write_info  # torch: only when a system is written

    directory = run.system_dir(system)
    thresholds = official.write_submission(scores, directory, **run.profile.decision.plain())
    write_table(scores, directory / SCORES)
    write_info(directory, system, parameters, **info, **made(run, system))
    return thresholds


def made(run: Run, system: str) -> dict:
    """What a system's ``system.json`` records of how it was made: the settings
    (:func:`asd_utils.registry.made_with`, as JSON keeps them) and the clip manifest's
    fingerprint; :func:`check_made` compares them with the run's now."""
    settings = json.loads(json.dumps(registry.made_with(run.profile, system)))
    return {"made_with": settings, "clips_fingerprint": run.fingerprint}


def check_made(run: Run, system: str, keys=None) -> dict:
    """``system``'s ``system.json``, after checking that it was made with this run's settings
    (the top-level ``keys`` of them; default all) and clips; else a :class:`RunError` in one
    line naming what changed. A system written before these were recorded passes."""
    path = run.system_dir(system) / "system.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        raise errors.RunError(
            f"{system} has no readable {path}: run the stage that makes it first ({_maker(system)})"
        ) from None
    now = made(run, system)
    if "made_with" in info:
        changed = registry.changed_settings(info["made_with"], now["made_with"], keys)
        if changed:
            shown = ", ".join(changed[:3]) + (
                f" and {len(changed) - 3} more" if changed[3:] else ""
            )
            raise errors.RunError(
                f"{system} was made with other settings than the profile's now ({shown} "
                f"changed): run {_maker(system)} again with this profile, or go back to the "
                "profile it was made with; its results and this profile's are not mixed"
            )
    if info.get("clips_fingerprint", now["clips_fingerprint"]) != now["clips_fingerprint"]:
        raise errors.RunError(
            f"{system} was made from other clips than the manifest's now ({run.paths.data_root} "
            f"changed, or `asd prepare` ran since): run {_maker(system)} again"
        )
    return info


def _maker(system: str) -> str:
    """The command that makes ``system`` (for a message saying what to run first)."""
    kind = registry.get(system).kind
    if kind == "fine-tuned":
        base = registry.get(system).name
        return f'`asd train --system "{base}"`, `asd embed --system "{base}"`, `asd score`'
    return {
        "autoencoder": "`asd baseline`",
        "training-free": "`asd training-free`",
        "floor": "`asd training-free`",
        "ensemble": "`asd ensemble`",
    }[kind]


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
    training = AETrainConfig(**run.profile.baseline.plain(), seed=run.seed)
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
    first = run.system_dir(registry.of_kind("autoencoder")[0])
    write_table(history, first / "history.csv")
    ae.save_models({m: r.model for m, r in results.items()}, first / ae.MODELS)
    return BaselineOutcome(variants, history, {m: r.seconds for m, r in results.items()})


@dataclass
class TrainingFreeOutcome:
    """What :func:`training_free` made of one training-free system: the embeddings of every
    channel it read, the frozen encoder and its settings, the views they allow, the view scored,
    the log-mel floor's vectors and the seconds each took; ``others``: the other training-free
    systems' outcomes (System 6), by name."""

    embeddings: dict[str, np.ndarray]
    encoder: object
    section: config.schema.TrainingFree
    views: list[str]
    view: str
    mono_note: str
    floor: np.ndarray | None
    seconds: dict[str, float]
    system: str = ""
    others: dict[str, TrainingFreeOutcome] = field(default_factory=dict)

    @property
    def position(self) -> int:
        from asd_utils.systems import training_free

        return training_free.layer_position(self.encoder, self.section.layer)

    @property
    def bands(self) -> int:
        """Frequency bands in a vector: 8 for the band-preserving poolings, else 1."""
        from asd_utils.systems import training_free

        return training_free.bands(self.encoder, self.section)

    def vector(self, view: str | None = None, alpha: float | None = None, position=None):
        """The embeddings of one view (default: the one scored) at one block."""
        from asd_utils.systems import training_free

        return training_free.view(
            self.embeddings,
            view or self.view,
            self.section.alpha if alpha is None else alpha,
            self.position if position is None else position,
        )


def _training_free_system(run: Run, system: str, progress: bool) -> TrainingFreeOutcome:
    """One training-free system embedded (cached where
    :func:`asd_utils.systems.training_free.cache_dir` says), its view scored by its back end and
    written."""
    from asd_utils.systems import parameter_count, training_free

    start = time.perf_counter()
    embeddings, encoder, section = training_free.embed(
        run.profile,
        run.clips,
        cache_dir=training_free.cache_dir(run.paths.output_root),
        progress=progress,
        system=system,
    )
    available, mono_note = training_free.available_views(run.clips)
    views = [v for v in training_free.VIEWS if v in available and v in _made(embeddings)]
    view = section.view if section.view in views else "near"
    seconds = {"embed": time.perf_counter() - start}
    outcome = TrainingFreeOutcome(
        embeddings, encoder, section, views, view, mono_note, None, seconds, system
    )
    scorer = backend(run, system)
    scores = _score(run.clips, outcome.vector(), scorer, outcome.bands)
    write_system(run, system, scores, parameter_count(encoder), view=view, backend=scorer.name)
    return outcome


def _made(embeddings: dict) -> list[str]:
    """The views whose channels are all in ``embeddings``."""
    from asd_utils.systems import training_free

    return [v for v, c in training_free.VIEW_CHANNELS.items() if set(c) <= set(embeddings)]


def training_free(run: Run, progress: bool = False) -> TrainingFreeOutcome:
    """The training-free systems (a frozen encoder, no training:
    :mod:`asd_utils.systems.training_free`; System 0, then the others the data allows, e.g.
    System 6) and the log-mel floor: each system's channels embedded once (cached under
    :func:`asd_utils.systems.training_free.cache_dir`), its view scored by its back end and
    written; the floor scored by the default back end. Returns System 0's outcome, the others
    in its ``others``."""
    from asd_utils.systems import training_free as free

    first, *rest = registry.of_kind("training-free")
    wall = time.time()
    outcome = _training_free_system(run, first, progress)
    start = time.perf_counter()
    cache = free.cache_dir(run.paths.output_root)
    outcome.floor = free.floor_embeddings(run.clips, cache, progress=progress)
    outcome.seconds["floor"] = time.perf_counter() - start
    floor_name = registry.of_kind("floor")[0]
    scorer = backend(run, floor_name)
    scores = _score(run.clips, outcome.floor, scorer)
    write_system(run, floor_name, scores, 0, view="log-mel statistics", backend=scorer.name)
    for system in rest:
        if system in skipped(run):
            log.info("training-free: %s is skipped: %s", system, skipped(run)[system])
            continue
        outcome.others[system] = _training_free_system(run, system, progress)
    seconds = sum(sum(o.seconds.values()) for o in (outcome, *outcome.others.values()))
    took = _took(seconds, cache, ("frozen_*.npy", "logmel_*.npy"), wall)
    made = ", ".join([first, *outcome.others])
    log.info("training-free: %s and the %s %s (%s view)", made, floor_name, took, outcome.view)
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
    from asd_utils.systems import recipes

    if not registry.get(system).trainable:
        raise errors.UserError(
            f"{system} is not trained by the common loop ({registry.get(system).kind})"
        )
    reason = skipped(run).get(system)
    if reason:
        raise data.DataError(systems.skip_notice({system: reason}))
    clips = run.clips
    classes = systems.class_names(clips[clips["split"] == "train"], run.profile, system)[1]
    result = systems.train_system(
        run.paths.data_root,
        run.profile,
        system,
        run.paths.output_root,
        progress=progress,
        overrides=overrides,
        clips=clips,
    )
    recipe = recipes.of(system)
    description, checkpoints = recipe.describe(name or system, run.profile)
    extra = {**recipe.info(result.ema_model), "description": description}
    systems.write_info(
        run.system_dir(name or system),
        name or system,
        systems.parameter_count(result.ema_model),
        classes=len(classes),
        **extra,
        checkpoints=checkpoints,
        **made(run, system),  # an ablation or a study arm: its system's settings
    )
    if not result.reused:  # a found run is said once, by the training loop
        log.info("train: %s: %s", name or system, result.summary)
    return result


def embed(run: Run, system: str, result=None, name: str | None = None, progress: bool = False):
    """Embed every clip of the run with a trained system's EMA weights (cached in its run
    folder) and save the embeddings beside its results. ``result``: its
    :class:`~asd_utils.training.TrainResult` (found by :func:`train` when not given). Returns
    the embeddings, (clips, dim) float32."""
    from asd_utils import scoring, systems
    from asd_utils.systems import recipes

    result = result if result is not None else train(run, system, progress=progress)
    clips = run.clips
    recipe = recipes.of(system)
    channel, preprocess, key = recipe.front_end(run.profile)
    start, wall = time.perf_counter(), time.time()
    embeddings = scoring.extract_embeddings(
        recipe.embedder(result.ema_model, recipe.settings(run.profile)),
        clips,
        systems.settings(run.profile, system).embed_batch_size,
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
        "embed: %s, %s clips %s",
        name or system,
        f"{len(clips):,}",
        _took(time.perf_counter() - start, result.output_dir, ("embeddings_*.npy",), wall),
    )
    return embeddings


def _took(seconds: float, cache_dir: Path, patterns: tuple[str, ...], since: float) -> str:
    """``"in 12.3 s"``, or ``"(cached)"`` when no file of ``patterns`` in ``cache_dir`` was
    written since ``since`` (a wall-clock time): the work was found, not done."""
    written = [
        path.stat().st_mtime
        for pattern in patterns
        for path in Path(cache_dir).glob(pattern)
        if path.stat().st_mtime >= since - 1  # a coarse file-system clock
    ]
    return f"in {seconds:.1f} s" if written else "(cached)"


# --- score, ensemble, evaluate, package -----------------------------------------------------------


def backend_settings(profile: config.schema.Profile) -> tuple[str, dict]:
    """The profile's default scoring back end and the back ends' settings: ``(name, options)``."""
    section = profile.backends.plain()
    return section.pop("default"), section


def knn_k(profile: config.schema.Profile, name: str) -> int:
    """K of the KNN score of a system by its output name (an ablation uses its system's; a
    system without a section of its own, the log-mel floor, System 0's)."""
    if registry.get(name).section is None:
        name = registry.of_kind("training-free")[0]
    return registry.settings(profile, name).knn_k


def backend(run: Run, system: str):
    """The scoring back end of ``system`` on this run's machine types
    (:func:`asd_utils.scoring.for_machine_types`): its section's ``backend`` where it names one,
    else the profile's default, on the machine types ``backends.per_machine_type`` chose it for;
    ``backends.untuned`` on the others; its K (:func:`knn_k`) and the run's seed; unfitted."""
    from asd_utils import scoring

    section = registry.settings(run.profile, system) if registry.get(system).section else None
    name = getattr(section, "backend", "default")
    return scoring.for_machine_types(
        run.profile.backends,
        None if name == "default" else name,
        run.clips["machine_type"],
        k=knn_k(run.profile, system),
        seed=run.seed,
    )


def _score(clips, embeddings, scorer, bands: int = 1) -> pd.DataFrame:
    from asd_utils import scoring

    return scoring.score_system(clips, embeddings, scorer, bands)


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
    from asd_utils import systems as systems_

    chosen = systems if systems is not None else embedded(run)
    if not chosen:
        raise errors.RunError(
            f"nothing embedded in {run.paths.output_root / 'systems'} to score: run "
            '`asd train --system "System 1"` and `asd embed --system "System 1"` (or any '
            "fine-tuned system) first"
        )
    out = {}
    for system in chosen:
        clips, embeddings, info = _embeddings_of(run, system)
        scorer = backend(run, system)
        scores = _score(clips, embeddings, scorer, systems_.bands(run.profile, system))
        official.write_submission(scores, run.system_dir(system), **run.profile.decision.plain())
        write_table(scores, run.system_dir(system) / SCORES)
        info = {**info, **made(run, system)}  # scored now as the profile says
        atomic_write_text(run.system_dir(system) / "system.json", json.dumps(info, indent=2))
        out[system] = scores
        log.info("score: %s, %s clips by %s", system, f"{len(clips):,}", scorer.name)
    return out


def _embeddings_of(run: Run, system: str) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """A system's saved embeddings, their clips and its ``system.json``, after checking that
    they were made with this run's training settings and are of the manifest's clips (else one
    line saying what to run again)."""
    from asd_utils import scoring

    if not (run.system_dir(system) / scoring.EMBEDDINGS).is_file():
        raise errors.RunError(
            f"{system} has no embeddings in {run.system_dir(system)}: run "
            f'`asd embed --system "{registry.get(system).name}"` first'
        )
    entry = registry.get(system)
    info = check_made(run, system, keys={"seed", entry.section, "anc"})
    clips, embeddings = scoring.load_embeddings(run.system_dir(system))
    if list(clips["path"]) != list(run.clips["path"]):
        raise errors.RunError(
            f"{system}'s embeddings are of {len(clips)} clips, the manifest lists "
            f"{len(run.clips)} (clips added or removed since): run "
            f'`asd embed --system "{entry.name}"` again'
        )
    return clips, embeddings, info


COMPARISON = "backends.csv"  # every back end on every embedding of the run: compare_backends


def compare_backends(run: Run, outcome: TrainingFreeOutcome | None = None) -> pd.DataFrame:
    """Every back end of the table (:data:`asd_utils.scoring.BACKENDS`) on every embedding this
    run made: each view of each training-free system and the log-mel floor (from ``outcome``,
    :func:`training_free`; left out without it), then each embedded fine-tuned system. One row
    per (system, embedding, back end) with its summary
    (:func:`asd_utils.evaluation.metrics.summarise`); written to ``backends.csv``. An analysis: it
    reads test labels to measure, never to choose."""
    from asd_utils import scoring, systems

    embeddings = []
    if outcome is not None:
        for made in (outcome, *outcome.others.values()):
            embeddings += [(made.system, v, made.vector(v), made.bands) for v in made.views]
        embeddings.append((registry.of_kind("floor")[0], "log-mel statistics", outcome.floor, 1))
    for system in registry.of_kind("fine-tuned"):
        if (run.system_dir(system) / scoring.EMBEDDINGS).is_file():
            table, vector = scoring.load_embeddings(run.system_dir(system))
            if not table["path"].equals(run.clips["path"]):
                raise ValueError(f"{system}'s embeddings are of other clips than this run's")
            embeddings.append((system, "fine-tuned", vector, systems.bands(run.profile, system)))
    rows = []
    for system, embedding, vector, bands in embeddings:
        for name in scoring.BACKENDS:
            scorer = scoring.make(run.profile.backends, name, knn_k(run.profile, system), run.seed)
            scores = _score(run.clips, vector, scorer, bands)
            summary = metrics.summarise(metrics.evaluate(metrics.labelled(scores)[0]))
            rows.append({"system": system, "embedding": embedding, "backend": name, **summary})
    grid = pd.DataFrame(rows)
    write_table(grid, run.paths.output_root / COMPARISON)
    log.info("backends: %d back ends on %d embeddings", len(scoring.BACKENDS), len(embeddings))
    return grid


def read_scores(run: Run, system: str) -> pd.DataFrame:
    """A system's ``scores.csv`` (every clip, train and test)."""
    return unescape_formulas(pd.read_csv(run.system_dir(system) / SCORES, dtype={"section": str}))


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


def ensemble(run: Run, required: bool = False) -> EnsembleOutcome:
    """The ensemble system (System 4): the profile's members' scores, normalised with their
    training clips' statistics and combined with their weights (:mod:`asd_utils.systems.ensemble`),
    written as a system. Members this run did not make are left out and named; with none of
    them, nothing is written (``required``: a :class:`RunError` saying what to run first)."""
    from asd_utils.systems import ensemble as combine

    spec = run.profile.ensemble
    (name,) = registry.of_kind("ensemble")
    ran = set(written(run))
    members = [m for m in spec.members if m in ran]
    missing = [m for m in spec.members if m not in ran]
    weights = dict(zip(spec.members, spec.weights, strict=True))
    if not members and required:
        raise errors.RunError(
            f"none of {name}'s members ({', '.join(spec.members)}) is scored in "
            f"{run.paths.output_root / 'systems'}: run `asd score` (after `asd embed`) or "
            "`asd training-free` first"
        )
    if not members:
        log.info("ensemble: none of its members (%s) ran", ", ".join(spec.members))
        return EnsembleOutcome(None, [], missing, weights)
    for member in members:
        check_made(run, member)
    scores = combine.combine(
        {m: read_scores(run, m) for m in members},
        {m: weights[m] for m in members},
        how=spec.how,
        method=spec.normalisation,
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
    found = root.iterdir() if root.is_dir() else []
    names = registry.ordered(sorted(p.name for p in found if any(p.glob("anomaly_score_*.csv"))))
    if not names:
        raise errors.RunError(
            f"nothing scored in {root} to evaluate: run `asd score` (after `asd embed`), "
            "`asd baseline` or `asd training-free` first"
        )
    for system in names:
        check_made(run, system)
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


def package(
    run: Run,
    systems: list[str] | None = None,
    label: str | None = None,
    destination: str | Path | None = None,
    zip: bool = False,
):
    """The DCASE submission package of this run (:func:`asd_utils.submission.write_package`,
    ``destination`` and ``zip`` as there): the profile's submission systems that ran (or
    ``systems``), checked after writing. Returns its folder, or ``None`` when none of them ran."""
    from asd_utils import submission

    if not systems and not written(run):
        raise errors.RunError(
            f"nothing scored in {run.paths.output_root / 'systems'} to package: run the "
            "stages before `asd package` first (`asd run` makes them all)"
        )
    chosen = [s for s in run.profile.submission.systems if s in written(run)]
    if systems:  # refused before any check as the package refuses them (naming those that ran)
        chosen = submission.choose_systems(run.paths.output_root, run.profile, systems)
    if not chosen:
        log.info("package: none of the submission systems ran; no package")
        return None
    for system in chosen:
        check_made(run, system)
    folder = submission.write_package(
        run.paths.output_root,
        run.paths.data_root,
        run.profile,
        systems=chosen,
        label=label,
        clips=run.clips,
        destination=destination,
        zip=zip,
    )
    log.info("package: %s in %s", ", ".join(chosen), folder)
    return folder


# --- all of them ---------------------------------------------------------------------------------

DERIVED = (
    "systems",
    "metrics.csv",
    "table2.csv",
    "backends.csv",
    "submission",
    "executed",
    "book_source",
)
"""What a run derives in its output folder and a new full run (``asd run``, ``asd report``)
removes first (``training/``, the cached training runs and embeddings keyed by their inputs,
stays)."""


def clear_derived(output_root: Path) -> list[str]:
    """Remove the results of an earlier run (:data:`DERIVED`) so that tables, the ensemble, the
    package and the book show only what this run computes. Returns what was removed."""
    removed = []
    for name in DERIVED:
        path = output_root / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(name)
    return removed


def run_all(
    run: Run, progress: bool = True, seconds: dict | None = None, on_stage=None
) -> Evaluation:
    """Every stage in order, no notebook, after the previous run's derived results are
    removed (:func:`clear_derived`, as the report does): prepare, the baseline, every
    fine-tuned system the data can feed (train, embed; the ablations the profile asks for),
    score, System 0 and the floor, every back end compared (``backends.csv``), the ensemble,
    evaluate, package. What ``asd run`` does; the report's notebooks call the same functions.
    ``seconds`` receives each stage's time as it ends; ``on_stage(name)`` is called as each
    begins."""
    seconds = {} if seconds is None else seconds

    def stage(name, function, *args, **kwargs):
        if on_stage is not None:
            on_stage(name)
        start = time.perf_counter()
        out = function(*args, **kwargs)
        seconds[name] = round(seconds.get(name, 0.0) + time.perf_counter() - start, 1)
        return out

    removed = clear_derived(run.paths.output_root)
    if removed:
        log.info("removed the previous run's %s", ", ".join(removed))
    stage("prepare", prepare, run)
    stage("baseline", baseline, run, progress=progress)
    for system in trainable(run):
        for name, overrides in ablations(run, system).items():
            result = stage(f"train {name}", train, run, system, overrides, name, progress=progress)
            stage(f"embed {name}", embed, run, system, result, name, progress=progress)
    stage("score", score, run)
    outcome = stage("training-free", training_free, run, progress=progress)
    stage("backends", compare_backends, run, outcome)
    stage("ensemble", ensemble, run)
    evaluation = stage("evaluate", evaluate, run)
    stage("package", package, run)
    return evaluation


def ablations(run: Run, system: str) -> dict[str, dict | None]:
    """The runs of one fine-tuned system, by name: itself (no overrides) and each of its
    ablations (:data:`asd_utils.registry.ABLATIONS`) whose flag its profile section sets
    (``ablation_lambda_zero``: the GRL with lambda 0, "System 2 (lambda 0)"), with its
    overrides."""
    runs: dict[str, dict | None] = {system: None}
    settings = registry.settings(run.profile, system)
    for ablation in registry.ablations_of(system):
        if getattr(settings, ablation.flag, False):
            runs[ablation.name] = dict(ablation.overrides)
    return runs
