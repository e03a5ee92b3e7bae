"""Recipes (issue 33, item 2): each trained system's registry entry names the class that builds
it; System 7 (LoRA BEATs on W1 audio, pseudo-attributes, ASP + SCAdaCos, RDP bands scored by
BEAM + VarMin) is one of them; a new fine-tuned system is a recipe, an entry and a section."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from asd_utils import config, data, registry, scoring, stages, systems
from asd_utils.config import schema
from asd_utils.data import synth
from asd_utils.models import lora
from asd_utils.models.heads import EmbeddingModel
from asd_utils.studies import noise_study
from asd_utils.systems import classes, recipes


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """Two machine types, one without attributes in its names (ToyCar), two-channel clips."""
    root = tmp_path_factory.mktemp("recipes") / "data"
    settings = synth.SynthConfig(
        machine_types=("ToyCar", "fan"), n_train_source=8, n_train_target=2, n_test=4,
        clip_seconds={"default": 1.0},
    )  # fmt: skip
    synth.generate_dataset(root, settings, progress=False)
    return root


def test_every_trained_system_names_its_recipe():
    kinds = {s: recipes.kind(s) for s in registry.of_kind("fine-tuned")}
    assert kinds == {
        "System 1": "OSSCL",
        "System 2": "GRL",
        "System 3": "OSSCL",
        "System 5": "Fusion",
        "System 7": "LoRA-SCAdaCos",
    }
    assert recipes.of("System 2 (lambda 0)").entry.name == "System 2"
    # the noise study declares the kinds it covers; System 7 does not join it silently
    assert noise_study.TRAINED == ("System 1", "System 3", "System 5")


def test_system7_is_a_fine_tuned_w1_entry_with_the_published_settings():
    entry = registry.get("System 7")
    assert (entry.kind, entry.reads, entry.section) == ("fine-tuned", registry.W1, "lora_beats")
    paper = config.load_profile("paper").lora_beats.plain()
    assert paper["lora"] == {
        "rank": 64, "alpha": 8.0, "dropout": 0.0, "targets": ["q_proj", "k_proj", "v_proj"]
    }  # fmt: skip
    assert (paper["classes"]["scheme"], paper["classes"]["source_clusters"]) == ("auto", 7)
    assert (paper["train"]["steps"], paper["train"]["warmup_steps"]) == (37500, 5000)
    assert (paper["train"]["batch_size"], paper["crop_seconds"]) == (8, 10.0)
    assert (paper["loss"]["sub_clusters"], paper["projection_dim"]) == (16, 256)
    assert (paper["backend"], paper["gamma"]) == ("beam_varmin", 4.0)
    assert config.load_profile("smoke").lora_beats.train.steps == 6


def test_system7_reads_w1_and_describes_itself_citing_the_recipe():
    profile = config.load_profile("smoke")
    channel, preprocess, key = systems.front_end(profile, "System 7")
    assert (channel, key) == (None, "w1")
    stereo = np.random.default_rng(0).normal(size=(2, 4000)).astype(np.float32)
    assert preprocess(stereo).shape == (4000,)
    fields, _ = recipes.of("System 7").describe("System 7", profile)
    cited = fields["machine_learning_method"]
    assert "asd03" in cited and "ASDKit" in cited and "SCAdaCos (16 sub-clusters)" in cited
    assert "kmeans clusters" in fields["attribute_usage"] and "W1" in fields["front_end"]


def test_pseudo_attributes_come_from_training_clips_only_inside_the_recipe(tree):
    profile = config.load_profile("smoke")
    clips = data.index_dataset(tree)
    recipe = recipes.of("System 7")
    made = recipe.classes(profile, clips)
    assert made.clustered == (("ToyCar", "00"),)  # fan's names carry attributes
    assert (
        any("/pseudo-s" in n for n in made.names)
        and len(made.ids) == (clips.split == "train").sum()
    )
    # every test clip changed (here: dropped, or listed in another order): the same classes
    train_only = clips[clips["split"] == "train"]
    shuffled = pd.concat([clips[clips["split"] == "test"].iloc[::-1], train_only])
    for other in (train_only, shuffled):
        again = recipe.classes(profile, other)
        assert again.names == made.names and np.array_equal(again.ids, made.ids)
    assert classes.assignment_key(again) == classes.assignment_key(made)


def test_rewritten_test_clips_leave_system7s_classes_as_they_were(tree, tmp_path):
    """Every test clip replaced by other audio (a copy of the tree): the same assignment."""
    profile = config.load_profile("smoke")
    copy = tmp_path / "data"
    shutil.copytree(tree, copy)
    rng = np.random.default_rng(1)
    for path in copy.rglob("test/*.wav"):
        data.write_wav(path, rng.normal(scale=0.3, size=(2, 16000)).astype(np.float32))
    before = recipes.of("System 7").classes(profile, data.index_dataset(tree))
    after = recipes.of("System 7").classes(profile, data.index_dataset(copy))
    assert after.clustered == before.clustered and after.names == before.names
    assert np.array_equal(after.ids, before.ids)


def test_run_folder_key_carries_system7s_classes(tree, tmp_path):
    profile = config.load_profile("smoke")
    first = systems.run_dir(tmp_path, profile, "System 7", tree)
    assert first == systems.run_dir(tmp_path, profile, "System 7", tree)
    section = profile.lora_beats
    classes_ = section.classes.model_copy(update={"seed": 7})
    changed = profile.model_copy(
        update={"lora_beats": section.model_copy(update={"classes": classes_})}
    )
    assert systems.run_dir(tmp_path, changed, "System 7", tree) != first
    # a scoring setting does not change the weights: same folder
    profile = profile.model_copy(update={"lora_beats": section.model_copy(update={"gamma": 2.0})})
    assert systems.run_dir(tmp_path, profile, "System 7", tree) == first


def test_system7_builds_a_lora_model_that_trains_only_adapters_and_heads(tree):
    profile = config.load_profile("smoke")
    model, loss, dataset = systems.build(str(tree), profile, "System 7", progress=False)
    counts = lora.parameter_counts(model.backbone)
    assert 0 < counts["trainable"] < counts["frozen"]
    assert all("lora_" in n for n, p in model.backbone.named_parameters() if p.requires_grad)
    names = systems.class_names(data.index_dataset(tree), profile, "System 7")
    assert (loss.sub_clusters, loss.num_classes) == (16, len(names[1]))
    embedder = recipes.of("System 7").embedder(model, registry.settings(profile, "System 7"))
    out = embedder.embed(torch.zeros(2, 16000))
    assert out.shape == (2, 8 * model.backbone.embed_dim)
    other = recipes.BandEmbedder(model.backbone, gamma=2.0)  # a scoring setting: its own cache
    clips = data.index_dataset(tree).head(2)
    keys = {scoring.embedding_cache_key(m, clips, None, "w1", None) for m in (embedder, other)}
    assert len(keys) == 2


# --- end to end (slow) ---------------------------------------------------------------------------


def _run(tree, output_root, profile=None, profile_file=None) -> stages.Run:
    profile = profile or config.load_profile("smoke")
    paths = config.RunPaths(tree, output_root, False)
    if profile_file is None:
        profile_file = paths.output_root / "profile.yaml"
        config.freeze_profile(profile, profile_file)
    run = stages.Run(profile, paths, profile_file)
    stages.prepare(run)
    return run


def _through(run: stages.Run, system: str):
    result = stages.train(run, system)
    embeddings = stages.embed(run, system, result)
    scores = stages.score(run, [system])[system]
    evaluation = stages.evaluate(run)
    return result, embeddings, scores, evaluation


@pytest.mark.slow
def test_system7_trains_embeds_scores_evaluates_and_packages(tree, tmp_path):
    run = _run(tree, tmp_path / "out")
    result, embeddings, scores, evaluation = _through(run, "System 7")
    assignment = pd.read_csv(result.output_dir / classes.ASSIGNMENT)
    assert len(assignment) == (run.clips["split"] == "train").sum()
    assert assignment["class"].str.contains("/pseudo-").any()
    assert embeddings.shape == (len(run.clips), 8 * result.ema_model.backbone.embed_dim)
    assert np.isfinite(scores["anomaly_score"]).all()
    assert "System 7" in evaluation.systems
    info = json.loads((run.system_dir("System 7") / "system.json").read_text())
    assert info["classes"] == assignment["class"].nunique()
    folder = stages.package(run, systems=["System 7"])
    meta = yaml.safe_load(next((folder / "task2").glob("*/*.meta.yaml")).read_text())
    described = meta["system"]["description"]
    assert "FILL IN" not in str(described) and "asd03" in described["machine_learning_method"]


class CrossEntropy(recipes.Recipe):
    """A new fine-tuned system's recipe, made inside the test: BEATs, mean tokens, a linear
    classifier under plain cross-entropy."""

    kind = "cross-entropy"

    def by_domain(self, settings):
        return True

    def loss(self, settings, model, names, train, overrides=None):
        return _CrossEntropyLoss(model.embed_dim, len(names))

    def describe(self, system, profile):
        return {"machine_learning_method": "BEATs, plain cross-entropy"}, []


class _CrossEntropyLoss(nn.Module):
    def __init__(self, dim: int, n_classes: int):
        super().__init__()
        self.classifier = nn.Linear(dim, n_classes)

    def forward(self, outputs, labels, mix=None):
        return {"loss": nn.functional.cross_entropy(self.classifier(outputs["embedding"]), labels)}


@pytest.mark.slow
def test_a_new_fine_tuned_system_is_a_recipe_an_entry_and_a_section(tree, tmp_path, monkeypatch):
    """The issue-33 extension test: no package file changes; the registry is monkeypatched, the
    schema gets the section, the profile is made in memory."""
    entry = registry.System(
        "System 9", "ce_beats", registry.NEAR, "fine-tuned", "none", False,
        "BEATs with a plain cross-entropy", recipe=CrossEntropy,
    )  # fmt: skip
    monkeypatch.setitem(registry.REGISTRY, entry.name, entry)

    profile = config.load_profile("smoke")

    class Extended(schema.Profile):
        ce_beats: schema.FineTuned

    monkeypatch.setattr(schema, "Profile", Extended)
    values = profile.plain()
    section = {k: v for k, v in values["beats_grl"].items() if k in schema.FineTuned.model_fields}
    profile = config.validate_profile({**values, "ce_beats": section}, "in memory")
    run = _run(tree, tmp_path / "out", profile)
    result, embeddings, scores, evaluation = _through(run, "System 9")
    assert isinstance(result.ema_model, EmbeddingModel) and result.steps == 6
    assert embeddings.shape == (len(run.clips), result.ema_model.embed_dim)
    assert "System 9" in evaluation.systems
    assert (result.output_dir / classes.ASSIGNMENT).is_file()
    info = json.loads((run.system_dir("System 9") / "system.json").read_text())
    assert info["description"]["machine_learning_method"] == "BEATs, plain cross-entropy"
    folder = stages.package(run, systems=["System 9"])
    assert len(list((folder / "dev").glob("*/anomaly_score_*.csv"))) == 2  # ToyCar, fan


def test_system3_reads_the_canceller_the_anc_section_names():
    from asd_utils import systems
    from asd_utils.frontends import twochannel

    profile = config.load_profile("smoke")
    channel, preprocess, key = systems.front_end(profile, "System 3")
    assert key.startswith("anc:") and channel == 0  # the paper's adaptive FBLMS
    w1 = profile.model_copy(update={"anc": profile.anc.model_copy(update={"canceller": "w1"})})
    channel, preprocess, key = systems.front_end(w1, "System 3")
    assert (channel, key) == (None, "w1")
    audio = np.random.default_rng(0).standard_normal((2, 4000)).astype(np.float32)
    np.testing.assert_array_equal(preprocess(audio), twochannel.w1(audio[0], audio[1]))
    assert systems.front_end(w1, "System 1")[2] is None  # the near channel, unchanged
    described = recipes.of("System 3").describe("System 3", w1)[0]["front_end"]
    assert "W1" in described


def test_a_class_scheme_gives_system1_pseudo_attributes_of_each_training_clip_once(tree, tmp_path):
    """Systems 1-5 take a section's ``classes`` block (issue 36): none, the name classes and the
    run folder as before; ``auto``, log-mel clusters (no weights) for ToyCar, a repeated target
    clip in its one class, the assignment in the run-folder key and the meta file."""
    profile = config.load_profile("smoke")
    recipe = recipes.of("System 1")
    clips = data.index_dataset(tree)
    train = clips[clips["split"] == "train"].reset_index(drop=True)
    plain = recipe.classes(profile, clips)
    ids, names = data.attribute_classes(train, by_domain=False)
    assert plain.names == list(names) and np.array_equal(plain.ids, ids)
    assert recipe.key(profile, plain) == {}
    folder = systems.run_dir(tmp_path, profile, "System 1", tree)

    scheme = schema.ClassSettings(scheme="auto", by_domain=False, source_clusters=3)
    profile = profile.model_copy(
        update={"osscl": profile.osscl.model_copy(update={"classes": scheme})}
    )
    made = recipe.classes(profile, clips)
    assert made.clustered == (("ToyCar", "00"),) and len(made.ids) == len(train)
    toy = [n for n in made.names if n.startswith("ToyCar/")]
    assert len([n for n in toy if "/pseudo-s" in n]) == 3 and len(toy) == 4
    assert [n for n in made.names if n.startswith("fan/")] == [
        n for n in names if n.startswith("fan/")
    ]  # fan's names carry attributes: its name classes, unchanged
    repeated = systems.repeat_target_clips(train, 3)
    again = recipe.classes(profile, repeated)
    by_path = dict(zip(made.table["path"], np.asarray(made.names)[made.ids], strict=True))
    assert list(np.asarray(again.names)[again.ids]) == [by_path[p] for p in repeated["path"]]
    assert recipe.key(profile, made) == {"classes": classes.assignment_key(made)}
    assert systems.run_dir(tmp_path, profile, "System 1", tree) != folder
    usage = recipe.describe("System 1", profile)[0]["attribute_usage"]
    assert "scheme 'auto'" in usage and "kmeans clusters" in usage
