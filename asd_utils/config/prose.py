"""Profile sections in words, for the meta files: the phrases the submission's own describers
(:mod:`asd_utils.submission`) and the trained systems' recipes
(:mod:`asd_utils.systems.recipes`) share. Torch-free; each function takes a typed section
(:mod:`asd_utils.config.schema`, checkpoint resolved or not) and returns one phrase."""

from __future__ import annotations

import os

from asd_utils import registry
from asd_utils.config.schema import FineTuned, TrainingFree

Backboned = FineTuned | TrainingFree  # a section with a backbone

FBANK = "log-mel filterbank (Kaldi fbank, 128 bins, 25 ms window, 10 ms hop)"
NEAR = "near microphone (channel 0) of the stereo clip"
BACKBONE_NAMES = {"eat": "EAT", "beats": "BEATs"}


def checkpoint(section: Backboned) -> str:
    """The backbone checkpoint a profile section resolves to (environment over profile)."""
    env = registry.CHECKPOINT_ENV.get(section.backbone, "")
    return os.environ.get(env, "") or section.checkpoint


def embeddings(section: Backboned) -> str:
    """``"BEATs (base), from the official pre-trained checkpoint (AudioSet)"`` or random."""
    backbone = BACKBONE_NAMES.get(section.backbone, section.backbone)
    weights = (
        "from the official pre-trained checkpoint (AudioSet)"
        if checkpoint(section)
        else "from random weights (no pre-trained checkpoint configured)"
    )
    return f"{backbone} ({section.size}), {weights}"


def augmentation(section: FineTuned) -> str | None:
    """SpecAugment, crops, target repeats (and mixup where the loop mixes); None: none."""
    time, freq = section.train.spec_augment_time, section.train.spec_augment_freq
    parts = [f"SpecAugment (time mask {time}, frequency mask {freq})"] if time or freq else []
    if section.crop_seconds:
        parts.append(f"random {section.crop_seconds} s crops")
    if section.target_repeats > 1:
        parts.append(f"target-domain clips repeated {section.target_repeats}x")
    return "; ".join(parts) or None


def training(section: FineTuned, score: str | None = None) -> str:
    """Steps, batch, learning rate, EMA; then how a clip is scored (default: cosine KNN)."""
    train = section.train
    score = score or (
        f"cosine KNN distance (k = {section.knn_k}) to the training "
        "embeddings, the smaller of the source and target distances"
    )
    return (
        f"{train.steps} steps, batch {train.batch_size} x "
        f"{train.grad_accumulation} accumulation, learning rate "
        f"{train.learning_rate}, EMA weights (decay {train.ema_decay}); "
        f"anomaly score: {score}"
    )
