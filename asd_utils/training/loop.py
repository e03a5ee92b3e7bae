"""One training loop for every fine-tuned system (accelerate, AdamW, inverse-sqrt schedule, EMA,
atomic and verified checkpoints, exact resume; a finished run is found, not trained again).

The defaults of :class:`TrainConfig` are the XJU report's Table 1 (``xju2026`` in
``book/references.bib``): 10,000 optimizer steps, batch 16, gradient accumulation 8 (128 clips
per step), AdamW at 1e-4, 960 linear warm-up steps then inverse-sqrt decay, SpecAugment 80,
weight EMA 0.9995. A system is a model, a loss and a data set handed to :func:`train`; the loop
is the same for all of them.

The same function runs in-process (a notebook) and under ``accelerate launch`` (one process per
GPU, DDP): ``asd train`` (:func:`asd_utils.stages.train`) builds the model, loss and data set in
every process and calls :func:`train`::

    accelerate launch --multi_gpu --num_processes 4 -m asd_utils.cli train --profile paper \
        --system "System 1"

``batch_size`` is the GLOBAL micro-batch (accelerate's ``split_batches``: each of W processes
gets ``batch_size / W`` clips), so one step sees the same clips on 1 or W GPUs, the schedule
counts optimizer steps, and a resumed run continues with the very same clips.

Per micro-batch: SpecAugment on the fbank (generator seeded by seed, micro-batch and process),
forward, ``backward`` of loss / accumulation; every ``grad_accumulation`` micro-batches one
AdamW step, one scheduler step, one EMA update, one log row. The sampler
(:class:`~asd_utils.training.dataset.ResumableSampler`) is a pure function of its position, which
is what makes a resumed run see the same clips.

Precision: ``mixed_precision`` is resolved first (:func:`asd_utils.models.precision.resolve`:
``auto`` becomes ``bf16`` or ``no`` on this device) and the run is trained, saved and compared
for resuming under what it resolved to: bf16 is accelerate's autocast around the forward, with
float32 weights (the optimizer's master copy), float32 fbank and losses, float32 outputs. The
decision and its reason go into ``finished.json`` (``precision``).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DataLoaderConfiguration, set_seed
from safetensors.torch import load_model
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from asd_utils.errors import BF16_OFF_HINT, NonFiniteError
from asd_utils.files import write_table
from asd_utils.frontends.features import spec_augment
from asd_utils.models import lora, precision
from asd_utils.models.mixup import mixup as clip_mixup
from asd_utils.training.checkpoints import (
    CHECKPOINT_DIR,
    EMA_WEIGHTS,
    FINISHED,
    LOSS_WEIGHTS,
    MODEL_WEIGHTS,
    TRAIN_LOG,
    TRAIN_STATE,
    _check_resumable,
    _finished_run,
    _ready_folder,
    _save_model,
    _set_rng_state,
    _write_checkpoint,
    _write_record,
    base_checksum,
    check_base,
    find_checkpoint,
    load_part,
    trainable_part,
)
from asd_utils.training.config import TrainConfig
from asd_utils.training.dataset import ResumableSampler

log = logging.getLogger(__name__)


def inverse_sqrt_lambda(warmup_steps: int) -> Callable[[int], float]:
    """LR factor for ``LambdaLR``: ``min(k / warmup, sqrt(warmup / k))`` at optimizer step k.

    k = 1, 2, … is the step the lr is used for (``LambdaLR`` passes k − 1, the number of steps
    taken): linear warm-up to the base lr at k = warmup, then 1/√k decay (fairseq's
    ``inverse_sqrt`` with warm-up from 0, as EAT's fairseq recipe).
    """

    def factor(steps_taken: int) -> float:
        k = steps_taken + 1
        return min(k / warmup_steps, math.sqrt(warmup_steps / k))

    return factor


def ema_model(model: nn.Module, decay: float) -> AveragedModel:
    """Weight EMA ``ema ← decay · ema + (1 − decay) · weights``, applied per ``update_parameters``.

    torch's AveragedModel with its EMA function, parameters and floating buffers alike (as the
    OS-SCL code's WeightEMA). Its first update would COPY the weights (n_averaged = 0); setting
    n_averaged to 1 makes it average from the start, i.e. the EMA starts at the initial weights,
    as the OS-SCL code's.
    """
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    ema.n_averaged.fill_(1)
    return ema.requires_grad_(False)


def mixup(
    waveform: torch.Tensor,
    lengths: torch.Tensor | None,
    target: torch.Tensor,
    alpha: float,
    seed,
) -> tuple[torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, float]]:
    """Mixup on waveforms (Zhang et al., ICLR 2018), as the OS-SCL code: one λ ~ Beta(α, α) per
    micro-batch, each clip mixed with a random partner of the same micro-batch,
    ``λ · x + (1 − λ) · x[perm]``. Returns the mixed waveforms, their valid lengths (the longer
    of the two) and ``mix = (target[perm], λ)`` for the loss, which weighs its terms for
    ``target`` by λ and for ``target[perm]`` by 1 − λ. ``seed``: a numpy seed (the loop passes
    the micro-batch position, so nothing needs checkpointing).
    """
    rng = np.random.default_rng(seed)
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(len(waveform))).to(waveform.device)
    mixed = lam * waveform + (1 - lam) * waveform[perm]
    if lengths is not None:
        lengths = torch.maximum(lengths, lengths[perm])
    return mixed, lengths, (target[perm], lam)


# --- the loop ------------------------------------------------------------------------------------


class _Objective(nn.Module):
    """Model and loss in one module, so DDP also averages the loss's own parameters' gradients
    (the class centres) and accelerate's autocast covers the forward."""

    def __init__(self, model: nn.Module, loss_fn: nn.Module):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(
        self, inputs, lengths, target, augment=None, mix=None, frames: bool = False
    ) -> dict[str, torch.Tensor]:
        if frames:  # crops taken in frames: (B, [2,] F, 128) fbank and valid frames
            outputs = self.model.forward_frames(inputs, lengths, augment)
        else:
            outputs = self.model(inputs, lengths, augment=augment)
        if mix is None:
            return self.loss_fn(outputs, target)
        return self.loss_fn(outputs, target, mix=mix)


@dataclass
class TrainResult:
    """What :func:`train` gives back. ``ema_model``: the EMA weights (eval mode; use these for
    embeddings); ``model``: the raw trained weights; ``history``: one row per optimizer step
    (``step, lr`` and the loss's parts, averaged over micro-batches and processes).

    ``steps``: optimizer steps the weights have had; ``seconds``: what training them took,
    summed over the sessions of a resumed run (the original run's, when ``reused``).
    ``start_step``: where this call began (0: from scratch; a checkpoint's step: resumed).
    ``reused``: a finished run was found and loaded, nothing trained (``start_step == steps``).
    ``summary``: one line saying which of these happened, for a notebook to print.
    ``data_seconds`` / ``loop_seconds``: of this call's training loop (not saved, not summed
    over sessions), the time spent waiting for the next batch and the whole loop; their ratio
    says whether the data loader starves the device (``benchmarks/bench_gpu.py``).
    ``precision``: what ``mixed_precision`` resolved to
    (:func:`asd_utils.models.precision.resolve`),
    also in ``finished.json``; embed with its ``autocast``.
    """

    ema_model: nn.Module
    model: nn.Module
    history: pd.DataFrame
    output_dir: Path
    steps: int
    seconds: float
    start_step: int = 0
    reused: bool = False
    summary: str = ""
    data_seconds: float = 0.0
    loop_seconds: float = 0.0
    precision: precision.Precision | None = None


def _accelerator(config: TrainConfig) -> Accelerator:
    # accelerate keeps process-wide singletons that refuse a second Accelerator with another
    # mixed_precision or accumulation; an in-process caller (a notebook training several
    # systems) is a single process, where resetting them is safe. A launcher (accelerate
    # launch, torchrun) sets WORLD_SIZE: then the distributed state is left alone.
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    return Accelerator(
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.grad_accumulation,
        # batch_size is global, and the scheduler steps once per optimizer step. (accelerate
        # 1.x ignores the old `split_batches=` argument: it must come in a DataLoaderConfiguration.)
        dataloader_config=DataLoaderConfiguration(split_batches=True),
    )


def _reuse_finished(
    model: nn.Module,
    loss_fn: nn.Module,
    config: TrainConfig,
    output_dir: Path,
    record: dict,
    accelerator: Accelerator,
    chosen: precision.Precision | None = None,
) -> TrainResult:
    """A finished run's result without training: its raw, loss and EMA weights loaded (on the
    accelerator's device, as training leaves them), its ``train_log.csv`` and its seconds."""
    load_model(model, output_dir / MODEL_WEIGHTS)
    load_model(loss_fn, output_dir / LOSS_WEIGHTS)
    model.to(accelerator.device)
    loss_fn.to(accelerator.device)
    ema = ema_model(model, config.ema_decay)
    load_model(ema.module, output_dir / EMA_WEIGHTS)
    steps, seconds = record["steps"], record["seconds"]
    summary = f"found the finished run ({steps} steps, trained in {seconds:.0f} s) in {output_dir}"
    summary += f" ({chosen.name})" if chosen is not None else ""
    if accelerator.is_main_process:
        log.info(summary)
    return TrainResult(
        ema_model=ema.module.eval(),
        model=model,
        history=pd.read_csv(output_dir / TRAIN_LOG),
        output_dir=output_dir,
        steps=steps,
        seconds=seconds,
        start_step=steps,
        reused=True,
        summary=summary,
        precision=chosen,
    )


def train(
    model: nn.Module,
    loss_fn: nn.Module,
    dataset: Dataset,
    config: TrainConfig,
    output_dir: str | os.PathLike,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Fine-tune ``model`` with ``loss_fn`` on ``dataset`` into the run folder ``output_dir``
    (its files: :mod:`asd_utils.training.checkpoints`); return the EMA and raw weights and log.

    ``model(waveform (B, samples), lengths (B,), augment=callable|None)`` returns a dict (e.g.
    :class:`asd_utils.models.heads.EmbeddingModel`); ``loss_fn(outputs, targets)`` a dict with
    ``"loss"`` and any parts to log (e.g. :class:`asd_utils.models.losses.OSSCLLoss`);
    ``dataset[(index, seed)]`` ``(waveform, target[, n_valid])``
    (:class:`~asd_utils.training.dataset.ClipDataset`), or with the data set's ``unit``
    "frames" ``(fbank crop, target, n_valid frames)`` for ``model.forward_frames``: a data
    set, not a DataLoader, as the loop owns the sampler. ``config.mixed_precision`` is resolved
    first (the module docstring).

    ``resume=True``: a finished run (same settings and steps) is loaded, not trained
    (``reused``); else training goes on from the newest checkpoint that verifies (from scratch if
    none) and ends with the uninterrupted run's weights and log; damage is set aside, named in
    one :class:`~asd_utils.training.checkpoints.CheckpointWarning`. Changed settings other than
    :attr:`TrainConfig.RESUMABLE_CHANGES` raise a ValueError. ``resume=False`` deletes the
    run's old checkpoints and its ``finished.json``. Phases: resume (:func:`_resume_point`,
    :func:`_load_start`), optimiser (:func:`_session`), step (:func:`_loop`), finish
    (:func:`_finish`).
    """
    started = time.perf_counter()
    if config.mixup_prob and not getattr(loss_fn, "per_clip_mixup", False):
        raise ValueError(
            f"mixup_prob mixes each clip with its own weight, which {type(loss_fn).__name__} "
            "does not take per clip: use mixup_alpha (one weight per batch)"
        )
    output_dir = Path(output_dir)
    chosen = precision.resolve(config.mixed_precision)
    config = dataclasses.replace(config, mixed_precision=chosen.mixed_precision)
    accelerator = _accelerator(config)
    finished, checkpoint = _resume_point(output_dir, config, resume, accelerator)
    if finished is not None:
        return _reuse_finished(model, loss_fn, config, output_dir, finished, accelerator, chosen)
    state = _load_start(checkpoint, model, loss_fn, config, accelerator, output_dir)
    run = _session(model, loss_fn, dataset, config, output_dir, accelerator, state, started)
    if checkpoint is not None:
        _restore(run, checkpoint, state)
    start_step = run.step
    data_seconds, loop_seconds = _loop(run, progress)
    return _finish(run, chosen, start_step, data_seconds, loop_seconds)


# --- phase 1: resume (a finished run, a checkpoint, or from scratch) ------------------------------


def _resume_point(
    output_dir: Path, config: TrainConfig, resume: bool, accelerator: Accelerator
) -> tuple[dict | None, Path | None]:
    """Where :func:`train` starts: ``(finished record, None)`` when ``resume`` finds the run
    finished (:func:`_finished_run`); otherwise ``(None, the newest complete checkpoint or
    None)``, with the run folder made ready for training (:func:`_ready_folder`) and every
    process seeded (``set_seed``, per device: dropout differs per process, as it should)."""
    checkpoint, damaged = None, []
    if resume:
        finished, damaged = _finished_run(output_dir, config)
        if finished is not None:
            return finished, None
        checkpoint, damaged_checkpoints = find_checkpoint(output_dir)
        damaged += damaged_checkpoints
    accelerator.wait_for_everyone()  # every process has read what it resumes from
    if accelerator.is_main_process:
        _ready_folder(output_dir, config, resume, damaged, checkpoint)
    accelerator.wait_for_everyone()
    set_seed(config.seed, device_specific=True)
    return None, checkpoint


def _load_start(
    checkpoint: Path | None,
    model: nn.Module,
    loss_fn: nn.Module,
    config: TrainConfig,
    accelerator: Accelerator,
    output_dir: Path,
) -> dict:
    """The training state to start from (``step``, ``history``, and from a checkpoint its
    ``optimizer``, ``scheduler``, ``seconds``), the checkpoint's raw and loss weights loaded
    into ``model`` and ``loss_fn``. From scratch: step 0, no history. ``base_checksum``: the
    model's frozen base (LoRA; None: none), which a LoRA checkpoint must have been trained on;
    ``partial``: the checkpoint holds only what trains."""
    base = base_checksum(model)
    if checkpoint is None:
        return {"step": 0, "history": [], "base_checksum": base, "partial": False}
    state = torch.load(checkpoint / TRAIN_STATE, weights_only=True)
    _check_resumable(state["config"], config, checkpoint)
    check_base(state.get("base_checksum"), base, checkpoint)
    partial = state.get("base_checksum") is not None
    load_part(model, checkpoint / MODEL_WEIGHTS, partial)
    load_model(loss_fn, checkpoint / LOSS_WEIGHTS)
    if accelerator.is_main_process:
        log.info("resuming %s from step %d of %d", output_dir, state["step"], config.steps)
    return {**state, "base_checksum": base, "partial": partial}


# --- phase 2: optimiser (optimizer, schedule, data, EMA, prepared by accelerate) -----------------


@dataclass
class _Run:
    """One training session's live state, handed between the phases of :func:`train`.
    ``objective`` as accelerate prepared it (DDP-wrapped under several processes), ``model``
    the raw model inside it; ``step`` optimizer steps taken, ``history`` one log row each;
    ``started`` (``perf_counter``) and ``seconds_before`` (earlier sessions) time the run."""

    config: TrainConfig
    output_dir: Path
    accelerator: Accelerator
    objective: nn.Module
    model: nn.Module
    loss_fn: nn.Module
    ema: AveragedModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loader: DataLoader
    step: int
    history: list[dict]
    started: float
    seconds_before: float
    base: str | None = None  # the frozen base's checksum (LoRA): checkpoints keep what trains
    trainable: frozenset[str] = frozenset()  # the state-dict names a LoRA checkpoint keeps

    def seconds(self) -> float:
        """Training seconds so far, over every session of the run."""
        return self.seconds_before + time.perf_counter() - self.started


def _optimizer(
    model: nn.Module, loss_fn: nn.Module, config: TrainConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the model's trainable parameters and, as a second group, the loss's (the
    class centres: lr × ``loss_lr_scale``, no decay, which would only shrink their norms); the
    inverse-sqrt schedule (:func:`inverse_sqrt_lambda`)."""
    groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    loss_params = [p for p in loss_fn.parameters() if p.requires_grad]
    if loss_params:
        groups.append(
            {
                "params": loss_params,
                "lr": config.learning_rate * config.loss_lr_scale,
                "weight_decay": 0.0,
            }
        )
    # fused: one kernel for every parameter (3x faster than torch's default per-parameter loop
    # at base size on this Xeon, 5 % of a tiny step); deterministic, so resuming stays bitwise.
    optimizer = torch.optim.AdamW(
        groups,
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
        eps=config.adam_eps,
        fused=True,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, inverse_sqrt_lambda(config.warmup_steps)
    )
    return optimizer, scheduler


def _loader(dataset: Dataset, config: TrainConfig, step: int) -> DataLoader:
    """Micro-batches of ``dataset`` from the :class:`ResumableSampler` draw that optimizer
    step ``step`` starts at."""
    sampler = ResumableSampler(
        len(dataset), config.seed, start=step * config.grad_accumulation * config.batch_size
    )
    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        generator=torch.Generator().manual_seed(config.seed),  # keeps the global RNG untouched
    )


