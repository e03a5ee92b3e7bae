"""Tests for asd_utils.anc on synthetic near/far mixtures with a known acoustic path."""

import numpy as np
import pytest
import torch

from asd_utils import anc

SR = 16_000
mixture = anc.known_path_mixture  # 3 s, machine 10 dB below the noise, 96-tap path


def noise_reduction_db(clean, noise, output, skip):
    """Noise in the primary over the noise left in the output (``output - clean``), in dB."""
    return float(anc.snr_db(noise[skip:], np.asarray(output)[skip:] - clean[skip:]))


@pytest.mark.parametrize("coloured", [False, True])
def test_fblms_cancels_noise_through_known_path(coloured):
    clean, noise, primary, reference, _ = mixture(coloured=coloured)
    out = anc.fblms(primary, reference, step_size=0.2)
    assert out.shape == primary.shape and out.dtype == torch.float64
    assert noise_reduction_db(clean, noise, out, skip=SR) >= 20


def test_fblms_float32_matches_float64():
    _, _, primary, reference, _ = mixture()
    out64 = anc.fblms(primary, reference, step_size=0.2)
    out32 = anc.fblms(primary.astype(np.float32), reference.astype(np.float32), step_size=0.2)
    assert out32.dtype == torch.float32
    np.testing.assert_allclose(out32, out64, rtol=0, atol=1e-3 * out64.std().item())


def test_nlms_cancels_noise_through_known_path():
    clean, noise, primary, reference, _ = mixture(seconds=1.5)
    out = anc.nlms(primary, reference, filter_length=128, step_size=0.2)
    assert noise_reduction_db(clean, noise, out, skip=SR // 2) >= 15


def test_fblms_filter_converges_to_the_path():
    _, _, primary, reference, h = mixture()
    _, w = anc.fblms(primary, reference, step_size=0.2, return_filter=True)
    assert w.shape == (512,)
    truth = np.pad(h, (0, 512 - h.size))
    assert np.linalg.norm(w.numpy() - truth) / np.linalg.norm(truth) < 0.1


def test_fblms_filter_has_filter_length_taps():
    """The gradient constraint keeps W a linear FIR of filter_length taps: a pure delay just
    beyond it cannot be modelled (an unconstrained FBLMS wraps around and partly does)."""
    rng = np.random.default_rng(5)
    reference = rng.standard_normal(2 * SR)
    noise = np.concatenate([np.zeros(520), reference[:-520]])
    clean = 0.3 * np.sin(2 * np.pi * 150 * np.arange(2 * SR) / SR)
    short = anc.fblms(clean + noise, reference, filter_length=512, step_size=0.2)
    long = anc.fblms(clean + noise, reference, filter_length=1024, step_size=0.2)
    assert noise_reduction_db(clean, noise, short, skip=SR) < 1
    assert noise_reduction_db(clean, noise, long, skip=SR) >= 15


def test_fblms_batch_equals_one_clip_at_a_time():
    clips = [mixture(seconds=1.3, seed=seed, coloured=seed == 1) for seed in range(3)]
    d = torch.tensor(np.stack([c[2] for c in clips]))  # 20800 samples: not a block multiple
    x = torch.tensor(np.stack([c[3] for c in clips]))
    out, w = anc.fblms(d, x, leakage=0.1, return_filter=True)
    assert out.shape == d.shape and w.shape == (3, 512)
    for i in range(3):
        out_i, w_i = anc.fblms(d[i], x[i], leakage=0.1, return_filter=True)
        np.testing.assert_allclose(out[i], out_i, rtol=0, atol=1e-10)
        np.testing.assert_allclose(w[i], w_i, rtol=0, atol=1e-12)


def test_leakage_shrinks_the_filter():
    _, _, primary, reference, _ = mixture(seconds=2)
    _, w0 = anc.fblms(primary, reference, return_filter=True)
    _, w1 = anc.fblms(primary, reference, leakage=0.5, return_filter=True)
    assert w1.norm() < 0.8 * w0.norm()


def test_denoise_uses_near_as_primary_and_far_as_reference():
    clips = [mixture(seconds=1, seed=seed) for seed in range(2)]
    audio = torch.tensor(np.stack([np.stack([c[2], c[3]]) for c in clips]), dtype=torch.float32)
    out = anc.denoise(audio, filter_length=256)
    assert out.shape == (2, SR)
    np.testing.assert_array_equal(out[1], anc.fblms(audio[1, 0], audio[1, 1], filter_length=256))
    assert anc.denoise(audio[0], method="nlms", filter_length=16).shape == (SR,)


def test_denoise_mono_raises_or_passes_through():
    mono = torch.randn(1, 4000)
    with pytest.raises(ValueError, match=r"ANC needs two channels \(near, far\); got mono audio"):
        anc.denoise(mono)
    anc._warn_mono_once.cache_clear()
    with pytest.warns(UserWarning, match="mono"):
        out = anc.denoise(mono, passthrough_mono=True)
    np.testing.assert_array_equal(out, mono[0])
    assert anc.denoise(mono[None], passthrough_mono=True).shape == (1, 4000)


def test_snr_db_known_case_and_batch():
    clean = np.stack([np.full(100, 2.0), np.full(100, 1.0)])
    noise = np.stack([np.full(100, 1.0), np.full(100, 0.1)])
    np.testing.assert_allclose(anc.snr_db(clean, noise), [10 * np.log10(4), 20], rtol=1e-12)
    np.testing.assert_allclose(anc.snr_db(torch.tensor(clean[0]), noise[0]), 10 * np.log10(4))


def test_si_sdr_db_known_case_and_scale_invariance():
    t = np.arange(SR) / SR
    reference = np.sin(2 * np.pi * 100 * t)
    estimate = reference + 0.1 * np.cos(2 * np.pi * 100 * t)  # orthogonal error at -20 dB
    np.testing.assert_allclose(anc.si_sdr_db(reference, estimate), 20, atol=1e-6)
    batch_ref, batch_est = np.stack([reference, reference]), np.stack([estimate, 0.01 * estimate])
    np.testing.assert_allclose(anc.si_sdr_db(batch_ref, batch_est), [20, 20], atol=1e-6)
    assert anc.si_sdr_db(reference, estimate + 0.1 * np.sin(2 * np.pi * 300 * t)) < 18
