"""Tests of asd_utils.evaluation.metrics against hand counts, scikit-learn and the paper's Table
2."""

import itertools
import os

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from asd_utils.evaluation import metrics, official

SYSTEMS = ["baseline-MSE", "baseline-MAHALA", "System 1", "System 2", "System 3", "System 4"]


def pair_auc(anomaly_scores, normal_scores) -> float:
    """AUC by brute force: P(anomaly > normal) + 0.5 P(tie) over all pairs."""
    pairs = list(itertools.product(anomaly_scores, normal_scores))
    return sum(1.0 if a > n else 0.5 if a == n else 0.0 for a, n in pairs) / len(pairs)


# --- the paper's Table 2 -------------------------------------------------------------------------


def test_reported_table2_layout():
    wide = metrics.reported_table2()
    assert list(wide.columns) == SYSTEMS
    assert list(wide.index.get_level_values(0).unique()) == [
        "bearingEmu", "fan", "gearboxEmu", "sliderEmu", "ToyCar", "ToyCarEmu", "valveEmu",
        "official score", "arithmetic mean of AUC-s, AUC-t and pAUC",
    ]  # fmt: skip
    assert wide.loc[("bearingEmu", "AUC-s"), "baseline-MSE"] == 62.34
    assert wide.loc[("valveEmu", "pAUC"), "System 4"] == 73.79
    assert wide.loc[metrics.OFFICIAL_ROW, "System 4"] == 65.80
    assert wide.drop(index=[metrics.AMEAN_ROW]).notna().all().all()


@pytest.mark.parametrize(
    "system",
    [
        s
        if s != "System 1"
        # System 1: the 21 printed values give 63.8651, which rounds to 63.87, not the printed
        # 63.86 (0.0051 off). The printed inputs are themselves rounded to 0.01, so this is
        # within input rounding (see the next test), but not within 0.005 of the print.
        else pytest.param(s, marks=pytest.mark.xfail(strict=True, reason="63.8651 vs 63.86"))
        for s in SYSTEMS
    ],
)
def test_reported_official_score_reproduces(system):
    wide = metrics.reported_table2()
    recomputed = metrics.summarise(metrics.table2_from_wide(wide)[system])["hmean"] * 100
    assert recomputed == pytest.approx(wide.loc[metrics.OFFICIAL_ROW, system], abs=0.005)


@pytest.mark.parametrize("system", SYSTEMS)
def test_reported_official_score_within_input_rounding(system):
    # The hmean increases in every value, so with each printed value v only known to be in
    # [v - 0.005, v + 0.005] the true official score lies in [hmean(low), hmean(high)].
    wide = metrics.reported_table2()
    values = metrics.table2_from_wide(wide)[system][list(metrics.METRICS)].to_numpy() * 100
    low = metrics.official_score((values - 0.005) / 100) * 100
    high = metrics.official_score((values + 0.005) / 100) * 100
    printed = wide.loc[metrics.OFFICIAL_ROW, system]
    assert low - 0.005 <= printed <= high + 0.005


# --- per-section metrics -------------------------------------------------------------------------


def test_section_metrics_against_pair_counts():
    source_normal = [0.10, 0.40, 0.35, 0.50]
    target_normal = [0.55, 0.20, 0.70]
    source_anomaly = [0.30, 0.80, 0.40]  # 0.40 ties a source normal
    target_anomaly = [0.60, 0.45]
    scores = source_normal + target_normal + source_anomaly + target_anomaly
    label = [0] * 7 + [1] * 5
    domain = ["source"] * 4 + ["target"] * 3 + ["source"] * 3 + ["target"] * 2
    all_anomalies = source_anomaly + target_anomaly

    result = metrics.section_metrics(label, domain, scores)

    assert result["auc_source"] == pytest.approx(pair_auc(all_anomalies, source_normal))
    assert result["auc_target"] == pytest.approx(pair_auc(all_anomalies, target_normal))
    # the rule matters here: same-domain anomalies alone would give other values
    assert pair_auc(source_anomaly, source_normal) != pytest.approx(result["auc_source"])
    assert pair_auc(target_anomaly, target_normal) != pytest.approx(result["auc_target"])


def test_section_metrics_names_missing_group():
    with pytest.raises(ValueError, match="no target-domain normal"):
        metrics.section_metrics([0, 0, 1], ["source", "source", "target"], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="no anomalous clips"):
        metrics.section_metrics([0, 0], ["source", "target"], [0.1, 0.2])


