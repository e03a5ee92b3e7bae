"""The stages as functions and as the ``asd`` command: the same files as the report's notebooks,
the clip manifest, new recordings scored, a system added by its registry entry alone."""

import dataclasses
import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from asd_utils import cli, data, detection, registry, stages
from asd_utils.evaluation import official as official_files
from asd_utils.report import analysis, book, pipeline

pytestmark = pytest.mark.slow  # every stage from the command line, on the smoke report's data

OFFICIAL = ("anomaly_score_*.csv", "decision_result_*.csv", "scores.csv", "system.json")


@pytest.fixture(scope="module")
def cli_run(smoke_run, tmp_path_factory, on_chapter_threads):
    """``asd run`` (every stage, no notebook) on the smoke report's data into a fresh output
    root that holds the report's training cache: ``(report folder, cli output root)``."""
    tmp, _ = smoke_run
    out = tmp_path_factory.mktemp("cli") / "out"
    (out / "training").mkdir(parents=True)
    for run_folder in (tmp / "out" / "training").iterdir():
        shutil.copytree(run_folder, out / "training" / run_folder.name)
    before = sorted(p.relative_to(out) for p in (out / "training").rglob("*"))
    argv = ["run", "--profile", str(tmp / "smoke.yaml"), "--output-root", str(out), "-q"]
    calls = []
    index = data.index_dataset
    with pytest.MonkeyPatch.context() as patch, on_chapter_threads():  # the report's bytes
        patch.setattr(data, "index_dataset", lambda *a, **k: calls.append(a) or index(*a, **k))
        assert cli.main(argv) == 0
    after = sorted(p.relative_to(out) for p in (out / "training").rglob("*"))
    return tmp / "out", out, before, after, calls


def test_the_command_line_stages_write_the_reports_files_byte_for_byte(cli_run):
    report, out, _, _, _ = cli_run
    systems = sorted(p.name for p in (report / "systems").iterdir())
    assert systems == sorted(p.name for p in (out / "systems").iterdir())
    assert {"System 1", "System 4", "System 0", "baseline-MSE", "log-mel floor"} <= set(systems)
    compared = 0
    for system in systems:
        for pattern in OFFICIAL:
            for path in sorted((report / "systems" / system).glob(pattern)):
                twin = out / "systems" / system / path.name
                assert twin.read_bytes() == path.read_bytes(), (system, path.name)
                compared += 1
    assert compared > 50
    for name in ("metrics.csv", "table2.csv"):
        assert (out / name).read_bytes() == (report / name).read_bytes(), name
    assert (out / "submission" / "task2").is_dir()
    # every back end on every embedding: a stage asd run writes, as the report's chapter 55
    assert (out / "backends.csv").read_bytes() == (report / "backends.csv").read_bytes()


def test_a_finished_training_run_is_found_not_redone(cli_run):
    _, _, before, after, _ = cli_run
    assert after == before  # no new checkpoint, embedding cache or run folder


def test_a_run_of_the_stages_indexes_the_data_once(cli_run):
    *_, calls = cli_run
    assert len(calls) == 1, calls


def test_the_clip_manifest_is_the_index(cli_run):
    _, out, _, _, _ = cli_run
    run = stages.open_run(out / "profile.yaml", output_root=out, progress=False)
    manifest = stages.read_manifest(out, run.paths.data_root)
    assert manifest is not None
    pd.testing.assert_frame_equal(manifest, data.index_dataset(run.paths.data_root))
    assert stages.read_manifest(out, "/elsewhere") is None  # written for another data root


def _new_recordings(run, folder):
    """The fan section 00 test clips of the run, copied under names of no DCASE form."""
    clips = run.clips
    test = clips[(clips["machine_type"] == "fan") & (clips["split"] == "test")].head(6)
    folder.mkdir()
    names = {}
    for n, row in enumerate(test.itertuples()):
        target = folder / (f"recording {n}.wav" if n % 2 else f"pump-room_{n}.WAV")
        shutil.copy(row.path, target)
        names[target.name] = row.file_name
    return names


