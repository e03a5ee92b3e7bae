"""The typed schema of a profile (``profiles/*.yaml``): every section, key, type and range.

:func:`asd_utils.config.load_profile` validates a profile against :class:`Profile` before
anything runs, so a misspelt key (``crop_second``), a wrong type (``steps: "6"``) or an
out-of-range value (``quantile: 90``) is one clear error naming the file and the key path,
never a silent default or a traceback hours later. pydantic does the checking (strict types:
no string is taken for a number); this module only states what a profile may hold.

The validated :class:`Profile` is what every stage, system, recipe and back end receives
(``Run.profile``); a derived profile is ``profile.model_copy(update=...)``. Choices live in the
profiles: a key every shipped profile sets is required here. An optional key's default is a
fact (torch's AdamW weight decay, the OS-SCL code's plain sum, a stereo 16 kHz dataset) and lives
here only, on its field; the code reads ``section.train.weight_decay`` with no fallback of its
own. :meth:`Plain.plain` (the dict form that run keys hash and records keep) holds what the
profile set, so adding a default here moves no key.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from asd_utils import registry

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, lt=1)]
SYSTEM_NAMES = registry.SUBMITTABLE  # what a profile may list (submission systems)
ENSEMBLE_MEMBERS = tuple(registry.of_kind("fine-tuned", "training-free"))  # what it combines


class Plain(BaseModel):
    """A part of a profile with its dict form.

    ``recorded_defaults``: fields whose defaults count as set (recorded and keyed as if the
    profile had written them), for the defaults that were keyed before keys hashed only what a
    profile sets; a new default is never listed, so that it moves no key.
    """

    recorded_defaults: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="after")
    def _record_defaults(self):
        self.__pydantic_fields_set__.update(self.recorded_defaults)
        return self

    def plain(self) -> dict:
        """The part as its record holds it (``profile.yaml``, ``system.json``) and as run and
        cache keys hash it: nested dicts of what the profile set (``model_copy(update=...)``
        sets what it updates), ``None`` values absent. Every value, defaults included:
        ``model_dump()``."""
        return self.model_dump(exclude_unset=True, exclude_none=True)


def optional_defaults(model: type[BaseModel]) -> dict:
    """The defaults of ``model``'s optional fields, for code that builds the same settings
    without a profile (tests, benchmarks)."""
    return {name: f.default for name, f in model.model_fields.items() if not f.is_required()}


class Section(Plain):
    """A profile section: unknown keys are refused, no value is coerced from another type."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Data(Section):
    """Where the synthetic data goes, and how a data tree is read: ``edition`` names an entry
    of :data:`asd_utils.data.editions.EDITIONS` (checked when the tree is indexed), or
    ``auto`` (the tree's folders and channel counts decide). Never inherited (``extends``),
    so its default is here."""

    recorded_defaults = ("edition",)
    synthetic_root: str
    edition: Annotated[str, Field(min_length=1)] = "auto"


Pair = Annotated[list[float], Field(min_length=2, max_length=2)]


class Synth(Section):
    """:class:`asd_utils.data.synth.SynthConfig` (sizes of the embedded synthetic dataset).
    Defaults: no evaluation set, stereo 16 kHz (the 2026 format), the generator's acoustics
    (``fault_sound_level`` 0.25 puts the baseline near its Table 2 level; see SynthConfig)."""

    machine_types: list[str] = Field(min_length=1)
    eval_machine_types: list[str] = []
    channels: Literal[1, 2] = 2
    n_train_source: Annotated[int, Field(ge=2)]
    n_train_target: PositiveInt
    n_test: PositiveInt
    clip_seconds: dict[str, PositiveFloat]
    sample_rate: Literal[16000] = 16000
    near_snr_db: Pair = [3.0, 12.0]
    far_snr_db: Pair = [-12.0, -4.0]
    noise_path_ms: Annotated[list[PositiveFloat], Field(min_length=2, max_length=2)] = [8.0, 20.0]
    noise_path_taps: PositiveInt = 384
    anomaly_severity: NonNegativeFloat = 1.0
    fault_sound_level: NonNegativeFloat = 0.25
    seed: int

    @model_validator(mode="after")
    def _consistent(self):
        if "default" not in self.clip_seconds:
            raise ValueError("clip_seconds needs a 'default' entry (seconds of every other type)")
        both = set(self.machine_types) & set(self.eval_machine_types)
        if both:
            raise ValueError(
                f"machine types {sorted(both)} are in both machine_types and eval_machine_types"
            )
        return self