def test_pauc_is_mcclish_standardised():
    rng = np.random.default_rng(0)
    normal = rng.permutation(np.arange(20) / 20)  # 20 distinct normals: fpr 0.1 = the top 2
    anomaly = np.array([0.99, 0.97, 0.93, 0.91, 0.50])
    label = np.r_[np.zeros(20), np.ones(5)]
    domain = ["source"] * 10 + ["target"] * 10 + ["source"] * 5
    score = np.r_[normal, anomaly]

    pauc = metrics.section_metrics(label, domain, score)["pauc"]

    # raw area up to fpr 0.1: each of the 2 highest normals adds 1/20 x (fraction of anomalies
    # above it)
    top = np.sort(normal)[::-1][:2]
    raw = sum((anomaly > n).mean() / 20 for n in top)
    mcclish = 0.5 * (1 + (raw - 0.1**2 / 2) / (0.1 - 0.1**2 / 2))
    assert pauc == pytest.approx(roc_auc_score(label, score, max_fpr=0.1), abs=1e-15)
    assert pauc == pytest.approx(mcclish)
    assert abs(pauc - raw / 0.1) > 0.01


def test_evaluate_sorts_like_the_paper_and_accepts_string_labels():
    rows = []
    for machine_type in ["valveEmu", "ToyCar", "fan", "bearingEmu"]:
        for domain, label, score in itertools.product(
            ["source", "target"], ["normal", "anomaly"], [0.2, 0.6]
        ):
            rows.append((machine_type, "00", domain, label, score + (label == "anomaly") * 0.1))
    scores = pd.DataFrame(
        rows, columns=["machine_type", "section", "domain", "label", "anomaly_score"]
    )
    table = metrics.evaluate(scores)
    assert list(table["machine_type"]) == ["bearingEmu", "fan", "ToyCar", "valveEmu"]
    assert list(table.columns) == ["machine_type", "section", "auc_source", "auc_target", "pauc"]
    expected = metrics.section_metrics(
        scores["label"].eq("anomaly").astype(int)[:8],
        scores["domain"][:8],
        scores["anomaly_score"][:8],
    )
    assert (
        table.loc[table["machine_type"] == "valveEmu", list(expected)].iloc[0].to_dict() == expected
    )


def test_summarise_and_official_score_floor():
    table = pd.DataFrame({"auc_source": [0.5, 0.8], "auc_target": [0.6, 0.0], "pauc": [0.55, 0.7]})
    summary = metrics.summarise(table)
    assert summary["amean"] == pytest.approx(np.mean([0.5, 0.8, 0.6, 0.0, 0.55, 0.7]))
    assert summary["hmean_source"] == pytest.approx(2 / (1 / 0.5 + 1 / 0.8))
    assert summary["hmean_pauc"] == pytest.approx(2 / (1 / 0.55 + 1 / 0.7))
    # official_score.csv's "arithmetic mean": the AUCs only, no pAUC
    assert summary["amean_auc"] == pytest.approx(np.mean([0.5, 0.8, 0.6, 0.0]))
    # a zero is floored at machine epsilon, as the evaluator does, so hmean is ~0 but defined
    assert 0 < summary["hmean"] < 1e-14
    assert 0 < summary["hmean_target"] < 1e-14


# --- submission files ----------------------------------------------------------------------------


def test_anomaly_scores_round_trip(tmp_path):
    names = [
        "/data/test/section_00_target_test_normal_0001_car_A1.wav",
        "section_00_source_test_anomaly_0000_car_A2.wav",
        "section_00_source_test_normal_0000_car_A1.wav",
    ]
    scores = [0.1 + 0.2, np.float32(1 / 3), 1e-300]
    path = official.write_anomaly_scores(tmp_path, "ToyCar", 0, names, scores)
    assert path.name == "anomaly_score_ToyCar_section_00_test.csv"
    official.write_anomaly_scores(tmp_path, "fan", "00", ["section_00_0000.wav"], [2.5])

    back = official.read_submission(path)
    assert list(back["file_name"]) == sorted(os.path.basename(n) for n in names)
    by_name = dict(zip(back["file_name"], back["value"], strict=True))
    for name, score in zip(names, scores, strict=True):
        assert by_name[os.path.basename(name)] == float(score)

    system = official.read_system_scores(tmp_path)
    assert list(system.columns) == [
        "machine_type",
        "section",
        "file_name",
        "domain",
        "label",
        "anomaly_score",
    ]
    toycar = system[system["machine_type"] == "ToyCar"]
    assert list(toycar["domain"]) == ["source", "source", "target"]
    assert list(toycar["label"]) == ["anomaly", "normal", "normal"]
    assert set(toycar["section"]) == {"00"}
    fan = system[system["machine_type"] == "fan"].iloc[0]
    assert fan["domain"] is None and fan["label"] is None