def test_new_recordings_of_any_name_get_the_scores_of_the_official_files(cli_run, tmp_path):
    _, out, _, _, _ = cli_run
    run = stages.open_run(out / "profile.yaml", output_root=out, progress=False)
    names = _new_recordings(run, tmp_path / "new")
    argv = ["detect", "--profile", str(out / "profile.yaml"), "--output-root", str(out)]
    argv += ["--system", "System 1", "--machine-type", "fan", "--section", "00", "-q"]
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert cli.main([*argv, str(tmp_path / "new"), "--output", str(tmp_path / "d.csv")]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before  # read only
    found = pd.read_csv(tmp_path / "d.csv")
    assert sorted(found["file"]) == sorted(names)
    assert set(found["decision"]) <= {0, 1}
    official = stages.read_scores(run, "System 1").set_index("file_name")["anomaly_score"]
    expected = official.loc[[names[f] for f in found["file"]]].to_numpy()
    np.testing.assert_allclose(found["anomaly_score"].to_numpy(), expected, rtol=1e-4)


def test_a_bad_new_recording_is_refused_by_name_before_scoring(cli_run, tmp_path, capsys):
    _, out, _, _, _ = cli_run
    run = stages.open_run(out / "profile.yaml", output_root=out, progress=False)
    _new_recordings(run, tmp_path / "new")
    sf.write(tmp_path / "new" / "wrong rate.wav", np.zeros(44100, "float32"), 44100)
    argv = ["detect", "--profile", str(out / "profile.yaml"), "--output-root", str(out)]
    argv += ["--system", "System 1", "--machine-type", "fan", "--section", "00", "-q"]
    code = cli.main([*argv, str(tmp_path / "new"), "--output", str(tmp_path / "d.csv")])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1
    assert "wrong rate.wav" in error[0] and "44100 Hz" in error[0]
    assert not (tmp_path / "d.csv").exists()
    mono = tmp_path / "mono"
    mono.mkdir()
    sf.write(mono / "one channel.wav", np.zeros(32000, "float32"), 16000)
    with pytest.raises(data.DataError, match="one channel.wav.*mono"):
        detection.new_clips([mono], channels=2)


# every kind of system a run makes, named as a user might type it (the registry's families)
DETECT_FAMILIES = {
    "fine-tuned": "system 1",
    "ensemble": "SYSTEM4",
    "training-free": "system 0",
    "floor": "Log-Mel Floor",
    "autoencoder": "baseline-mse",
}


@pytest.mark.parametrize("kind", sorted(registry.KINDS))
def test_every_kind_of_system_scores_new_recordings_as_its_official_files(cli_run, tmp_path, kind):
    """System 4 through its members, System 0 (and 6), the floor, the baselines: a test clip
    copied under another name gets its official score and decision, the run stays unwritten."""
    _, out, _, _, _ = cli_run
    run = stages.open_run(out / "profile.yaml", output_root=out, progress=False)
    names = _new_recordings(run, tmp_path / "new")
    made = [s for s in stages.written(run) if s in registry.of_kind(kind)]
    assert made, f"the smoke run made no {kind} system"
    typed = {DETECT_FAMILIES[kind]: made[0], **{s.lower().replace(" ", ""): s for s in made[1:]}}
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    for name, system in typed.items():
        argv = ["detect", "--profile", str(out / "profile.yaml"), "--output-root", str(out)]
        argv += ["--system", name, "--machine-type", "Fan", "--section", "0", "-q"]
        target = tmp_path / f"{system}.csv"
        assert cli.main([*argv, str(tmp_path / "new"), "--output", str(target)]) == 0, system
        found = pd.read_csv(target)
        official = stages.read_scores(run, system).set_index("file_name")
        expected = official.loc[[names[f] for f in found["file"]], "anomaly_score"].to_numpy()
        np.testing.assert_allclose(found["anomaly_score"], expected, rtol=1e-4, err_msg=system)
        decided = official_files.read_system_scores(out / "systems" / system, "decision_result")
        decided = decided.set_index("file_name")["decision_result"]
        assert list(found["decision"]) == list(decided.loc[[names[f] for f in found["file"]]])
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def test_detect_to_standard_output_says_how_many_were_flagged_and_warns_of_a_smoke_run(
    cli_run, tmp_path, capsys
):
    _, out, _, _, _ = cli_run
    run = stages.open_run(out / "profile.yaml", output_root=out, progress=False)
    _new_recordings(run, tmp_path / "new")
    argv = ["detect", "--profile", str(out / "profile.yaml"), "--output-root", str(out)]
    argv += ["--system", "System 4", "--machine-type", "fan", "--section", "section_00"]
    capsys.readouterr()
    assert cli.main([*argv, str(tmp_path / "new"), "--output", "-"]) == 0
    said = capsys.readouterr()
    lines = said.out.splitlines()
    assert lines[0] == ",".join(detection.DETECTED) and len(lines) == 7  # the CSV, nothing else
    flagged = sum(int(line.rsplit(",", 1)[1]) for line in lines[1:])
    summary = [line for line in said.err.splitlines() if line.startswith("detect: ")]
    assert (
        f"detect: {flagged} of 6 recordings flagged anomalous by System 4 against fan "
        "section 00 (threshold "
        in summary[0]
        and summary[0].endswith("standard output")
    )
    assert "comes from a smoke run" in summary[1]
    assert "has randomly initialised members (System 1" in summary[1]


def test_a_system_added_to_the_registry_alone_is_trained_scored_evaluated_shown_and_packaged(
    cli_run, tmp_path, monkeypatch
):
    """No other module is edited: the toy system is an entry (and System 1's profile section)."""
    _, out, _, _, _ = cli_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    toy = dataclasses.replace(
        registry.REGISTRY["System 1"], name="System 9", paper=False, title="a toy system"
    )
    monkeypatch.setitem(registry.REGISTRY, "System 9", toy)
    run = stages.open_run(copy / "profile.yaml", output_root=copy, progress=False)
    assert "System 9" in stages.trainable(run)
    stages.embed(run, "System 9", stages.train(run, "System 9"))
    scored = stages.score(run, ["System 9"])
    assert scored["System 9"]["anomaly_score"].notna().all()
    evaluation = stages.evaluate(run)
    assert "System 9" in evaluation.systems and "System 9" in evaluation.wide.columns
    assert evaluation.systems.index("System 9") > evaluation.systems.index("System 4")
    headline = book.headline(run.paths, run.profile)
    assert "[System 9](../notebooks/30_osscl_training.ipynb) | beyond the paper" in headline
    folder = stages.package(run, ["System 9", "System 1"])
    metas = sorted(folder.rglob("*.meta.yaml"))  # written and checked by write_package
    assert len(metas) == 2 and "System 9" in metas[0].read_text()
    assert "OSSCL: sub-center ArcFace" in metas[0].read_text()  # described by its kind
    assert list((metas[0].parent).glob("anomaly_score_gearboxEmu_section_00_test.csv"))


def test_analysis_weight_sweep_ends_are_the_members_alone(smoke_run):
    tmp, _ = smoke_run
    run = stages.open_run(tmp / "out" / "profile.yaml", output_root=tmp / "out", progress=False)
    one, two = (stages.read_scores(run, s) for s in ("System 1", "System 2"))
    sweep = analysis.weight_sweep(("System 1", one), ("System 2", two), weights=(0.0, 1.0))
    # a per-section affine normalisation leaves every AUC as it was
    assert sweep["hmean"].iloc[1] == pytest.approx(100 * analysis.summary(one)["hmean"])
    assert sweep["hmean"].iloc[0] == pytest.approx(100 * analysis.summary(two)["hmean"])
    combos = analysis.combinations({"System 1": one, "System 2": two, "System 3": two})
    assert list(combos["systems"]) == [
        "System 1 + System 2",
        "System 1 + System 3",
        "System 2 + System 3",
        "System 1 + System 2 + System 3",
    ]
    assert combos.loc[1, "hmean"] == pytest.approx(combos.loc[0, "hmean"])  # 2 and 3 the same


def test_no_chapter_indexes_the_tree_again():
    """A report indexes the data once (its pre-flight writes the manifest); every chapter reads
    the manifest through its run (``run.clips``), none walks the tree itself."""
    import nbformat

    for path in pipeline.notebooks():
        source = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells)
        assert "index_dataset" not in source, path.name
        assert "stages.open_run(" in source, path.name
