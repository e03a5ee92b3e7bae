"""Run keys survive the typed profile (issue 33 item 1): the smoke and quick run folders'
keys, computed on main before the profile was typed, are what
:func:`asd_utils.systems.run_dir` still gives for crops in samples, so nothing already trained
is trained again; crops taken in frames of each clip's fbank (issue 37,
:func:`asd_utils.systems.crops_in_frames`) are another recipe and key their own folders."""

import pandas as pd
import pytest

from asd_utils import config, data, systems

# the run folders of the smoke and quick profiles on the table below (computed before the
# change; both train in float32, so the keys do not depend on the machine)
KNOWN = {
    ("smoke", "System 1"): "System_1-bfc7ce13e2",
    ("smoke", "System 2"): "System_2-f5d7a5fe39",
    ("smoke", "System 3"): "System_3-7964c7cfad",
    ("smoke", "System 5"): "System_5-fad2c9b8ca",
    ("quick", "System 1"): "System_1-adda954422",
    ("quick", "System 2"): "System_2-82070040e6",
    ("quick", "System 3"): "System_3-4cfed251b0",
    ("quick", "System 5"): "System_5-aa5b5fb454",
}
# the same runs with crops in frames (the profiles' choice since issue 37)
FRAMES = {
    ("smoke", "System 1"): "System_1-cc60777633",
    ("smoke", "System 2"): "System_2-ead0caa398",
    ("smoke", "System 3"): "System_3-d209abf89e",
    ("smoke", "System 5"): "System_5-96b81a4e06",
    ("quick", "System 1"): "System_1-5b2229c7b8",
    ("quick", "System 2"): "System_2-b11781138f",
    ("quick", "System 3"): "System_3-da0a596478",
    ("quick", "System 5"): "System_5-e5bb2952d2",
}


def _clips() -> pd.DataFrame:
    rows = [
        (machine, "00", domain, attributes)
        for machine, attributes in (("fan", "speed_1"), ("fan", "speed_2"), ("valve", ""))
        for domain in ("source", "target")
    ]
    table = pd.DataFrame(rows, columns=["machine_type", "section", "domain", "attributes"])
    table["split"] = "train"
    table["path"] = [f"/data/clip_{i}.wav" for i in range(len(table))]
    return table


@pytest.mark.parametrize("profile, system", sorted(KNOWN))
def test_a_run_key_is_unchanged(profile, system, monkeypatch):
    monkeypatch.setattr(data, "clip_fingerprint", lambda table: "fixed")
    monkeypatch.delenv("EAT_CHECKPOINT", raising=False)
    monkeypatch.delenv("BEATS_CHECKPOINT", raising=False)
    typed = config.load_profile(profile)
    assert systems.crops_in_frames(typed, system)
    assert systems.run_dir("/out", typed, system, "/data", _clips()).name == FRAMES[profile, system]
    monkeypatch.setattr(systems, "crops_in_frames", lambda *_: False)  # crops in samples
    assert systems.run_dir("/out", typed, system, "/data", _clips()).name == KNOWN[profile, system]
