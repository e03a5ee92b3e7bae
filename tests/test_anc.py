"""Tests for asd_utils.frontends.anc on synthetic near/far mixtures with a known acoustic path."""

import numpy as np
import pandas as pd
import pytest
import torch

from asd_utils import config
from asd_utils.frontends import anc
from asd_utils.studies import denoising

SR = 16_000
mixture = denoising.known_path_mixture  # 3 s, machine 10 dB below the noise, 96-tap path


def noise_reduction_db(clean, noise, output, skip):
    """Noise in the primary over the noise left in the output (``output - clean``), in dB."""
    return float(denoising.snr_db(noise[skip:], np.asarray(output)[skip:] - clean[skip:]))


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
    np.testing.assert_allclose(denoising.snr_db(clean, noise), [10 * np.log10(4), 20], rtol=1e-12)
    np.testing.assert_allclose(denoising.snr_db(torch.tensor(clean[0]), noise[0]), 10 * np.log10(4))


def test_si_sdr_db_known_case_and_scale_invariance():
    t = np.arange(SR) / SR
    reference = np.sin(2 * np.pi * 100 * t)
    estimate = reference + 0.1 * np.cos(2 * np.pi * 100 * t)  # orthogonal error at -20 dB
    np.testing.assert_allclose(denoising.si_sdr_db(reference, estimate), 20, atol=1e-6)
    batch_ref, batch_est = np.stack([reference, reference]), np.stack([estimate, 0.01 * estimate])
    np.testing.assert_allclose(denoising.si_sdr_db(batch_ref, batch_est), [20, 20], atol=1e-6)
    assert denoising.si_sdr_db(reference, estimate + 0.1 * np.sin(2 * np.pi * 300 * t)) < 18


# --- splitting the output and measuring the canceller on clips with known parts ---------------


def _two_mic_clip(seconds=2.0, seed=0, leak_db=None):
    """``(machine, noise)`` as ``synth.SynthClip`` holds them, ``(2, samples)`` each, from a
    known-path mixture; with ``leak_db`` the far mic also hears the machine, delayed by 40
    samples and ``leak_db`` below its near level."""
    clean, noise, _, reference, _ = mixture(seconds=seconds, seed=seed)
    far_machine = np.zeros_like(clean)
    if leak_db is not None:
        far_machine[40:] = clean[:-40] * 10 ** (leak_db / 20)
    return np.stack([clean, far_machine]), np.stack([noise, reference])


def test_fblms_components_split_the_output_exactly():
    machine, noise = _two_mic_clip(seconds=1.3, leak_db=-6)  # not a multiple of the block
    primary, reference = machine[0] + noise[0], machine[1] + noise[1]
    out, (y_machine, y_noise) = anc.fblms(
        primary, reference, block_size=300, components=np.stack([machine[1], noise[1]])
    )
    np.testing.assert_array_equal(out, anc.fblms(primary, reference, block_size=300))
    np.testing.assert_allclose(
        (machine[0] - y_machine.numpy()) + (noise[0] - y_noise.numpy()), out, rtol=0, atol=1e-9
    )
    batch = torch.tensor(np.stack([primary, primary]))
    parts = torch.tensor(np.stack([np.stack([machine[1]] * 2), np.stack([noise[1]] * 2)]))
    out2, w2, y2 = anc.fblms(
        batch, parts.sum(0), block_size=300, return_filter=True, components=parts
    )
    assert y2.shape == (2, 2, primary.size) and w2.shape == (2, 512)
    np.testing.assert_allclose(y2[:, 1], torch.stack([y_machine, y_noise]), atol=1e-9)
    with pytest.raises(ValueError, match="components must have shape"):
        anc.fblms(primary, reference, components=machine[1])


