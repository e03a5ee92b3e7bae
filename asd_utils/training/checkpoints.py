"""A training run's files: atomic, verified checkpoints, damage set aside, a finished run's
record and loading saved weights.

:func:`asd_utils.training.train` writes into its run folder, every file atomically:

```
<output_dir>/
    train_config.json               the settings (TrainConfig), before the first step
    checkpoints/step_NNNNNNNN/      every checkpoint_every steps and at the last step
        model.safetensors, ema.safetensors, loss.safetensors     raw, EMA and loss weights
        train_state.pt              optimizer, scheduler, step, log, config, seconds so far
        rng_<rank>.pt               each process's RNG states
        manifest.json               every file's size and sha256, written before `latest`
    checkpoints/latest              names the newest complete checkpoint folder
    train_log.csv                   one row per step, rewritten at each checkpoint and the end
    ema.safetensors                 at the end: the weights to embed with
    model.safetensors, loss.safetensors
    finished.json                   last: steps, seconds, config, precision, each final file's
                                    size and sha256; the run is complete
```

A damaged checkpoint folder or file is renamed ``<name>.damaged`` (never deleted). A LoRA
model's checkpoints (:func:`asd_utils.models.lora.has_adapters`) keep only what trains of the
model and its EMA (:func:`trainable_part`: adapters, head) beside the optimiser; the frozen base
is named by its checksum in ``train_state.pt`` (``base_checksum``) and checked on resume
(:func:`check_base`); the final files hold whole models.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from asd_utils.files import atomic_path, atomic_write_text
from asd_utils.models import lora
from asd_utils.training.config import TrainConfig

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest"  # text file naming the newest complete checkpoint folder
EMA_WEIGHTS, MODEL_WEIGHTS, LOSS_WEIGHTS = (
    "ema.safetensors",
    "model.safetensors",
    "loss.safetensors",
)
TRAIN_STATE, TRAIN_LOG, TRAIN_CONFIG = "train_state.pt", "train_log.csv", "train_config.json"
CHECKSUMS = "manifest.json"  # per checkpoint: each file's size and sha256, written before `latest`
FINISHED = "finished.json"  # a completed run's record (steps, seconds, config, final files), last
DAMAGED = ".damaged"  # suffix of a damaged checkpoint folder or file, set aside (never deleted)
STEP_FOLDER = re.compile(r"step_\d{8}")  # checkpoint folder names; anything else is left alone
STATE_KEYS = ("step", "history", "config", "optimizer", "scheduler")  # what TRAIN_STATE must hold
Damage = list[tuple[Path, str]]  # damaged folders or files found, with what is wrong with each


class CheckpointWarning(RuntimeWarning):
    """A checkpoint or a finished run's file is damaged (truncated, corrupt, gone): it was set
    aside and training went on from the newest complete checkpoint, or from scratch."""


# --- checkpoints ---------------------------------------------------------------------------------
#
# Hand-written, not accelerate's ``save_state``/``load_state`` (checked against accelerate 1.15,
# ``accelerator.py`` and ``checkpointing.py``), because it lacks what a resume here relies on:
# - atomicity: ``save_state`` writes straight into ``checkpoint_<n>/`` and
#   ``load_state`` (automatic naming) takes the highest-numbered folder, so a run killed
#   mid-save is resumed from a half-written checkpoint. Here every file is written to a
#   temporary name and renamed, and ``checkpoints/latest`` moves only after the manifest.
# - verification and fallback: nothing records or checks sizes and hashes; a truncated file
#   fails the resume instead of falling back to the previous checkpoint (``find_checkpoint``,
#   ``checkpoint_damage``, ``.damaged`` kept aside, one ``CheckpointWarning``).
# - pruning: ``ProjectConfiguration(total_limit=…)`` deletes the oldest entries of
#   ``checkpoints/`` by count BEFORE the new one is written (a crash then leaves one fewer
#   good checkpoint), counts any entry there (our ``latest`` and ``.damaged`` ones included)
#   and parses a number from each name; here pruning follows the ``latest`` pointer.
# - safe loading: objects added by ``register_for_checkpointing`` (the EMA would be one) are
#   loaded with ``weights_only=False``, i.e. any pickle; here everything loads with
#   safetensors or ``torch.load(weights_only=True)``.
# - what a run is: the EMA, the split weights a finished run keeps (``model``, ``ema``,
#   ``loss``), the log and the config check live outside accelerate's files anyway, and
#   ``finished.json`` (a complete run is found, not retrained) has no counterpart.
# Switching formats would also leave every interrupted run written before unresumable. What
# accelerate does give is used: the prepared objects, ``set_seed``, ``wait_for_everyone``.


def _rng_state() -> dict:
    """Every RNG a training step may draw from (dropout: torch CPU/CUDA), as plain tensors."""
    # numpy's legacy global RNG is what third-party code draws from: save it, legacy API and all
    kind, key, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(key.copy()), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, key.numpy(), pos, has_gauss, gauss))  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The checkpoint folder ``checkpoints/latest`` names, or None (none written yet, or that
    folder is gone). Not verified: :func:`~asd_utils.training.loop.train` verifies it
    (:func:`checkpoint_damage`) before resuming and falls back to an older one."""
    pointer = Path(output_dir) / CHECKPOINT_DIR / LATEST
    if not pointer.is_file():
        return None
    folder = pointer.parent / pointer.read_text(errors="replace").strip()
    return folder if STEP_FOLDER.fullmatch(folder.name) and folder.is_dir() else None


