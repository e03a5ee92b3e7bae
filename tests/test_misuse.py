"""The battery of issue 32, as a user would try it: each misuse of a stage command, ``asd detect``
or the package is refused (or done safely) with one line naming the cause, and nothing outside
the project's own files changes. The cases that need finished systems share one small
``asd run`` (marked slow); the others build a tree of a few half-second clips."""

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from asd_utils import (
    cli,
    config,
    detection,
    errors,
    files,
    registry,
    runs,
    scoring,
    stages,
    submission,
)
from asd_utils.data import synth


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A small dev tree of one machine type (both domains, train and test, both labels)."""
    root = tmp_path_factory.mktemp("misuse") / "data"
    settings = synth.SynthConfig(
        machine_types=("fan",), n_train_source=3, n_train_target=1, n_test=2,
        clip_seconds={"default": 0.5},
    )  # fmt: skip
    return synth.generate_dataset(root, settings, progress=False)


def snapshot(root) -> dict:
    """Every file under ``root``: its bytes' size, its modification time and its first bytes."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes()[:64])
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def asd(capsys, *argv) -> tuple[int, list[str]]:
    """``asd`` with ``argv`` (quiet): its exit status and the lines of its standard error."""
    status = cli.main([*map(str, argv), "-q"])
    return status, capsys.readouterr().err.strip().splitlines()


def one_line(capsys, *argv) -> str:
    """The one ``error:`` line of a refused ``asd`` command (exit status 2)."""
    status, err = asd(capsys, *argv)
    assert status == 2 and len(err) == 1 and err[0].startswith("error: "), (status, err)
    return err[0]


def where(tree, out) -> list:
    return ["--profile", "smoke", "--data-root", tree, "--output-root", out]


# --- 1. a destination the project did not write ---------------------------------------------------


def _write(tree, destination, out) -> str:
    """The package of ``out`` written to ``destination``, refused: its one-line message."""
    profile = config.load_profile("smoke")
    with pytest.raises(errors.RunError) as refused:
        submission.write_package(out, tree, profile, destination=destination)
    return f"error: {refused.value}"


@pytest.mark.parametrize("kind", ["notes", "output root", "its parent", "data root", "checkout"])
def test_a_destination_the_project_did_not_write_is_never_deleted(tree, tmp_path, kind):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("my notes")
    out = tmp_path / "out"
    (out / "systems").mkdir(parents=True)
    destination = {
        "notes": notes,
        "output root": out,
        "its parent": tmp_path,
        "data root": tree / "dev_data",
        "checkout": config.REPO_ROOT,
    }[kind]
    before = snapshot(tmp_path), snapshot(tree)
    err = _write(tree, destination, out).splitlines()
    assert len(err) == 1 and f"--destination {destination} " in err[0], err
    expected = {
        "notes": "holds files this project did not write (e.g. 'todo.txt')",
        "output root": "is the output root",
        "its parent": "holds the output root",
        "data root": "is inside the data root",
        "checkout": "is the checkout",
    }[kind]
    assert expected in err[0] and "never" in err[0]
    assert (snapshot(tmp_path), snapshot(tree)) == before


def test_only_a_folder_the_project_marked_is_claimed(tmp_path):
    folder = tmp_path / "package"
    assert files.claim_folder(folder, "x") == folder  # new
    folder.mkdir()
    assert files.claim_folder(folder, "x") == folder  # empty
    (folder / "task2").mkdir()
    with pytest.raises(errors.RunError, match="did not write \\(e.g. 'task2'\\)"):
        files.claim_folder(folder, "x")  # no marker: not provably ours
    files.write_marker(folder, ["task2"])
    assert files.claim_folder(folder, "x") == folder  # its marker and nothing else
    (folder / "evaluator_result").mkdir()
    with pytest.raises(errors.RunError, match="'evaluator_result'"):
        files.claim_folder(folder, "x")  # something the project did not write beside it


# --- 2. a synthetic root that names a real data tree ----------------------------------------------


def _profile_file(tmp_path, synthetic_root, **changes) -> str:
    values = config.load_profile("smoke").plain()
    values["data"]["synthetic_root"] = str(synthetic_root)
    values["synth"].update(
        machine_types=["fan"], eval_machine_types=[], n_train_source=3, n_train_target=1,
        n_test=2, clip_seconds={"default": 0.5},
    )  # fmt: skip
    for key, value in changes.items():
        values[key] = value
    path = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_a_synthetic_root_that_names_a_real_tree_is_never_written(tree, tmp_path, capsys):
    real = tmp_path / "dcase"
    shutil.copytree(tree, real)
    (real / synth.CONFIG_FILE).unlink()
    (real / files.MARKER).unlink()  # a tree the generator did not write
    before = snapshot(real)
    profile = _profile_file(tmp_path, real)
    line = one_line(capsys, "prepare", "--profile", profile, "--output-root", tmp_path / "out")
    assert f"the synthetic data root {real} holds files this project did not write" in line
    assert snapshot(real) == before