def test_evaluate_denoising_without_leakage_matches_the_oracle():
    clips = [_two_mic_clip(seed=seed) for seed in range(2)]
    machine, noise = [c[0] for c in clips], [c[1] for c in clips]
    result = denoising.evaluate_denoising(machine, noise, step_size=0.2)
    oracle = denoising.evaluate_denoising(machine, noise, oracle=True, step_size=0.2)
    assert list(result.columns) == list(denoising.MEASURES) and len(result) == 2
    pd.testing.assert_frame_equal(result, oracle)
    assert (result["noise_reduction_db"] > 10).all()
    assert (result["machine_removed_db"] == -np.inf).all()
    assert np.allclose(result["machine_change_db"], 0)
    np.testing.assert_allclose(
        result["snr_before_db"], [float(denoising.snr_db(m[0], n[0])) for m, n in clips], rtol=1e-12
    )
    assert (result["si_sdr_gain_db"] > 5).all() and (result["snr_gain_db"] > 5).all()


def test_evaluate_denoising_measures_the_machine_sound_removed():
    machine, noise = _two_mic_clip(leak_db=-10)
    result = denoising.evaluate_denoising([machine], [noise], step_size=0.2).iloc[0]
    oracle = denoising.evaluate_denoising([machine], [noise], oracle=True, step_size=0.2).iloc[0]
    assert -30 < result["machine_removed_db"] < 0 and result["noise_reduction_db"] > 5
    assert result["si_sdr_gain_db"] < oracle["si_sdr_gain_db"] - 2  # the cost of the leak
    assert oracle["machine_change_db"] == 0 and oracle["machine_removed_db"] == -np.inf


def test_evaluate_denoising_takes_clips_of_different_lengths_in_input_order():
    long, short = _two_mic_clip(seconds=1.5, seed=1), _two_mic_clip(seconds=1.0, seed=2)
    both = denoising.evaluate_denoising([long[0], short[0]], [long[1], short[1]], filter_length=128)
    alone = denoising.evaluate_denoising([short[0]], [short[1]], filter_length=128)
    pd.testing.assert_frame_equal(both.iloc[[1]].reset_index(drop=True), alone)
    with pytest.raises(ValueError, match="same number of clips"):
        denoising.evaluate_denoising([long[0]], [short[1]])


def test_convergence_curve_noise_reduction_grows_over_the_clip():
    machine, noise = _two_mic_clip(seconds=2.1)
    curve = denoising.convergence_curve([machine], [noise], window_seconds=0.5, step_size=0.1)
    assert list(curve.columns) == ["clip", "time_s", *denoising.MEASURES]
    np.testing.assert_allclose(curve["time_s"], [0.25, 0.75, 1.25, 1.75])  # last 0.1 s dropped
    reduction = curve["noise_reduction_db"].to_numpy()
    assert reduction[-1] > reduction[0] + 5


def test_denoiser_settings_keep_only_filter_settings():
    section = {"filter_length": 128, "step_size": 0.1, "leakage": 0.25, "block_size": 2048}
    smoke = config.load_profile("smoke").anc
    assert anc.denoiser_settings(smoke.model_copy(update=section)) == section


def test_anc_plots_return_figures():
    import matplotlib.pyplot as plt

    from asd_utils.report import plots

    machine, noise = _two_mic_clip(seconds=1.0)
    sweep = pd.concat(
        [
            denoising.evaluate_denoising([machine], [noise], filter_length=n, step_size=mu).assign(
                filter_length=n, step_size=mu
            )
            for n in (64, 128)
            for mu in (0.1, 0.2)
        ]
    )
    curve = denoising.convergence_curve([machine], [noise], 0.25).assign(machine_type="fan")
    figures = [
        plots.spectrogram_panels({"near": machine[0] + noise[0], "clean": machine[0]}, SR, "x"),
        plots.anc_sweep(sweep, chosen={"filter_length": 128, "step_size": 0.1}),
        plots.anc_convergence(curve),
    ]
    assert all(isinstance(f, plt.Figure) for f in figures)
    plt.close("all")
