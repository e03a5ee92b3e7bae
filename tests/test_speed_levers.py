"""The speed levers, checked on the CPU: patch embedding as one matrix product equals the
convolution, attention through SDPA equals the explicit softmax, the
batched fbank on the model's device equals the per-clip one, whole clips batched by length
give each clip its own embedding, and a non-finite embedding or loss stops the run, naming the
system, the precision and the clip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_training import build_tiny, make_clips, small_config

from asd_utils import data, scoring, training
from asd_utils.errors import NonFiniteError
from asd_utils.frontends.features import beats_fbank, beats_normalize, eat_fbank, eat_normalize
from asd_utils.models.beats import BEATs, BEATsConfig
from asd_utils.models.common import patch_tokens
from asd_utils.models.eat import EAT, EATConfig

SR = 16000
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def tiny(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "beats":
        return BEATs(BEATsConfig.tiny()).eval()
    return EAT(EATConfig.tiny(), target_length=None).eval()


def explicit_attention(q, k, v, attn_mask=None, dropout_p=0.0, scale=None, **_):
    """softmax(q·kᵀ·scale + mask)·v written out (a bool mask: True = may attend)."""
    logits = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5 if scale is None else scale)
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        logits = logits.masked_fill(~attn_mask, float("-inf"))
    elif attn_mask is not None:
        logits = logits + attn_mask
    return logits.softmax(-1) @ v


@pytest.mark.parametrize("frames", [100, 97, 16])
def test_patch_tokens_equal_the_patch_convolution_and_its_gradients(frames):
    """Frames that do not fill the last patch are dropped, as by the convolution; the gradients
    of input, weight and bias agree (summed in another order: float32 rounding)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 24, kernel_size=16, stride=16)
    x = torch.randn(3, 1, frames, 130, requires_grad=True)
    reference = conv(x).flatten(2).transpose(1, 2)
    tokens = patch_tokens(conv, x)
    assert tokens.shape == reference.shape == (3, (frames // 16) * 8, 24)
    torch.testing.assert_close(tokens, reference, rtol=1e-5, atol=1e-5)
    upstream = torch.randn_like(reference)
    for ours, theirs in zip(
        torch.autograd.grad(tokens, [x, conv.weight, conv.bias], upstream),
        torch.autograd.grad(reference, [x, conv.weight, conv.bias], upstream),
        strict=True,
    ):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    overlapping = torch.nn.Conv2d(1, 24, kernel_size=16, stride=10)  # not patches: the conv
    torch.testing.assert_close(
        patch_tokens(overlapping, x), overlapping(x).flatten(2).transpose(1, 2), rtol=0, atol=0
    )


@pytest.mark.parametrize("kind", ["beats", "eat"])
def test_sdpa_equals_the_explicit_attention_in_float32(kind, monkeypatch):
    """Whole tiny models, a padded batch (key mask; BEATs' gated relative-position bias as
    ``attn_mask``), float32: within 1e-5 of the outputs' magnitude."""
    model = tiny(kind)
    waveform = 0.1 * torch.randn(2, int(2.5 * SR), generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([waveform.shape[1], int(1.7 * SR)])
    with torch.no_grad():
        sdpa = model.embed(waveform, lengths)
        calls = []

        def counted(*args, **kwargs):
            calls.append(kwargs.get("attn_mask") is not None)
            return explicit_attention(*args, **kwargs)

        monkeypatch.setattr(F, "scaled_dot_product_attention", counted)
        explicit = model.embed(waveform, lengths)
    assert calls and all(calls)  # every layer's attention, each with a mask
    for got, want in zip(sdpa, explicit, strict=True):
        scale = float(want.abs().max())
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("kind", ["beats", "eat"])
def test_batched_fbank_on_the_device_equals_each_clips_own(kind):
    """The model's ``features`` of a batch, computed on ``DEVICE`` (the GPU when there is one),
    against the reference per-clip fbank on the CPU."""
    model = tiny(kind).to(DEVICE)
    rng = np.random.default_rng(3)
    clips = torch.from_numpy(rng.uniform(-0.5, 0.5, (3, 2 * SR)).astype(np.float32))
    fbank, mask = model.features(clips.to(DEVICE))
    assert fbank.device.type == DEVICE and bool(mask.all())
    for clip, got in zip(clips, fbank.cpu(), strict=True):
        if kind == "beats":
            want = beats_normalize(beats_fbank(clip))
        else:
            want = eat_normalize(eat_fbank(clip, target_length=None))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


def test_length_batches_hold_one_length_each_and_every_row_once():
    lengths = np.array([5, 3, 5, 5, 3, 7, 5, 3])
    batches = scoring.length_batches(lengths, 2)
    assert sorted(np.concatenate(batches).tolist()) == list(range(8))
    assert all(len(b) <= 2 and len(set(lengths[b])) == 1 for b in batches)
    assert [lengths[b[0]] for b in batches] == [3, 3, 5, 5, 7]  # shortest first
    assert batches[0].tolist() == [1, 4]  # table order within a length


@pytest.fixture
def two_lengths(tmp_path):
    """Five stereo clips of 1.0 s and 1.2 s, interleaved in the table."""
    rng = np.random.default_rng(4)
    for i, seconds in enumerate((1.0, 1.2, 1.0, 1.2, 1.0)):
        audio = rng.uniform(-0.3, 0.3, (2, int(seconds * SR)))
        name = f"section_00_source_train_normal_{i:04d}_a_{i}.wav"
        data.write_wav(tmp_path / "data" / "fan" / "train" / name, audio)
    return data.index_dataset(tmp_path / "data", min_seconds=0)


@pytest.mark.parametrize("kind", ["beats", "eat"])
def test_length_bucketed_embeddings_equal_each_clip_alone(kind, two_lengths, monkeypatch):
    model = tiny(kind)
    with torch.no_grad():
        alone = [
            model.embed(torch.from_numpy(data.read_audio(p)[0])[None])[0][0]
            for p in two_lengths["path"]
        ]
    seen = []
    embed = model.embed
    monkeypatch.setattr(model, "embed", lambda w, n=None: seen.append(n) or embed(w, n))
    got = scoring.extract_embeddings(model, two_lengths, batch_size=4, progress=False)
    assert seen and all(n is None for n in seen)  # no padding, no mask
    scale = float(torch.stack(alone).abs().max())
    np.testing.assert_allclose(got, torch.stack(alone).numpy(), rtol=1e-5, atol=1e-5 * scale)


def test_a_non_finite_embedding_names_the_system_precision_and_clip(two_lengths, monkeypatch):
    poisoned = two_lengths["path"].iloc[3]
    load = scoring.embeddings.load_waveform

    def nan_in_one(path, channel=0, preprocess=None):
        audio = load(path, channel, preprocess)
        if path == poisoned:
            audio = audio.copy()
            audio[..., 100] = np.nan
        return audio

    monkeypatch.setattr(scoring.embeddings, "load_waveform", nan_in_one)
    model = tiny("beats")
    with pytest.raises(NonFiniteError) as caught:
        scoring.extract_embeddings(
            model, two_lengths, 4, autocast=torch.bfloat16, progress=False, name="System 2"
        )
    message = str(caught.value)
    assert message.startswith("System 2: ") and str(poisoned) in message
    assert "bf16" in message and "mixed_precision: no" in message
    clean = two_lengths.drop(index=3)
    assert np.isfinite(scoring.extract_embeddings(model, clean, 4, progress=False)).all()


class NaNAt(torch.nn.Module):
    """A loss that turns NaN at its ``at``-th call (a bf16 overflow, say)."""

    def __init__(self, loss: torch.nn.Module, at: int):
        super().__init__()
        self.loss, self.at, self.calls = loss, at, 0

    def forward(self, outputs, targets):
        self.calls += 1
        parts = self.loss(outputs, targets)
        if self.calls == self.at:
            parts["loss"] = parts["loss"] * math.nan
        return parts


def test_a_non_finite_loss_stops_training_naming_the_step_precision_and_clips(tmp_path):
    make_clips(tmp_path / "data")
    model, loss, dataset = build_tiny(tmp_path / "data", dropout=0.0)
    config = small_config(mixed_precision="bf16", grad_accumulation=2)
    with pytest.raises(NonFiniteError) as caught:
        training.train(model, NaNAt(loss, at=3), dataset, config, tmp_path / "run", progress=False)
    message = str(caught.value)
    assert "at step 2 " in message and "bf16" in message and "mixed_precision: no" in message
    draws = training.ResumableSampler(len(dataset), config.seed, start=config.batch_size * 2)
    first = dataset.paths[next(iter(draws))[0]]
    assert str(first) in message  # the step's first clip
    assert not (tmp_path / "run" / "finished.json").exists()
