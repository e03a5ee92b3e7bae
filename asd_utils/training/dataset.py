"""Training clips: :class:`ClipDataset` (fixed-length crops of a clip table, preloaded when
they fit a memory budget; in samples, or in frames of each clip's fbank computed once) and
:class:`ResumableSampler` (the seeded stream of draws that a resumed run repeats exactly)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset, Sampler
from tqdm import tqdm

from asd_utils.frontends.features import by_length
from asd_utils.frontends.views import load_waveform
from asd_utils.models.common import FRAME_SHIFT, min_samples_for_frames, n_frames

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

    ``fbank`` (a model's ``fbank``: clips (B, [2,] samples) → unnormalised fbank (B, [2,]
    frames, 128), e.g. :meth:`asd_utils.models.heads.EmbeddingModel.fbank`): crops are taken
    in frames instead (``unit`` "frames"): ``dataset[(i, seed)]`` gives ``(fbank (F, 128) or
    (2, F, 128), target, n_valid frames)``, F = the frames of ``length`` samples, at a frame
    offset drawn as above, i.e. crop edges on the 10 ms grid. Preloaded, each clip's fbank is
    computed once (batched by length, one per distinct file) and the waveforms dropped;
    otherwise each item's crop is read and its fbank computed (the same frames, float
    rounding aside: Kaldi frames are local, :mod:`asd_utils.frontends.features`).
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
        fbank: Callable | None = None,
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
        self.fbank, self.fbanks = fbank, None
        self.unit = "samples" if fbank is None else "frames"
        if fbank is not None and self.waveforms is not None:
            self.fbanks = clip_fbanks(self.paths, self.waveforms, fbank)
            self.waveforms = None  # the fbank is what the items are cut from

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: int | tuple[int, Sequence[int]]):
        index, seed = key if isinstance(key, tuple) else (key, None)
        if self.unit == "frames":
            return self._frames(index, seed)
        if self.waveforms is not None:
            clip = self.waveforms[index]
        else:
            clip = torch.from_numpy(load_waveform(self.paths[index], self.channel, self.preprocess))
        spare = clip.shape[-1] - self.length
        if spare >= 0:
            start = 0 if seed is None else int(np.random.default_rng(seed).integers(spare + 1))
            return clip[..., start : start + self.length], self.targets[index], self.length
        return nn.functional.pad(clip, (0, -spare)), self.targets[index], clip.shape[-1]

    def _frames(self, index: int, seed: Sequence[int] | None):
        """Item ``index`` as a crop in frames (see the class): the F = n_frames(``length``)
        frames of clip ``index``'s fbank from a drawn frame offset, or all its frames
        zero-padded to F."""
        crop = n_frames(self.length)
        total = n_frames(self.sizes[index])
        spare = total - crop
        start = (
            0
            if seed is None or spare <= 0
            else int(np.random.default_rng(seed).integers(spare + 1))
        )
        if self.fbanks is not None:
            clip = self.fbanks[index][..., start : start + crop, :]
        else:  # the crop's samples, read per item: its fbank is those frames of the clip's
            audio = load_waveform(self.paths[index], self.channel, self.preprocess)
            samples = torch.from_numpy(audio)[..., start * FRAME_SHIFT :]
            with torch.no_grad():
                clip = self.fbank(samples[..., : min_samples_for_frames(crop)][None])[0]
        valid = clip.shape[-2]
        if valid < crop:
            clip = nn.functional.pad(clip, (0, 0, 0, crop - valid))
        return clip, self.targets[index], valid


def clip_fbanks(
    paths: Sequence, waveforms: Sequence[torch.Tensor], fbank: Callable, batch: int = 32
) -> list[torch.Tensor]:
    """``fbank`` of each whole clip, computed once per distinct path (the first row's waveform)
    in batches of equal-length clips (:func:`asd_utils.frontends.features.by_length`);
    one tensor per row, rows of the same path sharing it."""
    first: dict = {}
    for row, path in enumerate(paths):
        first.setdefault(path, row)
    with torch.no_grad():
        computed = by_length([waveforms[row] for row in first.values()], fbank, batch)
    of_path = dict(zip(first, computed, strict=True))
    return [of_path[path] for path in paths]


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
