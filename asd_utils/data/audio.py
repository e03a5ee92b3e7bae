"""Reading and writing WAV clips as float32 arrays of shape ``(channels, samples)`` (DCASE
2026: channel 0 the near microphone, 1 the far one), every broken file a :class:`DataError`."""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from asd_utils import errors
from asd_utils.data.dcase import PROGRESS_MIN, DataError
from asd_utils.files import atomic_path


def _truncation(path: Path) -> str | None:
    """Why a RIFF/WAVE file is truncated (data chunk longer than the file), or None."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:] != b"WAVE":
            return None  # not plain WAV: leave the verdict to libsndfile
        while len(chunk := f.read(8)) == 8:
            chunk_id, size = struct.unpack("<4sI", chunk)
            if chunk_id == b"data":
                available = os.fstat(f.fileno()).st_size - f.tell()
                if size > available and size != 0xFFFFFFFF:  # 0xFFFFFFFF: streamed, size unknown
                    return f"its header declares {size} bytes of audio but only {available} follow"
                return None
            f.seek(size + (size & 1), os.SEEK_CUR)
    return None


def _open_checked(path: Path) -> sf.SoundFile:
    """Open ``path`` with soundfile, turning every way it can be broken into a DataError."""
    if not path.is_file():
        raise DataError(f"audio file {str(path)!r} does not exist or is not a file")
    try:
        audio = sf.SoundFile(path)
    except (sf.SoundFileError, RuntimeError) as err:
        raise DataError(f"cannot read {str(path)!r} as audio ({err}); expected a WAV file") from err
    problem = _truncation(path) or ("it holds no audio frames" if audio.frames == 0 else None)
    if problem:
        audio.close()
        raise DataError(f"audio file {str(path)!r} is truncated or corrupt: {problem}")
    return audio


def read_audio(
    path: str | os.PathLike,
    channels: int | None = None,
    expected_sample_rate: int | None = 16000,
) -> np.ndarray:
    """Read one clip as float32 of shape ``(channels, samples)``.

    16-bit PCM is scaled by 1/32768, so values lie in [-1, 1). ``channels=None`` returns what the
    file holds; ``channels=2`` requires a stereo file (2026: row 0 near mic, row 1 far mic);
    ``channels=1`` returns channel 0 only, which for 2026 stereo clips is the near microphone and
    for mono clips the clip itself. ``expected_sample_rate=None`` accepts any rate.
    """
    if channels not in (None, 1, 2):
        raise ValueError(f"channels must be None, 1 or 2, not {channels!r}")
    path = Path(path)
    with _open_checked(path) as audio:
        if expected_sample_rate is not None and audio.samplerate != expected_sample_rate:
            raise DataError(
                f"{str(path)!r} has sample rate {audio.samplerate} Hz, "
                f"but {expected_sample_rate} Hz was expected"
            )
        if channels == 2 and audio.channels != 2:
            found = (
                "is mono (1 channel)" if audio.channels == 1 else f"has {audio.channels} channels"
            )
            raise DataError(
                f"{str(path)!r} {found} but 2 channels (near, far) were expected — 2026 data is "
                "stereo; earlier editions are mono (pass channels=1 or None to read them)"
            )
        try:
            data = audio.read(dtype="float32", always_2d=True)
        except (sf.SoundFileError, RuntimeError) as err:
            raise DataError(f"cannot read the audio of {str(path)!r} ({err})") from err
    if channels == 1:
        data = data[:, :1]
    return np.ascontiguousarray(data.T)


def read_clips(
    paths: Sequence[str | os.PathLike],
    channels: int | None = None,
    length: int | None = None,
    expected_sample_rate: int | None = 16000,
) -> np.ndarray:
    """Read many clips into one float32 array of shape ``(batch, channels, samples)``.

    With ``length`` (in samples) each clip is cropped to its first ``length`` samples or padded
    with zeros at the end; without it all clips must be equally long. All clips must have the same
    number of channels (pass ``channels=1`` to take the near mic of a mixed mono/stereo set).
    """
    paths = list(paths)
    if not paths:
        raise DataError("read_clips was given no paths")
    batch = None
    for i, path in enumerate(
        tqdm(
            paths,
            desc="reading clips",
            unit="clip",
            disable=len(paths) <= PROGRESS_MIN or not errors.progress_bars(),
        )
    ):
        clip = read_audio(path, channels=channels, expected_sample_rate=expected_sample_rate)
        if batch is None:
            batch = np.zeros((len(paths), clip.shape[0], length or clip.shape[1]), np.float32)
        if clip.shape[0] != batch.shape[1]:
            raise DataError(
                f"{str(path)!r} has {clip.shape[0]} channel(s) but {str(paths[0])!r} has "
                f"{batch.shape[1]}; pass channels=1 to read channel 0 (near mic) of every clip"
            )
        if length is None and clip.shape[1] != batch.shape[2]:
            raise DataError(
                f"{str(path)!r} has {clip.shape[1]} samples but {str(paths[0])!r} has "
                f"{batch.shape[2]}; pass length= to crop or zero-pad every clip to one length"
            )
        n = min(clip.shape[1], batch.shape[2])
        batch[i, :, :n] = clip[:, :n]
    return batch


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int = 16000) -> Path:
    """Write float ``audio`` of shape ``(channels, samples)`` (or ``(samples,)`` for mono) as
    16-bit PCM WAV, atomically. Values are clipped to [-1, 1) and quantised as
    ``round(x * 32768)``, so :func:`read_audio` gives them back to within 1/65536."""
    audio = np.asarray(audio, dtype=np.float64)
    if audio.ndim == 1:
        audio = audio[np.newaxis]
    if audio.ndim != 2 or audio.shape[1] == 0 or audio.shape[0] > 8:
        raise DataError(
            f"audio for {str(path)!r} has shape {audio.shape}; expected (channels, samples) "
            "with at most 8 channels"
        )
    if not np.isfinite(audio).all():
        raise DataError(f"audio for {str(path)!r} contains NaN or infinite values")
    pcm = np.clip(np.round(audio * 32768), -32768, 32767).astype(np.int16)
    with atomic_path(path) as tmp:
        sf.write(tmp, pcm.T, sample_rate, subtype="PCM_16", format="WAV")
    return Path(path)
