"""System 5's cross-channel modules: identity at step 0, shapes, padded batches, training."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from asd_utils import cli, config, data, scoring, systems, training
from asd_utils.data import synth
from asd_utils.frontends import views
from asd_utils.models.beats import BEATs, BEATsConfig
from asd_utils.models.eat import EAT, EATConfig
from asd_utils.models.fusion import CrossChannelAttention, FusionBackbone
from asd_utils.models.heads import EmbeddingModel
from asd_utils.studies import noise_study

BACKBONES = {
    "eat": lambda: EAT(EATConfig.tiny(), target_length=None),
    "beats": lambda: BEATs(BEATsConfig.tiny()),
}


def stereo(lengths, seed=0):
    rng = np.random.default_rng(seed)
    clips = [torch.from_numpy(rng.uniform(-0.3, 0.3, (2, n)).astype(np.float32)) for n in lengths]
    return clips, scoring.pad_clips(clips), torch.tensor(lengths)


@pytest.mark.parametrize("kind", sorted(BACKBONES))
def test_closed_gates_give_exactly_the_near_only_backbone(kind):
    torch.manual_seed(0)
    backbone = BACKBONES[kind]().eval()
    fused = FusionBackbone(backbone, blocks=[1, -1]).eval()
    _, batch, lengths = stereo([8000, 9600])
    with torch.no_grad():
        near_only = backbone.embed(batch[:, 0], lengths)
        both = fused.embed(batch, lengths)
    for a, b in zip(near_only, both, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert fused.gates() == {1: 0.0, 2: 0.0}


@pytest.mark.parametrize("kind", sorted(BACKBONES))
def test_open_gates_use_the_far_channel_and_padding_changes_nothing(kind):
    torch.manual_seed(0)
    fused = FusionBackbone(BACKBONES[kind](), blocks=[-1], width=32, heads=4).eval()
    with torch.no_grad():
        for module in fused.cross.values():
            module.gate.fill_(1.0)
    clips, batch, lengths = stereo([8000, 12000, 9600])
    with torch.no_grad():
        utterance, tokens = fused.embed(batch, lengths)
        assert utterance.shape == (3, fused.embed_dim) and tokens.shape[0] == 3
        alone = torch.cat([fused.embed(c[None])[0] for c in clips])
        torch.testing.assert_close(utterance, alone, rtol=1e-4, atol=1e-5)
        other_far = batch.clone()
        other_far[:, 1] = torch.flip(other_far[:, 1], [-1])
        assert not torch.allclose(fused.embed(other_far, lengths)[0], utterance)


def test_module_shapes_gate_and_checks():
    module = CrossChannelAttention(dim=16, width=8, heads=2)
    near, far = torch.randn(3, 5, 16), torch.randn(3, 7, 16)
    torch.testing.assert_close(module(near, far), near)  # closed gate
    with torch.no_grad():
        module.gate.fill_(0.5)
    valid = torch.ones(3, 7, dtype=torch.bool)
    valid[:, 5:] = False
    out = module(near, far, valid)
    far_changed = far.clone()
    far_changed[:, 5:] += 10  # masked keys: no influence
    torch.testing.assert_close(module(near, far_changed, valid), out)
    with pytest.raises(ValueError, match="multiple of heads"):
        CrossChannelAttention(16, width=10, heads=4)
    fused = FusionBackbone(BACKBONES["eat"](), [-1])
    with pytest.raises(ValueError, match=r"\(batch, 2, samples\)"):
        fused.features(torch.zeros(2, 8000))


def test_frozen_backbone_trains_the_modules_only():
    fused = FusionBackbone(BACKBONES["eat"](), [-1], freeze_backbone=True)
    trainable = {n for n, p in fused.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("cross.") for n in trainable)
    fused.train()
    assert not fused.backbone.training and fused.cross.training


def test_gradients_reach_the_gate_from_step_0():
    torch.manual_seed(0)
    model = EmbeddingModel(FusionBackbone(BACKBONES["eat"](), [-1]))
    _, batch, lengths = stereo([8000, 8000])
    model(batch, lengths)["embedding"].pow(2).sum().backward()
    gate = model.backbone.cross["2"].gate.grad
    assert gate is not None and gate.abs().item() > 0


def test_system5_is_skipped_on_mono_clips_and_reads_both_channels(tmp_path):
    for i, channels in enumerate((1, 2)):
        name = f"section_00_source_train_normal_{i:04d}_noAttribute.wav"
        data.write_wav(tmp_path / "fan" / "train" / name, np.zeros((channels, 4000), np.float32))
    clips = data.index_dataset(tmp_path, min_seconds=0, check_samples=False)
    reasons = systems.unavailable(clips)
    assert set(reasons) == {"System 3", "System 5", "System 6", "System 7"}
    assert (
        "fuses the far microphone" in reasons["System 5"]
        and "1 of 2 clips are mono" in reasons["System 5"]
    )
    assert systems.front_end(config.load_profile("smoke"), "System 5")[0] is None
    stereo_path = clips.loc[clips["channels"] == 2, "path"].item()
    assert views.load_waveform(stereo_path, None).shape == (2, 4000)
    with pytest.raises(data.DataError, match="is mono; both microphones"):
        views.load_waveform(clips.loc[clips["channels"] == 1, "path"].item(), None)


class Killed(Exception):
    pass


class Killing(torch.utils.data.Dataset):
    """Raises :class:`Killed` when asked for item number ``after``: a crash mid-training."""

    def __init__(self, dataset, after):
        self.dataset, self.after, self.served = dataset, after, 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        self.served += 1
        if self.served > self.after:
            raise Killed
        return self.dataset[key]


def test_system5_trains_by_the_common_loop_and_resumes_to_identical_weights(tmp_path):
    tree = synth.SynthConfig(
        machine_types=("fan",), n_train_source=6, n_train_target=2, n_test=2,
        clip_seconds={"default": 1.0},
    )  # fmt: skip
    synth.generate_dataset(tmp_path / "data", tree, progress=False)
    profile = config.load_profile("smoke")
    profile["fusion"]["train"].update(steps=4, checkpoint_every=2, batch_size=4)
    profile["fusion"]["crop_seconds"] = 0.5
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(profile))
    settings = systems.train_config(profile, "System 5")

    def build():
        return systems.build(str(tmp_path / "data"), str(path), "System 5", progress=False)

    model, loss, dataset = build()
    waveform, _, _ = dataset[0]
    assert waveform.shape == (2, 8000)  # near and far, cropped together
    full = training.train(model, loss, dataset, settings, tmp_path / "full", progress=False)
    gates = full.model.backbone.gates()
    assert list(gates) == [2] and gates[2] != 0  # the gate opened a little

    model, loss, dataset = build()
    with pytest.raises(Killed):  # 4 clips a step: item 13 is asked for in step 4
        training.train(
            model, loss, Killing(dataset, 3 * 4 + 1), settings, tmp_path / "cut", progress=False
        )
    assert training.latest_checkpoint(tmp_path / "cut").name == "step_00000002"
    model, loss, dataset = build()
    resumed = training.train(
        model, loss, dataset, settings, tmp_path / "cut", resume=True, progress=False
    )
    for ours, theirs in ((resumed.ema_model, full.ema_model), (resumed.model, full.model)):
        for (name, a), b in zip(
            ours.state_dict().items(), theirs.state_dict().values(), strict=True
        ):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    clips = data.index_dataset(tmp_path / "data")
    embeddings = scoring.extract_embeddings(
        resumed.ema_model, clips, 4, channel=None, progress=False
    )
    assert embeddings.shape == (len(clips), full.model.embed_dim) and np.isfinite(embeddings).all()


def test_asd_study_noise_is_the_studys_command(capsys):
    assert cli.main(["study", "noise", "--help"]) == 0
    assert "against the near microphone's SNR" in capsys.readouterr().out
    assert cli.main(["study", "noise", "--profile", "smoke", "--data-root", "x", "-q"]) == 2
    err = capsys.readouterr().err
    assert err == "error: the noise study makes its own synthetic sets: drop --data-root\n"
    assert cli.main(["study", "-q"]) == 2  # which study: required


def test_noise_study_writes_one_row_per_run_and_resumes(tmp_path, monkeypatch):
    first = noise_study.run("smoke", tmp_path, progress=False)
    assert set(first["system"]) == {"System 1", "System 3", "System 5", "System 0"}
    assert first["hmean"].between(0, 1).all() and (first["snr_db"] == 0.0).all()
    gates = json.loads(first.loc[first["system"] == "System 5", "gates"].item())
    assert list(gates) == ["2"]
    saved = noise_study.read(tmp_path / noise_study.CSV)
    assert len(saved) == 4 and (saved["study_key"] == first["study_key"]).all()

    def no_training(*_args, **_kwargs):
        raise AssertionError("trained again although the study has this row")

    monkeypatch.setattr(systems, "train_system", no_training)
    again = noise_study.run("smoke", tmp_path, progress=False)
    pd.testing.assert_frame_equal(again, saved)
    argv = ["study", "noise", "--profile", "smoke", "--output-root", str(tmp_path), "-q"]
    assert cli.main(argv) == 0  # `asd study noise` resumes the same study
    pd.testing.assert_frame_equal(noise_study.read(tmp_path / noise_study.CSV), saved)
    # the study's data: the near SNR as asked, the noise path long
    settings = noise_study.dataset_config(config.load_profile("smoke")["noise_study"], -5.0)
    assert settings.near_snr_db == (-5.0, -5.0) and settings.noise_path_taps == 4096
