"""Two-channel front ends: the views of a stereo clip (near mic, far mic) a system can hear.

Every view takes the near and the far channel, ``(samples,)`` or ``(batch, samples)`` (clips of
equal length; numpy or torch, any float dtype), and returns one waveform of the near channel's
shape, float32 (:data:`VIEWS`, by name):

- ``near``, ``far``: one microphone as recorded.
- ``fblms``: System 3's adaptive canceller (:func:`asd_utils.frontends.anc.denoise`), as it is.
- ``w1``: a fixed canceller, one complex coefficient per frequency bin fitted over the whole
  clip (:func:`w1`); time-invariant, unlike ``fblms``.
- ``ss``: magnitude spectral subtraction with the near phase (:func:`ss`), a negative control.
- ``residual``: ``near − α · far`` (:func:`residual`), System 0's residual view.

W1 and SS follow kasahart/asd-experiments ``src/asd_min/waveform.py`` and ``waveform.md``
(MIT; W1 as in the complex least-squares subtraction of the Ozeki DCASE 2026 Task 2 report, SS
as Eq. 1 of Qian et al.'s DCASE 2026 Task 2 report, Sec. 2.1); ``tests/test_twochannel.py``
holds both to that code's outputs within 1e-5 (``tests/fixtures/twochannel/``). The short-time
transforms are written here in numpy with torch's conventions (periodic Hann, ``center`` with
reflect padding, overlap-add divided by the summed squared window), which those equations use:
``scipy.signal.ShortTimeFFT`` takes one frame more at the clip's end (11 for 5,000 samples at
hop 512, torch 10), which would change W1's fit.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from asd_utils.frontends import anc

__all__ = ["VIEWS", "fblms", "istft", "preprocess", "residual", "ss", "stft", "view", "w1"]

W1_FFT, W1_HOP, W1_PEAK, W1_EPS = 1024, 512, 0.9, 1e-12
SS_FFT, SS_HOP, SS_BETA, SS_GAMMA = 512, 256, 1.0, 0.1


def _pair(near, far) -> tuple[np.ndarray, np.ndarray]:
    """Both channels as float64 arrays of one shape, ``(samples,)`` or ``(batch, samples)``."""
    c = np.asarray(torch.as_tensor(near).detach().cpu(), dtype=np.float64)
    f = np.asarray(torch.as_tensor(far).detach().cpu(), dtype=np.float64)
    if c.shape != f.shape or c.ndim not in (1, 2):
        raise ValueError(
            f"near and far must have one shape, (samples,) or (batch, samples); "
            f"got {c.shape} and {f.shape}"
        )
    if not (np.isfinite(c).all() and np.isfinite(f).all()):
        raise ValueError("near and far must be finite")
    return c, f


def _hann(n_fft: int) -> np.ndarray:
    """The periodic Hann window of ``n_fft`` samples (torch.hann_window(periodic=True))."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)


