"""Tests of asd_utils.submission: the package layout, the meta file, every refusal of check(),
atomic replacement, the zip, the evaluator's ground-truth layout, and the command line."""

import csv
import json
import logging
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from asd_utils import cli, config, data, submission
from asd_utils.config import schema
from asd_utils.evaluation import metrics, official
from asd_utils.submission import SubmissionError
from asd_utils.systems import recipes

LABEL = "Doe_XJU"
SYSTEMS = ["System 4", "System 1", "baseline-MSE"]
DEV_TEST = [
    f"section_00_{domain}_test_{label}_{i:04d}_noAttribute.wav"
    for domain in ("source", "target")
    for label in ("normal", "anomaly")
    for i in range(3)
]
EVAL_TEST = [f"section_00_{i:04d}.wav" for i in range(5)]
_SMOKE = config.load_profile("smoke")  # random-init EAT; System 1 + System 2 the ensemble
PROFILE = _SMOKE.model_copy(  # a profile made in memory
    update={
        "name": "test",
        "beats_grl": _SMOKE.beats_grl.model_copy(update={"checkpoint": "/weights/BEATs_iter3.pt"}),
        "submission": schema.Submission(
            label=LABEL,
            systems=SYSTEMS,
            descriptions={
                "System 1": schema.Description(name="EAT with OSSCL", abbreviation="EAT-OSSCL")
            },
        ),
    }
)


def _info(system: str, profile: schema.Profile) -> dict:
    """What training keeps in a trained system's ``system.json`` for its meta file: its recipe's
    description (:func:`asd_utils.stages.train`); an ensemble's members' records."""
    from asd_utils import registry

    entry = registry.get(system)
    if entry.kind == "ensemble":
        members = profile.ensemble.members
        return {"members": members, "member_info": {m: _info(m, profile) for m in members}}
    if not entry.trainable:
        return {}
    description, checkpoints = recipes.of(system).describe(system, profile)
    return {"description": description, "checkpoints": checkpoints}


def _wav(path: Path, rng) -> None:
    data.write_wav(path, np.zeros((2, 4000)) + 0.01 * rng.standard_normal((2, 4000)))


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A dev machine type (ToyCar), an eval one (ToyDrone) and a finished run's output folder."""
    root = tmp_path_factory.mktemp("tree")
    rng = np.random.default_rng(0)
    data_root, output_root = root / "data", root / "outputs"
    toycar = data_root / "dev_data" / "raw" / "ToyCar"
    for i in range(2):
        _wav(toycar / "train" / f"section_00_source_train_normal_{i:04d}_noAttribute.wav", rng)
    _wav(toycar / "train" / "section_00_target_train_normal_0000_noAttribute.wav", rng)
    for name in DEV_TEST:
        _wav(toycar / "test" / name, rng)
    toydrone = data_root / "eval_data" / "raw" / "ToyDrone"
    _wav(toydrone / "train" / "section_00_source_train_normal_0000_car_B1_spd_1.wav", rng)
    for name in EVAL_TEST:
        _wav(toydrone / "test" / name, rng)
    # a target training clip too: `asd package` opens the run, whose entry check wants both domains
    _wav(toydrone / "train" / "section_00_target_train_normal_0000_car_B1_spd_1.wav", rng)

    tables = []
    for k, system in enumerate(["System 1", "System 2", "System 4", "baseline-MSE", "System 3"]):
        folder = output_root / "systems" / system
        for machine_type, names in (("ToyCar", DEV_TEST), ("ToyDrone", EVAL_TEST)):
            scores = rng.random(len(names)) + k
            official.write_anomaly_scores(folder, machine_type, "00", names, scores)
            official.write_decision_results(folder, machine_type, "00", names, scores > k + 0.5)
        info = {"system": system, "parameters": 1000 * (k + 1)}
        if system == "System 4":
            info["members"] = ["System 1", "System 2"]
        elif system != "baseline-MSE":
            info.update(_info(system, PROFILE))
        (folder / "system.json").write_text(json.dumps(info))
        table = metrics.evaluate(
            official.read_system_scores(folder).query("machine_type == 'ToyCar'")
        )
        tables.append(table.assign(system=system))
    pd.concat(tables).to_csv(output_root / "metrics.csv", index=False)
    return {"data_root": data_root, "output_root": output_root}


