"""Pieces the BEATs and EAT backbones share: masks, pooling, path and state-dict checks.

Masks follow one convention throughout: a boolean tensor with True where a frame or token is
*valid* (holds the clip), False where it is batch padding. Attention masks built from them go
to :func:`torch.nn.functional.scaled_dot_product_attention`, as a boolean mask (True = may
attend) or an additive float mask (0 = attend, a large negative number = do not).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from asd_utils.errors import UserError

SAMPLE_RATE = 16000
FRAME_LENGTH = 400  # 25 ms at 16 kHz: the Kaldi fbank frame both backbones use
FRAME_SHIFT = 160  # 10 ms


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that exists but cannot be used: wrong kind of file, wrong keys or shapes."""


# --- paths -----------------------------------------------------------------------------------


def require_file(path: str | os.PathLike, expected: str) -> Path:
    """``path`` as a :class:`~pathlib.Path` if it is an existing file, else a clear error.

    ``expected`` says what the file should be ("a BEATs checkpoint (.pt)"), for the message.
    Raises FileNotFoundError (nothing there) or IsADirectoryError (a folder).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file; expected {expected}")
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a directory; expected {expected}")
    return path


def require_dir(path: str | os.PathLike, expected: str) -> Path:
    """``path`` as a :class:`~pathlib.Path` if it is an existing folder, else a clear error.

    Raises FileNotFoundError (nothing there) or NotADirectoryError (a file).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such directory; expected {expected}")
    if not path.is_dir():
        raise NotADirectoryError(f"{path}: is a file, not a directory; expected {expected}")
    return path


# --- strict state-dict loading ---------------------------------------------------------------


def load_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state_dict`` into ``module``, all keys and shapes exactly, or raise CheckpointError.

    The error names ``source`` (a path) and lists every missing key, every unexpected key and
    every shape mismatch, so that a wrong checkpoint is recognisable from the message alone.
    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [
        f"{key}: checkpoint {tuple(state_dict[key].shape)}, model {tuple(expected[key].shape)}"
        for key in sorted(set(expected) & set(state_dict))
        if tuple(state_dict[key].shape) != tuple(expected[key].shape)
    ]
    if missing or unexpected or mismatched:
        parts = [f"{source}: the state dict does not match the model"]
        for title, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        ):
            if items:
                parts.append(f"{len(items)} {title}:\n  " + "\n  ".join(items))
        raise CheckpointError("\n".join(parts))
    module.load_state_dict(state_dict, strict=True)


# --- waveforms, frames and tokens --------------------------------------------------------------


