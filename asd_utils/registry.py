"""The one table of the systems there are: every module, the profile schema, the book and the
submission package read it.

A system is a name (the folder of its official files, the column of Table 2), the profile section
that configures it, what it reads of a clip, how it is made (``kind``), the chapter that shows it,
and whether it is the paper's. Adding a trained system is an entry here naming its recipe
(:mod:`asd_utils.systems.recipes`), a schema section and the profiles' sections; the stages
(:mod:`asd_utils.stages`) dispatch on ``kind`` and ask the recipe, not on names.

This module imports nothing heavy (no torch), so the schema, the book and the package may read it.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass

from pydantic import BaseModel

from asd_utils.errors import UserError

# what a system reads of a clip
NEAR, ANC, NEAR_FAR, W1 = "near", "anc", "near+far", "w1"
# the environment variables that name the official backbone weights (over a profile's checkpoint)
CHECKPOINT_ENV = {"eat": "EAT_CHECKPOINT", "beats": "BEATS_CHECKPOINT"}
# how a system is made, in the order a run makes them
KINDS = ("autoencoder", "fine-tuned", "training-free", "floor", "ensemble")


@dataclass(frozen=True)
class System:
    """One system of the house.

    ``section``: the profile section holding its settings (``None``: none of its own);
    ``reads``: ``near`` (channel 0), ``anc`` (the ANC-denoised near channel), ``w1`` (the near
    channel less the far one through a fixed per-bin filter, :func:`asd_utils.frontends.
    twochannel.w1`) or ``near+far``;
    ``kind``: how it is made (:data:`KINDS`): the autoencoder baseline, a backbone fine-tuned by
    the common training loop, a training-free one (a frozen encoder, no training), the log-mel
    floor (no model), or an ensemble of other systems' scores; ``chapter``: the notebook that
    makes it; ``paper``: a system of the XJU report (else beyond the paper); ``title``: a short
    line for the book and meta files;
    ``recipe``: a trained system's recipe (:func:`asd_utils.systems.recipes.of`): how its model,
    loss, classes and front end are built, its run key and its meta-file words.
    """

    name: str
    section: str | None
    reads: str
    kind: str
    chapter: str
    paper: bool
    title: str
    source: str = ""  # where a recipe beyond the paper comes from (cited in the meta file)
    recipe: str | type = ""  # a trained system's recipe: a class of asd_utils.systems.recipes
    # by name, a dotted "module.Class", or the class itself (asd_utils.systems.recipes.of)

    @property
    def needs_far(self) -> bool:
        """Whether the system needs the far microphone (channel 1): not on mono data. A frozen
        encoder on ``near+far`` (System 0) does not: on mono clips it keeps the near view."""
        if self.reads == NEAR_FAR:
            return self.kind != "training-free"
        return self.reads in (ANC, W1)

    @property
    def trainable(self) -> bool:
        """Whether the common training loop (:func:`asd_utils.training.train`) makes it."""
        return self.kind == "fine-tuned"


REGISTRY: dict[str, System] = {
    s.name: s
    for s in (
        System(
            "baseline-MSE",
            "baseline",
            NEAR,
            "autoencoder",
            "20_baseline_autoencoder",
            True,
            "the official autoencoder baseline, mean squared error",
        ),
        System(
            "baseline-MAHALA",
            "baseline",
            NEAR,
            "autoencoder",
            "20_baseline_autoencoder",
            True,
            "the official autoencoder baseline, selective Mahalanobis distance",
        ),
        System(
            "System 1",
            "osscl",
            NEAR,
            "fine-tuned",
            "30_osscl_training",
            True,
            "EAT fine-tuned with one-stage supervised contrastive learning (OSSCL)",
            recipe="OSSCL",
        ),
        System(
            "System 2",
            "beats_grl",
            NEAR,
            "fine-tuned",
            "40_beats_grl_training",
            True,
            "BEATs fine-tuned with a margin classifier and a gradient reversal layer",
            recipe="GRL",
        ),
        System(
            "System 3",
            "osscl",
            ANC,
            "fine-tuned",
            "30_osscl_training",
            True,
            "System 1 on the ANC-denoised near channel",
            recipe="OSSCL",
        ),
        System(
            "System 4",
            "ensemble",
            NEAR,
            "ensemble",
            "60_ensemble",
            True,
            "the normalised ensemble of its members' scores",
        ),
        System(
            "System 5",
            "fusion",
            NEAR_FAR,
            "fine-tuned",
            "35_two_channel_fusion",
            False,
            "EAT whose near channel attends to the far one (gated cross-attention), OSSCL",
            recipe="Fusion",
        ),
        System(
            "System 0",
            "training_free",
            NEAR_FAR,
            "training-free",
            "55_training_free",
            False,
            "a frozen pre-trained encoder on a view of both microphones, no training",
        ),
        System(
            "System 6",
            "w1_beats",
            W1,
            "training-free",
            "55_training_free",
            False,
            "frozen BEATs on W1 audio, RDP(4) band tokens, BEAM + VarMin: the training-free "
            "2026 state of the art",
            "kasahart/asd-experiments (W1, RDP), MERL's BEAM + VarMin (kasahart/dcase-asd-toolkit"
            ", docs/methods/beam_rdp_varmin.md)",
        ),
        System(
            "System 7",
            "lora_beats",
            W1,
            "fine-tuned",
            "45_lora_beats",
            False,
            "LoRA BEATs on W1 audio, pseudo-attributes where names have none, ASP + SCAdaCos + "
            "mixup, RDP(4) band features scored by BEAM + VarMin: the strongest public recipe",
            "kasahart/asd-experiments (reproduction/asd03: pseudo-attributes, LoRA BEATs, W1, RDP"
            "), ASDKit (TakuyaFujimura/dcase-asd-toolkit: LoRA, attentive statistics pooling, "
            "SCAdaCos), MERL's BEAM + VarMin",
            recipe="LoRASCAdaCos",
        ),
        System(
            "log-mel floor",
            None,
            NEAR,
            "floor",
            "55_training_free",
            False,
            "log-mel band statistics with no model, the floor every system should clear",
        ),
    )
}
# the names a profile may list (submission systems, ensemble members): every registered system
# but the floor, which is a yardstick, not a submission
SUBMITTABLE = tuple(name for name, s in REGISTRY.items() if s.kind != "floor")


@dataclass(frozen=True)
class Ablation:
    """A trained system run again with part of its recipe switched off: ``system`` (its
    registry name) with ``overrides`` replacing keys of its loss settings, made when its
    section's boolean ``flag`` is set; ``label`` says what changed. Its :attr:`name` is the
    folder of its official files and its column in the tables."""

    system: str
    label: str
    overrides: dict
    flag: str

    @property
    def name(self) -> str:
        """``"System 2 (lambda 0)"``: the system's name, the label in parentheses."""
        return f"{self.system} ({self.label})"


