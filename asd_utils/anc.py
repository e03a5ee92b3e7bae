"""Adaptive noise cancellation (ANC): the near mic minus what the far mic can explain.

Widrow's adaptive noise canceller (Widrow et al., "Adaptive noise cancelling: principles and
applications", Proc. IEEE 63(12), 1975): the *primary* input is the near microphone (machine +
noise), the *reference* input is the far microphone (noise, ideally without machine sound). An
adaptive FIR filter predicts the noise in the primary from the reference; the prediction error is
the output, i.e. the denoised near channel. Machine sound that leaks into the far mic is partly
cancelled too, so measure that on real data (``snr_db`` / ``si_sdr_db`` below).
``known_path_mixture`` makes a synthetic near/far pair with a known answer for tests, the
benchmark (``benchmarks/bench_anc.py``) and the ANC notebook.

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
from typing import NamedTuple

import numpy as np
import scipy.signal
import torch

__all__ = ["Mixture", "denoise", "fblms", "known_path_mixture", "nlms", "si_sdr_db", "snr_db"]


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
):
    """Cancel the part of ``primary`` that an FIR filter of ``reference`` can predict.

    Constrained, power-normalised frequency-domain block LMS with overlap-save (Ferrara 1980;
    Shynk 1992, the "constrained" FDAF). Per block ``k`` of ``B = block_size`` samples, with
    ``N = filter_length + B`` point FFTs and ``X_k`` the spectrum of the last ``N`` reference
    samples:

    * output ``y_k = last B samples of IFFT(X_k W_k)``, error ``e_k = d_k - y_k`` (the result);
    * bin power ``P_k = smoothing * P_(k-1) + (1 - smoothing) |X_k|^2`` (``P`` starts at the mean
      of ``|X|^2`` over the first ``1 / (1 - smoothing)`` blocks, so the first steps are sane);
    * gradient ``g_k = first filter_length samples of IFFT(conj(X_k) E_k / (P_k + eps))`` with
      ``E_k = FFT([0 … 0, e_k])``; keeping only those samples (zeroing the rest) is the gradient
      constraint that makes ``W`` a true linear-convolution FIR of ``filter_length`` taps;
    * ``W_(k+1) = (1 - step_size * leakage) W_k + step_size FFT([g_k, 0 … 0])``.

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

    Returns:
        The error signal (the denoised primary), same shape and float dtype as ``primary``; with
        ``return_filter=True`` also the final impulse response, ``(batch, filter_length)`` (or
        ``(filter_length,)`` for 1-D input), so that ``y[n] = sum_j w[j] x[n - j]``.
    """
    d, x = _as_float_tensor(primary), _as_float_tensor(reference)
    if d.shape != x.shape or d.dim() not in (1, 2):
        raise ValueError(
            f"primary and reference must have the same shape (batch, samples) or (samples,); "
            f"got {tuple(d.shape)} and {tuple(x.shape)}"
        )
    x = x.to(d.dtype)
    squeeze = d.dim() == 1
    d, x = d.reshape(-1, d.shape[-1]), x.reshape(-1, x.shape[-1])
    batch, samples = d.shape
    M = int(filter_length)
    B = int(block_size or M)
    if M < 1 or B < 1:
        raise ValueError(f"filter_length and block_size must be >= 1; got {M} and {B}")
    N = M + B
    n_blocks = max(1, math.ceil(samples / B))
    pad = n_blocks * B - samples

    with torch.no_grad(), _one_thread():
        # Every reference spectrum is known in advance: one batched FFT of all overlap-save
        # frames (N samples, hop B): X[:, k] is the spectrum of block k's frame.
        X = torch.fft.rfft(torch.nn.functional.pad(x, (N - B, pad)).unfold(-1, N, B))
        # |X|^2 with the (1 - s) weight and eps folded in, so P_k = s P_(k-1) + power[:, k]
        # is the running bin power plus eps; P starts at its mean over the first 1/(1 - s) blocks.
        s = float(smoothing)
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
        blocks = X.unbind(1), Xc.unbind(1), power.unbind(1), D.unbind(1), E.unbind(1)
        for X_k, Xc_k, power_k, d_k, e_k in zip(*blocks, strict=True):
            y = torch.fft.irfft(X_k * W, n=N)
            torch.sub(d_k, y[:, N - B :], out=e_k[:, :B])
            P.mul_(s).add_(power_k)
            g = torch.fft.irfft(Xc_k * torch.fft.rfft(e_k) * P.reciprocal(), n=N)
            g[:, M:].zero_()  # the gradient constraint
            if decay != 1:
                W.mul_(decay)
            W.add_(torch.fft.rfft(g))

        out = E[..., :B].reshape(batch, -1)[:, :samples]
        out = out[0] if squeeze else out.contiguous()
        if not return_filter:
            return out
        w = torch.fft.irfft(W, n=N)[:, :M]
        return out, (w[0] if squeeze else w)


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


def _energy(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.sum(x * x, axis=-1)


def snr_db(clean, noise) -> np.ndarray:
    """Signal-to-noise ratio ``10 log10(sum clean^2 / sum noise^2)`` in dB, per clip.

    Args:
        clean: the signal, ``(..., samples)``, torch or numpy.
        noise: the noise (or the residual noise, e.g. ``output - clean``), same shape.

    Returns:
        ``(...)`` float64 array in dB (a scalar array for 1-D input).
    """
    with np.errstate(divide="ignore"):
        return 10 * np.log10(_energy(clean) / _energy(noise))


def si_sdr_db(reference, estimate) -> np.ndarray:
    """Scale-invariant signal-to-distortion ratio in dB, per clip (Le Roux et al., "SDR —
    half-baked or well done?", ICASSP 2019, Eq. 5).

    Both signals are made zero-mean; the target is the projection ``a * reference`` of the
    estimate on the reference (``a = <estimate, reference> / ||reference||^2``) and
    ``SI-SDR = 10 log10(||a reference||^2 / ||estimate - a reference||^2)``.

    Args:
        reference: clean signal, ``(..., samples)``, torch or numpy.
        estimate: the signal to judge, same shape.

    Returns:
        ``(...)`` float64 array in dB; unchanged when ``estimate`` is multiplied by any
        non-zero factor.
    """
    s = np.asarray(reference, dtype=np.float64)
    s_hat = np.asarray(estimate, dtype=np.float64)
    s = s - s.mean(-1, keepdims=True)
    s_hat = s_hat - s_hat.mean(-1, keepdims=True)
    target = (np.sum(s_hat * s, -1) / _energy(s))[..., None] * s
    with np.errstate(divide="ignore"):
        return 10 * np.log10(_energy(target) / _energy(s_hat - target))


class Mixture(NamedTuple):
    """A synthetic near/far pair; all arrays float64, ``(samples,)`` except ``path``."""

    clean: np.ndarray  # machine sound at the near mic
    noise: np.ndarray  # noise at the near mic (reference through ``path``)
    primary: np.ndarray  # near mic = clean + noise
    reference: np.ndarray  # far mic = noise source only (no machine leakage)
    path: np.ndarray  # FIR from far to near mic, (path_taps,)


def known_path_mixture(
    seconds: float = 3.0,
    sample_rate: int = 16_000,
    path_taps: int = 96,
    machine_db: float = -10.0,
    coloured: bool = False,
    seed: int = 0,
) -> Mixture:
    """A two-channel clip whose ideal canceller is known: noise reaches the near mic through a
    random, exponentially decaying FIR ``path`` from the far mic.

    The machine is 8 harmonics of a random 80–200 Hz fundamental; the far mic carries white
    Gaussian noise, or AR(1)-coloured noise (pole 0.9) with ``coloured=True``; ``machine_db``
    is the machine-to-noise power ratio at the near mic (dB). Noise reduction of a canceller's
    ``output`` is then ``snr_db(noise, output - clean)``.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    f0 = rng.uniform(80, 200)
    clean = sum(
        rng.uniform(0.2, 1) / k * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi))
        for k in range(1, 9)
    )
    reference = rng.standard_normal(t.size)
    if coloured:  # x[n] = w[n] + 0.9 x[n-1]
        reference = scipy.signal.lfilter([1.0], [1.0, -0.9], reference)
    path = rng.standard_normal(path_taps) * np.exp(-np.arange(path_taps) / (path_taps / 4))
    noise = np.convolve(reference, path)[: t.size]
    clean *= np.sqrt(np.mean(noise**2) / np.mean(clean**2)) * 10 ** (machine_db / 20)
    return Mixture(clean, noise, clean + noise, reference, path)
