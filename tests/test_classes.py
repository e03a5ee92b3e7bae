"""Classes for every machine type: names, pseudo-attributes (clusters of training clips), auto."""

import numpy as np
import pandas as pd
import pytest

from asd_utils import data
from asd_utils.systems import classes
from asd_utils.systems.classes import ClassSettings, make_classes


def clip_table(seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Two machine types: ``fan`` with attributes in its names, ``ToyCar`` without; training and
    test clips of both domains, and 4-d features with 3 well-separated source blobs for ToyCar."""
    rng = np.random.default_rng(seed)
    rows = []
    for machine, attributes in (("fan", ("m-n_W", "m-n_X")), ("ToyCar", ("",))):
        for split, n_source, n_target in (("train", 30, 4), ("test", 6, 6)):
            for domain, n in (("source", n_source), ("target", n_target)):
                for i in range(n):
                    rows.append(
                        {
                            "dataset": "dev",
                            "machine_type": machine,
                            "section": "00",
                            "domain": domain,
                            "split": split,
                            "attributes": attributes[i % len(attributes)],
                            "file_name": f"{machine}_{split}_{domain}_{i:04d}.wav",
                        }
                    )
    table = pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    centres = np.array([[5, 0, 0, 0], [0, 5, 0, 0], [0, 0, 5, 0]], float)
    features = rng.normal(size=(len(table), 4)) * 0.3 + centres[np.arange(len(table)) % 3]
    return table, features


def test_name_scheme_is_todays_classes():
    table, _ = clip_table()
    for by_domain in (False, True):
        got = make_classes(table, None, ClassSettings(scheme="names", by_domain=by_domain))
        train = table[table["split"] == "train"].reset_index(drop=True)
        ids, names = data.attribute_classes(train, by_domain=by_domain)
        assert got.names == names
        np.testing.assert_array_equal(got.ids, ids)
        assert got.clustered == ()


def test_auto_clusters_only_the_machine_types_without_attributes():
    table, features = clip_table()
    got = make_classes(table, features, ClassSettings(scheme="auto", source_clusters=3), seed=1)
    assert got.clustered == (("ToyCar", "00"),)
    toycar = [n for n in got.names if n.startswith("ToyCar/")]
    fan = [n for n in got.names if n.startswith("fan/")]
    assert toycar == sorted(
        ["ToyCar/00/pseudo-s0/source", "ToyCar/00/pseudo-s1/source", "ToyCar/00/pseudo-s2/source"]
        + ["ToyCar/00/pseudo-t0/target"]
    )
    assert fan == data.attribute_classes(table[table["machine_type"] == "fan"], True)[1]
    # the three blobs are found: every ToyCar source cluster is one blob
    train = (table["split"] == "train").to_numpy()
    blob = (np.arange(len(table)) % 3)[train]
    rows = (got.table["machine_type"] == "ToyCar") & (got.table["domain"] == "source")
    pairs = set(zip(got.ids[rows.to_numpy()], blob[rows.to_numpy()], strict=True))
    assert len(pairs) == 3
    pseudo = make_classes(table, features, ClassSettings(scheme="pseudo", source_clusters=3))
    assert set(pseudo.clustered) == {("ToyCar", "00"), ("fan", "00")}
    assert all("/pseudo-" in n for n in pseudo.names)


@pytest.mark.parametrize("method", ["kmeans", "ward"])
def test_test_clips_never_change_the_classes(method):
    table, features = clip_table()
    settings = ClassSettings(scheme="pseudo", method=method, source_clusters=5)
    before = make_classes(table, features, settings, seed=3)
    changed = features.copy()
    test = (table["split"] == "test").to_numpy()
    changed[test] = np.random.default_rng(9).normal(size=(int(test.sum()), 4)) * 100
    after = make_classes(table, changed, settings, seed=3)
    assert after.names == before.names
    np.testing.assert_array_equal(after.ids, before.ids)
    # and features given for the training rows only give the same classes
    only = make_classes(table, features[~test], settings, seed=3)
    np.testing.assert_array_equal(only.ids, before.ids)


def test_same_seed_same_assignment_and_the_file(tmp_path):
    table, features = clip_table()
    noisy = features + np.random.default_rng(5).normal(size=features.shape) * 3.0  # no blobs
    settings = ClassSettings(scheme="pseudo", source_clusters=7, n_init=1)
    first = make_classes(table, noisy, settings, seed=42)
    again = make_classes(table, noisy, settings, seed=42)
    np.testing.assert_array_equal(first.ids, again.ids)
    assert classes.assignment_key(first) == classes.assignment_key(again)
    path = classes.write_assignment(first, tmp_path)
    written = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert list(written.columns) == classes.ASSIGNMENT_COLUMNS
    assert len(written) == int((table["split"] == "train").sum())
    assert list(written["class"]) == [first.names[i] for i in first.ids]
    assert not list(tmp_path.glob("*.part"))


def test_cluster_numbers_follow_first_appearance_and_cap_at_the_clip_count():
    features = np.array([[9.0], [0.0], [9.1], [0.1], [4.0]])
    labels = classes.cluster(features, 3, "ward", seed=0)
    np.testing.assert_array_equal(labels, [0, 1, 0, 1, 2])
    assert classes.cluster(features[:2], 7, "kmeans", seed=0).tolist() == [0, 1]
    with pytest.raises(ValueError, match="unknown clustering"):
        classes.cluster(features, 2, "dbscan", seed=0)


def test_pseudo_attributes_need_features():
    table, features = clip_table()
    with pytest.raises(ValueError, match="need features"):
        make_classes(table, None, ClassSettings(scheme="auto"))
    with pytest.raises(ValueError, match="features have 3 rows"):
        make_classes(table, features[:3], ClassSettings(scheme="auto"))


def test_logmel_features_are_the_floor_statistics_of_the_training_clips(tmp_path):
    from test_training_free import stereo_tree

    table = stereo_tree(tmp_path / "data")
    features = classes.logmel_features(table, progress=False)
    train = table[table["split"] == "train"].reset_index(drop=True)
    assert features.shape == (len(train), 256) and features.dtype == np.float32
    for machine_type in pd.unique(train["machine_type"]):
        rows = (train["machine_type"] == machine_type).to_numpy()
        np.testing.assert_allclose(features[rows].mean(0), 0, atol=1e-4)
    got = make_classes(table, features, ClassSettings(scheme="pseudo", source_clusters=2))
    assert len(got.ids) == len(train)


def test_frozen_features_embed_the_training_clips_frequency_preserved(tmp_path):
    import torch
    from test_training_free import stereo_tree

    from asd_utils.models.beats import BEATs, BEATsConfig
    from asd_utils.models.frozen import FrozenEncoder

    table = stereo_tree(tmp_path / "data")
    torch.manual_seed(0)
    backbone = BEATs(BEATsConfig.tiny())
    encoder = FrozenEncoder(backbone, [-1], "time_mean")
    features = classes.frozen_features(encoder, table, progress=False)
    train = table[table["split"] == "train"].reset_index(drop=True)
    assert features.shape == (len(train), 8 * backbone.embed_dim)
    with torch.no_grad():
        first = encoder.embed(torch.from_numpy(data.read_audio(train["path"][0])[:1]))
    np.testing.assert_allclose(features[0], first[0, -1].numpy(), rtol=1e-5, atol=1e-5)
    got = make_classes(table, features, ClassSettings(scheme="auto", source_clusters=2))
    assert {g for g, _ in got.clustered} == {"fan", "ToyCar"}  # no attributes in these names