ABLATIONS: dict[str, Ablation] = {
    a.name: a
    for a in (Ablation("System 2", "lambda 0", {"lambda_max": 0.0}, "ablation_lambda_zero"),)
}


def ablation(name: str) -> Ablation | None:
    """The ablation named ``name``; None for any other name."""
    return ABLATIONS.get(name)


def ablations_of(system: str) -> list[Ablation]:
    """The ablations of ``system``, in :data:`ABLATIONS` order."""
    return [a for a in ABLATIONS.values() if a.system == system]


class UnknownSystem(UserError, KeyError):
    """A system name the registry does not hold (the message suggests the closest)."""


def get(name: str) -> System:
    """The registry entry of ``name``; an ablation's (:data:`ABLATIONS`) is its system's. An
    unknown name is :class:`UnknownSystem`, suggesting a near one (``system 1``: "System 1")."""
    base = ABLATIONS[name].system if name in ABLATIONS else name
    if base not in REGISTRY:
        folded = {known.casefold(): known for known in REGISTRY}
        close = [folded[base.casefold()]] if base.casefold() in folded else []
        close = close or difflib.get_close_matches(base, list(REGISTRY), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownSystem(f"unknown system {name!r}{hint} (known: {', '.join(REGISTRY)})")
    return REGISTRY[base]


def of_kind(*kinds: str) -> list[str]:
    """The names of the systems of these kinds, in registry order."""
    return [name for name, s in REGISTRY.items() if s.kind in kinds]


def one_per_recipe(names=None) -> list[str]:
    """The first trained system of each recipe among ``names`` (default: all), in their order:
    what a benchmark measures by default, so a new recipe joins it unasked."""
    first: dict = {}
    for name in of_kind("fine-tuned") if names is None else names:
        if get(name).trainable:
            first.setdefault(get(name).recipe, name)
    return list(first.values())


def paper() -> list[str]:
    """The paper's systems, in the order of its Table 2."""
    return [name for name, s in REGISTRY.items() if s.paper]


def beyond() -> list[str]:
    """The systems beyond the paper, in registry order."""
    return [name for name, s in REGISTRY.items() if not s.paper]


def ordered(names) -> list[str]:
    """``names`` in the order the book shows them: the paper's, then beyond it, then the rest
    (ablations such as "System 2 (lambda 0)") in their own order."""
    names = list(names)
    known = [n for n in [*paper(), *beyond()] if n in names]
    return known + [n for n in names if n not in known]


def settings(profile: BaseModel, name: str) -> BaseModel:
    """The typed section of system ``name`` in ``profile`` (the validated
    :class:`asd_utils.config.schema.Profile`), with the backbone checkpoint resolved:
    ``$EAT_CHECKPOINT`` / ``$BEATS_CHECKPOINT`` over the profile's ``checkpoint``; "" = none."""
    system = get(name)
    if system.section is None:
        raise KeyError(f"{system.name} has no profile section")
    section = getattr(profile, system.section)
    backbone = getattr(section, "backbone", None)
    if backbone is None:
        return section
    env = os.environ.get(CHECKPOINT_ENV[backbone], "")
    return section.model_copy(update={"checkpoint": env or section.checkpoint or ""})


def has_section(profile: BaseModel, section: str | None) -> bool:
    """Whether ``profile`` holds the section ``section`` (a profile made in a test may add one)."""
    return section is not None and getattr(profile, section, None) is not None


# the profile sections each kind of system is made with, beside its own section
_MADE_WITH = {
    "autoencoder": ("seed", "decision"),
    "fine-tuned": ("seed", "decision", "backends"),
    "training-free": ("seed", "decision", "backends"),
    "floor": ("seed", "decision", "backends", "training_free"),
    "ensemble": ("decision",),
}


def made_with(profile: BaseModel, name: str) -> dict:
    """The settings system ``name`` is made with under ``profile``: its own section (checkpoint
    resolved, :func:`settings`), the ANC's for a system that reads it, and the shared sections
    its kind depends on (seed, decision rule, back ends). Kept in its ``system.json`` so that a
    later stage can tell a profile changed since (:func:`changed_settings`)."""
    system = get(name)
    keys = [*_MADE_WITH[system.kind], *(["anc"] if system.reads == ANC else [])]
    made = {key: _plain(getattr(profile, key)) for key in keys if has_section(profile, key)}
    if has_section(profile, system.section):
        made[system.section] = _plain(settings(profile, name))
    return made


def _plain(value):
    """A section as its record holds it (:meth:`asd_utils.config.schema.Section.plain`); a
    number as is."""
    return value.plain() if isinstance(value, BaseModel) else value


def changed_settings(made: dict, now: dict, keys=None) -> list[str]:
    """The key paths (``osscl.train.steps``) whose values differ between two :func:`made_with`
    records, limited to the top-level ``keys`` (default: all)."""
    found = []
    for key in sorted(set(made) | set(now)):
        if keys is not None and key not in keys:
            continue
        before, after = made.get(key), now.get(key)
        if isinstance(before, dict) and isinstance(after, dict):
            found += [f"{key}.{path}" for path in changed_settings(before, after)]
        elif before != after:
            found.append(key)
    return found
