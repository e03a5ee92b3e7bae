"""Every figure the chapters draw names what its axes show (a reader should not have to guess)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from asd_utils.report import plots  # noqa: E402

RNG = np.random.default_rng(0)


def _scores() -> pd.DataFrame:
    rows = [
        (system, machine_type, domain, label, RNG.random())
        for system in ("System 1", "System 2")
        for machine_type in ("fan", "ToyCar")
        for domain in ("source", "target")
        for label in ("normal", "anomaly")
        for _ in range(3)
    ]
    return pd.DataFrame(
        rows, columns=["system", "machine_type", "domain", "label", "anomaly_score"]
    )


def _wide() -> pd.DataFrame:
    index = pd.MultiIndex.from_tuples(
        [("fan", "AUC-s"), ("fan", "AUC-t"), ("fan", "pAUC"), ("official score", "hmean")]
    )
    return pd.DataFrame({"System 1": [60.0, 55.0, 52.0, 55.5]}, index=index)


FIGURES = {
    "score_distributions": lambda: plots.score_distributions(_scores(), "System 1"),
    "roc_by_machine": lambda: plots.roc_by_machine(_scores(), ["System 1"]),
    "table2_bars": lambda: plots.table2_bars(_wide()),
    "table2_heatmap": lambda: plots.table2_heatmap(_wide()),
    "training_history": lambda: plots.training_history(
        pd.DataFrame({"system": "System 1", "step": range(5), "loss": RNG.random(5)}), ["loss"]
    ),
    "training_curves": lambda: plots.training_curves(
        pd.DataFrame({"machine_type": "fan", "epoch": range(3), "train_loss": [3, 2, 1]}).assign(
            val_loss=[3, 2, 2]
        )
    ),
    "view_dots": lambda: plots.view_dots(
        pd.DataFrame({"knn": [55.0, 60.0]}, index=pd.Index(["near", "w1"], name="front end"))
    ),
    "backend_heatmap": lambda: plots.backend_heatmap(
        {"official score": pd.DataFrame({"knn": [55.0], "beam": [57.0]}, index=["System 6"])},
        reference="knn",
    ),
    "embedding_map": lambda: plots.embedding_map(
        RNG.normal(size=(8, 2)), pd.Series(["fan", "ToyCar"] * 4), pd.Series(["source"] * 8)
    ),
}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_every_drawn_panel_names_both_axes(name):
    figure = FIGURES[name]()
    panels = [ax for ax in figure.axes if ax.get_visible() and ax.axison and ax.has_data()]
    assert panels, name
    for ax in panels:
        assert ax.get_xlabel() or any(t.get_text() for t in ax.get_xticklabels()), name
        assert ax.get_ylabel(), (name, ax.get_title())
    plt.close(figure)