def test_decision_results_round_trip(tmp_path):
    path = official.write_decision_results(tmp_path, "fan", "00", ["b.wav", "a.wav"], [1, 0])
    assert path.read_text() == "a.wav,0\nb.wav,1\n"
    with pytest.raises(ValueError, match="0 or 1"):
        official.write_decision_results(tmp_path, "fan", "00", ["a.wav"], [2])


def test_write_rejects_duplicates_and_length_mismatch(tmp_path):
    with pytest.raises(ValueError, match="duplicate"):
        official.write_anomaly_scores(tmp_path, "fan", 0, ["x/a.wav", "y/a.wav"], [1.0, 2.0])
    with pytest.raises(ValueError, match="2 file names but 1 values"):
        official.write_anomaly_scores(tmp_path, "fan", 0, ["a.wav", "b.wav"], [1.0])
    assert list(tmp_path.iterdir()) == []


def test_read_submission_names_file_of_malformed_row(tmp_path):
    path = tmp_path / "anomaly_score_fan_section_00_test.csv"
    path.write_text("a.wav,0.5\nb.wav\n")
    with pytest.raises(ValueError, match=r"anomaly_score_fan_section_00_test\.csv: line 2"):
        official.read_submission(path)


def test_write_is_atomic(tmp_path, monkeypatch):
    calls = []

    def fail_on_third(value):
        calls.append(value)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return repr(float(value))

    monkeypatch.setattr(official, "_format_value", fail_on_third)
    with pytest.raises(RuntimeError, match="disk full"):
        official.write_anomaly_scores(tmp_path, "fan", 0, [f"{i}.wav" for i in range(5)], range(5))
    assert len(calls) == 3  # it failed midway, after two rows were written
    assert list(tmp_path.glob("anomaly_score_*")) == []
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind either


# --- decisions -----------------------------------------------------------------------------------


def test_gamma_threshold_recovers_true_quantile():
    samples = stats.gamma.rvs(2.0, scale=1.5, size=5000, random_state=1)
    true = stats.gamma.ppf(0.9, 2.0, scale=1.5)
    assert metrics.gamma_threshold(samples) == pytest.approx(true, rel=0.03)


def test_gamma_threshold_falls_back_to_empirical_quantile(monkeypatch):
    def broken_fit(data):
        raise RuntimeError("no convergence")

    monkeypatch.setattr(metrics.stats.gamma, "fit", broken_fit)
    samples = np.arange(11.0)
    with pytest.warns(RuntimeWarning, match="empirical"):
        assert metrics.gamma_threshold(samples) == pytest.approx(9.0)


def test_decision_metrics_per_domain():
    label = ["anomaly", "anomaly", "normal", "normal", "anomaly", "normal"]
    domain = ["source", "source", "source", "source", "target", "target"]
    decisions = [1, 0, 1, 0, 0, 0]
    table = metrics.decision_metrics(label, domain, decisions)
    assert table.loc["source"].to_dict() == pytest.approx(
        {"precision": 0.5, "recall": 0.5, "f1": 0.5}
    )
    assert table.loc["target"].to_dict() == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


# --- Table 2 from measured tables ----------------------------------------------------------------


def test_table2_summary_rows_match_summarise():
    rng = np.random.default_rng(3)

    def fake(machine_types):
        values = rng.uniform(0.4, 0.9, size=(len(machine_types), 3))
        table = pd.DataFrame(values, columns=list(metrics.METRICS))
        table.insert(0, "machine_type", machine_types)
        table.insert(1, "section", "00")
        return table

    tables = {"B": fake(["fan", "ToyCar", "bearingEmu"]), "A": fake(["fan", "ToyCar"])}
    wide = metrics.table2(tables)

    assert list(wide.columns) == ["B", "A"]
    assert list(wide.index.get_level_values(0).unique()[:3]) == ["bearingEmu", "fan", "ToyCar"]
    assert wide.loc["bearingEmu", "A"].isna().all()
    assert wide.loc[("ToyCar", "pAUC"), "A"] == pytest.approx(tables["A"]["pauc"][1] * 100)
    for system, table in tables.items():
        summary = metrics.summarise(table)
        assert wide.loc[metrics.OFFICIAL_ROW, system] == pytest.approx(summary["hmean"] * 100)
        assert wide.loc[metrics.AMEAN_ROW, system] == pytest.approx(summary["amean"] * 100)


# --- test clips without ground truth (the evaluation set) --------------------------------------


