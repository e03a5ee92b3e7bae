"""``mixed_precision: bf16 | no | auto``: the decision (probe mocked), bf16 embeddings of the
parity fixtures against float32, a bf16 training step on a CPU, and the caches keyed by it."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_backbone_parity import CLIPS, loaded
from test_training import build_tiny, make_clips, small_config
from test_training_free import stereo_tree

from asd_utils import config, data, scoring, systems, training
from asd_utils.config import schema
from asd_utils.models import precision
from asd_utils.models.frozen import FrozenEncoder
from asd_utils.scoring import pad_clips
from asd_utils.systems import training_free

FLAGS = ("amx_bf16", "avx512_bf16")


def probe_of(speedup: float):
    measured = {
        "size": 1024,
        "threads": 2,
        "fp32_gflops": 100.0,
        "bf16_gflops": 100.0 * speedup,
        "speedup": speedup,
    }
    calls = []

    def probe():
        calls.append(1)
        return measured

    return probe, calls


def test_auto_picks_fp32_where_the_probe_says_bf16_does_not_pay():
    probe, calls = probe_of(1.1)
    chosen = precision.resolve("auto", "cpu", flags=lambda: FLAGS, probe=probe)
    assert not chosen.bf16 and chosen.name == "fp32" and chosen.mixed_precision == "no"
    assert chosen.autocast is None and calls == [1]
    assert "1.1x" in chosen.reason and chosen.to_dict()["probe"]["speedup"] == 1.1


def test_auto_picks_bf16_where_the_probe_says_it_pays():
    probe, _ = probe_of(4.0)
    chosen = precision.resolve("auto", "cpu", flags=lambda: FLAGS, probe=probe)
    assert chosen.bf16 and chosen.autocast is torch.bfloat16 and chosen.mixed_precision == "bf16"
    record = chosen.to_dict()
    assert record["precision"] == "bf16" and record["cpu_flags"] == list(FLAGS)
    json.dumps(record)  # goes into run_record.json and finished.json


def test_auto_without_bf16_flags_is_still_measured():
    probe, calls = probe_of(0.3)  # an emulating CPU: slower in bf16
    chosen = precision.resolve("auto", "cpu", flags=lambda: (), probe=probe)
    assert not chosen.bf16 and calls == [1] and "none of" in chosen.reason


def test_no_and_bf16_mean_what_they_say_without_a_probe():
    def never():
        raise AssertionError("no probe for an explicit setting")

    assert not precision.resolve("no", "cpu", probe=never).bf16
    assert precision.resolve("bf16", "cpu", probe=never).bf16
    with pytest.raises(ValueError, match="mixed_precision"):
        precision.resolve("fp16", "cpu")


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor: 0\nflags\t\t: fpu sse avx512_bf16 amx_tile amx_bf16\n")
    assert precision.cpu_flags(info) == ("amx_bf16", "avx512_bf16")
    assert precision.cpu_flags(tmp_path / "absent") == ()


def test_the_probe_measures_both_precisions():
    measured = precision.matmul_probe(size=128, repeats=1)
    assert measured["fp32_gflops"] > 0 and measured["bf16_gflops"] > 0
    assert measured["speedup"] == pytest.approx(
        measured["bf16_gflops"] / measured["fp32_gflops"], rel=0.05
    )


# --- the same answers in bf16 --------------------------------------------------------------------


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.flatten(1).double(), b.flatten(1).double())


@pytest.mark.parametrize("kind", ["beats", "eat"])
def test_bf16_pooled_embeddings_of_the_parity_fixtures_stay_within_cosine_0999(kind):
    model = loaded(kind)
    lengths = torch.tensor([len(c) for c in CLIPS])
    batch = pad_clips(CLIPS)
    encoder = FrozenEncoder(model, [1, -1], "time_mean")
    with torch.no_grad():
        utterance, _ = model.embed(batch, lengths)
        pooled = encoder.embed(batch, lengths)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            utterance16, _ = model.embed(batch, lengths)
            pooled16 = encoder.embed(batch, lengths)
    assert utterance16.dtype == torch.float32 and pooled16.dtype == torch.float32
    assert cosine(utterance, utterance16).min() > 0.999
    assert cosine(pooled, pooled16).min() > 0.999


def test_bf16_embeddings_are_float32_and_cached_apart(tmp_path):
    model = loaded("eat")
    folder = tmp_path / "wavs"  # the parity clips (the training tests' are too short for EAT)
    for i, clip in enumerate(CLIPS):
        name = f"section_00_source_train_normal_{i:04d}_car_A1.wav"
        data.write_wav(folder / "ToyCar" / "train" / name, clip.numpy())
    table = data.index_dataset(folder, min_seconds=0)
    cache = tmp_path / "cache"
    fp32 = scoring.extract_embeddings(model, table, progress=False, cache_dir=cache)
    bf16 = scoring.extract_embeddings(
        model, table, autocast=torch.bfloat16, progress=False, cache_dir=cache
    )
    assert fp32.dtype == np.float32 and bf16.dtype == np.float32
    assert len(list(Path(cache).glob("embeddings_*.npy"))) == 2  # one per precision
    assert not np.array_equal(fp32, bf16)
    assert cosine(torch.from_numpy(fp32), torch.from_numpy(bf16)).min() > 0.999


# --- training under bf16 on a CPU ----------------------------------------------------------------


def test_a_bf16_training_step_on_a_cpu_keeps_float32_master_weights(tmp_path):
    make_clips(tmp_path / "tree")
    model, loss, dataset = build_tiny(tmp_path / "tree", dropout=0.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = small_config(steps=2, checkpoint_every=0, mixed_precision="bf16")
    seen = []
    hook = model.backbone.proj.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    result = training.train(model, loss, dataset, config, tmp_path / "run", progress=False)
    hook.remove()
    assert torch.bfloat16 in seen  # the linear layer ran under bf16 autocast
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in result.ema_model.parameters())
    assert all(p.dtype == torch.float32 for p in loss.parameters())
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert np.isfinite(result.history["loss"]).all()
    record = json.loads((tmp_path / "run" / training.FINISHED).read_text())
    assert record["precision"]["precision"] == "bf16" and record["config"]["mixed_precision"] == (
        "bf16"
    )
    assert result.precision.bf16 and "(bf16)" in result.summary


def test_auto_is_trained_and_recorded_as_what_it_resolved_to(tmp_path, monkeypatch):
    probe, _ = probe_of(1.0)
    monkeypatch.setattr(precision, "cached_probe", probe)
    monkeypatch.setattr(precision, "default_device", lambda: torch.device("cpu"))
    make_clips(tmp_path / "tree")
    model, loss, dataset = build_tiny(tmp_path / "tree", dropout=0.0)
    config = small_config(steps=1, checkpoint_every=0, mixed_precision="auto")
    seen = []
    model.backbone.proj.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    result = training.train(model, loss, dataset, config, tmp_path / "run", progress=False)
    assert set(seen) == {torch.float32} and not result.precision.bf16
    record = json.loads((tmp_path / "run" / training.FINISHED).read_text())
    assert record["config"]["mixed_precision"] == "no"
    assert "auto" in record["precision"]["reason"]


def test_a_finished_fp32_run_is_not_reused_for_bf16(tmp_path):
    make_clips(tmp_path / "tree")
    model, loss, dataset = build_tiny(tmp_path / "tree", dropout=0.0)
    config = small_config(steps=1, checkpoint_every=0)
    training.train(model, loss, dataset, config, tmp_path / "run", progress=False)
    model, loss, dataset = build_tiny(tmp_path / "tree", dropout=0.0)
    bf16 = small_config(steps=1, checkpoint_every=0, mixed_precision="bf16")
    with pytest.raises(ValueError, match="mixed_precision"):
        training.train(model, loss, dataset, bf16, tmp_path / "run", resume=True, progress=False)


# --- profiles and the caches keyed by the resolved precision ------------------------------------


def test_profiles_take_auto_and_refuse_other_precisions():
    profile = config.load_profile("paper")
    assert profile.training_free.mixed_precision == "auto"
    assert profile.osscl.train.mixed_precision == "auto"
    values = config.read_profile_values("smoke")
    values["training_free"]["mixed_precision"] = "fp16"
    with pytest.raises(config.ProfileError, match="training_free.mixed_precision"):
        config.validate_profile(values)


def test_run_dirs_are_keyed_by_the_resolved_precision(tmp_path, monkeypatch):
    clips = make_clips(tmp_path / "tree")
    monkeypatch.setattr(systems.data, "index_dataset", lambda *args, **kwargs: clips)
    profile = config.load_profile("smoke")

    def with_setting(setting: str) -> schema.Profile:
        changed = profile.plain()
        changed["osscl"]["train"]["mixed_precision"] = setting
        return config.validate_profile(changed)

    def folder(setting: str, speedup: float) -> Path:
        probe, _ = probe_of(speedup)
        monkeypatch.setattr(precision, "cached_probe", probe)
        return systems.run_dir(tmp_path, with_setting(setting), "System 1", tmp_path / "tree")

    monkeypatch.setattr(precision, "default_device", lambda: torch.device("cpu"))
    assert folder("auto", 1.0) == folder("no", 1.0)  # auto resolved to float32: the same run
    assert folder("auto", 4.0) == folder("bf16", 4.0)
    assert folder("no", 4.0) != folder("bf16", 4.0)
    record = systems.precisions(with_setting("auto"))
    assert record["System 1"]["precision"] == "bf16" and record["System 2"]["precision"] == "fp32"


def test_system0_in_bf16_on_a_cpu_casts_a_copy_and_keeps_the_answers(tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "default_device", lambda: torch.device("cpu"))
    table = stereo_tree(tmp_path / "data")
    profile = config.load_profile("smoke")
    cache = tmp_path / "cache"
    fp32, encoder, section = training_free.embed(profile, table, cache, progress=False)
    assert encoder.precision["how"] == "float32"
    section = profile.training_free.model_copy(update={"mixed_precision": "bf16"})
    profile = profile.model_copy(update={"training_free": section})
    bf16, encoder16, section16 = training_free.embed(profile, table, cache, progress=False)
    assert encoder16.precision["how"] == "bf16 weights"
    assert all(p.dtype == torch.float32 for p in encoder16.parameters())  # the copy was cast
    assert len(list(cache.glob("frozen_*.npy"))) == 2 * len(fp32)  # each precision its own
    for channel, values in fp32.items():
        assert bf16[channel].dtype == np.float32
        a = torch.from_numpy(values).flatten(1)
        b = torch.from_numpy(bf16[channel]).flatten(1)
        assert cosine(a, b).min() > 0.999, channel