@pytest.fixture(scope="module")
def package(tree):
    return submission.write_package(tree["output_root"], tree["data_root"], PROFILE, zip=True)


@pytest.fixture(scope="module")
def test_clips(tree):
    clips = data.index_dataset(tree["data_root"], split="test")
    return {which: clips[clips["dataset"] == which] for which in ("dev", "eval")}


@pytest.fixture
def good_folder(package, tmp_path):
    """A copy of the first eval system folder, to break."""
    folder = tmp_path / f"{LABEL}_task2_1"
    shutil.copytree(package / "task2" / folder.name, folder)
    return folder


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


# --- the package ---------------------------------------------------------------------------------


def test_package_layout(package, tree):
    assert package == tree["output_root"] / "submission"
    folders = [f"{LABEL}_task2_{n}" for n in (1, 2, 3)]
    assert sorted(p.name for p in (package / "task2").iterdir()) == [*folders, "README.txt"]
    assert sorted(p.name for p in (package / "dev").iterdir()) == folders
    for folder in folders:
        assert {p.name for p in (package / "task2" / folder).iterdir()} == {
            "anomaly_score_ToyDrone_section_00_test.csv",
            "decision_result_ToyDrone_section_00_test.csv",
            f"{folder}.meta.yaml",
        }
        assert {p.name for p in (package / "dev" / folder).iterdir()} == {
            "anomaly_score_ToyCar_section_00_test.csv",
            "decision_result_ToyCar_section_00_test.csv",
        }
    # n follows the order given: System 4 is _1, System 1 is _2; the CSVs are copies
    source = tree["output_root"] / "systems" / "System 4"
    for name in ("anomaly_score_ToyDrone_section_00_test.csv",):
        assert (package / "task2" / folders[0] / name).read_bytes() == (source / name).read_bytes()
    readme = (package / "task2" / "README.txt").read_text()
    assert "technical_report.pdf" in readme and "FILL IN" in readme
    assert not list(package.parent.glob(".submission.*")), "temporary folders left behind"


def test_one_row_per_eval_test_clip(package):
    for kind in official.KINDS:
        rows = _lines(
            package / "task2" / f"{LABEL}_task2_1" / f"{kind}_ToyDrone_section_00_test.csv"
        )
        assert [row.split(",")[0] for row in rows] == EVAL_TEST


def test_meta_content(package, tree):
    table = pd.read_csv(tree["output_root"] / "metrics.csv")
    expected = {"System 4": 3000, "System 1": 1000, "baseline-MSE": 4000}
    for n, system in enumerate(SYSTEMS, start=1):
        folder = f"{LABEL}_task2_{n}"
        meta = yaml.safe_load((package / "task2" / folder / f"{folder}.meta.yaml").read_text())
        assert list(meta) == ["submission", "system", "results"]
        assert meta["submission"]["label"] == folder
        assert meta["system"]["complexity"]["total_parameters"] == expected[system]
        assert meta["system"]["description"]["input_sampling_rate"] == "16kHz"
        row = table[table["system"] == system].iloc[0]
        results = meta["results"]["development_dataset"]
        assert list(results) == ["ToyCar"]  # ToyDrone has no ground truth
        for key in ("auc_source", "auc_target", "pauc"):
            assert results["ToyCar"][key] == round(row[key] * 100, 2)
        author = meta["submission"]["authors"][0]
        assert author["lastname"].startswith("FILL IN")
        assert all(v.startswith("FILL IN") for v in author["affiliation"].values())
        assert meta["system"]["source_code"].startswith("FILL IN")
        assert "submission.authors.0.email" in submission.placeholders(meta)
    ensemble = yaml.safe_load(
        (package / "task2" / f"{LABEL}_task2_1" / f"{LABEL}_task2_1.meta.yaml").read_text()
    )
    assert ensemble["system"]["description"]["ensemble_method_subsystem_count"] == 2
    # System 2 (a member) has a BEATs checkpoint configured: AudioSet is an external dataset
    assert [d["name"] for d in ensemble["system"]["external_datasets"]] == ["AudioSet"]
    system1 = yaml.safe_load(
        (package / "task2" / f"{LABEL}_task2_2" / f"{LABEL}_task2_2.meta.yaml").read_text()
    )
    assert system1["submission"]["name"] == "EAT with OSSCL"  # from the profile
    assert system1["system"]["external_datasets"] == []  # random-init EAT
    assert "ANC" not in system1["system"]["description"]["front_end"]


