"""The OSSCL objective: sub-center ArcFace on the embedding + supervised contrastive loss on the
projection, summed (Huang, Fang & He, "one-stage supervised contrastive learning", ICASSP 2025;
public code ``huangswt/OS-SCL``), the objective the XJU report (``xju2026``) names.

Both terms come from ``pytorch-metric-learning`` 2.x. Its ``SubCenterArcFaceLoss`` takes the
margin in DEGREES and ``num_classes`` / ``embedding_size`` as keywords, and holds the class
centres ``W`` (embedding_size, num_classes · sub_centers) itself: they are trained with the model
(:func:`asd_utils.training.train` gives them their own optimizer parameter group).
"""

from __future__ import annotations

import math

import torch
from pytorch_metric_learning import losses
from pytorch_metric_learning.utils import distributed
from torch import nn

from asd_utils.config import schema
from asd_utils.models.heads import DomainClassifier, grl_lambda, reverse_gradient

_OSSCL = schema.optional_defaults(schema.OSSCLLoss)  # the optional keys' defaults: the schema's
_GRL = schema.optional_defaults(schema.GRLLoss)


class OSSCLLoss(nn.Module):
    """``arcface_weight · SubCenterArcFace(embedding) + supcon_weight · SupCon(projection)``.

    Call with the model's outputs ``{"embedding": (B, D), "projection": (B, P)}`` and integer
    class ids (B,); returns ``{"loss", "arcface", "supcon"}`` (scalars; ``loss`` is the weighted
    sum). Defaults are the XJU paper's Table 1: margin 0.2 rad, 114 sub-centres, temperature
    0.04. Not in Table 1: ``scale`` (30, the s of the OS-SCL code's ArcMarginProduct; the ECCV
    paper and PML use 64) and the weights (the schema's defaults, 1 and 1: the OS-SCL code's
    plain sum).

    Sub-center ArcFace (Deng et al., ECCV 2020): class cosine = max over the class's K centre
    cosines; logit of the true class s·cos(θ + m), of the others s·cos θ; cross-entropy.
    SupCon (Khosla et al., NeurIPS 2020, eq. 2) over the micro-batch (gathered over processes
    under DDP), anchors without a positive skipped; PML's version has no ``temperature /
    base_temperature`` factor (the OS-SCL code multiplies by 0.04 / 0.07 there; set
    ``supcon_weight`` to reproduce that). Both terms are computed in float32 outside autocast:
    PML casts ``W`` to the embedding's dtype in place, and a bf16 embedding would silently turn
    the class centres into bf16.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin: float = 0.2,
        scale: float = 30.0,
        sub_centers: int = 114,
        temperature: float = 0.04,
        arcface_weight: float = _OSSCL["arcface_weight"],
        supcon_weight: float = _OSSCL["supcon_weight"],
    ):
        super().__init__()
        self.arcface = losses.SubCenterArcFaceLoss(
            num_classes=num_classes,
            embedding_size=embedding_size,
            margin=math.degrees(margin),  # PML 2.x: degrees; it converts back to radians
            scale=scale,
            sub_centers=sub_centers,
        )
        self.supcon = losses.SupConLoss(temperature=temperature)
        self.arcface_weight, self.supcon_weight = arcface_weight, supcon_weight

    @property
    def class_weights(self) -> nn.Parameter:
        """The sub-centre matrix W, (embedding_size, num_classes · sub_centers)."""
        return self.arcface.W

    def _supcon(self, projection: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """SupCon over the micro-batch of ALL processes under DDP, as on one device.

        PML's DistributedLossWrapper gathers the other processes' projections (no gradient
        through them) and returns W · loss, W processes, so that DDP's gradient averaging gives
        the single-device gradient; the value returned here is the loss itself, for logging.
        """
        if not (distributed.is_distributed() and torch.distributed.get_world_size() > 1):
            return self.supcon(projection, labels)
        scaled = distributed.DistributedLossWrapper(self.supcon)(projection, labels)
        value = scaled.detach() / torch.distributed.get_world_size()
        return value + (scaled - scaled.detach())  # value: the loss; gradient: W · its own

    def forward(
        self,
        outputs: dict[str, torch.Tensor],
        labels: torch.Tensor,
        mix: tuple[torch.Tensor, float] | None = None,
    ) -> dict[str, torch.Tensor]:
        with torch.autocast(labels.device.type, enabled=False):
            embedding, projection = outputs["embedding"].float(), outputs["projection"].float()
            arcface = self.arcface(embedding, labels)
            supcon = self._supcon(projection, labels)
            if mix is not None:  # mixup: both partners' labels, weighed by λ and 1 − λ
                partner, lam = mix
                arcface = lam * arcface + (1 - lam) * self.arcface(embedding, partner)
                supcon = lam * supcon + (1 - lam) * self._supcon(projection, partner)
        loss = self.arcface_weight * arcface + self.supcon_weight * supcon
        return {"loss": loss, "arcface": arcface.detach(), "supcon": supcon.detach()}


class GRLLoss(nn.Module):
    """System 2's objective: a margin classifier on the embedding plus a domain classifier behind
    a gradient reversal layer, ``margin + domain_weight · CE(domain_head(GRL_λ(embedding)))``.

    Targets are integer ids of the classes of :func:`asd_utils.data.attribute_classes` with
    ``by_domain=True``; ``class_to_label`` maps each to the margin classifier's class (the
    attribute class, un-reversed) and ``class_to_domain`` to what the reversed head predicts
    (default: the domain, 0 source / 1 target; any grouping can be given). ArcFace
    (Deng et al., CVPR 2019; PML, margin in degrees) with ``sub_centers=1`` is the plain margin
    classifier. λ ramps with training progress p as :func:`asd_utils.models.heads.grl_lambda`;
    p counts this module's training-mode calls over ``total_calls`` (optimizer steps ×
    accumulation) in a buffer, so it is checkpointed and resumes with the run. Under mixup
    (``mix = (partner targets, w)``) both terms weigh the two partners' targets by w and 1 − w,
    as :class:`OSSCLLoss`. Returns
    ``{"loss", "margin", "domain", "domain_accuracy", "grl_lambda"}``.
    """

    def __init__(
        self,
        class_to_label: torch.Tensor,
        class_to_domain: torch.Tensor,
        embedding_size: int,
        total_calls: int,
        margin: float = 0.2,
        scale: float = 30.0,
        sub_centers: int = 1,
        lambda_max: float = 1.0,
        domain_weight: float = 1.0,
        hidden_dim: int = _GRL["hidden_dim"],
    ):
        super().__init__()
        self.register_buffer("class_to_label", torch.as_tensor(class_to_label, dtype=torch.long))
        self.register_buffer("class_to_domain", torch.as_tensor(class_to_domain, dtype=torch.long))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.margin = losses.SubCenterArcFaceLoss(
            num_classes=int(self.class_to_label.max()) + 1,
            embedding_size=embedding_size,
            margin=math.degrees(margin),
            scale=scale,
            sub_centers=sub_centers,
        )
        self.domain_head = DomainClassifier(
            embedding_size, int(self.class_to_domain.max()) + 1, hidden_dim
        )
        self.total_calls, self.lambda_max, self.domain_weight = (
            total_calls,
            lambda_max,
            domain_weight,
        )

    def current_lambda(self) -> float:
        return grl_lambda(self.calls.item() / max(self.total_calls, 1), self.lambda_max)

    def forward(
        self,
        outputs: dict[str, torch.Tensor],
        targets: torch.Tensor,
        mix: tuple[torch.Tensor, float] | None = None,
    ) -> dict[str, torch.Tensor]:
        lam = self.current_lambda()
        if self.training:
            self.calls += 1
        labels, domains = self.class_to_label[targets], self.class_to_domain[targets]
        with torch.autocast(targets.device.type, enabled=False):
            embedding = outputs["embedding"].float()
            margin = self.margin(embedding, labels)
            logits = self.domain_head(reverse_gradient(embedding, lam))
            domain = nn.functional.cross_entropy(logits, domains)
            if mix is not None:  # mixup: both partners' targets, weighed by w and 1 − w
                partner, weight = mix
                margin = weight * margin + (1 - weight) * self.margin(
                    embedding, self.class_to_label[partner]
                )
                domain = weight * domain + (1 - weight) * nn.functional.cross_entropy(
                    logits, self.class_to_domain[partner]
                )
        accuracy = (logits.argmax(1) == domains).float().mean()
        return {
            "loss": margin + self.domain_weight * domain,
            "margin": margin.detach(),
            "domain": domain.detach(),
            "domain_accuracy": accuracy.detach(),
            "grl_lambda": torch.tensor(lam, device=targets.device),
        }


def soft_targets(
    labels: torch.Tensor, num_classes: int, mix: tuple[torch.Tensor, object] | None = None
) -> torch.Tensor:
    """Class targets as rows of probabilities (B, num_classes), float32.

    ``labels``: ids (B,), or already (B, num_classes) rows (returned as float32). ``mix =
    (partner ids, w)`` (:func:`asd_utils.models.mixup.mixup`; ``w`` a float or (B,)) gives
    ``w · onehot(labels) + (1 − w) · onehot(partner)``: mixup's label mixing.
    """
    if labels.ndim == 2:
        return labels.float()
    rows = nn.functional.one_hot(labels, num_classes).float()
    if mix is None:
        return rows
    partner, weight = mix
    weight = torch.as_tensor(weight, dtype=torch.float32, device=rows.device).reshape(-1, 1)
    return weight * rows + (1 - weight) * nn.functional.one_hot(partner, num_classes).float()


class SCAdaCosLoss(nn.Module):
    """Sub-cluster AdaCos (Wilkinghoff, "Sub-cluster AdaCos", IJCNN 2021), as ASDKit's
    ``asdkit.losses.SCAdaCos``: K sub-cluster centres per class (columns of ``W``, (D, C · K),
    class-major), cosine logits at scale s, a class's probability the sum of its sub-clusters'
    softmax probabilities, cross-entropy against (soft) targets.

    Scale: s₀ = √2 · ln(C·K − 1). ``dynamic`` (training mode only), before each loss, as
    ASDKit: ``s ← ln(mean_b Σ_j exp(s · cos_bj)) / (cos(min(π/4, θ_med)) + eps)``, θ_med the
    (lower) median over the batch of ``Σ_j ỹ_bj · θ_bj`` with ``ỹ`` the targets TILED K times
    (column j counts for class j mod C, although the loss groups column j with class j // K;
    for K > 1 the sum of K angles is over π/4, so the rule divides by cos(π/4)). Wilkinghoff's
    original leaves the true class out of the sum and takes the angle to its own sub-clusters.
    The public LoRA recipe (asd03) sets ``dynamic: false, trainable: true``, 16 sub-clusters.

    Call with ``{"embedding": (B, D)}`` and ids (B,) or probability rows (B, C); ``mix`` as
    :func:`soft_targets`. Returns ``{"loss", "scale"}``; s is a buffer (checkpointed with the
    loss's weights). Computed in float32 outside autocast.
    """

    per_clip_mixup = True  # soft targets take one mixup weight per clip (the loop's mixup_prob)

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        sub_clusters: int = 16,
        trainable: bool = False,
        dynamic: bool = True,
        eps: float = 1e-7,
    ):
        super().__init__()
        if num_classes * sub_clusters < 2:
            raise ValueError("SCAdaCos needs at least two centres (classes × sub_clusters)")
        self.num_classes, self.sub_clusters = num_classes, sub_clusters
        self.dynamic, self.eps = dynamic, eps
        weight = torch.empty(embedding_size, num_classes * sub_clusters)
        self.W = nn.Parameter(nn.init.xavier_uniform_(weight), requires_grad=trainable)
        initial = math.sqrt(2) * math.log(num_classes * sub_clusters - 1)
        self.register_buffer("scale", torch.tensor(initial, dtype=torch.float32))

    def cosines(self, embedding: torch.Tensor) -> torch.Tensor:
        """(B, D) → (B, C · K) cosine of each embedding to each centre."""
        x = nn.functional.normalize(embedding.float(), dim=1)
        return x @ nn.functional.normalize(self.W.float(), dim=0)

    @torch.no_grad()
    def update_scale(self, cosines: torch.Tensor, targets: torch.Tensor) -> None:
        """ASDKit's adaptive scale from one batch (see the class docstring), in place."""
        theta = torch.acos(cosines.clamp(-1 + self.eps, 1 - self.eps))
        logits = self.scale * cosines
        top = logits.max()
        b_avg = torch.exp(logits - top).sum(1).mean()
        theta_class = (targets.repeat(1, self.sub_clusters) * theta).sum(1)
        angle = torch.minimum(torch.tensor(math.pi / 4), theta_class.median())
        self.scale.copy_((top + torch.log(b_avg)) / (torch.cos(angle) + self.eps))

    def forward(
        self,
        outputs: dict[str, torch.Tensor],
        labels: torch.Tensor,
        mix: tuple[torch.Tensor, object] | None = None,
    ) -> dict[str, torch.Tensor]:
        with torch.autocast(labels.device.type, enabled=False):
            targets = soft_targets(labels, self.num_classes, mix)
            cosines = self.cosines(outputs["embedding"])
            if self.training and self.dynamic:
                self.update_scale(cosines, targets)
            logits = self.scale * cosines
            grouped = logits.view(-1, self.num_classes, self.sub_clusters).logsumexp(2)
            log_prob = grouped - logits.logsumexp(1, keepdim=True)  # log Σ_k softmax
            loss = -(targets * log_prob).sum(1).mean()
        return {"loss": loss, "scale": self.scale.detach().clone()}
