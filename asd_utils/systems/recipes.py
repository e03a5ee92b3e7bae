"""One recipe per kind of trained system (issue 33, item 2; ASDKit names a class in its config).

A registry entry names its recipe (``registry.System.recipe``: a class of this module by name,
a dotted ``module.Class``, or the class itself); :func:`of` makes it. A recipe knows, for its
system and a profile: the section (:meth:`Recipe.settings`), the front end (channel or view),
the classes of the training clips, the model and loss, the parts of the run-folder key, the
model that embeds for scoring and its frequency bands, and the words of the meta file. The
stages, :mod:`asd_utils.systems`, the submission and the studies ask the recipe; nothing
branches on a system or section name.

| recipe          | systems | backbone, head                  | loss            | classes      |
|-----------------|---------|---------------------------------|-----------------|--------------|
| :class:`OSSCL`  | 1, 3    | EAT (or BEATs), CLS + projection | OSSCL          | names        |
| :class:`GRL`    | 2       | BEATs, mean tokens + projection | margin + GRL    | names × domain|
| :class:`Fusion` | 5       | EAT attending to the far channel| OSSCL           | names        |
| :class:`LoRASCAdaCos` | 7 | LoRA BEATs, ASP + projection   | SCAdaCos (+ mixup) | ``auto`` |

Adding a fine-tuned system: a subclass here (or anywhere, named by a dotted path), a registry
entry naming it, a schema section and the profiles' sections.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json

import numpy as np
import pandas as pd
import torch
from torch import nn

from asd_utils import data, registry
from asd_utils.config import prose
from asd_utils.config.schema import ClassSettings, LoRABEATs, Profile, Section
from asd_utils.frontends import anc, twochannel
from asd_utils.models import lora
from asd_utils.models.beats import BEATs, BEATsConfig
from asd_utils.models.eat import EAT, EATConfig
from asd_utils.models.frozen import FrozenEncoder
from asd_utils.models.fusion import FusionBackbone
from asd_utils.models.heads import EmbeddingModel, PooledEmbeddingModel
from asd_utils.models.losses import GRLLoss, OSSCLLoss, SCAdaCosLoss
from asd_utils.systems import classes as class_schemes

# section keys that change the scores, not the weights (not in the run key): an ablation's flag
# asks for another run, in its own folder
SCORING = frozenset({"knn_k", "embed_batch_size", *(a.flag for a in registry.ABLATIONS.values())})


def build_backbone(kind: str, size: str = "tiny", checkpoint: str = "") -> nn.Module:
    """EAT or BEATs: from official weights when ``checkpoint`` names them, else a random-weight
    ``size`` config ("tiny" or "base"). EAT keeps each clip's length (no 10.24 s pad/crop)."""
    if kind == "eat":
        if checkpoint:
            return EAT.from_pretrained(checkpoint, target_length=None).train()
        return EAT(getattr(EATConfig, size)(), target_length=None)
    if kind == "beats":
        if checkpoint:
            return BEATs.from_checkpoint(checkpoint).train()
        return BEATs(getattr(BEATsConfig, size)())
    raise ValueError(f"unknown backbone {kind!r}; choose eat or beats")


def _canceller(profile: Profile) -> str:
    """System 3's canceller (the ``anc`` section's ``canceller``)."""
    return profile.anc.canceller


_FEATURES: dict[str, np.ndarray] = {}  # pseudo-attribute features by key, once per process


def _features_key(parts: list) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _scheme_usage(scheme: ClassSettings) -> str:
    """The meta file's ``attribute_usage`` of a section with a class scheme."""
    names = "machine type x section x attribute string" + (" x domain" if scheme.by_domain else "")
    clusters = (
        f"{scheme.method} clusters of frozen features of the training clips only "
        f"({scheme.source_clusters} source, {scheme.target_clusters} target)"
    )
    where = {
        "names": f"{names} of the file names",
        "auto": f"{names} where file names carry attributes; where they do not, {clusters}",
        "pseudo": f"pseudo-attributes for every machine type: {clusters}",
    }
    return f"classes by scheme '{scheme.scheme}': {where[scheme.scheme]}"


def _denoise(audio: np.ndarray, **options) -> np.ndarray:
    """(channels, samples) → denoised near channel (samples,), float32."""
    return anc.denoise(torch.from_numpy(audio), **options).numpy().astype(np.float32)