def _session(
    model: nn.Module,
    loss_fn: nn.Module,
    dataset: Dataset,
    config: TrainConfig,
    output_dir: Path,
    accelerator: Accelerator,
    state: dict,
    started: float,
) -> _Run:
    """Optimizer, schedule and data loader prepared by accelerate around model and loss
    (:class:`_Objective`), and a fresh EMA of the model, at ``state``'s step and history."""
    optimizer, scheduler = _optimizer(model, loss_fn, config)
    loader = _loader(dataset, config, state["step"])
    objective, optimizer, loader, scheduler = accelerator.prepare(
        _Objective(model, loss_fn), optimizer, loader, scheduler
    )
    inner = accelerator.unwrap_model(objective)
    return _Run(
        config=config,
        output_dir=output_dir,
        accelerator=accelerator,
        objective=objective,
        model=inner.model,
        loss_fn=loss_fn,
        ema=ema_model(inner.model, config.ema_decay),
        optimizer=optimizer,
        scheduler=scheduler,
        loader=loader,
        step=state["step"],
        history=state["history"],
        started=started,
        seconds_before=state.get("seconds", 0.0),  # older checkpoints: no seconds
        base=state["base_checksum"],
        trainable=frozenset(
            lora.trainable_state_dict(inner.model) if state["base_checksum"] else ()
        ),
    )


