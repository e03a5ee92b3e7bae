"""Profiles and path resolution."""

import pandas as pd
import pytest

from asd_utils import config, data
from asd_utils.data import synth
from asd_utils.models.autoencoder import AETrainConfig


@pytest.mark.parametrize("name", ["smoke", "quick", "paper", "rehearsal"])
def test_every_profile_builds_its_settings(name):
    profile = config.load_profile(name)
    assert profile.name == name and isinstance(profile.seed, int)
    synth.SynthConfig.from_section(profile.synth)
    AETrainConfig(**profile.baseline.plain())


def test_paper_profile_uses_the_official_baseline_recipe():
    settings = config.load_profile("paper").baseline
    assert settings.plain() == {
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


def test_relative_paths_the_user_gives_are_taken_from_the_working_directory(monkeypatch, tmp_path):
    profile = config.load_profile("smoke")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OUTPUT_ROOT", raising=False)
    given = config.resolve_paths(profile, data_root="data", output_root="out")
    assert (given.data_root, given.output_root) == (tmp_path / "data", tmp_path / "out")
    monkeypatch.setenv("DATA_ROOT", "env-data")
    assert config.resolve_paths(profile).data_root == tmp_path / "env-data"
    monkeypatch.delenv("DATA_ROOT")
    default = config.resolve_paths(profile)  # the profile's own defaults: from the repository
    assert default.output_root == config.REPO_ROOT / "outputs/smoke"


def test_a_user_data_root_must_exist(tmp_path):
    profile = config.load_profile("smoke")
    paths = config.resolve_paths(profile, data_root=str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="missing"):
        data.prepare_data(profile, paths)


# --- the profile schema: a misspelt, mistyped or out-of-range key is refused up front ----------


def _write_variant(tmp_path, change, text_change=None):
    """The smoke profile with one change, written to a file; returns its path."""
    import yaml

    values = config.read_profile_values("smoke")
    change(values)
    text = yaml.safe_dump(values, sort_keys=False)
    if text_change:
        text = text_change(text)
    path = tmp_path / "variant.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda p: p["osscl"].update(crop_second=p["osscl"].pop("crop_seconds")),
            r"osscl\.crop_second: unknown key; did you mean 'crop_seconds'\?",
        ),
        (  # a profile from before the rename: the new name, not a list of every key
            lambda p: p.update(frozen=p.pop("training_free")),
            r"frozen: unknown key: renamed 'training_free' \(December 2026\); rename it$",
        ),
        (
            lambda p: p["osscl"].update(target_repeat=p["osscl"].pop("target_repeats")),
            r"osscl\.target_repeat: unknown key; did you mean 'target_repeats'\?",
        ),
        (
            lambda p: p["beats_grl"].update(
                ablation_lambda_zeros=p["beats_grl"].pop("ablation_lambda_zero")
            ),
            r"beats_grl\.ablation_lambda_zeros: unknown key; did you mean 'ablation_lambda_zero'",
        ),
        (
            lambda p: p["anc"].update(filter_lenght=p["anc"].pop("filter_length")),
            r"anc\.filter_lenght: unknown key; did you mean 'filter_length'\?",
        ),
        (
            lambda p: p.update(beats_gr=p.pop("beats_grl")),
            r"beats_grl: missing.*beats_gr: unknown key; did you mean 'beats_grl'\?",
        ),
        (
            lambda p: p["osscl"]["train"].update(steps="6"),
            r"osscl\.train\.steps: input should be a valid integer, got '6' \(str\)",
        ),
        (
            lambda p: p["decision"].update(quantile=90),
            r"decision\.quantile: input should be less than 1, got 90",
        ),
        (
            lambda p: p["osscl"]["train"].update(steps=0),
            r"osscl\.train\.steps: input should be greater than 0",
        ),
        (
            lambda p: p["ensemble"].update(weights=[1.0]),
            r"ensemble: 1 weights for 2 members",
        ),
        (
            lambda p: p["submission"].update(systems=["System 1"] * 5),
            r"submission\.systems: list should have at most 4 items",
        ),
    ],
)
def test_a_bad_profile_is_refused_naming_file_and_key(tmp_path, change, message):
    path = _write_variant(tmp_path, change)
    with pytest.raises(config.ProfileError, match=message) as caught:
        config.load_profile(path)
    assert str(path) in str(caught.value)


def test_yaml_1_1_exponent_floats_are_numbers(tmp_path):
    # PyYAML reads 5e-4 (no dot) as a string; a profile means the number
    path = _write_variant(
        tmp_path,
        lambda p: None,
        lambda text: text.replace("learning_rate: 0.0005", "learning_rate: 5e-4"),
    )
    assert "learning_rate: 5e-4" in path.read_text()
    assert config.load_profile(path).osscl.train.learning_rate == 5e-4


def test_a_frozen_profile_loads_back_identically(tmp_path):
    profile = config.load_profile("smoke")
    frozen = config.freeze_profile(profile, tmp_path / "profile.yaml")
    assert config.load_profile(frozen) == profile