class Recipe:
    """The recipe of one trained system (``entry``, its registry entry). Subclasses set
    :meth:`loss` and may change any other step; the defaults are System 1's."""

    kind = "Recipe"
    scoring = SCORING  # section keys that change the scores, not the weights

    def __init__(self, entry: registry.System):
        self.entry = entry

    def settings(self, profile: Profile) -> Section:
        """The system's typed section, the backbone checkpoint resolved."""
        return registry.settings(profile, self.entry.name)

    def front_end(self, profile: Profile):
        """``(channel, preprocess, preprocess_key)``: channel 0 (near), both (``near+far``), the
        denoised near channel (the profile's ``anc``: its ``canceller``, the adaptive FBLMS with
        its settings or the fixed W1), or a two-channel view (``w1``)."""
        reads = self.entry.reads
        if reads == registry.NEAR_FAR:
            return None, None, "near+far"
        if reads == registry.ANC and _canceller(profile) == "w1":  # the fixed canceller
            return None, twochannel.preprocess("w1"), "w1"
        if reads == registry.ANC:
            options = anc.denoiser_settings(profile.anc)
            key = "anc:" + ",".join(f"{k}={v}" for k, v in sorted(options.items()))
            return 0, functools.partial(_denoise, **options), key
        if reads in twochannel.VIEWS and reads != registry.NEAR:
            return None, twochannel.preprocess(reads), reads
        return 0, None, None

    def by_domain(self, settings: Section) -> bool:
        """Whether name classes carry the domain (the section's ``classes_by_domain``)."""
        return settings.classes_by_domain

    def scheme(self, settings: Section) -> ClassSettings | None:
        """The section's class scheme (its ``classes`` block), or None: the name classes."""
        return getattr(settings, "classes", None)

    def classes(self, profile: Profile, table: pd.DataFrame, progress: bool = False):
        """The classes of the training rows of ``table`` (:class:`~asd_utils.systems.classes.
        Classes`; a table without ``split`` is all training clips): machine type × section ×
        attribute string (× domain) from the names, or by the section's class scheme
        (:meth:`scheme`; clusters of :meth:`features` of each clip once, however often
        ``table`` lists it, e.g. repeated target clips)."""
        train = table if "split" not in table else table[table["split"] == "train"]
        train = train.reset_index(drop=True)
        settings = self.settings(profile)
        scheme = self.scheme(settings)
        if scheme is None:
            ids, names = data.attribute_classes(train, by_domain=self.by_domain(settings))
            return class_schemes.Classes(np.asarray(ids), list(names), train, ())
        clips = train.drop_duplicates("path").reset_index(drop=True).assign(split="train")
        features = None
        if scheme.scheme != "names":
            features = self.features(settings, clips, profile.seed, progress)
        made = class_schemes.make_classes(clips, features, scheme, seed=profile.seed)
        if len(clips) == len(train):
            return made
        rows = pd.Index(clips["path"]).get_indexer(train["path"])
        return class_schemes.Classes(made.ids[rows], made.names, train, made.clustered)

    def features(self, settings: Section, train: pd.DataFrame, seed: int, progress: bool = False):
        """Features of the training clips for pseudo-attributes: the frozen backbone's (official
        weights) time-mean band features of the system's view, or without weights the log-mel
        floor's statistics of the near channel
        (:func:`asd_utils.systems.classes.logmel_features`); cached once per process."""
        if not settings.checkpoint:
            key = _features_key(["logmel", list(train["path"])])
            if key not in _FEATURES:
                _FEATURES[key] = class_schemes.logmel_features(train, progress=progress)
            return _FEATURES[key]
        return self.backbone_features(settings, train, seed, progress)

    def backbone_features(self, settings: Section, train: pd.DataFrame, seed: int, progress=False):
        """The frozen base's time-mean band features of the training clips' view, (N, bands ·
        D): the system's own front end where it is a view (``near``, ``w1``), else near."""
        key = _features_key(
            [
                settings.backbone,
                settings.size,
                settings.checkpoint,
                seed,
                self.entry.reads,
                list(train["path"]),
            ]
        )
        if key not in _FEATURES:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                encoder = FrozenEncoder(Recipe.backbone(self, settings), [-1], "time_mean")
            channel = (
                self.entry.reads if self.entry.reads in (registry.NEAR, registry.W1) else "near"
            )
            _FEATURES[key] = class_schemes.frozen_features(
                encoder, train, channel, progress=progress
            )
        return _FEATURES[key]

    def backbone(self, settings: Section) -> nn.Module:
        """The encoder that trains (random weights drawn from the caller's seed)."""
        return build_backbone(settings.backbone, settings.size, settings.checkpoint)

    def model(self, settings: Section) -> nn.Module:
        """Backbone and head, as :func:`asd_utils.training.train` takes them."""
        return EmbeddingModel(self.backbone(settings), projection_dim=settings.projection_dim)

    def loss(self, settings: Section, model: nn.Module, names: list[str], train, overrides=None):
        """The loss over ``names`` (``overrides`` replace keys of the section's ``loss``)."""
        raise NotImplementedError

    def key(self, profile: Profile, classes) -> dict:
        """Parts of the run-folder key beside the section, front end, seed and clips: the class
        assignment where the section has a class scheme
        (:func:`asd_utils.systems.classes.assignment_key`)."""
        if self.scheme(self.settings(profile)) is None:
            return {}
        return {"classes": class_schemes.assignment_key(classes)}

    def embedder(self, model: nn.Module, settings: Section) -> nn.Module:
        """What embeds a clip for scoring (``embed(waveform, lengths)``): the trained model."""
        return model

    def bands(self, settings: Section) -> int:
        """Frequency bands in an embedding (1: one vector per clip)."""
        return 1

    def info(self, model: nn.Module) -> dict:
        """Extra facts for ``system.json`` from the trained model."""
        return {}

    def describe(self, system: str, profile: Profile) -> tuple[dict, list[str]]:
        """``(meta-file description fields, backbones with a checkpoint)``."""
        raise NotImplementedError