def _file_record(path: Path) -> dict:
    """Size (bytes) and sha256 of one file, as :data:`CHECKSUMS` and :data:`FINISHED` keep them."""
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return {"bytes": path.stat().st_size, "sha256": digest}


def _write_record(path: Path, folder: Path, names: Sequence[str], **fields) -> None:
    """Write ``path`` (JSON, atomically): ``fields`` and the :func:`_file_record` of each of
    ``names`` in ``folder``, so a later reader can tell a damaged copy from the file written."""
    files = {name: _file_record(folder / name) for name in names}
    atomic_write_text(path, json.dumps({**fields, "files": files}, indent=2))


def _record_mismatch(folder: Path, files: dict) -> tuple[str, str] | None:
    """The first of ``files`` (name → :func:`_file_record` when written) whose file in
    ``folder`` is missing or differs, as ``(name, what is wrong)``; None when all match."""
    for name, written in files.items():
        path = folder / name
        if not path.is_file():
            return name, "missing"
        size = path.stat().st_size
        if size != written["bytes"]:
            return name, f"{size} bytes, {written['bytes']} when written (truncated?)"
        if _file_record(path)["sha256"] != written["sha256"]:
            return name, "its sha256 differs from the one recorded when it was written"
    return None


def _error_text(err: BaseException) -> str:
    """``Type: first line of the message`` (torch's errors carry long C++ traces)."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:200] if lines else ''}".rstrip(": ")


def checkpoint_damage(folder: str | os.PathLike) -> str | None:
    """Why checkpoint ``folder`` cannot be resumed from (``"<file>: what is wrong"``), or None
    when it is complete.

    Complete: every file its :data:`CHECKSUMS` lists has the size and sha256 it was written with
    (a checkpoint written before manifests existed skips this), and every file the resume reads
    loads: the model, EMA and loss weights (safetensors, every tensor read), ``train_state.pt``
    with :data:`STATE_KEYS` and each ``rng_<rank>.pt`` (``torch.load``). Any exception from
    those readers (a file cut short, a disk that filled, a folder that is gone) is damage.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return "the folder is gone"
    if (folder / CHECKSUMS).is_file():
        try:
            files = json.loads((folder / CHECKSUMS).read_text())["files"]
        except Exception as err:
            return f"{CHECKSUMS}: {_error_text(err)}"
        mismatch = _record_mismatch(folder, files)
        if mismatch is not None:
            return ": ".join(mismatch)
    rng_files = sorted({p.name for p in folder.glob("rng_*.pt")} | {"rng_0.pt"})
    for name in (MODEL_WEIGHTS, EMA_WEIGHTS, LOSS_WEIGHTS, TRAIN_STATE, *rng_files):
        try:
            if name.endswith(".safetensors"):
                load_file(folder / name)
                continue
            loaded = torch.load(folder / name, weights_only=True)
            if name == TRAIN_STATE and (missing := [k for k in STATE_KEYS if k not in loaded]):
                raise KeyError(f"no {missing}")
        except Exception as err:
            return f"{name}: {_error_text(err)}"
    return None