def test_meta_notes():
    meta = submission.build_meta("Doe_XJU_task2_1", "System 1", PROFILE, _info("System 1", PROFILE))
    notes = submission.meta_notes(meta)
    assert len(notes) == 1 and notes[0].startswith("9 FILL IN values (submission.authors.0.")
    meta["submission"]["abbreviation"] = "ABCDEFGHIJK"
    assert "longer than the template's 10 characters" in submission.meta_notes(meta)[1]


@pytest.mark.parametrize("name", ["smoke", "quick", "paper"])
def test_meta_of_the_real_profiles(name):
    """Every system a shipped profile submits gets a meta file (its descriptions' keys pass)."""
    profile = config.load_profile(name)
    for system in profile.submission.systems:
        info = _info(system, profile)
        meta = submission.build_meta("Lastname_Institute_task2_1", system, profile, info)
        assert meta["system"]["description"]["input_sampling_rate"] == "16kHz"
        assert "FILL IN" not in str(meta["system"]["description"])


def test_unknown_description_key_refused():
    values = PROFILE.plain()
    values["submission"]["descriptions"]["System 1"]["nmae"] = "typo"
    with pytest.raises(ValueError, match="System 1.nmae: unknown key"):  # at the door
        config.validate_profile(values)


def test_written_package_passes_check(package, test_clips):
    submission.check_package(package / "task2", test_clips["eval"])
    for folder in (package / "dev").iterdir():
        official.check(folder, test_clips["dev"])


def test_zip_contains_task2(package):
    with zipfile.ZipFile(package / f"{LABEL}_task2.zip") as archive:
        names = archive.namelist()
    assert f"task2/{LABEL}_task2_1/{LABEL}_task2_1.meta.yaml" in names
    assert f"task2/{LABEL}_task2_3/anomaly_score_ToyDrone_section_00_test.csv" in names
    assert all(name.startswith("task2/") for name in names)
    assert "task2/README.txt" not in names


def test_no_zip_unless_asked(tree, tmp_path):
    destination = submission.write_package(
        tree["output_root"], tree["data_root"], PROFILE, destination=tmp_path / "package"
    )
    assert not list(destination.glob("*.zip"))


def test_without_eval_machine_types_only_meta_files(tree, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="asd_utils")
    data_root = tmp_path / "data"
    shutil.copytree(tree["data_root"] / "dev_data", data_root / "dev_data")
    destination = submission.write_package(
        tree["output_root"], data_root, PROFILE, systems=["System 1"], destination=tmp_path / "p"
    )
    folder = destination / "task2" / f"{LABEL}_task2_1"
    assert [p.name for p in folder.iterdir()] == [f"{LABEL}_task2_1.meta.yaml"]
    assert "no evaluation machine types" in caplog.text
    assert "no evaluation machine types" in (destination / "task2" / "README.txt").read_text()


# --- refusals of check() -------------------------------------------------------------------------


def _score_csv(folder: Path, kind: str = "anomaly_score") -> Path:
    return folder / f"{kind}_ToyDrone_section_00_test.csv"