class OSSCL(Recipe):
    """Systems 1 and 3 (the paper): EAT, sub-center ArcFace + supervised contrastive loss."""

    kind = "OSSCL"

    def loss(self, settings, model, names, train, overrides=None):
        options = {**settings.loss.model_dump(), **(overrides or {})}
        return OSSCLLoss(len(names), model.embed_dim, **options)

    def describe(self, system: str, profile: Profile) -> tuple[dict, list[str]]:
        section = self.settings(profile)
        loss = section.loss
        fields = {
            "acoustic_features": prose.FBANK,
            "data_augmentation": prose.augmentation(section),
            "embeddings": prose.embeddings(section),
            "machine_learning_method": (
                "fine-tuned audio transformer, OSSCL: sub-center ArcFace (margin "
                f"{loss.margin}, scale {loss.scale}, {loss.sub_centers} "
                "sub-centers) + supervised contrastive loss (temperature "
                f"{loss.temperature}); {prose.training(section)}"
            ),
            "aggregation_method": "CLS token of the EAT encoder",
            "domain_generalization_method": (
                "target-domain clips repeated in training; KNN distance taken separately to "
                "source and target training clips (minimum)"
                if section.target_repeats > 1
                else "KNN distance taken separately to source and target training clips (minimum)"
            ),
            "attribute_usage": (
                "classes = machine type x section x attribute string of the file names"
                + (" x domain" if section.classes_by_domain else "")
                + " (machine types without attributes: one class per section"
                + (" and domain)" if section.classes_by_domain else ")")
                if self.scheme(section) is None
                else _scheme_usage(self.scheme(section))
            ),
            "external_data_usage": (
                "pre-trained EAT checkpoint" if prose.checkpoint(section) else None
            ),
        }
        if self.entry.reads == registry.ANC and _canceller(profile) == "w1":
            fields["front_end"] = (
                "fixed far-microphone canceller W1: per frequency bin one complex coefficient "
                "fitted over the clip (STFT 1024/512), the near channel less the filtered far one"
            )
        elif self.entry.reads == registry.ANC:
            options = profile.anc
            fields["front_end"] = (
                "adaptive noise canceller (frequency-domain block LMS): primary = near "
                "microphone, reference = far microphone, "
                f"{options.filter_length} taps, step size {options.step_size}, "
                f"block {options.block_size} samples, leakage {options.leakage}; "
                "the denoised near channel is the input"
            )
        return fields, [section.backbone] if prose.checkpoint(section) else []


