"""The OSSCL objective: sub-center ArcFace on the embedding + supervised contrastive loss on the
projection, summed (Huang, Fang & He, "one-stage supervised contrastive learning", ICASSP 2025;
xju-system.md, "What the paper leaves open").

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


class OSSCLLoss(nn.Module):
    """``arcface_weight · SubCenterArcFace(embedding) + supcon_weight · SupCon(projection)``.

    Call with the model's outputs ``{"embedding": (B, D), "projection": (B, P)}`` and integer
    class ids (B,); returns ``{"loss", "arcface", "supcon"}`` (scalars; ``loss`` is the weighted
    sum). Defaults are the XJU paper's Table 1: margin 0.2 rad, 114 sub-centres, temperature
    0.04. Not in Table 1: ``scale`` (30, the s of the OS-SCL code's ArcMarginProduct; the ECCV
    paper and PML use 64) and the weights (1 and 1, the OS-SCL code's plain sum).

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
        arcface_weight: float = 1.0,
        supcon_weight: float = 1.0,
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
        self, outputs: dict[str, torch.Tensor], labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        with torch.autocast(labels.device.type, enabled=False):
            arcface = self.arcface(outputs["embedding"].float(), labels)
            supcon = self._supcon(outputs["projection"].float(), labels)
        loss = self.arcface_weight * arcface + self.supcon_weight * supcon
        return {"loss": loss, "arcface": arcface.detach(), "supcon": supcon.detach()}
