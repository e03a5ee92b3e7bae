"""Mixup with a probability per clip, as ASDKit's ``asdkit.augmentations.Mixup`` (the public LoRA
recipe's p = 0.5): each clip of a batch is mixed with probability ``prob`` with a partner of
the same batch, ``w · x + (1 − w) · x[perm]``, w ~ U(0, 1) drawn per clip; the others keep
``w = 1``. The loss mixes the one-hot targets with the same w
(:func:`asd_utils.models.losses.soft_targets`). The training loop's Beta(α, α) mixup with one
λ per micro-batch (:func:`asd_utils.training.mixup`) is the OS-SCL variant.
"""

from __future__ import annotations

import numpy as np
import torch


def mixup(
    inputs: torch.Tensor,
    lengths: torch.Tensor | None,
    target: torch.Tensor,
    prob: float = 0.5,
    seed=None,
) -> tuple[torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, torch.Tensor]]:
    """Mix a batch of waveforms (B, samples) or features (B, …) along the batch.

    Returns ``(mixed, lengths, (target[perm], w))``: ``w`` (B,) float32, 1 where a clip is
    not mixed; ``lengths`` (valid samples) become the longer of the two clips where mixed.
    ``seed``: a numpy seed (the loop passes the micro-batch position, so a resumed run draws the
    same); the signature is the loop's :func:`asd_utils.training.mixup`'s, ``prob`` for α.
    """
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"mixup prob must be in [0, 1], not {prob}")
    rng = np.random.default_rng(seed)
    n = len(inputs)
    weight = rng.random(n)
    perm = rng.permutation(n)
    weight = np.where(rng.random(n) < prob, weight, 1.0).astype(np.float32)
    w = torch.from_numpy(weight).to(inputs.device)
    perm = torch.from_numpy(perm).to(inputs.device)
    shape = (-1,) + (1,) * (inputs.ndim - 1)
    mixed = (
        w.to(inputs.dtype).view(shape) * inputs
        + (1 - w.to(inputs.dtype)).view(shape) * inputs[perm]
    )
    if lengths is not None:
        lengths = torch.where(w < 1, torch.maximum(lengths, lengths[perm]), lengths)
    return mixed, lengths, (target[perm], w)
