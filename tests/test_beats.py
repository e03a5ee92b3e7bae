"""BEATs: upstream checkpoint layout, strict loading, shapes, padded batches, attention math."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from backbone_checks import check_padded_batch

from asd_utils.frontends.features import beats_fbank, beats_normalize
from asd_utils.models.beats import (
    BEATs,
    BEATsAttention,
    BEATsConfig,
    relative_position_bucket,
)
from asd_utils.models.common import CheckpointError

SR = 16000


def upstream_layout(cfg: BEATsConfig) -> dict[str, tuple[int, ...]]:
    """Every key and shape of an upstream BEATs state dict (microsoft/unilm beats/), written
    out from the config: old weight-norm names, the bias table listed under every layer."""
    e, d, f = cfg.embed_dim, cfg.encoder_embed_dim, cfg.encoder_ffn_embed_dim
    h, p, k, g = (
        cfg.encoder_attention_heads,
        cfg.input_patch_size,
        cfg.conv_pos,
        cfg.conv_pos_groups,
    )
    keys = {
        "patch_embedding.weight": (e, 1, p, p),
        "layer_norm.weight": (e,),
        "layer_norm.bias": (e,),
        "post_extract_proj.weight": (d, e),
        "post_extract_proj.bias": (d,),
        "encoder.pos_conv.0.weight_g": (1, 1, k),
        "encoder.pos_conv.0.weight_v": (d, d // g, k),
        "encoder.pos_conv.0.bias": (d,),
        "encoder.layer_norm.weight": (d,),
        "encoder.layer_norm.bias": (d,),
    }
    for i in range(cfg.encoder_layers):
        layer = f"encoder.layers.{i}."
        for name in ("k_proj", "v_proj", "q_proj", "out_proj"):
            keys[f"{layer}self_attn.{name}.weight"] = (d, d)
            keys[f"{layer}self_attn.{name}.bias"] = (d,)
        keys[f"{layer}self_attn.grep_linear.weight"] = (8, d // h)
        keys[f"{layer}self_attn.grep_linear.bias"] = (8,)
        keys[f"{layer}self_attn.grep_a"] = (1, h, 1, 1)
        keys[f"{layer}self_attn.relative_attention_bias.weight"] = (cfg.num_buckets, h)
        for norm in ("self_attn_layer_norm", "final_layer_norm"):
            keys[f"{layer}{norm}.weight"] = (d,)
            keys[f"{layer}{norm}.bias"] = (d,)
        keys[f"{layer}fc1.weight"], keys[f"{layer}fc1.bias"] = (f, d), (f,)
        keys[f"{layer}fc2.weight"], keys[f"{layer}fc2.bias"] = (d, f), (d,)
    if cfg.finetuned_model:
        keys["predictor.weight"] = (cfg.predictor_class, d)
        keys["predictor.bias"] = (cfg.predictor_class,)
    return keys


def upstream_state_dict(cfg: BEATsConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in upstream's layout, large enough that every input matters; the bias
    table is one tensor under every layer's name, as upstream's state_dict() lists it."""
    generator = torch.Generator().manual_seed(seed)
    state, table = {}, None
    for key, shape in upstream_layout(cfg).items():
        if key.endswith("relative_attention_bias.weight"):
            table = torch.randn(shape, generator=generator) if table is None else table
            state[key] = table
            continue
        value = torch.randn(shape, generator=generator) * (0.3 if len(shape) > 1 else 0.1)
        if "norm" in key and key.endswith("weight") or key.endswith(("weight_g", "grep_a")):
            value = 1.0 + value.abs()
        state[key] = value
    return state


