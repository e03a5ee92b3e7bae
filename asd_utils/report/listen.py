"""Clips to listen to in the book: audio players whose sound is embedded in the page, so the
built book plays them offline and from ``file://`` (no file beside the page to lose)."""

from __future__ import annotations

import html
from collections.abc import Mapping

import numpy as np
from IPython.display import HTML, Audio

CHANNELS = ("near mic (ch 0)", "far mic (ch 1)")


def players(clips: Mapping[str, np.ndarray], sample_rate: int, seconds: float = 5.0) -> HTML:
    """A table of players: one row per ``clips`` item (a caption, a clip ``(channels,
    samples)`` in [-1, 1]), one column per channel (:data:`CHANNELS`), each the clip's first
    ``seconds`` as a WAV embedded in the page (``IPython.display.Audio``). The channels of a
    clip share one gain (their joint peak to 0.9), so the far microphone sounds as much quieter
    as it is recorded."""
    width = max(np.atleast_2d(a).shape[0] for a in clips.values())
    head = "".join(f"<th>{name}</th>" for name in CHANNELS[:width])
    rows = []
    for caption, clip in clips.items():
        audio = np.atleast_2d(np.asarray(clip, dtype=np.float64))[:, : int(seconds * sample_rate)]
        audio = audio * (0.9 / max(float(np.abs(audio).max()), 1e-9))
        cells = "".join(
            f'<td><audio controls preload="metadata" style="width: 100%" '
            f'src="{Audio(channel, rate=sample_rate, normalize=False).src_attr()}"></audio></td>'
            for channel in audio
        )
        rows.append(f"<tr><td>{html.escape(caption)}</td>{cells}</tr>")
    return HTML(
        '<table style="width: 100%; table-layout: fixed"><thead><tr><th style="width: 30%">'
        f"clip</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
