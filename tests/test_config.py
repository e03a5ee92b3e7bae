"""Profiles and path resolution."""

import pytest

from asd_utils import config, synth
from asd_utils.models.autoencoder import AETrainConfig


@pytest.mark.parametrize("name", ["smoke", "quick", "paper"])
def test_every_profile_builds_its_settings(name):
    profile = config.load_profile(name)
    assert profile["name"] == name and isinstance(profile["seed"], int)
    synth.SynthConfig.from_dict(profile["synth"])
    AETrainConfig(**profile["baseline"])


def test_paper_profile_uses_the_official_baseline_recipe():
    settings = config.load_profile("paper")["baseline"]
    assert settings == {
        "epochs": 100,
        "batch_size": 256,
        "learning_rate": 1e-3,
        "validation_split": 0.1,
    }


def test_unknown_profile_names_the_known_ones():
    with pytest.raises(FileNotFoundError, match="known profiles: .*quick"):
        config.load_profile("fastest")


def test_paths_argument_beats_environment_beats_profile(monkeypatch, tmp_path):
    profile = config.load_profile("smoke")
    monkeypatch.delenv("DATA_ROOT", raising=False)
    monkeypatch.delenv("OUTPUT_ROOT", raising=False)
    default = config.resolve_paths(profile)
    assert default.synthetic and default.data_root == config.REPO_ROOT / "data/synthetic/smoke"
    assert default.output_root == config.REPO_ROOT / "outputs/smoke"
    monkeypatch.setenv("DATA_ROOT", str(tmp_path / "env"))
    from_env = config.resolve_paths(profile)
    assert not from_env.synthetic and from_env.data_root == tmp_path / "env"
    handed_on = config.resolve_paths(profile, data_root=str(default.data_root))
    assert handed_on.synthetic  # the pipeline passes the resolved synthetic root to notebooks
    given = config.resolve_paths(profile, data_root=str(tmp_path / "arg"), output_root="out")
    assert given.data_root == tmp_path / "arg"
    assert given.output_root == config.REPO_ROOT / "out"  # relative: from the repo, not the cwd


def test_a_user_data_root_must_exist(tmp_path):
    profile = config.load_profile("smoke")
    paths = config.resolve_paths(profile, data_root=str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="missing"):
        config.prepare_data(profile, paths)
