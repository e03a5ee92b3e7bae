"""The official DCASE 2023–2026 Task 2 autoencoder baseline (MSE and selective Mahalanobis).

Recipe (``dcase2026-task2.md``, from nttcslab's ``dcase2023_task2_baseline_ae``): 5 stacked
log-mel frames (640 values) through a dense autoencoder 640-128-128-128-128-8-128-128-128-128-640
with BatchNorm + ReLU; Adam, lr 1e-3, batch 256, 10 % of the training vectors held out for
validation. Scores per clip: the mean squared reconstruction error (MSE), or the smaller of the
Mahalanobis distances of the clip's mean residual under the source and the target training
residual covariances (selective Mahalanobis).

This is a small, fixed recipe with its own loop (no accelerate, no EMA); the fine-tuned systems
share :mod:`asd_utils.training` instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm


class AutoEncoder(nn.Module):
    """Dense autoencoder: (batch, input_dim) → (batch, input_dim) reconstruction.

    Hidden layers are Linear → BatchNorm1d(momentum 0.01, eps 1e-3) → ReLU, as the baseline
    (Keras' BatchNormalization momentum 0.99 is PyTorch's 0.01).
    """

    def __init__(
        self, input_dim: int = 640, hidden: int = 128, bottleneck: int = 8, depth: int = 4
    ):
        super().__init__()

        def block(n_in: int, n_out: int) -> list[nn.Module]:
            return [
                nn.Linear(n_in, n_out),
                nn.BatchNorm1d(n_out, momentum=0.01, eps=1e-3),
                nn.ReLU(),
            ]

        dims = [input_dim] + [hidden] * depth
        encoder = [m for a, b in zip(dims[:-1], dims[1:], strict=True) for m in block(a, b)]
        self.encoder = nn.Sequential(*encoder, *block(hidden, bottleneck))
        decoder = [
            m
            for a, b in zip([bottleneck] + [hidden] * (depth - 1), [hidden] * depth, strict=True)
            for m in block(a, b)
        ]
        self.decoder = nn.Sequential(*decoder, nn.Linear(hidden, input_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


@dataclass
class AETrainConfig:
    """Training settings (defaults: the official recipe; profiles override ``epochs``)."""

    epochs: int = 100
    batch_size: int = 256
    learning_rate: float = 1e-3
    validation_split: float = 0.1
    seed: int = 13711
    history: list = field(default_factory=list)


def train_autoencoder(
    vectors: torch.Tensor, config: AETrainConfig, progress: bool = True, desc: str = "autoencoder"
) -> tuple[AutoEncoder, list[dict]]:
    """Train the baseline autoencoder on (n_vectors, input_dim) float32 training vectors.

    Returns the trained model (eval mode) and the per-epoch history
    ``[{"epoch", "train_loss", "val_loss", "seconds"}]``. Deterministic on CPU for a given seed.
    """
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    model = AutoEncoder(vectors.shape[1])
    order = torch.randperm(len(vectors), generator=generator)
    n_val = int(round(config.validation_split * len(vectors)))
    val, train = vectors[order[:n_val]], vectors[order[n_val:]]
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    history = []
    bar = tqdm(range(config.epochs), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        start = time.perf_counter()
        model.train()
        total = 0.0
        for batch in torch.randperm(len(train), generator=generator).split(config.batch_size):
            if len(batch) < 2:  # BatchNorm needs two vectors; a last batch of one is dropped
                continue
            x = train[batch]
            loss = nn.functional.mse_loss(model(x), x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        model.eval()
        with torch.no_grad():
            val_loss = nn.functional.mse_loss(model(val), val).item() if n_val else float("nan")
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": total / len(train),
                "val_loss": val_loss,
                "seconds": time.perf_counter() - start,
            }
        )
        bar.set_postfix(train=f"{history[-1]['train_loss']:.2f}", val=f"{val_loss:.2f}")
    model.eval()
    return model, history


@torch.no_grad()
def residuals(model: AutoEncoder, vectors: torch.Tensor, batch_size: int = 8192) -> torch.Tensor:
    """Reconstruction residuals ``x − x̂`` for (n, dim) vectors, in eval mode, batched."""
    model.eval()
    return torch.cat([x - model(x) for x in vectors.split(batch_size)])


def fit_inverse_covariance(residual: torch.Tensor) -> torch.Tensor:
    """Inverse covariance (dim, dim) of training residuals (n, dim), float64.

    As the baseline: covariance of the centred residuals divided by n. A pseudo-inverse stands in
    for the plain inverse because the target domain has few clips (10 in the real set), whose
    residual covariance can be singular.
    """
    r = residual.double()
    centred = r - r.mean(0)
    cov = centred.T @ centred / len(r)
    return torch.linalg.pinv(cov, hermitian=True)


def clip_scores(
    model: AutoEncoder,
    vectors: torch.Tensor,
    clip_index: torch.Tensor,
    n_clips: int,
    inv_cov_source: torch.Tensor | None = None,
    inv_cov_target: torch.Tensor | None = None,
) -> dict[str, np.ndarray]:
    """Anomaly scores per clip from its frame vectors.

    ``vectors`` (n, dim) are all clips' vectors, ``clip_index`` (n,) says which clip each belongs
    to. Returns ``{"mse": (n_clips,)}`` and, when both inverse covariances are given,
    ``"mahalanobis"``: min over the two domains of ``u^T Σ⁻¹ u``, ``u`` the clip's mean residual.
    """
    res = residuals(model, vectors)
    counts = torch.bincount(clip_index, minlength=n_clips).clamp(min=1).unsqueeze(1)
    mse = torch.zeros(n_clips).index_add_(0, clip_index, res.pow(2).mean(1)) / counts[:, 0]
    out = {"mse": mse.numpy().astype(np.float64)}
    if inv_cov_source is not None and inv_cov_target is not None:
        mean_res = torch.zeros(n_clips, res.shape[1], dtype=torch.float64)
        mean_res.index_add_(0, clip_index, res.double())
        mean_res /= counts
        dists = [
            torch.einsum("nd,de,ne->n", mean_res, inv, mean_res)
            for inv in (inv_cov_source, inv_cov_target)
        ]
        out["mahalanobis"] = torch.minimum(*dists).numpy()
    return out