class Baseline(Section):
    """:class:`asd_utils.models.autoencoder.AETrainConfig` (the official AE recipe)."""

    epochs: PositiveInt
    batch_size: PositiveInt
    learning_rate: PositiveFloat
    validation_split: Fraction


class Anc(Section):
    """System 3's denoiser: ``canceller`` the adaptive FBLMS (:func:`asd_utils.frontends.anc.
    fblms`, with its settings) or the fixed W1 (:func:`asd_utils.frontends.twochannel.w1`), and
    the ANC chapter's analysis sizes."""

    canceller: Literal["fblms", "w1"]
    filter_length: PositiveInt
    step_size: PositiveFloat
    leakage: NonNegativeFloat
    block_size: PositiveInt
    clips_per_machine: PositiveInt
    sweep_filter_length: list[PositiveInt] = Field(min_length=1)
    sweep_step_size: list[PositiveFloat] = Field(min_length=1)
    sweep_block_size: list[PositiveInt] = Field(min_length=1)
    sweep_leakage: list[NonNegativeFloat] = Field(min_length=1)
    window_seconds: PositiveFloat


class Train(Section):
    """:class:`asd_utils.training.TrainConfig`: the keys every profile sets, then the optional
    with their defaults (not in the paper's Table 1: torch's AdamW ``weight_decay`` and
    ``adam_eps``, one learning rate for the loss's parameters, no gradient clipping, no mixup;
    ``seed`` None: the profile's)."""

    steps: PositiveInt
    batch_size: PositiveInt
    grad_accumulation: PositiveInt
    learning_rate: PositiveFloat
    warmup_steps: PositiveInt
    ema_decay: Fraction
    spec_augment_time: NonNegativeInt
    spec_augment_freq: NonNegativeInt
    mixed_precision: Literal["no", "bf16", "auto"]  # asd_utils.models.precision
    checkpoint_every: NonNegativeInt
    loss_lr_scale: PositiveFloat = 1.0
    weight_decay: NonNegativeFloat = 0.01
    adam_eps: PositiveFloat = 1e-8
    max_grad_norm: PositiveFloat | None = None  # None: no clipping
    mixup_alpha: NonNegativeFloat = 0.0  # mixup per batch; 0: off
    mixup_prob: Annotated[float, Field(ge=0, le=1)] = 0.0  # mixup per clip; 0: off
    seed: int | None = None  # None: the profile's seed
    keep_checkpoints: NonNegativeInt = 2  # 0: all
    log_every: PositiveInt = 10
    num_workers: NonNegativeInt = 0

    @model_validator(mode="after")
    def _one_mixup(self):
        if self.mixup_alpha and self.mixup_prob:
            raise ValueError("mixup_alpha (per batch) and mixup_prob (per clip): set one, not both")
        return self


class OSSCLLoss(Section):
    """:class:`asd_utils.models.losses.OSSCLLoss`; the weights default to the OS-SCL code's
    plain sum."""

    margin: NonNegativeFloat
    scale: PositiveFloat
    sub_centers: PositiveInt
    temperature: PositiveFloat
    arcface_weight: NonNegativeFloat = 1.0
    supcon_weight: NonNegativeFloat = 1.0


class GRLLoss(Section):
    """:class:`asd_utils.models.losses.GRLLoss`."""

    margin: NonNegativeFloat
    scale: PositiveFloat
    sub_centers: PositiveInt
    lambda_max: NonNegativeFloat
    domain_weight: NonNegativeFloat
    hidden_dim: PositiveInt = 256  # the domain classifier's hidden layer


