"""Run the autoencoder baseline on one machine type of a clip table: features → train → scores.

The notebook ``20_baseline_autoencoder`` calls :func:`run_autoencoder` once per machine type and
writes the official submission files from the returned score table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd
import torch
from tqdm import tqdm

from asd_utils.data import read_clips
from asd_utils.features import log_mel, stack_frames
from asd_utils.models.autoencoder import (
    AETrainConfig,
    AutoEncoder,
    clip_scores,
    fit_inverse_covariance,
    residuals,
    train_autoencoder,
)

SCORE_COLUMNS = ("mse", "mahalanobis")
"""The two baseline variants, by the name of their score column."""


@dataclass(frozen=True)
class AEFeatureConfig:
    """The baseline's features: log-mel (n_fft 1024, hop 512, 128 mels, power 2), 5 frames,
    from channel 0 (the near microphone of 2026 clips; the only channel of older ones)."""

    n_fft: int = 1024
    hop_length: int = 512
    n_mels: int = 128
    power: float = 2.0
    n_frames: int = 5


def frame_vectors(
    paths: list[str], config: AEFeatureConfig, chunk: int = 32, progress: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read clips and turn them into stacked log-mel vectors.

    Returns ``vectors`` (n_vectors, n_frames · n_mels) float32 and ``clip_index`` (n_vectors,),
    the position in ``paths`` of each vector's clip. Clips are read ``chunk`` at a time (each
    chunk must share one length, as the clips of one machine type do).
    """
    vectors, owners = [], []
    for start in tqdm(
        range(0, len(paths), chunk), desc="log-mel", disable=not progress, leave=False
    ):
        audio = read_clips(paths[start : start + chunk], channels=1)  # (b, 1, samples): ch0
        mel = log_mel(
            torch.from_numpy(audio[:, 0]),
            n_fft=config.n_fft,
            hop_length=config.hop_length,
            n_mels=config.n_mels,
            power=config.power,
        )
        stacked = stack_frames(mel, config.n_frames)  # (b, vectors, dim)
        vectors.append(stacked.flatten(0, 1))
        owners.append(torch.arange(start, start + len(stacked)).repeat_interleave(stacked.shape[1]))
    return torch.cat(vectors), torch.cat(owners)


@dataclass
class BaselineResult:
    """Scores of every clip (train and test) for both variants, and the training history."""

    scores: pd.DataFrame
    history: pd.DataFrame
    model: AutoEncoder
    seconds: float


def run_autoencoder(
    clips: pd.DataFrame,
    features: AEFeatureConfig | None = None,
    training: AETrainConfig | None = None,
    progress: bool = True,
) -> BaselineResult:
    """Train one autoencoder on the training clips of ``clips`` and score all of them.

    ``clips``: the clip table of ONE machine type (columns of :func:`asd_utils.data.index_dataset`),
    train and test rows. Returns a table with the clip columns plus ``mse`` and ``mahalanobis``
    (larger = more anomalous). The Mahalanobis covariances come from source and target training
    clips separately, as the official baseline's "selective Mahalanobis".
    """
    features = features or AEFeatureConfig()
    training = training or AETrainConfig()
    if clips["machine_type"].nunique() != 1:
        raise ValueError("run_autoencoder takes the clips of one machine type")
    start = time.perf_counter()
    clips = clips.reset_index(drop=True)
    vectors, owner = frame_vectors(clips["path"].tolist(), features, progress=progress)
    is_train = torch.tensor((clips["split"] == "train").to_numpy())
    train_mask = is_train[owner]
    model, history = train_autoencoder(
        vectors[train_mask], training, progress=progress, desc=f"AE {clips['machine_type'].iloc[0]}"
    )
    train_res = residuals(model, vectors[train_mask])
    train_domain = clips["domain"].to_numpy()[owner[train_mask].numpy()]
    inv_covs = [
        fit_inverse_covariance(train_res[torch.from_numpy(train_domain == d)])
        for d in ("source", "target")
    ]
    scores = clip_scores(model, vectors, owner, len(clips), *inv_covs)
    table = clips.assign(**{name: scores[name] for name in SCORE_COLUMNS})
    return BaselineResult(table, pd.DataFrame(history), model, time.perf_counter() - start)


def seed_everything(seed: int) -> None:
    """Seed torch's global generator (everything else here takes explicit generators)."""
    torch.manual_seed(seed)