def _refused(folder: Path, clips, file_name: str, *fragments: str) -> None:
    with pytest.raises(SubmissionError) as err:
        official.check(folder, clips)
    message = str(err.value)
    assert file_name in message
    for fragment in fragments:
        assert fragment in message, message


def test_check_missing_machine_type(good_folder, test_clips):
    _score_csv(good_folder, "decision_result").unlink()
    _refused(
        good_folder, test_clips["eval"], "decision_result_ToyDrone_section_00_test.csv", "missing"
    )


def test_check_too_few_rows(good_folder, test_clips):
    path = _score_csv(good_folder)
    path.write_text("\n".join(_lines(path)[:-1]) + "\n")
    _refused(good_folder, test_clips["eval"], path.name, "4 rows but 5 test clips", EVAL_TEST[-1])


def test_check_unknown_name(good_folder, test_clips):
    path = _score_csv(good_folder)
    lines = _lines(path)
    lines[2] = "section_00_0099.wav,0.5"
    path.write_text("\n".join(lines) + "\n")
    _refused(good_folder, test_clips["eval"], path.name, "line 3", "section_00_0099.wav,0.5")


def test_check_duplicate_name(good_folder, test_clips):
    path = _score_csv(good_folder)
    lines = _lines(path)
    lines[3] = lines[0].split(",")[0] + ",0.25"
    path.write_text("\n".join(lines) + "\n")
    _refused(good_folder, test_clips["eval"], path.name, "line 4", "already appears on line 1")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "high"])
def test_check_bad_score(good_folder, test_clips, value):
    path = _score_csv(good_folder)
    lines = _lines(path)
    lines[1] = f"{EVAL_TEST[1]},{value}"
    path.write_text("\n".join(lines) + "\n")
    _refused(good_folder, test_clips["eval"], path.name, "line 2", f"{EVAL_TEST[1]},{value}")


@pytest.mark.parametrize("value", ["2", "0.5", "1.0", "-1"])
def test_check_decision_not_0_or_1(good_folder, test_clips, value):
    path = _score_csv(good_folder, "decision_result")
    lines = _lines(path)
    lines[4] = f"{EVAL_TEST[4]},{value}"
    path.write_text("\n".join(lines) + "\n")
    _refused(good_folder, test_clips["eval"], path.name, "line 5", "not exactly 0 or 1")


def test_check_header(good_folder, test_clips):
    path = _score_csv(good_folder)
    path.write_text("file_name,anomaly_score\n" + path.read_text())
    _refused(good_folder, test_clips["eval"], path.name, "line 1", "header", "file_name")


def test_check_three_columns(good_folder, test_clips):
    path = _score_csv(good_folder)
    lines = _lines(path)
    lines[0] += ",1"
    path.write_text("\n".join(lines) + "\n")
    _refused(good_folder, test_clips["eval"], path.name, "line 1", lines[0])


def test_check_unexpected_machine_type(good_folder, test_clips, tree):
    source = tree["output_root"] / "systems" / "System 1"
    shutil.copy(source / "anomaly_score_ToyCar_section_00_test.csv", good_folder)
    _refused(
        good_folder,
        test_clips["eval"],
        "anomaly_score_ToyCar_section_00_test.csv",
        "not expected",
        "ToyDrone",
    )


def test_check_package_meta_label(package, tmp_path, test_clips):
    copy = tmp_path / "task2"
    shutil.copytree(package / "task2", copy)
    meta_path = copy / f"{LABEL}_task2_2" / f"{LABEL}_task2_2.meta.yaml"
    meta = yaml.safe_load(meta_path.read_text())
    meta["submission"]["label"] = f"{LABEL}_task2_1"
    meta_path.write_text(yaml.safe_dump(meta))
    with pytest.raises(SubmissionError, match=f"{LABEL}_task2_2.meta.yaml.*submission.label"):
        submission.check_package(copy, test_clips["eval"])
    meta_path.write_text("submission: [unclosed\n")
    with pytest.raises(SubmissionError, match="not valid YAML"):
        submission.check_package(copy, test_clips["eval"])
    meta_path.unlink()
    with pytest.raises(SubmissionError, match=f"{LABEL}_task2_2.meta.yaml: missing"):
        submission.check_package(copy, test_clips["eval"])


