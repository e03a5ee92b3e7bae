"""The training settings (:class:`TrainConfig`): from a profile's typed ``train`` section (the
schema checked it) or from plain values, which the same schema checks."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pydantic

from asd_utils.config.schema import Train, optional_defaults

OPTIONAL = optional_defaults(Train)
"""The optional keys' defaults: the schema's (:class:`asd_utils.config.schema.Train`)."""


@dataclass
class TrainConfig:
    """Training settings. Built by hand (tests, benchmarks), the keys every profile sets default
    to the XJU paper's Table 1 (and the seed to 13711), the optional keys to the schema's
    defaults (:data:`OPTIONAL`).

    ``steps`` counts optimizer steps (each ``grad_accumulation`` micro-batches of
    ``batch_size`` clips, summed over processes); ``warmup_steps`` too. Not in Table 1:
    ``weight_decay`` 0.01 (torch's AdamW default, which the OS-SCL code uses),
    ``loss_lr_scale`` (the loss's own parameters, e.g. the ArcFace class centres, train at
    ``learning_rate × loss_lr_scale`` without weight decay; 1.0 = the OS-SCL code's single
    AdamW group), ``adam_eps``, ``max_grad_norm`` (None: no clipping, as upstream).
    SpecAugment: one time and one frequency mask, widths below ``spec_augment_time`` /
    ``spec_augment_freq`` (see :func:`asd_utils.frontends.features.spec_augment`); 0 disables it.
    ``mixup_alpha``: mixup of the waveforms (:func:`~asd_utils.training.loop.mixup`),
    λ ~ Beta(α, α); 0 (the default: Table 1 lists SpecAugment only) disables it; the
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
    loss_lr_scale: float = OPTIONAL["loss_lr_scale"]
    weight_decay: float = OPTIONAL["weight_decay"]
    adam_eps: float = OPTIONAL["adam_eps"]
    warmup_steps: int = 960
    max_grad_norm: float | None = OPTIONAL["max_grad_norm"]
    ema_decay: float = 0.9995
    spec_augment_time: int = 80
    spec_augment_freq: int = 80
    mixup_alpha: float = OPTIONAL["mixup_alpha"]
    mixup_prob: float = OPTIONAL["mixup_prob"]
    seed: int = 13711
    mixed_precision: str = "no"
    checkpoint_every: int = 500
    keep_checkpoints: int = OPTIONAL["keep_checkpoints"]
    log_every: int = OPTIONAL["log_every"]
    num_workers: int = OPTIONAL["num_workers"]

    # Settings that may change when a run is resumed; any other difference is an error.
    RESUMABLE_CHANGES = (
        "steps",
        "checkpoint_every",
        "keep_checkpoints",
        "log_every",
        "num_workers",
    )

    @classmethod
    def from_section(cls, section: Train, seed: int) -> TrainConfig:
        """From a system's validated ``train`` section (:class:`asd_utils.config.schema.Train`,
        whose keys, ranges and defaults the schema holds): every value as the section has it;
        ``seed`` (the profile's) unless the section sets one."""
        values = section.model_dump()
        return cls(**{**values, "seed": seed if values["seed"] is None else values["seed"]})

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """From plain values that no schema checked (a JSON file), checked by the schema's
        :class:`~asd_utils.config.schema.Train`: a key left out takes Table 1's value (a key
        every profile sets) or the schema's default; an unknown key, a wrong type or a value
        out of range is a ``ValueError`` naming the key."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown training settings {unknown}; known: {sorted(names)}")
        table_1 = {k: getattr(cls, k) for k, f in Train.model_fields.items() if f.is_required()}
        try:
            section = Train.model_validate({**table_1, **values, "seed": None})
        except pydantic.ValidationError as err:
            problems = "; ".join(_problem(error) for error in err.errors())
            raise ValueError(f"training settings: {problems}") from None
        return cls.from_section(section, values.get("seed", cls.seed))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _problem(error: dict) -> str:
    """One of pydantic's errors as ``key: what was expected (got value)``."""
    message = error["msg"].removeprefix("Value error, ")
    if not error["loc"]:  # a rule over several keys
        return message
    return f"{'.'.join(map(str, error['loc']))}: {message} (got {error['input']!r})"