def _checkpoint_candidates(output_dir: Path) -> tuple[list[Path], Damage]:
    """The checkpoint folders to try, newest first: the one ``checkpoints/latest`` names (even
    if gone), then the older ``step_*`` ones; and ``latest`` itself when it names no folder.

    Nothing without ``latest``: no checkpoint was ever completed (a folder without it is one cut
    short while written, as is a folder newer than the one ``latest`` names)."""
    pointer = output_dir / CHECKPOINT_DIR / LATEST
    if not pointer.is_file():
        return [], []
    name = pointer.read_text(errors="replace").strip()
    folders = [p for p in pointer.parent.iterdir() if p.is_dir() and STEP_FOLDER.fullmatch(p.name)]
    if not STEP_FOLDER.fullmatch(name):
        return sorted(folders, reverse=True), [(pointer, f"names {name[:40]!r}, no checkpoint")]
    older = sorted((p for p in folders if p.name < name), reverse=True)
    return [pointer.parent / name, *older], []


def find_checkpoint(output_dir: str | os.PathLike) -> tuple[Path | None, Damage]:
    """The newest complete checkpoint of a run (None: none left), and each damaged one tried
    before it as ``(folder, what is wrong)`` (:func:`checkpoint_damage`). Only reads."""
    candidates, damaged = _checkpoint_candidates(Path(output_dir))
    for folder in candidates:
        problem = checkpoint_damage(folder)
        if problem is None:
            return folder, damaged
        damaged.append((folder, problem))
    return None, damaged


def _set_aside(path: Path) -> Path:
    """Rename a damaged folder or file to ``<name>.damaged`` (``.damaged-2`` … when taken), so
    it is never picked again and nothing is deleted; return the new path."""
    target, n = path.with_name(path.name + DAMAGED), 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}{DAMAGED}-{n}")
    path.rename(target)
    return target


def _step_of(folder: Path) -> int:
    return int(folder.name.removeprefix("step_"))


