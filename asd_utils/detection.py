"""New recordings scored by a finished run (``asd detect``): any system the run made, the
threshold its own training-clip scores set, long recordings in windows; reads the run, writes
only the output it is given (:func:`detect`)."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from asd_utils import data, errors, registry, stages
from asd_utils.evaluation import metrics
from asd_utils.files import write_table
from asd_utils.stages import Run

log = logging.getLogger(__name__)


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
        every = sorted(data.editions.EDITIONS.values(), key=lambda e: len(e.channels))
        expected = {"sample_rate": data.SAMPLE_RATE, "min_seconds": data.MIN_SECONDS}
        expected["editions"] = every  # any edition's clips: the most channels any one holds
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


DETECTED = ("file", "path", "part", "start", "end", "anomaly_score", "decision")
"""The columns :func:`detect` writes (its header: how a later ``detect`` knows its own file)."""
LONG_FACTOR = 1.5
"""A new recording longer than this many times the reference clips' length is scored in
windows of that length (:func:`detect`)."""


STDOUT = "-"
"""``--output -``: :func:`detect` writes its CSV to standard output."""


def detect(
    run: Run,
    system: str,
    paths,
    output: str | Path,
    machine_type: str | None = None,
    section: str | None = None,
) -> pd.DataFrame:
    """Score new recordings with a system this run made (any kind: :func:`new_scores`), against
    the training clips of ``machine_type`` / ``section`` (default: the run's only ones; names
    matched as :func:`detectable` and :func:`_reference` say), and decide each with that
    section's threshold in the system's official files (the profile's decision rule on its
    training clips' scores). Writes ``output`` (:data:`DETECTED`; :data:`STDOUT`: standard
    output) and returns it; says how many were flagged, warning when the system is randomly
    initialised or from a run of sanity-check size (:func:`_say_detected`).

    A recording up to :data:`LONG_FACTOR` times the reference clips' length is one row
    (``part`` "recording"). A longer one (a 10-minute take) is cut into consecutive windows of
    the reference length (the last one ends at the recording's end), each scored as a clip (a
    row ``part`` "window", ``start``/``end`` in seconds); its "recording" row holds the mean of
    its windows' scores, decided by the same threshold. ``output`` is written only when it is
    new, empty, or an earlier ``detect`` output (:func:`claim_output`).
    """
    output = output if str(output) == STDOUT else claim_output(run, output)
    system = detectable(run, system)
    part, machine_type, section = _reference(run, machine_type, section)
    info = stages.check_made(run, system)
    new = new_clips(paths, _channels(run, system, info), machine_type, section)
    with tempfile.TemporaryDirectory(prefix="asd-detect-") as folder:
        windows = _windows(new, float(part["duration"].max()), Path(folder))
        scores = new_scores(run, system, part, windows[data.COLUMNS].reset_index(drop=True))
    threshold = _threshold(run, system, machine_type, section)
    out = _detected(new, windows.assign(anomaly_score=scores))
    out["decision"] = (out["anomaly_score"] > threshold).astype(int)
    _write_detected(out, output)
    _say_detected(run, system, out, f"{machine_type} section {section}", threshold, output)
    return out


def _threshold(run: Run, system: str, machine_type: str, section: str) -> float:
    """The decision threshold of ``system`` for ``machine_type`` / ``section``, as its official
    files decided: the profile's rule on that section's training-clip scores it wrote."""
    made = stages.read_scores(run, system)
    chosen = (made["machine_type"] == machine_type) & (made["section"] == section)
    train = made.loc[chosen & (made["split"] == "train"), "anomaly_score"]
    return metrics.decision_threshold(train, **run.profile.decision.plain())


def _write_detected(out: pd.DataFrame, output: str | Path) -> None:
    """``out`` as CSV to ``output``, or to standard output (:data:`STDOUT`)."""
    import sys

    from asd_utils.files import escape_formulas

    if str(output) == STDOUT:
        escape_formulas(out).to_csv(sys.stdout, index=False)
        sys.stdout.flush()
    else:
        write_table(out, output)


def _say_detected(
    run: Run, system: str, out: pd.DataFrame, reference: str, threshold: float, output
) -> None:
    """The summary line (k of n recordings flagged, the threshold, where the CSV went) and a
    warning when the scores cannot mean much: a randomly initialised backbone, a run of
    sanity-check size (the profile's ``sanity_check``: smoke, quick)."""
    recordings = out[out["part"] == "recording"]
    where = "standard output" if str(output) == STDOUT else str(output)
    log.info(
        "detect: %d of %d recordings flagged anomalous by %s against %s (threshold %.6g): %s",
        int(recordings["decision"].sum()),
        len(recordings),
        system,
        reference,
        threshold,
        where,
    )
    random = random_init(run, system)
    why = []
    if random:
        shown = "a randomly initialised backbone" if random == [system] else (
            f"randomly initialised members ({', '.join(random)})"
        )  # fmt: skip
        why.append(f"has {shown}")
    if run.profile.sanity_check:
        why.append(f"comes from a {run.profile.name} run (tiny sizes)")
    if why:
        log.warning(
            "detect: %s %s: its scores check the machinery, they say little of a machine",
            system,
            " and ".join(why),
        )


def random_init(run: Run, system: str) -> list[str]:
    """The systems behind ``system`` (itself, or an ensemble's members) whose backbone has no
    checkpoint in this run's profile: random weights (as its kind says, :data:`BY_KIND`)."""
    return BY_KIND[registry.get(system).kind].random(run, system)


def _random_backbone(run: Run, system: str) -> list[str]:
    """:func:`random_init` of a system with a section of its own: itself when that names a
    backbone and no checkpoint."""
    if registry.get(system).section is None:
        return []
    settings = registry.settings(run.profile, system)
    return [system] if getattr(settings, "backbone", None) and not settings.checkpoint else []


def _random_members(run: Run, system: str) -> list[str]:
    """:func:`random_init` of an ensemble: its members'."""
    members = stages.check_made(run, system).get("members", [])
    return [s for m in members for s in random_init(run, m)]


def _normal_name(name: str) -> str:
    """A system name without case, spaces, hyphens or underscores (``system4``,
    ``baseline-mse``)."""
    import re

    return re.sub(r"[\s_-]+", "", name).casefold()


def detectable(run: Run, name: str) -> str:
    """The registry name of the system ``name`` means (without case, with or without spaces:
    :func:`_normal_name`) if this run made it; else a :class:`~asd_utils.errors.UserError`
    suggesting the closest name and listing what this run made."""
    import difflib

    made = [s for s in stages.written(run) if s in registry.REGISTRY]
    listing = ", ".join(made) if made else "nothing yet (`asd run` makes every system)"
    known = {_normal_name(n): n for n in registry.REGISTRY}
    found = known.get(_normal_name(name))
    if found in made:
        return found
    if found is None:
        close = difflib.get_close_matches(_normal_name(name), list(known), n=1, cutoff=0.6)
        hint = f": did you mean {known[close[0]]!r}?" if close else ""
        raise errors.UserError(f"no system {name!r}{hint or ';'} this run made: {listing}")
    raise errors.UserError(
        f"{found} has no results in {run.paths.output_root / 'systems'}: "
        f"run {stages._maker(found)} "
        f"first (same profile, data and output root); this run made: {listing}"
    )


def _channels(run: Run, system: str, info: dict) -> int:
    """The channels a new recording needs for ``system`` (``info``: its ``system.json``), as
    its kind says (:data:`BY_KIND`): 2 where it, a member of it, or the view it scored reads
    the far microphone, else 1."""
    return BY_KIND[registry.get(system).kind].channels(run, system, info)


def _reads_channels(run: Run, system: str, info: dict) -> int:
    """:func:`_channels` of a system that reads what its registry entry says."""
    return 2 if registry.get(system).needs_far else 1


def _view_channels(run: Run, system: str, info: dict) -> int:
    """:func:`_channels` of a training-free system: its entry's, or the view it scored."""
    from asd_utils.systems import training_free

    far = set(training_free.VIEW_CHANNELS.get(info.get("view", "near"), ())) - {"near"}
    return 2 if registry.get(system).needs_far or far else 1


def _member_channels(run: Run, system: str, info: dict) -> int:
    """:func:`_channels` of an ensemble: the most any of its members needs."""
    return max(_channels(run, m, stages.check_made(run, m)) for m in info.get("members", []))


def claim_output(run: Run, output: str | Path) -> Path:
    """``output`` (normalised) if :func:`detect` may write it: a new or empty file, or one an
    earlier ``detect`` wrote (its header :data:`DETECTED`); never a folder, a file inside the
    data root, or any other file (the run's own ``clips.csv`` included)."""
    from asd_utils.files import refuse_protected

    protected = {"the data root": run.paths.data_root, "the output root": run.paths.output_root}
    path = refuse_protected(output, "--output", protected)
    if not path.exists() or (path.is_file() and path.stat().st_size == 0):
        return path
    try:
        with open(path, encoding="utf-8") as f:
            header = f.readline().strip()
    except (OSError, UnicodeDecodeError):
        header = None
    if header != ",".join(DETECTED):
        raise errors.RunError(
            f"--output {path} exists and is not a file `asd detect` wrote; it is never "
            "overwritten: choose a new file name"
        )
    return path


def _windows(new: pd.DataFrame, length: float, folder: Path) -> pd.DataFrame:
    """The clip table of what :func:`detect` embeds: each recording of ``new`` whole, or, when
    longer than :data:`LONG_FACTOR` × ``length`` seconds, its windows of ``length`` seconds
    (written as WAV files under ``folder``, in the recording's encoding); with ``recording``
    (the row of ``new``), ``start`` and ``end`` (seconds)."""
    import soundfile as sf

    rows = []
    for n, clip in enumerate(new.to_dict("records")):
        if clip["duration"] <= LONG_FACTOR * length:
            rows.append({**clip, "recording": n, "start": 0.0, "end": clip["duration"]})
            continue
        size = int(round(length * clip["sample_rate"]))
        starts = list(range(0, clip["frames"] - size + 1, size))
        starts += [clip["frames"] - size] if starts[-1] + size < clip["frames"] else []
        subtype = sf.info(clip["path"]).subtype
        for k, first in enumerate(starts):
            audio, rate = sf.read(clip["path"], start=first, frames=size, always_2d=True)
            target = folder / f"{n:05d}_{k:05d}.wav"
            sf.write(target, audio, rate, subtype=subtype, format="WAV")
            begin = first / rate
            rows.append(
                {**clip, "path": str(target), "frames": size, "duration": size / rate,
                 "recording": n, "start": begin, "end": begin + size / rate}
            )  # fmt: skip
    return pd.DataFrame(rows)


def _detected(new: pd.DataFrame, found: pd.DataFrame) -> pd.DataFrame:
    """:func:`detect`'s rows (less the decision) from the scored parts ``found``: one
    "recording" row per recording of ``new`` (a windowed one: the mean of its windows), then
    its "window" rows."""
    rows = []
    for n, clip in enumerate(new.to_dict("records")):
        parts = found[found["recording"] == n]
        about = {"file": clip["file_name"], "path": clip["path"]}
        whole = {"part": "recording", "start": 0.0, "end": clip["duration"]}
        rows.append({**about, **whole, "anomaly_score": parts["anomaly_score"].mean()})
        if len(parts) > 1 or parts["path"].iloc[0] != clip["path"]:
            rows += [
                {**about, "part": "window", "start": w.start, "end": w.end,
                 "anomaly_score": w.anomaly_score}
                for w in parts.itertuples()
            ]  # fmt: skip
    return pd.DataFrame(rows, columns=list(DETECTED[:-1]))


def _reference(
    run: Run, machine_type: str | None, section: str | None
) -> tuple[pd.DataFrame, str, str]:
    """:func:`detect`'s reference: the run's training clips of ``machine_type`` / ``section``
    (default: the only ones), with both names as the run spells them: a machine type matched
    without case (``Fan``: "fan"), a section by number (``0``, ``section_00``: "00"); a name
    the run has not is an error listing those it has, suggesting the closest."""
    train_clips = run.clips[run.clips["split"] == "train"]
    machine_type = _chosen(train_clips["machine_type"], machine_type, "machine type", str.casefold)
    part = train_clips[train_clips["machine_type"] == machine_type]
    section = _chosen(part["section"], section, f"section of {machine_type}", _section_number)
    return part[part["section"] == section], machine_type, section


def _section_number(section: str) -> str:
    """A section name as a number where it is one (``section_00``, ``00``, ``0``: "0")."""
    bare = section.strip().casefold().removeprefix("section_").removeprefix("section")
    return str(int(bare)) if bare.isdigit() else bare


def _chosen(values: pd.Series, given: str | None, what: str, normal) -> str:
    """The value of ``values`` that ``given`` means (compared through ``normal``); without
    ``given``, the only one. Else a :class:`~asd_utils.errors.UserError` naming the ones there
    are (and the option to choose with), suggesting the closest."""
    import difflib

    unique = sorted(set(values))
    option = "--machine-type" if what == "machine type" else "--section"
    if given is None:
        if len(unique) != 1:
            raise errors.UserError(
                f"this run has {len(unique)} of {what} ({', '.join(unique)}): choose one with "
                f"{option}"
            )
        return unique[0]
    matches = [v for v in unique if normal(v) == normal(given)]
    if matches:
        return matches[0]
    folded = {v.casefold(): v for v in unique}
    close = difflib.get_close_matches(given.casefold(), list(folded), n=1)
    hint = f": did you mean {folded[close[0]]!r}?" if close else ";"
    raise errors.UserError(
        f"no {what} {given!r} in this run's training clips{hint} it has: {', '.join(unique)} "
        f"({option})"
    )


def new_scores(run: Run, system: str, part: pd.DataFrame, new: pd.DataFrame) -> np.ndarray:
    """The anomaly scores of the ``new`` clips (a clip table) by ``system`` of this run, against
    the reference training clips ``part`` (one machine type and section), as its official
    files score a test clip; how is the system's kind (the registry's): a fine-tuned system
    embeds them with its trained weights, a training-free one with its frozen encoder and view,
    the log-mel floor with its statistics, the autoencoder baseline with its saved models, the
    ensemble combines its members' scores of them (:data:`BY_KIND`). Writes nothing.
    (len(new),) float64."""
    scorer = BY_KIND[registry.get(system).kind].scores
    return np.asarray(scorer(run, system, part, new), dtype=np.float64)


def _scored_with(run: Run, system: str, tables, vectors, bands: int = 1) -> np.ndarray:
    """The scores of the second of two clip tables ``tables`` (reference, new) with their
    embeddings ``vectors``, by ``system``'s back end fitted on the reference's training clips."""
    reference, new = tables
    table = pd.concat([reference, new], ignore_index=True)
    scorer = stages.backend(run, system)
    scores = stages._score(table, np.concatenate(vectors), scorer, bands)
    return scores["anomaly_score"].to_numpy()[len(reference) :]


def _new_fine_tuned(run: Run, system: str, part: pd.DataFrame, new: pd.DataFrame):
    """:func:`new_scores` of a fine-tuned system: its finished run's EMA weights embed the
    reference (read from its cache) and the new clips."""
    from asd_utils import scoring, systems, training
    from asd_utils.systems import recipes

    folder = systems.run_dir(
        run.paths.output_root, run.profile, system, run.paths.data_root, run.clips
    )
    if not (folder / training.FINISHED).is_file():
        raise FileNotFoundError(
            f"{system} has not finished training in {folder}: run `asd train --system "
            f'"{system}"` (same profile, data and output root) first'
        )
    result = systems.train_system(  # found finished: loads its EMA weights, writes nothing
        run.paths.data_root, run.profile, system, run.paths.output_root, progress=False,
        clips=run.clips,
    )  # fmt: skip
    recipe = recipes.of(system)
    channel, preprocess, key = recipe.front_end(run.profile)
    batch = recipe.settings(run.profile).embed_batch_size
    model = recipe.embedder(result.ema_model, recipe.settings(run.profile))
    common = (batch, channel, preprocess, result.precision.autocast)
    reference = scoring.extract_embeddings(
        model, part, *common, progress=False, cache_dir=result.output_dir,
        preprocess_key=key, write_cache=run.writes, name=system,
    )  # fmt: skip
    queries = scoring.extract_embeddings(model, new, *common, progress=False, name=system)
    bands = systems.bands(run.profile, system)
    return _scored_with(run, system, (part, new), (reference, queries), bands)


def _new_training_free(run: Run, system: str, part: pd.DataFrame, new: pd.DataFrame):
    """:func:`new_scores` of a training-free system (System 0, System 6): its frozen encoder
    embeds the new clips; the reference's embeddings are the run's (its cache, else computed,
    not cached); the view its ``system.json`` names is scored."""
    from asd_utils.systems import training_free

    view = stages.check_made(run, system).get("view", "near")
    cache = training_free.cache_dir(run.paths.output_root)
    known, encoder, section = training_free.embed(
        run.profile, run.clips, cache, progress=False, system=system, write_cache=run.writes
    )
    fresh, _, _ = training_free.embed(run.profile, new, None, progress=False, system=system)
    rows = np.flatnonzero(run.clips["path"].isin(part["path"]).to_numpy())
    position = training_free.layer_position(encoder, section.layer)

    def vectors(embeddings, take=slice(None)):
        chosen = {c: e[take] for c, e in embeddings.items()}
        return training_free.view(chosen, view, section.alpha, position)

    pair = (vectors(known, rows), vectors(fresh))
    return _scored_with(run, system, (part, new), pair, training_free.bands(encoder, section))


def _new_floor(run: Run, system: str, part: pd.DataFrame, new: pd.DataFrame):
    """:func:`new_scores` of the log-mel floor: the new clips' log-mel statistics standardised
    with their machine type's training clips (as the run's), scored against the reference."""
    from asd_utils.systems import training_free

    clips = run.clips
    cache = training_free.cache_dir(run.paths.output_root)
    known = training_free.logmel_statistics(clips, cache, progress=False, write_cache=run.writes)
    fresh = training_free.logmel_statistics(new, progress=False)
    same = (clips["machine_type"] == new["machine_type"].iloc[0]).to_numpy()
    table = pd.concat([clips[same], new], ignore_index=True)
    vectors = training_free.standardise_per_machine(np.concatenate([known[same], fresh]), table)
    rows = np.flatnonzero(clips.loc[same, "path"].isin(part["path"]).to_numpy())
    pair = (vectors[rows], vectors[same.sum() :])
    return _scored_with(run, system, (part, new), pair)


def _new_autoencoder(run: Run, system: str, part: pd.DataFrame, new: pd.DataFrame):
    """:func:`new_scores` of an autoencoder baseline: its machine type's saved model scores
    the new clips; the selective Mahalanobis covariances come from that machine type's
    training clips, as in the run."""
    from asd_utils.systems import baseline as ae

    path = run.system_dir(registry.of_kind("autoencoder")[0]) / ae.MODELS
    machine_type = new["machine_type"].iloc[0]
    if not path.is_file():
        raise errors.RunError(
            f"{system} has no saved models ({path}; runs before they were saved): run "
            "`asd baseline` again (same profile, data and output root)"
        )
    model = ae.load_models(path)[machine_type]
    clips = run.clips
    train = clips[(clips["machine_type"] == machine_type) & (clips["split"] == "train")]
    table = pd.concat([train, new], ignore_index=True)
    vectors, owner = ae.frame_vectors(table["path"].tolist(), ae.AEFeatureConfig(), progress=False)
    is_train = np.arange(len(table)) < len(train)
    scores = ae.score_clips(
        model, vectors, owner, is_train, table["domain"].to_numpy(), overwrite=True
    )
    column = ae.SCORE_COLUMNS[registry.of_kind("autoencoder").index(system)]
    return scores[column][len(train) :]


def _new_ensemble(run: Run, system: str, part: pd.DataFrame, new: pd.DataFrame):
    """:func:`new_scores` of the ensemble: each member's scores of the new clips
    (:func:`new_scores`) beside its written training-clip scores of the reference section,
    normalised with those and combined with the profile's weights, as the run's ensemble."""
    from asd_utils.systems import ensemble as combine

    spec = run.profile.ensemble
    members = stages.check_made(run, system)["members"]
    weights = dict(zip(spec.members, spec.weights, strict=True))
    names = [f"new {n}" for n in range(len(new))]  # unique keys: new clips may share a name
    reference = part[["machine_type", "section"]].drop_duplicates()
    tables = {}
    for member in members:
        stages.check_made(run, member)
        known = stages.read_scores(run, member).merge(reference)
        known = known[known["split"] == "train"][[*combine.KEYS, "anomaly_score"]]
        fresh = new[["machine_type", "section", "split"]].assign(
            file_name=names, anomaly_score=new_scores(run, member, part, new)
        )
        tables[member] = pd.concat([known, fresh[[*combine.KEYS, "anomaly_score"]]])
    combined = combine.combine(
        tables, {m: weights[m] for m in members}, how=spec.how, method=spec.normalisation
    )
    return combined.set_index("file_name").loc[names, "anomaly_score"].to_numpy()


@dataclass(frozen=True)
class KindDetection:
    """How :func:`detect` handles one kind of system (:data:`asd_utils.registry.KINDS`): its
    scores of new clips (:func:`new_scores`), the channels a new recording needs
    (:func:`_channels`) and the systems behind it with random weights (:func:`random_init`)."""

    scores: Callable[[Run, str, pd.DataFrame, pd.DataFrame], np.ndarray]
    channels: Callable[[Run, str, dict], int] = _reads_channels
    random: Callable[[Run, str], list[str]] = _random_backbone


BY_KIND: dict[str, KindDetection] = {
    "autoencoder": KindDetection(_new_autoencoder),
    "fine-tuned": KindDetection(_new_fine_tuned),
    "training-free": KindDetection(_new_training_free, _view_channels),
    "floor": KindDetection(_new_floor),
    "ensemble": KindDetection(_new_ensemble, _member_channels, _random_members),
}
"""One entry per registry kind: a new kind of system is one more entry."""
