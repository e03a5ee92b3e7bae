"""Features: the autoencoder baseline's log-mel frame vectors (and, below, the backbones' fbank).

Shapes: waveforms are float32 in [-1, 1], (batch, samples) at 16 kHz unless said otherwise.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

# --- the official autoencoder baseline's features (nttcslab's dcase2023_task2_baseline_ae) ----


def hz_to_mel_slaney(freq: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (linear below 1 kHz, logarithmic above), as librosa's default."""
    freq = np.asarray(freq, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    mel = freq / f_sp
    log_region = freq >= min_log_hz
    mel[log_region] = min_log_mel + np.log(freq[log_region] / min_log_hz) / logstep
    return mel


def mel_to_hz_slaney(mel: np.ndarray) -> np.ndarray:
    """Inverse of :func:`hz_to_mel_slaney`."""
    mel = np.asarray(mel, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    freq = f_sp * mel
    log_region = mel >= min_log_mel
    freq[log_region] = min_log_hz * np.exp(logstep * (mel[log_region] - min_log_mel))
    return freq


@functools.lru_cache(maxsize=8)
def slaney_mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Triangular, area-normalised ("slaney") mel filters, (n_mels, n_fft // 2 + 1), float32.

    The same filters as ``librosa.filters.mel(sr, n_fft, n_mels)`` with its defaults (fmin 0,
    fmax sr/2, htk=False, norm='slaney'), which the official baseline uses. Written here so the
    project does not depend on librosa for one matrix.
    """
    fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    mel_points = mel_to_hz_slaney(
        np.linspace(
            hz_to_mel_slaney(np.array([0.0]))[0],
            hz_to_mel_slaney(np.array([sample_rate / 2]))[0],
            n_mels + 2,
        )
    )
    widths = np.diff(mel_points)
    ramps = mel_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_points[2:] - mel_points[:-2]))[:, None]
    return weights.astype(np.float32)


def log_mel(
    waveform: torch.Tensor,
    sample_rate: int = 16000,
    n_fft: int = 1024,
    hop_length: int = 512,
    n_mels: int = 128,
    power: float = 2.0,
) -> torch.Tensor:
    """The baseline's log-mel spectrogram: (batch, samples) → (batch, frames, n_mels), in dB.

    As ``librosa.feature.melspectrogram`` (centred frames, zero padding, periodic Hann window)
    followed by ``20 / power * log10(mel + eps)`` with eps the float64 machine epsilon, exactly
    as the official baseline computes it.
    """
    waveform = torch.as_tensor(waveform, dtype=torch.float32)
    squeeze = waveform.dim() == 1
    waveform = waveform.unsqueeze(0) if squeeze else waveform
    window = torch.hann_window(n_fft, periodic=True, dtype=waveform.dtype)
    spec = (
        torch.stft(
            waveform,
            n_fft,
            hop_length,
            window=window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        .abs()
        .pow(power)
    )
    mel_fb = torch.from_numpy(slaney_mel_filterbank(sample_rate, n_fft, n_mels))
    mel = torch.einsum("mf,bft->btm", mel_fb, spec)
    out = 20.0 / power * torch.log10(mel + float(np.finfo(np.float64).eps))
    return out[0] if squeeze else out


def stack_frames(log_mel_frames: torch.Tensor, n_frames: int = 5) -> torch.Tensor:
    """Stack ``n_frames`` consecutive frames into one vector, frame hop 1.

    (batch, frames, n_mels) → (batch, frames − n_frames + 1, n_frames · n_mels); vector t holds
    frames t … t + n_frames − 1, oldest first (the baseline's 640-dim input for 5 × 128).
    """
    windows = log_mel_frames.unfold(1, n_frames, 1)  # (batch, vectors, n_mels, n_frames)
    return windows.transpose(2, 3).flatten(2)


# --- the backbones' Kaldi fbank (BEATs, EAT) ---------------------------------------------------
#
# A batched torch reimplementation of ``torchaudio.compliance.kaldi.fbank`` (itself a port of
# Kaldi's ``compute-fbank-feats``), so that the project needs no torchaudio at run time. The
# arithmetic follows torchaudio step by step (the power spectrum aside, see kaldi_fbank);
# tests/fixtures/fbank/ holds torchaudio's own output and tests/test_features.py checks the two
# agree (max abs difference ~2e-6 in log-mel).

FLOAT32_EPS = float(torch.finfo(torch.float32).eps)  # Kaldi's floor before every log: 1.19e-07
WINDOW_TYPES = ("hamming", "hanning", "povey", "rectangular", "blackman")


def kaldi_mel_scale(freq: torch.Tensor) -> torch.Tensor:
    """Kaldi's (HTK's) mel scale, mel = 1127 · ln(1 + f / 700), f in Hz."""
    return 1127.0 * (1.0 + freq / 700.0).log()


@functools.lru_cache(maxsize=16)
def kaldi_mel_banks(
    num_mel_bins: int, n_fft: int, sample_rate: float, low_freq: float, high_freq: float
) -> torch.Tensor:
    """Kaldi's triangular mel filters, (num_mel_bins, n_fft // 2 + 1), float32, CPU; cached.

    Triangles equally spaced on :func:`kaldi_mel_scale` between ``low_freq`` and ``high_freq``
    (≤ 0: offset from Nyquist), unit peak, unnormalised; evaluated in float32 at the mel values of
    FFT bins 0 … n_fft/2 − 1, the Nyquist bin getting weight 0, as torchaudio's
    ``get_mel_banks`` + ``fbank`` do (no VTLN warp). A triangle narrower than the FFT bin spacing
    may contain no FFT bin: its row is all zeros (16 kHz, n_fft 512, 128 bins: row 3, 63–93 Hz,
    falls between FFT bins 2 and 3 at 62.5 and 93.75 Hz). The cached tensor is shared: do not
    modify it in place.
    """
    if num_mel_bins <= 3:
        raise ValueError("Kaldi fbank needs at least 4 mel bins")
    nyquist = 0.5 * sample_rate
    high_freq = high_freq + nyquist if high_freq <= 0.0 else high_freq
    if not (0.0 <= low_freq < nyquist and 0.0 < high_freq <= nyquist and low_freq < high_freq):
        raise ValueError(f"bad low_freq {low_freq} / high_freq {high_freq} vs Nyquist {nyquist}")
    mel_low, mel_high = (1127.0 * math.log(1.0 + f / 700.0) for f in (low_freq, high_freq))
    delta = (mel_high - mel_low) / (num_mel_bins + 1)
    edges = mel_low + torch.arange(num_mel_bins + 2, dtype=torch.float32)[:, None] * delta
    left, center, right = edges[:-2], edges[1:-1], edges[2:]  # (num_mel_bins, 1) each
    fft_mel = kaldi_mel_scale(sample_rate / n_fft * torch.arange(n_fft // 2, dtype=torch.float32))
    rising = (fft_mel - left) / (center - left)
    falling = (right - fft_mel) / (right - center)
    banks = torch.minimum(rising, falling).clamp_min(0.0)
    return torch.nn.functional.pad(banks, (0, 1))  # the Nyquist bin: weight 0


@functools.lru_cache(maxsize=16)
def kaldi_window(
    window_type: str, size: int, blackman_coeff: float, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Kaldi's frame window, (size,); cached. All symmetric (``periodic=False``).

    ``povey`` = Hann^0.85 (Kaldi's default), ``hanning``, ``hamming`` (0.54 − 0.46 cos),
    ``rectangular``, ``blackman`` (generalised, coefficient ``blackman_coeff``). The cached
    tensor is shared: do not modify it in place.
    """
    kw = {"dtype": dtype, "device": device}
    if window_type == "hanning":
        return torch.hann_window(size, periodic=False, **kw)
    if window_type == "povey":
        return torch.hann_window(size, periodic=False, **kw).pow(0.85)
    if window_type == "hamming":
        return torch.hamming_window(size, periodic=False, alpha=0.54, beta=0.46, **kw)
    if window_type == "rectangular":
        return torch.ones(size, **kw)
    if window_type == "blackman":
        phase = 2 * math.pi / (size - 1) * torch.arange(size, **kw)
        return blackman_coeff - 0.5 * phase.cos() + (0.5 - blackman_coeff) * (2 * phase).cos()
    raise ValueError(f"window_type must be one of {WINDOW_TYPES}, got {window_type!r}")


def _as_float(waveform: torch.Tensor | np.ndarray) -> torch.Tensor:
    """A tensor of the waveform, float32 unless it is floating point already."""
    waveform = torch.as_tensor(waveform)
    return waveform if waveform.is_floating_point() else waveform.float()


def _frames(waveform: torch.Tensor, size: int, shift: int, snip_edges: bool) -> torch.Tensor:
    """(batch, samples) → (batch, frames, size), a strided view (a copy if not ``snip_edges``).

    ``snip_edges``: only frames that fit, 1 + (samples − size) // shift of them. Otherwise
    (samples + shift // 2) // shift frames, the signal mirrored at both ends as Kaldi does
    (… 2 1 0 | 0 1 2 … n−1 | n−1 n−2 …).
    """
    if not snip_edges:
        n_samples = waveform.shape[-1]
        n_frames = (n_samples + shift // 2) // shift
        pad = size // 2 - shift // 2
        mirrored = waveform.flip(-1)
        if pad > 0:
            waveform = torch.cat([mirrored[:, n_samples - pad :], waveform, mirrored], dim=-1)
        else:
            waveform = torch.cat([waveform[:, -pad:], mirrored], dim=-1)
        return waveform.unfold(-1, size, shift)[:, :n_frames]
    return waveform.unfold(-1, size, shift)


def _log_energy(frames: torch.Tensor, energy_floor: float) -> torch.Tensor:
    """log(max(Σ x², eps)) per frame, floored at log(energy_floor) unless that is 0."""
    log_energy = frames.pow(2).sum(-1).clamp_min(FLOAT32_EPS).log()
    return log_energy if energy_floor == 0.0 else log_energy.clamp_min(math.log(energy_floor))


def _mel_energies(
    padded: torch.Tensor, banks: torch.Tensor, use_power: bool, use_log_fbank: bool
) -> torch.Tensor:
    """Windowed, zero-padded frames (batch, frames, n_fft) → mel energies (batch, frames,
    bins): |rfft|² (|rfft| without ``use_power``) through ``banks`` (bins, n_fft // 2 + 1),
    then log(max(·, float32 eps)) with ``use_log_fbank``."""
    spectrum = torch.fft.rfft(padded)  # (batch, frames, n_fft // 2 + 1)
    if use_power:  # re² + im²: torchaudio squares |z| instead, equal up to float rounding
        power = spectrum.real.square()
        power += spectrum.imag.square()
    else:
        power = spectrum.abs()
    mel = power @ banks.to(power.device, power.dtype).T
    if use_log_fbank:
        mel = mel.clamp_min_(FLOAT32_EPS).log_()
    return mel


def kaldi_fbank(
    waveform: torch.Tensor,
    sample_rate: float = 16000,
    num_mel_bins: int = 23,
    frame_length: float = 25.0,
    frame_shift: float = 10.0,
    dither: float = 0.0,
    preemphasis_coefficient: float = 0.97,
    remove_dc_offset: bool = True,
    window_type: str = "povey",
    round_to_power_of_two: bool = True,
    snip_edges: bool = True,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
    use_energy: bool = False,
    use_log_fbank: bool = True,
    use_power: bool = True,
    htk_compat: bool = False,
    energy_floor: float = 1.0,
    raw_energy: bool = True,
    blackman_coeff: float = 0.42,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Kaldi filterbank features, batched: (batch, samples) → (batch, frames, bins).

    Also (samples,) → (frames, bins). bins = ``num_mel_bins`` (+ 1 with ``use_energy``: the
    log energy, first, or last with ``htk_compat``, which changes nothing else). Frame length
    and shift in ms, frequencies in Hz; the waveform in whatever scale the model expects
    (Kaldi's is int16, hence BEATs' × 2^15). Same defaults and same arithmetic as
    ``torchaudio.compliance.kaldi.fbank`` (= Kaldi's ``compute-fbank-feats``) without VTLN
    warping, ``min_duration``, ``subtract_mean`` or channel selection: per frame, optional
    Gaussian dither (× ``dither``, drawn from ``generator``), DC removal, pre-emphasis
    x[j] − c·x[j−1] with x[−1] := x[0], window, zero-padding to a power of two, |rfft|² (or |rfft|
    without ``use_power``), :func:`kaldi_mel_banks`, and log(max(·, float32 eps)). A mel bin that
    receives no FFT bin gives the constant log(eps) ≈ −15.94, as torchaudio does. The one
    departure: |rfft|² is computed as re² + im² where torchaudio squares |z| (faster; the two
    differ by float rounding, ~2e-6 in the log). Vectorised over clips and frames.
    """
    waveform = _as_float(waveform)
    squeeze = waveform.dim() == 1
    waveform = waveform.unsqueeze(0) if squeeze else waveform
    if waveform.dim() != 2:
        raise ValueError(f"waveform must be (samples,) or (batch, samples), got {waveform.shape}")
    size = int(sample_rate * frame_length * 0.001)
    shift = int(sample_rate * frame_shift * 0.001)
    n_fft = 1 << (size - 1).bit_length() if round_to_power_of_two else size
    if not 2 <= size <= waveform.shape[-1] or shift <= 0 or n_fft % 2:
        raise ValueError(f"bad frame: {size} samples, shift {shift}, FFT size {n_fft}")
    if not 0.0 <= preemphasis_coefficient <= 1.0:
        raise ValueError("preemphasis_coefficient must be in [0, 1]")

    frames = _frames(waveform, size, shift, snip_edges)  # (batch, frames, size), a view
    if dither != 0.0:
        noise = torch.randn(frames.shape, generator=generator, dtype=frames.dtype)
        frames = frames + dither * noise.to(frames.device)
    # One zero-padded buffer, worked on in place: fewer passes over memory than torchaudio.
    padded = frames.new_zeros(*frames.shape[:-1], n_fft)
    body = padded[..., :size]
    if remove_dc_offset:
        torch.sub(frames, frames.mean(-1, keepdim=True), out=body)
    else:
        body.copy_(frames)
    if use_energy and raw_energy:
        log_energy = _log_energy(body, energy_floor)
    if preemphasis_coefficient != 0.0:  # x[j] − c·x[j−1], x[−1] := x[0]
        previous = body[..., :-1] * preemphasis_coefficient
        body[..., 1:] -= previous
        body[..., 0] -= previous[..., 0]
    body *= kaldi_window(window_type, size, blackman_coeff, frames.dtype, frames.device)
    if use_energy and not raw_energy:
        log_energy = _log_energy(body, energy_floor)  # the zero padding adds no energy

    banks = kaldi_mel_banks(num_mel_bins, n_fft, float(sample_rate), low_freq, high_freq)
    mel = _mel_energies(padded, banks, use_power, use_log_fbank)
    if use_energy:
        parts = [mel, log_energy[..., None]]
        mel = torch.cat(parts if htk_compat else parts[::-1], dim=-1)
    return mel[0] if squeeze else mel


BEATS_FBANK_MEAN, BEATS_FBANK_STD = 15.41663, 6.55582
EAT_FBANK_MEAN, EAT_FBANK_STD = -4.268, 4.569


def beats_fbank(waveform: torch.Tensor) -> torch.Tensor:
    """BEATs' input features: (batch, samples) at 16 kHz in [-1, 1] → (batch, frames, 128).

    As ``BEATs.preprocess`` (microsoft/unilm, beats/BEATs.py): the waveform × 2^15, then
    torchaudio's Kaldi fbank with 128 mel bins, 25 ms frames, 10 ms shift and every other
    option at its default (povey window, no dither, pre-emphasis 0.97, DC removal, power
    spectrum, low_freq 20 Hz, snip_edges): 1 + (samples − 400) // 160 frames, 998 for 10 s.
    Also (samples,) → (frames, 128). Unnormalised; see :func:`beats_normalize`.
    """
    return kaldi_fbank(_as_float(waveform) * 2**15, sample_rate=16000, num_mel_bins=128)


def beats_normalize(fbank: torch.Tensor) -> torch.Tensor:
    """BEATs' normalisation: (fbank − 15.41663) / (2 · 6.55582) (upstream doubles the std)."""
    return (fbank - BEATS_FBANK_MEAN) / (2 * BEATS_FBANK_STD)


def eat_fbank(waveform: torch.Tensor, target_length: int | None = 1024) -> torch.Tensor:
    """EAT's input features: (batch, samples) at 16 kHz → (batch, target_length, 128).

    As EAT's feature extraction and data set (cwx-worst-one/EAT: feature_extract/
    feature_extract.py, which feeds the fairseq model and the Hugging Face port alike, and
    data/raw_audio_dataset.py): each clip's mean is subtracted (no 2^15 scaling), then
    torchaudio's Kaldi fbank with ``htk_compat=True, window_type='hanning', num_mel_bins=128,
    use_energy=False, dither=0, frame_shift=10`` (25 ms frames; ``htk_compat`` only moves the
    energy column, absent here), then zero-padded or cropped at the end to ``target_length``
    frames (1024 for 10 s) — zeros before normalisation, as upstream. ``target_length`` must be
    a multiple of 16 (the 16 × 16 patches); ``None`` keeps every frame and zero-pads up to the
    next multiple of 16, as upstream's variable-length recipe (feature_extract/readme.md).
    Also (samples,) → (target_length, 128). Unnormalised; see :func:`eat_normalize`.
    """
    if target_length is not None and (target_length <= 0 or target_length % 16):
        raise ValueError(f"target_length must be a positive multiple of 16, got {target_length}")
    waveform = _as_float(waveform)
    waveform = waveform - waveform.mean(-1, keepdim=True)
    fbank = kaldi_fbank(waveform, sample_rate=16000, num_mel_bins=128, window_type="hanning")
    n_frames = fbank.shape[-2]
    target_length = -(-n_frames // 16) * 16 if target_length is None else target_length
    if n_frames >= target_length:
        return fbank[..., :target_length, :]
    return torch.nn.functional.pad(fbank, (0, 0, 0, target_length - n_frames))


def eat_normalize(fbank: torch.Tensor) -> torch.Tensor:
    """EAT's AudioSet normalisation: (fbank − (−4.268)) / (2 · 4.569) (upstream doubles the std)."""
    return (fbank - EAT_FBANK_MEAN) / (2 * EAT_FBANK_STD)


# --- augmentation --------------------------------------------------------------------------------


def _random_bands(
    batch: int,
    n_masks: int,
    max_width: int,
    size: int,
    generator: torch.Generator | None,
    device: torch.device,
) -> torch.Tensor:
    """(batch, size) bool: per clip, the union of ``n_masks`` bands of width U{0 … max_width − 1}
    (at most ``size``) starting at U{0 … size − width}."""
    if n_masks <= 0 or max_width <= 0:
        return torch.zeros(batch, size, dtype=torch.bool, device=device)
    u_width, u_start = torch.rand(2, batch, n_masks, 1, generator=generator).to(device)
    width = (u_width * max_width).long().clamp_max(size)
    start = (u_start * (size - width + 1)).long()
    index = torch.arange(size, device=device)
    return ((index >= start) & (index < start + width)).any(1)


def spec_augment(
    features: torch.Tensor,
    freq_mask: int = 80,
    time_mask: int = 80,
    n_freq_masks: int = 1,
    n_time_masks: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """SpecAugment's time and frequency masking (Park et al., Interspeech 2019, sec. 2), batched.

    (batch, frames, bins) → a new tensor of the same shape. For each clip independently, each of
    the ``n_time_masks`` (``n_freq_masks``) masks has a width w drawn uniformly from
    {0, …, ``time_mask`` − 1} ({0, …, ``freq_mask`` − 1}) and a start uniformly from
    {0, …, frames − w} ({0, …, bins − w}); masked values are set to 0, which after
    :func:`beats_normalize` / :func:`eat_normalize` is the (AudioSet) mean, so apply it to
    normalised features. No time warping, no cap on time masks as a fraction of the clip. Random
    numbers come from ``generator`` (a CPU one), time masks first. Training only: the caller
    applies it to training batches, never to features it scores.

    The XJU paper's Table 1 says only "SpecAugment, 80". It is read here as a maximum mask width
    of 80 on both axes (frames and mel bins), one mask of each; the paper does not say whether
    80 bounds the width (the paper's F and T) or is a fixed width, which axis it applies to, or
    how many masks there are.
    """
    batch, n_frames, n_bins = features.shape
    device = features.device
    frames = _random_bands(batch, n_time_masks, time_mask, n_frames, generator, device)
    bins = _random_bands(batch, n_freq_masks, freq_mask, n_bins, generator, device)
    return features.masked_fill(frames[:, :, None] | bins[:, None, :], 0.0)
