"""EAT (Chen et al., "EAT: Self-Supervised Pre-Training with Efficient Audio Transformer",
IJCAI 2024), the project's own implementation of the Hugging Face port's encoder
(worstchan/EAT-base_epoch30_pretrain / ..._finetune_AS2M: ``eat_model.py``, loaded upstream with
``trust_remote_code``), itself the data2vec 2.0 image-modality encoder of cwx-worst-one/EAT
(``models/images.py``, ``models/base.py``, ``models/modules.py``). Same state-dict keys (the
port's ``model.`` prefix in ``model.safetensors``) and the same arithmetic:

    waveform − its mean → Kaldi fbank (128 mel, Hann window) → pad / crop to ``target_length``
    frames → (fbank + 4.268) / (2 · 4.569) → ``local_encoder.proj`` Conv2d 16×16 → tokens
    (time-major) + the fixed 2-D sin-cos table → [CLS ``extra_tokens``; tokens] → ``pre_norm``
    → post-LN blocks: x = x + attn(x); r = norm1(x); x = norm2(r + mlp(r)) → CLS output.

Departures: attention goes through ``scaled_dot_product_attention`` (the same softmax); a
padded batch (clips of different lengths with ``target_length=None``) is masked so that each
clip gets the embedding it gets alone — upstream runs one clip at a time.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from asd_utils.frontends.features import eat_normalize, kaldi_fbank
from asd_utils.models.common import (
    FRAME_LENGTH,
    FRAME_SHIFT,
    CheckpointError,
    DropPath,
    autocast_off,
    check_tokens,
    check_waveform,
    load_strict,
    min_samples_for_frames,
    n_frames,
    patch_tokens,
    prefix_mask,
    require_dir,
    require_file,
    token_mask,
)

CONFIG_NAME, WEIGHTS_NAME, PREFIX = "config.json", "model.safetensors", "model."
VARIANTS = ("pretrain", "finetune")
# Keys transformers' PretrainedConfig writes beside the model's own fields.
HF_CONFIG_KEYS = {
    "architectures",
    "auto_map",
    "model_type",
    "torch_dtype",
    "dtype",
    "transformers_version",
    "return_dict",
    "output_hidden_states",
    "output_attentions",
    "use_cache",
    "is_encoder_decoder",
    "id2label",
    "label2id",
    "problem_type",
    "tie_word_embeddings",
}
_FROM_MODEL = object()  # features(target_length=...) default: the model's own target_length


@dataclass
class EATConfig:
    """EAT's configuration: the Hugging Face port's ``EATConfig`` fields, names and defaults.

    The defaults are EAT-base (:meth:`base`); :meth:`tiny` is a 2-layer model for tests.
    ``max_length``: time patches in the fixed position table (768 · 16 frames ≈ 123 s).
    ``img_size`` is stored for the port's sake and unused (the input length is free).
    """

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    patch_size: int = 16
    stride: int = 16
    in_chans: int = 1
    mel_bins: int = 128
    max_length: int = 768
    num_classes: int = 527
    model_variant: str = "pretrain"
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    activation_dropout: float = 0.0
    post_mlp_drop: float = 0.0
    start_drop_path_rate: float = 0.0
    end_drop_path_rate: float = 0.0
    layer_norm_first: bool = False
    norm_eps: float = 1e-6
    norm_affine: bool = True
    fixed_positions: bool = True
    img_size: tuple[int, int] = (1024, 128)

    @classmethod
    def base(cls, **overrides: Any) -> EATConfig:
        """EAT-base (the released ``EAT-base_epoch30`` models): 89,972,736 parameters, of which
        85,254,144 are trained (the 768 × 8-row sin-cos table is frozen)."""
        return cls(**overrides)

    @classmethod
    def tiny(cls, **overrides: Any) -> EATConfig:
        """EAT shrunk for tests: 2 blocks, width 64, 4 heads, a 128-patch (≈ 20 s) table."""
        settings = dict(embed_dim=64, depth=2, num_heads=4, max_length=128)
        return cls(**{**settings, **overrides})

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> EATConfig:
        """From a ``config.json`` dict: transformers' own keys are dropped silently, other
        unknown fields with a warning; ``img_size`` becomes a tuple."""
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(
            k for k in cfg if k not in names and k not in HF_CONFIG_KEYS and k[:1] != "_"
        )
        if unknown:
            warnings.warn(f"EAT config: ignoring unknown fields {unknown}", stacklevel=2)
        values = {key: value for key, value in cfg.items() if key in names}
        for field in dataclasses.fields(cls):
            if field.name in values and not _same_kind(values[field.name], field.default):
                got = values[field.name]
                raise CheckpointError(
                    f"EAT config: {field.name} must be of type {type(field.default).__name__} "
                    f"(as {field.default!r}), got {got!r} ({type(got).__name__})"
                )
        if "img_size" in values:
            values["img_size"] = tuple(values["img_size"])
        return cls(**values)

    def max_seconds(self, sample_rate: int = 16000) -> float:
        """The longest clip the position table takes, in seconds: ``max_length`` time patches
        of ``stride`` 10 ms fbank frames (25 ms window)."""
        frames = self.max_length * self.stride
        return ((frames - 1) * FRAME_SHIFT + FRAME_LENGTH) / sample_rate

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (``img_size`` as a list)."""
        values = dataclasses.asdict(self)
        values["img_size"] = list(values["img_size"])
        return values