class Fusion(OSSCL):
    """System 5: System 1's recipe on an encoder whose near channel attends to the far one."""

    kind = "Fusion"

    def backbone(self, settings: Section) -> nn.Module:
        return FusionBackbone(
            super().backbone(settings),
            settings.blocks,
            settings.width,
            settings.heads,
            settings.freeze_backbone,
        )

    def info(self, model: nn.Module) -> dict:
        return {"gates": model.backbone.gates()}

    def describe(self, system: str, profile: Profile) -> tuple[dict, list[str]]:
        fields, checkpoints = super().describe(system, profile)
        section = self.settings(profile)
        fields["front_end"] = "near and far microphones, fused inside the encoder"
        fields["machine_learning_method"] = (
            f"gated cross-attention from the near to the far channel after blocks "
            f"{section.blocks} (width {section.width}, {section.heads} "
            f"heads); {fields['machine_learning_method']}"
        )
        return fields, checkpoints


class GRL(Recipe):
    """System 2 (the paper): BEATs, margin classifier + domain classifier behind a gradient
    reversal layer; classes always carry the domain (the domain head needs it)."""

    kind = "GRL"

    def by_domain(self, settings: Section) -> bool:
        return True

    def loss(self, settings, model, names, train, overrides=None):
        attribute = [n.rsplit("/", 1)[0] for n in names]
        labels = np.unique(attribute, return_inverse=True)[1]
        domains = np.array([0 if n.endswith("/source") else 1 for n in names])
        return GRLLoss(
            labels,
            domains,
            model.embed_dim,
            total_calls=train.steps * train.grad_accumulation,
            **{**settings.loss.model_dump(), **(overrides or {})},
        )

    def describe(self, system: str, profile: Profile) -> tuple[dict, list[str]]:
        section = self.settings(profile)
        loss = section.loss
        ablation = registry.ablation(system) is not None  # lambda 0: the GRL switched off
        fields = dict(
            acoustic_features=prose.FBANK,
            data_augmentation=prose.augmentation(section),
            embeddings=prose.embeddings(section),
            machine_learning_method=(
                f"fine-tuned BEATs, margin classifier (ArcFace margin {loss.margin}, "
                f"scale {loss.scale}) + domain classifier behind a gradient reversal "
                f"layer (lambda ramped to {0 if ablation else loss.lambda_max}); "
                f"{prose.training(section)}"
            ),
            aggregation_method="mean of the BEATs encoder's output tokens",
            domain_generalization_method=(
                "none (ablation: gradient reversal switched off, lambda = 0)"
                if ablation
                else "adversarial domain (source/target) classifier behind a gradient reversal "
                "layer"
            ),
            attribute_usage=(
                "classes = machine type x section x attribute string x domain"
                if self.scheme(section) is None
                else _scheme_usage(self.scheme(section))
            )
            + "; the domain labels train the gradient-reversal domain classifier",
            external_data_usage=(
                "pre-trained BEATs checkpoint" if prose.checkpoint(section) else None
            ),
        )
        return fields, ["beats"] if prose.checkpoint(section) else []