@pytest.mark.parametrize("name", ["smoke", "quick", "paper", "rehearsal"])
def test_every_profile_survives_freezing(name, tmp_path):
    # the notebooks load the frozen copy: a null the loader drops must still validate
    profile = config.load_profile(name)
    frozen = config.freeze_profile(profile, tmp_path / "profile.yaml")
    assert config.load_profile(frozen) == profile


# --- profiles that extend another ---------------------------------------------------------------


def _profile(folder, name, text):
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


def test_a_profile_that_extends_another_writes_only_what_differs(tmp_path):
    path = _profile(
        tmp_path,
        "mine",
        "extends: quick\nname: mine\nosscl:\n  train: {steps: 7}\nbaseline: {epochs: 3}\n",
    )
    quick, mine = config.load_profile("quick"), config.load_profile(path)
    assert mine.osscl.train.steps == 7 and mine.baseline.epochs == 3
    # the rest of the mapping is the base's, key by key
    assert mine.osscl.train.learning_rate == quick.osscl.train.learning_rate
    assert mine.beats_grl == quick.beats_grl and mine.synth == quick.synth
    # its own synthetic folder, never the base's (which generate_dataset would replace)
    assert mine.data.synthetic_root == "data/synthetic/mine"


def test_the_shipped_profiles_share_the_papers_recipe():
    paper, quick, smoke = (config.load_profile(n) for n in ("paper", "quick", "smoke"))
    assert quick.submission == paper.submission == smoke.submission
    assert quick.anc.filter_length == paper.anc.filter_length == 128
    # anchors: System 2's and 5's training are System 1's, changed where the file says
    assert paper.beats_grl.train == paper.osscl.train == paper.fusion.train
    assert quick.beats_grl.train.plain() == {**quick.osscl.train.plain(), "steps": 600}
    assert smoke.fusion.train == smoke.osscl.train


def test_a_derived_profile_must_name_itself(tmp_path):
    path = _profile(tmp_path, "nameless", "extends: quick\nbaseline: {epochs: 3}\n")
    with pytest.raises(config.ProfileError, match=r"nameless.yaml: name: missing"):
        config.load_profile(path)


def test_extends_a_missing_profile_or_a_cycle_is_refused(tmp_path):
    path = _profile(tmp_path, "orphan", "extends: quik\nname: orphan\n")
    with pytest.raises(config.ProfileError, match=r"orphan.yaml: extends: .*'quik' not found"):
        config.load_profile(path)
    _profile(tmp_path, "a", "extends: b.yaml\nname: a\n")
    _profile(tmp_path, "b", "extends: a.yaml\nname: b\n")
    with pytest.raises(config.ProfileError, match="cycle"):
        config.load_profile(tmp_path / "a.yaml")


def test_a_misspelt_key_in_a_derived_profile_names_its_file(tmp_path):
    path = _profile(tmp_path, "typo", "extends: quick\nname: typo\nosscl: {crop_second: 1.0}\n")
    with pytest.raises(config.ProfileError, match=r"typo.yaml: osscl\.crop_second: unknown key"):
        config.load_profile(path)


def test_asd_profile_prints_the_profile_whole(tmp_path, capsys):
    from asd_utils import cli

    assert cli.main(["profile", "--profile", "quick"]) == 0
    path = tmp_path / "whole.yaml"
    path.write_text(capsys.readouterr().out)
    assert "extends" not in path.read_text()
    assert config.load_profile(path) == config.load_profile("quick")


def test_rehearsal_profile_has_the_paper_data_sizes_and_recipe_shape():
    # benchmarks/rehearse.py: the real 2026 listing's counts and lengths, the paper's shape
    paper, rehearsal = config.load_profile("paper"), config.load_profile("rehearsal")
    assert set(rehearsal.plain()) == set(paper.plain())
    plan = synth.SynthConfig.from_section(rehearsal.synth)
    assert plan.machine_types == synth.MACHINE_TYPES
    assert plan.eval_machine_types == synth.EVAL_MACHINE_TYPES
    assert (plan.n_train_source, plan.n_train_target, plan.n_test) == (990, 10, 50)
    assert len(synth.clip_plan(plan)) == 14_400
    assert {m: plan.seconds(m) for m in synth.EVAL_MACHINE_TYPES} == synth.EVAL_CLIP_SECONDS
    assert plan.seconds("ToyCar") == 12.0 and plan.seconds("fan") == 10.0
    assert rehearsal.baseline.batch_size == paper.baseline.batch_size == 256
    for section in (rehearsal.osscl, rehearsal.beats_grl, rehearsal.fusion):
        assert section.crop_seconds is None  # null: whole clips, as the paper
        assert section.train.batch_size == 16
        assert section.size == "tiny"
    assert rehearsal.osscl.classes_by_domain and rehearsal.fusion.classes_by_domain


# --- --set KEY=VALUE: a profile key changed on the command line ---------------------------------


