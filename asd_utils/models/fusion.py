"""System 5's encoder: cross-channel modules inside a pre-trained EAT or BEATs.

The XJU report ends on it: "inserting cross-channel interaction modules into pre-trained audio
encoders may allow the model to exploit synchronized near- and far-microphone recordings during
training". :class:`FusionBackbone` runs the near and the far channel of each clip through the
same backbone weights, as one batch of twice the size, and after chosen transformer blocks lets
the near channel's tokens attend to the far channel's tokens of the same block
(:class:`CrossChannelAttention`); the far stream itself is left as the backbone makes it. The
utterance embedding and tokens returned are the near channel's.

Why cross-attention rather than a far-conditioned feature-wise modulation (FiLM): the noise
reaches the near microphone later and through a reverberant path, and it changes over the clip
(impacts, babble). A near token can then find the far tokens that carry *its* noise, at other
times and frequencies, and learn what to discount; a FiLM of one pooled far vector applies the
same scale and shift to every near token and cannot align anything in time.

Each module ends in a gate, ``tanh(g)`` with ``g`` initialised at 0 (as Flamingo's gated
cross-attention), so that at step 0 the near stream is exactly the pre-trained near-only
computation, and the backbone's pre-training is not disturbed by random modules; training opens
the gate as far as the far channel helps. The modules are applied through forward hooks that
live only during a call (no backbone code changes, its upstream parity kept; a deep copy, as the
EMA makes, carries no hook pointing back at the original).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from asd_utils.models.frozen import block_numbers, transformer_blocks


class CrossChannelAttention(nn.Module):
    """``near + tanh(gate) · W_o · attention(q(norm(near)), k, v(norm(far)))``.

    (B, Nq, D) near tokens and (B, Nk, D) far tokens → (B, Nq, D). ``width`` the attention's
    inner size (``heads`` heads), ``key_valid`` (B, Nk) bool: far tokens that exist (padding
    masked out). Uses :func:`torch.nn.functional.scaled_dot_product_attention`.
    """

    def __init__(self, dim: int, width: int = 64, heads: int = 4):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not a multiple of heads {heads}")
        self.heads = heads
        self.norm_near = nn.LayerNorm(dim)
        self.norm_far = nn.LayerNorm(dim)
        self.query = nn.Linear(dim, width)
        self.key_value = nn.Linear(dim, 2 * width)
        self.out = nn.Linear(width, dim)
        self.gate = nn.Parameter(torch.zeros(1))

    def forward(
        self, near: torch.Tensor, far: torch.Tensor, key_valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        batch, n_query, _ = near.shape

        def split(x):  # (B, N, width) → (B, heads, N, width / heads)
            return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

        query = split(self.query(self.norm_near(near)))
        key, value = self.key_value(self.norm_far(far)).chunk(2, dim=-1)
        mask = None if key_valid is None else key_valid[:, None, None, :]
        attended = F.scaled_dot_product_attention(query, split(key), split(value), attn_mask=mask)
        attended = attended.transpose(1, 2).reshape(batch, n_query, -1)
        return near + torch.tanh(self.gate) * self.out(attended)


class FusionBackbone(nn.Module):
    """A backbone whose near stream listens to its far stream after chosen blocks.

    The backbone interface of :class:`asd_utils.models.heads.EmbeddingModel`: ``features
    (waveform (B, 2, samples), lengths)`` → (fbank (2B, T, 128), frame_mask (2B, T)), near clips
    first; ``forward_features(fbank, frame_mask)`` → the near channel's (utterance (B, D),
    tokens (B, N, D)); ``embed_dim``. ``blocks``: 1-based block numbers (−1 the last) after
    which a :class:`CrossChannelAttention` acts. ``freeze_backbone``: train the modules only
    (the cheap option with pre-trained weights).
    """

    def __init__(
        self,
        backbone: nn.Module,
        blocks: Sequence[int] = (-1,),
        width: int = 64,
        heads: int = 4,
        freeze_backbone: bool = False,
    ):
        super().__init__()
        self.backbone = backbone
        self.embed_dim = backbone.embed_dim
        self.blocks = block_numbers(blocks, len(transformer_blocks(backbone)))
        self.cross = nn.ModuleDict(
            {str(n): CrossChannelAttention(self.embed_dim, width, heads) for n in self.blocks}
        )
        self.has_cls = hasattr(backbone, "blocks")  # EAT puts a CLS token first
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            backbone.requires_grad_(False)

    def train(self, mode: bool = True) -> FusionBackbone:
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()  # a frozen backbone's dropout stays off
        return self

    def features(
        self, waveform: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if waveform.dim() != 3 or waveform.shape[1] != 2:
            raise ValueError(
                "System 5 needs (batch, 2, samples) near and far audio; "
                f"got {tuple(waveform.shape)}"
            )
        both = torch.cat([waveform[:, 0], waveform[:, 1]])
        lengths = None if lengths is None else torch.cat([lengths, lengths])
        return self.backbone.features(both, lengths)

    def fbank(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, 2, samples) near and far audio → the backbone's unnormalised fbank of each,
        (batch, 2, frames, 128)."""
        if waveform.dim() != 3 or waveform.shape[1] != 2:
            raise ValueError(f"expected (batch, 2, samples), got {tuple(waveform.shape)}")
        both = torch.cat([waveform[:, 0], waveform[:, 1]])
        lengths = None if lengths is None else torch.cat([lengths, lengths])
        return self.backbone.fbank(both, lengths).unflatten(0, (2, -1)).transpose(0, 1)

    def features_from_fbank(
        self, fbank: torch.Tensor, frames: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, 2, T, 128) from :meth:`fbank` with ``frames`` (batch,) valid frames →
        (fbank (2B, T, 128), frame_mask (2B, T)), near clips first, as :meth:`features`."""
        both = torch.cat([fbank[:, 0], fbank[:, 1]])
        frames = torch.as_tensor(frames, device=fbank.device)
        return self.backbone.features_from_fbank(both, torch.cat([frames, frames]))

    def token_mask(self, frame_mask: torch.Tensor) -> torch.Tensor:
        return self.backbone.token_mask(frame_mask)

    def gates(self) -> dict[int, float]:
        """Each module's gate, tanh(g): 0 = the far channel unused."""
        return {int(n): float(torch.tanh(m.gate.detach())) for n, m in self.cross.items()}

    def forward_features(
        self, fbank: torch.Tensor, frame_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch = fbank.shape[0] // 2
        key_valid = None
        if frame_mask is not None:
            valid = self.backbone.token_mask(frame_mask.to(fbank.device))[batch:]
            if not bool(valid.all()):
                key_valid = F.pad(valid, (1, 0), value=True) if self.has_cls else valid
        layers = transformer_blocks(self.backbone)

        def fuse(number):
            def hook(_module, _inputs, output):
                x, rest = (output[0], output[1:]) if isinstance(output, tuple) else (output, None)
                near = self.cross[str(number)](x[:batch], x[batch:], key_valid)
                x = torch.cat([near, x[batch:]])
                return (x, *rest) if rest is not None else x

            return hook

        handles = [layers[n - 1].register_forward_hook(fuse(n)) for n in self.blocks]
        try:
            utterance, tokens = self.backbone.forward_features(fbank, frame_mask)
        finally:
            for handle in handles:
                handle.remove()
        return utterance[:batch], tokens[:batch]

    def embed(
        self, waveform: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_features(*self.features(waveform, lengths))

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None):
        return self.embed(waveform, lengths)
