"""Adaptive noise cancellation (ANC): the near mic minus what the far mic can explain.

Widrow's adaptive noise canceller (Widrow et al., "Adaptive noise cancelling: principles and
applications", Proc. IEEE 63(12), 1975): the *primary* input is the near microphone (machine +
noise), the *reference* input is the far microphone (noise, ideally without machine sound). An
adaptive FIR filter predicts the noise in the primary from the reference; the prediction error is
the output, i.e. the denoised near channel. Machine sound that leaks into the far mic is partly
cancelled too: :mod:`asd_utils.studies.denoising` measures what it removes and keeps, on
clips whose machine and noise parts are known (the ANC chapter, ``benchmarks/bench_anc.py``).

Two adaptive filters:

* ``fblms`` — the fast path: constrained frequency-domain block LMS with overlap-save
  (Ferrara, "Fast implementation of LMS adaptive filters", IEEE Trans. ASSP 28(4), 1980; Shynk,
  "Frequency-domain and multirate adaptive filtering", IEEE Signal Processing Magazine 9(1),
  1992), power-normalised per frequency bin, with leakage, vectorised over a batch of clips.
* ``nlms`` — the per-sample normalised LMS, written plainly in NumPy as the reference for tests
  and benchmarks.

Why hand-written: the maintained adaptive-filter libraries (padasip, pyroomacoustics, adafilt)
run per sample or per clip in NumPy; none offers a batched, constrained FBLMS on torch tensors,
and the algorithm is 30 lines.
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings

import numpy as np
import torch

from asd_utils.config.schema import Anc

__all__ = ["DENOISER_SETTINGS", "denoise", "denoiser_settings", "fblms", "nlms"]


def _as_float_tensor(x) -> torch.Tensor:
    """Tensor view of ``x``; float32 and float64 are kept, anything else becomes float32."""
    t = torch.as_tensor(x)
    return t if t.dtype in (torch.float32, torch.float64) else t.to(torch.float32)


@contextlib.contextmanager
def _one_thread():
    """Run torch on one thread inside the block (FBLMS's FFTs are too small to gain from threads:
    the hand-offs cost more than the transforms, milliseconds per call when another process
    holds a core)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def fblms(
    primary,
    reference,
    filter_length: int = 512,
    step_size: float = 0.1,
    leakage: float = 0.0,
    block_size: int | None = None,
    eps: float = 1e-8,
    *,
    smoothing: float = 0.9,
    return_filter: bool = False,
    components=None,
):
    """Cancel the part of ``primary`` that an FIR filter of ``reference`` can predict.

    Constrained, power-normalised frequency-domain block LMS with overlap-save (Ferrara 1980;
    Shynk 1992, the "constrained" FDAF), per block of ``block_size`` samples with
    ``filter_length + block_size`` point FFTs; the update is written out at
    :func:`_fblms_adapt`.

    One Python loop over blocks; all clips of the batch go through each FFT together, on one
    thread (the transforms are too small to share; run clips in several processes instead).
    Memory: about 50 bytes per input sample in float32 (all reference spectra are computed up
    front), so split batches of hours of audio.

    Step size trades speed for depth (measured with ``B = filter_length``): the noise left
    falls by about ``4.3 * step_size`` dB per block (0.45 dB per 32 ms block at the defaults:
    20 dB in about 1.5 s), and at convergence the excess output noise (misadjustment) is about
    ``step_size / 4`` times the uncancellable power (the machine sound), like an NLMS with
    step ``step_size / 2``.

    Args:
        primary: near channel ``d``, shape ``(batch, samples)`` or ``(samples,)``, torch or
            numpy; float32 and float64 are kept, other dtypes become float32.
        reference: far channel ``x``, same shape as ``primary``.
        filter_length: FIR taps ``M`` (512 taps = 32 ms at 16 kHz); must cover the acoustic path
            from the far mic to the near mic.
        step_size: ``mu``, the normalised step (``0 < mu < 2``; see the trade-off above).
        leakage: ``gamma >= 0``; each block the filter shrinks by ``1 - mu * gamma`` (leaky LMS),
            which bounds the filter when the reference has spectral gaps.
        block_size: samples per block ``B`` (default ``filter_length``); the FFT size is
            ``filter_length + block_size``. Larger blocks are faster and adapt more slowly.
        eps: regulariser added to the bin power (silent reference).
        smoothing: forgetting factor of the per-bin power estimate, per block (0.9: a memory
            of about ten blocks, 0.3 s at 16 kHz with 512-sample blocks).
        return_filter: also return the final filter.
        components: optional parts of ``reference`` (e.g. its machine and its noise), shape
            ``(k, *primary.shape)``; each goes through the same sequence of filters as
            ``reference`` without steering the adaptation. When they add up to ``reference``,
            their outputs add up to the filter output, so the output splits exactly into
            ``primary_part - component_output`` per part (see ``evaluate_denoising``). Costs
            the memory of one more reference per component plus one filter per block.

    Returns:
        The error signal (the denoised primary), same shape and float dtype as ``primary``; with
        ``return_filter=True`` also the final impulse response, ``(batch, filter_length)`` (or
        ``(filter_length,)`` for 1-D input), so that ``y[n] = sum_j w[j] x[n - j]``; with
        ``components`` also (last) the filter's output for each, ``(k, *primary.shape)``.
    """
    d, x, parts, squeeze = _fblms_inputs(primary, reference, components)
    M, B = int(filter_length), int(block_size or filter_length)
    if M < 1 or B < 1:
        raise ValueError(f"filter_length and block_size must be >= 1; got {M} and {B}")
    with torch.no_grad(), _one_thread():
        E, W, history = _fblms_adapt(
            d, x, M, B, step_size, leakage, eps, float(smoothing), keep_filters=parts is not None
        )
        samples = d.shape[-1]
        out = E[..., :B].reshape(d.shape[0], -1)[:, :samples]
        result = [out[0] if squeeze else out.contiguous()]
        if return_filter:
            w = torch.fft.irfft(W, n=M + B)[:, :M]
            result.append(w[0] if squeeze else w)
        if history is not None:
            Y = _fblms_components(parts, history, M, B, samples)
            result.append(Y[:, 0] if squeeze else Y.contiguous())
        return result[0] if len(result) == 1 else tuple(result)


