"""Lock before any write (issue 32): a command refused by the output root's lock has changed
nothing there (no profile frozen, no data made, no record); read-only commands write nothing."""

from pathlib import Path

import pytest
import yaml

from asd_utils import cli, config, runs, stages
from asd_utils.data import synth


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("session")
    settings = synth.SynthConfig(
        machine_types=("fan",), n_train_source=4, n_train_target=2, n_test=2,
        clip_seconds={"default": 1.0},
    )  # fmt: skip
    synth.generate_dataset(tmp / "data", settings, progress=False)
    profile = config.load_profile("smoke").plain()
    (tmp / "smoke.yaml").write_text(yaml.safe_dump(profile))
    other = {**profile, "seed": 7, "data": {"synthetic_root": str(tmp / "synthetic")}}
    (tmp / "other.yaml").write_text(yaml.safe_dump(other))
    return tmp


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (the lock file left out), with its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != runs.LOCK_NAME
    }


def test_a_command_refused_by_the_lock_changes_nothing(tree, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--data-root", str(tree / "data"), "--output-root", str(out), "-q"]
    assert cli.main(["prepare", "--profile", str(tree / "smoke.yaml"), *argv]) == 0
    before = snapshot(out)
    assert {"profile.yaml", "clips.csv", runs.RECORD_NAME} <= set(before)
    capsys.readouterr()
    with runs.OutputLock(out, command="asd report --profile smoke"):
        for command in ("prepare", "evaluate", "run"):
            assert cli.main([command, "--profile", str(tree / "other.yaml"), *argv]) == 2
            err = capsys.readouterr().err
            assert "is in use by another run" in err and err.count("\n") == 1
            assert snapshot(out) == before, command  # profile.yaml, the record: byte-identical
        # a profile whose data is synthetic: refused before any clip is made
        synthetic = ["--output-root", str(out), "-q"]
        assert cli.main(["prepare", "--profile", str(tree / "other.yaml"), *synthetic]) == 2
        assert not (tree / "synthetic").exists() and snapshot(out) == before


def test_read_only_commands_write_nothing(tree, tmp_path):
    out = tmp_path / "never"
    run = stages.open_run(tree / "smoke.yaml", tree / "data", out, write=False)
    assert run.profile.seed == config.load_profile("smoke").seed and not out.exists()
    assert (
        cli.main(["status", "--profile", str(tree / "smoke.yaml"), "--output-root", str(out)]) == 0
    )
    assert not out.exists()
    done = tmp_path / "done"
    argv = ["--data-root", str(tree / "data"), "--output-root", str(done), "-q"]
    assert cli.main(["prepare", "--profile", str(tree / "smoke.yaml"), *argv]) == 0
    before = snapshot(done)
    clip = next((tree / "data").rglob("*.wav"))
    detect = ["detect", "--profile", str(tree / "other.yaml"), str(clip), "--system", "System 1"]
    assert cli.main([*detect, "--output", str(tmp_path / "scores.csv"), *argv]) == 2  # untrained
    assert snapshot(done) == before  # no profile.yaml written by detect