def test_a_changed_synthetic_setting_deletes_nothing_the_generator_did_not_write(tmp_path, capsys):
    root = tmp_path / "synthetic"
    profile = _profile_file(tmp_path, root)
    assert asd(capsys, "prepare", "--profile", profile, "--output-root", tmp_path / "out")[0] == 0
    (root / "my notes.txt").write_text("kept")
    before = snapshot(root)
    changed = _profile_file(tmp_path, root, seed=7)
    changed = yaml.safe_load(open(changed))
    changed["synth"]["seed"] = 99  # other settings: the generator would make the tree again
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(changed))
    line = one_line(capsys, "prepare", "--profile", path, "--output-root", tmp_path / "out")
    assert "holds files this project did not write (e.g. 'my notes.txt')" in line
    assert snapshot(root) == before


@pytest.mark.parametrize("place", ["checkout", "output root"])
def test_a_synthetic_root_is_never_the_checkout_or_the_output_root(tmp_path, capsys, place):
    root = config.REPO_ROOT if place == "checkout" else tmp_path / "out"
    profile = _profile_file(tmp_path, root)
    line = one_line(capsys, "prepare", "--profile", profile, "--output-root", tmp_path / "out")
    expected = {
        "checkout": f"the synthetic data root {root} is the checkout",
        "output root": f"output root {root} is inside the data root {root}, which is only read",
    }[place]
    assert expected in line
    assert not (config.REPO_ROOT / synth.CONFIG_FILE).exists()


# --- 6. a relative checkpoint variable ------------------------------------------------------------


def test_a_relative_checkpoint_variable_is_taken_from_where_the_user_typed_it(
    tree, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EAT_CHECKPOINT", "weights/eat")
    config.resolve_paths(config.load_profile("smoke"), str(tree), str(tmp_path / "out"))
    assert os.environ["EAT_CHECKPOINT"] == str(tmp_path / "weights" / "eat")  # the kernels' too
    line = one_line(capsys, "prepare", *where(tree, tmp_path / "out"))
    assert f"the EAT checkpoint {tmp_path / 'weights' / 'eat'} (from $EAT_CHECKPOINT)" in line


def test_a_wrong_typed_value_in_an_eat_config_is_one_line(tree, tmp_path, capsys, monkeypatch):
    from asd_utils.models.eat import EAT, EATConfig

    folder = tmp_path / "eat"
    EAT(EATConfig.tiny(), target_length=None).save_pretrained(folder)
    values = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**values, "depth": "2"}))
    monkeypatch.setenv("EAT_CHECKPOINT", str(folder))
    line = one_line(capsys, "prepare", *where(tree, tmp_path / "out"))
    assert "System 1: the EAT checkpoint" in line
    assert "depth must be of type int (as 12), got '2' (str)" in line


# --- 7. a clip longer than the encoder takes ------------------------------------------------------


def test_a_clip_longer_than_the_encoders_position_table_is_refused_at_the_door(
    tree, tmp_path, capsys
):
    root = tmp_path / "data"
    shutil.copytree(tree, root)
    long = sorted((root / "dev_data" / "raw" / "fan" / "test").glob("*.wav"))[0]
    sf.write(long, np.full((16000 * 21, 2), 0.01, "float32"), 16000, subtype="PCM_16")
    line = one_line(capsys, "prepare", *where(root, tmp_path / "out"))
    assert f"{str(long)!r} is 21.0 s long, longer than System 1's EAT encoder takes (20.5 s" in line
    assert not (tmp_path / "out" / stages.MANIFEST).exists()


# --- 9, 10. one line for every user error ---------------------------------------------------------


def test_only_a_notebook_that_is_not_there_is_refused(tree, tmp_path, capsys):
    line = one_line(capsys, "report", *where(tree, tmp_path / "out"), "--only", "99")
    assert "--only 99: no such notebook; choose numbers or names of 00_" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("score", "nothing embedded in {out}/systems to score: run `asd train --system"),
        ("evaluate", "nothing scored in {out}/systems to evaluate: run `asd score`"),
        ("ensemble", "System 4's members (System 1, System 2) is scored in {out}/systems: run"),
        ("package", "nothing scored in {out}/systems to package: run the stages before"),
    ],
)
def test_a_stage_run_before_its_inputs_says_what_to_run_first(
    tree, tmp_path, capsys, command, expected
):
    out = tmp_path / "out"
    before = snapshot(tree)
    assert expected.format(out=out) in one_line(capsys, command, *where(tree, out))
    assert snapshot(tree) == before
    assert not (out / "systems").exists()