def _restore(run: _Run, checkpoint: Path, state: dict) -> None:
    """The rest of a checkpoint, once prepared: optimizer and schedule, EMA weights, and this
    process's RNG states (a warning when it has none: more processes than were saved)."""
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    load_part(run.ema.module, checkpoint / EMA_WEIGHTS, state["partial"])
    rng_file = checkpoint / f"rng_{run.accelerator.process_index}.pt"
    if rng_file.is_file():
        _set_rng_state(torch.load(rng_file))
    else:  # resumed on more processes than it was saved from
        warnings.warn(f"{rng_file} missing: dropout will not repeat exactly", stacklevel=3)


# --- phase 3: step (micro-batches, optimizer steps, checkpoints) ---------------------------------


def _augmenter(config: TrainConfig, micro: int, process_index: int) -> Callable | None:
    """SpecAugment for micro-batch ``micro`` on this process, or None (disabled). A fresh
    generator per micro-batch, seeded by its position: nothing to checkpoint."""
    if not (config.spec_augment_time or config.spec_augment_freq):
        return None
    seed = (config.seed * 1_000_003 + micro) * 4099 + process_index
    return partial(
        spec_augment,
        time_mask=config.spec_augment_time,
        freq_mask=config.spec_augment_freq,
        generator=torch.Generator().manual_seed(seed),
    )


