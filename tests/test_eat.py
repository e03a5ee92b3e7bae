"""EAT: the Hugging Face port's folder format, strict loading, shapes, padded batches, math."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from backbone_checks import check_padded_batch
from safetensors.torch import load_file, save_file

from asd_utils.frontends.features import eat_fbank, eat_normalize
from asd_utils.frontends.features import kaldi_fbank as kaldi
from asd_utils.models.common import CheckpointError
from asd_utils.models.eat import EAT, EATAttention, EATConfig, sincos_positions

SR = 16000


def port_layout(cfg: EATConfig) -> dict[str, tuple[int, ...]]:
    """Every key and shape of the port's ``model.safetensors``, written out from the config."""
    d, p, hidden = cfg.embed_dim, cfg.patch_size, int(cfg.embed_dim * cfg.mlp_ratio)
    keys = {
        "model.local_encoder.proj.weight": (d, 1, p, p),
        "model.local_encoder.proj.bias": (d,),
        "model.extra_tokens": (1, 1, d),
        "model.fixed_positional_encoder.positions": (1, cfg.max_length * (cfg.mel_bins // p), d),
        "model.pre_norm.weight": (d,),
        "model.pre_norm.bias": (d,),
    }
    for i in range(cfg.depth):
        block = f"model.blocks.{i}."
        for norm in ("norm1", "norm2"):
            keys[f"{block}{norm}.weight"], keys[f"{block}{norm}.bias"] = (d,), (d,)
        keys[f"{block}attn.qkv.weight"], keys[f"{block}attn.qkv.bias"] = (3 * d, d), (3 * d,)
        keys[f"{block}attn.proj.weight"], keys[f"{block}attn.proj.bias"] = (d, d), (d,)
        keys[f"{block}mlp.fc1.weight"], keys[f"{block}mlp.fc1.bias"] = (hidden, d), (hidden,)
        keys[f"{block}mlp.fc2.weight"], keys[f"{block}mlp.fc2.bias"] = (d, hidden), (d,)
    if cfg.model_variant == "finetune":
        keys["model.fc_norm.weight"], keys["model.fc_norm.bias"] = (d,), (d,)
        keys["model.head.weight"], keys["model.head.bias"] = (
            (cfg.num_classes, d),
            (cfg.num_classes,),
        )
    return keys


def port_tensors(cfg: EATConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the port's layout (the position table random too, so a loader that
    rebuilt it instead of reading it would be caught)."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for key, shape in port_layout(cfg).items():
        value = torch.randn(shape, generator=generator) * (0.3 if len(shape) > 1 else 0.1)
        tensors[key] = 1.0 + value.abs() if "norm" in key and key.endswith("weight") else value
    return tensors


def write_port_folder(folder, cfg: EATConfig, tensors: dict) -> None:
    """config.json as transformers writes it (its own keys beside the fields) + safetensors."""
    folder.mkdir(parents=True, exist_ok=True)
    fields = {**vars(cfg), "img_size": list(cfg.img_size)}
    config = {
        "architectures": ["EATModel"],
        "auto_map": {"AutoConfig": "configuration_eat.EATConfig"},
        "model_type": "eat",
        "torch_dtype": "float32",
        "transformers_version": "4.51.3",
        **fields,
    }
    (folder / "config.json").write_text(json.dumps(config))
    save_file(tensors, folder / "model.safetensors")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> EAT:
    """A tiny EAT (variable length: target_length None) with random port weights, eval mode."""
    folder = tmp_path_factory.mktemp("eat") / "tiny"
    write_port_folder(folder, EATConfig.tiny(), port_tensors(EATConfig.tiny()))
    model = EAT.from_pretrained(folder, target_length=None)
    with torch.no_grad():  # a real sin-cos table for the behavioural tests
        table = sincos_positions(64, 128, 8)
        model.fixed_positional_encoder.positions.copy_(table[None])
    return model


def noise(seconds: float, batch: int = 1, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, int(seconds * SR), generator=generator) * 1.6 - 0.8 + 0.05


# --- the checkpoint format ---------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["pretrain", "finetune"])
def test_state_dict_has_the_port_keys_and_shapes(variant):
    cfg = EATConfig.tiny(model_variant=variant, num_classes=9)
    state = EAT(cfg)._prefixed().state_dict()
    assert {key: tuple(value.shape) for key, value in state.items()} == port_layout(cfg)


def test_base_is_the_released_size():
    cfg = EATConfig.base()
    with torch.device("meta"):  # shapes only (the sin-cos table is still built on the CPU)
        model = EAT(cfg)
    total = sum(math.prod(shape) for shape in port_layout(cfg).values())
    assert sum(p.numel() for p in model.parameters()) == total == 89_972_736
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == total - 768 * 8 * 768 == 85_254_144  # the table is frozen
    assert model.embed_dim == 768 and model.blocks[0].norm1.eps == 1e-6


@pytest.mark.parametrize("variant", ["pretrain", "finetune"])
def test_port_folder_loads_strictly_and_round_trips(tmp_path, variant):
    cfg = EATConfig.tiny(model_variant=variant, num_classes=6)
    tensors = port_tensors(cfg, seed=2)
    write_port_folder(tmp_path / "port", cfg, tensors)
    model = EAT.from_pretrained(tmp_path / "port")
    assert not model.training and model.config == cfg and model.target_length == 1024
    for key, value in model._prefixed().state_dict().items():
        assert torch.equal(value, tensors[key]), key

    model.save_pretrained(tmp_path / "ours")
    assert set(load_file(tmp_path / "ours" / "model.safetensors")) == set(tensors)
    written = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert written["model_type"] == "eat" and written["model_variant"] == variant
    reloaded = EAT.from_pretrained(tmp_path / "ours")
    waveform = noise(3.0, batch=2)
    with torch.no_grad():
        (u1, t1), (u2, t2) = model.embed(waveform), reloaded.embed(waveform)
    assert torch.equal(u1, u2) and torch.equal(t1, t2)
    if variant == "finetune":
        logits = model.classify(u1)
        assert logits.shape == (2, 6) and torch.equal(logits, reloaded.classify(u2))
        assert model.fc_norm.eps == 1e-5  # the port's fc_norm: torch's default eps
    else:
        with pytest.raises(RuntimeError, match="not a fine-tuned"):
            model.classify(u1)


def test_missing_unexpected_and_misshapen_keys_are_listed(tmp_path):
    cfg = EATConfig.tiny()
    tensors = port_tensors(cfg)
    del tensors["model.blocks.1.mlp.fc2.bias"]
    tensors["blocks.0.attn.qkv.weight"] = tensors["model.blocks.0.attn.qkv.weight"]  # no prefix
    tensors["model.head.weight"] = torch.zeros(2, 64)
    tensors["model.pre_norm.bias"] = torch.zeros(3)
    write_port_folder(tmp_path / "bad", cfg, {k: v.clone() for k, v in tensors.items()})
    with pytest.raises(CheckpointError) as error:
        EAT.from_pretrained(tmp_path / "bad")
    message = str(error.value)
    assert str(tmp_path / "bad" / "model.safetensors") in message
    assert "1 missing keys:\n  model.blocks.1.mlp.fc2.bias" in message
    assert "2 unexpected keys:\n  blocks.0.attn.qkv.weight\n  model.head.weight" in message
    assert "model.pre_norm.bias: checkpoint (3,), model (64,)" in message


def test_bad_paths_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere: no such directory; expected an EAT"):
        EAT.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match=r"file\.bin: is a file, not a directory"):
        EAT.from_pretrained(tmp_path / "file.bin")
    folder = tmp_path / "half"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(EATConfig.tiny().to_dict()))
    with pytest.raises(FileNotFoundError, match=r"half/model\.safetensors: no such file"):
        EAT.from_pretrained(folder)
    (folder / "model.safetensors").write_text("not safetensors")
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a safetensors file"):
        EAT.from_pretrained(folder)
    (folder / "config.json").write_text("{oops")
    with pytest.raises(CheckpointError, match=r"config\.json: not a JSON config"):
        EAT.from_pretrained(folder)
    (folder / "config.json").unlink()
    (folder / "config.json").mkdir()
    with pytest.raises(IsADirectoryError, match=r"config\.json: is a directory"):
        EAT.from_pretrained(folder)


