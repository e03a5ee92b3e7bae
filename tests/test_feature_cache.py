"""Features computed once (issue 37): Kaldi fbank frames are local, so a training crop taken in
frames from a clip's fbank is the fbank of the crop taken in samples on the 10 ms grid."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from asd_utils import config, data, systems, training
from asd_utils.frontends.features import by_length, kaldi_fbank
from asd_utils.frontends.views import load_waveform
from asd_utils.models.common import n_frames
from asd_utils.models.fusion import FusionBackbone
from asd_utils.models.heads import EmbeddingModel
from asd_utils.models.losses import OSSCLLoss
from asd_utils.systems.recipes import build_backbone
from asd_utils.training import ClipDataset, TrainConfig

HOP = 160  # 10 ms at 16 kHz
CROP = 32000  # 2 s, the quick profile's crop


def _clip(seconds: float = 4.0, seed: int = 0) -> torch.Tensor:
    """A machine-like clip: noise, a hum and its harmonic, a DC offset; (samples,) float32."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * 16000)) / 16000
    tones = 0.3 * torch.sin(2 * math.pi * 440 * t) + 0.1 * torch.sin(2 * math.pi * 1320 * t)
    return 0.1 * torch.randn(len(t), generator=generator) + tones + 0.05


def _offsets(n_samples: int) -> list[int]:
    """Frame offsets whose sample crop fits the clip: first, second, odd ones, the last."""
    last = (n_samples - CROP) // HOP
    return sorted({0, 1, 7, last // 2, last})


@pytest.fixture(scope="module")
def clip() -> torch.Tensor:
    """The module's 4 s machine-like clip (:func:`_clip`); no test changes it."""
    return _clip()


@pytest.fixture(scope="module")
def backbones() -> dict:
    """One random-weight backbone of each kind, ``{"eat": …, "beats": …}``, shared: these tests
    read its fbank and features (no weights), never train it."""
    return {kind: build_backbone(kind) for kind in ("eat", "beats")}


@pytest.fixture(scope="module")
def crop_features(clip, backbones) -> dict:
    """Per backbone kind, per crop offset (:func:`_offsets`): the features of the crop taken in
    frames of the whole clip's fbank and of the crop taken in samples, each ``(features,
    mask)``."""
    frames = n_frames(CROP)
    out = {}
    for kind, model in backbones.items():
        whole = model.fbank(clip[None])
        out[kind] = [
            (
                model.features_from_fbank(whole[:, k : k + frames], torch.tensor([frames])),
                model.features(clip[None, HOP * k : HOP * k + CROP]),
            )
            for k in _offsets(len(clip))
        ]
    return out


@pytest.mark.parametrize("window_type", ["povey", "hanning"])
def test_kaldi_fbank_of_a_crop_on_the_hop_grid_is_a_slice_of_the_clips(clip, window_type):
    whole = kaldi_fbank(clip * 2**15, num_mel_bins=128, window_type=window_type)
    frames = n_frames(CROP)
    for k in _offsets(len(clip)):
        crop = kaldi_fbank(
            clip[HOP * k : HOP * k + CROP] * 2**15, num_mel_bins=128, window_type=window_type
        )
        assert crop.shape == (frames, 128)
        assert (whole[k : k + frames] - crop).abs().max() <= 1e-5


def test_kaldi_fbank_off_the_hop_grid_is_not_a_slice(clip):
    whole = kaldi_fbank(clip, num_mel_bins=128)
    crop = kaldi_fbank(clip[HOP * 3 + 80 : HOP * 3 + 80 + CROP], num_mel_bins=128)
    assert (whole[3 : 3 + len(crop)] - crop).abs().max() > 1e-2


def test_beats_features_of_a_frame_crop_equal_those_of_the_sample_crop(crop_features):
    for (ours, mask), (theirs, their_mask) in crop_features["beats"]:
        assert torch.equal(mask, their_mask)
        assert (ours - theirs).abs().max() <= 1e-5


def test_eat_features_of_a_frame_crop_equal_those_of_the_sample_crop(crop_features):
    """EAT subtracts each clip's mean before the fbank; the per-frame DC removal undoes any
    constant, so the whole clip's mean and the crop's give the same features up to float32
    rounding of the subtraction: it moves the weakest bins of a tonal clip (10+ nats below the
    frame's strongest) by ~1e-4 (normalised), as a float64 mean moved them (models/eat.py).
    With the same mean removed, the frames are the same to 1e-5 (the Hann-window case of
    :func:`test_kaldi_fbank_of_a_crop_on_the_hop_grid_is_a_slice_of_the_clips`)."""
    for (ours, mask), (theirs, their_mask) in crop_features["eat"]:
        assert torch.equal(mask, their_mask) and ours.shape == (1, 208, 128)  # 198 → 13 patches
        assert (ours - theirs).abs().max() <= 5e-4


def test_features_are_fbank_then_features_from_fbank_bitwise(backbones):
    """The waveform path (embedding, mixup training) is unchanged by the split."""
    clips = torch.stack([_clip(2.5, 1), _clip(2.5, 2)])
    lengths = torch.tensor([40000, 33000])
    for model in backbones.values():
        fbank, mask = model.features(clips, lengths)
        again, again_mask = model.features_from_fbank(
            model.fbank(clips, lengths), n_frames(lengths)
        )
        assert torch.equal(fbank, again) and torch.equal(mask, again_mask)


def test_by_length_batches_equal_lengths_and_keeps_order():
    clips = [torch.full((n,), float(i)) for i, n in enumerate([5, 3, 5, 4, 3, 5])]
    seen = []

    def function(batch):
        seen.append(tuple(batch.shape))
        return batch.sum(-1)

    out = by_length(clips, function, batch=2)
    assert [float(o) for o in out] == [float(i * len(c)) for i, c in enumerate(clips)]
    assert seen == [(2, 3), (1, 4), (2, 5), (1, 5)]


# --- training crops in frames (asd_utils.training.ClipDataset with an fbank) ---------------------


def _wav_tree(root, seconds=(1.2, 1.5, 0.4, 1.2)):
    """Clips of a few lengths (one shorter than the crop), two attribute classes; the last
    clip listed twice (as a repeated target clip)."""
    rng = np.random.default_rng(1)
    for i, length in enumerate(seconds):
        n = int(length * 16000)
        t = np.arange(n) / 16000
        audio = 0.3 * np.sin(2 * np.pi * (400 + 300 * i) * t) + 0.05 * rng.standard_normal(n)
        name = f"section_00_source_train_normal_{i:04d}_car_A{i % 2}.wav"
        data.write_wav(root / "ToyCar" / "train" / name, audio[None])
    table = data.index_dataset(root, min_seconds=0)
    table = pd.concat([table, table.iloc[[-1]]], ignore_index=True)
    return table, data.attribute_classes(table)[0]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return _wav_tree(tmp_path_factory.mktemp("frames"))


def test_clip_dataset_takes_crops_in_frames_of_each_clips_fbank(tree):
    table, ids = tree
    model = EmbeddingModel(build_backbone("beats"))
    length = 8000  # 0.5 s: 48 frames
    dataset = ClipDataset(table, ids, length=length, progress=False, fbank=model.fbank)
    lazy = ClipDataset(table, ids, length=length, preload=False, fbank=model.fbank)
    assert dataset.unit == lazy.unit == "frames" and dataset.waveforms is None
    assert dataset.fbanks[-1] is dataset.fbanks[-2]  # one fbank per file
    frames = n_frames(length)
    for index in range(len(table)):
        audio = torch.from_numpy(load_waveform(table["path"][index], 0))
        for seed in [(3, index), (4, index)]:
            crop, target, valid = dataset[(index, seed)]
            again, _, lazy_valid = lazy[(index, seed)]
            assert crop.shape == (frames, 128) and target == ids[index]
            assert valid == lazy_valid and (crop - again).abs().max() <= 1e-5
            spare = n_frames(len(audio)) - frames
            if spare < 0:  # shorter than the crop: its frames, then zeros
                assert valid == n_frames(len(audio)) and not crop[valid:].any()
                continue
            start = int(np.random.default_rng(seed).integers(spare + 1))
            expected = model.fbank(audio[None, HOP * start : HOP * start + length])[0]
            assert valid == frames and (crop - expected).abs().max() <= 1e-5


def test_training_on_crops_in_frames_resumes_exactly(tree, tmp_path):
    """3 steps, then resumed to 6, equal 6 steps in one go (the fbank computed again)."""
    table, ids = tree

    def run(steps, folder):
        torch.manual_seed(0)
        model = EmbeddingModel(build_backbone("beats"), projection_dim=4)
        loss = OSSCLLoss(int(ids.max()) + 1, model.embed_dim, sub_centers=2)
        dataset = ClipDataset(table, ids, length=8000, progress=False, fbank=model.fbank)
        config = TrainConfig(
            steps=steps, batch_size=2, grad_accumulation=1, warmup_steps=1, ema_decay=0.5,
            spec_augment_time=4, spec_augment_freq=8, checkpoint_every=3, seed=3,
        )  # fmt: skip
        return training.train(model, loss, dataset, config, folder, resume=True, progress=False)

    full = run(6, tmp_path / "full")
    run(3, tmp_path / "cut")
    resumed = run(6, tmp_path / "cut")
    assert resumed.start_step == 3
    for a, b in [(resumed.model, full.model), (resumed.ema_model, full.ema_model)]:
        for key, value in a.state_dict().items():
            assert torch.equal(value, b.state_dict()[key]), key
    pd.testing.assert_frame_equal(resumed.history, full.history)


def test_systems_crop_in_frames_unless_they_mix_waveforms():
    profile = config.load_profile("quick")
    assert systems.crops_in_frames(profile, "System 1")
    assert systems.crops_in_frames(profile, "System 2")
    assert not systems.crops_in_frames(profile, "System 7")  # mixup mixes waveforms


def test_fusion_fbank_keeps_near_and_far_apart():
    """System 5's crops in frames: (B, 2, F, 128), near first, as its waveform path."""
    model = FusionBackbone(build_backbone("eat"), blocks=[-1])
    pairs = [(_clip(1.0, 3), _clip(1.0, 4)), (_clip(1.0, 5), _clip(1.0, 6))]
    clips = torch.stack([torch.stack(pair) for pair in pairs])  # (2 clips, near/far, samples)
    fbank = model.fbank(clips)
    assert fbank.shape == (2, 2, n_frames(16000), 128)
    assert torch.equal(fbank[1, 0], model.backbone.fbank(pairs[1][0][None])[0])
    ours = model.features_from_fbank(fbank, torch.tensor([n_frames(16000)] * 2))
    theirs = model.features(clips)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
