"""Frequency-preserving pooling (asd_utils.models.pooling): the token order of BEATs and EAT,
mean and RDP against the upstream code's outputs (tests/fixtures/bands/), masks."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from asd_utils.models import pooling
from asd_utils.models.beats import BEATs, BEATsConfig
from asd_utils.models.eat import EAT, EATConfig
from asd_utils.models.frozen import FrozenEncoder

FIXTURE = Path(__file__).parent / "fixtures" / "bands" / "reference.npz"


@pytest.fixture(scope="module")
def reference():
    with np.load(FIXTURE) as f:
        return dict(f)


class _NoEncoder(nn.Module):
    def forward(self, x, valid=None):
        return x


def _patch_tokens(name: str, fbank: torch.Tensor) -> torch.Tensor:
    """The tokens of a random tiny BEATs or EAT with its transformer blocks removed, so that
    each token is its own patch's embedding (EAT: CLS dropped)."""
    torch.manual_seed(0)
    if name == "beats":
        model = BEATs(BEATsConfig.tiny()).eval()
        model.encoder = _NoEncoder()
    else:
        model = EAT(EATConfig.tiny(), target_length=None).eval()
        model.blocks = nn.ModuleList()
    with torch.no_grad():
        return model.forward_features(fbank)[1]


@pytest.mark.parametrize("name", ["beats", "eat"])
def test_tokens_are_time_major_with_8_bands(name):
    """A patch lit up at time patch 3 and mel band 5 (mel bins 80–95) changes exactly the token
    that time_bands puts at [3, 5]: the first axis is time, the second frequency."""
    fbank = torch.zeros(1, 6 * 16, 128)
    lit = fbank.clone()
    lit[0, 3 * 16 : 4 * 16, 5 * 16 : 6 * 16] = 2.0
    changed = (_patch_tokens(name, lit) - _patch_tokens(name, fbank)).abs().amax(-1)
    grid = pooling.time_bands(changed[..., None])[0, ..., 0]  # [time, band]
    assert grid.shape == (6, 8)
    assert grid[3, 5] > 0
    grid[3, 5] = 0
    assert torch.count_nonzero(grid) == 0


def test_time_bands_is_row_major():
    tokens = torch.arange(2 * 24 * 3.0).reshape(2, 24, 3)
    grid = pooling.time_bands(tokens)
    assert grid.shape == (2, 3, 8, 3)
    assert torch.equal(grid[1, 2, 5], tokens[1, 2 * 8 + 5])
    with pytest.raises(ValueError, match="time"):
        pooling.time_bands(tokens[:, :23])


def test_mean_matches_upstream(reference):
    grid = pooling.time_bands(torch.from_numpy(reference["tokens"]))
    pooled = pooling.band_pool(grid, "mean").numpy()
    np.testing.assert_allclose(pooled, reference["pool_mean"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(pooled, grid.mean(1).numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("gamma", [0, 4, 8])
def test_rdp_matches_upstream(reference, gamma):
    tokens = torch.from_numpy(reference["tokens"])
    pooled = pooling.pool_tokens(tokens, "rdp", gamma).numpy()
    np.testing.assert_allclose(pooled, reference[f"pool_rdp{gamma}"], rtol=0, atol=1e-5)
    weights = pooling.rdp_weights(pooling.time_bands(tokens), gamma).numpy()
    np.testing.assert_allclose(weights, reference[f"pool_rdp{gamma}_weights"], rtol=0, atol=1e-6)


def test_rdp_weighs_the_odd_time_patch_and_gamma_0_is_the_mean(reference):
    grid = pooling.time_bands(torch.from_numpy(reference["tokens"]))
    weights = pooling.rdp_weights(grid, 8.0)
    assert (weights[0].argmax(0) == 2).all()  # the loud time patch of clip 0, in every band
    assert torch.allclose(weights[1, :, 5], torch.full((6,), 1 / 6))  # a constant band: mean
    assert torch.allclose(pooling.band_pool(grid, "rdp", 0.0), grid.mean(1), atol=1e-6)


def test_a_mask_pools_each_clip_as_alone():
    torch.manual_seed(1)
    tokens = torch.randn(2, 5 * 8, 4)
    valid = torch.ones(2, 5 * 8, dtype=torch.bool)
    valid[1, 3 * 8 :] = False  # clip 1 has 3 time patches, then padding
    padded = pooling.pool_tokens(tokens.masked_fill(~valid[..., None], 9.0), valid=valid)
    alone = pooling.pool_tokens(tokens[1:, : 3 * 8])
    assert torch.allclose(padded[1:], alone, atol=1e-6)
    assert torch.allclose(padded[:1], pooling.pool_tokens(tokens[:1]), atol=1e-6)


def test_bad_inputs_are_errors():
    grid = torch.randn(1, 4, 8, 3)
    with pytest.raises(ValueError, match="mode"):
        pooling.band_pool(grid, "max")
    with pytest.raises(ValueError, match="gamma"):
        pooling.band_pool(grid, "rdp", -1.0)
    with pytest.raises(ValueError, match="NaN"):
        pooling.band_pool(grid.clone().fill_(float("nan")))
    with pytest.raises(ValueError, match="valid time patch"):
        pooling.band_pool(grid, valid=torch.zeros(1, 4, dtype=torch.bool))
    assert pooling.band_pool(grid.bfloat16()).dtype == torch.bfloat16


@pytest.mark.parametrize("name", ["beats", "eat"])
def test_a_frozen_encoder_pools_any_block_by_rdp(name):
    """FrozenEncoder's ``time_rdp``: (8 · D) per block, band-major; γ = 0 is ``time_mean``; a
    padded batch gives each clip what it gets alone."""
    torch.manual_seed(0)
    backbone = BEATs(BEATsConfig.tiny()) if name == "beats" else EAT(EATConfig.tiny(), None)
    rng = np.random.default_rng(0)
    clips = [torch.from_numpy(rng.uniform(-0.3, 0.3, n).astype(np.float32)) for n in (9600, 12800)]
    batch = torch.nn.utils.rnn.pad_sequence(clips, batch_first=True)
    lengths = torch.tensor([9600, 12800])
    rdp = FrozenEncoder(backbone, [1, -1], "time_rdp", gamma=4.0)
    out = rdp.embed(batch, lengths)
    assert out.shape == (2, 2, 8 * backbone.embed_dim) == (2, 2, rdp.dim)
    alone = torch.cat([rdp.embed(c[None]) for c in clips])
    torch.testing.assert_close(out, alone, rtol=1e-4, atol=1e-5)
    mean = FrozenEncoder(backbone, [1, -1], "time_mean").embed(batch, lengths)
    flat = FrozenEncoder(backbone, [1, -1], "time_rdp", gamma=0.0).embed(batch, lengths)
    torch.testing.assert_close(flat, mean, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out, mean, atol=1e-4)
    assert rdp.cache_settings()["gamma"] == 4.0
    assert "gamma" not in FrozenEncoder(backbone, [-1], "time_mean").cache_settings()