def test_unknown_config_fields_warn_and_transformers_keys_do_not():
    with pytest.warns(UserWarning, match=r"ignoring unknown fields \['mystery'\]"):
        cfg = EATConfig.from_dict({"depth": 3, "mystery": 1, "model_type": "eat", "_x": 0})
    assert cfg.depth == 3 and cfg.img_size == (1024, 128)


# --- shapes and the embedding API --------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "frames", "padded"),
    [(6, 598, 608), (10, 998, 1008), (12, 1198, 1200), (16, 1598, 1600)],
)
def test_output_shapes(tiny, seconds, frames, padded):
    waveform = noise(seconds, batch=2)
    with torch.no_grad():
        fbank, frame_mask = tiny.features(waveform)  # target_length None: next multiple of 16
        utterance, tokens = tiny.forward_features(fbank, frame_mask)
        fixed, fixed_mask = tiny.features(waveform, target_length=1024)
        u_fixed, t_fixed = tiny.forward_features(fixed, fixed_mask)
    assert fbank.shape == (2, padded, 128) and bool(frame_mask.all())
    assert tokens.shape == (2, padded // 2, 64) and utterance.shape == (2, tiny.embed_dim) == (
        2,
        64,
    )
    assert fixed.shape == (2, 1024, 128) and t_fixed.shape == (2, 512, 64)
    assert u_fixed.shape == (2, 64) and bool(fixed_mask.all())
    pad_value = eat_normalize(torch.tensor(0.0))
    assert bool((fbank[:, frames:] == pad_value).all())  # upstream pads the raw fbank with zeros
    assert not bool((fbank[:, frames - 1] == pad_value).all())