def check_waveform(
    waveform: torch.Tensor, lengths: torch.Tensor | None, min_samples: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a (batch, samples) waveform and its valid lengths; return both as tensors.

    ``lengths`` (batch,) integer sample counts, None = every clip fills the batch. Each must be
    in [``min_samples``, samples]. Returns (waveform as float, lengths as int64 on its device).
    """
    waveform = torch.as_tensor(waveform)
    if waveform.dim() != 2:
        raise ValueError(f"waveform must be (batch, samples), got shape {tuple(waveform.shape)}")
    if not waveform.is_floating_point():
        waveform = waveform.float()
    batch, n_samples = waveform.shape
    if lengths is None:
        lengths = torch.full((batch,), n_samples, dtype=torch.long, device=waveform.device)
    else:
        lengths = torch.as_tensor(lengths, device=waveform.device)
        if lengths.shape != (batch,) or lengths.is_floating_point():
            raise ValueError(
                f"lengths must be ({batch},) integers, got {tuple(lengths.shape)} {lengths.dtype}"
            )
        lengths = lengths.long()
    if len(lengths) and (int(lengths.min()) < min_samples or int(lengths.max()) > n_samples):
        raise ValueError(
            f"clip lengths must be in [{min_samples}, {n_samples}] samples, got "
            f"{lengths.tolist()} ({min_samples} samples = {min_samples / SAMPLE_RATE:.3f} s is "
            "the shortest clip that gives one token)"
        )
    return waveform, lengths


def n_frames(n_samples: torch.Tensor | int) -> torch.Tensor | int:
    """Kaldi frames of a clip (25 ms frames, 10 ms shift, snip_edges): 1 + (n − 400) // 160."""
    return 1 + (n_samples - FRAME_LENGTH) // FRAME_SHIFT


def min_samples_for_frames(frames: int) -> int:
    """The fewest samples that give ``frames`` Kaldi frames."""
    return FRAME_LENGTH + (frames - 1) * FRAME_SHIFT


def prefix_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """(batch,) lengths → (batch, size) bool, True at positions < length."""
    return torch.arange(size, device=lengths.device) < lengths[:, None]


def token_mask(frame_mask: torch.Tensor, patch: int, stride: int, n_freq: int) -> torch.Tensor:
    """Frame mask (batch, frames) → token mask (batch, time_patches · n_freq), True = valid.

    A time patch covers frames [t·stride, t·stride + patch); it is valid only if every one of
    its frames is, so that a clip in a padded batch gets exactly the tokens it gets alone (a
    patch that reaches into the padding does not exist for the clip alone). Tokens are
    time-major with ``n_freq`` frequency patches per time step, as both backbones flatten them.
    """
    invalid = (~frame_mask).to(torch.float32).unsqueeze(1)  # (batch, 1, frames)
    valid_time = F.max_pool1d(invalid, patch, stride).squeeze(1) == 0  # (batch, time_patches)
    return valid_time.repeat_interleave(n_freq, dim=1)


def check_tokens(valid: torch.Tensor) -> None:
    """Raise if a clip of the batch has no valid token (its attention row would be empty)."""
    if not bool(valid.any(1).all()):
        raise ValueError("a clip has no valid token: each needs at least one full 16-frame patch")


def masked_mean(tokens: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Mean over valid tokens: (batch, tokens, dim), (batch, tokens) bool → (batch, dim),
    float32 (bf16 tokens under autocast are cast up first)."""
    tokens = tokens.float()
    if valid is None:
        return tokens.mean(1)
    weights = valid.to(tokens.dtype).unsqueeze(-1)
    return (tokens * weights).sum(1) / weights.sum(1)


def additive_key_mask(valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(batch, keys) bool → (batch, 1, 1, keys) additive mask: 0 valid, dtype's min elsewhere.

    A finite minimum rather than −inf: exp() of it underflows to exactly 0 in the softmax, and
    no backend turns a row into NaN. Rows are never fully masked (see :func:`check_tokens`).
    """
    mask = torch.zeros(valid.shape, dtype=dtype, device=valid.device)
    return mask.masked_fill_(~valid, torch.finfo(dtype).min)[:, None, None, :]


def autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """A context with autocast disabled on ``device``: features are computed in float32."""
    if device.type in ("cuda", "cpu", "xpu", "mps"):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


# --- patches --------------------------------------------------------------------------------


def patch_tokens(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x).flatten(2).transpose(1, 2)`` for a patch Conv2d (1 input channel, stride =
    kernel, no padding): (batch, 1, frames, mel) → (batch, tokens, dim), tokens time-major.

    Written by hand because the patches do not overlap: cutting them out with a reshape and one
    ``F.linear`` is the same sum as the convolution, and cheaper on a CPU than oneDNN's
    one-channel convolution's backward (a quick System 2 training run 7-15 % shorter on the
    Xeon, book/performance.md). The weights stay the Conv2d's (the official checkpoints load
    unchanged); any other Conv2d goes through the convolution."""
    kernel = conv.kernel_size
    plain = (
        conv.in_channels == 1
        and conv.stride == kernel
        and conv.padding == (0, 0)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and x.dim() == 4
    )
    if not plain:
        return conv(x).flatten(2).transpose(1, 2)
    (ph, pw), (batch, _, height, width) = kernel, x.shape
    rows, cols = height // ph, width // pw
    patches = x[:, 0, : rows * ph, : cols * pw].reshape(batch, rows, ph, cols, pw)
    patches = patches.transpose(2, 3).reshape(batch, rows * cols, ph * pw)
    return F.linear(patches, conv.weight.reshape(conv.out_channels, -1), conv.bias)


# --- regularisation --------------------------------------------------------------------------


class DropPath(nn.Module):
    """Stochastic depth (Huang et al., ECCV 2016): zero a sample's residual branch with
    probability ``p`` in training, scale the kept ones by 1 / (1 − p); identity in eval."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        return x * torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(keep) / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class GradMultiply(torch.autograd.Function):
    """Identity forward; multiplies the gradient by ``scale`` in backward (fairseq's)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None
