"""The training loop: classes, schedule, EMA, data order, accumulation, exact resume, damaged
checkpoints, finished runs, in processes of their own."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from asd_utils import data, training
from asd_utils.models.heads import EmbeddingModel, ProjectionHead
from asd_utils.models.losses import OSSCLLoss
from asd_utils.training import ClipDataset, ResumableSampler, TrainConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
HOP, WIDTH = 64, 128


class TinyBackbone(nn.Module):
    """Stand-in with the backbones' API: fixed framing "fbank", one linear layer, masked mean."""

    embed_dim = 8

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.proj = nn.Linear(WIDTH, self.embed_dim)
        self.dropout = nn.Dropout(dropout)

    def features(self, waveform, lengths=None):
        fbank = torch.log1p(100 * waveform.unfold(-1, WIDTH, HOP).square())  # (B, T, 128)
        ends = torch.arange(fbank.shape[1], device=fbank.device) * HOP + WIDTH
        if lengths is None:
            return fbank, torch.ones(fbank.shape[:2], dtype=torch.bool, device=fbank.device)
        return fbank, ends[None, :] <= lengths[:, None]

    def forward_features(self, fbank, frame_mask=None):
        tokens = torch.tanh(self.proj(self.dropout(fbank)))
        weight = frame_mask.unsqueeze(-1).float()
        return (tokens * weight).sum(1) / weight.sum(1).clamp_min(1), tokens


def make_clips(root: Path, n_per_class: int = 4, samples: int = 1600) -> pd.DataFrame:
    """A DCASE-named stereo tree with 3 attribute classes: near = a class tone + noise, far =
    noise; some clips longer (random crops) or shorter (padding)."""
    rng = np.random.default_rng(0)
    t = np.arange(samples + 200) / 16000
    for c, attrs in enumerate(["car_A1", "car_A2", "car_B1"]):
        for i in range(n_per_class):
            n = samples + (200 if i == 0 else -100 if i == 1 else 0)
            noise = 0.05 * rng.standard_normal(n)
            near = 0.3 * np.sin(2 * np.pi * (500 + 1500 * c) * t[:n]) + noise
            name = f"section_00_source_train_normal_{c * 10 + i:04d}_{attrs}.wav"
            data.write_wav(root / "ToyCar" / "train" / name, np.stack([near, noise]))
    return data.index_dataset(root, min_seconds=0)  # 0.1 s clips, shorter than any front-end reads


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> pd.DataFrame:
    return make_clips(tmp_path_factory.mktemp("tiny"))


def build_tiny(root, dropout=0.1, kill_after=None, seed=0):
    """(model, loss, dataset) for the tests and :func:`trainer`; kill_after: SIGKILL then."""
    table = data.index_dataset(root, min_seconds=0)
    ids, names = data.attribute_classes(table)
    torch.manual_seed(seed)
    model = EmbeddingModel(TinyBackbone(dropout), projection_dim=4)
    loss = OSSCLLoss(len(names), model.embed_dim, sub_centers=2, temperature=0.1)
    dataset = ClipDataset(table, ids, length=1500, progress=False)
    if kill_after is not None:
        dataset = Killing(dataset, kill_after, lambda: os.kill(os.getpid(), signal.SIGKILL))
    return model, loss, dataset


TRAINER = """
import json, sys
sys.path.insert(0, sys.argv[1])
from test_training import build_tiny
from asd_utils import training
spec = json.loads(open(sys.argv[2]).read())
model, loss_fn, dataset = build_tiny(**spec["builder_args"])
config = training.TrainConfig.from_dict(spec["train"])
training.train(model, loss_fn, dataset, config, spec["output_dir"], resume=spec["resume"],
               progress=False)
"""


