"""The official autoencoder baseline: architecture, scores, determinism."""

import numpy as np
import pandas as pd
import pytest
import torch

from asd_utils import data
from asd_utils.data import synth
from asd_utils.frontends.features import log_mel, stack_frames
from asd_utils.models.autoencoder import (
    AETrainConfig,
    AutoEncoder,
    clip_scores,
    cpu_threads,
    fit_inverse_covariance,
    train_autoencoder,
)
from asd_utils.systems import baseline


def test_architecture_matches_the_official_baseline():
    model = AutoEncoder()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (640, 128), (128, 128), (128, 128), (128, 128), (128, 8),
        (8, 128), (128, 128), (128, 128), (128, 128), (128, 640),
    ]  # fmt: skip
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(norms) == 9 and all(n.momentum == 0.01 and n.eps == 1e-3 for n in norms)
    assert model(torch.randn(4, 640)).shape == (4, 640)


def test_training_lowers_the_loss_and_is_deterministic():
    vectors = torch.randn(600, 640) @ torch.randn(640, 640) * 0.05
    config = AETrainConfig(epochs=5, batch_size=64)
    model_a, history = train_autoencoder(vectors, config, progress=False)
    model_b, _ = train_autoencoder(vectors, config, progress=False)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_clip_scores_against_a_direct_computation():
    torch.manual_seed(0)
    model = AutoEncoder(16, hidden=8, bottleneck=2, depth=2).eval()
    vectors = torch.randn(30, 16)
    owner = torch.tensor([0] * 10 + [1] * 5 + [2] * 15)
    inv_s = fit_inverse_covariance(torch.randn(200, 16))
    inv_t = fit_inverse_covariance(torch.randn(200, 16) * 2)
    scores = clip_scores(model, vectors, owner, 3, inv_s, inv_t)
    with torch.no_grad():
        res = vectors - model(vectors)
    for clip in range(3):
        r = res[owner == clip]
        assert scores["mse"][clip] == pytest.approx(r.pow(2).mean().item(), rel=1e-5)
        u = r.mean(0).double()
        expected = min((u @ inv_s @ u).item(), (u @ inv_t @ u).item())
        assert scores["mahalanobis"][clip] == pytest.approx(expected, rel=1e-6)


def test_inverse_covariance_of_known_gaussian():
    cov = torch.diag(torch.tensor([1.0, 4.0, 0.25]))
    x = torch.randn(200_000, 3, generator=torch.Generator().manual_seed(1)) @ cov.sqrt()
    inv = fit_inverse_covariance(x)
    torch.testing.assert_close(inv, torch.linalg.inv(cov).double(), rtol=0.03, atol=0.03)


def test_frame_vectors_from_clips(tmp_path):
    root = synth.generate_dataset(
        tmp_path,
        synth.SynthConfig(("fan",), 3, 1, 1, {"default": 1.0}),
        progress=False,
    )
    clips = data.index_dataset(root)
    vectors, owner = baseline.frame_vectors(
        clips["path"].tolist(), baseline.AEFeatureConfig(), chunk=3, progress=False
    )
    frames = 1 + 16000 // 512
    assert vectors.shape == (len(clips) * (frames - 4), 640)
    assert torch.equal(torch.bincount(owner), torch.full((len(clips),), frames - 4))
    near = torch.from_numpy(data.read_audio(clips["path"].iloc[1])[0])
    expected = stack_frames(log_mel(near[None]), 5)[0]
    torch.testing.assert_close(vectors[owner == 1], expected)