def test_set_changes_the_keys_it_names_and_validates_the_values():
    smoke = config.load_profile("smoke")
    changed = config.load_profile(
        "smoke", ["osscl.train.steps=2", "synth.n_train_source=20", "osscl.train.adam_eps=1e-6"]
    )
    assert (changed.osscl.train.steps, changed.synth.n_train_source) == (2, 20)
    assert changed.osscl.train.adam_eps == 1e-6  # YAML 1.2: a number
    assert changed.beats_grl == smoke.beats_grl  # nothing else moved
    record = changed.plain()
    assert record["osscl"]["train"]["steps"] == 2 and record["osscl"]["train"]["adam_eps"] == 1e-6
    mapping = config.load_profile(
        "smoke", ["synth.clip_seconds.fan=3", "lora_beats.classes.seed=4"]
    )
    assert mapping.synth.clip_seconds["fan"] == 3 and mapping.lora_beats.classes.seed == 4


@pytest.mark.parametrize(
    "setting, message",
    [
        ("osscl.train.stepz=2", r"osscl\.train\.stepz; did you mean 'osscl\.train\.steps'\?"),
        ("synth.n_train_sources=20", r"did you mean 'synth\.n_train_source'\?"),
        (
            "osscl.train.steps=two",
            r"osscl\.train\.steps: input should be a valid integer, got 'two'",
        ),
        ("osscl.train.steps=0", r"osscl\.train\.steps: input should be greater than 0"),
        ("seed.x=1", r"seed is a value, not a section"),
        ("osscl.train.steps", r"KEY=VALUE"),
    ],
)
def test_set_refuses_a_misspelt_key_or_a_wrong_value_naming_it(setting, message):
    with pytest.raises(config.ProfileError, match=message):
        config.load_profile("smoke", [setting])


def test_a_set_key_keys_the_run_and_the_same_value_keys_the_same_run(monkeypatch):
    from asd_utils import systems

    monkeypatch.setattr(data, "clip_fingerprint", lambda table: "fixed")
    monkeypatch.delenv("EAT_CHECKPOINT", raising=False)
    clips = pd.DataFrame(
        {"machine_type": "fan", "section": "00", "split": "train", "attributes": "",
         "domain": ["source", "target"], "path": ["a", "b"]}
    )  # fmt: skip

    def key(*settings):
        profile = config.load_profile("smoke", settings)
        return systems.run_dir("/out", profile, "System 1", "/data", clips).name

    assert key("osscl.train.steps=7") != key()
    assert key("osscl.train.steps=6") == key()  # smoke's own value: the same folder
    assert key("osscl.train.weight_decay=0.01") != key()  # set, so recorded (a YAML edit would)


def test_asd_set_is_recorded_in_the_runs_profile(tmp_path, capsys):
    from asd_utils import cli

    out = tmp_path / "out"
    settings = [
        f"data.synthetic_root={tmp_path / 'synth'}",
        "synth.n_test=1",
        "osscl.train.steps=2",
    ]
    where = ["--profile", "smoke", "--output-root", str(out), "--set", settings[0]]
    where += [f"--set={s}" for s in settings[1:]]
    assert cli.main(["prepare", *where]) == 0
    recorded = config.load_profile(out / "profile.yaml")
    assert (recorded.synth.n_test, recorded.osscl.train.steps) == (1, 2)
    assert recorded == config.load_profile("smoke", settings)
    assert cli.main(["profile", *where]) == 0
    assert "steps: 2" in capsys.readouterr().out
    assert cli.main(["status", *where[:4], "--set", "osscl.train.stepz=2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean 'osscl.train.steps'" in err


# --- defaults: in the schema only; a record holds what the profile set ---------------------------


def test_a_schema_default_is_read_but_not_recorded():
    train = config.load_profile("smoke").osscl.train
    assert train.weight_decay == 0.01 and train.keep_checkpoints == 2  # the schema's
    assert "weight_decay" not in train.plain() and "weight_decay" in train.model_dump()
    copy = train.model_copy(update={"weight_decay": 0.05})  # model_copy marks it set
    assert copy.plain()["weight_decay"] == 0.05 and copy.plain()["steps"] == train.steps
    smoke = config.load_profile("smoke")
    derived = smoke.model_copy(update={"osscl": smoke.osscl.model_copy(update={"train": copy})})
    assert derived.plain()["osscl"]["train"]["weight_decay"] == 0.05
    # defaults recorded before keys hashed only what a profile sets stay recorded
    assert smoke.plain()["data"]["edition"] == "auto"
    assert smoke.plain()["lora_beats"]["classes"]["scheme"] == "auto"


def test_the_code_builds_its_settings_from_the_schema_defaults():
    from asd_utils.config import schema
    from asd_utils.training import TrainConfig

    smoke = config.load_profile("smoke")
    train = TrainConfig.from_section(smoke.osscl.train, smoke.seed)
    assert (train.weight_decay, train.keep_checkpoints, train.seed) == (0.01, 2, smoke.seed)
    assert (
        TrainConfig.from_dict({"steps": 3}).log_every
        == schema.Train.model_fields["log_every"].default
    )
    made = synth.SynthConfig.from_section(smoke.synth)
    assert (made.channels, made.near_snr_db, made.fault_sound_level) == (2, (3.0, 12.0), 0.25)
    assert (
        synth.SynthConfig().noise_path_taps == schema.Synth.model_fields["noise_path_taps"].default
    )
