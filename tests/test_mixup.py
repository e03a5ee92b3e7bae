"""Mixup with a probability per clip (ASDKit's, p = 0.5 in the public LoRA recipe)."""

import numpy as np
import pytest
import torch

from asd_utils.models.losses import soft_targets
from asd_utils.models.mixup import mixup


def test_each_clip_is_mixed_with_probability_p():
    x, target = torch.randn(4000, 3), torch.arange(4000)
    for prob in (0.0, 0.5, 1.0):
        _, _, (_, w) = mixup(x, None, target, prob, seed=0)
        mixed = (w < 1).float().mean().item()
        assert mixed == pytest.approx(prob, abs=0.03)
    _, _, (_, w) = mixup(x, None, target, 0.5, seed=0)
    drawn = w[w < 1].numpy()
    assert drawn.min() >= 0 and abs(drawn.mean() - 0.5) < 0.03  # w ~ U(0, 1) where mixed
    with pytest.raises(ValueError, match="prob"):
        mixup(x, None, target, 1.5)


def test_inputs_and_labels_are_mixed_with_the_same_weight():
    torch.manual_seed(0)
    x = torch.randn(6, 2, 5)  # features (B, …) as well as waveforms
    target = torch.tensor([0, 1, 2, 3, 0, 1])
    mixed, _, (partner, w) = mixup(x, None, target, 1.0, seed=3)
    perm = np.random.default_rng(3)
    perm.random(6)
    perm = torch.from_numpy(perm.permutation(6))
    assert torch.equal(partner, target[perm])
    torch.testing.assert_close(mixed, w.view(-1, 1, 1) * x + (1 - w.view(-1, 1, 1)) * x[perm])
    rows = soft_targets(target, 4, (partner, w))
    for i in range(6):
        expected = torch.zeros(4)
        expected[target[i]] += w[i]
        expected[partner[i]] += 1 - w[i]
        torch.testing.assert_close(rows[i], expected)


def test_unmixed_clips_are_unchanged_and_lengths_take_the_longer():
    x = torch.randn(8, 100)
    lengths = torch.tensor([10, 20, 30, 40, 50, 60, 70, 80])
    mixed, new, (_, w) = mixup(x, lengths, torch.arange(8), 0.5, seed=1)
    keep = w == 1
    assert keep.any() and (~keep).any()
    assert torch.equal(mixed[keep], x[keep]) and torch.equal(new[keep], lengths[keep])
    assert (new >= lengths).all()
    again = mixup(x, lengths, torch.arange(8), 0.5, seed=1)
    assert torch.equal(again[0], mixed)  # same seed, same mix


class Recording(torch.nn.Module):
    """SCAdaCos (which takes a weight per clip) that keeps each micro-batch's mixup weights."""

    per_clip_mixup = True

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        from asd_utils.models.losses import SCAdaCosLoss

        self.loss, self.weights = SCAdaCosLoss(num_classes, dim, sub_clusters=2), []

    def forward(self, outputs, labels, mix=None):
        self.weights.append(None if mix is None else mix[1].detach().clone())
        return self.loss(outputs, labels, mix=mix)


def test_the_loop_mixes_each_clip_with_probability_p(tmp_path):
    """``mixup_prob``: per micro-batch every clip is mixed or not on its own draw (some clips
    of one batch mixed, others not); about p of all clips; resumable (seeded by position)."""
    from test_training import TinyBackbone, make_clips, small_config

    from asd_utils import data, training
    from asd_utils.models.heads import EmbeddingModel
    from asd_utils.training import ClipDataset

    table = make_clips(tmp_path / "data", n_per_class=8)
    ids, names = data.attribute_classes(table)
    model = EmbeddingModel(TinyBackbone(), projection_dim=4)
    loss = Recording(len(names), model.embed_dim)
    dataset = ClipDataset(table, ids, length=1500, progress=False)
    config = small_config(steps=20, batch_size=8, grad_accumulation=1, mixup_prob=0.5)
    training.train(model, loss, dataset, config, tmp_path / "run", progress=False)
    weights = torch.stack(loss.weights)  # (micro-batches, clips)
    mixed = weights < 1
    assert weights.shape == (20, 8) and (weights <= 1).all() and (weights >= 0).all()
    assert (mixed.any(1) & (~mixed).any(1)).sum() > 10  # per clip: batches mixed in part
    assert mixed.float().mean().item() == pytest.approx(0.5, abs=0.12)
    with pytest.raises(ValueError, match="mixup_prob"):
        small_config(mixup_prob=1.5)
    with pytest.raises(ValueError, match="mixup_alpha.*mixup_prob|mixup_prob.*mixup_alpha"):
        small_config(mixup_prob=0.5, mixup_alpha=1.0)
    from asd_utils.models.losses import OSSCLLoss

    one_weight = OSSCLLoss(len(names), model.embed_dim, sub_centers=2, temperature=0.1)
    with pytest.raises(ValueError, match="per clip"):
        training.train(model, one_weight, dataset, config, tmp_path / "other", progress=False)