class ClassSettings(Plain):
    """How a system's classes are made (a profile's ``classes`` block;
    :mod:`asd_utils.systems.classes`).

    ``scheme``: :data:`asd_utils.systems.classes.SCHEMES`; ``method``: ``kmeans``
    (scikit-learn, ``n_init`` restarts from ``seed``) or ``ward`` (agglomerative,
    deterministic); ``source_clusters`` / ``target_clusters`` per machine type and section
    (asd03: 7 and 1); ``by_domain``: append the domain to name classes (cluster classes always
    carry it); ``seed``: None takes the run's seed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    recorded_defaults = (
        "scheme",
        "method",
        "source_clusters",
        "target_clusters",
        "by_domain",
        "n_init",
        "seed",
    )
    scheme: Literal["names", "pseudo", "auto"] = "auto"
    method: Literal["kmeans", "ward"] = "kmeans"
    source_clusters: PositiveInt = 7
    target_clusters: PositiveInt = 1
    by_domain: bool = True
    n_init: PositiveInt = 10
    seed: NonNegativeInt | None = None


class FineTuned(Section):
    """What the fine-tuned systems share (:mod:`asd_utils.systems`). ``classes`` (optional
    beside System 7): a class scheme (:class:`ClassSettings`) instead of the name classes."""

    backbone: Literal["eat", "beats"]
    size: Literal["tiny", "base"]
    checkpoint: str
    crop_seconds: PositiveFloat | None = None  # None (null): whole clips
    target_repeats: PositiveInt = 1  # each target clip listed this many times in training
    projection_dim: PositiveInt
    train: Train
    knn_k: PositiveInt
    embed_batch_size: PositiveInt
    classes: ClassSettings | None = None


class OSSCL(FineTuned):
    """Systems 1 and 3."""

    backbone: Literal["eat"]
    classes_by_domain: bool
    target_repeats: PositiveInt
    loss: OSSCLLoss


class Fusion(OSSCL):
    """System 5: System 1's recipe plus cross-channel modules (:mod:`asd_utils.models.fusion`)."""

    backbone: Literal["eat", "beats"]
    blocks: list[int] = Field(min_length=1)  # after which blocks (1 = first, -1 = last)
    width: PositiveInt
    heads: PositiveInt
    freeze_backbone: bool

    @model_validator(mode="after")
    def _known_blocks(self):
        if 0 in self.blocks:
            raise ValueError("blocks are numbered from 1 (first) or -1 (last); 0 is none")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not a multiple of heads {self.heads}")
        return self


class BEATsGRL(FineTuned):
    """System 2."""

    backbone: Literal["beats"]
    loss: GRLLoss
    ablation_lambda_zero: bool


class LoRA(Section):
    """:func:`asd_utils.models.lora.add_lora`: rank, alpha, dropout and the Linears it wraps."""

    rank: PositiveInt
    alpha: PositiveFloat
    dropout: Fraction
    targets: list[str] = Field(min_length=1)


class SCAdaCosLoss(Section):
    """:class:`asd_utils.models.losses.SCAdaCosLoss`."""

    sub_clusters: PositiveInt
    trainable: bool
    dynamic: bool


class LoRABEATs(FineTuned):
    """System 7: LoRA BEATs on W1 audio, classes by :class:`ClassSettings`, attentive statistics
    pooling + projection, SCAdaCos; scored on RDP(``gamma``) band features of the last block by
    ``backend``."""

    backbone: Literal["beats"]
    lora: LoRA
    classes: ClassSettings
    loss: SCAdaCosLoss
    gamma: Annotated[float, Field(ge=0)]
    backend: str


View = Literal["near", "far", "residual", "concat", "anc", "w1", "ss"]


class TrainingFree(Section):
    """A training-free system (:mod:`asd_utils.systems.training_free`: a frozen encoder, no
    training): System 0 on every view of both channels, System 6 on W1 audio with RDP band
    tokens."""

    backbone: Literal["eat", "beats"]
    size: Literal["tiny", "base"]
    checkpoint: str
    layer: int  # block number, 1 = first; -1 = last
    pooling: Literal["time_mean", "time_rdp", "mean", "max", "cls"]
    gamma: Annotated[float, Field(ge=0)]  # the RDP exponent of ``time_rdp`` (0: the mean)
    view: View
    alpha: float
    backend: str  # a back end of the ``backends`` table, or "default" (its ``default``)
    knn_k: PositiveInt
    embed_batch_size: PositiveInt
    mixed_precision: Literal["no", "bf16", "auto"]  # asd_utils.models.precision
    sweep_layers: list[int]  # analysis only: stored beside ``layer``
    sweep_alpha: list[float]  # analysis only
    sweep_views: list[View]  # analysis only: embedded beside ``view`` where the clips allow

    @model_validator(mode="after")
    def _known_layers(self):
        if 0 in (self.layer, *self.sweep_layers):
            raise ValueError("layers are numbered from 1 (first block) or -1 (last); 0 is none")
        if self.pooling == "cls" and self.backbone == "beats":
            raise ValueError("pooling 'cls' needs EAT: BEATs has no CLS token")
        return self