def _micro_batch(run: _Run, batch: Sequence, micro: int) -> tuple[dict, float]:
    """Forward and backward of one micro-batch (SpecAugment, mixup); at the last of
    ``grad_accumulation`` (accelerate's ``sync_gradients``) the optimizer and scheduler step.
    Returns the loss's parts and the lr the step uses."""
    config, accelerator = run.config, run.accelerator
    waveform, target, *rest = batch
    lengths = rest[0] if rest else None
    augment = _augmenter(config, micro, accelerator.process_index)
    mix = None
    frames = getattr(run.loader.dataset, "unit", "samples") == "frames"
    if config.mixup_alpha > 0 and frames:
        raise ValueError("mixup mixes waveforms: train it on crops in samples (no fbank)")
    if config.mixup_alpha > 0:
        waveform, lengths, mix = mixup(
            waveform, lengths, target, config.mixup_alpha, seed=(config.seed, micro, 7)
        )
    elif config.mixup_prob > 0:  # per clip, the LoRA recipe's (the same seed by position)
        waveform, lengths, mix = clip_mixup(
            waveform, lengths, target, config.mixup_prob, seed=(config.seed, micro, 7)
        )
    lr = run.optimizer.param_groups[0]["lr"]
    with accelerator.accumulate(run.objective):
        parts = run.objective(waveform, lengths, target, augment=augment, mix=mix, frames=frames)
        accelerator.backward(parts["loss"])
        if config.max_grad_norm and accelerator.sync_gradients:
            accelerator.clip_grad_norm_(run.objective.parameters(), config.max_grad_norm)
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad()
    return parts, lr


