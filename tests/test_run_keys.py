"""Run keys survive the typed profile (issue 33 item 1): the smoke run folders' keys, computed on
main before the profile was typed, is what :func:`asd_utils.systems.run_dir` still gives, so
nothing already trained is trained again."""

import pandas as pd
import pytest

from asd_utils import config, data, systems

# the run folders of the smoke profile on the table below (computed before the change)
KNOWN = {
    "System 1": "System_1-bfc7ce13e2",
    "System 2": "System_2-f5d7a5fe39",
    "System 3": "System_3-7964c7cfad",
    "System 5": "System_5-fad2c9b8ca",
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


@pytest.mark.parametrize("system", sorted(KNOWN))
def test_a_smoke_run_key_is_unchanged(system, monkeypatch):
    monkeypatch.setattr(data, "clip_fingerprint", lambda table: "fixed")
    monkeypatch.delenv("EAT_CHECKPOINT", raising=False)
    monkeypatch.delenv("BEATS_CHECKPOINT", raising=False)
    folder = systems.run_dir("/out", config.load_profile("smoke"), system, "/data", _clips())
    assert folder.name == KNOWN[system]
