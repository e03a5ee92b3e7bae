"""Frequency-preserving pooling of patch tokens: one vector per frequency band, pooled over time.

BEATs and EAT cut the 128-mel fbank into 16 × 16 patches and emit their tokens time-major
(token ``t · 8 + f``: time patch ``t``, frequency band ``f``; :meth:`asd_utils.models.beats.BEATs.
forward_features`, :class:`asd_utils.models.eat.PatchEmbed`; ``tests/test_pooling.py`` checks it
on both). :func:`time_bands` restores the grid ``[batch, time, band, dim]`` from the tokens of
any block, frozen or fine-tuned (EAT's CLS token removed first); :func:`band_pool` pools it over
time, band by band, into ``[batch, band, dim]``:

- ``mean``: the mean over time (the frequency average pooling of the BEAM papers);
- ``rdp``: relative-deviation pooling, the weighted mean with weights ``∝ (1 + r)^γ``, where
  ``r[t, f] = ‖x[t, f] − μ_f‖ / max_t ‖x[t, f] − μ_f‖`` (0 for every t when that maximum is at
  most ``eps``), ``μ_f`` the band's mean over time: time patches far from the band's mean count
  more. γ = 0 is the mean.

As kasahart/asd-experiments ``src/asd_min/pooling.py`` (MIT; the RDP of the NA-BEATs paper,
arXiv 2608.00447, as reproduced in kasahart/dcase-asd-toolkit ``docs/methods/
beam_rdp_varmin.md``); ``tests/test_pooling.py`` holds it to that code's outputs for γ = 0, 4, 8
within 1e-5 (``tests/fixtures/bands/``). Upstream divides each band by its largest magnitude
before pooling and multiplies it back after, a guard against overflow near the dtype's limit
that changes no value here; the weights are the same softmax of ``γ · log1p(r)``.
"""

from __future__ import annotations

import math

import torch

MODES = ("mean", "rdp")


def time_bands(tokens: torch.Tensor, n_bands: int = 8) -> torch.Tensor:
    """Time-major patch tokens ``[batch, time · n_bands, dim]`` → ``[batch, time, n_bands, dim]``
    (token ``t · n_bands + f`` → ``[t, f]``); ``n_bands`` = 128 mel / 16 = 8 for BEATs and EAT.
    A mask ``[batch, tokens]`` reshapes the same way, without ``dim``."""
    if tokens.ndim not in (2, 3) or tokens.shape[1] % n_bands:
        raise ValueError(
            f"tokens must be [batch, time · {n_bands}(, dim)]; got shape {tuple(tokens.shape)}"
        )
    return tokens.reshape(tokens.shape[0], tokens.shape[1] // n_bands, n_bands, *tokens.shape[2:])


def _valid_mask(grid: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """``valid`` ([batch, time] or [batch, time, band], True = a real patch) as [batch, time,
    band]; all True when None. Every band of every clip needs one valid time patch."""
    batch, time, bands, _ = grid.shape
    if valid is None:
        return torch.ones(batch, time, bands, dtype=torch.bool, device=grid.device)
    valid = valid.to(device=grid.device, dtype=torch.bool)
    if valid.shape == (batch, time):
        valid = valid.unsqueeze(-1).expand(batch, time, bands)
    if valid.shape != (batch, time, bands):
        raise ValueError(f"valid must be [batch, time(, band)]; got {tuple(valid.shape)}")
    if not bool(valid.any(1).all()):
        raise ValueError("every clip and band needs at least one valid time patch")
    return valid


def rdp_weights(
    grid: torch.Tensor, gamma: float = 4.0, valid: torch.Tensor | None = None, eps: float = 1e-8
) -> torch.Tensor:
    """The RDP time weights ``[batch, time, band]`` of a grid ``[batch, time, band, dim]``:
    ``softmax_t(γ · log1p(r))`` over the valid time patches (``∝ (1 + r)^γ``), 0 on the others;
    ``r`` as in the module docstring. Computed in float32 at least."""
    if isinstance(gamma, bool) or not math.isfinite(gamma) or gamma < 0:
        raise ValueError(f"gamma must be finite and >= 0; got {gamma!r}")
    if not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"eps must be finite and > 0; got {eps!r}")
    mask = _valid_mask(grid, valid)
    x = _compute(grid).masked_fill(~mask.unsqueeze(-1), 0)
    weight = mask.unsqueeze(-1).to(x.dtype)
    mean = (x * weight).sum(1, keepdim=True) / weight.sum(1, keepdim=True)
    distance = torch.linalg.vector_norm(x - mean, dim=-1).masked_fill(~mask, 0)
    largest = distance.amax(1, keepdim=True)
    spread = largest > eps
    r = torch.where(spread, distance / torch.where(spread, largest, 1.0), 0.0)
    return torch.softmax((torch.log1p(r) * float(gamma)).masked_fill(~mask, -math.inf), dim=1)


def _compute(grid: torch.Tensor) -> torch.Tensor:
    if not grid.is_floating_point() or grid.ndim != 4:
        raise ValueError(f"grid must be a float [batch, time, band, dim]; got {grid.dtype}")
    if not bool(torch.isfinite(grid).all()):
        raise ValueError("grid has NaN or Inf values (half-precision BEATs?)")
    return grid.float() if grid.dtype in (torch.float16, torch.bfloat16) else grid


def band_pool(
    grid: torch.Tensor,
    mode: str = "rdp",
    gamma: float = 4.0,
    valid: torch.Tensor | None = None,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Pool ``[batch, time, band, dim]`` over time, band by band → ``[batch, band, dim]`` in the
    grid's dtype: ``mode`` ``"mean"`` (over the valid time patches) or ``"rdp"`` (weights of
    :func:`rdp_weights` with ``gamma``). ``valid``: [batch, time] or [batch, time, band] bool."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    x = _compute(grid)
    mask = _valid_mask(grid, valid)
    if mode == "rdp":
        weight = rdp_weights(x, gamma, mask, eps)
    else:
        weight = mask.to(x.dtype) / mask.sum(1, keepdim=True)
    pooled = (x.masked_fill(~mask.unsqueeze(-1), 0) * weight.unsqueeze(-1)).sum(1)
    return pooled.to(grid.dtype)


def pool_tokens(
    tokens: torch.Tensor,
    mode: str = "rdp",
    gamma: float = 4.0,
    valid: torch.Tensor | None = None,
    n_bands: int = 8,
) -> torch.Tensor:
    """Patch tokens of one block ``[batch, tokens, dim]`` (time-major, no CLS) and their mask
    ``[batch, tokens]`` → ``[batch, n_bands, dim]``: :func:`time_bands`, then :func:`band_pool`."""
    mask = None if valid is None else time_bands(valid, n_bands)
    return band_pool(time_bands(tokens, n_bands), mode, gamma, mask)
