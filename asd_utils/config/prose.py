"""Profile sections in words, for the meta files: the phrases the submission's own describers
(:mod:`asd_utils.submission`) and the trained systems' recipes
(:mod:`asd_utils.systems.recipes`) share. Torch-free; each function takes a section mapping
(checkpoint resolved or not) and returns one phrase."""

from __future__ import annotations

import os

from asd_utils import registry

FBANK = "log-mel filterbank (Kaldi fbank, 128 bins, 25 ms window, 10 ms hop)"
NEAR = "near microphone (channel 0) of the stereo clip"
BACKBONE_NAMES = {"eat": "EAT", "beats": "BEATs"}


def checkpoint(section: dict) -> str:
    """The backbone checkpoint a profile section resolves to (environment over profile)."""
    env = registry.CHECKPOINT_ENV.get(section.get("backbone", ""), "")
    return os.environ.get(env, "") or (section.get("checkpoint") or "")


def embeddings(section: dict) -> str:
    """``"BEATs (base), from the official pre-trained checkpoint (AudioSet)"`` or random."""
    backbone = BACKBONE_NAMES.get(section.get("backbone", ""), str(section.get("backbone")))
    weights = (
        "from the official pre-trained checkpoint (AudioSet)"
        if checkpoint(section)
        else "from random weights (no pre-trained checkpoint configured)"
    )
    return f"{backbone} ({section.get('size', '?')}), {weights}"


def augmentation(section: dict) -> str | None:
    """SpecAugment, crops, target repeats (and mixup where the loop mixes); None: none."""
    train = section.get("train", {})
    time, freq = train.get("spec_augment_time"), train.get("spec_augment_freq")
    parts = [f"SpecAugment (time mask {time}, frequency mask {freq})"] if time or freq else []
    if section.get("crop_seconds"):
        parts.append(f"random {section['crop_seconds']} s crops")
    if section.get("target_repeats", 1) > 1:
        parts.append(f"target-domain clips repeated {section['target_repeats']}x")
    return "; ".join(parts) or None


def training(section: dict, score: str | None = None) -> str:
    """Steps, batch, learning rate, EMA; then how a clip is scored (default: cosine KNN)."""
    train = section.get("train", {})
    score = score or (
        f"cosine KNN distance (k = {section.get('knn_k', 1)}) to the training "
        "embeddings, the smaller of the source and target distances"
    )
    return (
        f"{train.get('steps')} steps, batch {train.get('batch_size')} x "
        f"{train.get('grad_accumulation')} accumulation, learning rate "
        f"{train.get('learning_rate')}, EMA weights (decay {train.get('ema_decay')}); "
        f"anomaly score: {score}"
    )