def _handle_damage(damaged: Damage, output_dir: Path, checkpoint: Path | None) -> None:
    """Set each damaged folder or file aside (:func:`_set_aside`), point ``checkpoints/latest``
    at ``checkpoint`` (or remove it: none is left), and say so in ONE :class:`CheckpointWarning`
    that names every damaged path, what was wrong and where training goes on from. Main process
    only."""
    found = []
    for path, problem in damaged:
        note = f", set aside as {_set_aside(path).name}" if path.exists() else ""
        found.append(f"{path} ({problem}{note})")
    pointer = output_dir / CHECKPOINT_DIR / LATEST
    if checkpoint is not None:
        atomic_write_text(pointer, checkpoint.name)
        then = f"resuming from {checkpoint} (step {_step_of(checkpoint)})"
    else:
        pointer.unlink(missing_ok=True)
        then = f"no complete checkpoint is left: training {output_dir} from scratch"
    warnings.warn(f"damaged: {'; '.join(found)}; {then}", CheckpointWarning, stacklevel=3)


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load saved weights into ``model`` (in place) and return it.

    ``path``: a safetensors file, or a run's output folder (then its EMA weights, the ones used
    for embeddings). ``safetensors.torch.load_model`` restores tensors that the model shares
    (BEATs' relative position bias), which a plain state dict cannot hold in safetensors.
    """
    path = Path(path)
    load_model(model, path / EMA_WEIGHTS if path.is_dir() else path)
    return model


def _save_model(model: nn.Module | dict[str, torch.Tensor], path: Path) -> None:
    """A whole module (``save_model``) or named tensors (part of one, :func:`trainable_part`)."""
    with atomic_path(path) as tmp:
        if isinstance(model, nn.Module):
            save_model(model, str(tmp))
        else:
            save_file({n: t.detach().contiguous() for n, t in model.items()}, str(tmp))


def base_checksum(model: nn.Module) -> str | None:
    """The frozen base's checksum of a LoRA model (:func:`asd_utils.models.lora.frozen_checksum`),
    or None: every weight of ``model`` is a checkpoint's (no adapters)."""
    return lora.frozen_checksum(model) if lora.has_adapters(model) else None


def trainable_part(module: nn.Module, names: set[str]) -> dict[str, torch.Tensor]:
    """The tensors of ``module``'s state dict named in ``names`` (what a LoRA checkpoint keeps:
    :func:`asd_utils.models.lora.trainable_state_dict`'s names, for the model and its EMA)."""
    return {n: t for n, t in module.state_dict().items() if n in names}


def load_part(module: nn.Module, path: Path, partial: bool) -> None:
    """Load checkpoint weights into ``module`` in place: all of them, or (``partial``) the part
    :func:`trainable_part` saved, every saved name one of the module's."""
    if not partial:
        load_model(module, path)
        return
    own = module.state_dict(keep_vars=True)
    saved = load_file(path)
    if extra := sorted(set(saved) - set(own)):
        raise KeyError(f"{path} holds weights the model lacks: {extra[:3]}")
    with torch.no_grad():
        for name, value in saved.items():
            own[name].copy_(value)


def check_base(saved: str | None, current: str | None, checkpoint: Path) -> None:
    """A LoRA checkpoint resumes only on the frozen base it was trained on (same checksum)."""
    if saved is not None and saved != current:
        raise ValueError(
            f"cannot resume from {checkpoint}: it was trained on a frozen base with checksum "
            f"{saved}, the model given has {current} (another base weights file?); load the "
            "base it was trained on, or start a new run (resume=False)"
        )


def _check_resumable(saved: dict, config: TrainConfig, folder: Path) -> None:
    current, default = config.to_dict(), TrainConfig().to_dict()  # a later key: its default
    changed = {
        k: (saved.get(k, default[k]), v)
        for k, v in current.items()
        if k not in TrainConfig.RESUMABLE_CHANGES and saved.get(k, default[k]) != v
    }
    if changed:
        raise ValueError(
            f"cannot resume from {folder}: settings changed (saved, now): {changed}; "
            "start a new run (resume=False) or restore them"
        )


def _finished_run(output_dir: Path, config: TrainConfig) -> tuple[dict | None, Damage]:
    """The :data:`FINISHED` record of a completed run of ``config`` whose final files are
    intact, or None; and what was found damaged, as :func:`find_checkpoint` gives it.

    None without a record, or when ``steps`` changed (allowed: training goes on from the newest
    checkpoint). Other changed settings raise, as resuming does (:func:`_check_resumable`). A
    final file that differs from its record (size, sha256) is damage: the run is then trained
    again from its newest complete checkpoint rather than refused, because training is exactly
    reproducible from a checkpoint (resume gives the uninterrupted run's weights, bit for bit):
    the rebuilt file is the one that was lost, and the final checkpoint sits at the last step,
    so it costs no training. An error would only make the user delete the file by hand and run
    again, to the same end.
    """
    marker = output_dir / FINISHED
    if not marker.is_file():
        return None, []
    try:
        record = json.loads(marker.read_text())
        saved, files = record["config"], record["files"]
    except Exception as err:
        return None, [(marker, _error_text(err))]
    _check_resumable(saved, config, output_dir)
    if record["steps"] != config.steps:
        return None, []
    mismatch = _record_mismatch(output_dir, files)
    if mismatch is not None:
        name, problem = mismatch
        return None, [(output_dir / name, f"final file of the finished run: {problem}")]
    return record, []


def _write_checkpoint(accelerator, folder: Path, parts: dict, state: dict, keep: int) -> None:
    """Write one checkpoint folder and its :data:`CHECKSUMS`, then point ``latest`` at it (so a
    crash mid-way leaves the previous checkpoint in charge), then prune old ones (``step_*``
    folders only: a ``.damaged`` one is kept). Every file is written atomically."""
    if accelerator.is_main_process:
        for name, module in parts.items():
            _save_model(module, folder / name)
        with atomic_path(folder / TRAIN_STATE) as tmp:
            torch.save(state, tmp)
    with atomic_path(folder / f"rng_{accelerator.process_index}.pt") as tmp:
        torch.save(_rng_state(), tmp)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        rng_files = [f"rng_{rank}.pt" for rank in range(accelerator.num_processes)]
        _write_record(folder / CHECKSUMS, folder, [*parts, TRAIN_STATE, *rng_files])
        atomic_write_text(folder.parent / LATEST, folder.name)
        kept = [p for p in folder.parent.iterdir() if p.is_dir() and STEP_FOLDER.fullmatch(p.name)]
        for stale in sorted(kept)[:-keep]:
            shutil.rmtree(stale, ignore_errors=True)


def _ready_folder(
    output_dir: Path, config: TrainConfig, resume: bool, damaged: Damage, checkpoint: Path | None
) -> None:
    """Main process, before training: old checkpoints gone unless resuming, damage set aside
    (:func:`_handle_damage`), ``finished.json`` gone (no longer true once training starts),
    ``train_config.json`` written."""
    if not resume:
        shutil.rmtree(output_dir / CHECKPOINT_DIR, ignore_errors=True)
    if damaged:
        _handle_damage(damaged, output_dir, checkpoint)
    (output_dir / FINISHED).unlink(missing_ok=True)
    atomic_write_text(output_dir / TRAIN_CONFIG, json.dumps(config.to_dict(), indent=2))
