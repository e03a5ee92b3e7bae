"""The official DCASE 2023–2026 Task 2 autoencoder baseline (MSE and selective Mahalanobis).

Recipe (nttcslab's ``dcase2023_task2_baseline_ae``, the 2023–2026 baselines): 5 stacked
log-mel frames (640 values) through a dense autoencoder 640-128-128-128-128-8-128-128-128-128-640
with BatchNorm + ReLU; Adam, lr 1e-3, batch 256, 10 % of the training vectors held out for
validation. Scores per clip: the mean squared reconstruction error (MSE), or the smaller of the
Mahalanobis distances of the clip's mean residual under the source and the target training
residual covariances (selective Mahalanobis).

This is a small, fixed recipe with its own loop (no accelerate, no EMA); the fine-tuned systems
share :mod:`asd_utils.training` instead. It runs on the GPU when there is one (the recipe is the
same on either device). Where the time goes on a CPU (issue 24, see
``benchmarks/bench_autoencoder.py``): a batch-256 step is ~3 ms of matrix products and as much
again of small-tensor work, so Adam runs its multi-tensor (``foreach``) form, whose results are
bit-identical to the per-tensor loop (the fused form is faster but drifts, 4e-4 after 3 epochs),
and the steps run on one thread (:attr:`AETrainConfig.threads`); the scores need one pass over
the residuals (:func:`residual_statistics`), not one per covariance.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
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
    """Training settings (defaults: the official recipe; profiles override ``epochs``).

    ``device``: where the model trains and scores; ``None`` picks CUDA when
    ``torch.cuda.is_available()``, else the CPU (:func:`resolve_device`). ``threads``: the CPU
    threads of the training steps (``None``: torch's setting; larger passes keep torch's). One
    thread by default because a batch-256 step of 128-wide layers is too small to share: measured
    on a 2-core machine with another job running, 10 ms per step on one thread and 50 ms on two,
    each waiting on the other at every one of the step's ~100 operations. Neither changes the
    recipe.
    """

    epochs: int = 100
    batch_size: int = 256
    learning_rate: float = 1e-3
    validation_split: float = 0.1
    seed: int = 13711
    history: list = field(default_factory=list)
    device: str | None = None
    threads: int | None = 1


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` when given, else ``cuda`` when ``torch.cuda.is_available()``, else ``cpu``."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """Run the block with at most ``threads`` torch CPU threads (``None``: unchanged)."""
    before = torch.get_num_threads()
    if threads is None or threads >= before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_autoencoder(
    vectors: torch.Tensor,
    config: AETrainConfig,
    progress: bool = True,
    desc: str = "autoencoder",
    rows: torch.Tensor | None = None,
) -> tuple[AutoEncoder, list[dict]]:
    """Train the baseline autoencoder on (n_vectors, input_dim) float32 training vectors.

    ``rows`` (optional, int64): train on ``vectors[rows]`` only, without copying them on a CPU
    (the baseline passes every clip's vectors and the training clips' rows): the very same
    batches, losses and weights as ``train_autoencoder(vectors[rows], ...)``.
    Returns the trained model (eval mode, on ``config.device``) and the per-epoch history
    ``[{"epoch", "train_loss", "val_loss", "seconds"}]``. Deterministic for a given seed on
    a given device: the weights are drawn on the CPU from ``config.seed`` and the validation
    split and batch orders come from a CPU generator, so every device sees the same batches.
    Batches index the vectors directly (no DataLoader, no copy of the training set); the
    validation loss is computed in no-grad chunks.
    """
    device = resolve_device(config.device)
    if rows is not None and device.type != "cpu":  # a GPU gets the training vectors only
        vectors, rows = vectors[rows], None
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    model = AutoEncoder(vectors.shape[1]).to(device)
    n = len(vectors) if rows is None else len(rows)
    order = torch.randperm(n, generator=generator)
    if rows is not None:  # positions among the training vectors -> rows of ``vectors``
        order = rows[order]
    n_val = int(round(config.validation_split * n))
    data = vectors.to(device)
    val_rows, train_rows = order[:n_val].to(device), order[n_val:].to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, foreach=True)
    history = []
    bar = tqdm(range(config.epochs), desc=desc, disable=not progress, leave=False)
    with cpu_threads(config.threads if device.type == "cpu" else None):
        for epoch in bar:
            start = time.perf_counter()
            model.train()
            total = torch.zeros((), dtype=torch.float64, device=device)
            shuffled = train_rows[torch.randperm(len(train_rows), generator=generator).to(device)]
            for batch in shuffled.split(config.batch_size):
                if len(batch) < 2:  # BatchNorm needs two vectors; a last batch of one is dropped
                    continue
                x = data[batch]
                loss = nn.functional.mse_loss(model(x), x)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.detach().double() * len(batch)
            val_loss = mean_squared_error(model, data, val_rows) if n_val else float("nan")
            history.append(
                {
                    "epoch": epoch + 1,
                    "train_loss": total.item() / len(train_rows),
                    "val_loss": val_loss,
                    "seconds": time.perf_counter() - start,
                }
            )
            bar.set_postfix(train=f"{history[-1]['train_loss']:.2f}", val=f"{val_loss:.2f}")
    model.eval()
    return model, history


@torch.no_grad()
def mean_squared_error(
    model: AutoEncoder, data: torch.Tensor, rows: torch.Tensor, batch_size: int = 8192
) -> float:
    """Mean squared reconstruction error of ``data[rows]`` (eval mode, no-grad chunks)."""
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=data.device)
    for chunk in rows.split(batch_size):
        x = data[chunk]
        total += (model(x) - x).pow(2).sum(dtype=torch.float64)
    return total.item() / (len(rows) * data.shape[1])


@torch.no_grad()
def residuals(
    model: AutoEncoder,
    vectors: torch.Tensor,
    batch_size: int = 8192,
    progress: bool = False,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reconstruction residuals ``x − x̂`` for (n, dim) vectors, in eval mode, batched on the
    model's device; returned on the device of ``vectors``, written into one preallocated
    tensor, or into ``out`` (``out=vectors`` overwrites the vectors with their residuals, batch
    by batch: no second copy of them, for a caller that needs them no more)."""
    model.eval()
    device = next(model.parameters()).device
    out = torch.empty_like(vectors) if out is None else out
    for start in tqdm(
        range(0, len(vectors), batch_size), desc="residuals", disable=not progress, leave=False
    ):
        x = vectors[start : start + batch_size].to(device)
        out[start : start + batch_size] = (x - model(x)).to(out.device)
    return out


