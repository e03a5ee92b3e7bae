"""Tests for asd_utils.data: name parsing, indexing, reading and writing clips."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from asd_utils.data import (
    COLUMNS,
    DataError,
    describe_channels,
    index_dataset,
    machine_types,
    parse_attributes,
    parse_file_name,
    read_audio,
    read_clips,
    write_wav,
)

SR = 16000
FIXTURE_TYPES = ["bearing", "fan", "gearbox", "slider", "ToyCar", "ToyTrain", "valve"]


def tone(seconds: float, channels: int = 2, sr: int = SR, seed: int = 0) -> np.ndarray:
    """Noise in [-0.5, 0.5], far channel quieter, shape (channels, samples)."""
    rng = np.random.default_rng(seed)
    audio = rng.uniform(-0.5, 0.5, (channels, round(seconds * sr)))
    return audio * np.array([1.0, 0.3][:channels])[:, None]


# --- parse_file_name / parse_attributes ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "section_00_source_train_normal_0000_car_A2_spd_28V_mic_1_noise_1.wav",
            ("00", "source", "train", "normal", 0, "car_A2_spd_28V_mic_1_noise_1"),
        ),
        (
            "section_00_target_test_anomaly_0049_vel_730_ac_0.11.wav",
            ("00", "target", "test", "anomaly", 49, "vel_730_ac_0.11"),
        ),
        (
            "section_00_source_test_anomaly_0022_m-n_W.wav",
            ("00", "source", "test", "anomaly", 22, "m-n_W"),
        ),
        (
            "section_01_source_train_normal_0999_noAttribute.wav",
            ("01", "source", "train", "normal", 999, ""),
        ),
        (
            "section_00_target_train_normal_0009.wav",
            ("00", "target", "train", "normal", 9, ""),
        ),
        (
            "section_00_source_test_normal_0026_volt_1.5_wt_150.wav",
            ("00", "source", "test", "normal", 26, "volt_1.5_wt_150"),
        ),
        ("section_00_0000.wav", ("00", None, None, None, 0, "")),
        ("section_03_0199.wav", ("03", None, None, None, 199, "")),
    ],
)
def test_parse_file_name(name, expected):
    fields = parse_file_name(name)
    keys = ["section", "domain", "split", "label", "index", "attributes"]
    assert list(fields) == keys
    assert tuple(fields.values()) == expected
    assert isinstance(fields["index"], int)


def test_parse_file_name_accepts_a_path():
    fields = parse_file_name(Path("/data/fan/train/section_00_source_train_normal_0040_m-n_X.wav"))
    assert fields["attributes"] == "m-n_X"


def test_parse_every_fixture_name(dcase2023_samples):
    names = sorted(dcase2023_samples.glob("*/*/*.wav"))
    assert len(names) == 28
    for path in names:
        f = parse_file_name(path.name)
        assert f["split"] == path.parent.name
        rebuilt = f"section_{f['section']}_{f['domain']}_{f['split']}_{f['label']}_{f['index']:04d}"
        assert f"{rebuilt}_{f['attributes']}.wav" == path.name
        assert len(parse_attributes(f["attributes"])) >= 1


@pytest.mark.parametrize(
    "name",
    [
        "section_00_source_train_normal.wav",  # no index
        "section_00_source_train_broken_0000_car_A2.wav",  # unknown label
        "section_00_train_source_normal_0000.wav",  # fields swapped
        "normal_id_00_00000000.wav",  # DCASE 2020 style
        "section_00_source_train_normal_0000_car_A2.flac",
        "section_00_source_train_normal_0000_.wav",
        "section_00_0000_car_A2.wav",  # anonymous names carry no attributes
        "section_00_source_train_normal_0000_car_A2.wav.part",
        "notes.txt",
    ],
)
def test_parse_file_name_rejects_malformed(name):
    with pytest.raises(DataError, match="section_<NN>") as err:
        parse_file_name(name)
    assert name in str(err.value)


def test_parse_attributes():
    assert parse_attributes("car_A2_spd_28V_mic_1_noise_1") == {
        "car": "A2",
        "spd": "28V",
        "mic": "1",
        "noise": "1",
    }
    assert parse_attributes("vel_730_ac_0.30") == {"vel": "730", "ac": "0.30"}
    assert parse_attributes("m-n_X") == {"m-n": "X"}
    assert parse_attributes("pat_03") == {"pat": "03"}  # a string: leading zero kept
    assert parse_attributes("") == {}
    assert parse_attributes("noAttribute") == {}
    with pytest.raises(DataError, match="car_A2_spd"):
        parse_attributes("car_A2_spd")


# --- index_dataset on the real fixtures ------------------------------------------------------


def test_index_fixtures(dcase2023_samples):
    table = index_dataset(dcase2023_samples)
    assert list(table.columns) == COLUMNS
    assert len(table) == 28
    assert machine_types(dcase2023_samples) == FIXTURE_TYPES
    assert list(dict.fromkeys(table["machine_type"])) == FIXTURE_TYPES
    for column in ["index", "channels", "sample_rate", "frames"]:
        assert table[column].dtype == np.int64, column
    assert table["duration"].dtype == np.float64
    for column in ["machine_type", "section", "domain", "split", "label", "file_name", "path"]:
        assert pd.api.types.is_string_dtype(table[column]), column
    assert (table["channels"] == 1).all()
    assert (table["sample_rate"] == SR).all()
    assert table.groupby("machine_type")["split"].value_counts().eq(2).all()
    toy = table["machine_type"].isin(["ToyCar", "ToyTrain"])
    assert (table.loc[toy, "duration"] == 12.0).all()
    assert (table.loc[~toy, "duration"] == 10.0).all()
    assert (table["frames"] == table["duration"] * SR).all()
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in table["path"])
    ordered = table.sort_values(["split", "file_name"]).sort_values(
        "machine_type", key=lambda c: c.str.lower(), kind="stable"
    )
    assert table["path"].tolist() == ordered["path"].tolist()
    assert describe_channels(table) == "28 clips, all mono (pre-2026 format), 16 kHz, 10.0–12.0 s"


def test_index_filters(dcase2023_samples):
    table = index_dataset(dcase2023_samples, split="test", machine_types=["fan", "ToyCar"])
    assert len(table) == 4
    assert set(table["split"]) == {"test"}
    assert table["machine_type"].tolist() == ["fan", "fan", "ToyCar", "ToyCar"]
    with pytest.raises(DataError, match="drone"):
        index_dataset(dcase2023_samples, machine_types=["drone"])
    with pytest.raises(ValueError, match="split"):
        index_dataset(dcase2023_samples, split="eval")


# --- a small 2026-style tree ----------------------------------------------------------------


@pytest.fixture
def tree_2026(tmp_path) -> Path:
    """dev_data/raw with two stereo machine types (10 s, 6 s, 16 s) and an eval_data type."""
    dev = tmp_path / "dev_data" / "raw"
    clips = {
        dev / "fan" / "train" / "section_00_source_train_normal_0000_m-n_X.wav": 10,
        dev / "fan" / "train" / "section_00_target_train_normal_0000_m-n_Y.wav": 10,
        dev / "fan" / "test" / "section_00_source_test_anomaly_0000_m-n_X.wav": 10,
        dev / "ToyCarEmu" / "train" / "section_00_source_train_normal_0000_noAttribute.wav": 6,
        dev / "ToyCarEmu" / "test" / "section_00_target_test_normal_0001_car_A2_spd_28V.wav": 16,
        tmp_path / "eval_data" / "raw" / "ToyDrone" / "test" / "section_00_0001.wav": 6,
        tmp_path / "eval_data" / "raw" / "ToyDrone" / "test" / "section_00_0000.wav": 6,
    }
    for seed, (path, seconds) in enumerate(clips.items()):
        write_wav(path, tone(seconds, seed=seed))
    (dev / "fan" / "attributes_00.csv").write_text("file_name,d1p,d1v\n")
    (dev / "fan" / "train" / "._section_00_source_train_normal_0001_m-n_X.wav").write_bytes(b"\0")
    return tmp_path


def test_index_2026_tree(tree_2026):
    assert machine_types(tree_2026) == ["fan", "ToyCarEmu", "ToyDrone"]
    table = index_dataset(tree_2026)
    assert list(table.columns) == COLUMNS
    assert len(table) == 7  # the csv and the AppleDouble '._' file are ignored
    assert (table["channels"] == 2).all()
    assert table["machine_type"].tolist() == ["fan"] * 3 + ["ToyCarEmu"] * 2 + ["ToyDrone"] * 2
    toy = table[table["machine_type"] == "ToyCarEmu"].set_index("split")
    assert toy.loc["train", "duration"] == 6.0 and toy.loc["test", "duration"] == 16.0
    assert toy.loc["train", "attributes"] == ""
    drone = table[table["machine_type"] == "ToyDrone"]
    assert drone["file_name"].tolist() == ["section_00_0000.wav", "section_00_0001.wav"]
    assert drone["split"].eq("test").all()  # from the folder: eval names carry no split
    assert drone["domain"].isna().all() and drone["label"].isna().all()
    assert describe_channels(table) == "7 clips, all stereo (ch0 near, ch1 far), 16 kHz, 6.0–16.0 s"
    assert index_dataset(tree_2026, split="train")["split"].eq("train").sum() == 3
    assert table.groupby("dataset")["machine_type"].unique().map(list).to_dict() == {
        "dev": ["fan", "ToyCarEmu"],
        "eval": ["ToyDrone"],
    }


def test_a_bare_tree_is_development_data(dcase2023_samples):
    assert index_dataset(dcase2023_samples)["dataset"].eq("dev").all()


def test_repeated_attribute_keys_are_kept():
    # 2026 ToyCarEmu names repeat the key 'mic' (dcase2026-task2.md)
    assert parse_attributes("car_D2_spd_5_mic_2_mic_1") == {
        "car": "D2",
        "spd": "5",
        "mic": "2",
        "mic (2)": "1",
    }


def test_describe_mixed():
    table = pd.DataFrame(
        {"channels": [1, 2, 2], "sample_rate": [16000] * 3, "duration": [10.0, 10.0, 10.0]}
    )
    assert describe_channels(table) == "3 clips, mixed: 1 mono, 2 stereo, 16 kHz, 10.0 s"


def test_read_clips_pad_and_crop(tree_2026):
    toy = sorted((tree_2026 / "dev_data" / "raw" / "ToyCarEmu").glob("*/*.wav"))
    short, long = sorted(toy, key=lambda p: sf.info(p).frames)
    batch = read_clips([short, long], length=10 * SR)
    assert batch.shape == (2, 2, 10 * SR) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[0, :, : 6 * SR], read_audio(short))
    assert not batch[0, :, 6 * SR :].any()  # zero padding
    np.testing.assert_array_equal(batch[1], read_audio(long)[:, : 10 * SR])
    assert read_clips([short, long], channels=1, length=SR).shape == (2, 1, SR)
    with pytest.raises(DataError, match="length=") as err:
        read_clips([short, long])
    assert long.name in str(err.value)
    fan = sorted((tree_2026 / "dev_data" / "raw" / "fan").glob("*/section_*.wav"))
    assert read_clips(fan).shape == (3, 2, 10 * SR)


def test_read_clips_rejects_mixed_channels(tree_2026, dcase2023_samples):
    stereo = next((tree_2026 / "dev_data" / "raw" / "fan").glob("*/section_*.wav"))
    mono = next(dcase2023_samples.glob("fan/*/*.wav"))
    with pytest.raises(DataError, match="channels=1") as err:
        read_clips([stereo, mono], length=SR)
    assert mono.name in str(err.value)
    assert read_clips([stereo, mono], channels=1, length=SR).shape == (2, 1, SR)


# --- read_audio / write_wav ------------------------------------------------------------------


def test_read_fixture(dcase2023_samples):
    path = next(dcase2023_samples.glob("fan/train/*.wav"))
    audio = read_audio(path)
    assert audio.shape == (1, 10 * SR) and audio.dtype == np.float32
    assert audio.min() >= -1.0 and audio.max() < 1.0 and np.abs(audio).max() > 0
    pcm, _ = sf.read(path, dtype="int16")
    np.testing.assert_array_equal(audio[0], pcm / np.float32(32768))
    np.testing.assert_array_equal(read_audio(path, channels=1), audio)
    with pytest.raises(DataError, match=r"is mono \(1 channel\).*2026 data is stereo") as err:
        read_audio(path, channels=2)
    assert path.name in str(err.value)


def test_stereo_round_trip(tmp_path):
    audio = tone(1.0)
    path = write_wav(tmp_path / "clip.wav", audio)
    info = sf.info(path)
    assert (info.channels, info.samplerate, info.subtype, info.format) == (2, SR, "PCM_16", "WAV")
    back = read_audio(path, channels=2)
    assert back.shape == audio.shape and back.dtype == np.float32
    np.testing.assert_array_equal(back * 32768, np.round(audio * 32768))
    assert np.abs(back - audio).max() <= 0.5 / 32768
    np.testing.assert_array_equal(read_audio(path, channels=1), back[:1])  # near mic
    assert [p.name for p in tmp_path.iterdir()] == ["clip.wav"]  # no temporary left behind


def test_write_wav_clips_and_validates(tmp_path):
    path = write_wav(tmp_path / "loud.wav", np.array([1.5, 1.0, -1.0, -2.0, 0.25]))
    np.testing.assert_array_equal(read_audio(path)[0] * 32768, [32767, 32767, -32768, -32768, 8192])
    with pytest.raises(DataError, match="NaN"):
        write_wav(tmp_path / "nan.wav", np.array([[0.0, np.nan]]))
    with pytest.raises(DataError, match=r"\(channels, samples\)"):
        write_wav(tmp_path / "transposed.wav", np.zeros((SR, 2)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loud.wav"]


def test_wrong_sample_rate(tmp_path):
    path = write_wav(tmp_path / "section_00_source_train_normal_0000.wav", tone(1, sr=8000), 8000)
    with pytest.raises(DataError, match="8000 Hz.*16000 Hz") as err:
        read_audio(path)
    assert path.name in str(err.value)
    assert read_audio(path, expected_sample_rate=None).shape == (2, 8000)
    assert read_audio(path, expected_sample_rate=8000).shape == (2, 8000)


def corrupt_files(folder: Path, real_wav: Path) -> list[Path]:
    """A random-bytes '.wav', a real wav cut in half, and one cut inside its header."""
    noise = folder / "section_00_source_train_normal_0000_noise_1.wav"
    noise.write_bytes(np.random.default_rng(1).bytes(4000))
    data = real_wav.read_bytes()
    half = folder / "section_00_source_train_normal_0001_half_1.wav"
    half.write_bytes(data[: len(data) // 2])
    header = folder / "section_00_source_train_normal_0002_header_1.wav"
    header.write_bytes(data[:30])
    return [noise, half, header]


def test_corrupt_files(tmp_path, dcase2023_samples):
    real = next(dcase2023_samples.glob("valve/train/*.wav"))
    for path in corrupt_files(tmp_path, real):
        with pytest.raises(DataError) as err:
            read_audio(path)
        assert path.name in str(err.value)
    with pytest.raises(DataError, match="truncated"):
        read_audio(tmp_path / "section_00_source_train_normal_0001_half_1.wav")


@pytest.mark.parametrize("which", [0, 1, 2])
def test_index_rejects_corrupt_file(tmp_path, dcase2023_samples, which):
    train = tmp_path / "valve" / "train"
    train.mkdir(parents=True)
    bad = corrupt_files(train, next(dcase2023_samples.glob("valve/train/*.wav")))[which]
    for other in set(train.iterdir()) - {bad}:
        other.unlink()
    with pytest.raises(DataError) as err:
        index_dataset(tmp_path)
    assert bad.name in str(err.value)


def test_missing_and_empty_inputs(tmp_path):
    missing = tmp_path / "nowhere"
    for call in (lambda: index_dataset(missing), lambda: machine_types(missing)):
        with pytest.raises(DataError, match="dev_data/raw") as err:
            call()
        assert "nowhere" in str(err.value)
    with pytest.raises(DataError, match="does not exist") as err:
        read_audio(missing / "clip.wav")
    assert "clip.wav" in str(err.value)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no machine type folders") as err:
        index_dataset(empty)
    assert "empty" in str(err.value)

    (empty / "fan" / "train").mkdir(parents=True)
    (empty / "fan" / "train" / "readme.txt").write_text("no audio here")
    with pytest.raises(DataError, match=r"no \.wav files") as err:
        index_dataset(empty)
    assert "fan" in str(err.value)

    (empty / "fan" / "fan").mkdir()
    (empty / "gearbox").mkdir()
    with pytest.raises(DataError, match="neither train/ nor test/") as err:
        machine_types(empty)
    assert "gearbox" in str(err.value)


def test_misfiled_clip(tmp_path):
    path = tmp_path / "fan" / "train" / "section_00_source_test_normal_0000_m-n_X.wav"
    write_wav(path, tone(0.1))
    with pytest.raises(DataError, match="test clip but lies in train/") as err:
        index_dataset(tmp_path)
    assert path.name in str(err.value)


def test_duplicate_clip_across_dev_and_eval(tmp_path):
    name = "section_00_source_train_normal_0000_m-n_X.wav"
    for part in ("dev_data", "eval_data"):
        write_wav(tmp_path / part / "raw" / "fan" / "train" / name, tone(0.1))
    with pytest.raises(DataError, match="appears twice") as err:
        index_dataset(tmp_path)
    assert name in str(err.value)
