"""KNN scoring against brute force, per-section scores, embedding extraction and its cache."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from asd_utils import config, data, scoring
from asd_utils.config import schema
from asd_utils.evaluation import metrics, official
from asd_utils.scoring import embeddings as embedding_files


def brute_force(train, domain, queries, k, leave_one_out=False):
    """Loops: per query, per domain, the mean cosine distance of the k nearest; the minimum."""
    scores = []
    for i, q in enumerate(queries):
        best = np.inf
        for d in sorted(set(domain)):
            dist = sorted(
                1 - q @ r / np.linalg.norm(q) / np.linalg.norm(r)
                for j, (r, dj) in enumerate(zip(train, domain, strict=True))
                if dj == d and not (leave_one_out and j == i)
            )
            if dist:
                best = min(best, float(np.mean(dist[:k])))
        scores.append(best)
    return np.array(scores)


@pytest.fixture
def embeddings():
    rng = np.random.default_rng(0)
    train = rng.standard_normal((20, 5))
    domain = np.array(["source"] * 16 + ["target"] * 4)
    return train, domain, rng.standard_normal((7, 5))


@pytest.mark.parametrize("k", [1, 3, 4])
def test_knn_scores_against_brute_force(embeddings, k):
    train, domain, test = embeddings
    np.testing.assert_allclose(
        scoring.knn_scores(train, domain, test, k), brute_force(train, domain, test, k), atol=1e-12
    )
    # leave-one-out: each training clip against the others (target: 3 others, fewer than k=4)
    np.testing.assert_allclose(
        scoring.knn_scores(train, domain, k=k),
        brute_force(train, domain, train, k, leave_one_out=True),
        atol=1e-12,
    )
    pooled = np.zeros(len(train))
    np.testing.assert_allclose(
        scoring.knn_scores(train, None, test, k), brute_force(train, pooled, test, k), atol=1e-12
    )


def test_domains_are_scored_separately(embeddings):
    train, domain, test = embeddings
    split, pooled = (
        scoring.knn_scores(train, domain, test, 3),
        scoring.knn_scores(train, None, test, 3),
    )
    assert not np.allclose(split, pooled)  # with k > 1 the per-domain minimum matters
    np.testing.assert_allclose(  # with k = 1 it is the plain nearest neighbour
        scoring.knn_scores(train, domain, test, 1), scoring.knn_scores(train, None, test, 1)
    )
    assert scoring.knn_scores(train, domain, train[:1], 1)[0] == pytest.approx(0, abs=1e-12)
    assert scoring.knn_scores(train, domain, k=1)[0] > 1e-3  # leave-one-out excludes itself
    with pytest.raises(ValueError, match="no reference"):
        scoring.knn_scores(train[:1], None, k=1)


def clip_table() -> pd.DataFrame:
    rows = []
    for machine_type in ("fan", "ToyCar"):
        for split, n in (("train", 6), ("test", 4)):
            for i in range(n):
                rows.append(
                    {
                        "machine_type": machine_type,
                        "section": "00",
                        "domain": "target" if i % 3 == 0 else "source",
                        "split": split,
                        "label": "anomaly" if split == "test" and i % 2 else "normal",
                        "file_name": f"section_00_{split}_{i:04d}.wav",
                    }
                )
    return pd.DataFrame(rows).sample(frac=1, random_state=0).set_index(np.arange(100, 120))


def test_score_system_per_section(tmp_path):
    table = clip_table()
    emb = np.random.default_rng(1).standard_normal((len(table), 6))
    scores = scoring.score_system(table, emb, scoring.KNN(k=2))
    assert list(scores.columns) == [*table.columns, "anomaly_score"]
    assert (scores.index == table.index).all()
    for (_, _), group in table.reset_index(drop=True).groupby(["machine_type", "section"]):
        train = group.index[group["split"] == "train"].to_numpy()
        test = group.index[group["split"] == "test"].to_numpy()
        domain = group.loc[train, "domain"].to_numpy()
        got = scores["anomaly_score"].to_numpy()
        np.testing.assert_allclose(got[test], brute_force(emb[train], domain, emb[test], 2))
        np.testing.assert_allclose(got[train], brute_force(emb[train], domain, emb[train], 2, True))
    from_column = scoring.score_system(table.assign(embedding=list(emb)), None, scoring.KNN(k=2))
    pd.testing.assert_frame_equal(from_column, scores)
    written = official.write_submission(scores, tmp_path)
    assert list(written["n_test"]) == [4, 4]
    assert len(metrics.evaluate(scores[scores["split"] == "test"])) == 2


class Framer(nn.Module):
    """Stand-in backbone with dropout (eval mode must switch it off) and a frame mask."""

    embed_dim = 4

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(64, 4)
        self.dropout = nn.Dropout(0.5)

    def embed(self, waveform, lengths=None):
        frames = waveform.unfold(-1, 64, 64)
        mask = torch.ones(frames.shape[:2], dtype=torch.bool)
        if lengths is not None:
            mask = (torch.arange(frames.shape[1]) + 1) * 64 <= lengths[:, None]
        tokens = self.dropout(self.proj(frames))
        weight = mask[..., None].float()
        return (tokens * weight).sum(1) / weight.sum(1), tokens


@pytest.fixture
def wav_table(tmp_path):
    rng = np.random.default_rng(2)
    for machine_type, samples in (("fan", 640), ("ToyCar", 960)):
        for i in range(3):
            name = f"section_00_source_train_normal_{i:04d}_a_{i}.wav"
            audio = rng.uniform(-0.5, 0.5, (2, samples))
            data.write_wav(tmp_path / "data" / machine_type / "train" / name, audio)
    return data.index_dataset(tmp_path / "data", min_seconds=0)  # 40-60 ms clips: tiny models


def test_extract_embeddings_aligned_batched_eval_mode(wav_table):
    torch.manual_seed(0)
    model = Framer().train()

    def one_by_one(channel=0):
        model.eval()
        with torch.no_grad():
            rows = [
                model.embed(torch.from_numpy(data.read_audio(p)[channel])[None])[0][0]
                for p in wav_table["path"]
            ]
        model.train()
        return torch.stack(rows).numpy()

    expected = one_by_one()
    for batch_size in (2, 6):  # 6: batches of one length each (640, then 960 samples)
        got = scoring.extract_embeddings(model, wav_table, batch_size=batch_size, progress=False)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert model.training  # mode restored
    far = scoring.extract_embeddings(model, wav_table, channel=1, progress=False)
    np.testing.assert_allclose(far, one_by_one(channel=1), rtol=1e-5, atol=1e-6)
    assert not np.allclose(far, expected)


def test_embedding_cache_is_keyed_by_the_weights(wav_table, tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = Framer()
    first = scoring.extract_embeddings(model, wav_table, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("embeddings_*.npy"))) == 1

    def no_audio(*_args, **_kwargs):
        raise AssertionError("read audio although the cache holds these embeddings")

    monkeypatch.setattr(embedding_files, "load_waveform", no_audio)
    np.testing.assert_array_equal(
        scoring.extract_embeddings(model, wav_table, cache_dir=tmp_path, progress=False), first
    )
    with torch.no_grad():
        model.proj.bias.add_(1.0)
    with pytest.raises(AssertionError, match="read audio"):  # new weights: a cache miss
        scoring.extract_embeddings(model, wav_table, cache_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="preprocess_key"):
        scoring.extract_embeddings(
            model, wav_table, preprocess=lambda a: a[0], cache_dir=tmp_path, progress=False
        )


def test_embedding_cache_key_is_the_version_not_the_source_files(wav_table, monkeypatch):
    """Moving or documenting a module keeps the cache; a bumped version drops it."""
    model = Framer()
    key = scoring.embedding_cache_key(model, wav_table, 0, None, None)
    # every source file now reads differently (a moved or re-documented module): the same key
    monkeypatch.setattr(embedding_files.Path, "read_bytes", lambda self: b"# a docstring changed")
    assert scoring.embedding_cache_key(model, wav_table, 0, None, None) == key
    monkeypatch.setattr(embedding_files, "EMBEDDING_VERSION", scoring.EMBEDDING_VERSION + "+")
    assert scoring.embedding_cache_key(model, wav_table, 0, None, None) != key


# --- the back ends, on hand-made embeddings whose answer is known --------------------------------


# the paper profile's options of every back end: what the old code dict held
PAPER = config.load_profile("paper").backends


def _with(name: str, options: dict | None) -> schema.Backends:
    """The paper's ``backends`` section with ``options`` over back end ``name``'s."""
    values = PAPER.plain()
    return PAPER.model_copy(update={name: {**values.get(name, {}), **(options or {})}})


def backend_scores(reference, domain, queries, name="knn", k=1, options=None, seed=0):
    """Scores of ``queries`` by back end ``name`` fitted on ``reference`` (the paper's options,
    ``options`` over them)."""
    return scoring.make(_with(name, options), name, k, seed).fit(reference, domain).score(queries)


def training_scores(reference, domain, name="knn", k=1, options=None, seed=0):
    """The reference's own scores by back end ``name`` (leave-one-out or out-of-fold)."""
    backend = scoring.make(_with(name, options), name, k, seed)
    return backend.fit(reference, domain).training_scores()