def save_upstream(path, cfg: BEATsConfig, state: dict, **extra) -> None:
    torch.save({"cfg": dict(vars(cfg)), "model": state, **extra}, path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> BEATs:
    """A tiny BEATs with random weights loaded from an upstream-layout checkpoint, eval mode."""
    path = tmp_path_factory.mktemp("beats") / "tiny.pt"
    save_upstream(path, BEATsConfig.tiny(), upstream_state_dict(BEATsConfig.tiny()))
    return BEATs.from_checkpoint(path)


def noise(seconds: float, batch: int = 1, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, int(seconds * SR), generator=generator) * 1.6 - 0.8


# --- the checkpoint format ---------------------------------------------------------------------


@pytest.mark.parametrize("finetuned", [False, True])
def test_state_dict_has_upstream_keys_and_shapes(finetuned):
    cfg = BEATsConfig.tiny(finetuned_model=finetuned, predictor_class=11)
    state = BEATs(cfg).state_dict()
    assert {key: tuple(value.shape) for key, value in state.items()} == upstream_layout(cfg)
    tables = [v for k, v in state.items() if k.endswith("relative_attention_bias.weight")]
    assert len(tables) == cfg.encoder_layers
    assert all(t.data_ptr() == tables[0].data_ptr() for t in tables)


def test_base_is_the_released_size():
    cfg = BEATsConfig.base()
    with torch.device("meta"):  # shapes only: no memory, no time
        model = BEATs(cfg)
    layout = upstream_layout(cfg)
    aliases = cfg.encoder_layers - 1  # the bias table counted once
    expected = sum(math.prod(s) for s in layout.values()) - aliases * cfg.num_buckets * 12
    assert sum(p.numel() for p in model.parameters()) == expected == 90_311_792
    assert model.embed_dim == 768 and model.encoder.layers[0].alpha == pytest.approx(24**0.25)


@pytest.mark.parametrize("finetuned", [False, True])
def test_upstream_checkpoint_loads_strictly_and_round_trips(tmp_path, finetuned):
    cfg = BEATsConfig.tiny(finetuned_model=finetuned, predictor_class=5)
    state = upstream_state_dict(cfg, seed=1)
    labels = {0: "/m/a", 1: "/m/b"} if finetuned else None
    save_upstream(tmp_path / "up.pt", cfg, state, **({"label_dict": labels} if labels else {}))
    model = BEATs.from_checkpoint(tmp_path / "up.pt")
    assert not model.training and model.config == cfg and model.label_dict == labels
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key

    model.save_checkpoint(tmp_path / "ours.pt")
    saved = torch.load(tmp_path / "ours.pt", weights_only=True)
    assert saved["cfg"] == cfg.to_dict() and saved.get("label_dict") == labels
    assert set(saved["model"]) == set(state)
    reloaded = BEATs.from_checkpoint(tmp_path / "ours.pt")
    waveform = noise(3.0, batch=2)
    with torch.no_grad():
        (u1, t1), (u2, t2) = model.embed(waveform), reloaded.embed(waveform)
    assert torch.equal(u1, u2) and torch.equal(t1, t2)
    if finetuned:
        assert torch.equal(model.classify(t1), reloaded.classify(t2))
        assert model.classify(t1).shape == (2, 5)
    else:
        with pytest.raises(RuntimeError, match="not a fine-tuned"):
            model.classify(t1)


def test_new_weight_norm_naming_loads(tmp_path, tiny):
    state = upstream_state_dict(BEATsConfig.tiny())
    prefix = "encoder.pos_conv.0."
    state[prefix + "parametrizations.weight.original0"] = state.pop(prefix + "weight_g")
    state[prefix + "parametrizations.weight.original1"] = state.pop(prefix + "weight_v")
    save_upstream(tmp_path / "new.pt", BEATsConfig.tiny(), state)
    model = BEATs.from_checkpoint(tmp_path / "new.pt")
    waveform = noise(2.0)
    with torch.no_grad():
        assert torch.equal(model.embed(waveform)[1], tiny.embed(waveform)[1])


def test_missing_unexpected_and_misshapen_keys_are_listed(tmp_path):
    cfg = BEATsConfig.tiny()
    state = upstream_state_dict(cfg)
    del state["encoder.layers.1.fc2.bias"]
    state["encoder.layers.7.fc1.weight"] = torch.zeros(3)
    state["layer_norm.bias"] = torch.zeros(5)
    save_upstream(tmp_path / "bad.pt", cfg, state)
    with pytest.raises(CheckpointError) as error:
        BEATs.from_checkpoint(tmp_path / "bad.pt")
    message = str(error.value)
    assert str(tmp_path / "bad.pt") in message
    assert "1 missing keys:\n  encoder.layers.1.fc2.bias" in message
    assert "1 unexpected keys:\n  encoder.layers.7.fc1.weight" in message
    assert "layer_norm.bias: checkpoint (5,), model (64,)" in message
    # only unexpected keys: a fine-tuned state dict under a pre-trained cfg
    state = upstream_state_dict(BEATsConfig.tiny(finetuned_model=True))
    save_upstream(tmp_path / "extra.pt", cfg, state)
    with pytest.raises(
        CheckpointError, match="2 unexpected keys:\n  predictor.bias\n  predictor.weight"
    ):
        BEATs.from_checkpoint(tmp_path / "extra.pt")


def test_bias_table_must_be_present_for_every_layer_and_equal(tmp_path):
    cfg = BEATsConfig.tiny()
    state = upstream_state_dict(cfg)
    del state["encoder.layers.1.self_attn.relative_attention_bias.weight"]
    save_upstream(tmp_path / "one.pt", cfg, state)
    with pytest.raises(CheckpointError, match="layers.1.self_attn.relative_attention_bias"):
        BEATs.from_checkpoint(tmp_path / "one.pt")
    state = upstream_state_dict(cfg)
    key = "encoder.layers.1.self_attn.relative_attention_bias.weight"
    state[key] = state[key] + 1
    save_upstream(tmp_path / "differ.pt", cfg, state)
    with pytest.raises(CheckpointError, match="copies differ"):
        BEATs.from_checkpoint(tmp_path / "differ.pt")


def test_bad_paths_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.pt: no such file; expected a BEATs"):
        BEATs.from_checkpoint(tmp_path / "nothing.pt")
    with pytest.raises(IsADirectoryError, match="is a directory; expected a BEATs checkpoint"):
        BEATs.from_checkpoint(tmp_path)
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=r"text\.pt: not a readable torch checkpoint"):
        BEATs.from_checkpoint(tmp_path / "text.pt")
    torch.save({"model": {}}, tmp_path / "nocfg.pt")
    with pytest.raises(
        CheckpointError, match=r"nocfg\.pt: expected a BEATs checkpoint.*\['model'\]"
    ):
        BEATs.from_checkpoint(tmp_path / "nocfg.pt")