def stft(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Short-time spectra of ``x`` (..., samples) → (..., n_fft // 2 + 1, frames), frames =
    1 + samples // hop: periodic Hann of ``n_fft``, each frame centred on sample ``t · hop``
    (reflect padding by ``n_fft // 2``), as ``torch.stft(center=True, pad_mode="reflect")``."""
    if x.shape[-1] <= n_fft // 2:
        raise ValueError(f"a clip needs more than {n_fft // 2} samples; got {x.shape[-1]}")
    pad = [(0, 0)] * (x.ndim - 1) + [(n_fft // 2, n_fft // 2)]
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(x, pad, mode="reflect"), n_fft, -1)
    return np.fft.rfft(frames[..., ::hop, :] * _hann(n_fft), axis=-1).swapaxes(-1, -2)


def istft(spectra: np.ndarray, n_fft: int, hop: int, length: int) -> np.ndarray:
    """The inverse of :func:`stft`: (..., n_fft // 2 + 1, frames) → (..., length), windowed
    overlap-add divided by the overlap-added squared window (``torch.istft``); ``hop`` must
    divide ``n_fft``."""
    if n_fft % hop:
        raise ValueError(f"hop {hop} must divide n_fft {n_fft}")
    window = _hann(n_fft)
    frames = np.fft.irfft(spectra.swapaxes(-1, -2), n=n_fft, axis=-1) * window
    n_frames, parts = frames.shape[-2], n_fft // hop
    out = np.zeros((*frames.shape[:-2], (n_frames + parts - 1) * hop))
    norm = np.zeros((n_frames + parts - 1) * hop)
    for r in range(parts):  # the r-th hop-long piece of every frame lands r hops later
        span = slice(r * hop, (r + n_frames) * hop)
        out[..., span] += frames[..., r * hop : (r + 1) * hop].reshape(*frames.shape[:-2], -1)
        norm[span] += np.tile(window[r * hop : (r + 1) * hop] ** 2, n_frames)
    keep = slice(n_fft // 2, n_fft // 2 + length)
    return out[..., keep] / norm[keep]


def w1(near, far) -> np.ndarray:
    """The W1 canceller: the near channel less what one complex gain per frequency bin of the
    far channel explains over the whole clip, float32 of the near channel's shape.

    Both channels are scaled by one factor per clip so that their joint peak is 0.9; STFT 1024 /
    hop 512 (:func:`stft`); per bin ``H[f] = Σ_t C[f,t] conj(F[f,t]) / (Σ_t |F[f,t]|² +
    1e-12)`` (least squares), ``Y = C − H F``; inverse STFT to the clip's length; the scale
    restored. A batch is clips of one length, each fitted on its own.
    """
    return _clip_by_clip(_w1_clip, *_pair(near, far))


def _clip_by_clip(fn, c: np.ndarray, f: np.ndarray, **settings) -> np.ndarray:
    """``fn(near (samples,), far)`` of one clip or of each clip of a batch, float32. Clip by
    clip, since one clip's spectra stay in the cache: 16 ten-second clips at once took 3.7 (W1)
    and 1.7 (SS) times as long as in turn on the 2-vCPU Xeon."""
    if c.ndim == 1:
        return fn(c, f, **settings).astype(np.float32)
    return np.stack([fn(ci, fi, **settings) for ci, fi in zip(c, f, strict=True)]).astype(
        np.float32
    )


def _w1_clip(c: np.ndarray, f: np.ndarray) -> np.ndarray:
    peak = max(np.abs(c).max(), np.abs(f).max())
    scale = peak / W1_PEAK if peak > 1e-12 else 1.0
    C, F = stft(c / scale, W1_FFT, W1_HOP), stft(f / scale, W1_FFT, W1_HOP)
    H = (C * F.conj()).sum(-1) / ((F.real**2 + F.imag**2).sum(-1) + W1_EPS)
    return istft(C - H[:, None] * F, W1_FFT, W1_HOP, len(c)) * scale


def ss(near, far, beta: float = SS_BETA, gamma: float = SS_GAMMA) -> np.ndarray:
    """Magnitude spectral subtraction with the near phase, float32 of the near channel's shape.

    STFT 512 / hop 256 (:func:`stft`) of the channels as they are (no scaling); per bin and
    frame ``|Y| = |C| − β|F|`` where ``|C| > β|F|`` (strictly), else ``γ|C|``; the phase of
    ``C``; inverse STFT to the clip's length. β = 1, γ = 0.1 (Qian et al., DCASE 2026).
    """
    return _clip_by_clip(_ss_clip, *_pair(near, far), beta=beta, gamma=gamma)


def _ss_clip(c: np.ndarray, f: np.ndarray, beta: float, gamma: float) -> np.ndarray:
    C, F = stft(c, SS_FFT, SS_HOP), stft(f, SS_FFT, SS_HOP)
    a, b = np.abs(C), beta * np.abs(F)
    magnitude = np.where(a > b, a - b, gamma * a)
    return istft(magnitude * np.exp(1j * np.angle(C)), SS_FFT, SS_HOP, len(c))


def residual(near, far, alpha: float = 0.5):
    """``near − α · far``, in float32 for numpy input: what the near channel has that the far one
    does not, for waveforms or embeddings alike (System 0's residual view; α = 0.5, fixed a
    priori, in the paper profile)."""
    if isinstance(near, torch.Tensor):
        return near - alpha * far
    return np.asarray(near, dtype=np.float32) - np.float32(alpha) * np.asarray(far, np.float32)


def _near(near, far) -> np.ndarray:
    """The near microphone as recorded, float32."""
    return np.asarray(torch.as_tensor(near).detach().cpu(), dtype=np.float32)


def _far(near, far) -> np.ndarray:
    """The far microphone as recorded, float32."""
    return np.asarray(torch.as_tensor(far).detach().cpu(), dtype=np.float32)


def fblms(near, far, **settings) -> np.ndarray:
    """System 3's adaptive canceller (:func:`asd_utils.frontends.anc.denoise` with ``settings``,
    e.g. :func:`asd_utils.frontends.anc.denoiser_settings` of the profile's ``anc`` section),
    float32 of the near channel's shape."""
    pair = torch.stack([torch.as_tensor(near), torch.as_tensor(far)], dim=-2)
    return np.asarray(anc.denoise(pair, **settings).detach().cpu(), dtype=np.float32)


VIEWS: dict[str, Callable[..., np.ndarray]] = {
    "near": _near,
    "far": _far,
    "fblms": fblms,
    "w1": w1,
    "ss": ss,
    "residual": residual,
}
"""Each view by name: ``VIEWS[name](near, far, **settings)`` → one waveform (see the module)."""


def view(name: str, near, far, **settings) -> np.ndarray:
    """The view ``name`` (:data:`VIEWS`) of a stereo clip or batch, with its settings (``alpha``
    for ``residual``, the ANC's for ``fblms``, ``beta``/``gamma`` for ``ss``)."""
    if name not in VIEWS:
        raise ValueError(f"unknown view {name!r}; choose one of {list(VIEWS)}")
    return VIEWS[name](near, far, **settings)


def preprocess(name: str, **settings) -> Callable[[np.ndarray], np.ndarray]:
    """The view ``name`` as a ``preprocess`` of :func:`asd_utils.frontends.views.load_waveform`
    (and :func:`asd_utils.scoring.extract_embeddings`): audio ``(channels, samples)`` or
    ``(batch, channels, samples)``, channel 0 near and 1 far, → the view of it."""
    if name not in VIEWS:
        raise ValueError(f"unknown view {name!r}; choose one of {list(VIEWS)}")

    def apply(audio) -> np.ndarray:
        if audio.shape[-2] < 2:
            raise ValueError(f"view {name!r} needs two channels (near, far); got {audio.shape}")
        return VIEWS[name](audio[..., 0, :], audio[..., 1, :], **settings)

    return apply