def _fblms_inputs(primary, reference, components):
    """:func:`fblms`'s inputs checked and as tensors: ``(d, x, parts, squeeze)``, ``d`` and
    ``x`` as ``(batch, samples)`` in ``primary``'s float dtype, ``parts`` the components (or
    None) in that dtype, ``squeeze`` whether the input was one clip ``(samples,)``."""
    d, x = _as_float_tensor(primary), _as_float_tensor(reference)
    if d.shape != x.shape or d.dim() not in (1, 2):
        raise ValueError(
            f"primary and reference must have the same shape (batch, samples) or (samples,); "
            f"got {tuple(d.shape)} and {tuple(x.shape)}"
        )
    x = x.to(d.dtype)
    parts = None
    if components is not None:
        parts = _as_float_tensor(components).to(d.dtype)
        if parts.dim() != d.dim() + 1 or parts.shape[1:] != d.shape:
            raise ValueError(
                f"components must have shape (k, *primary.shape) = (k, {tuple(d.shape)}); "
                f"got {tuple(parts.shape)}"
            )
    squeeze = d.dim() == 1
    return d.reshape(-1, d.shape[-1]), x.reshape(-1, x.shape[-1]), parts, squeeze


def _fblms_adapt(
    d: torch.Tensor,
    x: torch.Tensor,
    M: int,
    B: int,
    step_size: float,
    leakage: float,
    eps: float,
    s: float,
    keep_filters: bool,
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor] | None]:
    """The adaptation of :func:`fblms` over blocks of ``B`` samples, ``N = M + B`` point FFTs,
    ``X_k`` the spectrum of the last ``N`` reference samples (Ferrara 1980; Shynk 1992):

    * output ``y_k = last B samples of IFFT(X_k W_k)``, error ``e_k = d_k - y_k`` (the result);
    * bin power ``P_k = s * P_(k-1) + (1 - s) |X_k|^2`` (``P`` starts at the mean of ``|X|^2``
      over the first ``1 / (1 - s)`` blocks, so the first steps are sane);
    * gradient ``g_k = first M samples of IFFT(conj(X_k) E_k / (P_k + eps))`` with
      ``E_k = FFT([0 … 0, e_k])``; keeping only those samples (zeroing the rest) is the gradient
      constraint that makes ``W`` a true linear-convolution FIR of ``M`` taps;
    * ``W_(k+1) = (1 - step_size * leakage) W_k + step_size FFT([g_k, 0 … 0])``.

    ``d``, ``x``: ``(batch, samples)``. Returns the error blocks zero-padded to ``N`` samples,
    ``(batch, blocks, N)``, the final filter spectrum ``(batch, N // 2 + 1)`` and, with
    ``keep_filters``, the filter spectrum each block used (else None).
    """
    batch, samples = d.shape
    N = M + B
    n_blocks = max(1, math.ceil(samples / B))
    pad = n_blocks * B - samples
    # Every reference spectrum is known in advance: one batched FFT of all overlap-save
    # frames (N samples, hop B): X[:, k] is the spectrum of block k's frame.
    X = torch.fft.rfft(torch.nn.functional.pad(x, (N - B, pad)).unfold(-1, N, B))
    # |X|^2 with the (1 - s) weight and eps folded in, so P_k = s P_(k-1) + power[:, k]
    # is the running bin power plus eps; P starts at its mean over the first 1/(1 - s) blocks.
    power = (X * X.conj()).real.add_(eps)
    P = power[:, : max(1, round(1 / (1 - s))) if s < 1 else None].mean(1)
    power.mul_(1 - s)
    # The error block sits at the end of the N-sample frame; its FFT is taken as
    # FFT([e_k, 0 … 0]), so the delay by N - B samples and the step go into the conj(X) term.
    delay = torch.arange(N // 2 + 1, dtype=d.dtype).mul_(-2 * math.pi * (N - B) / N)
    Xc = torch.mul(X, torch.polar(torch.full_like(delay, step_size), -delay)).conj_physical_()

    D = torch.nn.functional.pad(d, (0, pad)).view(batch, n_blocks, B)
    # Error blocks are kept zero-padded to N samples, ready for FFT([e_k, 0 … 0]).
    E = torch.zeros(batch, n_blocks, N, dtype=d.dtype)
    W = torch.zeros(batch, N // 2 + 1, dtype=X.dtype)
    decay = 1 - step_size * leakage
    history = [] if keep_filters else None
    blocks = X.unbind(1), Xc.unbind(1), power.unbind(1), D.unbind(1), E.unbind(1)
    for X_k, Xc_k, power_k, d_k, e_k in zip(*blocks, strict=True):
        if history is not None:
            history.append(W.clone())
        y = torch.fft.irfft(X_k * W, n=N)
        torch.sub(d_k, y[:, N - B :], out=e_k[:, :B])
        P.mul_(s).add_(power_k)
        g = torch.fft.irfft(Xc_k * torch.fft.rfft(e_k) * P.reciprocal(), n=N)
        g[:, M:].zero_()  # the gradient constraint
        if decay != 1:
            W.mul_(decay)
        W.add_(torch.fft.rfft(g))
    return E, W, history


def _fblms_components(
    parts: torch.Tensor, history: list[torch.Tensor], M: int, B: int, samples: int
) -> torch.Tensor:
    """Each component's output through the filters :func:`_fblms_adapt` used, block by block:
    in block k, the same overlap-save product with block k's filter. ``parts``: ``(k,
    batch, samples)`` (or ``(k, samples)``); returns ``(k, batch, samples)``."""
    N, k, batch = M + B, parts.shape[0], history[0].shape[0]
    pad = len(history) * B - samples
    frames = torch.nn.functional.pad(parts.reshape(k, batch, samples), (N - B, pad))
    Y = torch.fft.irfft(torch.fft.rfft(frames.unfold(-1, N, B)) * torch.stack(history, 1), n=N)
    return Y[..., N - B :].reshape(k, batch, -1)[..., :samples]


def nlms(primary, reference, filter_length: int = 256, step_size: float = 0.5, eps: float = 1e-6):
    """Per-sample normalised LMS noise canceller, in plain NumPy (the reference implementation).

    For each sample ``n``: ``u = [x[n], x[n-1], …, x[n-M+1]]``, ``e[n] = d[n] - w·u``,
    ``w += step_size * e[n] * u / (eps + u·u)`` (Widrow et al. 1975 with the NLMS step).

    Args:
        primary: near channel ``d``, ``(samples,)`` or ``(batch, samples)`` (numpy or torch).
        reference: far channel ``x``, same shape.
        filter_length: taps ``M``; step_size: ``0 < mu < 2``; eps: regulariser.

    Returns:
        The error signal (denoised primary) as a float64 NumPy array of the same shape.
    """
    d = np.asarray(primary, dtype=np.float64)
    x = np.asarray(reference, dtype=np.float64)
    if d.shape != x.shape or d.ndim not in (1, 2):
        raise ValueError(
            f"primary and reference shapes differ or are not 1-D/2-D: {d.shape}, {x.shape}"
        )
    if d.ndim == 2:
        return np.stack(
            [nlms(di, xi, filter_length, step_size, eps) for di, xi in zip(d, x, strict=True)]
        )
    u_all = np.lib.stride_tricks.sliding_window_view(
        np.concatenate([np.zeros(filter_length - 1), x]), filter_length
    )[:, ::-1]  # row n = [x[n], x[n-1], …]
    w = np.zeros(filter_length)
    e = np.empty_like(d)
    for n, u in enumerate(u_all):
        e[n] = d[n] - w @ u
        w += step_size * e[n] / (eps + u @ u) * u
    return e


@functools.cache
def _warn_mono_once() -> None:
    warnings.warn(
        "ANC got mono audio; passing channel 0 through unchanged (passthrough_mono=True)",
        stacklevel=3,
    )


def denoise(
    audio, method: str = "fblms", passthrough_mono: bool = False, **settings
) -> torch.Tensor:
    """Denoise the near channel of two-channel clips with the far channel as noise reference.

    Args:
        audio: waveform(s) as the loader gives them, ``(channels, samples)`` or
            ``(batch, channels, samples)``; channel 0 = near mic, channel 1 = far mic (further
            channels are ignored).
        method: ``"fblms"`` (fast, default) or ``"nlms"`` (per-sample reference, slow).
        passthrough_mono: for one-channel audio, return channel 0 unchanged (with a one-time
            warning) instead of raising.
        **settings: passed to the filter: ``filter_length``, ``step_size``, ``eps``; for FBLMS
            also ``leakage``, ``block_size``, ``smoothing``.

    Returns:
        The denoised near channel, ``(samples,)`` or ``(batch, samples)`` (torch tensor).
    """
    audio = _as_float_tensor(audio)
    if audio.dim() not in (2, 3):
        raise ValueError(
            f"audio must be (channels, samples) or (batch, channels, samples); "
            f"got {tuple(audio.shape)}"
        )
    if audio.shape[-2] < 2:
        if not passthrough_mono:
            raise ValueError(
                f"ANC needs two channels (near, far); got mono audio of shape {tuple(audio.shape)} "
                "(pass passthrough_mono=True to return it unchanged)"
            )
        _warn_mono_once()
        return audio[..., 0, :]
    near, far = audio[..., 0, :], audio[..., 1, :]
    if method == "fblms":
        return fblms(near, far, **settings)
    if method == "nlms":
        return torch.from_numpy(nlms(near, far, **settings)).to(audio.dtype)
    raise ValueError(f"method must be 'fblms' or 'nlms'; got {method!r}")


# --- the profile's settings ------------------------------------------------------------------

DENOISER_SETTINGS = ("filter_length", "step_size", "leakage", "block_size", "smoothing", "eps")
"""The keys of a profile's ``anc`` section that are ``fblms`` settings (the rest are the ANC
chapter's analysis sizes)."""


def denoiser_settings(section: Anc) -> dict:
    """The ``fblms`` settings of a profile's ``anc`` section (keys in :data:`DENOISER_SETTINGS`),
    ready for ``denoise(audio, **denoiser_settings(profile.anc))``."""
    values = section.plain()
    return {key: values[key] for key in DENOISER_SETTINGS if key in values}