def trainer(tmp_path, builder_args, config, output_dir, resume=False) -> list[str]:
    """A command that trains :func:`build_tiny` in its own process (killable, or one of several
    under torchrun): ``[python, script, tests folder, spec]``."""
    spec = {"builder_args": builder_args, "train": config.to_dict(),
            "output_dir": str(output_dir), "resume": resume}  # fmt: skip
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    (tmp_path / "trainer.py").write_text(TRAINER)
    folder = str(Path(__file__).resolve().parent)
    return [sys.executable, str(tmp_path / "trainer.py"), folder, str(tmp_path / "spec.json")]


class Killing(torch.utils.data.Dataset):
    """Dies (calls ``die``) when asked for item number ``after``: a crash mid-training."""

    def __init__(self, dataset, after, die):
        self.dataset, self.after, self.die, self.served = dataset, after, die, 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        self.served += 1
        if self.served > self.after:
            self.die()
        return self.dataset[key]


def small_config(**changes) -> TrainConfig:
    values = dict(
        steps=6,
        batch_size=4,
        grad_accumulation=2,
        learning_rate=3e-2,
        warmup_steps=2,
        ema_decay=0.8,
        spec_augment_time=3,
        spec_augment_freq=20,
        checkpoint_every=3,
        seed=5,
    )
    return TrainConfig.from_dict({**values, **changes})  # plain values: checked here


def state(module: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


# --- classes, schedule, EMA, sampler, dataset ---------------------------------------------------


def test_attribute_classes_with_and_without_attributes():
    table = pd.DataFrame(
        {
            "machine_type": ["ToyCar", "ToyCar", "fan", "ToyCar", "fan", "fan"],
            "section": ["00"] * 6,
            "domain": ["source", "target", "source", "source", "target", "source"],
            "attributes": ["car_B1", "car_A1", "", "car_B1", "", ""],
        }
    )
    ids, names = data.attribute_classes(table)
    assert names == ["ToyCar/00/car_A1", "ToyCar/00/car_B1", "fan/00"]
    assert ids.tolist() == [1, 0, 2, 1, 2, 2] and ids.dtype == np.int64
    ids, names = data.attribute_classes(table, by_domain=True)
    assert names == [
        "ToyCar/00/car_A1/target",
        "ToyCar/00/car_B1/source",
        "fan/00/source",
        "fan/00/target",
    ]
    assert ids.tolist() == [1, 0, 2, 1, 3, 2]
    with pytest.raises(ValueError, match="domain"):
        data.attribute_classes(table.assign(domain=None), by_domain=True)


def test_inverse_sqrt_schedule():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, training.inverse_sqrt_lambda(960))
    lrs = []
    for _ in range(4000):
        lrs.append(optimizer.param_groups[0]["lr"])  # the lr optimizer step k = len(lrs) uses
        optimizer.step()
        scheduler.step()
    at = dict(enumerate(lrs, start=1))
    assert at[1] == pytest.approx(1e-4 / 960)
    assert at[480] == pytest.approx(0.5e-4)
    assert at[960] == pytest.approx(1e-4)
    assert at[3840] == pytest.approx(0.5e-4)  # sqrt(960 / 3840) = 1/2
    assert np.all(np.diff(lrs[:960]) > 0) and np.all(np.diff(lrs[959:]) < 0)


