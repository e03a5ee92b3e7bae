"""System 6 (frozen BEATs on W1 audio, RDP band tokens, BEAM + VarMin) as a plug-in: the back
ends of the table it uses, Z-MIN over them, and the system made by the training-free stage."""

import json

import numpy as np
import pytest
import torch

from asd_utils import config, data, registry, scoring, stages
from asd_utils.data import synth
from asd_utils.frontends import twochannel
from asd_utils.scoring import backends, fusion
from asd_utils.scoring.beam import Beam
from asd_utils.systems import training_free

SECTION = config.load_profile("smoke").backends


def _bands(n, seed):
    return np.random.default_rng(seed).normal(size=(n, 4, 6)).astype(np.float32)


def test_beam_backends_are_the_upstream_scorer_with_the_profiles_options():
    reference, queries = _bands(30, 0), _bands(7, 1)
    made = backends.make(SECTION, "beam_varmin").fit(reference, None)
    expected = Beam(varmin=True, k=SECTION.model_extra["beam_varmin"]["neighbours"]).fit(reference)
    np.testing.assert_allclose(made.score(queries), expected.score(queries), rtol=1e-6)
    np.testing.assert_allclose(made.training_scores(), expected.training_scores(), rtol=1e-6)
    plain = backends.make(SECTION, "beam").fit(reference, None)
    np.testing.assert_allclose(
        plain.score(queries), Beam(varmin=False).fit(reference).score(queries)
    )


def test_zmin_combines_its_members_by_their_training_scores_and_no_test_label():
    reference, queries = _bands(40, 2), _bands(9, 3)
    domains = np.array(["source"] * 36 + ["target"] * 4)
    zmin = backends.make(SECTION, "zmin").fit(reference, domains)
    assert [m.name for m in zmin.members] == SECTION.model_extra["zmin"]["members"]
    knn = backends.make(SECTION, "knn").fit(reference.reshape(40, -1), domains)
    beam = backends.make(SECTION, "beam_varmin").fit(reference, domains)
    expected = fusion.combine(
        {"knn": knn.score(queries.reshape(9, -1)), "beam_varmin": beam.score(queries)},
        {"knn": knn.training_scores(), "beam_varmin": beam.training_scores()},
        "min",
    )[0]
    np.testing.assert_allclose(zmin.score(queries), expected)
    alone = [zmin.score(queries[i : i + 1])[0] for i in range(len(queries))]
    np.testing.assert_allclose(alone, zmin.score(queries))  # one clip never moves another
    with pytest.raises(config.ProfileError, match="cannot be a member"):
        backends.make(
            SECTION.model_copy(update={"zmin": {"members": ["zmin"], "rule": "min"}}), "zmin"
        )


def test_system6_is_registered_as_a_training_free_w1_system_that_needs_the_far_microphone():
    entry = registry.get("System 6")
    assert (entry.kind, entry.reads, entry.section) == ("training-free", registry.W1, "w1_beats")
    assert entry.needs_far and not registry.get("System 0").needs_far
    section = config.load_profile("paper").w1_beats
    assert (section.backbone, section.pooling, section.gamma) == ("beats", "time_rdp", 4.0)
    assert (section.view, section.backend) == ("w1", "beam_varmin")


@pytest.mark.slow
def test_the_training_free_stage_makes_system6_from_w1_rdp_bands_and_beam_varmin(tmp_path):
    settings = synth.SynthConfig(
        machine_types=("fan",), n_train_source=6, n_train_target=2, n_test=4,
        clip_seconds={"default": 1.0},
    )  # fmt: skip
    synth.generate_dataset(tmp_path / "data", settings, progress=False)
    profile = config.load_profile("smoke")
    paths = config.RunPaths(tmp_path / "data", tmp_path / "out", False)
    run = stages.Run(profile, paths, paths.output_root / "profile.yaml")
    stages.prepare(run)
    outcome = stages.training_free(run)
    six = outcome.others["System 6"]
    assert six.bands == 8 and list(six.embeddings) == ["w1"]
    info = json.loads((run.system_dir("System 6") / "system.json").read_text())
    assert (info["view"], info["backend"]) == ("w1", "beam_varmin")
    # the same chain, composed by hand: W1 audio, the encoder's RDP(4) bands, BEAM + VarMin
    encoder, _ = training_free.build_encoder(run.profile, system="System 6")
    clips = run.clips
    vectors = []
    for path_ in clips["path"]:
        audio = data.read_audio(path_)
        w1 = torch.from_numpy(twochannel.w1(audio[0], audio[1]))
        vectors.append(encoder.embed(w1[None])[0, -1].numpy())
    expected = scoring.score_system(
        clips, np.stack(vectors), backends.make(SECTION, "beam_varmin"), 8
    )
    written = stages.read_scores(run, "System 6")
    np.testing.assert_allclose(written["anomaly_score"], expected["anomaly_score"], atol=1e-4)