def test_an_unknown_detect_system_suggests_the_known_one(tree, tmp_path, capsys):
    argv = ["detect", *where(tree, tmp_path / "out"), "--system", "Sytem 1"]
    line = one_line(capsys, *argv, tree, "--output", tmp_path / "d.csv")
    assert "no system 'Sytem 1': did you mean 'System 1'? this run made: nothing yet" in line
    assert not (tmp_path / "d.csv").exists()


def test_detect_matches_names_without_case_and_says_what_the_run_made(tree, tmp_path, capsys):
    out = tmp_path / "out"
    assert asd(capsys, "prepare", *where(tree, out))[0] == 0
    for system in ("System 1", "System 4", "baseline-MSE"):  # as if made: their scores
        (out / "systems" / system).mkdir(parents=True)
        (out / "systems" / system / stages.SCORES).write_text("machine_type\n")
    run = stages.open_run("smoke", tree, out, write=False)
    for typed, meant in [("system4", "System 4"), ("SYSTEM 4", "System 4"),
                         ("baseline-mse", "baseline-MSE"), ("system_1", "System 1")]:  # fmt: skip
        assert detection.detectable(run, typed) == meant
    detect = ["detect", *where(tree, out), tree, "--output", tmp_path / "d.csv", "--system"]
    line = one_line(capsys, *detect, "Sytem 4")
    assert "no system 'Sytem 4': did you mean 'System 4'? this run made: baseline-MSE, " \
        "System 1, System 4" in line  # fmt: skip
    line = one_line(capsys, *detect, "system 7")
    assert "System 7 has no results in" in line and '`asd train --system "System 7"`' in line
    line = one_line(capsys, *detect, "System 1", "--machine-type", "Fann")
    assert "no machine type 'Fann' in this run's training clips: did you mean 'fan'? it has: fan" \
        in line  # fmt: skip
    line = one_line(capsys, *detect, "System 1", "--machine-type", "FAN", "--section", "7")
    assert "no section of fan '7' in this run's training clips" in line and "it has: 00" in line
    assert detection._section_number("section_00") == detection._section_number("0") == "0"
    assert not (tmp_path / "d.csv").exists()


def test_detect_never_overwrites_a_file_it_did_not_write(tree, tmp_path, capsys):
    out = tmp_path / "out"
    assert asd(capsys, "prepare", *where(tree, out))[0] == 0
    for target in (out / stages.MANIFEST, tmp_path / "notes.csv"):
        if not target.exists():
            target.write_text("my,own\n1,2\n")
        before = target.read_bytes()
        argv = ["detect", *where(tree, out), "--system", "System 1", tree, "--output", target]
        line = one_line(capsys, *argv)
        assert f"--output {target} exists and is not a file `asd detect` wrote" in line
        assert target.read_bytes() == before
    line = one_line(capsys, "detect", *where(tree, out), "--system", "System 1", tree,
                    "--output", tree / "dev_data" / "scores.csv")  # fmt: skip
    assert "is inside the data root" in line


def test_an_output_root_inside_the_data_root_is_refused(tree, tmp_path, capsys):
    before = snapshot(tree)
    line = one_line(capsys, "prepare", *where(tree, tree / "out"))
    assert f"output root {tree / 'out'} is inside the data root {tree}" in line
    assert snapshot(tree) == before


@pytest.mark.parametrize("inner", ["dev_data", "dev_data/raw/fan"])
def test_a_data_root_one_level_too_deep_names_the_tree_root(tree, tmp_path, capsys, inner):
    line = one_line(capsys, "prepare", *where(tree / inner, tmp_path / "out"))
    assert f"data_root '{tree / inner}' is a folder inside a DCASE tree" in line
    assert f"give the tree's root, e.g. --data-root {tree}; expected" in line


def test_paths_are_normalised_before_they_key_anything(tree, tmp_path, monkeypatch):
    monkeypatch.chdir(tree.parent)
    winding = f"elsewhere/../{tree.name}"
    paths = config.resolve_paths(config.load_profile("smoke"), winding, "x/../out")
    assert paths.data_root == tree and paths.output_root == tree.parent / "out"