def test_ema_arithmetic():
    model = nn.Linear(1, 1)
    model.register_buffer("stat", torch.tensor([10.0]))
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = training.ema_model(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(3.0)
        model.stat.fill_(20.0)
    ema.update_parameters(model)
    assert ema.module.weight.item() == pytest.approx(0.9 * 1 + 0.1 * 3)  # 1.2, not a copy
    assert ema.module.stat.item() == pytest.approx(0.9 * 10 + 0.1 * 20)
    with torch.no_grad():
        model.weight.fill_(5.0)
    ema.update_parameters(model)
    assert ema.module.weight.item() == pytest.approx(0.9 * 1.2 + 0.1 * 5)  # 1.58
    assert not any(p.requires_grad for p in ema.parameters())


def test_sampler_is_a_pure_function_of_position():
    def take(sampler, n):
        stream = iter(sampler)
        return [next(stream) for _ in range(n)]

    full = take(ResumableSampler(5, seed=3), 17)
    assert take(ResumableSampler(5, seed=3, start=7), 10) == full[7:]
    for epoch in range(3):  # every epoch visits every clip once
        assert sorted(i for i, _ in full[5 * epoch : 5 * epoch + 5]) == list(range(5))
    assert [i for i, _ in full[:5]] != [i for i, _ in full[5:10]]
    assert [s for _, s in full] == [(3, j) for j in range(17)]
    assert take(ResumableSampler(5, seed=4), 5) != full[:5]


def test_clip_dataset_crops_pads_and_picks_channels(clips):
    ids, _ = data.attribute_classes(clips)
    dataset = ClipDataset(clips, ids, length=1600, progress=False)
    lazy = ClipDataset(clips, ids, length=1600, preload=False)
    sizes = clips["frames"].tolist()
    long, short = sizes.index(1800), sizes.index(1500)
    windows = np.lib.stride_tricks.sliding_window_view(
        data.read_audio(clips["path"][long])[0], 1600
    )
    offsets = set()
    for j in range(20):
        match = np.flatnonzero(np.all(windows == dataset[(long, (0, j))][0].numpy(), axis=1))
        assert len(match) > 0  # each crop is a true window of the near channel
        offsets.add(int(match[0]))
    assert len(offsets) > 3  # at random offsets
    wave, target, n_valid = dataset[(long, (0, 7))]
    torch.testing.assert_close(wave, dataset[(long, (0, 7))][0])  # seeded
    torch.testing.assert_close(wave, lazy[(long, (0, 7))][0])
    assert target == ids[long] and n_valid == 1600 and wave.shape == (1600,)
    wave, _, n_valid = dataset[(short, (0, 1))]
    assert n_valid == 1500 and torch.all(wave[1500:] == 0) and torch.any(wave[:1500] != 0)
    far = ClipDataset(clips, ids, channel=1, progress=False)
    assert far.length == 1500  # default: the shortest clip
    torch.testing.assert_close(far[long][0].numpy(), data.read_audio(clips["path"][long])[1][:1500])
    summed = ClipDataset(clips, ids, preprocess=lambda a: a.sum(0), progress=False)
    audio = data.read_audio(clips["path"][0])
    torch.testing.assert_close(summed[0][0].numpy(), (audio[0] + audio[1])[:1500])


def test_embedding_model_applies_augment_only_when_given():
    torch.manual_seed(0)
    model = EmbeddingModel(TinyBackbone(), projection_dim=4)
    waveform = torch.randn(3, 1000)
    plain = model(waveform)
    assert plain["embedding"].shape == (3, 8) and plain["projection"].shape == (3, 4)
    torch.testing.assert_close(plain["projection"].norm(dim=1), torch.ones(3))
    torch.testing.assert_close(plain["embedding"], model.embed(waveform)[0])
    masked = model(waveform, augment=lambda fbank: torch.zeros_like(fbank))
    assert not torch.allclose(masked["embedding"], plain["embedding"])
    head = ProjectionHead(8, 3, hidden_dim=5)
    assert [m.out_features for m in head.modules() if isinstance(m, nn.Linear)] == [5, 3]


# --- the loop ------------------------------------------------------------------------------------


def test_one_step_changes_weights_and_lowers_the_loss(clips, tmp_path):
    ids, names = data.attribute_classes(clips)
    torch.manual_seed(0)
    model = EmbeddingModel(TinyBackbone(), projection_dim=4)
    loss_fn = OSSCLLoss(len(names), model.embed_dim, sub_centers=2, temperature=0.1)
    dataset = FirstSamples(ClipDataset(clips, ids, length=1500, progress=False))
    batch = torch.stack([dataset[(i, None)][0] for i in range(len(dataset))])
    targets = torch.as_tensor(ids)

    def loss_on_batch():
        with torch.no_grad():
            return loss_fn(model(batch), targets)["loss"].item()

    before, weights = loss_on_batch(), state(model)
    config = TrainConfig(
        steps=1, batch_size=len(dataset), grad_accumulation=1, learning_rate=1e-2,
        warmup_steps=1, spec_augment_time=0, spec_augment_freq=0, checkpoint_every=0,
    )  # fmt: skip
    result = training.train(model, loss_fn, dataset, config, tmp_path, progress=False)
    assert any(not torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert loss_on_batch() < before
    assert result.steps == 1 and list(result.history["step"]) == [1]
    assert result.history["lr"][0] == pytest.approx(1e-2)
    assert {"loss", "arcface", "supcon"} <= set(result.history.columns)
    saved = pd.read_csv(tmp_path / training.TRAIN_LOG)
    assert saved["loss"][0] == pytest.approx(result.history["loss"][0])
    reloaded = training.load_weights(EmbeddingModel(TinyBackbone(), projection_dim=4), tmp_path)
    assert_same(state(reloaded), state(result.ema_model))


class FirstSamples(torch.utils.data.Dataset):
    """No random crops: one batch of every clip is then exactly ``batch`` above."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        return self.dataset[key[0]]


class MeanSquare(nn.Module):
    """A per-clip loss (mean over the batch), so micro-batches may split it."""

    def forward(self, outputs, targets):
        loss = (outputs["embedding"] - targets[:, None].float() / 3).square().mean()
        return {"loss": loss}


def test_accumulation_equals_one_big_batch(clips, tmp_path):
    ids, _ = data.attribute_classes(clips)
    dataset = ClipDataset(clips, ids, length=1500, progress=False)

    def run(batch_size, accumulation, name):
        torch.manual_seed(0)
        model = EmbeddingModel(TinyBackbone(), projection_dim=4)
        # adam_eps ≫ |grad| makes AdamW's step ∝ the gradient itself (not its sign): the test
        # sees any difference between the accumulated and the big-batch gradient.
        config = small_config(
            steps=2, batch_size=batch_size, grad_accumulation=accumulation, adam_eps=1e3,
            learning_rate=1e2, spec_augment_time=0, spec_augment_freq=0, checkpoint_every=0,
        )  # fmt: skip
        training.train(model, MeanSquare(), dataset, config, tmp_path / name, progress=False)
        return state(model)

    big, accumulated = run(8, 1, "big"), run(4, 2, "accumulated")
    for key in big:
        torch.testing.assert_close(accumulated[key], big[key], rtol=1e-5, atol=1e-7)
    start = run(4, 1, "half")  # what a wrong loop (only one micro-batch per step) would give
    assert not torch.allclose(start["backbone.proj.weight"], big["backbone.proj.weight"])


class Killed(Exception):
    """The process 'dies' here (a test stands in for a killed job)."""


def interrupted_run(root, config, folder, kill_after: int) -> None:
    """Train a tiny system into ``folder`` and kill it when item ``kill_after`` is fetched."""

    def die():
        raise Killed

    model, loss_fn, dataset = build_tiny(root, kill_after=kill_after)
    dataset.die = die
    with pytest.raises(Killed):
        training.train(model, loss_fn, dataset, config, folder, progress=False)


def test_kill_and_resume_gives_the_uninterrupted_run(clips, tmp_path):
    root = Path(clips["path"][0]).parents[2]
    config = small_config()
    model, full_loss, dataset = build_tiny(root)
    full = training.train(model, full_loss, dataset, config, tmp_path / "full", progress=False)

    # 8 clips per step: item 35 is asked for in step 4 or 5, after the step-3 checkpoint
    interrupted_run(root, config, tmp_path / "cut", kill_after=4 * 2 * 4 + 3)
    assert training.latest_checkpoint(tmp_path / "cut").name == "step_00000003"
    assert len(pd.read_csv(tmp_path / "cut" / training.TRAIN_LOG)) == 3
    torch.manual_seed(123)  # a new process: other RNG states, other initial weights (seed=2)
    np.random.seed(123)  # noqa: NPY002 (the global state a checkpoint must restore)
    model, loss_fn, dataset = build_tiny(root, seed=2)
    resumed = training.train(
        model, loss_fn, dataset, config, tmp_path / "cut", resume=True, progress=False
    )
    assert_same(state(resumed.ema_model), state(full.ema_model))
    assert_same(state(resumed.model), state(full.model))
    assert_same(state(loss_fn), state(full_loss))
    pd.testing.assert_frame_equal(resumed.history, full.history)
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "cut" / training.TRAIN_LOG),
        pd.read_csv(tmp_path / "full" / training.TRAIN_LOG),
    )
    assert not torch.equal(full.model.backbone.proj.weight, full.ema_model.backbone.proj.weight)
    with pytest.raises(ValueError, match="learning_rate"):
        training.train(
            *build_tiny(root), small_config(learning_rate=1.0), tmp_path / "cut", resume=True,
            progress=False,
        )  # fmt: skip


# --- damaged checkpoints, finished runs -----------------------------------------------------------

CUT_CONFIG = dict(steps=6, checkpoint_every=2)  # checkpoints at steps 2, 4 (and 6, never reached)


@pytest.fixture(scope="module")
def cut_run(clips, tmp_path_factory):
    """An uninterrupted run and one stopped in step 5 (``checkpoints/step_00000002`` and
    ``step_00000004`` on disk, ``latest`` naming step 4), of the same settings."""
    root = Path(clips["path"][0]).parents[2]
    tmp = tmp_path_factory.mktemp("cut_run")
    config = small_config(**CUT_CONFIG)
    model, loss_fn, dataset = build_tiny(root)
    full = training.train(model, loss_fn, dataset, config, tmp / "full", progress=False)

    # 8 clips per step, one batch of 4 fetched ahead: item 44 is asked for in step 5
    interrupted_run(root, config, tmp / "cut", kill_after=5 * 2 * 4 + 3)
    assert sorted(p.name for p in (tmp / "cut" / training.CHECKPOINT_DIR).iterdir()) == [
        "latest", "step_00000002", "step_00000004",
    ]  # fmt: skip
    return root, full, tmp / "cut"


def copy_run(source: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(source, tmp_path / "run"))


def truncate(path: Path) -> None:
    """Cut a file in half, as a copy that died or a disk that filled leaves it."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def resume(root, folder: Path, seed: int = 0, **changes) -> tuple[training.TrainResult, list]:
    """``train(resume=True)`` on ``folder`` from a new process's state; the result and the
    CheckpointWarnings it gave."""
    torch.manual_seed(123)
    model, loss_fn, dataset = build_tiny(root, seed=seed)
    config = small_config(**{**CUT_CONFIG, **changes})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = training.train(
            model, loss_fn, dataset, config, folder, resume=True, progress=False
        )
    return result, [w for w in caught if issubclass(w.category, training.CheckpointWarning)]


def assert_same_run(result: training.TrainResult, full: training.TrainResult) -> None:
    assert_same(state(result.ema_model), state(full.ema_model))
    assert_same(state(result.model), state(full.model))
    pd.testing.assert_frame_equal(result.history, full.history)
    assert result.steps == full.steps


@pytest.mark.parametrize(
    ("damaged_file", "manifest"),
    [("model.safetensors", True), ("train_state.pt", False)],
    ids=["model-cut-in-half", "optimizer-state-cut-no-manifest"],
)
def test_a_damaged_newest_checkpoint_resumes_from_the_previous_one(
    cut_run, tmp_path, damaged_file, manifest
):
    root, full, cut = cut_run
    run = copy_run(cut, tmp_path)
    newest, previous = (run / training.CHECKPOINT_DIR / f"step_0000000{k}" for k in (4, 2))
    truncate(newest / damaged_file)
    if not manifest:  # a checkpoint without sizes and digests: loading it finds the damage
        for folder in (newest, previous):
            (folder / training.CHECKSUMS).unlink()
    with pytest.raises((RuntimeError, OSError, SafetensorError)):  # a resume used to die so
        (torch.load if damaged_file.endswith(".pt") else load_file)(newest / damaged_file)
    result, caught = resume(root, run, seed=2)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert str(newest) in message and str(previous) in message and damaged_file in message
    assert "resuming from" in message and "step 2" in message
    assert result.start_step == 2 and not result.reused
    assert_same_run(result, full)
    aside = run / training.CHECKPOINT_DIR / "step_00000004.damaged"
    assert (aside / damaged_file).stat().st_size == (
        cut / training.CHECKPOINT_DIR / "step_00000004" / damaged_file
    ).stat().st_size // 2
    assert training.latest_checkpoint(run).name == "step_00000006"


def test_latest_naming_a_gone_folder_resumes_from_the_previous_one(cut_run, tmp_path):
    root, full, cut = cut_run
    run = copy_run(cut, tmp_path)
    newest = run / training.CHECKPOINT_DIR / "step_00000004"
    shutil.rmtree(newest)
    assert training.latest_checkpoint(run) is None
    result, caught = resume(root, run, seed=2)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert str(newest) in message and "gone" in message
    assert str(run / training.CHECKPOINT_DIR / "step_00000002") in message
    assert result.start_step == 2
    assert_same_run(result, full)


def test_a_garbled_latest_resumes_from_the_newest_complete_checkpoint(cut_run, tmp_path):
    root, full, cut = cut_run
    run = copy_run(cut, tmp_path)
    pointer = run / training.CHECKPOINT_DIR / training.LATEST
    pointer.write_bytes(b"\x00\x00\x00")  # a copy that died: zeros where the name was
    result, caught = resume(root, run, seed=2)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert str(pointer) in message and "latest.damaged" in message
    assert str(run / training.CHECKPOINT_DIR / "step_00000004") in message
    assert result.start_step == 4
    assert_same_run(result, full)


def test_every_checkpoint_damaged_trains_from_scratch(cut_run, tmp_path):
    root, full, cut = cut_run
    run = copy_run(cut, tmp_path)
    checkpoints = run / training.CHECKPOINT_DIR
    truncate(checkpoints / "step_00000004" / training.EMA_WEIGHTS)
    (checkpoints / "step_00000002" / training.CHECKSUMS).unlink()
    truncate(checkpoints / "step_00000002" / "rng_0.pt")
    result, caught = resume(root, run)  # seed 0: the full run's initial weights
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "from scratch" in message and "ema.safetensors" in message and "rng_0.pt" in message
    assert str(checkpoints / "step_00000004") in message
    assert str(checkpoints / "step_00000002") in message
    assert result.start_step == 0
    assert_same_run(result, full)
    # nothing deleted: the damaged folders are set aside, and pruning keeps to step_* folders
    names = sorted(p.name for p in checkpoints.iterdir())
    assert names == [
        "latest", "step_00000002.damaged", "step_00000004", "step_00000004.damaged",
        "step_00000006",
    ]  # fmt: skip


class Counting(torch.utils.data.Dataset):
    """Counts the clips asked for."""

    def __init__(self, dataset):
        self.dataset, self.served = dataset, 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        self.served += 1
        return self.dataset[key]


def test_a_finished_run_is_found_not_trained_again(clips, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="asd_utils")
    root = Path(clips["path"][0]).parents[2]
    config = small_config(steps=5, checkpoint_every=2)
    model, first_loss, dataset = build_tiny(root)
    first = training.train(model, first_loss, dataset, config, tmp_path, progress=False)
    record = json.loads((tmp_path / training.FINISHED).read_text())
    assert record["steps"] == 5 and record["seconds"] == first.seconds > 0
    assert record["config"] == config.to_dict() and not first.reused and first.start_step == 0
    assert training.latest_checkpoint(tmp_path).name == "step_00000005"  # the last step, too
    caplog.clear()

    def no_step(*args, **kwargs):
        raise AssertionError("an optimizer step on a finished run")

    monkeypatch.setattr(torch.optim.AdamW, "step", no_step)

    def rerun(train_config=config):
        model, loss_fn, dataset = build_tiny(root, seed=2)  # other initial weights
        dataset = Counting(dataset)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = training.train(
                model, loss_fn, dataset, train_config, tmp_path, resume=True, progress=False
            )
        assert dataset.served == 0
        damage = [w for w in caught if issubclass(w.category, training.CheckpointWarning)]
        return result, loss_fn, damage

    again, loss_fn, damage = rerun()
    assert again.reused and not damage and again.start_step == again.steps == 5
    assert again.seconds == first.seconds  # the original training's, not this call's
    assert_same_run(again, first)
    assert_same(state(loss_fn), state(first_loss))
    assert not again.ema_model.training
    printed = caplog.text  # logged (asd_utils.training)
    assert (
        f"found the finished run (5 steps, trained in {first.seconds:.0f} s) in {tmp_path}"
        in printed
    )
    assert again.summary in printed

    with pytest.raises(ValueError, match="learning_rate"):  # changed settings: still refused
        rerun(small_config(steps=5, checkpoint_every=2, learning_rate=1.0))

    # A damaged final file: written again from the last-step checkpoint, still no step taken.
    truncate(tmp_path / training.EMA_WEIGHTS)
    rebuilt, _, damage = rerun()
    assert len(damage) == 1 and not rebuilt.reused and rebuilt.start_step == 5
    message = str(damage[0].message)
    assert str(tmp_path / training.EMA_WEIGHTS) in message
    assert str(tmp_path / training.CHECKPOINT_DIR / "step_00000005") in message
    assert_same_run(rebuilt, first)
    assert (tmp_path / "ema.safetensors.damaged").is_file()
    assert rerun()[0].reused


def test_more_steps_continue_a_finished_run_from_its_last_step(clips, tmp_path):
    root = Path(clips["path"][0]).parents[2]
    config = small_config(steps=3, checkpoint_every=2)
    training.train(*build_tiny(root), config, tmp_path / "run", progress=False)
    model, loss_fn, dataset = build_tiny(root, seed=2)
    longer = small_config(steps=4, checkpoint_every=2)
    extended = training.train(
        model, loss_fn, dataset, longer, tmp_path / "run", resume=True, progress=False
    )
    assert not extended.reused and extended.start_step == 3
    full = training.train(*build_tiny(root), longer, tmp_path / "full", progress=False)
    assert_same_run(extended, full)


@pytest.mark.slow  # processes killed and restarted
def test_cli_survives_sigkill_and_resumes(clips, tmp_path):
    root = Path(clips["path"][0]).parents[2]
    config = small_config(steps=4, checkpoint_every=2)
    model, loss_fn, dataset = build_tiny(root)
    full = training.train(model, loss_fn, dataset, config, tmp_path / "full", progress=False)

    command = trainer(tmp_path, {"root": str(root), "kill_after": 27}, config, tmp_path / "cli")
    killed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert training.latest_checkpoint(tmp_path / "cli").name == "step_00000002"
    command = trainer(tmp_path, {"root": str(root)}, config, tmp_path / "cli", resume=True)
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    reloaded = training.load_weights(EmbeddingModel(TinyBackbone(), 4), tmp_path / "cli")
    assert_same(state(reloaded), state(full.ema_model))
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "cli" / training.TRAIN_LOG), full.history, check_exact=True
    )


