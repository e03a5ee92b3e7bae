"""Tests for asd_utils.data: name parsing, indexing, reading and writing clips."""

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from asd_utils import data
from asd_utils.data import (
    COLUMNS,
    DataError,
    DataWarning,
    describe_channels,
    index_dataset,
    machine_types,
    parse_attributes,
    parse_file_name,
    read_audio,
    read_clips,
    sample_cache_path,
    scan_samples,
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
    # 2026 ToyCarEmu names repeat the key 'mic' (the official development set's names)
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
        write_wav(tmp_path / part / "raw" / "fan" / "train" / name, tone(1.2))
    with pytest.raises(DataError, match="appears twice") as err:
        index_dataset(tmp_path)
    assert name in str(err.value)


# --- refusals at indexing: each names the file (or folder) and what was expected -------------

GOOD_TRAIN = "section_00_source_train_normal_0000_m-n_X.wav"
GOOD_TEST = "section_00_source_test_normal_0000_m-n_X.wav"
BAD = "section_00_source_train_normal_0001_m-n_X.wav"


def small_tree(root: Path) -> Path:
    """``root/fan/{train,test}`` with one good 1.2 s stereo clip each; returns ``root/fan``."""
    fan = root / "fan"
    write_wav(fan / "train" / GOOD_TRAIN, tone(1.2, seed=1))
    write_wav(fan / "test" / GOOD_TEST, tone(1.2, seed=2))
    return fan


def write_float(path: Path, audio: np.ndarray, sr: int = SR) -> Path:
    """``audio`` (channels, samples) as a 32-bit float WAV, which can hold NaN and inf."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio.T, sr, subtype="FLOAT")
    return path


def refusal(root: Path, **kwargs) -> str:
    """The message of the DataError ``index_dataset(root, **kwargs)`` raises."""
    with pytest.raises(DataError) as err:
        index_dataset(root, **kwargs)
    return str(err.value)


def test_index_refuses_another_sample_rate(tmp_path):
    bad = write_wav(small_tree(tmp_path) / "train" / BAD, tone(1.2, sr=8000), 8000)
    message = refusal(tmp_path)
    assert str(bad) in message and "8000 Hz, but 16000 Hz was expected" in message
    table = index_dataset(tmp_path, sample_rate=None)
    assert sorted(table["sample_rate"]) == [8000, SR, SR]


def test_index_refuses_three_channels(tmp_path):
    bad = write_wav(small_tree(tmp_path) / "train" / BAD, np.vstack([tone(1.2)] * 2)[:3])
    message = refusal(tmp_path)
    assert str(bad) in message and "has 3 channels; expected 1 (mono" in message
    assert "or 2 (stereo" in message


@pytest.mark.parametrize(("value", "shown"), [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")])
def test_index_refuses_nonfinite_samples(tmp_path, value, shown):
    audio = tone(1.2)
    audio[1, 8000] = value  # far channel, 0.5 s
    bad = write_float(small_tree(tmp_path) / "train" / BAD, audio)
    message = refusal(tmp_path)
    assert str(bad) in message and "NaN or infinite samples" in message
    assert f"first: {shown} at 0.5000 s, frame 8000, channel 1" in message
    assert "more clip" not in message  # the only bad one


def test_index_counts_the_other_nonfinite_clips(tmp_path):
    fan = small_tree(tmp_path)
    audio = tone(1.2)
    audio[0, 0] = np.nan
    write_float(fan / "train" / BAD, audio)
    first = write_float(fan / "test" / "section_00_source_test_normal_0001_m-n_X.wav", audio)
    message = refusal(tmp_path)  # the first in table order: test/ sorts before train/
    assert str(first) in message and "1 more clip(s) have some too" in message


def test_index_refuses_a_too_short_clip(tmp_path):
    bad = write_wav(small_tree(tmp_path) / "train" / BAD, tone(0.1))
    message = refusal(tmp_path)  # a 0.1 s clip: shorter than any front-end reads
    assert str(bad) in message
    expected = "lasts 0.100 s (1600 frames at 16000 Hz); expected at least 0.2 s, the shortest"
    assert expected in message
    assert len(index_dataset(tmp_path, min_seconds=0.1)) == 3
    assert "at least 2 s" in refusal(tmp_path, min_seconds=2.0)
    with pytest.raises(ValueError, match="min_seconds"):
        index_dataset(tmp_path, min_seconds=-1)


@pytest.mark.parametrize("empty", ["train", "test"])
def test_index_refuses_an_empty_split_folder(tmp_path, empty):
    fan = small_tree(tmp_path)
    for path in (fan / empty).iterdir():
        path.unlink()
    (fan / empty / "notes.txt").write_text("the clips are elsewhere")
    message, folder = refusal(tmp_path), str(fan / empty)
    assert f"{empty}/ folder {folder!r} of machine type 'fan' has no .wav files" in message
    # even when only the other split is asked for: the tree itself is broken
    other = "test" if empty == "train" else "train"
    assert folder in refusal(tmp_path, split=other)


def test_a_missing_split_folder_is_no_refusal(tmp_path):
    fan = small_tree(tmp_path)
    (fan / "test" / GOOD_TEST).unlink()
    (fan / "test").rmdir()  # e.g. an evaluation set before its test clips are out
    assert index_dataset(tmp_path)["split"].tolist() == ["train"]


def test_a_silent_clip_is_a_warning_naming_it(tmp_path):
    silent = write_wav(small_tree(tmp_path) / "train" / BAD, np.zeros((2, round(1.2 * SR))))
    with pytest.warns(DataWarning, match="silent") as caught:
        table = index_dataset(tmp_path)
    assert len(caught) == 1 and str(silent) in str(caught[0].message)
    assert caught[0].filename == __file__  # points at the caller's line
    assert silent.name in table["file_name"].tolist() and len(table) == 3
    assert issubclass(DataWarning, UserWarning)


def test_nearly_silent_clips_are_not_silent(tmp_path):
    fan = small_tree(tmp_path)
    one = np.zeros((2, round(1.2 * SR)))
    one[1, -1] = 1 / 32768  # one quantisation step, in the far channel's last sample
    write_wav(fan / "train" / BAD, one)
    write_float(fan / "test" / "section_00_source_test_normal_0001_m-n_X.wav", one * 1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(index_dataset(tmp_path)) == 4


def test_upper_case_extensions_are_indexed(tmp_path):
    fan = small_tree(tmp_path)
    upper = write_wav(fan / "train" / "section_00_source_train_normal_0001_m-n_X.WAV", tone(1.2))
    mixed = write_wav(fan / "test" / "section_00_0007.Wav", tone(1.2))
    table = index_dataset(tmp_path)
    assert len(table) == 4
    assert {upper.name, mixed.name} <= set(table["file_name"])  # the file's own name
    row = table.set_index("file_name").loc[upper.name]
    assert (row["index"], row["attributes"], row["path"]) == (1, "m-n_X", str(upper))
    assert parse_file_name("section_00_0007.Wav")["index"] == 7
    with pytest.raises(DataError, match="section_<NN>"):
        parse_file_name("section_00_0007.wave")


def test_one_clip_in_two_letter_cases_is_refused(tmp_path):
    fan = small_tree(tmp_path)
    write_wav(fan / "train" / GOOD_TRAIN.replace(".wav", ".WAV"), tone(1.2))
    message = refusal(tmp_path)
    assert "differ only in letter case" in message and str(fan / "train" / GOOD_TRAIN) in message


# --- the sample checks: one read per file, cached outside the data root ---------------------


@pytest.fixture
def count_reads(monkeypatch) -> list[str]:
    """Every file whose samples are read (the block reader's calls), in order."""
    reads = []
    real = data.checks._sample_blocks

    def counting(audio):
        reads.append(audio.name)
        return real(audio)

    monkeypatch.setattr(data.checks, "_sample_blocks", counting)
    return reads


def test_the_sample_cache_reads_each_file_once(tmp_path, count_reads):
    root, cache = tmp_path / "data", tmp_path / "cache"
    fan = small_tree(root)
    first = index_dataset(root, cache_dir=cache)
    assert sorted(count_reads) == sorted(first["path"]) and len(count_reads) == 2
    assert [p.name for p in cache.iterdir()] == [sample_cache_path(cache, root).name]
    assert sorted(p.name for p in root.rglob("*") if p.is_file()) == [GOOD_TEST, GOOD_TRAIN]

    count_reads.clear()
    pd.testing.assert_frame_equal(index_dataset(root, cache_dir=cache), first)
    assert count_reads == []  # headers only

    changed = fan / "train" / GOOD_TRAIN
    stat = os.stat(changed)
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    index_dataset(root, cache_dir=cache)
    assert count_reads == [str(changed)]

    count_reads.clear()
    index_dataset(root)  # no cache: read every time
    index_dataset(root, check_samples=False)  # headers only
    assert len(count_reads) == 2


def test_a_cached_verdict_still_refuses_and_a_fixed_file_passes(tmp_path, count_reads):
    root, cache = tmp_path / "data", tmp_path / "cache"
    audio = tone(1.2)
    audio[0, 100] = np.nan
    bad = write_float(small_tree(root) / "train" / BAD, audio)
    first = refusal(root, cache_dir=cache)
    count_reads.clear()
    assert refusal(root, cache_dir=cache) == first and count_reads == []
    write_float(bad, np.nan_to_num(audio))  # fixed: a new size or mtime
    os.utime(bad, ns=(os.stat(bad).st_atime_ns, os.stat(bad).st_mtime_ns + 1_000_000_000))
    assert len(index_dataset(root, cache_dir=cache)) == 3 and count_reads == [str(bad)]


def test_the_sample_cache_stays_out_of_the_data_root(tmp_path):
    small_tree(tmp_path)
    with pytest.raises(ValueError, match="inside data_root"):
        index_dataset(tmp_path, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_a_broken_cache_file_is_ignored_and_rewritten(tmp_path, count_reads):
    root, cache = tmp_path / "data", tmp_path / "cache"
    small_tree(root)
    path = sample_cache_path(cache, root)
    path.parent.mkdir()
    path.write_text("{not json")
    assert len(index_dataset(root, cache_dir=cache)) == 2 and len(count_reads) == 2
    count_reads.clear()
    index_dataset(root, cache_dir=cache)
    assert count_reads == []
    assert sample_cache_path(cache, root) != sample_cache_path(cache, tmp_path / "other")


def test_scan_samples_reads_pcm_until_sound_and_float_to_the_end(
    tmp_path, count_reads, monkeypatch
):
    blocks = []
    real = data.checks._sample_blocks

    def recording(audio):
        for block in real(audio):
            blocks.append(len(block))
            yield block

    monkeypatch.setattr(data.checks, "_sample_blocks", recording)
    n = data.SCAN_FIRST_FRAMES + 2 * data.SCAN_BLOCK_FRAMES + 5
    pcm = write_wav(tmp_path / "pcm.wav", tone(n / SR))
    assert scan_samples(pcm) == {"silent": False, "nonfinite": None} and blocks == [4096]
    blocks.clear()
    audio = tone(n / SR)
    audio[0, n - 1] = np.inf
    assert scan_samples(write_float(tmp_path / "float.wav", audio))["nonfinite"] == {
        "frame": n - 1,
        "channel": 0,
        "value": "inf",
    }
    assert sum(blocks) == n  # read to the end, a block at a time
    assert max(blocks) == data.SCAN_BLOCK_FRAMES
    blocks.clear()
    silent = write_wav(tmp_path / "silent.wav", np.zeros((1, n)))
    assert scan_samples(silent) == {"silent": True, "nonfinite": None} and sum(blocks) == n