# --- refusals of write_package() ----------------------------------------------------------------


def test_more_than_four_systems(tree, tmp_path):
    five = ["System 1", "System 2", "System 3", "System 4", "baseline-MSE"]
    with pytest.raises(ValueError, match="5 systems.*at most 4"):
        submission.write_package(
            tree["output_root"], tree["data_root"], PROFILE, five, destination=tmp_path / "p"
        )


def test_unknown_system(tree, tmp_path):
    with pytest.raises(ValueError, match="did not run.*systems that ran: .*'System 1'"):
        submission.write_package(
            tree["output_root"], tree["data_root"], PROFILE, ["System 9"], destination=tmp_path
        )


@pytest.mark.parametrize("label", ["Doe XJU", "Doe_XJU\n"])
def test_bad_label(tree, tmp_path, label):
    with pytest.raises(ValueError, match="Lastname>_<Institute"):
        submission.write_package(
            tree["output_root"], tree["data_root"], PROFILE, label=label, destination=tmp_path
        )


def test_failed_write_keeps_old_package(tree, tmp_path):
    output_root = tmp_path / "outputs"
    shutil.copytree(tree["output_root"] / "systems", output_root / "systems")
    destination = tmp_path / "submission"
    submission.write_package(
        output_root, tree["data_root"], PROFILE, ["System 1"], LABEL, destination
    )
    before = {p.relative_to(destination): p.read_bytes() for p in destination.rglob("*.*")}
    (
        output_root / "systems" / "System 2" / "anomaly_score_ToyDrone_section_00_test.csv"
    ).write_text("file_name,anomaly_score\n")
    with pytest.raises(SubmissionError, match="System 2/anomaly_score_ToyDrone|header"):
        submission.write_package(
            output_root, tree["data_root"], PROFILE, ["System 2"], LABEL, destination
        )
    after = {p.relative_to(destination): p.read_bytes() for p in destination.rglob("*.*")}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs", "submission"]


def test_rewrite_replaces_old_package(tree, tmp_path):
    destination = tmp_path / "submission"
    submission.write_package(
        tree["output_root"],
        tree["data_root"],
        PROFILE,
        ["System 1", "System 2"],
        LABEL,
        destination,
    )
    submission.write_package(
        tree["output_root"], tree["data_root"], PROFILE, ["System 3"], LABEL, destination
    )
    assert sorted(p.name for p in (destination / "task2").iterdir()) == [
        f"{LABEL}_task2_1",
        "README.txt",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["submission"]


# --- ground truth for the official evaluator -----------------------------------------------------


def test_ground_truth_layout_pinned(package):
    """File names, row format and order exactly as dcase2024_task2_evaluator reads them."""
    root = package / "ground_truth"
    name = "ground_truth_ToyCar_section_00_test.csv"
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*.csv")) == [
        f"ground_truth_attributes/{name}",
        f"ground_truth_data/{name}",
        f"ground_truth_domain/{name}",
    ]
    ordered = sorted(DEV_TEST)
    assert _lines(root / "ground_truth_data" / name)[:4] == [
        "section_00_source_test_anomaly_0000_noAttribute.wav,1",
        "section_00_source_test_anomaly_0001_noAttribute.wav,1",
        "section_00_source_test_anomaly_0002_noAttribute.wav,1",
        "section_00_source_test_normal_0000_noAttribute.wav,0",
    ]
    assert _lines(root / "ground_truth_domain" / name) == [
        f"{n},{0 if '_source_' in n else 1}" for n in ordered
    ]
    assert _lines(root / "ground_truth_attributes" / name)[0] == (
        "section_00_source_test_anomaly_0000_noAttribute.wav,"
        "section_00_source_test_anomaly_0000_noAttribute,"
        "section_00_source_test_anomaly_0000_noAttribute.wav"
    )