def test_config_validation():
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"stepz": 3})
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainConfig.from_dict({"mixed_precision": "fp16"})
    with pytest.raises(ValueError, match="mixup_alpha"):
        TrainConfig.from_dict({"mixup_alpha": -0.5})
    with pytest.raises(ValueError, match="set one, not both"):
        TrainConfig.from_dict({"mixup_alpha": 0.5, "mixup_prob": 0.5})
    assert TrainConfig.from_dict({"steps": 3}).steps == 3
    paper = TrainConfig()
    assert (paper.steps, paper.batch_size, paper.grad_accumulation, paper.warmup_steps) == (
        10_000, 16, 8, 960,
    )  # fmt: skip
    assert (paper.learning_rate, paper.ema_decay, paper.spec_augment_time) == (1e-4, 0.9995, 80)


@pytest.mark.slow  # accelerate with two processes
def test_two_processes_train_like_one(clips, tmp_path):
    """DDP on 2 CPU processes (torchrun, gloo): each gets half of the global batch, SupCon is
    gathered over both, gradients averaged: the single-process run, to float rounding."""
    root = Path(clips["path"][0]).parents[2]
    config = small_config(steps=3, checkpoint_every=0, spec_augment_time=0, spec_augment_freq=0)
    model, loss_fn, dataset = build_tiny(root, dropout=0.0)
    one = training.train(model, loss_fn, dataset, config, tmp_path / "one", progress=False)
    script = trainer(tmp_path, {"root": str(root), "dropout": 0.0}, config, tmp_path / "two")[1:]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               "2", *script]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    two = pd.read_csv(tmp_path / "two" / training.TRAIN_LOG)
    assert two["supcon"].gt(0).all()  # gathered: each process alone holds 2 clips, no pairs
    pd.testing.assert_frame_equal(two, one.history, rtol=1e-5)
    reloaded = training.load_weights(EmbeddingModel(TinyBackbone(), 4), tmp_path / "two")
    for key, value in state(one.ema_model).items():
        torch.testing.assert_close(reloaded.state_dict()[key], value, rtol=1e-5, atol=1e-6)