def _mixed_scores() -> pd.DataFrame:
    """Two labelled dev machine types' test clips, one anonymous eval type, and a training row."""
    rows = [
        ("fan", "test", d, lab, i)
        for d in ("source", "target")
        for lab in ("normal", "anomaly")
        for i in range(2)
    ]
    rows += [("ToyDrone", "test", None, None, i) for i in range(4)]
    rows += [("ToyDrone", "train", "source", "normal", 0)]
    table = pd.DataFrame(rows, columns=["machine_type", "split", "domain", "label", "index"])
    return table.assign(section="00", anomaly_score=np.linspace(0, 1, len(table)))


def test_labelled_keeps_test_clips_with_ground_truth_and_names_the_rest():
    scores = _mixed_scores()
    known, missing = metrics.labelled(scores)
    assert missing == {"ToyDrone": metrics.ANONYMOUS}
    assert set(known["machine_type"]) == {"fan"} and known["split"].eq("test").all()
    assert len(known) == 8
    assert "No ground truth for ToyDrone" in metrics.no_ground_truth_note(missing)
    assert "No ground truth for ToyDrone" in metrics.no_ground_truth_note(["ToyDrone"])
    assert "ground truth" in metrics.no_ground_truth_note([])


@pytest.mark.parametrize(
    ("drop", "reason"),
    [
        ("label == 'anomaly'", "hold no anomalous clip, so AUC and pAUC are undefined"),
        ("label == 'normal'", "hold no source-domain normal clip"),
        ("label == 'normal' and domain == 'target'", "hold no target-domain normal clip"),
    ],
)
def test_a_labelled_test_set_without_anomalies_or_normals_is_scored_without_metrics(drop, reason):
    scores = _mixed_scores()
    scores = scores[~(scores["machine_type"].eq("fan") & scores.eval(drop))]
    known, missing = metrics.labelled(scores)
    assert list(missing) == ["fan", "ToyDrone"] and reason in missing["fan"]
    assert known.empty and metrics.evaluate(known).empty  # no "AUC undefined" error
    note = metrics.no_ground_truth_note(missing)
    assert "No ground truth for ToyDrone" in note and "No metrics for fan (its" in note


def test_labelled_refuses_a_machine_type_with_some_labels_missing():
    scores = _mixed_scores()
    scores.loc[0, "label"] = None
    with pytest.raises(ValueError, match=r"\['fan'\] mix labelled and anonymous"):
        metrics.labelled(scores)


def test_evaluate_names_a_machine_type_without_ground_truth():
    scores = _mixed_scores()
    with pytest.raises(ValueError, match="ToyDrone: test clips without ground truth"):
        metrics.evaluate(scores[scores["split"] == "test"])
    assert set(metrics.evaluate(metrics.labelled(scores)[0])["machine_type"]) == {"fan"}


def test_summary_of_no_labelled_machine_type_is_nan_not_an_error():
    empty = metrics.evaluate(
        metrics.labelled(_mixed_scores().query("machine_type == 'ToyDrone'"))[0]
    )
    assert empty.empty and np.isnan(metrics.summarise(empty)["hmean"])


def test_flagged_share_per_domain_with_anonymous_clips():
    decisions = pd.DataFrame(
        {
            "domain": ["source", "source", "target", "target", None, None, None, None],
            "decision_result": [1, 0, 1, 1, 0, 0, 0, 1],
        }
    )
    share = metrics.flagged_share(decisions)
    assert share.to_dict() == {"source": 0.5, "target": 1.0, "unknown": 0.25, "all": 0.5}


def test_decision_threshold_rules():
    rng = np.random.default_rng(0)
    scores = rng.gamma(2.0, 1.0, 500)
    assert metrics.decision_threshold(scores, 0.9, "empirical") == np.quantile(scores, 0.9)
    assert metrics.decision_threshold(scores, 0.9, "gamma") == metrics.gamma_threshold(scores)
    # a few far outliers cannot move the empirical quantile past the bulk of the scores
    heavy = np.concatenate([scores, [1e3, 2e3, 5e3]])
    assert metrics.decision_threshold(heavy, 0.9, "empirical") < scores.max()
    with pytest.raises(ValueError, match="unknown decision rule 'median'"):
        metrics.decision_threshold(scores, 0.9, "median")
    with pytest.raises(ValueError, match=r"quantile must lie in \(0, 1\)"):
        metrics.decision_threshold(scores, 90, "empirical")
    assert "gamma" in metrics.describe_decision("gamma", 0.9)
    assert "gamma" not in metrics.describe_decision("empirical", 0.9)