def _evaluator_aucs(ground_truth: Path, team: Path) -> dict[str, dict[str, float]]:
    """AUCs as the official evaluator gets them: machine types from the ground-truth file names
    (third '_' part), the attribute file's renaming (column 1 + '.wav' -> column 0), and rows
    aligned by SORTING names on both sides."""

    def read(path: Path, mapping=None) -> np.ndarray:
        with open(path) as f:
            rows = [r for r in csv.reader(f)]
        if mapping:
            rows = [[mapping.get(r[0], r[0]), r[1]] for r in rows]
        return np.array([float(r[1]) for r in sorted(rows)])

    out = {}
    for path in sorted((ground_truth / "ground_truth_data").glob("ground_truth_*.csv")):
        machine_type = path.name.split("_")[2]
        section = re.findall("section_[0-9][0-9]", path.name)[0]
        with open(ground_truth / "ground_truth_attributes" / path.name) as f:
            mapping = {f"{r[1]}.wav": r[0] for r in csv.reader(f)}
        score = read(team / f"anomaly_score_{machine_type}_{section}_test.csv", mapping)
        y_true = read(path)
        y_domain = read(ground_truth / "ground_truth_domain" / path.name)
        out[machine_type] = metrics.section_metrics(
            y_true, np.where(y_domain == 0, "source", "target"), score
        )
    return out


def test_ground_truth_reproduces_metrics(package, tree):
    table = pd.read_csv(tree["output_root"] / "metrics.csv")
    for n, system in enumerate(SYSTEMS, start=1):
        aucs = _evaluator_aucs(package / "ground_truth", package / "dev" / f"{LABEL}_task2_{n}")
        row = table[table["system"] == system].iloc[0]
        assert aucs["ToyCar"] == pytest.approx({k: row[k] for k in metrics.METRICS}, abs=1e-12)


def test_ground_truth_skips_anonymous_clips(test_clips, tmp_path):
    with pytest.raises(SubmissionError, match="no labelled test clips"):
        submission.write_ground_truth(test_clips["eval"], tmp_path)


# --- command line --------------------------------------------------------------------------------


def test_cli_check(package, tree, good_folder, capsys):
    data_root = str(tree["data_root"])
    where = ["package", "--profile", "smoke", "--data-root", data_root, "--check"]
    assert cli.main([*where, str(package / "task2")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok:") and "FILL IN" in out
    assert cli.main([*where, str(good_folder)]) == 0
    dev = str(package / "dev")
    assert cli.main([*where, dev, "--against", "dev"]) == 0
    capsys.readouterr()
    _score_csv(good_folder).write_text("file_name,anomaly_score\n")
    assert cli.main([*where, str(good_folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "line 1" in err


def test_cli_write(tree, tmp_path, capsys):
    profile = tmp_path / "profile.yaml"
    full = config.load_profile("smoke").plain()  # a whole profile: the CLI validates it
    full["submission"] = {**full["submission"], "label": LABEL, "systems": SYSTEMS}
    profile.write_text(yaml.safe_dump(full))
    destination = tmp_path / "out"
    argv = ["package", "--profile", str(profile), "--data-root", str(tree["data_root"])]
    argv += ["--output-root", str(tree["output_root"]), "--destination", str(destination)]
    assert cli.main([*argv, "--systems", "System 2", "--label", "Roe_ABC"]) == 0
    said = capsys.readouterr().err  # what it did, logged on standard error
    assert "Roe_ABC_task2_1 = System 2" in said and "--teams_root_dir ../dev" in said
    assert (destination / "task2" / "Roe_ABC_task2_1" / "Roe_ABC_task2_1.meta.yaml").is_file()
    assert cli.main([*argv, "--systems", "System 7"]) == 2
    assert capsys.readouterr().err.startswith("error: systems ['System 7'] did not run")
