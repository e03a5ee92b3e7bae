"""The whole pipeline on the smoke profile: notebooks, results files, record, the submission
package and the book; on the synthetic default (stereo; dev with and without attributes, an eval
machine type with anonymous test names) and on a mono tree of one machine type without
attributes (the 2020-2025 format)."""

import json
import re
import shutil

import nbformat
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from asd_utils import config, data, scoring, submission
from asd_utils.data import synth
from asd_utils.evaluation import metrics, official
from asd_utils.report import pipeline

pytestmark = pytest.mark.slow  # the whole pipeline and book, twice (stereo and mono)


def test_source_notebooks_are_clean_with_one_parameters_cell():
    for path in pipeline.notebooks():
        nb = nbformat.read(path, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, path.name
        assert all(
            not c.get("outputs") and not c.get("execution_count")
            for c in nb.cells
            if c.cell_type == "code"
        ), path.name


def test_book_has_a_page_per_notebook(smoke_run):
    tmp, _ = smoke_run
    html = tmp / "build" / "_build" / "html"
    index = (html / "book" / "intro.html").read_text()
    for path in pipeline.notebooks():
        assert (html / "notebooks" / f"{path.stem}.html").exists()
        assert f"notebooks/{path.stem}.html" in index
    assert (html / "index.html").exists()


def test_the_book_shows_results_first_no_machine_path_and_no_network_script(smoke_run):
    tmp, _ = smoke_run
    html = tmp / "build" / "_build" / "html"
    pages = sorted(html.glob("**/*.html"))
    assert len(pages) > 10
    machine_paths = [str(tmp), str(config.REPO_ROOT), "/tmp/", "/root/", "/home/", "/work/"]
    for page in pages:
        text = page.read_text()
        found = [p for p in machine_paths if p in text]
        assert not found, (page.name, found)
        assert not re.search(r"<script[^>]*src=\"https?:", text), page.name
        assert "profile = " not in text, page.name  # papermill's parameters cell is hidden
    assert (html / "_static" / "mathjax" / "tex-chtml.js").is_file()
    landing = (html / "book" / "intro.html").read_text()
    assert 'src="../_static/mathjax/tex-chtml.js' in landing
    # the landing page: the computed official scores of this run, as metrics.csv has them
    table = pd.read_csv(tmp / "out" / "metrics.csv", dtype={"section": str})
    for system in ("baseline-MSE", "System 1", "System 0"):
        official = metrics.summarise(table[table["system"] == system])["hmean"]
        assert f"{100 * official:.2f}" in landing, system
    assert "This run" in landing and "smoke" in landing and "random tiny EAT" in landing
    # kept in the executed notebooks, which are not the book
    executed = nbformat.read(tmp / "out" / "executed" / "50_knn_scoring.ipynb", as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)


def test_a_book_of_selected_chapters_shows_the_others_without_outputs(smoke_run, tmp_path):
    tmp, _ = smoke_run
    out = tmp_path / "out"
    shutil.copytree(tmp / "out", out, ignore=shutil.ignore_patterns("book_source"))
    for notebook in (out / "executed").glob("*.ipynb"):
        if not notebook.name.startswith(("55_", "70_")):
            notebook.unlink()  # as after `--only 55 70` into a fresh folder
    profile = config.load_profile(out / "profile.yaml")
    paths = config.resolve_paths(profile, None, str(out))
    html = pipeline.build_book(paths, profile, tmp_path)
    page = (html / "notebooks" / "30_osscl_training.html").read_text()
    assert "did not run for the results in this book" in page and "(not computed)" in page
    assert "did not run" not in (html / "notebooks" / "55_training_free.html").read_text()


def test_results_equal_a_recomputation_from_the_score_files(smoke_run):
    tmp, _ = smoke_run
    table = pd.read_csv(tmp / "out" / "metrics.csv", dtype={"section": str})
    expected = {"baseline-MSE", "baseline-MAHALA", "System 1", "System 2", "System 3", "System 4"}
    assert expected <= set(table["system"])
    for row in table.itertuples():
        path = (
            tmp
            / "out"
            / "systems"
            / row.system
            / f"anomaly_score_{row.machine_type}_section_{row.section}_test.csv"
        )
        scores = pd.read_csv(path, header=None, names=["file_name", "score"])
        assert scores["file_name"].is_monotonic_increasing
        domain = scores["file_name"].str.extract(r"_(source|target)_test_")[0]
        anomaly = scores["file_name"].str.contains("_anomaly_").to_numpy()
        expected = {}
        for d in ("source", "target"):
            keep = anomaly | (domain == d).to_numpy()
            expected[f"auc_{d}"] = roc_auc_score(anomaly[keep], scores["score"][keep])
        expected["pauc"] = roc_auc_score(anomaly, scores["score"], max_fpr=0.1)
        for key, value in expected.items():
            assert getattr(row, key) == pytest.approx(value, abs=1e-12), (row.system, key)
    decisions = tmp / "out" / "systems" / "baseline-MSE" / "decision_result_fan_section_00_test.csv"
    assert set(pd.read_csv(decisions, header=None)[1]) <= {0, 1}


def test_run_record_says_what_ran(smoke_run):
    tmp, record = smoke_run
    saved = json.loads((tmp / "out" / "run_record.json").read_text())
    assert saved["profile"] == "smoke" and saved["seed"] == record["settings"]["seed"]
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?|unknown.*", saved["git_commit"])
    assert saved["packages"]["torch"].startswith("2.13")
    assert set(saved["stage_seconds"]) >= {p.stem for p in pipeline.notebooks()} | {"book"}
    # smoke's mixed_precision is "no": every system float32, the decision and why recorded
    assert {v["precision"] for v in saved["precision"].values()} == {"fp32"}
    assert set(saved["precision"]) >= {"System 0", "System 1", "System 2", "System 5"}


def test_results_chapter_shows_the_computed_official_score(smoke_run):
    tmp, _ = smoke_run
    wide = pd.read_csv(tmp / "out" / "table2.csv")
    official = wide[wide["metric"] == "hmean"].iloc[0]
    page = (tmp / "build" / "_build" / "html" / "notebooks" / "70_results.html").read_text()
    assert f"{official['baseline-MSE']:.2f}" in page
    assert "as reported" in page
    assert np.isfinite(official[["baseline-MSE", "baseline-MAHALA"]].astype(float)).all()


def test_a_failing_notebook_stops_the_run_naming_notebook_and_cell(tmp_path, monkeypatch):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("profile = ''", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("raise ValueError('broken on purpose')"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nb.metadata["kernelspec"]["language"] = "python"
    (tmp_path / "notebooks").mkdir()
    nbformat.write(nb, tmp_path / "notebooks" / "00_broken.ipynb")
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", tmp_path / "notebooks")
    paths = config.RunPaths(tmp_path / "data", tmp_path / "out", synthetic=False)
    with pytest.raises(
        pipeline.NotebookFailed, match=r"00_broken.ipynb failed in cell .*broken on purpose"
    ):
        profile = config.load_profile("smoke").model_copy(update={"name": "x"})
        pipeline.execute_notebooks(profile, paths, tmp_path / "executed")


def test_eval_machine_types_get_a_package_with_one_row_per_test_clip(smoke_run):
    tmp, record = smoke_run
    clips = data.index_dataset(tmp / "data")
    eval_test = clips[(clips["dataset"] == "eval") & (clips["split"] == "test")]
    assert list(record["no_ground_truth"]) == ["gearboxEmu"] and len(eval_test) > 0
    package = tmp / "out" / "submission" / "task2"
    folders = sorted(p for p in package.iterdir() if p.is_dir())
    assert [p.name for p in folders] == [f"Lastname_Institute_task2_{n}" for n in (1, 2, 3, 4)]
    submission.check_package(package, eval_test)
    for folder in folders:
        for kind in ("anomaly_score", "decision_result"):
            rows = pd.read_csv(folder / f"{kind}_gearboxEmu_section_00_test.csv", header=None)
            assert rows[0].tolist() == sorted(eval_test["file_name"])
    # metrics only where there is ground truth; the eval machine type is scored all the same
    assert set(pd.read_csv(tmp / "out" / "metrics.csv")["machine_type"]) == {"ToyCar", "fan"}
    page = (tmp / "build" / "_build" / "html" / "notebooks" / "70_results.html").read_text()
    assert "No ground truth for gearboxEmu" in page


def test_every_system_flags_some_but_not_all_test_clips(smoke_run):
    tmp, _ = smoke_run
    for folder in sorted((tmp / "out" / "systems").iterdir()):
        decisions = official.read_system_scores(folder, kind="decision_result")
        share = metrics.flagged_share(decisions)
        assert 0 < share["all"] < 1, (folder.name, share.to_dict())


def test_system0_and_the_floor_run_beside_the_paper_and_every_backend(smoke_run):
    tmp, _ = smoke_run
    out = tmp / "out"
    for name in ("System 0", "log-mel floor"):
        info = json.loads((out / "systems" / name / "system.json").read_text())
        assert info["backend"] == "knn" and (info["parameters"] > 0) == (name == "System 0")
    grid = pd.read_csv(out / "backends.csv")
    views = set(grid.loc[grid["system"] == "System 0", "embedding"])
    assert views == {"near", "far", "residual", "concat", "anc", "w1", "ss"}
    assert set(grid["backend"]) == set(scoring.BACKENDS)
    assert {"System 1", "System 2", "System 3", "log-mel floor"} <= set(grid["system"])
    assert grid["hmean"].between(0, 1).all()
    # System 0's official files hold the default back end's scores of its default view
    official = pd.read_csv(out / "metrics.csv")
    row = grid[(grid["system"] == "System 0") & (grid["embedding"] == "residual")]
    system0 = official[official["system"] == "System 0"]
    assert metrics.summarise(system0)["hmean"] == pytest.approx(
        row.loc[row["backend"] == "knn", "hmean"].item(), abs=1e-12
    )
    page = (tmp / "build" / "_build" / "html" / "notebooks" / "70_results.html").read_text()
    assert "Beyond the paper" in page and "log-mel floor" in page
    chapter = (
        tmp / "build" / "_build" / "html" / "notebooks" / "55_training_free.html"
    ).read_text()
    assert "random weights" in chapter and "the floor scores" in chapter


@pytest.fixture(scope="module")
def mono_run(tmp_path_factory, smoke_run):
    tmp = tmp_path_factory.mktemp("mono")
    tree = synth.SynthConfig(
        machine_types=("ToyCar",),
        channels=1,
        n_train_source=10,
        n_train_target=2,
        n_test=3,
        clip_seconds={"default": 1.5},
    )
    synth.generate_dataset(tmp / "mono", tree, progress=False)
    # a second run into the folder of an earlier one, on other data: nothing of the first may
    # be reported (the smoke run had fan, gearboxEmu and System 3)
    smoke_tmp, _ = smoke_run
    shutil.copytree(smoke_tmp / "out", tmp / "out")
    record = pipeline.run(
        "smoke",
        data_root=str(tmp / "mono"),
        output_root=str(tmp / "out"),
        build_dir=str(tmp / "build"),
    )
    return tmp, record


def test_mono_data_runs_every_chapter_without_system_3_and_says_so(mono_run):
    tmp, record = mono_run
    assert list(record["systems_skipped"]) == ["System 3", "System 5", "System 6", "System 7"]
    assert record["data"] == "user-given DCASE tree"
    ran = set(pd.read_csv(tmp / "out" / "metrics.csv")["system"])
    assert "System 3" not in ran and {"System 1", "System 2", "System 4"} <= ran
    html = tmp / "build" / "_build" / "html" / "notebooks"
    assert "System 3 is skipped" in (html / "70_results.html").read_text()
    assert "no far channel" in (html / "00_data_exploration.html").read_text()
    assert "System 0 runs with the near view only" in (html / "55_training_free.html").read_text()
    grid = pd.read_csv(tmp / "out" / "backends.csv")
    assert set(grid.loc[grid["system"] == "System 0", "embedding"]) == {"near"}
    # the package holds the systems that ran; with no eval_data its folders hold the meta only
    folders = sorted((tmp / "out" / "submission" / "task2").glob("*_task2_*"))
    assert len(folders) == 3
    assert all([p.suffix for p in f.iterdir()] == [".yaml"] for f in folders)


def test_a_second_run_reports_only_what_it_computed(mono_run):
    tmp, record = mono_run
    out = tmp / "out"
    assert set(pd.read_csv(out / "metrics.csv")["machine_type"]) == {"ToyCar"}
    assert not (out / "systems" / "System 3").exists()
    table2 = pd.read_csv(out / "table2.csv")
    assert "System 3" not in table2.columns and "fan" not in set(table2["machine_type"])
    saved = json.loads((out / "run_record.json").read_text())
    assert saved["status"] == "finished" and saved["data_root"] == str(tmp / "mono")


def test_every_notebook_ran_the_frozen_profile(smoke_run):
    tmp, record = smoke_run
    frozen = tmp / "out" / "profile.yaml"
    assert config.load_profile(frozen).plain() == record["settings"]
    for path in (tmp / "out" / "executed").glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert f"profile = {str(frozen)!r}" in injected[0].source.replace('"', "'"), path.name


def test_a_failed_run_says_where_and_keeps_the_stage_times(tmp_path, monkeypatch, smoke_run):
    smoke_tmp, _ = smoke_run
    good = nbformat.v4.new_notebook()
    good.cells = [nbformat.v4.new_code_cell("profile = ''", metadata={"tags": ["parameters"]})]
    bad = nbformat.v4.new_notebook()
    bad.cells = [
        nbformat.v4.new_code_cell("profile = ''", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("raise ValueError('broken on purpose')"),
    ]
    (tmp_path / "notebooks").mkdir()
    for name, nb in (("00_fine", good), ("10_broken", bad)):
        nb.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3",
            "language": "python",
        }
        nbformat.write(nb, tmp_path / "notebooks" / f"{name}.ipynb")
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", tmp_path / "notebooks")
    with pytest.raises(pipeline.NotebookFailed):
        pipeline.run(
            str(smoke_tmp / "out" / "profile.yaml"),
            data_root=str(smoke_tmp / "data"),
            output_root=str(tmp_path / "out"),
            book=False,
        )
    saved = json.loads((tmp_path / "out" / "run_record.json").read_text())
    assert saved["status"].startswith("failed at 10_broken: notebook 10_broken.ipynb failed")
    assert "broken on purpose" in saved["status"]
    assert {"prepare_data", "00_fine"} <= set(saved["stage_seconds"])


def test_the_book_shows_front_ends_back_ends_clips_and_the_pipeline(smoke_run):
    """Chapter 10 states System 0's score on each front end as backends.csv has it, beside
    others' published figures; chapter 55 shows System 6 and MERL's ladder; chapter 00 plays
    clips from the page; the landing page draws the pipeline."""
    tmp, _ = smoke_run
    html = tmp / "build" / "_build" / "html"
    grid = pd.read_csv(tmp / "out" / "backends.csv")
    system0 = grid[(grid["system"] == "System 0") & (grid["backend"] == "knn")]
    anc = html / "notebooks" / "10_anc_denoising.html"
    chapter = anc.read_text()
    for view in ("near", "anc", "w1", "ss", "residual"):
        hmean = system0.loc[system0["embedding"] == view, "hmean"].item()
        assert f"{100 * hmean:.2f}" in chapter, view
    assert "Others’ results on the" in chapter or "Others' results on the" in chapter
    assert "67.48" in chapter and "62.33" in chapter
    backends = (html / "notebooks" / "55_training_free.html").read_text()
    assert "System 6" in backends and "62.02" in backends and "Z-MIN" in backends
    assert "System 6" in (html / "notebooks" / "70_results.html").read_text()
    data = (html / "notebooks" / "00_data_exploration.html").read_text()
    assert data.count("<audio") == 4 and data.count('src="data:audio/wav;base64,') == 4
    assert "pipeline.svg" in (html / "book" / "intro.html").read_text()
    assert (html / "_images" / "pipeline.svg").is_file()
