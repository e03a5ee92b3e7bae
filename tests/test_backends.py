"""A new scoring back end is a class in the table and its options in the profile: added here
inside the test (a Gaussian: Mahalanobis distance to each domain's mean, the minimum kept) and
run through the door, score, evaluate and the back-end comparison on synthetic data."""

from typing import Annotated

import numpy as np
import pandas as pd
import pytest
from pydantic import Field

from asd_utils import config, registry, scoring, stages, systems
from asd_utils.config import schema
from asd_utils.data import synth
from asd_utils.scoring import backends


class Gaussian(backends.Backend):
    """Mahalanobis distance to each domain's mean (covariance shrunk toward the identity by
    ``shrinkage``), the minimum over domains."""

    name = "gaussian"
    description = "Mahalanobis distance to each domain's mean"

    class Options(backends.Options):
        shrinkage: Annotated[float, Field(ge=0, le=1)]
        folds: backends.Folds

    def fit(self, reference, domains):
        super().fit(reference, domains)
        labels = np.zeros(len(reference)) if domains is None else self.domains
        self.models = []
        for value in np.unique(labels):
            points = self.reference[labels == value]
            mean = points.mean(0)
            covariance = np.cov(points, rowvar=False) if len(points) > 1 else 0.0
            a = self.options.shrinkage
            shrunk = (1 - a) * covariance + a * np.eye(points.shape[1])
            self.models.append((mean, np.linalg.inv(shrunk)))
        return self

    def score(self, queries):
        distances = [
            np.sqrt(np.einsum("nd,de,ne->n", queries - m, p, queries - m)) for m, p in self.models
        ]
        return np.min(distances, axis=0)


class Bands(backends.KNN):
    """A band back end that records the shape it was given."""

    name, takes = "bands", "bands"
    seen: list = []

    def fit(self, reference, domains):
        Bands.seen.append(np.shape(reference))
        return super().fit(np.reshape(reference, (len(reference), -1)), domains)

    def score(self, queries):
        return super().score(np.reshape(queries, (len(queries), -1)))


@pytest.fixture
def run(tmp_path, monkeypatch):
    """A run on a small synthetic tree whose profile (made in memory) scores by the Gaussian;
    System 1's embeddings saved as the embed stage saves them."""
    monkeypatch.setitem(backends.BACKENDS, Gaussian.name, Gaussian)
    settings = synth.SynthConfig(
        machine_types=("fan",), n_train_source=6, n_train_target=3, n_test=4,
        clip_seconds={"default": 1.0},
    )  # fmt: skip
    synth.generate_dataset(tmp_path / "data", settings, progress=False)
    profile = config.load_profile("smoke").plain()
    section = {**profile["backends"], "default": "gaussian"}
    section["gaussian"] = {"shrinkage": 0.5, "folds": 3}
    profile = config.validate_profile({**profile, "backends": section})
    paths = config.RunPaths(tmp_path / "data", tmp_path / "out", False)
    run = stages.Run(profile, paths, paths.output_root / "profile.yaml")
    clips = stages.prepare(run)  # the door checks the new back end's options
    embeddings = np.random.default_rng(0).standard_normal((len(clips), 5))
    scoring.save_embeddings(run.system_dir("System 1"), clips, embeddings)
    systems.write_info(run.system_dir("System 1"), "System 1", 0, **stages.made(run, "System 1"))
    return run, embeddings


def test_a_new_backend_runs_through_score_evaluate_and_the_comparison(run):
    run, embeddings = run
    scores = stages.score(run)["System 1"]
    clips = run.clips
    for (_, _), group in clips.groupby(["machine_type", "section"]):
        train = group.index[group["split"] == "train"].to_numpy()
        test = group.index[group["split"] == "test"].to_numpy()
        fitted = Gaussian(Gaussian.Options(shrinkage=0.5, folds=3))
        fitted.fit(embeddings[train], clips.loc[train, "domain"].to_numpy())
        np.testing.assert_allclose(
            scores.loc[test, "anomaly_score"], fitted.score(embeddings[test])
        )
    knn = scoring.score_system(clips, embeddings, scoring.KNN())
    assert not np.allclose(knn["anomaly_score"], scores["anomaly_score"])
    assert np.isfinite(scores["anomaly_score"]).all()  # out-of-fold training scores too
    evaluation = stages.evaluate(run)
    assert evaluation.systems == ["System 1"]
    assert np.isfinite(evaluation.tables["System 1"]["auc_source"]).all()
    grid = stages.compare_backends(run)
    assert list(grid["backend"]) == list(backends.BACKENDS)  # gaussian joined the table
    assert (run.paths.output_root / stages.COMPARISON).is_file()