def on_circle(degrees):
    """Unit vectors in the plane at these angles: cosine distance = 1 - cos(angle between)."""
    radians = np.deg2rad(np.asarray(degrees, dtype=float))
    return np.stack([np.cos(radians), np.sin(radians)], axis=1)


def cosine_distance(degrees):
    return 1 - np.cos(np.deg2rad(degrees))


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match="unknown back end 'knnn'.*kmeans"):
        backend_scores(on_circle([0, 1]), None, on_circle([0]), "knnn")


def test_knn_backend_is_the_paper_knn(embeddings):
    train, domain, queries = embeddings
    np.testing.assert_array_equal(
        backend_scores(train, domain, queries, "knn", k=3),
        scoring.knn_scores(train, domain, queries, k=3),
    )


def test_kmeans_scores_against_source_centroids_and_target_clips():
    # two tight source clusters around 0 and 90 degrees; one target clip at 200 degrees
    source = on_circle([-2, 0, 2, 88, 90, 92])
    target = on_circle([200])
    reference = np.concatenate([source, target])
    domain = np.array(["source"] * 6 + ["target"])
    queries = on_circle([0, 45, 200, 210])
    got = backend_scores(reference, domain, queries, "kmeans", options={"centroids": 2})
    # the centroids lie at 0 and 90 degrees: a query there scores ~0 (a source clip at 2 degrees
    # would give the KNN 1 - cos 2); 45 degrees is 45 from both; the target clip is kept as is
    np.testing.assert_allclose(got, cosine_distance([0, 45, 0, 10]), atol=1e-12)
    knn = backend_scores(reference, domain, queries, "knn")
    np.testing.assert_allclose(knn, cosine_distance([0, 43, 0, 10]), atol=1e-12)