def test_a_profile_named_dot_dot_is_refused(tmp_path, capsys):
    values = config.load_profile("smoke").plain()
    values["name"] = ".."
    path = tmp_path / "up.yaml"
    path.write_text(yaml.safe_dump(values))
    line = one_line(capsys, "profile", "--profile", path)
    assert f"error: {path}: name: string should match pattern" in line and "got '..'" in line


def test_status_names_a_stage_command_holding_the_lock(tmp_path, capsys):
    out = tmp_path / "out"
    with runs.OutputLock(out, command="asd train --profile smoke --system 'System 1'"):
        status = cli.main(["status", "--profile", "smoke", "--output-root", str(out)])
        printed = capsys.readouterr().out
    assert status == 0
    assert f"{out}: running: pid {os.getpid()}" in printed and "(asd train --profile" in printed


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (OSError("8448 requested and 992 written"), "error: the disk is full (8448 requested"),
        (
            OSError(28, "No space left on device", "/x/a.npy"),
            "error: the disk is full writing /x/a.npy",
        ),
        (FileExistsError(17, "File exists"), "error: File exists (EEXIST) in a file operation"),
    ],
)
def test_an_os_error_says_what_happened(capsys, raised, expected):
    def main(argv):
        raise raised

    assert errors.run_command(main, []) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(expected), err


