"""The synthetic DCASE 2026 dataset: layout, format, determinism, components, domain shift."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from asd_utils import data
from asd_utils.data import synth
from asd_utils.frontends.features import log_mel

SMALL = synth.SynthConfig(
    machine_types=("fan", "valveEmu"),
    n_train_source=3,
    n_train_target=1,
    n_test=1,
    clip_seconds={"default": 1.0},
)


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
    return synth.generate_dataset(tmp_path_factory.mktemp("synth"), SMALL, progress=False)


def test_layout_names_and_format(small_root):
    table = data.index_dataset(small_root)
    assert sorted(table["machine_type"].unique()) == ["fan", "valveEmu"]
    per_machine = 3 + 1 + 4 * 1
    assert len(table) == 2 * per_machine
    assert set(table["channels"]) == {2} and set(table["sample_rate"]) == {16000}
    assert np.allclose(table["duration"], 1.0)
    kinds = table.groupby(["split", "domain", "label"]).size()
    assert kinds[("train", "source", "normal")] == 6 and kinds[("train", "target", "normal")] == 2
    assert kinds[("test", "target", "anomaly")] == 2


def test_attributes_csv_matches_file_names(small_root):
    csv = (small_root / "dev_data/raw/fan/attributes_00.csv").read_text().splitlines()
    assert csv[0] == "file_name,d1p,d1v"
    first = csv[1].split(",")
    name = first[0].split("/")[-1]
    assert first[0].startswith("fan/")
    assert data.parse_attributes(data.parse_file_name(name)["attributes"]) == {"spd": first[2]}
    assert len(csv) - 1 == 8
    # valveEmu names carry no attribute, as in the real 2026 data
    valve = (small_root / "dev_data/raw/valveEmu/attributes_00.csv").read_text().splitlines()
    assert valve[0] == "file_name" and valve[1].endswith("_noAttribute.wav")


# The public listing of the real 2026 names (the official sets' file names): keys per type.
LISTED_KEYS = {
    "ToyCar": [],
    "ToyCarEmu": ["car", "spd", "mic", "mic"],
    "bearingEmu": [],
    "fan": ["spd"],
    "gearboxEmu": ["pro"],
    "sliderEmu": [],
    "valveEmu": [],
}


def test_file_names_carry_the_attributes_of_the_real_2026_names():
    table = synth.plan_table(synth.SynthConfig(n_train_source=4, n_test=1))
    for machine_type, keys in LISTED_KEYS.items():
        for name in table.loc[table["machine_type"] == machine_type, "file_name"]:
            attributes = data.parse_file_name(name)["attributes"]
            assert attributes.split("_")[::2] == keys if keys else attributes == "", name
            assert keys or name.endswith("_noAttribute.wav")


def test_target_domain_uses_unseen_conditions_named_or_not():
    config = synth.SynthConfig(
        n_train_source=20, n_test=5, eval_machine_types=synth.EVAL_MACHINE_TYPES
    )
    plan = synth.clip_plan(config)
    for machine_type in synth.MACHINE_TYPES + synth.EVAL_MACHINE_TYPES:
        specs = [s for s in plan if s.machine_type == machine_type]
        conditions = {
            d: {tuple(sorted(s.attributes.items())) for s in specs if s.domain == d}
            for d in ("source", "target")
        }
        assert not conditions["source"] & conditions["target"], machine_type


def test_eval_machine_types_get_anonymous_test_names_and_mono_on_request(tmp_path):
    config = synth.SynthConfig(
        machine_types=("ToyCar",),
        eval_machine_types=("gearboxEmu",),
        channels=1,
        n_train_source=2,
        n_train_target=1,
        n_test=2,
        clip_seconds={"default": 0.5},
    )
    root = synth.generate_dataset(tmp_path, config, progress=False)
    table = data.index_dataset(root)
    assert set(table["channels"]) == {1}
    dev, eval_ = table[table["dataset"] == "dev"], table[table["dataset"] == "eval"]
    assert set(dev["machine_type"]) == {"ToyCar"} and set(eval_["machine_type"]) == {"gearboxEmu"}
    test = eval_[eval_["split"] == "test"]
    assert sorted(test["file_name"]) == [f"section_00_{i:04d}.wav" for i in range(8)]
    assert test["label"].isna().all() and test["domain"].isna().all()
    assert eval_.loc[eval_["split"] == "train", "label"].eq("normal").all()
    # the attribute file of an eval machine type lists its training clips only
    csv = (root / "eval_data/raw/gearboxEmu/attributes_00.csv").read_text().splitlines()
    assert len(csv) - 1 == 3 and all("/train/" in line for line in csv[1:])
    # an anonymous clip is rendered again from its name: the components of the written clip
    row = test.iloc[0]
    parts = synth.load_components(root, row.machine_type, row.file_name)
    audio = data.read_audio(row.path)
    np.testing.assert_allclose(audio[0], parts.audio[0], atol=1 / 32768 + 1e-7)


def test_deterministic_and_seed_sensitive():
    spec = synth.clip_plan(SMALL)[0]
    a, b = synth.render_clip(spec, SMALL), synth.render_clip(spec, SMALL)
    np.testing.assert_array_equal(a.audio, b.audio)
    other = synth.SynthConfig(**{**SMALL.to_dict(), "seed": 1})
    assert not np.allclose(synth.render_clip(synth.clip_plan(other)[0], other).audio, a.audio)


def test_components_add_up_to_the_written_clip(small_root):
    table = data.index_dataset(small_root, split="test")
    row = table.iloc[0]
    parts = synth.load_components(small_root, row.machine_type, row.file_name)
    audio = data.read_audio(row.path, channels=2)
    np.testing.assert_allclose(audio, parts.machine + parts.noise, atol=1 / 32768 + 1e-7)
    assert parts.machine.shape == parts.noise.shape == (2, 16000)


def test_noise_is_much_stronger_at_the_far_microphone(small_root):
    table = data.index_dataset(small_root, split="train")
    snr = synth.snr_table(small_root, table)
    lo, hi = SMALL.far_snr_db
    assert (snr["near_snr_db"] - snr["far_snr_db"] > 5).all()
    assert snr["far_snr_db"].between(lo - 1e-6, hi + 1e-6).all()
    assert snr["near_snr_db"].between(*SMALL.near_snr_db).all()


def test_noise_reaches_the_near_mic_later():
    spec = synth.clip_plan(SMALL)[0]
    parts = synth.render_clip(spec, SMALL)
    near, far = parts.noise
    xcorr = np.correlate(near[:4000], far[:4000], mode="full")
    assert np.argmax(np.abs(xcorr)) - 3999 > 0  # near lags far


@pytest.mark.parametrize("machine_type", synth.MACHINE_TYPES + synth.EVAL_MACHINE_TYPES)
def test_anomalies_change_the_sound_but_subtly(machine_type):
    # The same clip with and without its fault (same random stream for the normal sound): the
    # long-term log-mel spectrum changes, by a few dB on average, not by a different sound.
    model = synth.SOUND_MODELS[machine_type]
    attributes = synth.clip_plan(synth.SynthConfig(machine_types=(machine_type,)))[0].attributes
    sound = synth.SynthConfig().fault_sound_level  # the dataset's own level

    def spectrum(fault, seed):
        audio = model(attributes, fault, 32000, 16000, np.random.default_rng(seed), 1.0, sound)
        power = 10 ** (log_mel(torch.from_numpy(audio)) / 10)
        shape = 10 * torch.log10(power.mean(0) + 1e-6 * power.mean())  # floor: −60 dB
        return shape - shape.mean()  # the spectral shape, whatever the level

    for seed in range(4):
        clean = spectrum(None, seed)
        assert torch.equal(clean, spectrum(None, seed))
        change = (spectrum(np.random.default_rng([seed, 1]), seed) - clean).abs().mean().item()
        assert 0.2 < change < 8.0, (seed, change)


def test_existing_dataset_with_other_settings_is_refused(small_root):
    other = synth.SynthConfig(**{**SMALL.to_dict(), "n_test": 2})
    with pytest.raises(FileExistsError, match="other settings"):
        synth.generate_dataset(small_root, other, progress=False)
    manifest = json.loads((small_root / synth.CONFIG_FILE).read_text())
    assert manifest["fingerprint"] == SMALL.fingerprint()


def test_a_stale_dataset_is_made_again_when_asked(tmp_path):
    # A profile's own synthetic root after its settings (or the generator) changed: replaced,
    # with no clip of the old set left behind.
    root = synth.generate_dataset(tmp_path, SMALL, progress=False)
    other = synth.SynthConfig(**{**SMALL.to_dict(), "machine_types": ("fan",), "n_test": 2})
    synth.generate_dataset(root, other, progress=False, replace=True)
    assert json.loads((root / synth.CONFIG_FILE).read_text())["fingerprint"] == other.fingerprint()
    table = data.index_dataset(root)
    assert set(table["machine_type"]) == {"fan"} and len(table) == 3 + 1 + 4 * 2


def test_unknown_settings_and_machine_types_are_errors():
    with pytest.raises(ValueError, match="unknown synth settings"):
        synth.SynthConfig.from_dict({"n_tests": 3})
    with pytest.raises(ValueError, match="no sound model"):
        synth.clip_plan(synth.SynthConfig(machine_types=("pump",)))


def test_plan_table_matches_file_name_convention():
    table = synth.plan_table(SMALL)
    parsed = pd.DataFrame([data.parse_file_name(n) for n in table["file_name"]])
    assert (parsed["domain"] == table["domain"]).all()
    assert (parsed["attributes"] == table["attributes"]).all()


def test_the_clips_do_not_depend_on_the_number_of_workers(tmp_path):
    config = synth.SynthConfig(
        machine_types=("fan",),
        n_train_source=3,
        n_train_target=1,
        n_test=1,
        clip_seconds={"default": 0.5},
    )
    trees = [
        synth.generate_dataset(tmp_path / str(n), config, progress=False, workers=n) for n in (1, 2)
    ]
    files = [sorted(p.relative_to(t) for p in t.rglob("*.wav")) for t in trees]
    assert files[0] == files[1] and len(files[0]) == 8
    for name in files[0]:
        assert (trees[0] / name).read_bytes() == (trees[1] / name).read_bytes()


# SHA-256 (first 16 hex digits) of WAV files written before the evaluation machine types joined
# the generator (GENERATOR_VERSION 4): adding them must leave every development type's audio
# byte-identical, so no dataset is made again and no version bump is due.
DEV_CLIPS_BEFORE_EVAL_TYPES = {
    "ToyCar/train": "6dba3ba3bcd7a07f",
    "ToyCar/test": "f24e703e7b1c64ef",
    "ToyCarEmu/train": "1035ec0ceab4d31b",
    "ToyCarEmu/test": "8328e140d726c113",
    "bearingEmu/train": "9ed95f6246ad4b77",
    "bearingEmu/test": "12b0261a5cf54b2f",
    "fan/train": "1412fb8aa5da01e4",
    "fan/test": "9060722f80304f1f",
    "gearboxEmu/train": "f5109e72d8656402",
    "gearboxEmu/test": "a77cbad3fb38a147",
    "sliderEmu/train": "b2c66367b43d5a08",
    "sliderEmu/test": "c80142976fbc1312",
    "valveEmu/train": "27a5368750585d39",
    "valveEmu/test": "7dcdf4c17ae698d9",
}


def test_development_clips_are_byte_identical_to_before_the_eval_types(tmp_path):
    import hashlib

    assert synth.GENERATOR_VERSION == 4
    config = synth.SynthConfig(
        n_train_source=1, n_train_target=0, n_test=1, clip_seconds={"default": 0.5}
    )
    root = synth.generate_dataset(tmp_path, config, progress=False)
    found = {}
    for path in root.rglob("*.wav"):
        if "_source_train_normal_0000" in path.name or "_source_test_anomaly_0000" in path.name:
            key = f"{path.parent.parent.name}/{path.parent.name}"
            found[key] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    assert found == DEV_CLIPS_BEFORE_EVAL_TYPES


# The public listing of the real 2026 evaluation names (the official set's): keys, and the values
# of one listed name, per machine type.
LISTED_EVAL = {
    "BlowerDustCollector": "nzl_1_pow_1",
    "Sander": "spd_4_grit_120",
    "SewingMachine": "",
    "ToothBrush": "",
    "ToyDrone": "car_B1_spd_1_mic_2_mic_1",
}


def test_eval_types_carry_the_attributes_of_the_real_names_and_their_lengths():
    assert set(synth.EVAL_MACHINE_TYPES) == set(LISTED_EVAL)
    config = synth.SynthConfig(
        machine_types=(), eval_machine_types=synth.EVAL_MACHINE_TYPES, n_train_source=200
    )
    table = synth.plan_table(config)
    for machine_type, listed in LISTED_EVAL.items():
        part = table[table["machine_type"] == machine_type]
        assert set(part["dataset"]) == {"eval"}
        train = part[part["file_name"].str.contains("_train_")]
        keys = listed.split("_")[::2] if listed else []
        for attributes in train["attributes"]:
            assert (attributes.split("_")[::2] if attributes else []) == keys, machine_type
        if listed:  # the listed name's own values are among the source domain's
            assert listed in set(train["attributes"]), machine_type
        else:
            assert train["file_name"].str.endswith("_noAttribute.wav").all()
        assert config.seconds(machine_type) in (6.0, 10.0, 16.0)
    assert {config.seconds(m) for m in synth.EVAL_MACHINE_TYPES} == {6.0, 10.0, 16.0}


def test_a_tree_of_the_real_listing_counts_and_lengths(tmp_path):
    # dev and eval types together, as the real 2026 set (at 1/20 of its training clips and
    # 1/10 of its lengths): anonymous eval test names, counts, lengths, indexed by the door.
    seconds = {"default": 1.0, "ToyCar": 1.2, "ToyCarEmu": 1.2}
    seconds |= {m: s / 10 for m, s in synth.EVAL_CLIP_SECONDS.items()}
    config = synth.SynthConfig(
        machine_types=("ToyCar", "fan"),
        eval_machine_types=synth.EVAL_MACHINE_TYPES,
        n_train_source=4,
        n_train_target=1,
        n_test=2,
        clip_seconds=seconds,
    )
    root = synth.generate_dataset(tmp_path, config, progress=False, workers=1)
    table = data.index_dataset(root)
    assert len(table) == 7 * (4 + 1 + 8)
    for machine_type in synth.EVAL_MACHINE_TYPES:
        part = table[table["machine_type"] == machine_type]
        assert set(part["dataset"]) == {"eval"}
        test = part[part["split"] == "test"]
        assert sorted(test["file_name"]) == [f"section_00_{i:04d}.wav" for i in range(8)]
        assert test["label"].isna().all() and test["domain"].isna().all()
        train = part[part["split"] == "train"]
        assert train["domain"].value_counts().to_dict() == {"source": 4, "target": 1}
        assert np.allclose(part["duration"], synth.EVAL_CLIP_SECONDS[machine_type] / 10)
        listed = LISTED_EVAL[machine_type]
        keys = listed.split("_")[::2] if listed else []
        for attributes in train["attributes"]:
            assert (attributes.split("_")[::2] if attributes else []) == keys, machine_type
    assert set(table.loc[table["dataset"] == "dev", "machine_type"]) == {"ToyCar", "fan"}
