"""One training loop for every fine-tuned system, by job: the training clips
(:mod:`~asd_utils.training.dataset`), the settings (:mod:`~asd_utils.training.config`), the run
folder's checkpoints and records (:mod:`~asd_utils.training.checkpoints`) and the loop itself
(:mod:`~asd_utils.training.loop`). The names other modules use are re-exported here.
"""

from asd_utils.training.checkpoints import (
    CHECKPOINT_DIR,
    CHECKSUMS,
    DAMAGED,
    EMA_WEIGHTS,
    FINISHED,
    LATEST,
    LOSS_WEIGHTS,
    MODEL_WEIGHTS,
    TRAIN_CONFIG,
    TRAIN_LOG,
    TRAIN_STATE,
    CheckpointWarning,
    checkpoint_damage,
    find_checkpoint,
    latest_checkpoint,
    load_weights,
)
from asd_utils.training.config import TrainConfig
from asd_utils.training.dataset import (
    PRELOAD_BUDGET_BYTES,
    ClipDataset,
    ResumableSampler,
    preload_bytes,
)
from asd_utils.training.loop import TrainResult, ema_model, inverse_sqrt_lambda, mixup, train

__all__ = [
    "CHECKPOINT_DIR",
    "DAMAGED",
    "EMA_WEIGHTS",
    "FINISHED",
    "LATEST",
    "LOSS_WEIGHTS",
    "CHECKSUMS",
    "MODEL_WEIGHTS",
    "PRELOAD_BUDGET_BYTES",
    "TRAIN_CONFIG",
    "TRAIN_LOG",
    "TRAIN_STATE",
    "CheckpointWarning",
    "ClipDataset",
    "ResumableSampler",
    "TrainConfig",
    "TrainResult",
    "checkpoint_damage",
    "ema_model",
    "find_checkpoint",
    "inverse_sqrt_lambda",
    "latest_checkpoint",
    "load_weights",
    "mixup",
    "preload_bytes",
    "train",
]