def test_smote_fills_the_space_between_target_clips():
    source = on_circle([180, 181])
    target = on_circle([0, 90])
    reference = np.concatenate([source, target])
    domain = np.array(["source", "source", "target", "target"])
    midway = on_circle([45])
    knn = backend_scores(reference, domain, midway, "knn")
    np.testing.assert_allclose(knn, cosine_distance([45]))
    smote = backend_scores(reference, domain, midway, "smote", options={"per_clip": 200}, seed=0)
    assert smote[0] < 1e-3 < knn[0]  # interpolations between 0 and 90 degrees pass through 45
    # a query beyond the target clips is no closer than before: SMOTE stays between them
    outside = on_circle([-30])
    np.testing.assert_allclose(
        backend_scores(reference, domain, outside, "smote", seed=0),
        cosine_distance([30]),
    )
    again = backend_scores(reference, domain, midway, "smote", options={"per_clip": 200}, seed=0)
    np.testing.assert_array_equal(again, smote)  # seeded


def test_local_rescales_by_the_neighbourhood_of_the_nearest_clip():
    # a dense domain (clips 1 degree apart) and a sparse one (10 degrees apart)
    dense = on_circle([0, 1, 2, 3])
    sparse = on_circle([100, 110, 120, 130])
    reference = np.concatenate([dense, sparse])
    domain = np.array(["source"] * 4 + ["target"] * 4)
    queries = on_circle([-5, 95])  # 5 degrees from the nearest clip of each domain
    got = backend_scores(reference, domain, queries, "local", options={"neighbours": 1})
    # the nearest clips (0 and 100 degrees) have their own nearest neighbours 1 and 10 degrees away
    expected = cosine_distance([5, 5]) / cosine_distance([1, 10])
    np.testing.assert_allclose(got, expected, rtol=1e-9)
    assert got[0] > 10 * got[1]  # 5 degrees is far for the dense domain, near for the sparse one
    knn = backend_scores(reference, domain, queries, "knn")
    np.testing.assert_allclose(knn[0], knn[1])  # the KNN cannot tell them apart


def test_training_scores_of_fitted_backends_are_out_of_fold():
    # every training clip duplicated: scored with itself in the reference, it would score 0
    points = on_circle(np.arange(0, 100, 10))
    reference = np.concatenate([points, points])
    for backend in ("kmeans", "smote", "local"):
        options = {"folds": 2, **({"centroids": 40} if backend == "kmeans" else {})}  # the clips
        scores = training_scores(reference, None, backend, options=options)
        assert scores.shape == (20,) and np.isfinite(scores).all()
    # 2 folds dealt in turn: clip i and its copy i + 10 sit in the same fold, so no clip sees
    # itself: every score is the distance to a 10-degree neighbour at least
    kmeans = training_scores(reference, None, "kmeans", options={"folds": 2, "centroids": 40})
    assert kmeans.min() > 0.5 * cosine_distance(10)


@pytest.mark.parametrize("backend", sorted(scoring.BACKENDS))
def test_score_system_takes_every_backend(backend):
    table = clip_table()
    emb = np.random.default_rng(1).standard_normal((len(table), 6))
    scores = scoring.score_system(table, emb, scoring.make(PAPER, backend, seed=3))
    assert np.isfinite(scores["anomaly_score"]).all()
    again = scoring.score_system(table, emb, scoring.make(PAPER, backend, seed=3))
    pd.testing.assert_frame_equal(scores, again)
