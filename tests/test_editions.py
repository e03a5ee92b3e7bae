"""DCASE editions as data (asd_utils.data.editions): the table's entries detected from a tree, a
named edition enforced, and a new edition (a "2027" layout) added inside a test and run through
prepare, the log-mel floor and evaluate."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from test_data import GOOD_TRAIN, small_tree, tone

from asd_utils import config, data, registry, scoring, stages
from asd_utils.data import editions, synth
from asd_utils.errors import UserError
from asd_utils.systems import training_free

# A "2027" edition: renamed dataset and split folders, no bare tree, the 2026 channel map.
EDITION_2027 = editions.Edition(
    name="dcase2027",
    datasets={"dev": "development", "eval": "challenge"},
    splits={"train": "training", "test": "evaluation"},
    channels=("near", "far"),
    channel_help="stereo, 2027: channel 0 near microphone, channel 1 far microphone",
    bare=None,
)
FOLDERS_2027 = {"dev_data": "development", "eval_data": "challenge"}
SPLITS_2027 = {"train": "training", "test": "evaluation"}


def test_the_real_2023_clips_index_as_the_mono_edition(dcase2023_samples):
    clips = data.index_dataset(dcase2023_samples)
    assert data.edition_of(dcase2023_samples, clips).name == "dcase2022-2025"
    assert editions.family(dcase2023_samples)[0].name == "dcase2022-2025"  # mono first
    named = data.index_dataset(dcase2023_samples, edition="dcase2022-2025")
    pd.testing.assert_frame_equal(named, clips)


def test_a_stereo_tree_is_2026_and_a_named_mono_edition_refuses_it(tmp_path):
    small_tree(tmp_path)
    clips = data.index_dataset(tmp_path)
    assert data.edition_of(tmp_path, clips).name == "dcase2026"
    with pytest.raises(data.DataError, match=r"has 2 channels; expected 1 \(mono") as err:
        data.index_dataset(tmp_path, edition="dcase2022-2025")
    assert GOOD_TRAIN in str(err.value) and "data.edition: dcase2022-2025" in str(err.value)
    with pytest.raises(UserError, match="unknown edition 'dcase1999'; known: auto, dcase2026"):
        data.index_dataset(tmp_path, edition="dcase1999")


def test_a_mixed_tree_is_2026(tmp_path):
    write = data.write_wav
    write(tmp_path / "fan" / "train" / GOOD_TRAIN, tone(1.2)[:1])  # mono
    write(tmp_path / "fan" / "test" / "section_00_0000.wav", tone(1.2))  # stereo
    assert data.edition_of(tmp_path, data.index_dataset(tmp_path)).name == "dcase2026"


@pytest.fixture
def tree_2027(tmp_path, monkeypatch):
    """The 2027 edition added to the table, and a small synthetic 2026 tree copied into its
    folder scheme (``development/<machine_type>/{training,evaluation}``, ``challenge/...``):
    ``(tree 2026, tree 2027)``."""
    monkeypatch.setitem(editions.EDITIONS, EDITION_2027.name, EDITION_2027)
    settings = synth.SynthConfig(
        machine_types=("fan", "ToyCar"), eval_machine_types=("gearboxEmu",), n_train_source=6,
        n_train_target=3, n_test=3, clip_seconds={"default": 1.0},
    )  # fmt: skip
    old = synth.generate_dataset(tmp_path / "2026", settings, progress=False)
    new = tmp_path / "2027"
    for path in sorted(old.glob("*/raw/*/*/*.wav")):
        split, machine_type, dataset = path.parent.name, path.parents[1].name, path.parents[3].name
        target = new / FOLDERS_2027[dataset] / machine_type / SPLITS_2027[split] / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    return old, new


def test_a_new_edition_is_one_entry_and_indexes_as_the_old_layout(tree_2027):
    old, new = tree_2027
    assert data.machine_types(new) == ["fan", "gearboxEmu", "ToyCar"]
    clips = data.index_dataset(new)  # auto: the 2027 folders are found
    assert data.edition_of(new, clips).name == "dcase2027"
    before = data.index_dataset(old)
    assert data.edition_of(old, before).name == "dcase2026"  # the old layout still detected
    columns = [c for c in data.COLUMNS if c != "path"]
    pd.testing.assert_frame_equal(clips[columns], before[columns])
    assert set(clips["dataset"]) == {"dev", "eval"}
    assert clips["path"].str.contains("/development/|/challenge/").all()
    with pytest.raises(data.DataError, match="neither train/ nor test/") as err:
        data.index_dataset(new, edition="dcase2026")  # read as a bare 2026 tree
    assert "dev_data/raw" in str(err.value)
    for inner in (new / "development", new / "development" / "fan"):  # auto: the root named
        with pytest.raises(data.DataError, match=f"e.g. --data-root {new}; expected") as err:
            data.index_dataset(inner)
        assert "<data_root>/development/<machine_type>/{training,evaluation}" in str(err.value)


def test_a_new_edition_runs_through_prepare_the_floor_and_evaluate(tree_2027, tmp_path):
    _, new = tree_2027
    profile = config.load_profile("smoke")
    profile = profile.model_copy(
        update={"data": profile.data.model_copy(update={"edition": "dcase2027"})}
    )
    paths = config.resolve_paths(profile, str(new), str(tmp_path / "out"))
    assert paths.edition == "dcase2027" and not paths.synthetic
    run = stages.Run(profile, paths, paths.output_root / "profile.yaml")
    clips = stages.prepare(run)
    about = json.loads((paths.output_root / "clips.json").read_text())
    assert about["edition"] == "dcase2027" and about["clips"] == len(clips)
    pd.testing.assert_frame_equal(stages.read_manifest(paths.output_root, new), clips)

    floor = registry.of_kind("floor")[0]
    embeddings = training_free.floor_embeddings(clips, paths.output_root / "cache", False)
    scores = scoring.score_system(clips, embeddings, stages.backend(run, floor))
    stages.write_system(run, floor, scores, 0, view="log-mel statistics", backend="knn")
    written = sorted(p.name for p in run.system_dir(floor).glob("anomaly_score_*.csv"))
    assert written == [
        f"anomaly_score_{m}_section_00_test.csv" for m in ("ToyCar", "fan", "gearboxEmu")
    ]
    evaluation = stages.evaluate(run)
    table = evaluation.tables[floor]
    assert sorted(table["machine_type"]) == ["ToyCar", "fan"]  # the dev types: labelled names
    assert np.isfinite(table[["auc_source", "auc_target", "pauc"]].to_numpy()).all()
    assert list(evaluation.no_truth) == ["gearboxEmu"]  # the eval type: anonymous names


def test_an_edition_states_where_its_ground_truth_lies():
    assert {e.ground_truth for e in editions.EDITIONS.values()} == {"names"}
    with pytest.raises(ValueError, match="ground_truth 'csv'"):
        editions.Edition("x", {"dev": "d"}, {"train": "t"}, ("near",), "mono", ground_truth="csv")


def test_the_profile_names_the_edition():
    assert config.load_profile("paper").data.edition == "auto"
    assert config.load_profile("smoke").data.edition == "auto"  # data is never inherited
    with pytest.raises(config.ProfileError, match="data.edition"):
        config.validate_profile({**config.load_profile("smoke").plain(), "data": {
            "synthetic_root": "x", "edition": 2027,
        }})  # fmt: skip
