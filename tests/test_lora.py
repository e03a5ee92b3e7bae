"""LoRA on BEATs and EAT through peft: only adapters train, the base loads from the official-format
fixture weights and stays unchanged, the trainable weights round-trip bit-exactly, merging."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from asd_utils.models import lora
from asd_utils.models.beats import BEATs
from asd_utils.models.eat import EAT
from asd_utils.models.heads import EmbeddingModel, PooledEmbeddingModel

FIXTURES = Path(__file__).parent / "fixtures" / "backbones"
REFERENCE = np.load(FIXTURES / "reference.npz")
CLIP = torch.from_numpy(REFERENCE["waveform_0"])[None]
RANK = 4
# tiny fixtures: BEATs 2 layers of width 48 (q, k, v each 48 -> 48); EAT 2 layers of width 32
# with one fused qkv (32 -> 96). Each adapted Linear adds rank · (in + out) parameters.
ADAPTER_PARAMETERS = {"beats": 2 * 3 * RANK * (48 + 48), "eat": 2 * RANK * (32 + 96)}


def loaded(kind: str) -> torch.nn.Module:
    if kind == "beats":
        return BEATs.from_checkpoint(FIXTURES / "beats_tiny.pt")
    return EAT.from_pretrained(FIXTURES / "eat_tiny", target_length=None)


def with_lora(kind: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return lora.add_lora(loaded(kind), rank=RANK, alpha=8, dropout=0.0)


def train_step(model: torch.nn.Module, steps: int = 1) -> None:
    """AdamW over every parameter (as a careless caller would), a loss on the tokens."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    model.train()
    for _ in range(steps):
        _, tokens = model.embed(CLIP)
        tokens.pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


@pytest.mark.parametrize("kind", ["beats", "eat"])
def test_only_adapters_train_and_the_base_is_unchanged_after_a_step(kind):
    base_parameters = sum(p.numel() for p in loaded(kind).parameters())
    model = with_lora(kind)
    counts = lora.parameter_counts(model)
    assert counts == {"trainable": ADAPTER_PARAMETERS[kind], "frozen": base_parameters}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert len(lora.adapter_layers(model)) == (6 if kind == "beats" else 2)
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    before = {n: p.clone() for n, p in model.named_parameters() if p.requires_grad}
    checksum = lora.frozen_checksum(model)
    train_step(model)
    for name, value in model.named_parameters():
        if name in frozen:
            assert torch.equal(value, frozen[name]), name
    changed = [
        n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])
    ]
    assert len(changed) == len(before)  # every adapter moved (B from zero, then A)
    assert lora.frozen_checksum(model) == checksum


@pytest.mark.parametrize("kind", ["beats", "eat"])
def test_a_lora_model_loads_the_official_fixture_weights_and_starts_as_the_base(kind):
    model = with_lora(kind).eval()
    with torch.no_grad():
        _, tokens = model.embed(CLIP)
    expected = torch.from_numpy(REFERENCE[f"{kind}_tokens_0"])
    torch.testing.assert_close(tokens[0], expected, rtol=1e-5, atol=1e-5)  # upstream's output
    assert lora.frozen_checksum(model) == lora.frozen_checksum(with_lora(kind, seed=1))


def with_head(kind: str, head: str, seed: int = 0) -> torch.nn.Module:
    backbone = with_lora(kind, seed)
    if head == "asp":  # BatchNorm: running statistics are trained state too
        return PooledEmbeddingModel(backbone, projection_dim=8, ratio=8)
    return EmbeddingModel(backbone, projection_dim=8)


@pytest.mark.parametrize("head", ["projection", "asp"])
@pytest.mark.parametrize("kind", ["beats", "eat"])
def test_trainable_weights_round_trip_bit_exactly(kind, head, tmp_path):
    model = with_head(kind, head)
    checksum = lora.frozen_checksum(model)
    batch = torch.cat([CLIP, CLIP.flip(1)])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        model(batch)["embedding"].pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    assert lora.frozen_checksum(model) == checksum  # training leaves the base as it was
    state = lora.trainable_state_dict(model)
    assert any(n.startswith("projection.") for n in state)  # the head trains too
    if head == "asp":
        assert "pooling.out.0.running_mean" in state
    save_file({n: t.contiguous() for n, t in state.items()}, tmp_path / "trainable.safetensors")
    fresh = with_head(kind, head, seed=7)
    assert lora.frozen_checksum(fresh) == checksum
    lora.load_trainable_state_dict(fresh, load_file(tmp_path / "trainable.safetensors"))
    pairs = zip(model.state_dict().items(), fresh.state_dict().items(), strict=True)
    for (name, a), (_, b) in pairs:
        assert torch.equal(a, b), name
    model.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(model(batch)["embedding"], fresh(batch)["embedding"])
    with pytest.raises(KeyError, match="do not match"):
        lora.load_trainable_state_dict(fresh, {"projection.weight": torch.zeros(1)})


