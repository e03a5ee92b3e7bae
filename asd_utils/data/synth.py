"""The embedded synthetic DCASE 2026 Task 2 dataset.

A stand-in for the real development and evaluation sets with the same layout, file names,
``attributes_00.csv`` and audio format (stereo 16 kHz 16-bit WAV, channel 0 the near microphone,
channel 1 the far one), for the seven 2026 development machine types and the five evaluation ones
(:data:`EVAL_MACHINE_TYPES`, each rendered by a development type's sound model with conditions of
its own), with the attributes their real file names carry (six of the twelve 2026 machine types
carry none). Every development machine type has its own physically motivated sound model whose
attributes change the sound; anomalies are subtle and specific to the
machine (a fault adds its own sound and shifts the operating signature the attributes describe,
e.g. friction slows a motor); environmental noise reaches both microphones but is much stronger
at the far one, and reaches the near one later and through a room-like response (so that an
adaptive noise canceller with the far channel as reference can remove it, as in the 2026
recordings).

Everything is a pure function of (config, clip specification): a clip's clean machine signal and
its noise can be rendered again at any time (:func:`load_components`), which the ANC chapter uses
to measure SNR and SI-SDR against the truth.

Public entry points: :class:`SynthConfig`, :func:`clip_plan`, :func:`render_clip`,
:func:`generate_dataset`, :func:`load_components`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import signal
from tqdm import tqdm

from asd_utils.config.schema import Synth, optional_defaults
from asd_utils.data.audio import write_wav
from asd_utils.files import atomic_write_text, claim_folder, write_marker

log = logging.getLogger(__name__)

MACHINE_TYPES = ("ToyCarEmu", "ToyCar", "bearingEmu", "fan", "gearboxEmu", "sliderEmu", "valveEmu")
"""The 2026 development machine types, by their real names."""

EVAL_MACHINE_TYPES = ("ToyDrone", "ToothBrush", "SewingMachine", "BlowerDustCollector", "Sander")
"""The 2026 evaluation machine types, by their real names; each is rendered by one of the
development types' sound models (:data:`SOUND_MODELS`: ToyDrone by the toy car's, ToothBrush and
BlowerDustCollector by the fan's, SewingMachine by the slider's, Sander by the bearing's) with
conditions of its own, and named with the attributes its real file names carry."""

EVAL_CLIP_SECONDS = {
    "ToyDrone": 6.0,
    "ToothBrush": 6.0,
    "SewingMachine": 10.0,
    "BlowerDustCollector": 16.0,
    "Sander": 16.0,
}
"""Clip lengths of the evaluation machine types: the real 2026 evaluation clips are 6, 10 or
16 s; which type gets which length is our choice (the public listing gives names, not lengths)."""

CONFIG_FILE = "synth_config.json"
DATASET_FOLDERS = ("dev_data", "eval_data")  # what the generator writes beside its CONFIG_FILE
_SEQUENCES = ("machine_types", "eval_machine_types", "near_snr_db", "far_snr_db", "noise_path_ms")
"""The settings a profile writes as lists and :class:`SynthConfig` keeps as tuples."""
OPTIONAL = {k: tuple(v) if k in _SEQUENCES else v for k, v in optional_defaults(Synth).items()}
"""The optional settings' defaults: the schema's (:class:`asd_utils.config.schema.Synth`)."""


@dataclass(frozen=True)
class SynthConfig:
    """Sizes and acoustics of a synthetic dataset (one per profile; see ``profiles/*.yaml``).

    ``machine_types`` go to ``dev_data`` (labelled test names); ``eval_machine_types`` to
    ``eval_data``, whose test clips get anonymous names (``section_00_0000.wav``, in shuffled
    order), as the real evaluation set; both use the sound models of the 2026 development types.
    ``channels`` 2 writes stereo clips (ch0 near, ch1 far, the 2026 format), 1 the near channel
    only (the mono format of 2020–2025). ``noise_path_ms`` (decay time range) and
    ``noise_path_taps`` (length) shape the path by which the noise, born near the far
    microphone, reaches the near one: the default is short enough for System 3's canceller; the
    noise study of System 5 makes it long and reverberant, beyond what a 128-tap FIR removes.
    ``n_test`` clips are made for each of the four (domain, label) kinds, as the real 50/50/50/50.
    ``clip_seconds`` maps a machine type to its clip length (key ``default`` for the others; the
    real set has 12 s ToyCar/ToyCarEmu clips and 10 s for the rest; for the evaluation types
    :data:`EVAL_CLIP_SECONDS` is a choice among the real 6, 10 and 16 s). ``anomaly_severity``
    scales everything a fault does; ``fault_sound_level`` scales, on top, the sound a fault adds
    (not its shift of the operating signature). Its default 0.25 puts the autoencoder baseline
    near its level in the paper's Table 2 (measured under the quick profile: official score
    60.0 % with generator v3 and 59.5 % with v4, against 56.7 % reported on the real set; at 1.0
    it scored 66.5 %). The optional settings' defaults are the schema's (:data:`OPTIONAL`);
    built by hand (tests, benchmarks), the sizes default to the real 2026 development set's.
    """

    machine_types: tuple[str, ...] = MACHINE_TYPES
    n_train_source: int = 990
    n_train_target: int = 10
    n_test: int = 50
    clip_seconds: dict = field(
        default_factory=lambda: {
            "default": 10.0,
            "ToyCar": 12.0,
            "ToyCarEmu": 12.0,
            **EVAL_CLIP_SECONDS,
        }
    )
    sample_rate: int = OPTIONAL["sample_rate"]
    near_snr_db: tuple[float, float] = OPTIONAL["near_snr_db"]
    far_snr_db: tuple[float, float] = OPTIONAL["far_snr_db"]
    anomaly_severity: float = OPTIONAL["anomaly_severity"]
    fault_sound_level: float = OPTIONAL["fault_sound_level"]
    seed: int = 2026
    eval_machine_types: tuple[str, ...] = OPTIONAL["eval_machine_types"]
    channels: int = OPTIONAL["channels"]
    noise_path_ms: tuple[float, float] = OPTIONAL["noise_path_ms"]
    noise_path_taps: int = OPTIONAL["noise_path_taps"]

    @classmethod
    def from_section(cls, section: Synth) -> SynthConfig:
        """From a profile's validated ``synth`` section (:class:`asd_utils.config.schema.Synth`,
        whose keys, types, ranges and defaults the schema holds): every value as it has it."""
        values = section.model_dump()
        return cls(**{k: tuple(v) if k in _SEQUENCES else v for k, v in values.items()})

    @classmethod
    def from_dict(cls, values: dict) -> SynthConfig:
        """From plain values that no schema checked (a dataset's ``synth_config.json``);
        unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown synth settings {sorted(unknown)}; known: {sorted(known)}")
        values = dict(values)
        for key in _SEQUENCES:
            if key in values:
                values[key] = tuple(values[key])
        config = cls(**values)
        if config.channels not in (1, 2):
            raise ValueError(
                f"synth channels must be 1 (mono) or 2 (stereo), not {config.channels}"
            )
        both = set(config.machine_types) & set(config.eval_machine_types)
        if both:
            raise ValueError(
                f"machine types {sorted(both)} are in both machine_types and eval_machine_types"
            )
        return config

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """A short hash of every setting (and the generator version) that changes the audio."""
        payload = json.dumps({"version": GENERATOR_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def seconds(self, machine_type: str) -> float:
        return float(self.clip_seconds.get(machine_type, self.clip_seconds["default"]))


GENERATOR_VERSION = 4  # bump whenever a sound model changes, so old datasets are regenerated
# 2: faults also shift the operating signature (speed, load, timing), not only add a sound
# 3: a fault's own sound has its own level, SynthConfig.fault_sound_level (default 0.25)
# 4: file names carry the attributes of the real 2026 names (NAMED_ATTRIBUTES; six machine types
#    none), fan's model attribute is its speed 'spd'; eval_data sets and mono clips on request


# --- attributes: what each machine type's file names carry, and its domain shift -------------

# For each machine type: attribute name → (source-domain values, target-domain values), the
# operating conditions the sound model uses. The target domain uses conditions never seen in the
# source domain, as in DCASE. Which of them a file name shows is NAMED_ATTRIBUTES' business.
ATTRIBUTES: dict[str, dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "ToyCar": {
        "car": (("A1", "B1", "C1"), ("D1",)),
        "spd": (("28V", "31V", "34V"), ("40V",)),
        "mic": (("1",), ("1",)),
    },
    "ToyCarEmu": {
        "car": (("A2", "B2", "C2"), ("E2",)),
        "spd": (("28V", "31V"), ("37V",)),
        "mic": (("1", "2"), ("2",)),
        "mic2": (("1",), ("1",)),  # the real names repeat the key: ..._mic_2_mic_1
    },
    "bearingEmu": {
        "vel": (("6", "10", "14"), ("22",)),
        "loc": (("A", "B"), ("C",)),
    },
    "fan": {
        "spd": (("1", "2"), ("3",)),
    },
    "gearboxEmu": {
        "volt": (("1.0", "1.3"), ("1.8",)),
        "wt": (("0", "50"), ("150",)),
    },
    "sliderEmu": {
        "vel": (("300", "500"), ("800",)),
        "ac": (("0.05", "0.10"), ("0.30",)),
    },
    "valveEmu": {
        "pat": (("00", "01"), ("03",)),
    },
    # The evaluation types: the conditions of the sound model that renders each (EVAL_MACHINE_TYPES,
    # SOUND_MODELS), with values of their own, so no two types sound alike.
    "ToyDrone": {  # the toy car's model: a small DC motor (propellers: a higher voltage)
        "car": (("A1", "B1", "C1"), ("D1",)),
        "spd": (("48V", "52V", "56V"), ("64V",)),
        "mic": (("1", "2"), ("2",)),
        "mic2": (("1",), ("1",)),  # the real names repeat the key: ..._mic_2_mic_1
    },
    "ToothBrush": {  # the fan's model: a small motor whirring; its speed in no name
        "spd": (("brush-1", "brush-2"), ("brush-3",)),
    },
    "SewingMachine": {  # the slider's model: a needle bar's strokes, a click at each end
        "vel": (("400", "600"), ("900",)),
        "ac": (("0.08", "0.12"), ("0.25",)),
    },
    "BlowerDustCollector": {  # the fan's model: the blower's power, its nozzle the air noise
        "spd": (("blower-1", "blower-2"), ("blower-3",)),
        "nzl": (("1", "2"), ("3",)),
    },
    "Sander": {  # the bearing's model: a rotating pad; the grit shapes the rough rolling noise
        "vel": (("30", "40", "50"), ("70",)),
        "loc": (("120", "180"), ("240",)),
    },
}

# What the file names carry, as in the public listing of the real 2026 names (the official
# development and evaluation sets' file names): (key in the name, condition above, value
# renaming or None). Six machine types (ToyCar, bearingEmu, sliderEmu, valveEmu, SewingMachine,
# ToothBrush) name none (``..._0000_noAttribute.wav``):
# their conditions still change the sound and still shift between domains, unnamed.
NAMED_ATTRIBUTES: dict[str, list[tuple[str, str, dict | None]]] = {
    "ToyCar": [],
    "ToyCarEmu": [
        ("car", "car", None),
        ("spd", "spd", None),
        ("mic", "mic", None),
        ("mic", "mic2", None),
    ],
    "bearingEmu": [],
    "fan": [("spd", "spd", None)],
    "gearboxEmu": [("pro", "volt", {"1.0": "A", "1.3": "B", "1.8": "C"})],
    "sliderEmu": [],
    "valveEmu": [],
    "ToyDrone": [
        ("car", "car", None),
        ("spd", "spd", {"48V": "1", "52V": "2", "56V": "3", "64V": "4"}),
        ("mic", "mic", None),
        ("mic", "mic2", None),
    ],
    "ToothBrush": [],
    "SewingMachine": [],
    "BlowerDustCollector": [
        ("nzl", "nzl", None),
        ("pow", "spd", {"blower-1": "1", "blower-2": "2", "blower-3": "3"}),
    ],
    "Sander": [("spd", "vel", {"30": "3", "40": "4", "50": "5", "70": "7"}), ("grit", "loc", None)],
}

NOISE_TYPES = ("factory", "hum", "impacts", "babble")


@dataclass(frozen=True)
class ClipSpec:
    """One clip to render: its DCASE identity and the seed of everything random in it."""

    machine_type: str
    domain: str
    split: str
    label: str
    index: int
    attributes: dict
    seed: int
    dataset: str = "dev"
    anonymous_index: int | None = None  # eval test clips: the number in section_00_<NNNN>.wav

    @property
    def attribute_string(self) -> str:
        """The attributes the file name shows (:data:`NAMED_ATTRIBUTES`), ``"noAttribute"`` if
        none, as in the real 2026 names."""
        tokens = [
            f"{key}_{(rename or {}).get(self.attributes[condition], self.attributes[condition])}"
            for key, condition, rename in NAMED_ATTRIBUTES[self.machine_type]
        ]
        return "_".join(tokens) or "noAttribute"

    @property
    def file_name(self) -> str:
        if self.anonymous_index is not None:
            return f"section_00_{self.anonymous_index:04d}.wav"
        stem = f"section_00_{self.domain}_{self.split}_{self.label}_{self.index:04d}"
        return f"{stem}_{self.attribute_string}.wav"


def clip_plan(config: SynthConfig) -> list[ClipSpec]:
    """Every clip of the dataset, in a fixed order; attributes and seeds drawn from ``config.seed``.

    Training clips are normal; test clips are ``n_test`` of each (domain, label) kind. Indices
    restart per (domain, split, label), as in the real file names. Test clips of
    ``eval_machine_types`` get anonymous indices, a random permutation of 0 … 4·n_test − 1.
    """
    unknown = set(config.machine_types + config.eval_machine_types) - set(ATTRIBUTES)
    if unknown:
        raise ValueError(
            f"no sound model for machine types {sorted(unknown)}; known: "
            f"{MACHINE_TYPES + EVAL_MACHINE_TYPES}"
        )
    plan = []
    datasets = ["dev"] * len(config.machine_types) + ["eval"] * len(config.eval_machine_types)
    for m, machine_type in enumerate(config.machine_types + config.eval_machine_types):
        dataset = datasets[m]
        rng = np.random.default_rng([config.seed, m])
        anonymous = iter(np.random.default_rng([config.seed, m, 1]).permutation(4 * config.n_test))
        kinds = [
            ("source", "train", "normal", config.n_train_source),
            ("target", "train", "normal", config.n_train_target),
        ] + [
            (d, "test", lab, config.n_test)
            for d in ("source", "target")
            for lab in ("normal", "anomaly")
        ]
        for domain, split, label, count in kinds:
            for index in range(count):
                choices = ATTRIBUTES[machine_type]
                attributes = {
                    name: str(rng.choice(values[0 if domain == "source" else 1]))
                    for name, values in choices.items()
                }
                plan.append(
                    ClipSpec(
                        machine_type,
                        domain,
                        split,
                        label,
                        index,
                        attributes,
                        int(rng.integers(2**31)),
                        dataset,
                        int(next(anonymous)) if dataset == "eval" and split == "test" else None,
                    )
                )
    return plan


# --- signal building blocks -------------------------------------------------------------------


def _phase(freq: np.ndarray | float, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Instantaneous phase (radians) of a tone whose frequency (Hz) may vary per sample."""
    freq = np.broadcast_to(np.asarray(freq, dtype=np.float64), (n,))
    return 2 * np.pi * np.cumsum(freq) / sr + rng.uniform(0, 2 * np.pi)


def _wander(
    n: int, sr: int, rng: np.random.Generator, depth: float, rate_hz: float = 0.5
) -> np.ndarray:
    """Slow random fluctuation around 1 (speed drift of a real motor): 1 + depth · smooth noise."""
    knots = max(4, int(n / sr * rate_hz) + 2)
    curve = np.interp(np.linspace(0, knots - 1, n), np.arange(knots), rng.standard_normal(knots))
    return 1.0 + depth * curve


def _harmonics(f0: np.ndarray | float, amps: np.ndarray, n: int, sr: int, rng) -> np.ndarray:
    """Sum of harmonics k·f0 (k = 1 … len(amps)), random phases; partials near Nyquist dropped."""
    base = _phase(f0, n, sr, rng)
    top = np.max(f0) if np.ndim(f0) else f0
    out = np.zeros(n)
    for k, a in enumerate(amps, start=1):
        if k * top < 0.45 * sr and a > 0:
            out += a * np.sin(k * base + rng.uniform(0, 2 * np.pi))
    return out


def _coloured_noise(n: int, rng: np.random.Generator, exponent: float = 1.0) -> np.ndarray:
    """Gaussian noise with power spectrum ∝ 1/f^exponent (0 white, 1 pink, 2 brown), unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1.0
    noise = np.fft.irfft(spec / f ** (exponent / 2), n)
    return noise / (np.std(noise) + 1e-12)


def _band(x: np.ndarray, low: float, high: float, sr: int, order: int = 4) -> np.ndarray:
    sos = signal.butter(order, [low, min(high, 0.49 * sr)], btype="band", fs=sr, output="sos")
    return signal.sosfilt(sos, x)


def _resonant_impulses(
    times: np.ndarray, amps: np.ndarray, freq: float, decay_s: float, n: int, sr: int
) -> np.ndarray:
    """Impulses at ``times`` (s) with ``amps``, each ringing a damped sinusoid at ``freq`` Hz."""
    train = np.zeros(n)
    idx = np.round(np.asarray(times) * sr).astype(int)
    keep = (idx >= 0) & (idx < n)
    np.add.at(train, idx[keep], np.asarray(amps)[keep])
    t = np.arange(int(5 * decay_s * sr)) / sr
    kernel = np.exp(-t / decay_s) * np.sin(2 * np.pi * freq * t)
    return signal.oaconvolve(train, kernel)[:n]


def _room_response(
    rng: np.random.Generator, sr: int, delay_ms: float, rt_ms: float, taps: int
) -> np.ndarray:
    """A room-like FIR: a direct path after ``delay_ms`` then an exponentially decaying tail."""
    h = np.zeros(taps)
    delay = int(delay_ms * sr / 1000)
    h[delay] = 1.0
    tail = np.arange(taps - delay - 1)
    h[delay + 1 :] = (
        0.35 * rng.standard_normal(tail.size) * np.exp(-tail / (rt_ms * sr / 1000 / 6.9))
    )
    return h / np.sqrt(np.sum(h**2))


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)) + 1e-12)


def _name_seed(*parts: str) -> int:
    """A stable integer from strings (so one attribute value always gives the same sound)."""
    return int.from_bytes(hashlib.sha256("/".join(parts).encode()).digest()[:4], "little")


# --- the machine sound models -----------------------------------------------------------------
# Each takes (attributes, fault, n, sr, rng, severity, sound) and returns the machine's sound at
# the near microphone, before noise: ``severity`` scales a fault's shift of the operating
# signature, ``sound`` the level of the sound it adds. Speeds drift slightly and every clip has
# its own phases and levels, so normal clips vary; anomalies are small changes of the physics,
# not added beeps.
# ``fault`` is None for a normal clip, else the generator of everything random about the fault
# (a separate stream, so a normal clip's sound does not depend on how faults are drawn). A fault
# does two things, as in real machines: it adds its own sound (impacts, sidebands, a whistle, a
# leak) AND it shifts the operating signature the attributes describe (friction slows a motor,
# a cracked tooth or a sticking armature changes the load and the timing) by a few per cent, less
# than the step between two attribute values.


def _toy_car(attrs, fault, n, sr, rng, severity, sound):
    volts = float(attrs["spd"].rstrip("V"))
    car = np.random.default_rng(_name_seed("car", attrs["car"]))
    load = 1.0 if fault is None else 1 - severity * fault.uniform(0.015, 0.03)  # friction
    f_motor = 7.5 * volts * load * _wander(n, sr, rng, 0.01)  # motor rotation, Hz
    envelope = car.uniform(0.2, 1.0, 14) / np.arange(1, 15) ** 0.6
    x = _harmonics(f_motor, envelope, n, sr, rng)
    f_gear = f_motor * car.choice([3.2, 3.7, 4.1])  # gear mesh
    x += 0.4 * _harmonics(f_gear, [1.0, 0.5, 0.25], n, sr, rng)
    f_wheel = f_motor / 12
    rolling = _band(_coloured_noise(n, rng, 1.0), 300, 3000, sr)
    x += 0.8 * _rms(x) / _rms(rolling) * rolling * (1 + 0.2 * np.sin(_phase(f_wheel, n, sr, rng)))
    if attrs.get("mic") == "2":  # the second mic position hears more high frequencies
        x = x + 0.5 * signal.lfilter([1, -0.9], [1], x)
    if fault is not None:
        kind = rng.integers(3)
        if kind == 0:  # bent shaft: amplitude modulation at the wheel rate
            x *= 1 + 0.25 * sound * np.sin(_phase(f_wheel * 2, n, sr, rng))
        elif kind == 1:  # gear damage: sidebands around the gear mesh
            side = _harmonics(f_gear + f_wheel * 3, [1.0], n, sr, rng)
            x += 0.25 * sound * _rms(x) * side / _rms(side)
        else:  # tyre damage: a thump once per wheel revolution
            period = 1 / np.mean(f_wheel)
            times = np.arange(rng.uniform(0, period), n / sr, period)
            thumps = _resonant_impulses(times, np.ones(times.size), 180.0, 0.01, n, sr)
            x += 0.6 * sound * _rms(x) * thumps / _rms(thumps)
    return x


def _bearing(attrs, fault, n, sr, rng, severity, sound):
    # A defect adds friction: the shaft slows and the rolling noise grows.
    slow, rough = (
        (1.0, 1.0)
        if fault is None
        else (1 - severity * fault.uniform(0.01, 0.02), 1 + severity * fault.uniform(0.15, 0.25))
    )
    f_shaft = float(attrs["vel"]) * slow * _wander(n, sr, rng, 0.005)
    loc = np.random.default_rng(_name_seed("loc", attrs["loc"]))
    x = _harmonics(f_shaft, [1.0, 0.5, 0.3, 0.2, 0.1], n, sr, rng)
    hiss = _band(_coloured_noise(n, rng, 0.5), 2500, 7000, sr)
    x += 0.6 * hiss * _rms(x) / _rms(hiss)
    roll = _band(_coloured_noise(n, rng, 1.0), 400, 1500, sr)
    x += rough * loc.uniform(0.3, 0.8) * roll * _rms(x) / _rms(roll)
    if fault is not None:
        # A localised defect: impulses at the outer- or inner-race defect frequency exciting a
        # structural resonance, with slip jitter (Randall & Antoni 2011).
        order = rng.choice([3.57, 5.43])
        period = 1 / (order * np.mean(f_shaft))
        times = np.arange(rng.uniform(0, period), n / sr, period)
        times += rng.normal(0, 0.01 * period, times.size)
        amps = 1 + 0.3 * rng.standard_normal(times.size)
        if order > 5:  # inner race: modulated by the shaft rotation
            amps *= 1 + 0.8 * np.cos(2 * np.pi * np.mean(f_shaft) * times)
        pulses = _resonant_impulses(times, amps, rng.uniform(3000, 4500), 0.0015, n, sr)
        x += 0.35 * sound * _rms(x) * pulses / _rms(pulses)
    return x


def _fan(attrs, fault, n, sr, rng, severity, sound):
    model = np.random.default_rng(_name_seed("fan", attrs["spd"]))
    blades = int(model.integers(5, 10))
    # Imbalance or clogging loads the motor (it slows) and chokes the air flow.
    slow, choke = (
        (1.0, 1.0)
        if fault is None
        else (1 - severity * fault.uniform(0.015, 0.03), 1 - severity * fault.uniform(0.1, 0.2))
    )
    f_rot = model.uniform(18, 30) * slow * _wander(n, sr, rng, 0.01)
    bpf = blades * f_rot
    x = _harmonics(bpf, model.uniform(0.3, 1.0, 6) / np.arange(1, 7), n, sr, rng)
    air = _band(_coloured_noise(n, rng, 1.0), 150, 5000, sr)
    air *= 1 + 0.3 * np.sin(_phase(bpf, n, sr, rng))
    # BlowerDustCollector's nozzle (1, 2, 3) scales the air noise; the fan has none (× 1.0 exactly)
    nozzle = 0.75 + 0.25 * (float(attrs["nzl"]) - 1) if "nzl" in attrs else 1.0
    x += choke * model.uniform(1.0, 2.0) * air * _rms(x) / _rms(air) * nozzle
    if fault is not None:
        kind = rng.integers(2)
        if kind == 0:  # imbalance: a once-per-revolution component and modulation
            x *= 1 + 0.2 * sound * np.sin(_phase(f_rot, n, sr, rng))
            x += 0.2 * sound * _rms(x) * _harmonics(f_rot, [1.0, 0.5], n, sr, rng)
        else:  # damaged blade / clogging: a whistle that rides on the blade rate
            whistle = np.sin(_phase(rng.uniform(900, 2500) * f_rot / np.mean(f_rot), n, sr, rng))
            x += 0.12 * sound * _rms(x) * whistle
    return x


def _gearbox(attrs, fault, n, sr, rng, severity, sound):
    volts, load = float(attrs["volt"]), float(attrs["wt"])
    if fault is not None:  # a damaged tooth meshes badly: more load, a slower shaft
        load += severity * fault.uniform(10, 20)
        volts *= 1 - severity * fault.uniform(0.015, 0.03)
    f_shaft = 14.0 * volts * _wander(n, sr, rng, 0.01)
    teeth = 23
    gmf = teeth * f_shaft
    x = _harmonics(gmf, [1.0, 0.5, 0.3], n, sr, rng)
    side_level = 0.1 + load / 500  # load strengthens the shaft-rate sidebands
    x += side_level * _harmonics(gmf + f_shaft, [1.0, 0.3], n, sr, rng)
    x += side_level * _harmonics(gmf - f_shaft, [1.0, 0.3], n, sr, rng)
    x += 0.5 * _harmonics(f_shaft, [1.0, 0.4], n, sr, rng)
    body = _band(_coloured_noise(n, rng, 1.0), 100, 4000, sr)
    x += (0.5 + load / 400) * body * _rms(x) / _rms(body)
    if fault is not None:
        # A cracked/broken tooth: one impact per revolution of the shaft, ringing the housing.
        period = 1 / np.mean(f_shaft)
        times = np.arange(rng.uniform(0, period), n / sr, period)
        hits = _resonant_impulses(times, np.ones(times.size), rng.uniform(1500, 3000), 0.003, n, sr)
        x += 0.4 * sound * _rms(x) * hits / _rms(hits)
    return x


def _slider(attrs, fault, n, sr, rng, severity, sound):
    vel, acc = float(attrs["vel"]), float(attrs["ac"])
    if fault is not None:  # rail damage or dry rails: friction slows the carriage
        vel *= 1 - severity * fault.uniform(0.02, 0.04)
    stroke_s = 0.3 + 200.0 / vel + 0.02 / acc  # one traverse of the rail, s
    t = np.arange(n) / sr
    moving = (np.sin(np.pi * t / stroke_s + rng.uniform(0, np.pi)) ** 2) ** 0.25
    f_motor = vel * 0.4 * _wander(n, sr, rng, 0.01)
    x = moving * _harmonics(f_motor, [1.0, 0.6, 0.4, 0.2], n, sr, rng)
    friction = _band(_coloured_noise(n, rng, 0.5), 1000, 6000, sr)
    x += 0.5 * moving * friction * _rms(x) / _rms(friction)
    ends = np.arange(rng.uniform(0, stroke_s), n / sr, stroke_s)
    clicks = _resonant_impulses(ends, np.ones(ends.size), 1200.0, 0.004, n, sr)
    x += 0.8 * _rms(x) * clicks / _rms(clicks)
    if fault is not None:
        kind = rng.integers(2)
        if kind == 0:  # rail damage: a tick mid-stroke
            mids = ends + stroke_s * rng.uniform(0.3, 0.7)
            ticks = _resonant_impulses(mids, np.ones(mids.size), 2500.0, 0.002, n, sr)
            x += 0.35 * sound * _rms(x) * ticks / _rms(ticks)
        else:  # lack of grease: a squeal while moving
            squeal = moving * np.sin(_phase(rng.uniform(2000, 3500), n, sr, rng))
            x += 0.12 * sound * _rms(x) * squeal
    return x


VALVE_PATTERNS = {"00": (0.5, 0.5), "01": (0.3, 0.7), "02": (0.8, 0.4), "03": (0.25, 0.25)}


def _valve(attrs, fault, n, sr, rng, severity, sound):
    on_s, off_s = VALVE_PATTERNS[attrs["pat"]]
    if fault is not None:  # a sticking armature: the valve opens late and closes early
        on_s *= 1 - severity * fault.uniform(0.04, 0.08)
    jitter = rng.normal(0, 0.01, 64)
    opens = np.cumsum(np.tile([on_s + off_s], 64) + jitter) - rng.uniform(0, on_s + off_s)
    opens = opens[(opens > -on_s) & (opens < n / sr)]
    closes = opens + on_s
    clicks = _resonant_impulses(opens, np.ones(opens.size), 900.0, 0.006, n, sr)
    clicks += _resonant_impulses(closes, 0.7 * np.ones(closes.size), 1400.0, 0.005, n, sr)
    t = np.arange(n) / sr
    is_open = np.zeros(n, dtype=bool)
    for start in opens:  # at most a few dozen events per clip
        is_open |= (t >= start) & (t < start + on_s)
    flow = _band(_coloured_noise(n, rng, 0.5), 500, 4000, sr) * is_open
    x = clicks / _rms(clicks) + 0.3 * flow / (_rms(flow) + 1e-9)
    x += 0.05 * _coloured_noise(n, rng, 1.5)  # the pump behind the valve
    if fault is not None:
        kind = rng.integers(2)
        if kind == 0:  # contamination: the armature bounces, a weak second click
            bounce = _resonant_impulses(
                opens + rng.uniform(0.015, 0.04), np.ones(opens.size), 1100.0, 0.004, n, sr
            )
            x += 0.35 * sound * _rms(x) * bounce / _rms(bounce)
        else:  # a leak: flow noise while the valve is closed
            leak = _band(_coloured_noise(n, rng, 0.5), 2000, 6000, sr) * ~is_open
            x += 0.15 * sound * _rms(x) * leak / (_rms(leak) + 1e-9)
    return x


SOUND_MODELS = {
    "ToyCar": _toy_car,
    "ToyCarEmu": _toy_car,
    "bearingEmu": _bearing,
    "fan": _fan,
    "gearboxEmu": _gearbox,
    "sliderEmu": _slider,
    "valveEmu": _valve,
    # the evaluation types, each by the model of a development type (EVAL_MACHINE_TYPES)
    "ToyDrone": _toy_car,
    "ToothBrush": _fan,
    "SewingMachine": _slider,
    "BlowerDustCollector": _fan,
    "Sander": _bearing,
}


# --- environmental noise ----------------------------------------------------------------------


def _environment_noise(kind: str, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Factory-floor background as heard at the far microphone (unit RMS)."""
    if kind == "factory":
        x = _coloured_noise(n, rng, 1.2)
    elif kind == "hum":  # other machinery: mains hum and a distant motor, over pink noise
        x = _harmonics(50.0, [1.0, 0.6, 0.4, 0.3, 0.2], n, sr, rng)
        x += _harmonics(rng.uniform(90, 140), [0.5, 0.3, 0.2], n, sr, rng)
        x += 0.7 * _coloured_noise(n, rng, 1.0)
    elif kind == "impacts":  # hammering and dropped parts
        times = np.sort(rng.uniform(0, n / sr, max(1, int(n / sr * 2))))
        x = _resonant_impulses(
            times, rng.uniform(0.3, 1.0, times.size), rng.uniform(300, 900), 0.03, n, sr
        )
        x = x / _rms(x) + 0.5 * _coloured_noise(n, rng, 1.0)
    elif kind == "babble":  # speech-like modulated bands
        x = np.zeros(n)
        for _ in range(4):
            env = np.clip(_wander(n, sr, rng, 1.0, rate_hz=4.0), 0, None)
            x += env * _band(_coloured_noise(n, rng, 0.0), 200, 3500, sr)
    else:
        raise ValueError(f"unknown noise type {kind!r}")
    return x / _rms(x)


# --- one clip ---------------------------------------------------------------------------------


@dataclass
class SynthClip:
    """A rendered clip and its parts, each (2, samples) float64 (ch0 near, ch1 far).

    ``audio = machine + noise`` exactly (before 16-bit quantisation).
    """

    machine: np.ndarray
    noise: np.ndarray
    noise_type: str

    @property
    def audio(self) -> np.ndarray:
        return self.machine + self.noise


def render_clip(spec: ClipSpec, config: SynthConfig) -> SynthClip:
    """Render one clip: machine sound at both microphones plus environmental noise."""
    sr = config.sample_rate
    n = int(round(config.seconds(spec.machine_type) * sr))
    rng = np.random.default_rng(spec.seed)
    fault = np.random.default_rng([spec.seed, 1]) if spec.label == "anomaly" else None
    machine = SOUND_MODELS[spec.machine_type](
        spec.attributes,
        fault,
        n,
        sr,
        rng,
        config.anomaly_severity,
        config.anomaly_severity * config.fault_sound_level,
    )
    machine *= 10 ** (rng.uniform(-1.5, 1.5) / 20) * 0.05 / _rms(machine)  # level varies ±1.5 dB
    emulated = spec.machine_type.endswith("Emu")
    if emulated:  # *Emu types: the source is convolved with a measured-like impulse response
        machine = signal.oaconvolve(machine, _room_response(rng, sr, 0.0, 40.0, 512))[:n]
    # The far microphone hears the machine later, weaker and more reverberant.
    to_far = _room_response(rng, sr, rng.uniform(3, 8), rng.uniform(60, 150), 2048)
    machine_far = signal.oaconvolve(machine, to_far)[:n] * 10 ** (-12 / 20)

    # Noise sits near the far microphone: it reaches the near microphone later, through a
    # room-like path short enough for an adaptive canceller to model (Widrow et al. 1975).
    noise_type = str(rng.choice(NOISE_TYPES))
    noise_far = _environment_noise(noise_type, n, sr, rng)
    to_near = _room_response(
        rng, sr, rng.uniform(1, 4), rng.uniform(*config.noise_path_ms), config.noise_path_taps
    )
    noise_near = signal.oaconvolve(noise_far, to_near)[:n]
    near_snr = rng.uniform(*config.near_snr_db)
    noise_gain = _rms(machine) / _rms(noise_near) * 10 ** (-near_snr / 20)
    noise_near *= noise_gain
    noise_far *= noise_gain
    # Keep the far SNR in its range: the far mic sits close to the noise source.
    far_snr = 20 * np.log10(_rms(machine_far) / _rms(noise_far))
    lo, hi = config.far_snr_db
    if not lo <= far_snr <= hi:
        machine_far *= 10 ** ((np.clip(far_snr, lo, hi) - far_snr) / 20)
    return SynthClip(
        machine=np.stack([machine, machine_far]),
        noise=np.stack([noise_near, noise_far]),
        noise_type=noise_type,
    )


# --- the dataset on disk ----------------------------------------------------------------------


def _machine_dir(root: Path, machine_type: str, dataset: str = "dev") -> Path:
    return root / f"{dataset}_data" / "raw" / machine_type


def _write_clip(root: Path, config: SynthConfig, spec: ClipSpec) -> None:
    """Render one clip and write it where its spec says (channels as the config asks)."""
    clip = render_clip(spec, config)
    folder = _machine_dir(root, spec.machine_type, spec.dataset)
    audio = clip.audio[: config.channels].astype(np.float32)
    write_wav(folder / spec.split / spec.file_name, audio, config.sample_rate)


def _write_clips(root: Path, config: SynthConfig, specs: list[ClipSpec]) -> int:
    """A worker's share of :func:`generate_dataset`; returns how many clips it wrote."""
    for spec in specs:
        _write_clip(root, config, spec)
    return len(specs)


def _render_clips(
    root: Path, config: SynthConfig, plan: list[ClipSpec], workers: int | None, progress: bool
) -> None:
    """Write every clip of ``plan`` with ``workers`` processes (default: one per core, but one
    for a handful of clips); every clip is a pure function of its spec, so the files do not
    depend on how they are shared out."""
    if workers is None:  # one process per core, but not for a handful of clips
        workers = min(os.cpu_count() or 1, max(1, len(plan) // 50))
    # every clip is a pure function of its spec; chunks of ~25 clips keep the bar moving
    n_chunks = max(workers, len(plan) // 25)
    chunks = [plan[i::n_chunks] for i in range(n_chunks)]
    bar = tqdm(total=len(plan), desc="synthesising clips", disable=not progress, mininterval=2)
    if workers == 1:
        for spec in plan:
            _write_clip(root, config, spec)
            bar.update()
    else:  # spawn: a forked child would inherit the parent's torch/BLAS thread state
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            jobs = [pool.submit(_write_clips, root, config, chunk) for chunk in chunks]
            for job in as_completed(jobs):
                bar.update(job.result())
    bar.close()


def _write_attribute_files(root: Path, config: SynthConfig, plan: list[ClipSpec]) -> None:
    """``attributes_00.csv`` per machine type: each named clip (not the anonymous eval test
    clips) with its attribute tokens, under the header ``file_name,d1p,d1v,…``."""
    for machine_type in config.machine_types + config.eval_machine_types:
        lines, dataset = [], None
        for spec in plan:
            if spec.machine_type == machine_type and spec.anonymous_index is None:
                dataset = spec.dataset
                tokens = (
                    spec.attribute_string.split("_")
                    if spec.attribute_string != "noAttribute"
                    else []
                )
                lines.append(",".join([f"{machine_type}/{spec.split}/{spec.file_name}", *tokens]))
        n_attr = len(NAMED_ATTRIBUTES[machine_type])
        header = ",".join(["file_name"] + [f"d{i}{s}" for i in range(1, n_attr + 1) for s in "pv"])
        atomic_write_text(
            _machine_dir(root, machine_type, dataset) / "attributes_00.csv",
            "\n".join([header, *lines]) + "\n",
        )


def generate_dataset(
    root: str | Path,
    config: SynthConfig,
    progress: bool = True,
    replace: bool = False,
    workers: int | None = None,
) -> Path:
    """Write the dataset under ``root`` in the DCASE layout, unless it is already there.

    ``root/dev_data/raw/<machine_type>/{train,test}/*.wav`` and ``attributes_00.csv`` per machine
    type (``eval_data/raw/...`` for ``eval_machine_types``, whose attribute file lists the
    training clips only, as the test names are anonymous), plus ``root/synth_config.json`` (the
    config and its fingerprint), written last, so a crash leaves no config file and the next call
    starts again. A root holding a dataset made with another config (or an older generator
    version) is never silently reused: it is an error, or with ``replace=True`` (a profile's own
    synthetic root, which only this function writes) its ``dev_data`` and ``eval_data`` trees
    are deleted and made again. A root holding anything else (a real DCASE tree, the user's
    files: :func:`asd_utils.files.claim_folder`) is refused before anything is written or
    deleted; the generator marks its root first. ``workers`` processes render the clips
    (default: one per core for more than 100 clips); the files do not depend on it.
    """
    root = Path(root)
    record = root / CONFIG_FILE
    own = (CONFIG_FILE, *DATASET_FOLDERS)
    claim_folder(root, "the synthetic data root", own if record.is_file() else ())
    if record.exists():
        found = json.loads(record.read_text())
        if found.get("fingerprint") == config.fingerprint():
            return root
        why = (
            f"{root} holds a synthetic dataset made with other settings or generator version "
            f"(fingerprint {found.get('fingerprint')}, version {found.get('generator_version')}; "
            f"wanted {config.fingerprint()}, version {GENERATOR_VERSION})"
        )
        if not replace:
            raise FileExistsError(f"{why}; delete it or choose another data_root")
        log.info("%s: making it again", why)
        record.unlink()
        for part in DATASET_FOLDERS:
            shutil.rmtree(root / part, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    write_marker(root, own)  # first: a crash leaves a root the next call may finish
    start = time.perf_counter()
    plan = clip_plan(config)
    log.info("synthetic data: rendering %s clips into %s …", f"{len(plan):,}", root)
    _render_clips(root, config, plan, workers, progress)
    _write_attribute_files(root, config, plan)
    seconds = round(time.perf_counter() - start, 1)
    log.info("synthetic data: %s clips made in %.1f s", f"{len(plan):,}", seconds)
    atomic_write_text(
        record,
        json.dumps(
            {
                "fingerprint": config.fingerprint(),
                "generator_version": GENERATOR_VERSION,
                "config": config.to_dict(),
                "clips": len(plan),
                "seconds": seconds,
            },
            indent=2,
        ),
    )
    return root


def read_config(root: str | Path) -> SynthConfig:
    """The config a synthetic dataset under ``root`` was made with."""
    record = Path(root) / CONFIG_FILE
    if not record.exists():
        raise FileNotFoundError(
            f"{record} not found: {root} is not a synthetic dataset made by asd_utils.data.synth"
        )
    return SynthConfig.from_dict(json.loads(record.read_text())["config"])


def load_components(root: str | Path, machine_type: str, file_name: str) -> SynthClip:
    """Render a written clip again and hand back its clean machine signal and noise separately."""
    config = read_config(root)
    for spec in clip_plan(config):
        if spec.machine_type == machine_type and spec.file_name == Path(file_name).name:
            return render_clip(spec, config)
    raise KeyError(f"{machine_type}/{file_name} is not a clip of the synthetic dataset in {root}")


def plan_table(config: SynthConfig) -> pd.DataFrame:
    """The clip plan as a table (machine_type, domain, split, label, index, attributes, name)."""
    return pd.DataFrame(
        [
            dict(
                dataset=s.dataset,
                machine_type=s.machine_type,
                domain=s.domain,
                split=s.split,
                label=s.label,
                index=s.index,
                attributes="" if s.attribute_string == "noAttribute" else s.attribute_string,
                file_name=s.file_name,
            )
            for s in clip_plan(config)
        ]
    )


def snr_table(root: str | Path, clips: pd.DataFrame) -> pd.DataFrame:
    """True SNR (dB) of machine sound over noise at both microphones, for clips of a synthetic set.

    ``clips``: rows of the clip table (``machine_type``, ``file_name``). Each clip is rendered
    again from the dataset's config file, so the clean parts are exact. Returns ``machine_type,
    file_name, noise_type, near_snr_db, far_snr_db``.
    """
    config = read_config(root)
    specs = {(s.machine_type, s.file_name): s for s in clip_plan(config)}
    rows = []
    for machine_type, file_name in zip(clips["machine_type"], clips["file_name"], strict=True):
        clip = render_clip(specs[(machine_type, file_name)], config)
        snr = [20 * np.log10(_rms(clip.machine[c]) / _rms(clip.noise[c])) for c in (0, 1)]
        rows.append(
            {
                "machine_type": machine_type,
                "file_name": file_name,
                "noise_type": clip.noise_type,
                "near_snr_db": snr[0],
                "far_snr_db": snr[1],
            }
        )
    return pd.DataFrame(rows)
