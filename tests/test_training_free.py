"""System 0 (training-free: a frozen encoder on both channels), its channel views, and the log-mel
floor."""

import numpy as np
import pandas as pd
import pytest
import torch

from asd_utils import config, data, stages, systems
from asd_utils.frontends import anc, twochannel
from asd_utils.models.beats import BEATs, BEATsConfig
from asd_utils.models.eat import EAT, EATConfig
from asd_utils.models.frozen import FrozenEncoder, block_numbers
from asd_utils.systems import training_free

torch.manual_seed(0)
BACKBONES = {
    "eat": lambda: EAT(EATConfig.tiny(), target_length=None),
    "beats": lambda: BEATs(BEATsConfig.tiny()),
}


def waveforms(lengths, seed=0):
    rng = np.random.default_rng(seed)
    clips = [torch.from_numpy(rng.uniform(-0.3, 0.3, n).astype(np.float32)) for n in lengths]
    return clips, torch.nn.utils.rnn.pad_sequence(clips, batch_first=True), torch.tensor(lengths)


@pytest.mark.parametrize(
    "kind,pooling",
    [
        ("eat", "time_mean"),
        ("eat", "mean"),
        ("eat", "max"),
        ("eat", "cls"),
        ("beats", "time_mean"),
        ("beats", "mean"),
    ],
)
def test_padded_batch_gives_each_clip_what_it_gets_alone(kind, pooling):
    torch.manual_seed(0)
    encoder = FrozenEncoder(BACKBONES[kind](), layers=[1, -1], pooling=pooling)
    clips, batch, lengths = waveforms([8000, 12000, 9600])
    out = encoder.embed(batch, lengths)
    dim = encoder.backbone.embed_dim * (8 if pooling == "time_mean" else 1)
    assert out.shape == (3, 2, dim) and encoder.dim == dim
    alone = torch.cat([encoder.embed(c[None]) for c in clips])
    torch.testing.assert_close(out, alone, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(out[:, 0], out[:, 1])  # two blocks, two vectors


def test_last_block_is_the_backbones_own_output():
    torch.manual_seed(0)
    _, batch, lengths = waveforms([8000, 9600])
    eat = EAT(EATConfig.tiny(), target_length=None).eval()
    with torch.no_grad():
        cls, _ = eat.embed(batch, lengths)
    torch.testing.assert_close(FrozenEncoder(eat, [-1], "cls").embed(batch, lengths)[:, 0], cls)
    beats = BEATs(BEATsConfig.tiny()).eval()
    with torch.no_grad():
        mean, _ = beats.embed(batch, lengths)
    torch.testing.assert_close(FrozenEncoder(beats, [-1], "mean").embed(batch, lengths)[:, 0], mean)


def test_frozen_means_no_training():
    encoder = FrozenEncoder(BACKBONES["eat"](), [-1])
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.training and not encoder.backbone.training
    out = encoder.embed(waveforms([8000])[1])
    assert not out.requires_grad


def test_blocks_and_poolings_are_checked():
    assert block_numbers([-1, 1, 2, -2], 2) == [1, 2]
    with pytest.raises(ValueError, match="layer 3 does not exist: the encoder has blocks 1 to 2"):
        block_numbers([3], 2)
    with pytest.raises(ValueError, match="BEATs has no CLS"):
        FrozenEncoder(BACKBONES["beats"](), [-1], "cls")
    with pytest.raises(ValueError, match="pooling must be one of"):
        FrozenEncoder(BACKBONES["eat"](), [-1], "median")


def test_views():
    rng = np.random.default_rng(0)
    near, far, denoised = (rng.standard_normal((5, 2, 3)).astype(np.float32) for _ in range(3))
    embeddings = {"near": near, "far": far, "anc": denoised}
    np.testing.assert_allclose(
        training_free.view(embeddings, "residual", 0.5, -1), near[:, -1] - 0.5 * far[:, -1]
    )
    np.testing.assert_array_equal(training_free.view(embeddings, "near", layer=0), near[:, 0])
    assert training_free.view(embeddings, "concat").shape == (5, 6)
    np.testing.assert_array_equal(training_free.view(embeddings, "anc"), denoised[:, -1])
    with pytest.raises(ValueError, match="unknown view 'side'"):
        training_free.view(embeddings, "side")
    with pytest.raises(ValueError, match="needs the far channel"):
        training_free.view({"near": near}, "residual")


def stereo_tree(root, channels=2, seconds=0.6):
    rng = np.random.default_rng(1)
    t = np.arange(int(16000 * seconds)) / 16000
    for machine_type, hz in (("fan", 440.0), ("ToyCar", 1500.0)):
        for split, n in (("train", 5), ("test", 2)):
            for i in range(n):
                domain = "target" if i == 0 else "source"
                label = f"_{'anomaly' if i % 2 else 'normal'}" if split == "test" else "_normal"
                name = f"section_00_{domain}_{split}{label}_{i:04d}_noAttribute.wav"
                tone = 0.3 * np.sin(2 * np.pi * (hz + 50 * i) * t)
                audio = np.stack(
                    [tone + 0.02 * rng.standard_normal(len(t)), 0.1 * rng.standard_normal(len(t))]
                )
                data.write_wav(
                    root / "dev_data" / "raw" / machine_type / split / name, audio[:channels]
                )
    return data.index_dataset(root, min_seconds=0)


def test_mono_clips_leave_the_near_view_only(tmp_path):
    stereo = stereo_tree(tmp_path / "stereo")
    assert training_free.available_views(stereo) == (list(training_free.VIEWS), "")
    mono = stereo_tree(tmp_path / "mono", channels=1)
    views, note = training_free.available_views(mono)
    assert views == ["near"]
    assert "near view only" in note and "14 of 14 clips are mono" in note
    assert training_free.channels_for(views) == ["near"]


def test_embed_channels_one_pass_cached_and_anc_as_system3(tmp_path, monkeypatch):
    table = stereo_tree(tmp_path / "data")
    torch.manual_seed(0)
    encoder = FrozenEncoder(BACKBONES["eat"](), [1, -1])
    settings = anc.denoiser_settings(config.load_profile("smoke").anc)
    cache = tmp_path / "cache"
    out = training_free.embed_channels(
        encoder, table, denoiser=settings, batch_size=4, cache_dir=cache, progress=False
    )
    assert {k: v.shape for k, v in out.items()} == {
        c: (len(table), 2, 512) for c in training_free.CHANNELS
    }
    # each channel as a clip alone: the near and far channel, and System 3's per-clip front-end
    _, preprocess, _ = systems.front_end(config.load_profile("smoke"), "System 3")
    for i in (0, 7):
        audio = torch.from_numpy(data.read_audio(table["path"].iloc[i]))
        expected = {
            "near": audio[0],
            "far": audio[1],
            "anc": torch.from_numpy(preprocess(audio.numpy())),
            "w1": torch.from_numpy(twochannel.w1(audio[0].numpy(), audio[1].numpy())),
            "ss": torch.from_numpy(twochannel.ss(audio[0].numpy(), audio[1].numpy())),
        }
        for channel, waveform in expected.items():
            alone = encoder.embed(waveform[None])[0].numpy()
            np.testing.assert_allclose(out[channel][i], alone, rtol=1e-4, atol=1e-4)
    assert len(list(cache.glob("frozen_*.npy"))) == len(training_free.CHANNELS)

    def no_audio(*_args, **_kwargs):
        raise AssertionError("read audio although every channel is cached")

    monkeypatch.setattr(data, "read_audio", no_audio)
    again = training_free.embed_channels(
        encoder, table, denoiser=settings, cache_dir=cache, progress=False
    )
    for channel in training_free.CHANNELS:
        np.testing.assert_array_equal(again[channel], out[channel])
    with pytest.raises(AssertionError, match="read audio"):  # other denoiser settings: a miss
        training_free.embed_channels(
            encoder, table, ["anc"], {**settings, "step_size": 0.2}, cache_dir=cache, progress=False
        )


def test_logmel_statistics_find_the_tone_and_ignore_padding(tmp_path):
    table = stereo_tree(tmp_path / "data")
    stats = training_free.logmel_statistics(table, batch_size=3, progress=False)
    assert stats.shape == (len(table), 256)
    alone = np.concatenate(
        [
            training_free.logmel_statistics(table.iloc[[i]], progress=False)
            for i in range(len(table))
        ]
    )
    np.testing.assert_allclose(stats, alone, rtol=1e-5, atol=1e-5)
    loudest = stats[:, :128].argmax(1)
    fan = (table["machine_type"] == "fan").to_numpy()
    assert loudest[fan].max() < loudest[~fan].min()  # 440 Hz sits in a lower band than 1.5 kHz
    z = training_free.standardise_per_machine(stats, table)
    for machine_type in ("fan", "ToyCar"):
        train = ((table["machine_type"] == machine_type) & (table["split"] == "train")).to_numpy()
        np.testing.assert_allclose(z[train].mean(0), 0, atol=1e-4)


def test_system0_settings_are_checked():
    profile = config.load_profile("smoke")
    values = profile.plain()
    for change, message in (
        ({"pooling": "cls", "backbone": "beats"}, "BEATs has no CLS"),
        ({"layer": 0}, "numbered from 1"),
        ({"veiw": "near"}, "veiw"),
    ):
        with pytest.raises(config.ProfileError, match=message):
            config.validate_profile(
                {**values, "training_free": {**values["training_free"], **change}}
            )
    assert stages.knn_k(profile, "System 0") == profile.training_free.knn_k
    assert stages.backend_settings(profile) == (
        "knn",
        {k: v for k, v in values["backends"].items() if k != "default"},
    )


def test_build_encoder_is_seeded_and_frozen():
    profile = config.load_profile("smoke")
    first, section = training_free.build_encoder(profile)
    second, _ = training_free.build_encoder(profile)
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    assert first.blocks == block_numbers(training_free.stored_layers(section), 2)
    assert training_free.layer_position(first, -1) == first.blocks.index(2)
    pd.testing.assert_series_equal(pd.Series(first.blocks), pd.Series(sorted(first.blocks)))