@pytest.mark.parametrize("kind", ["beats", "eat"])
def test_merged_is_the_base_architecture_computing_the_adapted_model(kind):
    model = with_lora(kind)
    train_step(model)
    plain = lora.merged(model)
    assert not lora.adapter_layers(plain) and lora.adapter_layers(model)  # a copy
    assert list(plain.state_dict()) == list(loaded(kind).state_dict())
    with torch.no_grad():
        torch.testing.assert_close(plain.embed(CLIP)[1], model.embed(CLIP)[1], rtol=1e-4, atol=1e-5)


def test_targets_are_checked():
    with pytest.raises(ValueError, match="no module named"):
        lora.add_lora(loaded("eat"), target_modules=["q_proj"])
    with pytest.raises(ValueError, match="no default LoRA targets"):
        lora.add_lora(torch.nn.Sequential(torch.nn.Linear(2, 2)))


# --- a LoRA run in the project's training loop: kill and resume ----------------------------------


def build_lora_run(root, kill_after=None, seed=0):
    """(model, loss, dataset): LoRA BEATs (fixture weights) + ASP + SCAdaCos, the recipe's parts."""
    from test_training import Killing

    from asd_utils import data
    from asd_utils.models.losses import SCAdaCosLoss
    from asd_utils.training import ClipDataset

    table = data.index_dataset(root, min_seconds=0)
    ids, names = data.attribute_classes(table)
    torch.manual_seed(seed)
    backbone = lora.add_lora(loaded("beats").train(), rank=RANK, dropout=0.1)
    model = PooledEmbeddingModel(backbone, projection_dim=8, ratio=8)
    loss = SCAdaCosLoss(len(names), 8, sub_clusters=2, trainable=True)
    dataset = ClipDataset(table, ids, length=3600, progress=False)
    if kill_after is not None:
        dataset = Killing(dataset, kill_after, None)
    return model, loss, dataset


def test_kill_and_resume_of_a_lora_run_is_bit_identical(tmp_path):
    from test_training import assert_same, make_clips, small_config, state

    from asd_utils import training

    root = tmp_path / "data"
    make_clips(root, samples=4000)
    config = small_config(steps=4, checkpoint_every=2, mixup_alpha=0.4, spec_augment_freq=8)
    model, full_loss, dataset = build_lora_run(root)
    full = training.train(model, full_loss, dataset, config, tmp_path / "full", progress=False)

    class Killed(Exception):
        pass

    def die():
        raise Killed

    model, loss, dataset = build_lora_run(root, kill_after=2 * 2 * 4 + 7)  # step 3 (a batch ahead)
    dataset.die = die
    with pytest.raises(Killed):
        training.train(model, loss, dataset, config, tmp_path / "cut", progress=False)
    assert training.latest_checkpoint(tmp_path / "cut").name == "step_00000002"
    torch.manual_seed(123)
    model, loss, dataset = build_lora_run(root, seed=2)
    resumed = training.train(
        model, loss, dataset, config, tmp_path / "cut", resume=True, progress=False
    )
    assert_same(state(resumed.model), state(full.model))
    assert_same(state(resumed.ema_model), state(full.ema_model))
    assert_same(state(loss), state(full_loss))
    pd.testing.assert_frame_equal(resumed.history, full.history)
    base = {n: p for n, p in loaded("beats").named_parameters()}
    for name, value in full.model.backbone.named_parameters():
        if not value.requires_grad:  # the base is the fixture's, untouched by training
            assert torch.equal(value, base[name.replace(".base_layer", "")]), name


def test_a_lora_checkpoint_keeps_what_trains_and_names_its_base(tmp_path):
    """A LoRA run's checkpoints hold the trainable weights (adapters, head) and the optimiser,
    the frozen base by its checksum; resuming on another base is refused, naming both."""
    from test_training import make_clips, small_config

    from asd_utils import training

    root = tmp_path / "data"
    make_clips(root, samples=4000)
    model, loss, dataset = build_lora_run(root)
    config = small_config(steps=2, checkpoint_every=2, spec_augment_freq=8)
    training.train(model, loss, dataset, config, tmp_path / "run", progress=False)
    folder = training.latest_checkpoint(tmp_path / "run")
    trainable = set(lora.trainable_state_dict(model))
    for name in (training.MODEL_WEIGHTS, training.EMA_WEIGHTS):
        assert set(load_file(folder / name)) == trainable  # no base tensor saved
        full = (tmp_path / "run" / name).stat().st_size  # the final weights: the whole model
        assert (folder / name).stat().st_size < 0.25 * full
    state = torch.load(folder / training.TRAIN_STATE, weights_only=True)
    assert state["base_checksum"] == lora.frozen_checksum(model)

    other, loss, dataset = build_lora_run(root)
    with torch.no_grad():  # another base: one frozen weight differs
        next(p for p in other.parameters() if not p.requires_grad).add_(1.0)
    longer = small_config(steps=4, checkpoint_every=2, spec_augment_freq=8)
    expected = f"{state['base_checksum']}.*{lora.frozen_checksum(other)}"
    with pytest.raises(ValueError, match=expected):
        training.train(other, loss, dataset, longer, tmp_path / "run", resume=True, progress=False)
