"""The whole pipeline on the smoke profile: notebooks, results files, record, and the book."""

import json
import re

import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from asd_utils import config, pipeline


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipeline")
    profile = config.load_profile("smoke")
    profile["data"]["synthetic_root"] = str(tmp / "data")
    profile_path = tmp / "smoke.yaml"
    profile_path.write_text(yaml.safe_dump(profile))
    record = pipeline.run(
        str(profile_path), output_root=str(tmp / "out"), build_dir=str(tmp / "build")
    )
    return tmp, record


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
        pipeline.execute_notebooks({"name": "x"}, paths, tmp_path / "executed")