def _non_finite_message(run: _Run, means: dict[str, float]) -> str:
    """What a non-finite loss at the step after ``run.step`` says: the loss's parts, the
    precision, the run folder and the step's clips (the sampler's draws: one process's view)."""
    config = run.config
    clips = config.grad_accumulation * config.batch_size
    draws = ResumableSampler(len(run.loader.dataset), config.seed, start=run.step * clips)
    paths = getattr(run.loader.dataset, "paths", None)
    names = [
        str(paths[i]) if paths is not None else f"clip {i}"
        for i, _ in itertools.islice(draws, clips)
    ]
    precision_name = "bf16 (autocast)" if config.mixed_precision == "bf16" else "float32"
    hint = BF16_OFF_HINT if config.mixed_precision == "bf16" else "check the clips and the settings"
    parts = ", ".join(f"{k} {v}" for k, v in means.items())
    return (
        f"non-finite loss ({parts}) at step {run.step + 1} in {run.output_dir}, computed in "
        f"{precision_name}; the step's clips: {', '.join(names[:3])}"
        f"{f' and {len(names) - 3} more' if len(names) > 3 else ''}; {hint}"
    )


def _log_step(run: _Run, sums: dict[str, torch.Tensor], lr: float) -> None:
    """After an optimizer step: the step counted, the EMA updated, one log row (the loss's
    parts averaged over micro-batches and processes)."""
    means = run.accelerator.reduce(torch.stack(list(sums.values())), "mean")
    means = (means / run.config.grad_accumulation).tolist()
    if not all(math.isfinite(value) for value in means):
        raise NonFiniteError(_non_finite_message(run, dict(zip(sums, means, strict=True))))
    run.step += 1
    run.ema.update_parameters(run.model)
    run.history.append({"step": run.step, "lr": lr, **dict(zip(sums, means, strict=True))})