# --- shapes and the embedding API --------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "frames", "tokens"),
    [(6, 598, 296), (10, 998, 496), (12, 1198, 592), (16, 1598, 792)],
)
def test_output_shapes(tiny, seconds, frames, tokens):
    with torch.no_grad():
        fbank, frame_mask = tiny.features(noise(seconds, batch=2))
        utterance, out = tiny.forward_features(fbank, frame_mask)
    assert fbank.shape == (2, frames, 128) and frame_mask.shape == (2, frames)
    assert bool(frame_mask.all())
    assert out.shape == (2, tokens, tiny.embed_dim) and tokens == 8 * (frames // 16)
    assert utterance.shape == (2, tiny.embed_dim) == (2, 96)
    torch.testing.assert_close(utterance, out.mean(1))


def test_features_are_upstream_preprocessing(tiny):
    waveform = noise(1.5, batch=2)
    fbank, _ = tiny.features(waveform)
    torch.testing.assert_close(fbank, beats_normalize(beats_fbank(waveform)), rtol=0, atol=0)
    assert beats_normalize(torch.tensor(15.41663)).item() == 0.0
    assert beats_normalize(torch.tensor(15.41663 + 2 * 6.55582)).item() == pytest.approx(1.0)


def test_padded_batch_gives_each_clip_its_own_embedding(tiny):
    clips = [noise(s, seed=i)[0] for i, s in enumerate([10.0, 6.0, 8.0, 7.3])]
    batch, lengths, _ = check_padded_batch(tiny, clips, fbank_atol=1e-5)
    with torch.no_grad():  # BEATs zeroes the padding frames of the fbank
        fbank, frame_mask = tiny.features(batch, lengths)
        for i in range(len(clips)):
            assert not fbank[i, int(frame_mask[i].sum()) :].any()


def test_eval_is_deterministic_and_dropout_acts_in_training():
    cfg = BEATsConfig.tiny(dropout=0.1, attention_dropout=0.1)
    model = BEATs(cfg)
    model.load_upstream_state_dict(upstream_state_dict(cfg))
    waveform = noise(2.0, batch=2)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.embed(waveform)[0], model.embed(waveform)[0])
        model.train()
        assert not torch.equal(model.embed(waveform)[0], model.embed(waveform)[0])


def test_too_short_clip_is_refused(tiny):
    with pytest.raises(ValueError, match=r"clip lengths must be in \[2800"):
        tiny.features(torch.zeros(2, 4000), torch.tensor([4000, 2000]))
    with pytest.raises(ValueError, match=r"waveform must be \(batch, samples\)"):
        tiny.features(torch.zeros(4000))


# --- the pieces of the arithmetic --------------------------------------------------------------


def test_relative_position_buckets_known_values():
    # 320 buckets, max_distance 800 (iter3): 160 per direction, exact below 80, then
    # 80 + ⌊ln(d / 80) / ln(10) · 80⌋ capped at 159; key after query adds 160.
    offsets = torch.tensor([0, -1, 1, -79, -80, 80, -200, 200, -400, -799, -800, -5000, 5000])
    expected = [0, 1, 161, 79, 80, 240, 111, 271, 135, 159, 159, 159, 319]
    assert relative_position_bucket(offsets, 320, 800).tolist() == expected
    # upstream's default (max_distance 1280): 80 + ⌊ln(5) / ln(16) · 80⌋ = 126 at −400
    assert relative_position_bucket(torch.tensor([-400, 3]), 320, 1280).tolist() == [126, 163]


