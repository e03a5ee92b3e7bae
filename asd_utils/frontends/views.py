"""A clip as a network hears it: one microphone, both, or the near one denoised (System 3's
ANC as a ``preprocess``), as float32 waveforms (:func:`load_waveform`)."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch

from asd_utils.data import DataError, read_audio


def load_waveform(
    path: str | os.PathLike,
    channel: int | None = 0,
    preprocess: Callable[[np.ndarray], np.ndarray | torch.Tensor] | None = None,
) -> np.ndarray:
    """One clip as float32 (samples,): channel ``channel`` (2026: 0 near mic, 1 far mic), or
    ``preprocess(audio (channels, samples))``, e.g. :func:`asd_utils.frontends.anc.denoise`
    (System 3). ``channel=None``: both microphones, (2, samples) (System 5); a mono clip is an
    error."""
    audio = read_audio(path)
    if channel is None and preprocess is None:
        if audio.shape[0] < 2:
            raise DataError(f"{str(path)!r} is mono; both microphones (near, far) are needed")
        return audio[:2]
    if preprocess is not None:
        out = np.asarray(torch.as_tensor(preprocess(audio)).detach().cpu(), dtype=np.float32)
        if out.ndim != 1:
            raise ValueError(f"preprocess must return (samples,); got shape {out.shape}")
        return out
    if not 0 <= channel < audio.shape[0]:
        raise DataError(f"{str(path)!r} has {audio.shape[0]} channel(s); channel {channel} asked")
    return audio[channel]