def _loop(run: _Run, progress: bool) -> tuple[float, float]:
    """Train from ``run.step`` to ``config.steps``, a checkpoint every ``checkpoint_every``
    steps and at the last (a finished run's newest checkpoint holds its final state). Returns
    the seconds spent waiting for batches and the loop's seconds."""
    config = run.config
    bar = tqdm(
        total=config.steps,
        initial=run.step,
        desc="training",
        unit="step",
        disable=not (progress and run.accelerator.is_main_process),
    )
    run.objective.train()
    batches = iter(run.loader)
    micro = run.step * config.grad_accumulation
    sums: dict[str, torch.Tensor] = {}
    loop_started, data_seconds = time.perf_counter(), 0.0
    while run.step < config.steps:
        waiting = time.perf_counter()
        batch = next(batches)
        data_seconds += time.perf_counter() - waiting
        parts, lr = _micro_batch(run, batch, micro)
        micro += 1
        for name, value in parts.items():
            sums[name] = sums.get(name, 0.0) + value.detach().float()
        if not run.accelerator.sync_gradients:
            continue
        _log_step(run, sums, lr)
        sums = {}
        bar.update()
        if run.step % config.log_every == 0 or run.step == config.steps:
            bar.set_postfix(loss=f"{run.history[-1]['loss']:.4f}", lr=f"{lr:.3g}")
        every = config.checkpoint_every
        if every and (run.step % every == 0 or run.step == config.steps):
            _save_checkpoint(run)
    bar.close()
    del batches
    return data_seconds, time.perf_counter() - loop_started