class Backends(Section):
    """The scoring back ends (:mod:`asd_utils.scoring.backends`): ``default`` names the one that
    scores every system; each other key is a back end's name and holds its options, which
    that back end's own typed model checks (:func:`asd_utils.scoring.backends.check`, at the
    door: this layer does not know the table)."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    default: str
    # the back end of each machine type, chosen by hand ("default": the system's own); a
    # machine type not listed (an evaluation-set one, never tuned) is scored by ``untuned``
    per_machine_type: dict[str, str]
    untuned: str

    @model_validator(mode="after")
    def _options_are_mappings(self):
        for name, options in (self.model_extra or {}).items():  # a back end's options
            if not isinstance(options, dict):
                raise ValueError(f"{name}: a back end's options are a mapping, not {options!r}")
        return self


class NoiseStudy(Section):
    """System 5's noise study (:mod:`asd_utils.studies.noise_study`): one small set per near SNR."""

    machine_types: list[str] = Field(min_length=1)
    near_snr_db: list[float] = Field(min_length=1)
    far_snr_db: Annotated[list[float], Field(min_length=2, max_length=2)]
    noise_path_ms: Annotated[list[PositiveFloat], Field(min_length=2, max_length=2)]
    noise_path_taps: PositiveInt
    n_train_source: Annotated[int, Field(ge=2)]
    n_train_target: PositiveInt
    n_test: PositiveInt
    clip_seconds: PositiveFloat
    data_seed: int
    seeds: list[int] = Field(min_length=1)
    steps: PositiveInt
    ablations: bool
    w1: bool  # the W1 arms: System 6 and System 3 with the other canceller


class Decision(Section):
    """:func:`asd_utils.evaluation.metrics.decision_threshold`."""

    rule: Literal["gamma", "empirical"]
    quantile: Annotated[float, Field(gt=0, lt=1)]


class Ensemble(Section):
    """System 4 (:func:`asd_utils.systems.ensemble.combine`); weights fixed here, never tuned."""

    members: list[Literal[ENSEMBLE_MEMBERS]] = Field(  # type: ignore[valid-type]
        min_length=1
    )
    weights: list[float]
    how: Literal["sum", "min", "max"]
    normalisation: Literal["zscore", "robust"]

    @model_validator(mode="after")
    def _one_weight_per_member(self):
        if len(self.weights) != len(self.members):
            raise ValueError(
                f"{len(self.weights)} weights for {len(self.members)} members; give one each"
            )
        return self


class Description(Section):
    name: str
    abbreviation: str


class Submission(Section):
    """:mod:`asd_utils.submission`."""

    label: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9-]*_[A-Za-z0-9-]+$")]
    systems: list[Literal[SYSTEM_NAMES]] = Field(min_length=1, max_length=4)  # type: ignore[valid-type]
    descriptions: dict[Literal[SYSTEM_NAMES], Description]  # type: ignore[valid-type]


class Profile(Section):
    """A whole profile."""

    # a folder name (outputs/<name>, data/synthetic/<name>): not "." or "..", nothing hidden
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")]
    # a run of sanity-check size (tiny data, a few steps: smoke, quick): its scores check the
    # machinery and say little of a machine; `asd detect` says so. A fact of a profile, so the
    # default is here: a profile is full-size unless it says otherwise.
    sanity_check: bool = Field(
        default=False, description="a run of sanity-check size: its scores check the machinery"
    )
    seed: int
    data: Data
    synth: Synth
    baseline: Baseline
    anc: Anc
    osscl: OSSCL
    beats_grl: BEATsGRL
    fusion: Fusion
    training_free: TrainingFree
    w1_beats: TrainingFree
    lora_beats: LoRABEATs
    backends: Backends
    noise_study: NoiseStudy
    decision: Decision
    ensemble: Ensemble
    submission: Submission