def test_features_are_upstream_preprocessing(tiny):
    waveform = noise(2.05, batch=2)
    for target_length in (None, 256, 96):
        fbank, _ = tiny.features(waveform, target_length=target_length)
        expected = eat_normalize(eat_fbank(waveform, target_length=target_length))
        torch.testing.assert_close(fbank, expected, rtol=0, atol=2e-4)
    assert eat_normalize(torch.tensor(-4.268)).item() == 0.0
    with pytest.raises(ValueError, match="multiple of 16"):
        tiny.features(waveform, target_length=100)


def test_padded_batch_gives_each_clip_its_own_embedding(tiny):
    clips = [noise(s, seed=i)[0] for i, s in enumerate([10.0, 6.0, 8.0, 7.3])]
    batch, lengths, _ = check_padded_batch(tiny, clips, fbank_atol=1e-4, frames_multiple=16)
    with torch.no_grad():
        # a fixed target_length pads every clip alike: the batch needs no mask at all
        fixed, fixed_mask = tiny.features(batch, lengths, target_length=1024)
        assert bool(fixed_mask.all())
        u_fixed = tiny.forward_features(fixed, fixed_mask)[0]
        for i, clip in enumerate(clips):
            alone = tiny.forward_features(*tiny.features(clip[None], target_length=1024))[0]
            torch.testing.assert_close(u_fixed[i], alone[0], rtol=1e-5, atol=1e-5)


def test_mean_removal_uses_only_the_valid_samples(tiny, monkeypatch):
    """Each clip's mean over its own samples is removed, the padding stays zero. (Its effect on
    the fbank is rounding only, as Kaldi removes every frame's DC offset, so the waveform handed
    to the fbank is what is checked.)"""
    import asd_utils.models.eat as eat_module

    seen = []
    monkeypatch.setattr(eat_module, "kaldi_fbank", lambda w, **kw: seen.append(w) or kaldi(w, **kw))
    clips = [noise(3.0)[0] + 0.3, noise(2.0, seed=1)[0] - 0.2]
    batch = torch.zeros(2, 4 * SR)
    batch[0, : 3 * SR], batch[1, : 2 * SR] = clips
    tiny.features(batch, torch.tensor([3 * SR, 2 * SR]))
    centred = seen[0]
    for i, clip in enumerate(clips):
        torch.testing.assert_close(centred[i, : len(clip)], clip - clip.mean(), rtol=0, atol=1e-6)
        assert not centred[i, len(clip) :].any()