class BandEmbedder(nn.Module):
    """A trained LoRA backbone, adapters merged, as a frozen encoder of its last block pooled
    per frequency band by RDP(``gamma``) (:class:`asd_utils.models.frozen.FrozenEncoder`):
    ``embed(waveform (B, samples), lengths)`` → (B, 8 · D), band-major."""

    def __init__(self, backbone: nn.Module, gamma: float):
        super().__init__()
        self.encoder = FrozenEncoder(lora.merged(backbone), [-1], "time_rdp", gamma)
        self.n_freq = self.encoder.n_freq

    def cache_settings(self) -> dict:
        """The block, pooling and gamma: part of the embedding cache key beside the weights."""
        return self.encoder.cache_settings()

    @torch.no_grad()
    def embed(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder.embed(waveform, lengths)[:, -1]


class LoRASCAdaCos(Recipe):
    """System 7, the strongest public recipe (kasahart/asd-experiments ``reproduction/asd03``
    after ASDKit): LoRA on a frozen BEATs (:func:`asd_utils.models.lora.add_lora`), attentive
    statistics pooling + projection (:class:`~asd_utils.models.heads.PooledEmbeddingModel`),
    SCAdaCos over classes made by the section's ``classes`` scheme (pseudo-attributes: k-means
    of the frozen base's band-mean features of the system's own view of the TRAINING clips);
    scored on RDP(``gamma``) band features of the merged backbone's last block, before the
    pooling and projection."""

    kind = "LoRA-SCAdaCos"
    scoring = SCORING | {"backend", "gamma"}

    def features(self, settings: LoRABEATs, train: pd.DataFrame, seed: int, progress=False):
        """The frozen base's features (:meth:`Recipe.backbone_features`), random-init ones too."""
        return self.backbone_features(settings, train, seed, progress)

    def backbone(self, settings: LoRABEATs) -> nn.Module:
        options = settings.lora
        return lora.add_lora(
            super().backbone(settings),
            options.rank,
            options.alpha,
            options.dropout,
            options.targets,
        )

    def model(self, settings: LoRABEATs) -> nn.Module:
        return PooledEmbeddingModel(self.backbone(settings), settings.projection_dim)

    def loss(self, settings, model, names, train, overrides=None):
        options = {**settings.loss.model_dump(), **(overrides or {})}
        return SCAdaCosLoss(len(names), settings.projection_dim, **options)

    def embedder(self, model: nn.Module, settings: LoRABEATs) -> nn.Module:
        return BandEmbedder(model.backbone, settings.gamma)

    def bands(self, settings: LoRABEATs) -> int:
        return 8  # BEATs' frequency patches per time step

    def describe(self, system: str, profile: Profile) -> tuple[dict, list[str]]:
        section = self.settings(profile)
        options, loss = section.lora, section.loss
        scheme = section.classes
        alpha, prob = (getattr(section.train, k) or 0 for k in ("mixup_alpha", "mixup_prob"))
        backend = section.backend
        fields = dict(
            acoustic_features=prose.FBANK,
            data_augmentation="; ".join(
                p
                for p in (
                    prose.augmentation(section),
                    f"mixup of the waveforms, each clip with probability {prob} (w ~ U(0, 1) "
                    "per clip)"
                    if prob
                    else f"mixup of the waveforms (lambda ~ Beta({alpha}, {alpha}) per batch)"
                    if alpha
                    else None,
                )
                if p
            )
            or None,
            front_end=(
                "W1: the near channel less the far one through a fixed per-bin complex filter "
                "fitted over the clip (STFT 1024/512)"
                if self.entry.reads == registry.W1
                else prose.NEAR
            ),
            embeddings=prose.embeddings(section),
            machine_learning_method=(
                f"LoRA fine-tuning (rank {options.rank}, alpha {options.alpha}, dropout "
                f"{options.dropout} on {', '.join(options.targets)}; the base frozen), "
                "attentive statistics pooling + "
                f"{section.projection_dim}-d projection, SCAdaCos ({loss.sub_clusters} "
                f"sub-clusters); "
                + prose.training(
                    section,
                    f"{backend} back end on relative-deviation pooled (gamma "
                    f"{section.gamma}) band features of the merged backbone's last block",
                )
                + f" (after {self.entry.source})"
            ),
            aggregation_method=(
                f"last block's output tokens, relative-deviation pooling over time per "
                f"frequency band (gamma {section.gamma}, 8 bands)"
            ),
            domain_generalization_method=(
                f"{backend}: separate source and target reference distances"
            ),
            attribute_usage=(
                f"classes by scheme '{scheme.scheme}': machine type x section x attribute "
                "string x domain where file names carry attributes; where they do not, "
                f"{scheme.method} clusters of frozen features of the training clips only "
                f"({scheme.source_clusters} source, {scheme.target_clusters} target)"
            ),
            external_data_usage=(
                "pre-trained BEATs checkpoint" if prose.checkpoint(section) else None
            ),
        )
        return fields, ["beats"] if prose.checkpoint(section) else []


RECIPES = {cls.__name__: cls for cls in (OSSCL, GRL, Fusion, LoRASCAdaCos)}


def recipe_class(entry: registry.System) -> type[Recipe]:
    """The class ``entry.recipe`` names: one of :data:`RECIPES`, a dotted ``module.Class``, or
    a class given as is."""
    named = entry.recipe
    if isinstance(named, type):
        return named
    if named in RECIPES:
        return RECIPES[named]
    module, _, name = str(named).rpartition(".")
    if not module:
        raise KeyError(f"{entry.name} names no known recipe ({named!r}; known: {list(RECIPES)})")
    return getattr(importlib.import_module(module), name)


def of(system: str) -> Recipe:
    """The recipe of a trained ``system`` (an ablation's, :data:`asd_utils.registry.ABLATIONS`, is
    its system's)."""
    return recipe_class(registry.get(system))(registry.get(system))


def kind(system: str) -> str:
    """The kind of recipe a trained system is made by (``"OSSCL"``, ``"LoRA-SCAdaCos"`` …)."""
    return recipe_class(registry.get(system)).kind
