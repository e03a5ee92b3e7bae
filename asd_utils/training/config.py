"""The training settings (:class:`TrainConfig`; defaults: the XJU paper's Table 1): from a
profile's typed ``train`` section (the schema checked it) or from plain values, checked here."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from asd_utils.config.schema import Train
from asd_utils.models import precision


@dataclass
class TrainConfig:
    """Training settings; defaults are the XJU paper's Table 1 unless marked.

    ``steps`` counts optimizer steps (each ``grad_accumulation`` micro-batches of
    ``batch_size`` clips, summed over processes); ``warmup_steps`` too. Not in Table 1:
    ``weight_decay`` 0.01 (torch's AdamW default, which the OS-SCL code uses),
    ``loss_lr_scale`` (the loss's own parameters, e.g. the ArcFace class centres, train at
    ``learning_rate × loss_lr_scale`` without weight decay; 1.0 = the OS-SCL code's single
    AdamW group), ``adam_eps``, ``max_grad_norm`` (None: no clipping, as upstream).
    SpecAugment: one time and one frequency mask, widths below ``spec_augment_time`` /
    ``spec_augment_freq`` (see :func:`asd_utils.frontends.features.spec_augment`); 0 disables it.
    ``mixup_alpha``: mixup of the waveforms (:func:`~asd_utils.training.loop.mixup`),
    λ ~ Beta(α, α); 0 (the default, as Table 1, which lists SpecAugment only) disables it; the
    OS-SCL code uses 0.5. ``mixup_prob``: mixup per clip instead
    (:func:`asd_utils.models.mixup.mixup`, the public LoRA recipe's p = 0.5): each clip mixed
    with probability p, w ~ U(0, 1) per clip, for a loss that takes a weight per clip
    (``per_clip_mixup``: SCAdaCos); 0: off. ``mixed_precision``: ``"no"``, ``"bf16"`` or ``"auto"``
    (:func:`asd_utils.models.precision.resolve`: :func:`~asd_utils.training.loop.train` trains
    in what it resolves to on the device, and records the decision). ``checkpoint_every``
    optimizer steps (0: none; the final weights are always saved), the newest
    ``keep_checkpoints`` kept (0: all);
    ``log_every``: how often the progress bar's loss/lr are refreshed.
    """

    steps: int = 10_000
    batch_size: int = 16
    grad_accumulation: int = 8
    learning_rate: float = 1e-4
    loss_lr_scale: float = 1.0
    weight_decay: float = 0.01
    adam_eps: float = 1e-8
    warmup_steps: int = 960
    max_grad_norm: float | None = None
    ema_decay: float = 0.9995
    spec_augment_time: int = 80
    spec_augment_freq: int = 80
    mixup_alpha: float = 0.0
    mixup_prob: float = 0.0
    seed: int = 13711
    mixed_precision: str = "no"
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    num_workers: int = 0

    # Settings that may change when a run is resumed; any other difference is an error.
    RESUMABLE_CHANGES = (
        "steps",
        "checkpoint_every",
        "keep_checkpoints",
        "log_every",
        "num_workers",
    )

    def _check(self) -> TrainConfig:
        """The schema's checks (:class:`asd_utils.config.schema.Train`) for values no schema saw."""
        if self.mixed_precision not in precision.SETTINGS:
            raise ValueError(
                f"mixed_precision must be one of {precision.SETTINGS}, not {self.mixed_precision}"
            )
        positive = ("steps", "batch_size", "grad_accumulation", "warmup_steps", "log_every")
        if any(getattr(self, name) < 1 for name in positive):
            raise ValueError(f"{', '.join(positive)} must be >= 1 (got {self.to_dict()})")
        if self.mixup_alpha < 0:
            raise ValueError(f"mixup_alpha must be >= 0 (0: no mixup), not {self.mixup_alpha}")
        if not 0.0 <= self.mixup_prob <= 1.0:
            raise ValueError(f"mixup_prob must be in [0, 1] (0: no mixup), not {self.mixup_prob}")
        if self.mixup_alpha and self.mixup_prob:
            raise ValueError("mixup_alpha (per batch) and mixup_prob (per clip): set one, not both")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), not {self.ema_decay}")
        return self

    @classmethod
    def from_section(cls, section: Train, seed: int) -> TrainConfig:
        """From a system's validated ``train`` section (:class:`asd_utils.config.schema.Train`,
        whose keys and ranges the schema checked): its keys as set, this class's defaults for
        the optional ones it leaves out; ``seed`` (the profile's) unless the section sets one."""
        return cls(**{"seed": seed, **section.plain()})

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """From plain values that no schema checked (a JSON file), checked here; unknown keys are
        an error (a typo must not pass silently)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown training settings {unknown}; known: {sorted(names)}")
        return cls(**values)._check()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