def _same_kind(value: Any, default: Any) -> bool:
    """Whether a ``config.json`` value has the type of a field's default (an int for a float;
    a list of ints for a pair; never a bool for a number)."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, int | float)
    if isinstance(default, tuple):
        return isinstance(value, list | tuple) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        )
    return isinstance(value, type(default))


def sincos_positions(embed_dim: int, n_time: int, n_freq: int) -> torch.Tensor:
    """The fixed 2-D sin-cos position table, (n_time · n_freq, embed_dim), float32.

    Row t · n_freq + f (time patch t, frequency patch f, time-major like the tokens):
    [sin(f·ω), cos(f·ω), sin(t·ω), cos(t·ω)], each a quarter of the channels, with
    ω_k = 10000^(−k / (embed_dim/4)), k = 0 … embed_dim/4 − 1 — MAE's table (He et al., CVPR
    2022), whose first half encodes the *width* (here frequency) coordinate, as upstream's
    ``get_2d_sincos_pos_embed_flexible``. Computed in numpy float32 as upstream.
    """
    if embed_dim % 4:
        raise ValueError(f"the sin-cos table needs embed_dim divisible by 4, got {embed_dim}")

    def one_axis(dim: int, positions: np.ndarray) -> np.ndarray:
        omega = np.arange(dim // 2, dtype=np.float32)
        omega /= dim / 2.0
        omega = 1.0 / 10000**omega
        angles = np.einsum("m,d->md", positions.reshape(-1), omega)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    freq, time = np.meshgrid(
        np.arange(n_freq, dtype=np.float32), np.arange(n_time, dtype=np.float32)
    )
    table = np.concatenate([one_axis(embed_dim // 2, freq), one_axis(embed_dim // 2, time)], axis=1)
    return torch.from_numpy(table).float()


# --- modules -------------------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    """``local_encoder``: Conv2d patches, (batch, 1, frames, mel) → (batch, tokens, dim),
    tokens time-major."""

    def __init__(self, config: EATConfig):
        super().__init__()
        self.proj = nn.Conv2d(
            config.in_chans, config.embed_dim, kernel_size=config.patch_size, stride=config.stride
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return patch_tokens(self.proj, x)


class FixedPositionalEncoder(nn.Module):
    """Holds the sin-cos table as a frozen parameter ``positions`` (1, max_length · 8, dim)."""

    def __init__(self, positions: torch.Tensor):
        super().__init__()
        self.positions = nn.Parameter(positions.unsqueeze(0), requires_grad=False)

    def forward(self, n_tokens: int) -> torch.Tensor:
        """The first ``n_tokens`` rows, (1, n_tokens, dim)."""
        if n_tokens > self.positions.shape[1]:
            raise ValueError(
                f"{n_tokens} tokens exceed the position table ({self.positions.shape[1]} rows, "
                "config.max_length time patches): the input is too long"
            )
        return self.positions[:, :n_tokens]


class EATAttention(nn.Module):
    """Multi-head self-attention with one fused ``qkv`` Linear: softmax(q·kᵀ / √d + M)·v, then
    ``proj``; through ``scaled_dot_product_attention``, whose softmax accumulates in float32
    as upstream's ``softmax(dtype=float32)``."""

    def __init__(self, config: EATConfig):
        super().__init__()
        dim = config.embed_dim
        self.num_heads, self.head_dim = config.num_heads, dim // config.num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=config.qkv_bias)
        self.attn_drop = config.attn_drop_rate
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(config.drop_rate)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, tokens, dim) → same; ``attn_mask`` (batch, 1, 1, tokens) bool, True = key
        may be attended to, or None."""
        batch, n_tokens, dim = x.shape
        qkv = self.qkv(x).view(batch, n_tokens, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, N, d) each
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.attn_drop if self.training else 0.0,
            scale=self.scale,
        )
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(batch, n_tokens, dim)))


class Mlp(nn.Module):
    """timm's Mlp: fc1 → GELU → dropout → fc2 → dropout."""

    def __init__(self, dim: int, hidden: int, drop: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class EATBlock(nn.Module):
    """data2vec 2.0's ``AltBlock``. Post-LN (EAT's setting):
    x = x + attn(x); r = norm1(x); x = norm2(r + mlp(r)).

    With ``layer_norm_first`` it computes upstream's pre-LN branch literally, which is
    x = x + attn(norm1(x)); r = mlp(norm2(x)); x = r + r — the residual of the MLP is lost
    there upstream (no released EAT model uses this branch).
    """

    def __init__(self, config: EATConfig, drop_path: float):
        super().__init__()
        dim = config.embed_dim

        def norm() -> nn.LayerNorm:
            return nn.LayerNorm(dim, eps=config.norm_eps, elementwise_affine=config.norm_affine)

        self.layer_norm_first = config.layer_norm_first
        self.norm1 = norm()
        self.attn = EATAttention(config)
        self.drop_path = DropPath(drop_path)
        self.norm2 = norm()
        self.mlp = Mlp(dim, int(dim * config.mlp_ratio), config.activation_dropout)
        self.post_mlp_dropout = nn.Dropout(config.post_mlp_drop)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.layer_norm_first:
            x = x + self.drop_path(self.attn(self.norm1(x), attn_mask))
            r = self.mlp(self.norm2(x))
            return r + self.drop_path(self.post_mlp_dropout(r))
        x = x + self.drop_path(self.attn(x, attn_mask))
        r = self.norm1(x)
        return self.norm2(r + self.drop_path(self.post_mlp_dropout(self.mlp(r))))


class EAT(nn.Module):
    """The EAT audio backbone (Chen et al., IJCAI 2024), the Hugging Face port's keys and
    arithmetic.

    The shared embedding API (also on :class:`asd_utils.models.beats.BEATs`):

    - :meth:`features`: waveform (batch, samples) in [-1, 1] at 16 kHz, optional valid lengths
      → normalised fbank (batch, frames, 128), frames a multiple of 16, and a frame mask;
    - :meth:`forward_features`: fbank, frame mask → utterance embedding (batch, D), the CLS
      output, and the patch tokens (batch, 8 · frames / 16, D);
    - :meth:`embed` = both in turn; :attr:`embed_dim` = D = ``config.embed_dim``.

    ``target_length``: frames every clip is padded or cropped to (1024 = 10.24 s, upstream's
    recipe for AudioSet-length clips; a multiple of 16), or None to keep each clip's frames
    and pad them up to the next multiple of 16 (upstream's variable-length recipe). Loading:
    :meth:`from_pretrained` (a Hugging Face port folder); writing: :meth:`save_pretrained`.
    """

    def __init__(self, config: EATConfig, target_length: int | None = 1024):
        super().__init__()
        if config.in_chans != 1:
            raise ValueError(f"EAT takes a 1-channel spectrogram, got in_chans={config.in_chans}")
        if config.embed_dim % config.num_heads:
            raise ValueError("embed_dim must be a multiple of num_heads")
        if config.model_variant not in VARIANTS:
            raise ValueError(
                f"model_variant must be one of {VARIANTS}, got {config.model_variant!r}"
            )
        self.config = config
        self.embed_dim = config.embed_dim
        self.target_length = self._check_target_length(target_length)
        self.local_encoder = PatchEmbed(config)
        self.extra_tokens = nn.Parameter(torch.zeros(1, 1, config.embed_dim))
        self.pos_drop = nn.Dropout(config.drop_rate)
        n_freq = config.mel_bins // config.patch_size  # the port's table width
        self.fixed_positional_encoder = (
            FixedPositionalEncoder(sincos_positions(config.embed_dim, config.max_length, n_freq))
            if config.fixed_positions
            else None
        )
        rates = np.linspace(config.start_drop_path_rate, config.end_drop_path_rate, config.depth)
        self.blocks = nn.ModuleList(EATBlock(config, float(rate)) for rate in rates)
        self.pre_norm = nn.LayerNorm(
            config.embed_dim, eps=config.norm_eps, elementwise_affine=config.norm_affine
        )
        if config.model_variant == "finetune":  # the port's head: LayerNorm with torch's eps
            self.fc_norm = nn.LayerNorm(config.embed_dim)
            self.head = nn.Linear(config.embed_dim, config.num_classes)
        else:
            self.fc_norm = self.head = None
        self._init_weights()

    def _init_weights(self) -> None:
        """The port's initialisation: truncated normal(0, 0.02) for ``extra_tokens`` and every
        Linear (zero bias), LayerNorms 1 / 0; the patch Conv2d keeps torch's default."""
        nn.init.trunc_normal_(self.extra_tokens, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm) and module.weight is not None:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _check_target_length(self, target_length: int | None) -> int | None:
        patch = self.config.patch_size
        if target_length is not None and (target_length <= 0 or target_length % patch):
            raise ValueError(
                f"target_length must be a positive multiple of {patch}, got {target_length}"
            )
        return target_length

    # --- the embedding API ---------------------------------------------------------------

    def fbank(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """EAT's unnormalised fbank: (batch, samples) in [-1, 1] at 16 kHz → (batch, frames, 128).

        Per clip, as upstream's feature extraction: subtract the mean of its valid samples
        (``lengths`` (batch,), None = all), Kaldi fbank with ``htk_compat=True,
        window_type='hanning', num_mel_bins=128, use_energy=False, dither=0`` (1 + (n − 400)
        // 160 frames; ``htk_compat`` only moves the absent energy column); frames past a
        clip's own are 0. Frames are local (25 ms window, 10 ms shift, per-frame DC removal, so
        the mean subtracted changes only float rounding): the fbank of a crop starting at
        sample 160 · k is frames k … of the whole clip's. Float32, autocast off.
        """
        waveform, lengths = check_waveform(
            waveform, lengths, min_samples_for_frames(self.config.patch_size)
        )
        with autocast_off(waveform.device):
            samples = prefix_mask(lengths, waveform.shape[1])
            waveform = waveform.float().masked_fill(~samples, 0.0)
            # each clip's own float32 mean, as upstream's `source - source.mean()` computes it
            # (a float64 sum moved the fbank by up to 5e-5 on a tonal clip); per row, so the
            # padding after a clip does not enter its sum
            rows = zip(waveform, lengths.tolist(), strict=True)
            mean = torch.stack([w[:n].mean() for w, n in rows])[:, None]
            waveform = (waveform - mean).masked_fill(~samples, 0.0)
            fbank = kaldi_fbank(
                waveform, sample_rate=16000, num_mel_bins=128, window_type="hanning"
            )
            return fbank.masked_fill(~prefix_mask(n_frames(lengths), fbank.shape[1])[..., None], 0)

    def features_from_fbank(
        self, fbank: torch.Tensor, frames: torch.Tensor, target_length: Any = _FROM_MODEL
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`fbank` output (batch, T, 128) with ``frames`` (batch,) valid frames per clip →
        EAT's input ``(fbank, frame_mask)``, as :meth:`features` describes: frames past a
        clip's own set to 0, zero frames appended (or frames cropped) to ``target_length``,
        then :func:`eat_normalize`. What a training crop taken in frames goes through.
        """
        if target_length is _FROM_MODEL:
            target_length = self.target_length
        target_length = self._check_target_length(target_length)
        patch = self.config.patch_size
        with autocast_off(fbank.device):
            frames = torch.as_tensor(frames, device=fbank.device).long()
            fbank = fbank.float().masked_fill(~prefix_mask(frames, fbank.shape[1])[..., None], 0.0)
            if target_length is None:
                own_length = -(-frames // patch) * patch  # up to the next multiple of 16
                total = int(own_length.max())
                frame_mask = prefix_mask(own_length, total)
            else:
                total = target_length
                frame_mask = torch.ones(len(fbank), total, dtype=torch.bool, device=fbank.device)
            if fbank.shape[1] >= total:
                fbank = fbank[:, :total]
            else:
                fbank = F.pad(fbank, (0, 0, 0, total - fbank.shape[1]))
            return eat_normalize(fbank), frame_mask

    def features(
        self,
        waveform: torch.Tensor,
        lengths: torch.Tensor | None = None,
        target_length: Any = _FROM_MODEL,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """EAT's input: (batch, samples) in [-1, 1] at 16 kHz → (fbank, frame_mask).

        :meth:`fbank` then :meth:`features_from_fbank`: per clip, the mean of its valid samples
        (``lengths`` (batch,), None = all) subtracted, Kaldi fbank, zero frames appended (or
        frames cropped) to ``target_length`` (default: the model's), or with None up to the
        next multiple of 16, then (fbank + 4.268) / (2 · 4.569) (:func:`eat_normalize`; the
        zeros are padded before it, as upstream).

        fbank (batch, frames, 128) float32: frames = ``target_length``, or the longest clip's
        padded length. ``frame_mask`` (batch, frames) is True on each clip's own input —
        its frames and upstream's own zero padding, i.e. all frames with a fixed
        ``target_length`` — and False on the batch padding past it, so a clip in a batch gets
        the features (and, through :meth:`forward_features`, the embedding) it gets alone.
        Computed in float32 (autocast off).
        """
        waveform, lengths = check_waveform(
            waveform, lengths, min_samples_for_frames(self.config.patch_size)
        )
        return self.features_from_fbank(
            self.fbank(waveform, lengths), n_frames(lengths), target_length
        )

    def token_mask(self, frame_mask: torch.Tensor) -> torch.Tensor:
        """Frame mask (batch, frames) → patch-token mask (batch, tokens), CLS not included: a
        token is valid if all frames of its patch are."""
        config = self.config
        n_freq = (config.mel_bins - config.patch_size) // config.stride + 1
        return token_mask(frame_mask, config.patch_size, config.stride, n_freq)

    def forward_features(
        self, fbank: torch.Tensor, frame_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, frames, 128) normalised fbank → (utterance (batch, D), tokens (batch, N, D)).

        utterance = the CLS token's output; tokens = the N = 8 · frames / 16 patch outputs,
        time-major. ``frame_mask`` (batch, frames), True = valid, None = all: tokens of padding
        patches are masked out as attention keys (the CLS token never is).
        """
        weight = self.local_encoder.proj.weight
        x = self.local_encoder(fbank.to(weight.dtype).unsqueeze(1))  # (B, N, D)
        batch, n_tokens, _ = x.shape
        if self.fixed_positional_encoder is not None:
            x = x + self.fixed_positional_encoder(n_tokens)
        x = torch.cat([self.extra_tokens.expand(batch, -1, -1), x], dim=1)
        x = self.pos_drop(self.pre_norm(x))
        attn_mask = None
        if frame_mask is not None:
            valid = self.token_mask(frame_mask.to(x.device))
            check_tokens(valid)
            if not bool(valid.all()):
                attn_mask = F.pad(valid, (1, 0), value=True)[:, None, None, :]
        for block in self.blocks:
            x = block(x, attn_mask)
        return x[:, 0], x[:, 1:]

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

    def classify(self, utterance: torch.Tensor) -> torch.Tensor:
        """The fine-tuned head's logits (batch, num_classes): head(fc_norm(CLS output)), as the
        port's ``forward`` (no sigmoid)."""
        if self.head is None:
            raise RuntimeError("not a fine-tuned EAT model (config.model_variant is 'pretrain')")
        return self.head(self.fc_norm(utterance))

    # --- checkpoints ---------------------------------------------------------------------

    def _prefixed(self) -> nn.Module:
        """A wrapper whose state dict is this model's with the port's ``model.`` prefix."""
        wrapper = nn.Module()
        wrapper.model = self
        return wrapper

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, target_length: int | None = 1024) -> EAT:
        """A Hugging Face port folder (``config.json`` + ``model.safetensors``, keys prefixed
        ``model.``; pretrain or finetune variant), loaded strictly, in eval mode."""
        expected = f"an EAT Hugging Face folder with {CONFIG_NAME} and {WEIGHTS_NAME}"
        folder = require_dir(folder, expected)
        config_path = require_file(folder / CONFIG_NAME, f"EAT's {CONFIG_NAME} ({expected})")
        weights_path = require_file(folder / WEIGHTS_NAME, f"EAT's {WEIGHTS_NAME} ({expected})")
        try:
            cfg = json.loads(config_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CheckpointError(f"{config_path}: not a JSON config ({error})") from error
        if not isinstance(cfg, dict):
            raise CheckpointError(
                f"{config_path}: expected a JSON object, got {type(cfg).__name__}"
            )
        try:
            tensors = load_file(weights_path)
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(
                f"{weights_path}: not a safetensors file ({error}); expected EAT's weights"
            ) from error
        try:
            config = EATConfig.from_dict(cfg)
        except CheckpointError as error:
            raise CheckpointError(f"{config_path}: {error}") from None
        model = cls(config, target_length=target_length)
        load_strict(model._prefixed(), tensors, str(weights_path))
        return model.eval()

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write the Hugging Face port's layout: ``config.json`` (the fields, ``model_type``
        "eat", ``architectures`` ["EATModel"]) and ``model.safetensors`` (keys ``model.*``)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        cfg = {"architectures": ["EATModel"], "model_type": "eat", **self.config.to_dict()}
        (folder / CONFIG_NAME).write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
        tensors = {
            k: v.detach().cpu().contiguous() for k, v in self._prefixed().state_dict().items()
        }
        save_file(tensors, folder / WEIGHTS_NAME, metadata={"format": "pt"})
