"""System 0's encoder: a pre-trained backbone used as it is (no training), pooled per clip.

:class:`FrozenEncoder` wraps an EAT or BEATs backbone (:mod:`asd_utils.models.eat`,
:mod:`asd_utils.models.beats`), freezes it, and turns the output tokens of chosen transformer
blocks into one vector per clip and block. The blocks' outputs are read with forward hooks, so
the backbones keep one forward pass and their upstream parity.

Poolings (``pooling``), over each clip's valid patch tokens only (a padded batch gives every
clip what it gets alone):

- ``time_mean``: the mean over time of each frequency patch, the patches concatenated
  (8 · D values): the band-preserving vector of training-free ASD pipelines (Saengthong &
  Shinozaki's GenRep, ICASSP 2025, and the sub-band methods built on it), which keeps *where in
  frequency* a machine sounds, what a mean over all tokens averages away. The default.
- ``time_rdp``: as ``time_mean`` with relative-deviation pooling over time instead of the mean
  (:mod:`asd_utils.models.pooling`, weights ∝ (1 + r)^γ, ``gamma``): the band embeddings that
  BEAM scores (reshape to (8, D)).
- ``mean``: the mean over all patch tokens (D values), BEATs' own utterance embedding.
- ``max``: the maximum over all patch tokens (D values).
- ``cls``: EAT's CLS token (D values); BEATs has none.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from asd_utils.models import pooling as band_pooling

POOLINGS = ("time_mean", "time_rdp", "mean", "max", "cls")


def transformer_blocks(backbone: nn.Module) -> nn.ModuleList:
    """The transformer blocks of an EAT (``blocks``) or BEATs (``encoder.layers``) backbone."""
    if hasattr(backbone, "blocks"):
        return backbone.blocks
    if hasattr(backbone, "encoder") and hasattr(backbone.encoder, "layers"):
        return backbone.encoder.layers
    raise TypeError(f"{type(backbone).__name__} has no transformer blocks to read")


def block_numbers(layers: Sequence[int], depth: int) -> list[int]:
    """Block numbers as a profile writes them (1 … depth; −1 the last, −2 the one before) →
    sorted distinct 1-based numbers; a number outside the model is a clear error."""
    out = []
    for layer in layers:
        number = layer + depth + 1 if layer < 0 else layer
        if not 1 <= number <= depth:
            raise ValueError(f"layer {layer} does not exist: the encoder has blocks 1 to {depth}")
        out.append(number)
    return sorted(set(out))


class FrozenEncoder(nn.Module):
    """A frozen backbone that embeds a clip as ``(len(layers), dim)``: one pooled vector per
    chosen block (1-based numbers, :func:`block_numbers`).

    ``embed(waveform (B, samples), lengths)`` → (B, len(layers), dim) float32, no gradients,
    in eval mode. ``dim`` = 8 · D for ``time_mean`` and ``time_rdp`` (8 frequency patches per
    time step in both backbones; band-major, (8, D) flattened), D otherwise. ``gamma``: the RDP
    exponent of ``time_rdp``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        layers: Sequence[int] = (-1,),
        pooling: str = "time_mean",
        gamma: float = 4.0,
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
        is_eat = hasattr(backbone, "blocks")
        if pooling == "cls" and not is_eat:
            raise ValueError("pooling 'cls' needs EAT: BEATs has no CLS token")
        self.backbone = backbone.eval().requires_grad_(False)
        self.blocks = block_numbers(layers, len(transformer_blocks(backbone)))
        self.pooling = pooling
        self.gamma = float(gamma)
        self.has_cls = is_eat
        n_freq = 8
        self.dim = backbone.embed_dim * (n_freq if pooling.startswith("time_") else 1)
        self.n_freq = n_freq

    def train(self, mode: bool = True) -> FrozenEncoder:
        """Always in eval mode: the backbone's dropout never acts."""
        return super().train(False)

    def cache_settings(self) -> dict:
        """What changes the output besides the weights (part of the embedding cache key)."""
        settings = {"blocks": self.blocks, "pooling": self.pooling}
        return {**settings, "gamma": self.gamma} if self.pooling == "time_rdp" else settings

    def _pool(self, x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        """One block's output (B, [CLS +] N, D) → (B, dim)."""
        if self.has_cls:
            if self.pooling == "cls":
                return x[:, 0]
            x = x[:, 1:]
        batch, n_tokens, dim = x.shape
        mask = (
            torch.ones(batch, n_tokens, dtype=torch.bool, device=x.device)
            if valid is None
            else valid
        )
        weights = mask.to(x.dtype).unsqueeze(-1)
        if self.pooling == "max":
            return x.masked_fill(~mask.unsqueeze(-1), torch.finfo(x.dtype).min).amax(1)
        if self.pooling == "mean":
            return (x * weights).sum(1) / weights.sum(1)
        if self.pooling == "time_rdp":
            pooled = band_pooling.pool_tokens(x, "rdp", self.gamma, valid, self.n_freq)
            return pooled.reshape(batch, self.n_freq * dim)
        grid = (x * weights).reshape(batch, n_tokens // self.n_freq, self.n_freq, dim)
        count = weights.reshape(batch, n_tokens // self.n_freq, self.n_freq, 1).sum(1)
        return (grid.sum(1) / count).reshape(batch, self.n_freq * dim)

    @torch.no_grad()
    def embed(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        outputs: dict[int, torch.Tensor] = {}
        blocks = transformer_blocks(self.backbone)

        def keep(number):
            def hook(_module, _inputs, output):
                outputs[number] = output[0] if isinstance(output, tuple) else output

            return hook

        handles = [blocks[n - 1].register_forward_hook(keep(n)) for n in self.blocks]
        try:
            with torch.autocast(waveform.device.type, enabled=False):
                fbank, frame_mask = self.backbone.features(waveform.float(), lengths)
            self.backbone.forward_features(fbank, frame_mask)
        finally:
            for handle in handles:
                handle.remove()
        encoder = getattr(self.backbone, "encoder", None)
        if getattr(encoder, "layer_norm_first", False) and len(blocks) in outputs:
            # a pre-LN BEATs normalises after its last block: its output is that, normalised
            outputs[len(blocks)] = encoder.layer_norm(outputs[len(blocks)])
        valid = self.backbone.token_mask(frame_mask.to(waveform.device))
        pooled = [self._pool(outputs[n].float(), valid) for n in self.blocks]
        return torch.stack(pooled, dim=1)

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.embed(waveform, lengths)