def test_attention_equals_upstream_formula():
    """SDPA with an additive mask against upstream's own steps: q·scale/32, (qkᵀ − max)·32,
    −inf on padded keys, the bias gated by grep on the unscaled query, softmax, ·v. In float64,
    so that the two agree to rounding error (the ×32 trick costs float32 a few 1e-5)."""
    torch.manual_seed(0)
    cfg = BEATsConfig.tiny()
    attn = BEATsAttention(cfg, has_relative_attention_bias=True).eval().double()
    with torch.no_grad():
        for p in attn.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    batch, n, heads, dim = 2, 37, cfg.encoder_attention_heads, cfg.encoder_embed_dim
    d = dim // heads
    x = torch.randn(batch, n, dim, dtype=torch.float64)
    valid = torch.ones(batch, n, dtype=torch.bool)
    valid[1, 25:] = False
    key_mask = torch.zeros(batch, 1, 1, n, dtype=torch.float64).masked_fill(
        ~valid[:, None, None, :], -1e30
    )
    with torch.no_grad():
        out, bias = attn(x, key_mask)

        scaling, alpha = d**-0.5, 32
        q = (attn.q_proj(x) * scaling / alpha).view(batch, n, heads, d).transpose(1, 2)
        k = attn.k_proj(x).view(batch, n, heads, d).transpose(1, 2)
        v = attn.v_proj(x).view(batch, n, heads, d).transpose(1, 2)
        logits = q @ k.transpose(-1, -2)
        logits = (logits - logits.amax(-1, keepdim=True)) * alpha
        logits = logits.masked_fill(~valid[:, None, None, :], float("-inf"))
        offset = torch.arange(n)[None, :] - torch.arange(n)[:, None]
        table = attn.relative_attention_bias.weight
        plain = table[relative_position_bucket(offset, cfg.num_buckets, cfg.max_distance)]
        plain = plain.permute(2, 0, 1)  # (heads, query, key)
        unscaled_q = q * alpha / scaling
        gate = torch.sigmoid(attn.grep_linear(unscaled_q).view(batch, heads, n, 2, 4).sum(-1))
        gate_a, gate_b = gate[..., :1], gate[..., 1:]
        weights = F.softmax(logits + (gate_a * (gate_b * attn.grep_a - 1) + 2) * plain, dim=-1)
        expected = attn.out_proj((weights @ v).transpose(1, 2).reshape(batch, n, dim))
    torch.testing.assert_close(bias, plain, rtol=0, atol=0)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    assert (out[1, :, :] - attn(x)[0][1]).abs().max() > 1e-3  # the key mask matters


def test_layers_share_the_bias_table_made_in_layer_zero(tiny):
    tables = [layer.self_attn.relative_attention_bias for layer in tiny.encoder.layers]
    assert all(t is tables[0] for t in tables)
    calls = []
    for i, layer in enumerate(tiny.encoder.layers):
        layer.self_attn.compute_bias = lambda n, i=i, f=layer.self_attn.compute_bias: (
            calls.append(i) or f(n)
        )
    try:
        with torch.no_grad():
            tiny.embed(noise(1.0))
    finally:
        for layer in tiny.encoder.layers:
            del layer.self_attn.compute_bias
    assert calls == [0]


def test_position_convolution_keeps_the_length_and_normalises_weights(tiny):
    conv = tiny.encoder.pos_conv
    x = torch.randn(2, tiny.embed_dim, 50)
    with torch.no_grad():
        weight = conv[0].weight()
        norms = weight.norm(dim=(0, 1)).flatten()
        expected = F.gelu(F.conv1d(x, weight, conv[0].bias, padding=64, groups=4)[..., :-1])
        out = conv(x)
    torch.testing.assert_close(norms, conv[0].weight_g.detach().abs().flatten())
    assert out.shape == x.shape and conv[0].kernel_size == 128
    torch.testing.assert_close(out, expected)


def test_post_ln_deep_norm_layer_arithmetic(tiny):
    layer = tiny.encoder.layers[1]
    x = torch.randn(1, 20, tiny.embed_dim)
    bias = torch.randn(4, 20, 20)
    with torch.no_grad():
        out, _ = layer(x, None, bias)
        alpha = math.sqrt(2)  # (2 · 2 layers)^(1/4)
        h = layer.self_attn_layer_norm(alpha * x + layer.self_attn(x, None, bias)[0])
        ffn = layer.fc2(F.gelu(layer.fc1(h)))
        expected = layer.final_layer_norm(alpha * h + ffn)
    assert layer.alpha == pytest.approx(alpha)
    torch.testing.assert_close(out, expected)
