"""BEATs (Chen et al., "BEATs: Audio Pre-Training with Acoustic Tokenizers", ICML 2023).

The project's own implementation of the audio backbone in microsoft/unilm ``beats/``
(``BEATs.py``, ``backbone.py``, ``modules.py``), with the same state-dict keys and the same
arithmetic, so that an official ``.pt`` checkpoint loads strictly and gives upstream's outputs:

    waveform × 2^15 → Kaldi fbank (128 mel) → (fbank − 15.41663) / (2 · 6.55582)
    → ``patch_embedding`` Conv2d 16×16 → tokens (time-major, 8 frequency patches per step)
    → ``layer_norm`` → ``post_extract_proj`` → encoder:
      x + GELU(weight-normalised grouped Conv1d(x)) → ``encoder.layer_norm`` (post-LN)
      → layers: x = LN(α·x + attn(x)); x = LN(α·x + FFN(x)), α = (2·layers)^(1/4) (DeepNorm)
      with a gated relative position bias (T5 buckets) made in layer 0 and handed on.

Departures, none of which changes an output of upstream's own use: attention goes through
``scaled_dot_product_attention`` (upstream's q/32 … ×32 trick cancels inside the softmax);
a padded batch is masked so that each clip gets the embedding it gets alone (upstream's
padding mask marks a token as padding only when all its frames are, so a partial last patch
would join the batch but not the clip alone); the utterance embedding is the mean over valid
tokens (upstream has no pooling outside its fine-tuned predictor, which averages logits).
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from asd_utils.frontends.features import beats_fbank, beats_normalize
from asd_utils.models.common import (
    CheckpointError,
    GradMultiply,
    additive_key_mask,
    autocast_off,
    check_tokens,
    check_waveform,
    load_strict,
    masked_mean,
    min_samples_for_frames,
    n_frames,
    patch_tokens,
    prefix_mask,
    require_file,
    token_mask,
)

ACTIVATIONS = ("gelu", "relu", "gelu_accurate", "gelu_fast", "tanh", "linear")
POS_CONV_PREFIX = "encoder.pos_conv.0."
# torch.nn.utils.parametrizations.weight_norm's names → the old nn.utils.weight_norm's
NEW_WEIGHT_NORM_NAMES = {
    "parametrizations.weight.original0": "weight_g",
    "parametrizations.weight.original1": "weight_v",
}


@dataclass
class BEATsConfig:
    """BEATs' configuration: upstream's ``BEATsConfig`` fields, names and defaults.

    The defaults are upstream's class defaults (``input_patch_size=-1`` is a placeholder that
    every checkpoint overrides); :meth:`base` gives the released iter3 / iter3+ settings and
    :meth:`tiny` a 2-layer model for tests. ``embed_dim`` is the patch-embedding width (512);
    the output width is ``encoder_embed_dim`` (:attr:`BEATs.embed_dim`).
    """

    input_patch_size: int = -1
    embed_dim: int = 512
    conv_bias: bool = False
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_wise_gradient_decay_ratio: float = 1.0
    layer_norm_first: bool = False
    deep_norm: bool = False
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.0
    dropout_input: float = 0.0
    conv_pos: int = 128
    conv_pos_groups: int = 16
    relative_position_embedding: bool = False
    num_buckets: int = 320
    max_distance: int = 1280
    gru_rel_pos: bool = False
    finetuned_model: bool = False
    predictor_dropout: float = 0.1
    predictor_class: int = 527

    @classmethod
    def base(cls, **overrides: Any) -> BEATsConfig:
        """The released BEATs iter3 / iter3+ settings: 90,311,792 parameters (+ 405,263 with
        the fine-tuned AudioSet predictor)."""
        settings = dict(
            input_patch_size=16,
            relative_position_embedding=True,
            num_buckets=320,
            max_distance=800,
            gru_rel_pos=True,
            deep_norm=True,
            layer_wise_gradient_decay_ratio=0.6,
        )
        return cls(**{**settings, **overrides})

    @classmethod
    def tiny(cls, **overrides: Any) -> BEATsConfig:
        """:meth:`base` shrunk for tests: 2 layers, width 96, 4 heads (469,336 parameters)."""
        settings = dict(
            embed_dim=64,
            encoder_layers=2,
            encoder_embed_dim=96,
            encoder_ffn_embed_dim=192,
            encoder_attention_heads=4,
            conv_pos_groups=4,
        )
        return cls.base(**{**settings, **overrides})

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> BEATsConfig:
        """From a checkpoint's ``cfg`` dict; unknown fields are ignored with a warning."""
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - names)
        if unknown:
            warnings.warn(f"BEATs config: ignoring unknown fields {unknown}", stacklevel=2)
        return cls(**{key: value for key, value in cfg.items() if key in names})

    def to_dict(self) -> dict[str, Any]:
        """A plain dict of every field, as upstream checkpoints store ``cfg``."""
        return dataclasses.asdict(self)


