"""Tests of asd_utils.frontends.features: the baseline's log-mel, the backbones' Kaldi fbank,
SpecAugment."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from asd_utils.frontends.features import (
    beats_fbank,
    beats_normalize,
    eat_fbank,
    eat_normalize,
    kaldi_fbank,
    kaldi_mel_banks,
    log_mel,
    spec_augment,
    stack_frames,
)

REFERENCE = Path(__file__).parent / "fixtures" / "fbank" / "reference.npz"
INPUTS = ("noise", "chirp", "real")
LOG_EPS = math.log(torch.finfo(torch.float32).eps)
EMPTY_MEL_BIN = 3  # 16 kHz, n_fft 512, 128 bins: the triangle 63–93 Hz holds no FFT bin


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    """torchaudio's fbank for the BEATs and EAT parameter sets (see fixtures/fbank/README.md)."""
    with np.load(REFERENCE) as data:
        return dict(data)


def _sine(freq: float, seconds: float = 1.0, sample_rate: int = 16000) -> torch.Tensor:
    t = torch.arange(int(seconds * sample_rate), dtype=torch.float64) / sample_rate
    return (0.5 * torch.sin(2 * math.pi * freq * t)).float()


# --- parity with torchaudio.compliance.kaldi.fbank ----------------------------------------------

# A float32 FFT resolves a bin's power only down to about 1e-12 of the frame's strongest: below
# that the value is rounding noise, which differs between CPUs (an AVX-512 Xeon gives -7.1 where
# torchaudio, run on another machine, wrote -4.1 for the chirp's empty bins). Parity is checked
# where the reference lies within 20 nats (a power ratio of 2e-9) of its frame's maximum: all of
# the noise and real clips' bins but the empty one, a quarter of the chirp's.
RESOLVABLE_NATS = 20.0


def _assert_matches(ours: torch.Tensor, expected: torch.Tensor) -> None:
    """``ours`` equals torchaudio's log-mel to 1e-3 wherever float32 can tell (see above)."""
    resolvable = expected >= expected.max(1, keepdim=True).values - RESOLVABLE_NATS
    assert resolvable.float().mean() > 0.2
    assert (ours - expected).abs()[resolvable].max() <= 1e-3


@pytest.mark.parametrize("name", INPUTS)
def test_beats_fbank_matches_torchaudio(reference, name):
    expected = torch.from_numpy(reference[f"{name}_beats"])
    ours = beats_fbank(torch.from_numpy(reference[f"{name}_waveform"])[None])[0]
    assert ours.shape == expected.shape
    _assert_matches(ours, expected)


@pytest.mark.parametrize("name", INPUTS)
def test_eat_fbank_matches_torchaudio(reference, name):
    expected = torch.from_numpy(reference[f"{name}_eat"])
    ours = eat_fbank(torch.from_numpy(reference[f"{name}_waveform"]), target_length=None)
    n_frames = len(expected)
    assert ours.shape == (math.ceil(n_frames / 16) * 16, 128)
    _assert_matches(ours[:n_frames], expected)
    assert not ours[n_frames:].any()  # upstream zero-pads the raw fbank


def test_batched_fbank_matches_torchaudio(reference):
    waveforms = torch.stack([torch.from_numpy(reference[f"{n}_waveform"]) for n in INPUTS[:2]])
    for ours, key in ((beats_fbank(waveforms), "beats"), (eat_fbank(waveforms, None), "eat")):
        for clip, name in zip(ours, INPUTS[:2], strict=True):
            expected = torch.from_numpy(reference[f"{name}_{key}"])
            _assert_matches(clip[: len(expected)], expected)


@pytest.mark.parametrize("name", INPUTS)
def test_empty_mel_bin_is_log_eps_as_in_torchaudio(reference, name):
    rows_without_fft_bin = (kaldi_mel_banks(128, 512, 16000.0, 20.0, 0.0).sum(1) == 0).nonzero()
    assert rows_without_fft_bin.flatten().tolist() == [EMPTY_MEL_BIN]
    waveform = torch.from_numpy(reference[f"{name}_waveform"])
    for ours, key in ((beats_fbank(waveform), "beats"), (eat_fbank(waveform, None), "eat")):
        expected = torch.from_numpy(reference[f"{name}_{key}"][:, EMPTY_MEL_BIN])
        column = ours[: len(expected), EMPTY_MEL_BIN]
        assert torch.equal(column, expected)
        assert torch.equal(column, torch.full_like(column, LOG_EPS))


def test_normalisations_follow_upstream_constants():
    fbank = torch.tensor([15.41663, 15.41663 + 2 * 6.55582, -4.268, -4.268 + 2 * 4.569])
    torch.testing.assert_close(beats_normalize(fbank)[:2], torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(eat_normalize(fbank)[2:], torch.tensor([0.0, 1.0]))


# --- kaldi_fbank ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"num_mel_bins": 128},
        {"num_mel_bins": 40, "window_type": "hamming", "use_energy": True, "snip_edges": False},
        {"window_type": "blackman", "use_energy": True, "raw_energy": False, "htk_compat": True},
    ],
)
def test_kaldi_fbank_batch_equals_one_by_one(options):
    waveforms = torch.randn(4, 8000, generator=torch.Generator().manual_seed(0)) * 1000
    batched = kaldi_fbank(waveforms, **options)
    single = torch.stack([kaldi_fbank(waveform, **options) for waveform in waveforms])
    assert batched.shape == single.shape
    assert batched.shape[-1] == options.get("num_mel_bins", 23) + options.get("use_energy", False)
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-5)