def test_a_misspelt_option_is_refused_at_the_door_naming_its_key(run):
    run, _ = run
    section = {**run.profile.backends.plain(), "gaussian": {"shrinkge": 0.5, "folds": 3}}
    with pytest.raises(config.ProfileError, match="backends.gaussian.shrinkage"):
        backends.check(schema.Backends.model_validate(section))
    with pytest.raises(config.ProfileError, match="backends: unknown back end 'gauss'"):
        backends.check(schema.Backends.model_validate({**section, "default": "gauss"}))


def test_a_backend_declares_what_it_takes(run):
    run, embeddings = run
    Bands.seen.clear()
    dim = embeddings.shape[1]
    scoring.score_system(run.clips, embeddings, Bands(), bands=dim)  # [N, D] as D bands of 1
    assert Bands.seen and all(s[1:] == (dim, 1) for s in Bands.seen)
    with pytest.raises(ValueError, match=f"do not split into {dim + 1} bands"):
        scoring.score_system(run.clips, embeddings, Bands(), bands=dim + 1)
    flat = scoring.as_taken(embeddings.reshape(len(embeddings), dim, 1), "clip")
    np.testing.assert_array_equal(flat, embeddings)  # bands side by side for a clip back end
    assert registry.get("System 1").trainable  # the system whose embeddings were scored


def _two_machine_types(seed: int = 0):
    """A clip table of a listed (fan) and an unlisted machine type (ToyDrone, an evaluation-set
    one) and random band embeddings [N, 2, 4]: 12 source + 3 target training, 6 test clips each."""
    rows = []
    for machine_type in ("fan", "ToyDrone"):
        for split, domain, n in (
            ("train", "source", 12),
            ("train", "target", 3),
            ("test", "source", 6),
        ):
            rows += [dict(machine_type=machine_type, section="00", split=split, domain=domain)] * n
    table = pd.DataFrame(rows)
    return table, np.random.default_rng(seed).standard_normal((len(table), 2, 4))


def test_an_untuned_machine_type_is_scored_by_zmin_a_listed_one_by_its_choice():
    section = config.load_profile("quick").backends
    assert section.untuned == "zmin" and "ToyDrone" not in section.per_machine_type
    table, embeddings = _two_machine_types()
    scorer = scoring.for_machine_types(section, None, table["machine_type"], k=1, seed=0)
    scores = scoring.score_system(table, embeddings, scorer, bands=2)["anomaly_score"]
    for machine_type, name in (("fan", "knn"), ("ToyDrone", "zmin")):
        rows = (table["machine_type"] == machine_type).to_numpy()
        alone = scoring.make(section, name, k=1, seed=0)
        expected = scoring.score_system(table[rows], embeddings[rows], alone, bands=2)
        np.testing.assert_allclose(scores[rows], expected["anomaly_score"], rtol=0, atol=0)
    knn_everywhere = scoring.score_system(table, embeddings, scoring.KNN(), bands=2)
    assert not np.allclose(scores, knn_everywhere["anomaly_score"])
    # listed with another back end than the system's own: that one; one choice for all: itself
    chosen = section.model_copy(
        update={"per_machine_type": {"fan": "local", "ToyDrone": "default"}}
    )
    scorer = scoring.for_machine_types(chosen, "knn", table["machine_type"], k=1, seed=0)
    assert {m: b.name for m, b in scorer.chosen.items()} == {"fan": "local", "ToyDrone": "knn"}
    assert scoring.for_machine_types(section, None, ["fan"], k=1, seed=0).name == "knn"
    with pytest.raises(config.ProfileError, match="unknown back end 'zmn'"):
        backends.check(section.model_copy(update={"untuned": "zmn"}))


def test_smoke_and_quick_score_their_machine_types_as_before():
    """The shipped map keeps every machine type of smoke's and quick's data on its system's own
    back end (their official files unchanged): KNN by default, System 6's BEAM + VarMin."""
    for name in ("smoke", "quick"):
        profile = config.load_profile(name)
        made = profile.synth
        types = [*(made.machine_types or synth.MACHINE_TYPES), *(made.eval_machine_types or [])]
        section = profile.backends
        assert scoring.for_machine_types(section, None, types).name == section.default == "knn"
        assert scoring.for_machine_types(section, "beam_varmin", types).name == "beam_varmin"