def test_eval_is_deterministic_and_dropout_acts_in_training(tmp_path):
    cfg = EATConfig.tiny(drop_rate=0.1, attn_drop_rate=0.1, end_drop_path_rate=0.2)
    write_port_folder(tmp_path / "drop", cfg, port_tensors(cfg))
    model = EAT.from_pretrained(tmp_path / "drop", target_length=None)
    waveform = noise(2.0, batch=2)
    with torch.no_grad():
        assert torch.equal(model.embed(waveform)[0], model.embed(waveform)[0])
        model.train()
        assert not torch.equal(model.embed(waveform)[0], model.embed(waveform)[0])


def test_too_long_input_for_the_position_table(tiny):
    with pytest.raises(ValueError, match="exceed the position table"):
        tiny.forward_features(torch.zeros(1, 129 * 16, 128))


# --- the pieces of the arithmetic --------------------------------------------------------------


def test_sincos_table_known_values():
    # dim 8: ω = (1, 10000^(−1/2)); row t·W + f = [sin fω, cos fω, sin tω, cos tω]
    table = sincos_positions(8, n_time=3, n_freq=2)
    s1, c1, s2, c2 = math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)
    expected = torch.tensor(
        [
            [0, 0, 1, 1, 0, 0, 1, 1],  # t 0, f 0
            [s1, s2, c1, c2, 0, 0, 1, 1],  # t 0, f 1
            [0, 0, 1, 1, s1, s2, c1, c2],  # t 1, f 0
            [s1, s2, c1, c2, s1, s2, c1, c2],  # t 1, f 1
        ]
    )
    torch.testing.assert_close(table[:4], expected)
    assert table.shape == (6, 8)
    torch.testing.assert_close(
        table[5, 4:], torch.tensor([math.sin(2), math.sin(0.02), math.cos(2), math.cos(0.02)])
    )
    # slicing the port's long table gives the short one: a table of any length agrees
    torch.testing.assert_close(sincos_positions(64, 128, 8)[:80], sincos_positions(64, 10, 8))


def test_attention_equals_naive_softmax():
    torch.manual_seed(0)
    cfg = EATConfig.tiny()
    attn = EATAttention(cfg).eval()
    with torch.no_grad():
        for p in attn.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    batch, n, heads, d = 2, 21, 4, 16
    x = torch.randn(batch, n, 64)
    valid = torch.ones(batch, n, dtype=torch.bool)
    valid[0, 15:] = False
    with torch.no_grad():
        out = attn(x, valid[:, None, None, :])
        q, k, v = attn.qkv(x).view(batch, n, 3, heads, d).permute(2, 0, 3, 1, 4)
        logits = (q * d**-0.5) @ k.transpose(-1, -2)
        logits = logits.masked_fill(~valid[:, None, None, :], float("-inf"))
        weights = logits.softmax(-1, dtype=torch.float32)
        expected = attn.proj((weights @ v).transpose(1, 2).reshape(batch, n, 64))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert (out[0] - attn(x)[0]).abs().max() > 1e-3  # the mask matters


def test_post_ln_block_arithmetic(tiny):
    block = tiny.blocks[0]
    x = torch.randn(2, 17, 64)
    with torch.no_grad():
        out = block(x)
        r = block.norm1(x + block.attn(x))
        expected = block.norm2(r + block.mlp.fc2(F.gelu(block.mlp.fc1(r))))
    torch.testing.assert_close(out, expected)


def test_cls_token_is_prepended_and_pre_norm_applied(tiny):
    fbank = torch.randn(1, 32, 128)
    captured = {}
    hook = tiny.blocks[0].register_forward_pre_hook(lambda m, args: captured.update(x=args[0]))
    try:
        with torch.no_grad():
            tiny.forward_features(fbank)
    finally:
        hook.remove()
    with torch.no_grad():
        patches = tiny.local_encoder.proj(fbank[:, None]).flatten(2).transpose(1, 2)
        patches = patches + tiny.fixed_positional_encoder.positions[:, :16]
        expected = tiny.pre_norm(torch.cat([tiny.extra_tokens, patches], dim=1))
    torch.testing.assert_close(captured["x"], expected)
