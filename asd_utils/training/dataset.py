"""Training clips: :class:`ClipDataset` (fixed-length crops of a clip table, preloaded when
they fit a memory budget) and :class:`ResumableSampler` (the seeded stream of draws that a
resumed run repeats exactly)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset, Sampler
from tqdm import tqdm

from asd_utils.frontends.views import load_waveform

log = logging.getLogger(__name__)


PRELOAD_BUDGET_BYTES = 2 * 2**30
"""The most float32 sample memory :class:`ClipDataset` preloads on its own (2 GiB)."""


def preload_bytes(table: pd.DataFrame, channel: int | None = 0) -> int:
    """The float32 memory of the clips of ``table`` (its ``frames``), one channel or (``channel``
    None) two; a table without ``frames`` counts as too large (``2**62``)."""
    if "frames" not in table:
        return 2**62
    return int(table["frames"].sum()) * 4 * (2 if channel is None else 1)


class ClipDataset(Dataset):
    """Training clips as fixed-length waveforms with their targets (class ids).

    ``dataset[(i, seed)]`` gives ``(waveform (length,) float32, target, n_valid)`` (with
    ``channel=None`` a waveform of both microphones, (2, length)): a random
    ``length``-sample crop of clip i, its offset drawn from ``numpy.random.default_rng(seed)``
    (the sampler hands out the seeds, so crops are reproducible and resumable), or the clip
    zero-padded at the end when shorter (``n_valid`` = its true length, for the backbone's
    frame mask). ``dataset[i]`` crops from the start. ``length=None``: the shortest clip, so
    nothing is padded. ``preload`` True reads every clip once into memory, the fast path;
    False reads clips per item; ``None`` (the default) preloads when the clips' float32 samples
    (from the table's ``frames``) fit :data:`PRELOAD_BUDGET_BYTES`, else reads per item. The
    real 2026 training clips do not fit (issue 24): 12,000 clips of 6–16 s are 8.2 GB float32
    for one channel, 16.4 GB for two. Either way the items are the same.
    """

    def __init__(
        self,
        table: pd.DataFrame,
        targets: Sequence[int] | np.ndarray | torch.Tensor,
        length: int | None = None,
        channel: int | None = 0,
        preprocess: Callable | None = None,
        preload: bool | None = None,
        progress: bool = True,
    ):
        self.paths = list(table["path"])
        if preload is None:
            need = preload_bytes(table, channel)
            preload = need <= PRELOAD_BUDGET_BYTES
            if not preload:
                log.info(
                    "training clips read per item: %.1f GiB of float32 samples would not fit "
                    "the %.1f GiB preload budget",
                    need / 2**30,
                    PRELOAD_BUDGET_BYTES / 2**30,
                )
        self.targets = torch.as_tensor(np.asarray(targets), dtype=torch.long)
        if len(self.targets) != len(self.paths):
            raise ValueError(f"{len(self.targets)} targets for {len(self.paths)} clips")
        self.channel, self.preprocess = channel, preprocess
        self.waveforms = None
        if preload:
            self.waveforms = [
                torch.from_numpy(load_waveform(p, channel, preprocess))
                for p in tqdm(self.paths, desc="loading clips", unit="clip", disable=not progress)
            ]
            sizes = [w.shape[-1] for w in self.waveforms]
        else:  # the table's WAV-header frame counts (preprocessing keeps the length)
            sizes = list(table["frames"])
        self.length = int(length or min(sizes))
        self.sizes = sizes

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: int | tuple[int, Sequence[int]]):
        index, seed = key if isinstance(key, tuple) else (key, None)
        if self.waveforms is not None:
            clip = self.waveforms[index]
        else:
            clip = torch.from_numpy(load_waveform(self.paths[index], self.channel, self.preprocess))
        spare = clip.shape[-1] - self.length
        if spare >= 0:
            start = 0 if seed is None else int(np.random.default_rng(seed).integers(spare + 1))
            return clip[..., start : start + self.length], self.targets[index], self.length
        return nn.functional.pad(clip, (0, -spare)), self.targets[index], clip.shape[-1]


class ResumableSampler(Sampler):
    """An endless, seeded stream of ``(index, crop seed)`` keys for :class:`ClipDataset`.

    Draw j is clip ``perm_e[j mod n]`` of epoch e = j // n, ``perm_e`` a permutation seeded by
    (seed, e), with crop seed (seed, j). The stream is a pure function of (seed, j), so its
    whole state is ``start``, the number of draws already consumed: a resumed run passes
    ``start`` and sees exactly the clips and crops the uninterrupted run would have.
    (torch's RandomSampler keeps a generator whose position is not saved by DataLoader.)
    """

    def __init__(self, n: int, seed: int, start: int = 0):
        self.n, self.seed, self.start = n, seed, start

    def __iter__(self) -> Iterator[tuple[int, tuple[int, int]]]:
        draw = self.start
        while True:
            epoch, first = divmod(draw, self.n)
            order = np.random.default_rng((self.seed, epoch)).permutation(self.n)
            for index in order[first:]:
                yield int(index), (self.seed, draw)
                draw += 1
