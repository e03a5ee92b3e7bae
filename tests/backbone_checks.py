"""Checks shared by the BEATs and EAT tests (both backbones have the same embedding API)."""

from __future__ import annotations

import torch


def check_padded_batch(model, clips: list[torch.Tensor], fbank_atol: float, frames_multiple=1):
    """A zero-padded batch with ``lengths`` gives each clip what it gets alone: its fbank frames
    (padding frames zero or masked), tokens and utterance embedding; without the lengths the
    padding changes the result. Returns ``(batch, lengths, utterance)`` for further checks."""
    lengths = torch.tensor([len(c) for c in clips])
    batch = torch.zeros(len(clips), int(lengths.max()))
    for i, clip in enumerate(clips):
        batch[i, : len(clip)] = clip
    with torch.no_grad():
        fbank, frame_mask = model.features(batch, lengths)
        utterance, tokens = model.forward_features(fbank, frame_mask)
        unmasked = model.embed(batch)[0]
        for i, clip in enumerate(clips):
            fbank_alone, _ = model.features(clip[None])
            u_alone, t_alone = model.embed(clip[None])
            n_frames, n_tokens = fbank_alone.shape[1], t_alone.shape[1]
            assert int(frame_mask[i].sum()) == n_frames and n_frames % frames_multiple == 0
            torch.testing.assert_close(fbank[i, :n_frames], fbank_alone[0], rtol=0, atol=fbank_atol)
            torch.testing.assert_close(tokens[i, :n_tokens], t_alone[0], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(utterance[i], u_alone[0], rtol=1e-5, atol=1e-5)
            if len(clip) < batch.shape[1]:  # without the lengths the padding changes the result
                assert (unmasked[i] - u_alone[0]).abs().max() > 1e-2
    assert (utterance[1] - utterance[2]).abs().max() > 1e-2
    return batch, lengths, utterance
