"""Systems 1–3 as profile sections plus models; the gradient reversal layer of System 2."""

import math
import os

import pandas as pd
import pytest
import torch
import yaml

from asd_utils import config, data, registry, stages, systems, training
from asd_utils.frontends import views
from asd_utils.models.heads import grl_lambda, reverse_gradient
from asd_utils.models.losses import GRLLoss


def test_gradient_reversal_is_identity_forward_and_minus_lambda_backward():
    x = torch.randn(5, 3, requires_grad=True)
    incoming = torch.randn(5, 3)
    y = reverse_gradient(x, 0.37)
    torch.testing.assert_close(y, x)
    y.backward(incoming)
    torch.testing.assert_close(x.grad, -0.37 * incoming, rtol=0, atol=0)


def test_lambda_schedule_values():
    assert grl_lambda(0.0) == 0.0
    assert grl_lambda(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert grl_lambda(1.0, lambda_max=0.5) == pytest.approx(0.5 * (2 / (1 + math.exp(-10)) - 1))
    assert grl_lambda(2.0) == grl_lambda(1.0)  # progress is clipped to [0, 1]


def test_grl_loss_reverses_only_the_domain_gradient_and_counts_progress():
    torch.manual_seed(0)
    loss = GRLLoss(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1]), 8, total_calls=10)
    embedding = torch.randn(6, 8, requires_grad=True)
    targets = torch.tensor([0, 1, 2, 3, 0, 2])
    out = loss({"embedding": embedding}, targets)
    assert out["grl_lambda"].item() == 0.0 and loss.calls.item() == 1
    for _ in range(4):
        loss({"embedding": embedding}, targets)
    assert loss.current_lambda() == pytest.approx(grl_lambda(0.5))
    # The total gradient = the margin loss's gradient − λ × the domain loss's own gradient.
    head = GRLLoss(torch.tensor([0, 0]), torch.tensor([0, 1]), 8, total_calls=1).eval()
    head.calls.fill_(1)  # progress 1; eval mode: no counting
    e = torch.randn(4, 8, requires_grad=True)
    t = torch.tensor([0, 1, 0, 1])
    (g_total,) = torch.autograd.grad(head({"embedding": e}, t)["loss"], e)
    (g_margin,) = torch.autograd.grad(head.margin(e, torch.zeros(4, dtype=torch.long)), e)
    ce = torch.nn.functional.cross_entropy(head.domain_head(e), t)
    (g_domain,) = torch.autograd.grad(ce, e)
    assert head.current_lambda() > 0.99
    torch.testing.assert_close(
        g_total - g_margin, -head.current_lambda() * g_domain, rtol=1e-4, atol=1e-6
    )


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("systems")
    profile = config.load_profile("smoke")
    profile["data"]["synthetic_root"] = str(tmp / "data")
    profile["synth"].update(n_train_source=6, n_train_target=2, n_test=1)
    for section in dict.fromkeys(registry.get(s).section for s in registry.of_kind("fine-tuned")):
        profile[section]["train"].update(steps=4, checkpoint_every=2, warmup_steps=1)
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(profile))
    paths = config.resolve_paths(profile)
    data.prepare_data(profile, paths, progress=False)
    return str(path), profile, paths, tmp


@pytest.mark.parametrize("system", registry.of_kind("fine-tuned"))
def test_every_system_builds_from_primitives(tiny_setup, system):
    profile_path, profile, paths, _ = tiny_setup
    model, loss, dataset = systems.build(str(paths.data_root), profile_path, system, progress=False)
    waveform, target, _ = dataset[(0, 1)]
    crop = int(profile[registry.get(system).section]["crop_seconds"] * 16000)
    channels = (
        (2,) if registry.get(system).reads == registry.NEAR_FAR else ()
    )  # System 5: near and far
    assert waveform.shape == (*channels, crop)
    batch = torch.stack([waveform, waveform])
    out = loss(model(batch, augment=None), torch.stack([target, target]))
    assert torch.isfinite(out["loss"])
    n_classes = len(data.attribute_classes(data.index_dataset(paths.data_root, split="train"))[1])
    if system == "System 2":
        assert int(loss.class_to_label.max()) + 1 == n_classes
        assert set(loss.class_to_domain.tolist()) == {0, 1}


def test_system_3_reads_the_denoised_near_channel(tiny_setup):
    _, profile, paths, _ = tiny_setup
    channel, preprocess, key = systems.front_end(profile, "System 3")
    path = data.index_dataset(paths.data_root, split="train")["path"].iloc[0]
    near = data.read_audio(path)[0]
    denoised = views.load_waveform(path, channel, preprocess)
    assert denoised.shape == near.shape and not torch.allclose(
        torch.from_numpy(denoised), torch.from_numpy(near)
    )
    assert key.startswith("anc:") and systems.front_end(profile, "System 1")[1] is None