def test_a_pickled_embedding_cache_is_refused_in_one_line(tmp_path):
    cache = tmp_path / "embeddings.npy"
    np.save(cache, np.array([{"x": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(errors.RunError, match=f"embeddings file {cache} cannot be used .*pickle"):
        scoring.load_array(cache, 2)
    np.save(cache, np.zeros((3, 4), "float32"))
    assert scoring.load_array(cache, 3).shape == (3, 4)
    with pytest.raises(errors.RunError, match="expected 2 float rows"):
        scoring.load_array(cache, 2)


def test_csv_cells_that_a_spreadsheet_would_run_are_escaped_and_read_back(tmp_path):
    table = pd.DataFrame({"machine_type": ["=HYPERLINK(1)", "+x", "@y", "-z", "fan"],
                          "score": [-1.5, 2.0, 3.0, 4.0, 5.0]})  # fmt: skip
    files.write_table(table, tmp_path / "t.csv")
    text = (tmp_path / "t.csv").read_text().splitlines()
    assert text[1:] == ["'=HYPERLINK(1),-1.5", "'+x,2.0", "'@y,3.0", "'-z,4.0", "fan,5.0"]
    back = files.unescape_formulas(pd.read_csv(tmp_path / "t.csv"))
    pd.testing.assert_frame_equal(back, table, check_dtype=False)


# --- the cases that need finished systems: one small `asd run` ------------------------------------

STALE = "baseline-OLD"  # a system an earlier run into the same root wrote, this run does not


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """``asd run`` on the smoke profile's data (made under a temporary folder) into an output
    root that held an earlier run's results: ``(profile file, data root, output root)``."""
    tmp = tmp_path_factory.mktemp("finished")
    values = config.load_profile("smoke").plain()
    values["data"]["synthetic_root"] = str(tmp / "data")
    profile = tmp / "smoke.yaml"
    profile.write_text(yaml.safe_dump(values))
    out = tmp / "out"
    stale = out / "systems" / STALE
    stale.mkdir(parents=True)
    (stale / "anomaly_score_fan_section_00_test.csv").write_text("x.wav,1.0\n")
    (out / "metrics.csv").write_text("stale\n")
    assert cli.main(["run", "--profile", str(profile), "--output-root", str(out), "-q"]) == 0
    return profile, tmp / "data", out


def _copy(out, tmp_path):
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    return copy


@pytest.mark.slow
def test_asd_run_clears_the_previous_runs_derived_results(finished):
    _, _, out = finished
    assert not (out / "systems" / STALE).exists()
    systems = set(pd.read_csv(out / stages.METRICS)["system"])
    assert STALE not in systems and {"System 1", "baseline-MSE"} <= systems


@pytest.mark.slow
def test_a_clip_added_after_prepare_is_never_silently_left_out(finished, tmp_path, capsys):
    profile, data_root, out = finished
    out = _copy(out, tmp_path)
    test = data_root / "dev_data" / "raw" / "fan" / "test"
    added = test / "section_00_source_test_normal_0099_spd_1.wav"
    shutil.copy(sorted(test.glob("*normal*.wav"))[0], added)
    try:
        before = snapshot(out / "systems")
        line = one_line(capsys, "score", "--profile", profile, "--output-root", out)
        assert f"1 clips added and 0 removed under {data_root} since `asd prepare`" in line
        assert f"(e.g. {added}): run `asd prepare` again" in line
        assert snapshot(out / "systems") == before
        assert asd(capsys, "prepare", "--profile", profile, "--output-root", out)[0] == 0
        line = one_line(capsys, "package", "--profile", profile, "--output-root", out)
        assert "was made from other clips than the manifest's now" in line
        line = one_line(capsys, "score", "--profile", profile, "--output-root", out)
        assert "System 1 was made from other clips than the manifest's now" in line
        assert '`asd embed --system "System 1"`' in line
    finally:
        added.unlink()


@pytest.mark.slow
def test_a_profile_edited_between_stages_is_not_mixed_with_the_run(finished, tmp_path, capsys):
    profile, _, out = finished
    out = _copy(out, tmp_path)
    info = json.loads((out / "systems" / "System 1" / "system.json").read_text())
    assert info["made_with"]["osscl"]["train"]["steps"] == 6  # the settings it was made with
    values = yaml.safe_load(profile.read_text())
    values["osscl"]["train"]["steps"] = 4
    values["decision"]["quantile"] = 0.5
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump(values))
    before = snapshot(out / "systems"), snapshot(out / "submission")
    line = one_line(capsys, "score", "--profile", edited, "--output-root", out)
    assert "System 1 was made with other settings than the profile's now" in line
    assert "(osscl.train.steps changed)" in line and '`asd train --system "System 1"`' in line
    for command in ("ensemble", "evaluate", "package"):
        line = one_line(capsys, command, "--profile", edited, "--output-root", out)
        assert "was made with other settings than the profile's now (decision.quantile" in line
    assert (snapshot(out / "systems"), snapshot(out / "submission")) == before


@pytest.mark.slow
def test_a_long_recording_is_scored_in_windows_of_the_training_length(finished, tmp_path, capsys):
    profile, data_root, out = finished
    test = sorted((data_root / "dev_data" / "raw" / "fan" / "test").glob("section_00_*.wav"))
    audio = np.concatenate([sf.read(p, always_2d=True)[0] for p in test[:4]])[: 16000 * 7]
    (tmp_path / "new").mkdir()
    sf.write(tmp_path / "new" / "long take.wav", audio, 16000, subtype="PCM_16")
    argv = ["detect", "--profile", profile, "--output-root", out, "--system", "System 1"]
    argv += ["--machine-type", "fan", "--section", "00", tmp_path / "new"]
    for _ in range(2):  # the second run overwrites the file the first wrote: its own
        assert asd(capsys, *argv, "--output", tmp_path / "d.csv")[0] == 0
    found = pd.read_csv(tmp_path / "d.csv")
    assert list(found.columns) == list(detection.DETECTED)
    assert list(found["part"]) == ["recording"] + ["window"] * 4
    assert list(found["start"]) == [0.0, 0.0, 2.0, 4.0, 5.0]  # the last window ends at the end
    assert list(found["end"]) == [7.0, 2.0, 4.0, 6.0, 7.0]
    windows = found[found["part"] == "window"]["anomaly_score"]
    assert found["anomaly_score"].iloc[0] == pytest.approx(windows.mean())
    official = pd.read_csv(out / "systems" / "System 1" / "scores.csv").set_index("file_name")
    first = official.loc[test[0].name, "anomaly_score"]  # the first window is that clip
    assert windows.iloc[0] == pytest.approx(first, rel=1e-4)


@pytest.mark.slow
def test_a_package_destination_the_project_wrote_is_replaced(finished, tmp_path):
    profile, data_root, out = finished
    argv = ["package", "--profile", str(profile), "--data-root", data_root, "--output-root", out]
    destination = tmp_path / "package"
    for _ in range(2):
        assert cli.main([*map(str, argv), "-q", "--destination", str(destination)]) == 0
    assert (destination / files.MARKER).is_file() and (destination / "task2").is_dir()
    (destination / "mine.txt").write_text("mine")
    assert cli.main([*map(str, argv), "-q", "--destination", str(destination)]) == 2
    assert (destination / "mine.txt").read_text() == "mine"


@pytest.mark.slow
def test_names_that_start_a_formula_stay_as_the_evaluator_expects(finished):
    """The official files hold DCASE file names (``section_…``, never a formula's first
    character): escaping leaves them byte for byte."""
    _, _, out = finished
    names = pd.read_csv(out / "systems" / "System 1" / "scores.csv")["file_name"]
    assert not names.str[0].isin(list(files.FORMULA_START)).any()
    assert registry.get("System 1").name == "System 1"