# --- relative position bias ----------------------------------------------------------------------


def relative_position_bucket(
    relative_position: torch.Tensor, num_buckets: int, max_distance: int
) -> torch.Tensor:
    """T5-style bidirectional buckets of key − query offsets (Raffel et al., JMLR 2020), int64.

    Half the buckets per direction: offsets ≤ 0 in [0, num_buckets/2), offsets > 0 shifted by
    num_buckets/2. Within a half, |offset| < num_buckets/4 gets its own bucket; larger ones are
    spaced logarithmically up to ``max_distance``, beyond which all share the last bucket. The
    float arithmetic (float32 log, truncation) is upstream's ``_relative_positions_bucket``.
    """
    half = num_buckets // 2
    buckets = (relative_position > 0).long() * half
    distance = relative_position.abs()
    max_exact = half // 2
    # clamp_min(1) only keeps log() finite where the small branch is taken anyway
    log_ratio = torch.log(distance.clamp_min(1).float() / max_exact)
    large = max_exact + (log_ratio / math.log(max_distance / max_exact) * (half - max_exact)).long()
    large = large.clamp_max(half - 1)
    return buckets + torch.where(distance < max_exact, distance, large)


# --- modules -------------------------------------------------------------------------------------


class WeightNormConv1d(nn.Module):
    """Grouped Conv1d whose weight is g · v / ‖v‖, the norm over all but the kernel axis.

    The reparametrisation of ``nn.utils.weight_norm(conv, dim=2)`` (Salimans & Kingma, NeurIPS
    2016) with its parameter names ``weight_g`` (1, 1, kernel) and ``weight_v``
    (channels, channels / groups, kernel); zero padding of kernel // 2 on both sides.
    """

    def __init__(self, channels: int, kernel_size: int, groups: int):
        super().__init__()
        self.kernel_size, self.groups = kernel_size, groups
        std = math.sqrt(4.0 / (kernel_size * channels))  # upstream's init (dropout 0)
        self.weight_v = nn.Parameter(torch.randn(channels, channels // groups, kernel_size) * std)
        self.weight_g = nn.Parameter(self.weight_v.detach().norm(dim=(0, 1), keepdim=True))
        self.bias = nn.Parameter(torch.zeros(channels))

    def weight(self) -> torch.Tensor:
        return self.weight_v * (self.weight_g / self.weight_v.norm(dim=(0, 1), keepdim=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, channels, time) → (batch, channels, time + 1 − kernel % 2), computed in
        float32 even under autocast or with bf16 weights, returned in ``x``'s dtype: torch
        2.13's CPU bf16 grouped conv1d (oneDNN 3.12) returns garbage with 12 or fewer channels
        per group and kernel 16 (the tiny BEATs: cosine 0.04 to float32); one convolution per
        forward, cheap beside the transformer."""
        with autocast_off(x.device):
            out = F.conv1d(
                x.float(),
                self.weight().float(),
                self.bias.float(),
                padding=self.kernel_size // 2,
                groups=self.groups,
            )
        return out.to(x.dtype)


class SamePad(nn.Module):
    """Drop the last frame after a kernel // 2 padded conv with an even kernel ("same" length)."""

    def __init__(self, kernel_size: int):
        super().__init__()
        self.remove = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., : x.shape[-1] - self.remove]


def _activation(name: str):
    if name == "gelu":  # upstream computes it in float32
        return lambda x: F.gelu(x.float()).type_as(x)
    if name in ("gelu_accurate", "gelu_fast"):
        return lambda x: F.gelu(x, approximate="tanh")
    return {"relu": F.relu, "tanh": torch.tanh, "linear": lambda x: x}[name]


class BEATsAttention(nn.Module):
    """Multi-head self-attention with BEATs' gated relative position bias.

    softmax(q·kᵀ / √d + g·B + M)·v per head, through ``scaled_dot_product_attention``: B is the
    (heads, tokens, tokens) bucket bias, g = a·(b·grep_a − 1) + 2 the per-query gate (a, b =
    sigmoid of the two sums of 4 of ``grep_linear``'s 8 outputs on the head's unscaled query),
    M the key padding mask. Upstream scales q by 1/32 and the max-subtracted logits by 32,
    which the softmax cancels.
    """

    def __init__(self, config: BEATsConfig, has_relative_attention_bias: bool):
        super().__init__()
        dim, heads = config.encoder_embed_dim, config.encoder_attention_heads
        self.num_heads, self.head_dim = heads, dim // heads
        self.scaling = self.head_dim**-0.5
        self.num_buckets, self.max_distance = config.num_buckets, config.max_distance
        self.dropout = config.attention_dropout
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        if has_relative_attention_bias:
            self.relative_attention_bias = nn.Embedding(config.num_buckets, heads)
        self.gru_rel_pos = config.gru_rel_pos
        if self.gru_rel_pos:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, heads, 1, 1))

    def compute_bias(self, n_tokens: int) -> torch.Tensor:
        """The un-gated relative position bias, (heads, queries, keys) = (H, n, n)."""
        table = self.relative_attention_bias.weight
        position = torch.arange(n_tokens, device=table.device)
        bucket = relative_position_bucket(
            position[None, :] - position[:, None], self.num_buckets, self.max_distance
        )
        return F.embedding(bucket, table).permute(2, 0, 1)

    def forward(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        position_bias: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(batch, tokens, dim) → (same, the un-gated position bias to hand on, or None).

        ``key_mask``: additive (batch, 1, 1, tokens). ``position_bias``: (heads, tokens,
        tokens) from an earlier layer; computed here when None and this layer has the table.
        """
        batch, n_tokens, dim = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, n_tokens, self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        if position_bias is None and hasattr(self, "relative_attention_bias"):
            position_bias = self.compute_bias(n_tokens)
        mask = key_mask
        if position_bias is not None:
            bias = position_bias.unsqueeze(0)  # (1, H, n, n)
            if self.gru_rel_pos:
                gates = self.grep_linear(q).view(batch, self.num_heads, n_tokens, 2, 4).sum(-1)
                gate_a, gate_b = torch.sigmoid(gates).chunk(2, dim=-1)  # (B, H, n, 1) each
                bias = (gate_a * (gate_b * self.grep_a - 1.0) + 2.0) * bias
            mask = bias if mask is None else bias + mask
        if mask is not None:
            mask = mask.to(q.dtype)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            scale=self.scaling,
        )
        return self.out_proj(out.transpose(1, 2).reshape(batch, n_tokens, dim)), position_bias


class BEATsLayer(nn.Module):
    """A transformer layer, post-LN with DeepNorm residual scaling (Wang et al., 2022):
    x = LN(α·x + attn(x)); x = LN(α·x + fc2(act(fc1(x)))); or pre-LN with
    ``layer_norm_first``. α = (2·layers)^(1/4) with ``deep_norm``, else 1."""

    def __init__(self, config: BEATsConfig, has_relative_attention_bias: bool):
        super().__init__()
        dim = config.encoder_embed_dim
        self.self_attn = BEATsAttention(config, has_relative_attention_bias)
        self.dropout1 = nn.Dropout(config.dropout)
        self.dropout2 = nn.Dropout(config.activation_dropout)
        self.dropout3 = nn.Dropout(config.dropout)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, config.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(config.encoder_ffn_embed_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.activation = _activation(config.activation_fn)
        self.layer_norm_first = config.layer_norm_first
        self.alpha = math.pow(2 * config.encoder_layers, 0.25) if config.deep_norm else 1.0

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout3(self.fc2(self.dropout2(self.activation(self.fc1(x)))))

    def forward(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor | None,
        position_bias: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.layer_norm_first:
            attn, position_bias = self.self_attn(
                self.self_attn_layer_norm(x), key_mask, position_bias
            )
            x = x + self.dropout1(attn)
            return x + self._ffn(self.final_layer_norm(x)), position_bias
        attn, position_bias = self.self_attn(x, key_mask, position_bias)
        x = self.self_attn_layer_norm(x * self.alpha + self.dropout1(attn))
        return self.final_layer_norm(x * self.alpha + self._ffn(x)), position_bias


class BEATsEncoder(nn.Module):
    """Convolutional position embedding, ``layer_norm`` and the layers (upstream's
    ``TransformerEncoder``). The relative-bias table is built in layer 0 and the same module is
    set on every later layer, as upstream does, so a state dict lists it under each layer."""

    def __init__(self, config: BEATsConfig):
        super().__init__()
        dim = config.encoder_embed_dim
        self.pos_conv = nn.Sequential(
            WeightNormConv1d(dim, config.conv_pos, config.conv_pos_groups),
            SamePad(config.conv_pos),
            nn.GELU(),
        )
        relative = config.relative_position_embedding
        self.layers = nn.ModuleList(
            BEATsLayer(config, has_relative_attention_bias=relative and i == 0)
            for i in range(config.encoder_layers)
        )
        if relative:
            for layer in self.layers[1:]:
                layer.self_attn.relative_attention_bias = self.layers[
                    0
                ].self_attn.relative_attention_bias
        self.layer_norm = nn.LayerNorm(dim)
        self.layer_norm_first = config.layer_norm_first
        self.dropout = config.dropout
        self.layerdrop = config.encoder_layerdrop
        self.gradient_decay = config.layer_wise_gradient_decay_ratio

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, tokens, dim) → (batch, tokens, dim); ``valid`` (batch, tokens) bool or None.

        Padding tokens are zeroed before the position convolution (as upstream does), so that a
        valid token sees exactly the zeros a clip alone sees past its end.
        """
        key_mask = None
        if valid is not None:
            x = x.masked_fill(~valid.unsqueeze(-1), 0.0)
            key_mask = additive_key_mask(valid, x.dtype)
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = F.dropout(x, p=self.dropout, training=self.training)
        position_bias = None
        for layer in self.layers:
            if self.gradient_decay != 1.0:
                x = GradMultiply.apply(x, self.gradient_decay)
            if self.training and self.layerdrop > 0 and float(torch.rand(())) < self.layerdrop:
                continue
            x, position_bias = layer(x, key_mask, position_bias)
        if self.layer_norm_first:
            x = self.layer_norm(x)
        return x


class BEATs(nn.Module):
    """The BEATs audio backbone (Chen et al., ICML 2023), upstream's keys and arithmetic.

    The shared embedding API (also on :class:`asd_utils.models.eat.EAT`):

    - :meth:`features`: waveform (batch, samples) in [-1, 1] at 16 kHz, optional valid lengths
      → normalised fbank (batch, frames, 128) and a frame mask (batch, frames), True = valid;
    - :meth:`forward_features`: fbank, frame mask → utterance embedding (batch, D), the mean
      of the valid output tokens, and the tokens (batch, 8·⌊frames/16⌋, D);
    - :meth:`embed` = both in turn; :attr:`embed_dim` = D = ``encoder_embed_dim``.

    A 10 s clip: 998 frames → 62 time patches × 8 = 496 tokens. Loading: :meth:`from_checkpoint`
    (an official ``.pt``); writing: :meth:`save_checkpoint`.
    """

    def __init__(self, config: BEATsConfig):
        super().__init__()
        if config.input_patch_size <= 0:
            raise ValueError(f"input_patch_size must be positive, got {config.input_patch_size}")
        if config.encoder_embed_dim % config.encoder_attention_heads:
            raise ValueError("encoder_embed_dim must be a multiple of encoder_attention_heads")
        if config.activation_fn not in ACTIVATIONS:
            raise ValueError(
                f"activation_fn must be one of {ACTIVATIONS}, got {config.activation_fn!r}"
            )
        if config.deep_norm and config.layer_norm_first:
            raise ValueError("deep_norm and layer_norm_first exclude each other (as upstream)")
        self.config = config
        self.embed_dim = config.encoder_embed_dim
        patch = config.input_patch_size
        self.patch_embedding = nn.Conv2d(
            1, config.embed_dim, kernel_size=patch, stride=patch, bias=config.conv_bias
        )
        self.layer_norm = nn.LayerNorm(config.embed_dim)
        self.post_extract_proj = (
            nn.Linear(config.embed_dim, config.encoder_embed_dim)
            if config.embed_dim != config.encoder_embed_dim
            else None
        )
        self.dropout_input = nn.Dropout(config.dropout_input)
        self.encoder = BEATsEncoder(config)
        if config.finetuned_model:
            self.predictor_dropout = nn.Dropout(config.predictor_dropout)
            self.predictor = nn.Linear(config.encoder_embed_dim, config.predictor_class)
        else:
            self.predictor = None
        self.label_dict: Any = None
        self._init_weights()

    def _init_weights(self) -> None:
        """Upstream's initialisation: BERT's normal(0, 0.02) for the encoder's linear layers and
        the bias table, then DeepNorm's Xavier gains (β = (8·layers)^(−1/4) on v, out, fc1, fc2)."""
        for module in self.encoder.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        if self.config.deep_norm:
            beta = math.pow(8 * self.config.encoder_layers, -0.25)
            for layer in self.encoder.layers:
                attn = layer.self_attn
                for linear, gain in (
                    (attn.k_proj, 1.0),
                    (attn.v_proj, beta),
                    (attn.q_proj, 1.0),
                    (attn.out_proj, beta),
                    (layer.fc1, beta),
                    (layer.fc2, beta),
                ):
                    nn.init.xavier_normal_(linear.weight, gain=gain)

    # --- the embedding API ---------------------------------------------------------------

    @property
    def n_freq_patches(self) -> int:
        """Frequency patches per time step: 128 // input_patch_size (8)."""
        return 128 // self.config.input_patch_size

    def fbank(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """BEATs' unnormalised fbank: (batch, samples) in [-1, 1] at 16 kHz → (batch, frames,
        128), :func:`beats_fbank` (× 2^15, Kaldi fbank), frames = 1 + (samples − 400) // 160.
        Frames are local (25 ms window, 10 ms shift, no dither): the fbank of a crop starting
        at sample 160 · k is frames k … of the whole clip's. ``lengths`` is only checked (the
        frames past a clip's own are masked by :meth:`features_from_fbank`). Float32,
        autocast off."""
        min_samples = min_samples_for_frames(self.config.input_patch_size)
        waveform, _ = check_waveform(waveform, lengths, min_samples)
        with autocast_off(waveform.device):
            return beats_fbank(waveform.float())

    def features_from_fbank(
        self, fbank: torch.Tensor, frames: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`fbank` output (batch, T, 128) with ``frames`` (batch,) valid frames per clip →
        BEATs' input ``(fbank, frame_mask)`` as :meth:`features` describes: normalised
        (:func:`beats_normalize`), frames past a clip's own set to 0 and False in the mask."""
        with autocast_off(fbank.device):
            frames = torch.as_tensor(frames, device=fbank.device)
            fbank = beats_normalize(fbank.float())
            frame_mask = prefix_mask(frames, fbank.shape[1])
            return fbank.masked_fill(~frame_mask.unsqueeze(-1), 0.0), frame_mask

    def features(
        self, waveform: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """BEATs' input: (batch, samples) in [-1, 1] at 16 kHz → (fbank, frame_mask).

        fbank (batch, frames, 128), float32: × 2^15, Kaldi fbank (:func:`beats_fbank`), then
        (fbank − 15.41663) / (2 · 6.55582) (:func:`beats_normalize`), as upstream's
        ``preprocess``; frames = 1 + (samples − 400) // 160. ``lengths`` (batch,) gives each
        clip's valid samples (zero-padded batch); clip i then has 1 + (lengths[i] − 400) // 160
        valid frames, identical to the clip's own fbank, and ``frame_mask`` (batch, frames) is
        True on them. Padding frames are set to 0 (the normalised mean). Computed in float32
        (autocast off): :meth:`fbank` then :meth:`features_from_fbank`.
        """
        min_samples = min_samples_for_frames(self.config.input_patch_size)
        waveform, lengths = check_waveform(waveform, lengths, min_samples)
        return self.features_from_fbank(self.fbank(waveform), n_frames(lengths))

    def token_mask(self, frame_mask: torch.Tensor) -> torch.Tensor:
        """Frame mask (batch, frames) → token mask (batch, tokens): a token is valid if all
        16 frames of its patch are."""
        patch = self.config.input_patch_size
        return token_mask(frame_mask, patch, patch, self.n_freq_patches)

    def forward_features(
        self, fbank: torch.Tensor, frame_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, frames, 128) normalised fbank → (utterance (batch, D), tokens (batch, N, D)).

        N = 8 · ⌊frames / 16⌋, time-major (token t·8 + f: time patch t, frequency patch f).
        ``frame_mask`` (batch, frames), True = valid, None = all valid: padding tokens are
        zeroed before the position convolution and masked out of attention and of the mean
        that gives the utterance embedding, so each clip gets what it gets alone.
        """
        weight = self.patch_embedding.weight
        x = patch_tokens(self.patch_embedding, fbank.to(weight.dtype).unsqueeze(1))  # (B, N, E)
        x = self.layer_norm(x)
        valid = None
        if frame_mask is not None:
            valid = self.token_mask(frame_mask.to(x.device))
            check_tokens(valid)
            if bool(valid.all()):
                valid = None
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)
        tokens = self.encoder(self.dropout_input(x), valid)
        return masked_mean(tokens, valid), tokens

    def embed(
        self, waveform: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward_features` of :meth:`features`: waveform → (utterance, tokens)."""
        return self.forward_features(*self.features(waveform, lengths))

    def forward(
        self, waveform: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Same as :meth:`embed`."""
        return self.embed(waveform, lengths)

    def classify(self, tokens: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """The fine-tuned predictor's logits (batch, predictor_class) from output tokens.

        As upstream: dropout, ``predictor`` on every token, mean of the logits over valid
        tokens; upstream returns sigmoid(logits). ``valid`` as from :meth:`token_mask`.
        """
        if self.predictor is None:
            raise RuntimeError("not a fine-tuned BEATs model (config.finetuned_model is False)")
        return masked_mean(self.predictor(self.predictor_dropout(tokens)), valid)

    # --- checkpoints ---------------------------------------------------------------------

    def load_upstream_state_dict(
        self, state_dict: Mapping[str, torch.Tensor], source: str = "state dict"
    ) -> None:
        """Load an upstream-layout state dict strictly (see :func:`load_strict`).

        The position convolution's weight norm may be named the old way (``weight_g``,
        ``weight_v``) or the new (``parametrizations.weight.original0`` / ``original1``).
        """
        renamed = {}
        for key, value in state_dict.items():
            if key.startswith(POS_CONV_PREFIX):
                suffix = key[len(POS_CONV_PREFIX) :]
                key = POS_CONV_PREFIX + NEW_WEIGHT_NORM_NAMES.get(suffix, suffix)
                if key in renamed:
                    raise CheckpointError(f"{source}: both weight-norm namings of {key}")
            renamed[key] = value
        tables = [v for k, v in renamed.items() if k.endswith("relative_attention_bias.weight")]
        if any(t.shape != tables[0].shape or not torch.equal(t, tables[0]) for t in tables[1:]):
            raise CheckpointError(f"{source}: the layers' relative_attention_bias copies differ")
        load_strict(self, renamed, source)

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, weights_only: bool = True, map_location: Any = "cpu"
    ) -> BEATs:
        """An official BEATs checkpoint (``torch.save`` dict with ``cfg`` and ``model``, and
        ``label_dict`` if fine-tuned), loaded strictly; the model comes back in eval mode.

        ``weights_only=False`` unpickles arbitrary objects: only for files you trust.
        """
        path = require_file(path, "a BEATs checkpoint (.pt, a dict with 'cfg' and 'model')")
        try:
            checkpoint = torch.load(path, map_location=map_location, weights_only=weights_only)
        except Exception as error:
            raise CheckpointError(
                f"{path}: not a readable torch checkpoint ({type(error).__name__}: {error}); "
                "expected a BEATs .pt file (a torch.save dict with 'cfg' and 'model')"
            ) from error
        if not isinstance(checkpoint, Mapping) or not {"cfg", "model"} <= set(checkpoint):
            found = sorted(checkpoint) if isinstance(checkpoint, Mapping) else type(checkpoint)
            raise CheckpointError(
                f"{path}: expected a BEATs checkpoint, a dict with 'cfg' and 'model'; found {found}"
            )
        cfg = checkpoint["cfg"]
        cfg = cfg if isinstance(cfg, Mapping) else vars(cfg)
        model = cls(BEATsConfig.from_dict(cfg))
        model.load_upstream_state_dict(checkpoint["model"], source=str(path))
        model.label_dict = checkpoint.get("label_dict")
        return model.eval()

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        """Write an official-format ``.pt``: ``cfg``, ``model`` (old weight-norm names, the bias
        table under every layer) and, when set, ``label_dict``."""
        checkpoint: dict[str, Any] = {
            "cfg": self.config.to_dict(),
            "model": {key: value.detach().cpu() for key, value in self.state_dict().items()},
        }
        if self.label_dict is not None:
            checkpoint["label_dict"] = self.label_dict
        torch.save(checkpoint, path)