def test_run_autoencoder_gives_both_variants_and_repeats_exactly(tmp_path):
    config = synth.SynthConfig(("valveEmu",), 6, 2, 2, {"default": 1.0})
    clips = data.index_dataset(synth.generate_dataset(tmp_path, config, progress=False))
    training = AETrainConfig(epochs=2)
    first = baseline.run_autoencoder(clips, training=training, progress=False)
    second = baseline.run_autoencoder(clips, training=training, progress=False)
    assert list(first.scores.columns[-2:]) == ["mse", "mahalanobis"]
    assert len(first.scores) == len(clips) and len(first.history) == 2
    assert np.isfinite(first.scores[["mse", "mahalanobis"]].to_numpy()).all()
    pd.testing.assert_frame_equal(first.scores, second.scores)
    with pytest.raises(ValueError, match="one machine type"):
        baseline.run_autoencoder(pd.concat([clips, clips.assign(machine_type="x")]))


def test_training_clips_get_out_of_fold_mahalanobis_scores():
    # 10 clips of one domain and 5 of the other, 4 vectors each; residuals drawn at random
    torch.manual_seed(0)
    owner = np.repeat(np.arange(15), 4)
    residual = torch.randn(60, 3)
    domain = np.array(["source"] * 10 + ["target"] * 5)
    from asd_utils.systems.baseline import out_of_fold_mahalanobis

    scores = out_of_fold_mahalanobis(residual, owner, np.arange(15), domain, folds=5)
    # clip 0 is in fold 0 (source) and clip 10 in fold 0 (target): neither shaped the
    # covariances its score uses
    fold0 = torch.from_numpy(np.isin(owner, [0, 5, 10]))
    inv_s = fit_inverse_covariance(residual[~fold0 & torch.from_numpy(owner < 10)])
    inv_t = fit_inverse_covariance(residual[~fold0 & torch.from_numpy(owner >= 10)])
    u = residual[owner == 0].double().mean(0)
    expected = min(float(u @ inv_s @ u), float(u @ inv_t @ u))
    assert scores[0] == pytest.approx(expected, rel=1e-9)
    # in-sample scores (covariance fitted on all clips) are smaller on average
    all_s = fit_inverse_covariance(residual[torch.from_numpy(owner < 10)])
    means = torch.stack([residual[owner == c].double().mean(0) for c in range(10)])
    in_sample = torch.einsum("nd,de,ne->n", means, all_s, means).numpy()
    assert scores[:10].mean() > in_sample.mean()


def test_clips_of_differing_lengths_in_one_machine_type_are_scored_each_whole(tmp_path):
    # 2026 machine types last 6, 10 or 16 s, and test clips may outlast training clips: the
    # baseline's frame vectors are per clip, as the official baseline's per-file features
    config = synth.SynthConfig(("fan",), 4, 2, 2, {"default": 1.0})
    root = synth.generate_dataset(tmp_path, config, progress=False)
    clips = data.index_dataset(root)
    rng = np.random.default_rng(0)
    seconds = {}
    for i, path in enumerate(clips["path"]):  # 1.0, 1.5 and 2.25 s clips, train and test
        n = int(16000 * (1.0, 1.5, 2.25)[i % 3])
        data.write_wav(path, rng.uniform(-0.1, 0.1, (2, n)))
        seconds[path] = n
    clips = data.index_dataset(root)
    assert clips["frames"].nunique() == 3
    vectors, owner = baseline.frame_vectors(clips["path"].tolist(), baseline.AEFeatureConfig(), 5)
    for i, path in enumerate(clips["path"]):
        near = torch.from_numpy(data.read_audio(path)[0])
        expected = stack_frames(log_mel(near[None]), 5)[0]
        assert len(expected) == 1 + seconds[path] // 512 - 4
        torch.testing.assert_close(vectors[owner == i], expected)
    result = baseline.run_autoencoder(clips, training=AETrainConfig(epochs=1), progress=False)
    assert np.isfinite(result.scores[["mse", "mahalanobis"]].to_numpy()).all()


# The baseline as it was before issue 24 made it fast (commit fdd6931), written out plainly: the
# training loop, residuals, covariances and out-of-fold Mahalanobis of that code. The fast code
# must give its losses and scores within float tolerance.