def _save_checkpoint(run: _Run) -> None:
    """``checkpoints/step_NNNNNNNN/`` at ``run.step`` (:func:`_write_checkpoint`), then the
    log so far (main process)."""
    folder = run.output_dir / CHECKPOINT_DIR / f"step_{run.step:08d}"
    training_state = {
        "step": run.step,
        "history": run.history,
        "config": run.config.to_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "seconds": run.seconds(),
    }
    weights = {MODEL_WEIGHTS: run.model, EMA_WEIGHTS: run.ema.module, LOSS_WEIGHTS: run.loss_fn}
    if run.base is not None:  # LoRA: what trains, the frozen base by its checksum
        training_state["base_checksum"] = run.base
        weights[MODEL_WEIGHTS] = trainable_part(run.model, run.trainable)
        weights[EMA_WEIGHTS] = trainable_part(run.ema.module, run.trainable)
    _write_checkpoint(run.accelerator, folder, weights, training_state, run.config.keep_checkpoints)
    if run.accelerator.is_main_process:
        write_table(pd.DataFrame(run.history), run.output_dir / TRAIN_LOG)


# --- phase 4: finish (final files, finished.json, the result) ------------------------------------


def _write_final(run: _Run, chosen: precision.Precision) -> float:
    """Main process: the final EMA, raw and loss weights, the log and, last (its presence says
    every final file is complete), ``finished.json``. Returns the run's training seconds."""
    final = {EMA_WEIGHTS: run.ema.module, MODEL_WEIGHTS: run.model, LOSS_WEIGHTS: run.loss_fn}
    if run.accelerator.is_main_process:
        for name, module in final.items():
            _save_model(module, run.output_dir / name)
        write_table(pd.DataFrame(run.history), run.output_dir / TRAIN_LOG)
    seconds = run.seconds()
    if run.accelerator.is_main_process:
        _write_record(
            run.output_dir / FINISHED, run.output_dir, [*final, TRAIN_LOG],
            steps=run.step, seconds=seconds, config=run.config.to_dict(),
            precision=chosen.to_dict(),
        )  # fmt: skip
    return seconds


def _finish(
    run: _Run,
    chosen: precision.Precision,
    start_step: int,
    data_seconds: float,
    loop_seconds: float,
) -> TrainResult:
    """Write the final files (:func:`_write_final`), wait for every process, free
    accelerate's references and return what :func:`train` gives back."""
    seconds = _write_final(run, chosen)
    run.accelerator.wait_for_everyone()
    ema_module = run.ema.module.eval()
    run.accelerator.free_memory()
    if start_step:
        summary = f"resumed from step {start_step}: {run.step} steps, trained in {seconds:.0f} s"
        summary += f" ({chosen.name})"
    else:
        summary = f"trained {run.step} steps in {seconds:.0f} s ({chosen.name})"
    return TrainResult(
        ema_model=ema_module,
        model=run.model,
        history=pd.DataFrame(run.history),
        output_dir=run.output_dir,
        steps=run.step,
        seconds=seconds,
        start_step=start_step,
        summary=f"{summary} in {run.output_dir}",
        data_seconds=data_seconds,
        loop_seconds=loop_seconds,
        precision=chosen,
    )