@dataclass
class ResidualStatistics:
    """Sums of residuals in groups, from which the covariance of any union of groups follows
    without another pass over the residuals (the out-of-fold Mahalanobis needs ten).

    ``count`` (groups,), ``total`` (groups, dim) = Σ (r − shift), ``gram`` (groups, dim, dim)
    = Σ (r − shift)(r − shift)ᵀ, all float64; ``shift`` (dim,) is the mean of all residuals
    counted, so that the covariances below subtract small numbers from small numbers.
    """

    count: torch.Tensor
    total: torch.Tensor
    gram: torch.Tensor
    shift: torch.Tensor

    def inverse_covariance(self, groups) -> torch.Tensor:
        """(dim, dim) float64 pseudo-inverse of the covariance of the union of ``groups``: as
        :func:`fit_inverse_covariance` on those groups' residuals."""
        n = self.count[groups].sum()
        mean = self.total[groups].sum(0) / n
        cov = self.gram[groups].sum(0) / n - torch.outer(mean, mean)
        return torch.linalg.pinv(cov, hermitian=True)


@torch.no_grad()
def residual_statistics(
    residual: torch.Tensor,
    group: torch.Tensor,
    n_groups: int,
    chunk: int = 16384,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> ResidualStatistics:
    """:class:`ResidualStatistics` of (n, dim) residuals; ``group`` (n,) int says each row's
    group (``-1``: counted in none). One pass, in float64 chunks of ``chunk`` rows, on
    ``device`` (default the residuals')."""
    device = torch.device(device) if device is not None else residual.device
    group = group.cpu()
    counted = torch.nonzero(group >= 0).squeeze(1)
    dim = residual.shape[1]
    shift = torch.zeros(dim, dtype=torch.float64, device=device)
    for rows in counted.split(chunk):
        shift += residual[rows].to(device, torch.float64).sum(0)
    shift /= max(len(counted), 1)
    count = torch.bincount(group[counted], minlength=n_groups).double()
    total = torch.zeros(n_groups, dim, dtype=torch.float64, device=device)
    gram = torch.zeros(n_groups, dim, dim, dtype=torch.float64, device=device)
    by_group = counted[torch.argsort(group[counted], stable=True)]
    pieces = [
        (g, rows)
        for g, members in enumerate(by_group.split(count.long().tolist()))
        for rows in members.split(chunk)
    ]
    for g, rows in tqdm(pieces, desc="covariances", disable=not progress, leave=False):
        r = residual[rows].to(device, torch.float64) - shift
        total[g] += r.sum(0)
        gram[g] += r.T @ r
    return ResidualStatistics(count.to(device), total, gram, shift)


def fit_inverse_covariance(residual: torch.Tensor) -> torch.Tensor:
    """Inverse covariance (dim, dim) of training residuals (n, dim), float64.

    As the baseline: covariance of the centred residuals divided by n. A pseudo-inverse stands in
    for the plain inverse because the target domain has few clips (10 in the real set), whose
    residual covariance can be singular.
    """
    group = torch.zeros(len(residual), dtype=torch.long)
    return residual_statistics(residual, group, 1).inverse_covariance([0]).cpu()


@torch.no_grad()
def clip_means(
    residual: torch.Tensor, clip_index: torch.Tensor, n_clips: int, chunk: int = 16384
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per clip: the mean residual (n_clips, dim) and the mean squared residual (n_clips,),
    float64, accumulated in chunks (no float64 copy of all residuals)."""
    mean = torch.zeros(n_clips, residual.shape[1], dtype=torch.float64)
    squared = torch.zeros(n_clips, dtype=torch.float64)
    for start in range(0, len(residual), chunk):
        r = residual[start : start + chunk].cpu().double()
        index = clip_index[start : start + chunk].cpu()
        mean.index_add_(0, index, r)
        squared.index_add_(0, index, r.pow(2).mean(1))
    counts = torch.bincount(clip_index.cpu(), minlength=n_clips).clamp(min=1)
    return mean / counts.unsqueeze(1), squared / counts


def mahalanobis(mean: torch.Tensor, *inverse_covariances: torch.Tensor) -> torch.Tensor:
    """Selective Mahalanobis: min over the inverse covariances of ``uᵀ Σ⁻¹ u`` for each row
    ``u`` of ``mean`` (n, dim), float64."""
    dists = [torch.einsum("nd,de,ne->n", mean, inv.to(mean), mean) for inv in inverse_covariances]
    return torch.stack(dists).amin(0)


def clip_scores(
    model: AutoEncoder,
    vectors: torch.Tensor,
    clip_index: torch.Tensor,
    n_clips: int,
    inv_cov_source: torch.Tensor | None = None,
    inv_cov_target: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
) -> dict[str, np.ndarray]:
    """Anomaly scores per clip from its frame vectors.

    ``vectors`` (n, dim) are all clips' vectors, ``clip_index`` (n,) says which clip each belongs
    to; ``residual``: their residuals when already computed. Returns ``{"mse": (n_clips,)}`` and,
    when both inverse covariances are given, ``"mahalanobis"``: min over the two domains of
    ``u^T Σ⁻¹ u``, ``u`` the clip's mean residual.
    """
    res = residuals(model, vectors) if residual is None else residual
    mean, squared = clip_means(res, clip_index, n_clips)
    out = {"mse": squared.numpy()}
    if inv_cov_source is not None and inv_cov_target is not None:
        out["mahalanobis"] = mahalanobis(mean, inv_cov_source, inv_cov_target).numpy()
    return out