def _reference_train(vectors, config):
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    model = AutoEncoder(vectors.shape[1])
    order = torch.randperm(len(vectors), generator=generator)
    n_val = int(round(config.validation_split * len(vectors)))
    val, train = vectors[order[:n_val]], vectors[order[n_val:]]
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    history = []
    for _ in range(config.epochs):
        model.train()
        total = 0.0
        for batch in torch.randperm(len(train), generator=generator).split(config.batch_size):
            if len(batch) < 2:
                continue
            x = train[batch]
            loss = torch.nn.functional.mse_loss(model(x), x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        model.eval()
        with torch.no_grad():
            val_loss = torch.nn.functional.mse_loss(model(val), val).item()
        history.append((total / len(train), val_loss))
    return model.eval(), history


def _reference_inverse_covariance(residual):
    r = residual.double()
    centred = r - r.mean(0)
    return torch.linalg.pinv(centred.T @ centred / len(r), hermitian=True)


def _reference_scores(model, vectors, owner, is_train, domain, folds=5):
    """mse and selective Mahalanobis per clip; training clips' Mahalanobis out of fold."""
    with torch.no_grad():
        res = (vectors - model(vectors)).double()
    n_clips = len(is_train)
    means = torch.stack([res[owner == c].mean(0) for c in range(n_clips)])
    mse = np.array([res[owner == c].pow(2).mean().item() for c in range(n_clips)])
    vector_train = torch.tensor(is_train)[owner]
    vector_domain = domain[owner.numpy()]

    def distance(u, fit):
        return float(u @ _reference_inverse_covariance(res[fit]) @ u)

    train_clips = np.flatnonzero(is_train)
    fold = {}
    for d in ("source", "target"):
        for i, clip in enumerate(c for c in train_clips if domain[c] == d):
            fold[clip] = i % folds
    vector_fold = torch.tensor([fold.get(int(c), -1) for c in owner])
    mahalanobis = np.empty(n_clips)
    for c in range(n_clips):
        distances = []
        for d in ("source", "target"):
            fit = vector_train & torch.from_numpy(vector_domain == d)
            if is_train[c]:
                out = fit & (vector_fold != fold[c])
                fit = out if out.any() else fit
            distances.append(distance(means[c], fit))
        mahalanobis[c] = min(distances)
    return mse, mahalanobis


@pytest.mark.parametrize("threads", [None, 1])
def test_training_losses_equal_the_reference_loop(threads):
    # on the same threads; the reference itself drifts by ~5e-4 here between 1 and 2 threads
    vectors = torch.randn(3000, 640, generator=torch.Generator().manual_seed(5)) * 4 - 30
    config = AETrainConfig(epochs=3, threads=threads)
    _, history = train_autoencoder(vectors, config, progress=False)
    with cpu_threads(threads):
        _, expected = _reference_train(vectors, config)
    got = [(h["train_loss"], h["val_loss"]) for h in history]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_run_autoencoder_scores_equal_the_reference(tmp_path):
    config = synth.SynthConfig(("fan",), 12, 3, 4, {"default": 2.0})  # the smoke profile's sizes
    clips = data.index_dataset(synth.generate_dataset(tmp_path, config, progress=False))
    training = AETrainConfig(epochs=3)
    baseline.seed_everything(training.seed)
    result = baseline.run_autoencoder(clips, training=training, progress=False)
    vectors, owner = baseline.frame_vectors(
        clips["path"].tolist(), baseline.AEFeatureConfig(), progress=False
    )
    is_train = (clips["split"] == "train").to_numpy()
    with cpu_threads(training.threads):
        model, history = _reference_train(vectors[torch.tensor(is_train)[owner]], training)
    np.testing.assert_allclose(
        result.history[["train_loss", "val_loss"]].to_numpy(), history, rtol=1e-4
    )
    mse, mahalanobis = _reference_scores(
        model, vectors, owner, is_train, clips["domain"].to_numpy()
    )
    np.testing.assert_allclose(result.scores["mse"], mse, rtol=1e-4)
    np.testing.assert_allclose(result.scores["mahalanobis"], mahalanobis, rtol=1e-4)


def test_the_autoencoder_goes_to_cuda_when_there_is_one(monkeypatch):
    from asd_utils.models import autoencoder as ae

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert ae.resolve_device() == torch.device("cuda")
    assert ae.resolve_device("cpu") == torch.device("cpu")  # a given device wins
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert ae.resolve_device() == torch.device("cpu")


def test_the_chosen_device_is_passed_through_training_and_scoring(monkeypatch):
    # no GPU here: the device that resolve_device picks is recorded, and everything must end on
    # it (a CPU stands in for it); residuals come back beside the vectors
    from asd_utils.models import autoencoder as ae

    asked = []

    def resolve(device=None):
        asked.append(device)
        return torch.device("cpu")

    monkeypatch.setattr(ae, "resolve_device", resolve)
    moved = []
    original_to = torch.Tensor.to
    monkeypatch.setattr(
        torch.Tensor, "to", lambda self, *a, **k: moved.append(a[:1]) or original_to(self, *a, **k)
    )
    vectors = torch.randn(200, 16, generator=torch.Generator().manual_seed(0))
    model, _ = train_autoencoder(vectors, AETrainConfig(epochs=1, device="x"), progress=False)
    assert asked == ["x"]
    assert {p.device for p in model.parameters()} == {torch.device("cpu")}
    assert (torch.device("cpu"),) in moved  # the vectors and rows were sent to the device
    owner = torch.arange(200) // 20
    is_train, domain = np.arange(10) < 6, np.array(["source"] * 4 + ["target"] * 6)
    scores = baseline.score_clips(model, vectors, owner, is_train, domain, folds=2)
    assert np.isfinite(scores["mahalanobis"]).all() and scores["mse"].shape == (10,)
    assert baseline.residuals(model, vectors).device == vectors.device


def test_one_copy_of_the_vectors_gives_the_very_same_scores(tmp_path):
    # run_autoencoder trains on row indices and overwrites the vectors with their residuals
    # (issue 24: the memory of the real data's size); the scores and losses are those of the
    # copying path, exactly: a copy of the training vectors, residuals into a new tensor
    config = synth.SynthConfig(("fan",), 12, 3, 4, {"default": 2.0})  # the smoke profile's sizes
    clips = data.index_dataset(synth.generate_dataset(tmp_path, config, progress=False))
    training = AETrainConfig(epochs=2)
    result = baseline.run_autoencoder(clips, training=training, progress=False)
    vectors, owner = baseline.frame_vectors(
        clips["path"].tolist(), baseline.AEFeatureConfig(), progress=False
    )
    is_train = (clips["split"] == "train").to_numpy()
    model, history = train_autoencoder(
        vectors[torch.tensor(is_train)[owner]].clone(), training, progress=False
    )
    scores = baseline.score_clips(model, vectors, owner, is_train, clips["domain"].to_numpy())
    got = result.history[["train_loss", "val_loss"]].to_numpy()
    np.testing.assert_array_equal(got, [[h["train_loss"], h["val_loss"]] for h in history])
    np.testing.assert_array_equal(result.scores["mse"], scores["mse"])
    np.testing.assert_array_equal(result.scores["mahalanobis"], scores["mahalanobis"])


def test_frame_vectors_refuse_a_header_that_disagrees_with_the_samples(tmp_path, monkeypatch):
    root = synth.generate_dataset(
        tmp_path, synth.SynthConfig(("fan",), 2, 1, 1, {"default": 1.0}), progress=False
    )
    paths = data.index_dataset(root)["path"].tolist()
    monkeypatch.setattr(baseline, "_vector_count", lambda samples, config: 3)
    with pytest.raises(ValueError, match="expected from its header"):
        baseline.frame_vectors(paths, baseline.AEFeatureConfig(), progress=False)
