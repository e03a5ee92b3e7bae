"""The backbones against the upstream code: tiny random checkpoints in both official formats
(BEATs ``.pt`` with ``cfg``/``model``; an EAT Hugging Face folder) and what microsoft/unilm's
``beats/`` and the EAT port compute with them, written once by ``tests/fixtures/backbones/
make_reference.py`` (its README says how). Frame-level and pooled outputs, one clip at a time
and in a zero-padded batch, within 1e-5."""

from pathlib import Path

import numpy as np
import pytest
import torch

from asd_utils.models.beats import BEATs
from asd_utils.models.eat import EAT
from asd_utils.scoring import pad_clips

FIXTURES = Path(__file__).parent / "fixtures" / "backbones"
REFERENCE = np.load(FIXTURES / "reference.npz")
CLIPS = [torch.from_numpy(REFERENCE[f"waveform_{i}"]) for i in range(3)]
TOLERANCE = dict(rtol=1e-5, atol=1e-5)


def loaded(kind):
    if kind == "beats":
        return BEATs.from_checkpoint(FIXTURES / "beats_tiny.pt").eval()
    return EAT.from_pretrained(FIXTURES / "eat_tiny", target_length=None).eval()


@pytest.mark.parametrize("kind", ["beats", "eat"])
def test_each_clip_alone_matches_upstream(kind):
    model = loaded(kind)
    with torch.no_grad():
        for i, clip in enumerate(CLIPS):
            utterance, tokens = model.embed(clip[None])
            expected = torch.from_numpy(REFERENCE[f"{kind}_tokens_{i}"])
            torch.testing.assert_close(tokens[0], expected, **TOLERANCE)
            torch.testing.assert_close(
                utterance[0], torch.from_numpy(REFERENCE[f"{kind}_utterance_{i}"]), **TOLERANCE
            )


@pytest.mark.parametrize("kind", ["beats", "eat"])
def test_a_padded_batch_matches_upstream_clip_by_clip(kind):
    model = loaded(kind)
    lengths = torch.tensor([len(c) for c in CLIPS])
    with torch.no_grad():
        utterance, tokens = model.embed(pad_clips(CLIPS), lengths)
    for i in range(len(CLIPS)):
        expected = torch.from_numpy(REFERENCE[f"{kind}_tokens_{i}"])
        torch.testing.assert_close(tokens[i, : len(expected)], expected, **TOLERANCE)
        torch.testing.assert_close(
            utterance[i], torch.from_numpy(REFERENCE[f"{kind}_utterance_{i}"]), **TOLERANCE
        )
