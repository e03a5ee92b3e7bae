"""Ensembles: training-only normalisation, rank preservation, affine invariance."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from asd_utils.systems import ensemble


def clip_table(seed: int, n_train: int = 20, n_test: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for machine_type in ("fan", "valveEmu"):
        for split, n in (("train", n_train), ("test", n_test)):
            for i in range(n):
                label = "anomaly" if split == "test" and i % 2 else "normal"
                rows.append({
                    "machine_type": machine_type, "section": "00", "split": split,
                    "domain": "target" if i % 3 == 0 else "source", "label": label,
                    "file_name": f"section_00_{split}_{label}_{i:04d}.wav",
                    "anomaly_score": rng.gamma(2.0, 1.0) + (2.0 if label == "anomaly" else 0.0),
                })  # fmt: skip
    return pd.DataFrame(rows)


@pytest.mark.parametrize("method", ensemble.METHODS)
def test_normalisation_uses_training_statistics_only(method):
    scores = clip_table(0)
    normalised = ensemble.normalise(scores, method)
    changed = scores.copy()
    test = changed["split"] == "test"
    changed.loc[test, "label"] = "normal"  # labels are never read
    other = test & (changed["file_name"] != changed.loc[test, "file_name"].iloc[0])
    changed.loc[other, "anomaly_score"] *= 100  # nor are other test clips' scores
    again = ensemble.normalise(changed, method)
    first = test.idxmax()
    assert again.loc[first, "anomaly_score"] == normalised.loc[first, "anomaly_score"]
    train = normalised[(normalised["split"] == "train") & (normalised["machine_type"] == "fan")]
    if method == "zscore":
        assert train["anomaly_score"].mean() == pytest.approx(0, abs=1e-12)
        assert train["anomaly_score"].std() == pytest.approx(1)
    else:
        assert train["anomaly_score"].median() == pytest.approx(0, abs=1e-12)


def test_ensemble_of_one_system_keeps_its_ranking():
    scores = clip_table(1)
    combined = ensemble.combine({"a": scores})
    for machine_type in ("fan", "valveEmu"):
        mask = scores["machine_type"] == machine_type
        rho = spearmanr(scores.loc[mask, "anomaly_score"], combined.loc[mask, "anomaly_score"])
        assert rho.statistic == pytest.approx(1.0)


@pytest.mark.parametrize("how", ["sum", "min", "max"])
def test_combining_is_invariant_to_affine_rescaling_of_a_system(how):
    a, b = clip_table(2), clip_table(3)
    reference = ensemble.combine({"a": a, "b": b}, how=how)
    rescaled = b.assign(anomaly_score=b["anomaly_score"] * 37.0 - 5.0)
    again = ensemble.combine({"a": a, "b": rescaled}, how=how)
    np.testing.assert_allclose(again["anomaly_score"], reference["anomaly_score"], atol=1e-10)


def test_weights_matter_and_must_be_complete():
    a, b = clip_table(4), clip_table(5)
    only_a = ensemble.combine({"a": a, "b": b}, weights={"a": 1.0, "b": 0.0})
    np.testing.assert_allclose(only_a["anomaly_score"], ensemble.normalise(a)["anomaly_score"])
    with pytest.raises(ValueError, match="no weight"):
        ensemble.combine({"a": a, "b": b}, weights={"a": 1.0})


def test_systems_must_score_the_same_clips():
    a, b = clip_table(6), clip_table(7).iloc[:-1]
    with pytest.raises(ValueError, match="same clips"):
        ensemble.combine({"a": a, "b": b})
