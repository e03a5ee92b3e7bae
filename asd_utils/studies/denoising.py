"""Measuring the ANC (:mod:`asd_utils.frontends.anc`) on clips whose parts are known.

The canceller also removes some machine sound where it leaks into the far microphone, so its
effect is measured, not assumed: per clip the SNR and SI-SDR before and after and the machine
sound kept (:func:`evaluate_denoising`), over time within a clip (:func:`convergence_curve`),
on synthetic clips or near/far pairs with a known acoustic path (:func:`known_path_mixture`).
The ANC chapter and ``benchmarks/bench_anc.py`` use it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
import scipy.signal

from asd_utils.frontends.anc import fblms


def _energy(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.sum(x * x, axis=-1)


def snr_db(clean, noise) -> np.ndarray:
    """Signal-to-noise ratio ``10 log10(sum clean^2 / sum noise^2)`` in dB, per clip.

    Args:
        clean: the signal, ``(..., samples)``, torch or numpy.
        noise: the noise (or the residual noise, e.g. ``output - clean``), same shape.

    Returns:
        ``(...)`` float64 array in dB (a scalar array for 1-D input).
    """
    with np.errstate(divide="ignore"):
        return 10 * np.log10(_energy(clean) / _energy(noise))


def si_sdr_db(reference, estimate) -> np.ndarray:
    """Scale-invariant signal-to-distortion ratio in dB, per clip (Le Roux et al., "SDR —
    half-baked or well done?", ICASSP 2019, Eq. 5).

    Both signals are made zero-mean; the target is the projection ``a * reference`` of the
    estimate on the reference (``a = <estimate, reference> / ||reference||^2``) and
    ``SI-SDR = 10 log10(||a reference||^2 / ||estimate - a reference||^2)``.

    Args:
        reference: clean signal, ``(..., samples)``, torch or numpy.
        estimate: the signal to judge, same shape.

    Returns:
        ``(...)`` float64 array in dB; unchanged when ``estimate`` is multiplied by any
        non-zero factor.
    """
    s = np.asarray(reference, dtype=np.float64)
    s_hat = np.asarray(estimate, dtype=np.float64)
    s = s - s.mean(-1, keepdims=True)
    s_hat = s_hat - s_hat.mean(-1, keepdims=True)
    target = (np.sum(s_hat * s, -1) / _energy(s))[..., None] * s
    with np.errstate(divide="ignore"):
        return 10 * np.log10(_energy(target) / _energy(s_hat - target))


class Mixture(NamedTuple):
    """A synthetic near/far pair; all arrays float64, ``(samples,)`` except ``path``."""

    clean: np.ndarray  # machine sound at the near mic
    noise: np.ndarray  # noise at the near mic (reference through ``path``)
    primary: np.ndarray  # near mic = clean + noise
    reference: np.ndarray  # far mic = noise source only (no machine leakage)
    path: np.ndarray  # FIR from far to near mic, (path_taps,)


def known_path_mixture(
    seconds: float = 3.0,
    sample_rate: int = 16_000,
    path_taps: int = 96,
    machine_db: float = -10.0,
    coloured: bool = False,
    seed: int = 0,
) -> Mixture:
    """A two-channel clip whose ideal canceller is known: noise reaches the near mic through a
    random, exponentially decaying FIR ``path`` from the far mic.

    The machine is 8 harmonics of a random 80–200 Hz fundamental; the far mic carries white
    Gaussian noise, or AR(1)-coloured noise (pole 0.9) with ``coloured=True``; ``machine_db``
    is the machine-to-noise power ratio at the near mic (dB). Noise reduction of a canceller's
    ``output`` is then ``snr_db(noise, output - clean)``.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    f0 = rng.uniform(80, 200)
    clean = sum(
        rng.uniform(0.2, 1) / k * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi))
        for k in range(1, 9)
    )
    reference = rng.standard_normal(t.size)
    if coloured:  # x[n] = w[n] + 0.9 x[n-1]
        reference = scipy.signal.lfilter([1.0], [1.0, -0.9], reference)
    path = rng.standard_normal(path_taps) * np.exp(-np.arange(path_taps) / (path_taps / 4))
    noise = np.convolve(reference, path)[: t.size]
    clean *= np.sqrt(np.mean(noise**2) / np.mean(clean**2)) * 10 ** (machine_db / 20)
    return Mixture(clean, noise, clean + noise, reference, path)


def _as_clip_list(x) -> list[np.ndarray]:
    """``(batch, 2, samples)`` array or a sequence of ``(2, samples)`` arrays → list of arrays."""
    clips = [np.asarray(c) for c in x]
    for c in clips:
        if c.ndim != 2 or c.shape[0] < 2:
            raise ValueError(f"each clip must be (channels >= 2, samples); got {c.shape}")
    return clips


def _split_output(machine, noise, oracle: bool, options: dict) -> list[tuple]:
    """Run FBLMS on ``machine + noise`` and split the output into its machine and noise parts.

    Returns per clip ``(machine_near, noise_near, machine_out, noise_out)``, float64 arrays of
    ``(samples,)``, where ``output = machine_out + noise_out`` exactly: ``machine_out =
    machine_near - (filter * machine_far)`` and ``noise_out = noise_near - (filter * noise_far)``
    with the filter sequence the canceller adapted on the mixture (``fblms(components=…)``).
    With ``oracle=True`` the reference is the far noise alone, so ``machine_out = machine_near``.
    Clips of equal length run as one batch.
    """
    machine, noise = _as_clip_list(machine), _as_clip_list(noise)
    if len(machine) != len(noise) or any(
        m.shape != n.shape for m, n in zip(machine, noise, strict=True)
    ):
        raise ValueError("machine and noise must hold the same number of clips of equal shapes")
    result: list = [None] * len(machine)
    lengths: dict[int, list[int]] = {}
    for i, m in enumerate(machine):
        lengths.setdefault(m.shape[-1], []).append(i)
    for index in lengths.values():
        m = np.stack([machine[i][:2] for i in index]).astype(np.float64)
        n = np.stack([noise[i][:2] for i in index]).astype(np.float64)
        far_machine = np.zeros_like(m[:, 1]) if oracle else m[:, 1]
        _, (y_machine, y_noise) = fblms(
            m[:, 0] + n[:, 0],
            far_machine + n[:, 1],
            components=np.stack([far_machine, n[:, 1]]),
            **options,
        )
        for j, i in enumerate(index):
            result[i] = (
                m[j, 0],
                n[j, 0],
                m[j, 0] - y_machine[j].numpy(),
                n[j, 0] - y_noise[j].numpy(),
            )
    return result


