"""The OSSCL objective: margin and temperature semantics against hand computation."""

import math

import pytest
import torch
from pytorch_metric_learning import losses
from torch import nn

from asd_utils.models.losses import OSSCLLoss


def unit(angle: float) -> list[float]:
    return [math.cos(angle), math.sin(angle)]


def cross_entropy(logits: list[float], label: int) -> float:
    return math.log(sum(math.exp(v) for v in logits)) - logits[label]


def test_margin_is_radians_as_in_a_hand_computed_arcface_logit():
    scale, margin = 10.0, 0.2
    loss = OSSCLLoss(2, 2, margin=margin, scale=scale, sub_centers=1)
    assert loss.arcface.margin == pytest.approx(margin)  # PML keeps radians after init
    with torch.no_grad():  # centres at 0 and π/2 (norms do not matter: cosines)
        loss.class_weights.copy_(torch.tensor([[3.0, 0.0], [0.0, 2.0]]))
    embedding = 2 * torch.tensor([unit(0.5)])
    expected = cross_entropy([scale * math.cos(0.5 + margin), scale * math.sin(0.5)], 0)
    assert loss.arcface(embedding, torch.tensor([0])).item() == pytest.approx(expected, rel=1e-5)
    # label 1: θ = π/2 − 0.5 to its centre gets the margin, class 0 keeps cos 0.5
    expected = cross_entropy(
        [scale * math.cos(0.5), scale * math.cos(math.pi / 2 - 0.5 + margin)], 1
    )
    assert loss.arcface(embedding, torch.tensor([1])).item() == pytest.approx(expected, rel=1e-5)


def test_sub_centers_take_the_nearest_centre_of_each_class():
    scale, margin = 8.0, 0.2
    loss = OSSCLLoss(2, 2, margin=margin, scale=scale, sub_centers=2)
    assert loss.class_weights.shape == (2, 4)  # columns: class 0 (2 subs), class 1 (2 subs)
    centres = [unit(a) for a in (1.2, 0.4, 2.0, math.pi / 2)]
    with torch.no_grad():
        loss.class_weights.copy_(torch.tensor(centres).T)
    embedding = torch.tensor([unit(0.5)])
    theta0, theta1 = 0.1, math.pi / 2 - 0.5  # angles to the nearest sub-centre of each class
    expected = cross_entropy([scale * math.cos(theta0 + margin), scale * math.cos(theta1)], 0)
    assert loss.arcface(embedding, torch.tensor([0])).item() == pytest.approx(expected, rel=1e-5)


def test_supcon_matches_khosla_eq_2_with_the_temperature():
    torch.manual_seed(0)
    t = 0.04
    loss = OSSCLLoss(3, 4, sub_centers=1, temperature=t)
    z = nn.functional.normalize(torch.randn(7, 4), dim=1)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 0])  # class 2 has one clip: no positive, skipped
    terms = []
    for i in range(7):
        positives = [p for p in range(7) if p != i and labels[p] == labels[i]]
        if not positives:
            continue
        others = [a for a in range(7) if a != i]
        log_norm = torch.logsumexp(torch.stack([z[i] @ z[a] / t for a in others]), 0)
        terms.append(-sum(z[i] @ z[p] / t - log_norm for p in positives) / len(positives))
    expected = torch.stack(terms).mean()
    outputs = {"embedding": torch.randn(7, 4), "projection": z}
    parts = loss(outputs, labels)
    torch.testing.assert_close(parts["supcon"], expected, rtol=1e-5, atol=1e-5)
    total = parts["arcface"] + parts["supcon"]
    torch.testing.assert_close(parts["loss"], total)
    weighted = OSSCLLoss(3, 4, sub_centers=1, temperature=t, arcface_weight=0, supcon_weight=0.5)
    torch.testing.assert_close(weighted(outputs, labels)["loss"], 0.5 * expected, rtol=1e-5, atol=0)


def test_loss_falls_as_embeddings_move_to_their_class_centres():
    torch.manual_seed(1)
    n_classes, dim = 3, 8
    loss = OSSCLLoss(n_classes, dim, sub_centers=2, temperature=0.1)
    labels = torch.arange(12) % n_classes
    embedding = torch.randn(12, dim)
    projection = nn.functional.normalize(torch.randn(12, 4), dim=1)
    centres = nn.functional.normalize(loss.class_weights.detach().T, dim=1)  # (C·K, D)
    cosines = nn.functional.normalize(embedding, dim=1) @ centres.T
    mine = cosines.view(12, n_classes, 2)[torch.arange(12), labels]  # own sub-centres
    nearest = centres.view(n_classes, 2, dim)[labels, mine.argmax(1)]  # (12, D)
    class_direction = nn.functional.normalize(torch.randn(n_classes, 4), dim=1)[labels]

    def at(fraction):
        e = (1 - fraction) * nn.functional.normalize(embedding, dim=1) + fraction * nearest
        p = nn.functional.normalize((1 - fraction) * projection + fraction * class_direction, dim=1)
        with torch.no_grad():
            return loss({"embedding": e, "projection": p}, labels)

    values = [at(f) for f in (0.0, 0.5, 1.0)]
    for part in ("loss", "arcface", "supcon"):
        assert values[0][part] > values[1][part] > values[2][part], part


def test_class_centres_stay_float32_under_bf16_autocast():
    labels = torch.tensor([0, 1, 0, 1])
    outputs = {"embedding": torch.randn(4, 6).bfloat16(), "projection": torch.randn(4, 3)}
    loss = OSSCLLoss(2, 6, sub_centers=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        parts = loss(outputs, labels)
    assert loss.class_weights.dtype == torch.float32 and parts["loss"].dtype == torch.float32
    bare = losses.SubCenterArcFaceLoss(num_classes=2, embedding_size=6, sub_centers=2)
    bare(outputs["embedding"], labels)
    assert bare.W.dtype == torch.bfloat16  # what the guard prevents


def test_class_centres_are_trainable_parameters_of_the_loss():
    loss = OSSCLLoss(5, 6, sub_centers=3)
    assert [p.shape for p in loss.parameters()] == [(6, 15)]
    assert loss.class_weights is next(loss.parameters())
    outputs = {"embedding": torch.randn(4, 6), "projection": torch.randn(4, 3)}
    loss(outputs, torch.tensor([0, 1, 0, 4]))["loss"].backward()
    assert loss.class_weights.grad is not None and loss.class_weights.grad.abs().sum() > 0


def test_mixup_weighs_both_partners_labels():
    torch.manual_seed(0)
    loss = OSSCLLoss(num_classes=3, embedding_size=8, sub_centers=2)
    outputs = {
        "embedding": torch.randn(6, 8),
        "projection": nn.functional.normalize(torch.randn(6, 4), dim=-1),
    }
    a, b = torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([1, 1, 0, 2, 0, 2])
    mixed = loss(outputs, a, mix=(b, 0.3))
    expected = 0.3 * loss(outputs, a)["loss"] + 0.7 * loss(outputs, b)["loss"]
    torch.testing.assert_close(mixed["loss"], expected)
    torch.testing.assert_close(loss(outputs, a, mix=(b, 1.0))["loss"], loss(outputs, a)["loss"])