def test_mixup_mixes_each_clip_with_a_partner_of_the_batch():
    waveform = torch.randn(6, 100)
    lengths = torch.tensor([100, 80, 60, 100, 90, 70])
    target = torch.arange(6)
    mixed, mixed_lengths, (partner, lam) = training.mixup(waveform, lengths, target, 0.5, seed=3)
    assert 0.0 < lam < 1.0
    # the partner of clip i is the clip whose label it carries
    torch.testing.assert_close(mixed, lam * waveform + (1 - lam) * waveform[partner])
    assert torch.equal(mixed_lengths, torch.maximum(lengths, lengths[partner]))
    assert sorted(partner.tolist()) == list(range(6)) and not torch.equal(partner, target)
    again = training.mixup(waveform, lengths, target, 0.5, seed=3)
    assert torch.equal(again[0], mixed) and again[2][1] == lam
    assert training.mixup(waveform, lengths, target, 0.5, seed=4)[2][1] != lam


def test_clip_dataset_preloads_only_what_fits_its_budget(clips, monkeypatch):
    # issue 24: the real 2026 training clips are 8.2 GB float32 per channel; they are read per
    # item instead, and the items are the same
    from asd_utils import training

    ids, _ = data.attribute_classes(clips)
    assert training.preload_bytes(clips, None) == 2 * training.preload_bytes(clips, 0)
    assert training.preload_bytes(clips, 0) == int(clips["frames"].sum()) * 4
    assert ClipDataset(clips, ids, length=1600, progress=False).waveforms is not None
    monkeypatch.setattr(training.dataset, "PRELOAD_BUDGET_BYTES", 100)
    lazy = ClipDataset(clips, ids, length=1600, progress=False)
    assert lazy.waveforms is None
    preloaded = ClipDataset(clips, ids, length=1600, preload=True, progress=False)
    torch.testing.assert_close(lazy[(0, (0, 3))][0], preloaded[(0, (0, 3))][0], rtol=0, atol=0)
