"""The door: what the profile's stages need is checked before the first chapter, and each
refusal is one line naming the machine type or file and what was expected."""

import shutil

import numpy as np
import pytest

from asd_utils import cli, config, data, errors, runs, submission, systems
from asd_utils.data import synth
from asd_utils.report import pipeline


@pytest.fixture(scope="module")
def good_tree(tmp_path_factory):
    """A small dev tree of one machine type (both domains, train and test, both labels)."""
    root = tmp_path_factory.mktemp("door") / "data"
    settings = synth.SynthConfig(
        machine_types=("fan",), n_train_source=3, n_train_target=1, n_test=2,
        clip_seconds={"default": 0.5},
    )  # fmt: skip
    return synth.generate_dataset(root, settings, progress=False)


def _copy(tree, tmp_path):
    target = tmp_path / "data"
    shutil.copytree(tree, target)
    return target, target / "dev_data" / "raw" / "fan"


def _pipeline(data_root, output_root, capsys, *extra):
    """The pipeline's exit status and its stderr, with no notebook allowed to run."""
    argv = ["--profile", "smoke", "--data-root", str(data_root), "--output-root", str(output_root)]
    status = cli.main(["report", *argv, "--no-book", "-q", *extra])  # -q: the error alone
    return status, capsys.readouterr().err


@pytest.fixture
def no_notebooks(monkeypatch, tmp_path):
    """Any notebook that runs fails the test: the door must refuse first."""
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", tmp_path / "no-notebooks-here")


def test_a_machine_type_without_test_clips_is_refused_at_the_door(
    good_tree, tmp_path, capsys, no_notebooks
):
    root, fan = _copy(good_tree, tmp_path)
    shutil.rmtree(fan / "test")
    with pytest.raises(data.DataError, match=r"machine type 'fan' \(.*fan\) has no test clips"):
        data.check_machine_types(data.index_dataset(root))
    status, err = _pipeline(root, tmp_path / "out", capsys)
    assert status == 2 and err.count("\n") == 1 and "'fan'" in err and "no test clips" in err
    assert not (tmp_path / "out" / "executed").exists()
    assert not (tmp_path / "out" / runs.LOCK_NAME).exists()


@pytest.mark.parametrize("domain", ["source", "target"])
def test_a_machine_type_without_training_clips_of_a_domain_is_refused(
    good_tree, tmp_path, capsys, no_notebooks, domain
):
    root, fan = _copy(good_tree, tmp_path)
    for path in (fan / "train").glob(f"*_{domain}_train_*"):
        path.unlink()
    status, err = _pipeline(root, tmp_path / "out", capsys)
    assert status == 2 and err.count("\n") == 1
    assert f"machine type 'fan' ({fan}) has no {domain}-domain training clips" in err


def test_a_labelled_test_set_of_normals_only_is_scored_without_metrics(good_tree, tmp_path):
    root, fan = _copy(good_tree, tmp_path)
    for path in (fan / "test").glob("*_anomaly_*"):
        path.unlink()
    clips = data.index_dataset(root)
    data.check_machine_types(clips)  # not refused: scored and decided, without metrics
    summary = pipeline.preflight(pipeline.RunPaths(root, tmp_path / "out", False))
    assert list(summary["no_ground_truth"]) == ["fan"]
    assert "no anomalous clip" in summary["no_ground_truth"]["fan"]


def test_clips_of_differing_lengths_pass_the_door(good_tree, tmp_path):
    root, fan = _copy(good_tree, tmp_path)
    longer = sorted((fan / "test").glob("*.wav"))[0]
    data.write_wav(longer, np.zeros((2, 16000 * 2)) + 0.01)
    clips = data.index_dataset(root)
    assert clips["frames"].nunique() == 2
    data.check_machine_types(clips)


@pytest.mark.parametrize(
    ("env", "make", "expected"),
    [
        ("EAT_CHECKPOINT", None, "no such directory; expected an EAT Hugging Face folder"),
        ("EAT_CHECKPOINT", "file", "is a file, not a directory"),
        ("BEATS_CHECKPOINT", None, "no such file; expected a BEATs checkpoint"),
        ("BEATS_CHECKPOINT", "file", "not a readable torch checkpoint"),
    ],
)
def test_a_missing_or_wrong_checkpoint_is_refused_before_any_chapter(
    good_tree, tmp_path, capsys, monkeypatch, no_notebooks, env, make, expected
):
    checkpoint = tmp_path / "checkpoint"
    if make == "file":
        checkpoint.write_text("not weights")
    monkeypatch.setenv(env, str(checkpoint))
    system = "System 1" if env == "EAT_CHECKPOINT" else "System 2"
    with pytest.raises(
        errors.RunError, match=f"{system}: the .* checkpoint {checkpoint} \\(from \\$"
    ):
        systems.check_checkpoints({"name": "x", **_sections()})
    status, err = _pipeline(good_tree, tmp_path / "out", capsys)
    assert status == 2 and err.count("\n") == 1 and expected in err, err
    assert f"from ${env}" in err and not (tmp_path / "out" / "executed").exists()


def _sections() -> dict:
    return {k: v for k, v in config.load_profile("smoke").items() if isinstance(v, dict)}


def test_a_label_with_a_trailing_newline_is_refused():
    assert submission.package._LABEL.fullmatch("Doe_XJU")
    assert not submission.package._LABEL.fullmatch("Doe_XJU\n")
    assert not submission.check._SYSTEM_FOLDER.fullmatch("Doe_XJU_task2_1\n")
    profile = config.load_profile("smoke")
    profile["submission"]["label"] = "Doe_XJU\n"  # the schema's pattern is matched whole too
    with pytest.raises(config.ProfileError, match="submission.label"):
        config.validate_profile(profile)


@pytest.mark.parametrize("command", ["prepare", "run"])
def test_the_stage_commands_keep_the_same_door(good_tree, tmp_path, capsys, command):
    """``asd prepare`` / ``asd run`` refuse what the report refuses, in one line, before any
    stage runs."""
    from asd_utils import cli

    root, fan = _copy(good_tree, tmp_path)
    shutil.rmtree(fan / "test")
    argv = [command, "--profile", "smoke", "--data-root", str(root)]
    status = cli.main([*argv, "--output-root", str(tmp_path / "out"), "-q"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "'fan'" in err and "no test clips" in err
    assert not (tmp_path / "out" / "systems").exists()