def test_run_folder_changes_with_any_weight_setting(tiny_setup):
    _, profile, paths, tmp = tiny_setup
    first = systems.run_dir(tmp, profile, "System 1", paths.data_root)
    assert first == systems.run_dir(tmp, profile, "System 1", paths.data_root)
    changed = {
        **profile,
        "osscl": {**profile["osscl"], "loss": {**profile["osscl"]["loss"], "margin": 0.3}},
    }
    assert systems.run_dir(tmp, changed, "System 1", paths.data_root) != first
    assert systems.run_dir(tmp, profile, "System 3", paths.data_root) != first
    # The same folder holding other clips (a dataset made again, a clip replaced) trains anew.
    clip = data.index_dataset(paths.data_root, split="train")["path"].iloc[0]
    stat = os.stat(clip)
    try:
        os.utime(clip, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        assert systems.run_dir(tmp, profile, "System 1", paths.data_root) != first
    finally:
        os.utime(clip, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_beats_grl_trains_checkpoints_and_resumes(tiny_setup):
    profile_path, _, paths, tmp = tiny_setup
    out = tmp / "out"
    first = systems.train_system(paths.data_root, profile_path, "System 2", out, progress=False)
    assert first.steps == 4 and {"domain_accuracy", "grl_lambda"} <= set(first.history.columns)
    assert first.history["grl_lambda"].is_monotonic_increasing
    assert training.latest_checkpoint(first.output_dir) is not None
    again = systems.train_system(paths.data_root, profile_path, "System 2", out, progress=False)
    for a, b in zip(
        first.ema_model.state_dict().values(), again.ema_model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    ablation = systems.train_system(
        paths.data_root,
        profile_path,
        "System 2",
        out,
        progress=False,
        overrides={"lambda_max": 0.0},
    )
    assert ablation.output_dir != first.output_dir
    assert (ablation.history["grl_lambda"] == 0).all()


def test_knn_k_follows_the_system_section(tiny_setup):
    _, profile, _, _ = tiny_setup
    assert stages.knn_k(profile, "System 2 (lambda 0)") == profile["beats_grl"]["knn_k"]
    with pytest.raises(KeyError, match="unknown system"):
        stages.knn_k(profile, "System 9")


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(Exception, match="missing_eat"):
        systems.build_backbone("eat", "tiny", str(tmp_path / "missing_eat"))


def test_target_clips_are_repeated_and_nothing_else_changes():
    table = pd.DataFrame({"file_name": list("abcde"), "domain": ["source"] * 3 + ["target"] * 2})
    assert systems.repeat_target_clips(table, 1) is table
    repeated = systems.repeat_target_clips(table, 3)
    assert list(repeated["file_name"]) == list("abcde") + list("de") * 2
    assert repeated["domain"].value_counts().to_dict() == {"target": 6, "source": 3}
    with pytest.raises(ValueError, match="target_repeats"):
        systems.repeat_target_clips(table, 0)


def test_grl_loss_under_mixup_weighs_both_partners_and_counts_once():
    torch.manual_seed(0)
    head = GRLLoss(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]), 8, total_calls=10)
    outputs = {"embedding": torch.randn(4, 8)}
    a, b = torch.tensor([0, 1, 2, 0]), torch.tensor([2, 0, 1, 1])
    head.eval()
    expected = 0.3 * head(outputs, a)["loss"] + 0.7 * head(outputs, b)["loss"]
    head.train()
    mixed = head(outputs, a, mix=(b, 0.3))
    torch.testing.assert_close(mixed["loss"], expected)
    assert head.calls.item() == 1


def _clips(channels, machine_types=("ToyCar", "fan")) -> pd.DataFrame:
    rows = []
    for m in machine_types:
        for domain, attributes in (("source", "spd_1"), ("source", "spd_2"), ("target", "spd_3")):
            rows.append(
                {
                    "machine_type": m,
                    "section": "00",
                    "domain": domain,
                    "attributes": "" if m == "ToyCar" else attributes,
                    "channels": channels,
                    "path": f"/data/{m}/{domain}_{attributes}.wav",
                }
            )
    return pd.DataFrame(rows)


def test_systems_3_and_5_are_unavailable_on_mono_clips_and_say_why():
    assert systems.unavailable(_clips(2)) == {}
    reasons = systems.unavailable(_clips(1))
    assert list(reasons) == ["System 3", "System 5", "System 6", "System 7"]
    for system in reasons:
        assert "far microphone" in reasons[system] and "6 of 6 clips are mono" in reasons[system]
    assert systems.skip_notice(reasons).startswith("System 3 is skipped: its ANC front-end")
    assert "System 5 is skipped: its encoder fuses the far microphone" in systems.skip_notice(
        reasons
    )


@pytest.mark.parametrize("by_domain, expected", [(False, 1 + 3), (True, 2 + 3)])
def test_classes_come_from_the_names_and_the_profile(by_domain, expected):
    profile = config.load_profile("smoke")
    profile["osscl"]["classes_by_domain"] = by_domain
    # ToyCar carries no attribute: one class (two with the domain); fan: one per attribute value
    assert len(systems.class_names(_clips(2), profile, "System 1")[1]) == expected
    # System 2's domain head always needs the domain in its classes
    assert len(systems.class_names(_clips(2), profile, "System 2")[1]) == 2 + 3


def test_the_paper_profile_counts_domain_classes():
    assert config.load_profile("paper")["osscl"]["classes_by_domain"] is True
