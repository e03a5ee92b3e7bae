"""Heads on top of a backbone: the SupCon projection head and the embedding model trained by
:mod:`asd_utils.training`.

A backbone (BEATs, EAT, or a test stand-in) exposes ``features(waveform (B, samples), lengths)
-> (fbank (B, T, 128), frame_mask (B, T) bool)``, ``forward_features(fbank, frame_mask) ->
(utterance (B, D), tokens (B, N, D))`` and ``embed_dim`` = D. :class:`EmbeddingModel` adds the
projection head and puts SpecAugment between the two calls.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """SupCon's projection head: (B, in_dim) → (B, out_dim), rows of unit L2 norm.

    Linear → ReLU → Linear, then L2 normalisation, as the projection network of supervised
    contrastive learning (Khosla et al., NeurIPS 2020, sec. 3.1: one hidden layer, output 128)
    that OS-SCL puts behind its encoder (Huang, Fang & He, ICASSP 2025). ``hidden_dim`` defaults
    to ``in_dim``. No BatchNorm (the OS-SCL code has one; it would make the contrastive loss
    depend on the micro-batch split under gradient accumulation and DDP).
    """

    def __init__(self, in_dim: int, out_dim: int = 128, hidden_dim: int | None = None):
        super().__init__()
        hidden_dim = hidden_dim or in_dim
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.net(x), dim=-1)


class EmbeddingModel(nn.Module):
    """A backbone plus a projection head; what the OSSCL systems fine-tune.

    ``forward(waveform (B, samples), lengths (B,) or None, augment)`` returns
    ``{"embedding": (B, D) utterance embedding, "projection": (B, projection_dim) unit rows}``.
    ``augment`` (a callable on the (B, T, 128) fbank, e.g. a partial of
    :func:`asd_utils.frontends.features.spec_augment`) is applied between ``features`` and
    ``forward_features`` when given, i.e. in training only. ``embed`` has the backbone's
    signature and output, ``(utterance, tokens)``, so scoring treats a bare backbone and this
    wrapper alike. The front-end runs outside autocast: under bf16 mixed precision the fbank
    is still computed in float32 (a bf16 log-mel loses ~3 significant digits).
    """

    def __init__(
        self, backbone: nn.Module, projection_dim: int = 128, hidden_dim: int | None = None
    ):
        super().__init__()
        self.backbone = backbone
        self.embed_dim = backbone.embed_dim
        self.projection = ProjectionHead(self.embed_dim, projection_dim, hidden_dim)

    def features(
        self, waveform: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The backbone's front-end, in float32 even inside an autocast region."""
        with torch.autocast(waveform.device.type, enabled=False):
            return self.backbone.features(waveform.float(), lengths)

    def fbank(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The backbone's unnormalised fbank of each clip (``backbone.fbank``), float32 even
        inside an autocast region: what a training crop in frames is cut from."""
        with torch.autocast(waveform.device.type, enabled=False):
            return self.backbone.fbank(waveform.float(), lengths)

    def forward_frames(
        self,
        fbank: torch.Tensor,
        frames: torch.Tensor,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """:meth:`forward` of crops taken in frames: ``fbank`` (B, T, 128) from :meth:`fbank`
        (a slice of a whole clip's), ``frames`` (B,) valid frames per crop."""
        with torch.autocast(fbank.device.type, enabled=False):
            features, frame_mask = self.backbone.features_from_fbank(fbank.float(), frames)
        return self.outputs(features, frame_mask, True, augment)

    def embed(
        self, waveform: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(utterance (B, D), tokens (B, N, D)), as ``backbone.embed``."""
        return self.backbone.forward_features(*self.features(waveform, lengths))

    def forward(
        self,
        waveform: torch.Tensor,
        lengths: torch.Tensor | None = None,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        return self.outputs(*self.features(waveform, lengths), lengths is not None, augment)

    def outputs(
        self, fbank: torch.Tensor, frame_mask: torch.Tensor, masked: bool, augment=None
    ) -> dict[str, torch.Tensor]:
        """The training outputs of normalised features: ``augment`` (SpecAugment) on ``fbank``,
        the backbone, the projection. ``masked``: lengths were given (unused here)."""
        if augment is not None:
            fbank = augment(fbank)
        utterance, _ = self.backbone.forward_features(fbank, frame_mask)
        return {"embedding": utterance, "projection": self.projection(utterance)}


# --- gradient reversal (System 2, BEATs-GRL) ---------------------------------------------------


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; gradient × (−λ) backward (Ganin & Lempitsky, ICML 2015)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, lam: float) -> torch.Tensor:
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.lam * grad, None


def reverse_gradient(x: torch.Tensor, lam: float) -> torch.Tensor:
    """The gradient reversal layer: ``x`` unchanged forward, gradient multiplied by −``lam``."""
    return _ReverseGradient.apply(x, float(lam))


def grl_lambda(progress: float, lambda_max: float = 1.0, gamma: float = 10.0) -> float:
    """Ganin & Lempitsky's ramp: λ = λ_max · (2 / (1 + exp(−γ·p)) − 1), p ∈ [0, 1] the training
    progress; 0 at the start, ≈ λ_max after half the run (0.987 λ_max at p = 0.5)."""
    p = min(max(float(progress), 0.0), 1.0)
    return lambda_max * (2.0 / (1.0 + math.exp(-gamma * p)) - 1.0)


class DomainClassifier(nn.Module):
    """The adversary behind the GRL: (B, D) embedding → (B, n_domains) logits, a small MLP."""

    def __init__(self, in_dim: int, n_domains: int = 2, hidden_dim: int = 256):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, n_domains)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# --- attentive statistics pooling (System 7) -----------------------------------------------------


class AttentiveStatisticsPooling(nn.Module):
    """Tokens (B, T, D) → (B, D): attention-weighted mean and deviation over T, then a linear map.

    Attentive statistics pooling (Okabe et al., Interspeech 2018) with ECAPA-TDNN's global
    context (Desplanques et al., Interspeech 2020), as ASDKit's ``AttnStatPool``: per-channel
    attention ``softmax_T(Conv(tanh(BN(ReLU(Conv([x, μ, σ])))))``, hidden width D / ``ratio``,
    where μ, σ are the plain mean and (unbiased) deviation over T; pooled ``[Σ w x,
    √(Σ w x² − (Σ w x)²)]`` (both variances floored at 1e-4), then BN → Linear(2D, D) → BN.
    ``mask`` (B, T) bool, True = valid (None: all): padding tokens get no weight and stay out of
    μ, σ; the BatchNorm after the first convolution still sees them while training (train on
    whole crops, as the recipe does).
    """

    def __init__(self, dim: int, ratio: int = 16):
        super().__init__()
        hidden = max(dim // ratio, 1)
        self.score = nn.Sequential(
            nn.Conv1d(3 * dim, hidden, 1),
            nn.ReLU(),
            nn.BatchNorm1d(hidden),
            nn.Tanh(),
            nn.Conv1d(hidden, dim, 1),
        )
        self.out = nn.Sequential(
            nn.BatchNorm1d(2 * dim), nn.Linear(2 * dim, dim), nn.BatchNorm1d(dim)
        )

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = tokens.transpose(1, 2)  # (B, D, T)
        if mask is None:
            mask = torch.ones(x.shape[0], x.shape[2], dtype=torch.bool, device=x.device)
        valid = mask.unsqueeze(1).to(x.dtype)  # (B, 1, T)
        count = valid.sum(2, keepdim=True)
        mean = (x * valid).sum(2, keepdim=True) / count
        var = (((x - mean) * valid) ** 2).sum(2, keepdim=True) / (count - 1).clamp(min=1)
        context = [x, mean.expand_as(x), var.clamp(min=1e-4).sqrt().expand_as(x)]
        logits = self.score(torch.cat(context, dim=1)).masked_fill(~mask.unsqueeze(1), -torch.inf)
        weights = logits.softmax(dim=2)
        mu = (x * weights).sum(2)
        sigma = ((x**2 * weights).sum(2) - mu**2).clamp(min=1e-4).sqrt()
        return self.out(torch.cat([mu, sigma], dim=1))


class PooledEmbeddingModel(nn.Module):
    """A backbone, attentive statistics pooling of its tokens and a linear projection: the model
    of the public LoRA recipe (ASDKit's ``projection_type: attn_stat_pool``, ``embed_size``
    256), trained with a classification loss on ``"embedding"``.

    ``forward(waveform (B, samples), lengths, augment)`` →
    ``{"embedding": (B, projection_dim), "pooled": (B, D)}``; ``augment`` acts on the fbank as
    in :class:`EmbeddingModel`. ``embed`` is the backbone's ``(utterance, tokens)`` (the
    recipe scores the tokens, before the pooling and projection).
    """

    def __init__(self, backbone: nn.Module, projection_dim: int = 256, ratio: int = 16):
        super().__init__()
        self.backbone = backbone
        self.embed_dim = backbone.embed_dim
        self.pooling = AttentiveStatisticsPooling(self.embed_dim, ratio)
        self.projection = nn.Linear(self.embed_dim, projection_dim)

    features = EmbeddingModel.features
    embed = EmbeddingModel.embed
    fbank = EmbeddingModel.fbank
    forward = EmbeddingModel.forward
    forward_frames = EmbeddingModel.forward_frames

    def outputs(
        self, fbank: torch.Tensor, frame_mask: torch.Tensor, masked: bool, augment=None
    ) -> dict[str, torch.Tensor]:
        """The training outputs of normalised features: ``augment`` on ``fbank``, the backbone,
        the pooling (padding tokens left out when ``masked``), the projection."""
        if augment is not None:
            fbank = augment(fbank)
        _, tokens = self.backbone.forward_features(fbank, frame_mask)
        mask = self.backbone.token_mask(frame_mask) if masked else None
        pooled = self.pooling(tokens, mask)
        return {"embedding": self.projection(pooled), "pooled": pooled}
