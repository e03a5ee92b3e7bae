"""BEAM and BEAM + VarMin (asd_utils.scoring.beam) against the upstream code's outputs
(tests/fixtures/bands/), chunking, leave-one-out training scores; Z-MIN
(asd_utils.scoring.fusion)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from asd_utils.frontends import twochannel
from asd_utils.models.beats import BEATs, BEATsConfig
from asd_utils.models.frozen import FrozenEncoder
from asd_utils.scoring import beam, fusion

FIXTURE = Path(__file__).parent / "fixtures" / "bands" / "reference.npz"


@pytest.fixture(scope="module")
def reference():
    with np.load(FIXTURE) as f:
        return dict(f)


@pytest.mark.parametrize("name, varmin", [("beam", False), ("beam_varmin", True)])
def test_matches_upstream(reference, name, varmin):
    domains = np.array(["source"] * 50 + ["target"] * 10)
    backend = beam.Beam(varmin=varmin, k=4, chunk_size=7).fit(reference["reference"], domains)
    np.testing.assert_allclose(backend.density.T, reference[f"{name}_density"], atol=1e-6)
    np.testing.assert_allclose(backend.alpha, reference[f"{name}_alpha"], atol=1e-5)
    scores = backend.score(reference["queries"])
    assert scores.shape == (15,) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, reference[f"{name}_scores"], rtol=0, atol=1e-5)
    training = backend.training_scores()
    np.testing.assert_allclose(training, reference[f"{name}_training"], rtol=0, atol=1e-5)


def test_varmin_fits_a_nonzero_alpha_and_lowers_sparse_references(reference):
    backend = beam.Beam(varmin=True).fit(reference["reference"])
    assert (backend.alpha > 0.1).all()
    plain = beam.Beam(varmin=False).fit(reference["reference"])
    assert (backend.score(reference["queries"]) < plain.score(reference["queries"])).all()


def test_scores_do_not_depend_on_the_chunk_size(reference):
    scores = [
        beam.Beam(chunk_size=size).fit(reference["reference"]).score(reference["queries"])
        for size in (1, 4, 1000)
    ]
    np.testing.assert_allclose(scores[0], scores[1], atol=1e-6)
    np.testing.assert_allclose(scores[0], scores[2], atol=1e-6)


def test_beam_is_the_band_mean_of_the_nearest_distances():
    rng = np.random.default_rng(4)
    centre = rng.standard_normal((1, 3, 5))
    ref = centre + 0.2 * rng.standard_normal((12, 3, 5))
    queries = centre + 0.5 * rng.standard_normal((6, 3, 5))
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    distance = 0.5 * (1 - np.einsum("qfd,rfd->qrf", unit(queries), unit(ref)))
    backend = beam.Beam(varmin=False).fit(ref)
    np.testing.assert_allclose(backend.band_scores(queries), distance.min(1), atol=1e-6)
    # a clip whose one band is turned around is far in that band only
    odd = ref[:1] + 0.01
    odd[0, 1] = -centre[0, 1]
    assert backend.band_scores(odd)[0, 1] > 0.5 > 0.01 > backend.band_scores(odd)[0, [0, 2]].max()
    # leave-one-out: a duplicate of a reference scores 0 against the memory, not as itself
    assert backend.score(ref[:1])[0] == pytest.approx(0, abs=1e-6)
    own = 0.5 * (1 - np.einsum("qfd,rfd->qrf", unit(ref), unit(ref)))
    own[np.arange(12), np.arange(12)] = np.inf
    np.testing.assert_allclose(backend.training_scores(), own.min(1).mean(1), atol=1e-6)
    assert backend.training_scores()[0] > 1e-3


def test_bad_inputs_are_errors(reference):
    with pytest.raises(RuntimeError, match="fit"):
        beam.Beam().score(reference["queries"])
    backend = beam.Beam().fit(reference["reference"])
    with pytest.raises(ValueError, match="bands"):
        backend.score(reference["queries"][:, :3])
    with pytest.raises(ValueError, match="domains"):
        beam.Beam().fit(reference["reference"], ["source"] * 3)
    with pytest.raises(ValueError, match="finite"):
        beam.Beam().fit(np.full((4, 2, 3), np.nan))
    one_band = np.ones((3, 1, 4), np.float32)
    beam.Beam().fit(one_band).score(one_band)
    assert (one_band == 1).all()  # the caller's arrays are never normalised in place


# --- Z-MIN --------------------------------------------------------------------------------------


def test_z_normalisation_uses_the_training_scores_only():
    training = {"a": np.array([1.0, 2.0, 3.0]), "b": np.array([10.0, 30.0, 20.0])}
    test = {"a": np.array([2.0, 5.0]), "b": np.array([40.0, 20.0])}
    sd_a, sd_b = np.std([1, 2, 3]), np.std([10, 20, 30])
    z = {"a": (test["a"] - 2) / sd_a, "b": (test["b"] - 20) / sd_b}
    out, train_out = fusion.combine(test, training, "min")
    np.testing.assert_allclose(out, np.minimum(z["a"], z["b"]))
    np.testing.assert_allclose(
        train_out, np.minimum((training["a"] - 2) / sd_a, (training["b"] - 20) / sd_b)
    )
    np.testing.assert_allclose(fusion.combine(test, training, "mean")[0], (z["a"] + z["b"]) / 2)
    np.testing.assert_allclose(fusion.combine(test, training, "max")[0], np.maximum(z["a"], z["b"]))
    # one test clip's score never moves another's: no test statistics are used
    moved = {"a": np.array([2.0, 500.0]), "b": test["b"]}
    assert fusion.combine(moved, training)[0][0] == out[0]


def test_z_min_fits_and_scores_its_members(reference):
    members = {"beam": beam.Beam(varmin=False), "varmin": beam.Beam(varmin=True)}
    combined = fusion.ZCombination(members, "min").fit(reference["reference"])
    expected = fusion.combine(
        {n: m.score(reference["queries"]) for n, m in members.items()},
        {n: m.training_scores() for n, m in members.items()},
    )
    np.testing.assert_allclose(combined.score(reference["queries"]), expected[0])
    np.testing.assert_allclose(combined.training_scores(), expected[1])
    assert combined.takes == "bands"
    with pytest.raises(ValueError, match="rule"):
        fusion.ZCombination(members, "median")
    with pytest.raises(ValueError, match="same back ends"):
        fusion.combine({"a": np.ones(2)}, {"b": np.ones(3)})


def test_system_6s_chain_composes():
    """W1 audio → a frozen (tiny, random) BEATs, RDP(4) per band → BEAM + VarMin(4): the parts of
    the training-free 2026 state of the art fit together; a clip with a tone the normal clips
    lack scores above them."""
    torch.manual_seed(0)
    encoder = FrozenEncoder(BEATs(BEATsConfig.tiny()), [-1], "time_rdp", gamma=4.0)
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    far = 0.1 * rng.standard_normal((9, 16000))
    near = 0.2 * np.sin(2 * np.pi * 500 * t) + np.roll(far, 3, axis=1)
    near[-1] += 0.2 * np.sin(2 * np.pi * 3100 * t)  # the anomaly, near mic only
    audio = torch.from_numpy(twochannel.w1(near, far))
    bands = encoder.embed(audio).reshape(len(audio), 8, -1).numpy()
    backend = beam.Beam(varmin=True, k=4).fit(bands[:8])
    assert backend.score(bands[-1:])[0] > backend.training_scores().max()
