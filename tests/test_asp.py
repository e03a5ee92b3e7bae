"""Attentive statistics pooling and the pooled embedding model of the public LoRA recipe."""

import torch

from asd_utils.models.beats import BEATs, BEATsConfig
from asd_utils.models.heads import AttentiveStatisticsPooling, PooledEmbeddingModel


def test_shapes_gradients_and_masked_tokens_are_ignored():
    torch.manual_seed(0)
    pool = AttentiveStatisticsPooling(32, ratio=8)
    tokens = torch.randn(3, 10, 32, requires_grad=True)
    out = pool(tokens)
    assert out.shape == (3, 32)
    out.pow(2).sum().backward()
    assert tokens.grad.abs().sum() > 0
    assert all(p.grad is not None for p in pool.parameters())
    pool.eval()  # BatchNorm on running statistics: each clip alone
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[1, 6:] = False
    padded = tokens.detach().clone()
    padded[1, 6:] = 1e3  # whatever sits in padding positions
    with torch.no_grad():
        together = pool(padded, mask)
        alone = pool(tokens.detach()[1:2, :6])
    torch.testing.assert_close(together[1], alone[0], rtol=1e-5, atol=1e-5)


def test_pooled_embedding_model_projects_the_pooled_tokens():
    torch.manual_seed(0)
    model = PooledEmbeddingModel(BEATs(BEATsConfig.tiny()), projection_dim=16)
    waveform = torch.randn(2, 16000)
    out = model(waveform)
    assert out["embedding"].shape == (2, 16) and out["pooled"].shape == (2, model.embed_dim)
    out["embedding"].sum().backward()
    assert model.pooling.score[0].weight.grad is not None
    utterance, tokens = model.embed(waveform)
    assert utterance.shape == (2, model.embed_dim) and tokens.shape[0] == 2
    model.eval()
    with torch.no_grad():
        batch = model(torch.cat([waveform, torch.zeros(2, 4000)], 1), torch.tensor([16000, 20000]))
        one = model(waveform[:1], torch.tensor([16000]))
    torch.testing.assert_close(batch["embedding"][0], one["embedding"][0], rtol=1e-4, atol=1e-4)
