"""The two-channel front ends (asd_utils.frontends.twochannel): W1 and SS against the upstream
code's outputs (tests/fixtures/twochannel/), the transforms against torch's, W1's physics on a
synthetic pair, and the table of views."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import lfilter

from asd_utils.frontends import anc, twochannel
from asd_utils.frontends.views import load_waveform
from asd_utils.systems import training_free

FIXTURE = Path(__file__).parent / "fixtures" / "twochannel" / "reference.npz"
RATE = 16000


@pytest.fixture(scope="module")
def reference():
    with np.load(FIXTURE) as f:
        return dict(f)


def _stereo(reference, i):
    return reference[f"stereo_{i}"].astype(np.float32) / 2**15


@pytest.mark.parametrize("name", ["w1", "ss"])
@pytest.mark.parametrize("i", [0, 1])
def test_matches_upstream(reference, name, i):
    near, far = _stereo(reference, i)
    out = twochannel.VIEWS[name](near, far)
    assert out.dtype == np.float32 and out.shape == near.shape
    np.testing.assert_allclose(out, reference[f"{name}_{i}"], rtol=0, atol=1e-5)


def test_a_batch_is_each_clip_alone(reference):
    near, far = _stereo(reference, 0)
    batch = twochannel.w1(np.stack([near, 0.3 * near]), torch.from_numpy(np.stack([far, far])))
    np.testing.assert_allclose(batch[0], reference["w1_0"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(batch[1], twochannel.w1(0.3 * near, far), rtol=0, atol=1e-6)


@pytest.mark.parametrize("n_fft, hop, length", [(1024, 512, 5000), (512, 256, 4097)])
def test_stft_is_torchs_and_inverts(n_fft, hop, length):
    x = np.random.default_rng(1).standard_normal((2, length))
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    expected = torch.stft(
        torch.from_numpy(x), n_fft, hop, window=window, center=True, pad_mode="reflect",
        return_complex=True,
    ).numpy()  # fmt: skip
    spectra = twochannel.stft(x, n_fft, hop)
    np.testing.assert_allclose(spectra, expected, atol=1e-10)
    np.testing.assert_allclose(twochannel.istft(spectra, n_fft, hop, length), x, atol=1e-10)


def _energy_db(x) -> float:
    return 10 * np.log10(np.sum(np.square(x, dtype=np.float64)))


def test_w1_removes_far_born_noise_and_keeps_a_near_tone():
    """A noise born at the far mic reaches the near one through a fixed FIR path (a delay and two
    echoes); the near mic alone also hears a machine tone. W1 leaves the noise ≥ 20 dB down and
    the tone within 1 dB."""
    rng = np.random.default_rng(7)
    t = np.arange(3 * RATE) / RATE
    tone = 0.2 * np.sin(2 * np.pi * 630 * t)
    noise = 0.2 * rng.standard_normal(len(t))
    path = np.zeros(40)
    path[[5, 17, 39]] = [0.8, -0.3, 0.15]
    noise_at_near = lfilter(path, [1.0], noise)
    out = twochannel.w1(tone + noise_at_near, noise).astype(np.float64)
    assert _energy_db(noise_at_near) - _energy_db(out - tone) >= 20
    gain = np.dot(out, tone) / np.dot(tone, tone)
    assert abs(20 * np.log10(gain)) <= 1
    # the same pair without W1: the residual view at α = 1 does not cancel a filtered path
    plain = twochannel.residual(tone + noise_at_near, noise, 1.0) - tone
    assert _energy_db(noise_at_near) - _energy_db(plain) < 5


def test_ss_keeps_near_where_far_is_silent_and_floors_it_elsewhere():
    rng = np.random.default_rng(3)
    near = rng.standard_normal(8000)
    np.testing.assert_allclose(twochannel.ss(near, np.zeros_like(near)), near, atol=1e-5)
    np.testing.assert_allclose(twochannel.ss(near, 2 * near), 0.1 * near, atol=1e-5)


def test_views_table_and_residual():
    rng = np.random.default_rng(0)
    near, far = rng.standard_normal((2, 2, 4000)).astype(np.float32)
    assert list(twochannel.VIEWS) == ["near", "far", "fblms", "w1", "ss", "residual"]
    for name in twochannel.VIEWS:
        out = twochannel.view(name, near, far)
        assert out.shape == near.shape and out.dtype == np.float32, name
    np.testing.assert_array_equal(twochannel.view("near", near, far), near)
    np.testing.assert_array_equal(twochannel.view("far", near, far), far)
    np.testing.assert_array_equal(
        twochannel.view("residual", near, far, alpha=0.25), near - np.float32(0.25) * far
    )
    settings = {"filter_length": 64, "step_size": 0.2}
    expected = anc.denoise(torch.from_numpy(np.stack([near, far], 1)), **settings).numpy()
    np.testing.assert_array_equal(twochannel.view("fblms", near, far, **settings), expected)
    with pytest.raises(ValueError, match="unknown view"):
        twochannel.view("w2", near, far)
    with pytest.raises(ValueError, match="one shape"):
        twochannel.w1(near, far[:, :-1])


def test_system_0s_residual_view_is_the_front_ends():
    rng = np.random.default_rng(2)
    embeddings = {c: rng.standard_normal((5, 2, 8)).astype(np.float32) for c in ("near", "far")}
    expected = twochannel.residual(embeddings["near"][:, -1], embeddings["far"][:, -1], 0.5)
    np.testing.assert_array_equal(training_free.view(embeddings, "residual", 0.5), expected)


def test_a_view_reads_a_stereo_file(tmp_path, reference):
    path = tmp_path / "clip.wav"
    sf.write(path, reference["stereo_0"].T, RATE, subtype="PCM_16")
    out = load_waveform(path, preprocess=twochannel.preprocess("w1"))
    np.testing.assert_allclose(out, reference["w1_0"], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="two channels"):
        twochannel.preprocess("ss")(np.zeros((1, 1000), np.float32))