def test_kaldi_fbank_frame_count_and_sine_peak():
    # 16 kHz, 25 ms / 10 ms: 1 + (16000 − 400) // 160 = 98 frames
    fbank = beats_fbank(_sine(1000.0)[None])
    assert fbank.shape == (1, 98, 128)
    # Kaldi mel: 1000 Hz = 1000.0 mel; triangle k peaks at 31.75 + (k + 1) · 21.77 mel (20 Hz to
    # 8 kHz in 129 steps), nearest for k = 43 (989.6 mel)
    assert (fbank[0, 1:-1].argmax(1) == 43).all()


def test_kaldi_fbank_rejects_short_input():
    with pytest.raises(ValueError):
        kaldi_fbank(torch.zeros(1, 100))


# --- eat_fbank -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds, n_frames", [(6, 598), (10, 998), (12, 1198), (16, 1598)])
def test_eat_fbank_pads_and_crops_to_target_length(seconds, n_frames):
    waveforms = torch.randn(2, seconds * 16000, generator=torch.Generator().manual_seed(seconds))
    fbank = eat_fbank(0.1 * waveforms, target_length=1024)
    assert fbank.shape == (2, 1024, 128)
    if n_frames < 1024:
        assert not fbank[:, n_frames:].any()
        assert fbank[:, n_frames - 1].abs().min() > 0
    else:
        uncropped = eat_fbank(0.1 * waveforms, target_length=None)  # rounded up to 16
        assert torch.equal(fbank, uncropped[:, :1024])


def test_eat_fbank_target_length_rules():
    waveform = torch.randn(16000, generator=torch.Generator().manual_seed(1))
    assert eat_fbank(waveform, target_length=None).shape == (112, 128)  # 98 frames → 112
    assert eat_fbank(waveform, target_length=64).shape == (64, 128)
    with pytest.raises(ValueError):
        eat_fbank(waveform, target_length=1000)


# --- spec_augment --------------------------------------------------------------------------------


def _features(batch: int = 32, frames: int = 300, bins: int = 128) -> torch.Tensor:
    return torch.rand(batch, frames, bins, generator=torch.Generator().manual_seed(7)) + 1.0


def test_spec_augment_is_reproducible_and_new():
    features = _features()
    first = spec_augment(features, generator=torch.Generator().manual_seed(3))
    again = spec_augment(features, generator=torch.Generator().manual_seed(3))
    other = spec_augment(features, generator=torch.Generator().manual_seed(4))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert features.min() >= 1.0  # input untouched


def test_spec_augment_masks_bands_narrower_than_80():
    features = _features()
    out = spec_augment(features, generator=torch.Generator().manual_seed(5))
    zero = out == 0
    frames_masked = zero.all(2)  # (batch, frames)
    bins_masked = zero.all(1)  # (batch, bins)
    # every zero lies in a fully masked frame or bin, and the rest is untouched
    assert torch.equal(zero, frames_masked[:, :, None] | bins_masked[:, None, :])
    assert torch.equal(out[~zero], features[~zero])
    assert frames_masked.sum(1).max() < 80 and bins_masked.sum(1).max() < 80
    assert (~zero).flatten(1).any(1).all()  # some values untouched in every clip
    assert frames_masked.sum(1).max() > 40  # widths do span [0, 80)
    # each clip draws its own masks
    assert len({tuple(row.nonzero().flatten().tolist()) for row in bins_masked}) > 16


def test_spec_augment_noop_with_zero_masks():
    features = _features(batch=4)
    out = spec_augment(features, freq_mask=0, time_mask=0)
    assert torch.equal(out, features) and out.data_ptr() != features.data_ptr()
    assert torch.equal(spec_augment(features, n_freq_masks=0, n_time_masks=0), features)


# --- the autoencoder baseline's log-mel ----------------------------------------------------------


@pytest.mark.parametrize("n_samples", [16000, 16384, 160000, 192000])
def test_log_mel_frame_count(n_samples):
    assert log_mel(torch.zeros(2, n_samples)).shape == (2, 1 + n_samples // 512, 128)


@pytest.mark.parametrize("freq, mel_bin", [(440.0, 18), (1000.0, 42), (3000.0, 87)])
def test_log_mel_sine_peaks_in_its_mel_bin(freq, mel_bin):
    # Slaney mel: 128 triangles between 0 and mel(8 kHz) = 45.25, centres 0.3508 apart; the bin
    # whose centre is nearest: 440 Hz = 6.60 mel → 18; 1 kHz = 15 → 42; 3 kHz = 30.98 → 87.
    spectrum = log_mel(_sine(freq)[None])[0]
    assert (spectrum[2:-2].argmax(1) == mel_bin).all()


def test_stack_frames_shape_and_order():
    frames, n_mels = 12, 128
    t, m = torch.meshgrid(torch.arange(frames), torch.arange(n_mels), indexing="ij")
    log_mel_frames = torch.stack([1000.0 * t + m, -(1000.0 * t + m)])  # (2, frames, n_mels)
    vectors = stack_frames(log_mel_frames)
    assert vectors.shape == (2, frames - 4, 640)
    for k in range(5):  # vector t holds frames t … t + 4, oldest first
        assert torch.equal(
            vectors[:, :, k * n_mels : (k + 1) * n_mels], log_mel_frames[:, k:][:, :8]
        )
