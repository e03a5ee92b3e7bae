"""SCAdaCos (sub-cluster AdaCos) against ASDKit's equations, written out in numpy here: the
initial scale, the adaptive scale rule, the loss, mixup's soft targets, gradients."""

import math

import numpy as np
import pytest
import torch

from asd_utils.models.losses import SCAdaCosLoss, soft_targets

EPS = 1e-7


def asdkit_reference(x, w, y, s, n_classes, k, dynamic):
    """ASDKit ``SCAdaCos.forward`` step by step in float64 numpy: returns (loss, new scale)."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    w = w / np.linalg.norm(w, axis=0, keepdims=True)
    logits = x @ w
    theta = np.arccos(np.clip(logits, -1 + EPS, 1 - EPS))
    if dynamic:
        top = np.max(s * logits)
        b_avg = np.mean(np.sum(np.exp(s * logits - top), axis=1))
        theta_class = np.sum(np.tile(y, (1, k)) * theta, axis=1)  # torch's repeat(1, k): tiled
        theta_med = np.sort(theta_class)[(len(theta_class) - 1) // 2]  # torch.median: lower
        s = (top + np.log(b_avg)) / (np.cos(min(np.pi / 4, theta_med)) + EPS)
    z = s * logits
    prob = np.exp(z - z.max(1, keepdims=True))
    prob = prob / prob.sum(1, keepdims=True)
    prob = prob.reshape(-1, n_classes, k).sum(2)
    return np.mean(np.sum(-np.log(prob) * y, axis=1)), s


@pytest.mark.parametrize("sub_clusters", [1, 4])
@pytest.mark.parametrize("dynamic", [False, True])
def test_loss_and_scale_rule_match_asdkit(sub_clusters, dynamic):
    torch.manual_seed(0)
    n_classes, dim = 5, 12
    loss = SCAdaCosLoss(n_classes, dim, sub_clusters, trainable=True, dynamic=dynamic)
    assert loss.scale.item() == pytest.approx(math.sqrt(2) * math.log(n_classes * sub_clusters - 1))
    s = loss.scale.item()
    for step in range(3):  # the scale carries over from step to step
        x = torch.randn(7, dim)
        labels = torch.randint(0, n_classes, (7,))
        partner = torch.randint(0, n_classes, (7,))
        weight = torch.rand(7)
        out = loss({"embedding": x}, labels, mix=(partner, weight))
        y = (
            weight[:, None].numpy() * np.eye(n_classes)[labels]
            + (1 - weight[:, None].numpy()) * np.eye(n_classes)[partner]
        )
        expected, s = asdkit_reference(
            x.double().numpy(),
            loss.W.detach().double().numpy(),
            y,
            s,
            n_classes,
            sub_clusters,
            dynamic,
        )
        assert out["loss"].item() == pytest.approx(expected, rel=1e-5), step
        assert out["scale"].item() == pytest.approx(s, rel=1e-5), step
    if dynamic and sub_clusters > 1:  # K angles sum past π/4: the rule divides by cos(π/4)
        assert loss.scale.item() != pytest.approx(
            math.sqrt(2) * math.log(n_classes * sub_clusters - 1)
        )


def test_scale_stays_in_eval_mode_and_when_not_dynamic():
    torch.manual_seed(1)
    loss = SCAdaCosLoss(3, 8, 2)
    start = loss.scale.clone()
    loss.eval()({"embedding": torch.randn(4, 8)}, torch.tensor([0, 1, 2, 0]))
    assert torch.equal(loss.scale, start)
    fixed = SCAdaCosLoss(3, 8, 2, dynamic=False)
    fixed({"embedding": torch.randn(4, 8)}, torch.tensor([0, 1, 2, 0]))
    assert torch.equal(fixed.scale, start)
    assert "scale" in loss.state_dict()  # checkpointed with the loss


def test_gradients_reach_the_embedding_and_only_trainable_centres():
    torch.manual_seed(2)
    x = torch.randn(6, 8, requires_grad=True)
    frozen = SCAdaCosLoss(3, 8, 4, trainable=False)
    frozen({"embedding": x}, torch.tensor([0, 1, 2, 0, 1, 2]))["loss"].backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert frozen.W.grad is None and not frozen.W.requires_grad
    trained = SCAdaCosLoss(3, 8, 4, trainable=True)
    trained({"embedding": x.detach()}, torch.tensor([0, 1, 2, 0, 1, 2]))["loss"].backward()
    assert trained.W.grad is not None and trained.W.grad.abs().sum() > 0
    assert [n for n, p in trained.named_parameters() if p.requires_grad] == ["W"]


def test_soft_targets_mix_one_hot_rows():
    labels, partner = torch.tensor([0, 2, 1]), torch.tensor([1, 2, 0])
    rows = soft_targets(labels, 3, (partner, torch.tensor([0.25, 1.0, 0.5])))
    expected = torch.tensor([[0.25, 0.75, 0.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.0]])
    torch.testing.assert_close(rows, expected)
    torch.testing.assert_close(soft_targets(labels, 3, (partner, 0.25))[0], expected[0])
    assert torch.equal(soft_targets(expected, 3), expected)
    torch.testing.assert_close(rows.sum(1), torch.ones(3))