def _ratio_db(numerator, denominator) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return 10 * np.log10(_energy(numerator) / _energy(denominator))


MEASURES = (
    "snr_before_db",
    "snr_after_db",
    "si_sdr_before_db",
    "si_sdr_after_db",
    "snr_gain_db",
    "si_sdr_gain_db",
    "noise_reduction_db",
    "machine_change_db",
    "machine_removed_db",
)
"""The columns of ``evaluate_denoising`` (and, per window, of ``convergence_curve``)."""


def _measures(machine_near, noise_near, machine_out, noise_out) -> dict[str, np.ndarray]:
    """The ``evaluate_denoising`` columns for one clip or window (arrays ``(..., samples)``)."""
    before = machine_near + noise_near
    after = machine_out + noise_out
    m = {
        "snr_before_db": snr_db(machine_near, noise_near),
        "snr_after_db": snr_db(machine_near, after - machine_near),
        "si_sdr_before_db": si_sdr_db(machine_near, before),
        "si_sdr_after_db": si_sdr_db(machine_near, after),
        "noise_reduction_db": _ratio_db(noise_near, noise_out),
        "machine_change_db": _ratio_db(machine_out, machine_near),
        "machine_removed_db": _ratio_db(machine_out - machine_near, machine_near),
    }
    m["snr_gain_db"] = m["snr_after_db"] - m["snr_before_db"]
    m["si_sdr_gain_db"] = m["si_sdr_after_db"] - m["si_sdr_before_db"]
    return {name: m[name] for name in MEASURES}


def evaluate_denoising(machine, noise, oracle: bool = False, **settings) -> pd.DataFrame:
    """Measure the canceller on clips whose clean machine sound and noise are known.

    The near channel (primary) is ``machine[0] + noise[0]``, the far channel (reference)
    ``machine[1] + noise[1]``, as in ``asd_utils.data.synth``; the output is ``fblms``'s, split
    exactly into what became of the machine sound and of the noise (see ``_split_output``).

    Args:
        machine: clean machine sound at both microphones, ``(batch, 2, samples)`` or a sequence
            of ``(2, samples)`` arrays (lengths may differ); row 0 near mic, row 1 far mic
            (``synth.SynthClip.machine``).
        noise: the noise at both microphones, shaped like ``machine`` (``SynthClip.noise``).
        oracle: use the far noise alone as the reference, a far mic that hears no machine: the
            canceller then cannot remove machine sound, which isolates the cost of leakage.
        **settings: ``fblms`` settings (``filter_length``, ``step_size``, ``leakage``,
            ``block_size``, …).

    Returns:
        One row per clip, in input order; all in dB, over the whole clip (adaptation included):

        * ``snr_before_db`` / ``snr_after_db``: clean near machine sound over everything else
          in the near channel / in the output (machine sound the canceller removed counts as
          noise after);
        * ``si_sdr_before_db`` / ``si_sdr_after_db``: SI-SDR (``si_sdr_db``) of the near channel
          / of the output against the clean near machine sound;
        * ``snr_gain_db``, ``si_sdr_gain_db``: after minus before;
        * ``noise_reduction_db``: near noise power over the noise left in the output;
        * ``machine_change_db``: power of the machine part of the output over the clean near
          machine power (0: kept; negative: lost);
        * ``machine_removed_db``: power of the machine sound the canceller subtracted (it heard
          it at the far mic) over the clean near machine power (``-inf`` for the oracle).
    """
    parts = _split_output(machine, noise, oracle, settings)
    rows = [{k: float(v) for k, v in _measures(*p).items()} for p in parts]
    return pd.DataFrame(rows, columns=list(MEASURES))


def convergence_curve(
    machine, noise, window_seconds: float = 0.25, sample_rate: int = 16_000, **settings
) -> pd.DataFrame:
    """How the canceller's effect builds up within a clip: ``evaluate_denoising``'s measures in
    consecutive windows.

    Args:
        machine, noise: as for ``evaluate_denoising`` (the real far mic is the reference).
        window_seconds: window length; a last, shorter window is dropped.
        sample_rate: of the clips, in Hz.
        **settings: ``fblms`` settings.

    Returns:
        One row per clip and window: ``clip`` (index in the input), ``time_s`` (window centre,
        seconds from the clip start), and the columns of ``evaluate_denoising`` per window.
    """
    win = max(1, round(window_seconds * sample_rate))
    rows = []
    for clip, parts in enumerate(_split_output(machine, noise, False, settings)):
        n = parts[0].shape[-1] // win
        if n == 0:
            continue
        windows = [p[: n * win].reshape(n, win) for p in parts]
        measures = _measures(*windows)
        for k in range(n):
            rows.append(
                {"clip": clip, "time_s": (k + 0.5) * win / sample_rate}
                | {name: float(v[k]) for name, v in measures.items()}
            )
    return pd.DataFrame(rows, columns=["clip", "time_s", *MEASURES])
