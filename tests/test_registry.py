"""The registry's values (issue 33): an ablation is a value, never a display string parsed
back; every kind of system has one entry in each table keyed by kind; a profile says whether
it is of sanity-check size."""

from __future__ import annotations

import pytest

from asd_utils import config, detection, registry, stages
from asd_utils.submission import meta


def test_an_ablation_is_a_value_named_after_its_system_and_label():
    ablation = registry.ABLATIONS["System 2 (lambda 0)"]
    assert (ablation.system, ablation.label) == ("System 2", "lambda 0")
    assert (ablation.overrides, ablation.flag) == ({"lambda_max": 0.0}, "ablation_lambda_zero")
    assert ablation.name == "System 2 (lambda 0)" and registry.ablation(ablation.name) is ablation
    assert registry.get(ablation.name) is registry.REGISTRY["System 2"]
    assert registry.ablations_of("System 2") == [ablation]
    assert registry.ablations_of("System 1") == []


def test_a_name_in_parentheses_is_an_ablation_only_when_registered():
    assert registry.ablation("System 2") is None
    assert registry.ablation("System 2 (lambda 1)") is None
    with pytest.raises(registry.UnknownSystem, match=r"'System 1 \(lambda 0\)'"):
        registry.get("System 1 (lambda 0)")  # a display string is not parsed into System 1


def test_a_section_flag_asks_for_its_ablation_with_a_copy_of_its_overrides():
    smoke, quick = config.load_profile("smoke"), config.load_profile("quick")
    runs = stages.ablations(stages.Run(smoke, None, None), "System 2")
    assert runs == {"System 2": None, "System 2 (lambda 0)": {"lambda_max": 0.0}}
    runs["System 2 (lambda 0)"]["lambda_max"] = 1.0  # the caller's copy, not the registry's
    assert registry.ABLATIONS["System 2 (lambda 0)"].overrides == {"lambda_max": 0.0}
    assert stages.ablations(stages.Run(quick, None, None), "System 2") == {"System 2": None}
    assert stages.ablations(stages.Run(smoke, None, None), "System 1") == {"System 1": None}


def test_the_meta_file_names_an_ablation_after_its_system_with_its_label():
    profile = config.load_profile("paper")
    built = meta.build_meta("Lastname_Institute_task2_1", "System 2 (lambda 0)", profile)
    given = profile.submission.descriptions["System 2"]
    assert built["submission"]["name"] == f"{given.name} (lambda 0)"
    assert built["submission"]["abbreviation"] == given.abbreviation


def test_detect_handles_every_kind_of_system_by_one_table_entry():
    assert set(detection.BY_KIND) == set(registry.KINDS)


@pytest.mark.parametrize(
    ("name", "sanity_check"),
    [("smoke", True), ("quick", True), ("paper", False), ("rehearsal", False)],
)
def test_a_profile_says_whether_it_is_of_sanity_check_size(name, sanity_check):
    assert config.load_profile(name).sanity_check is sanity_check
    values = config.read_profile_values(name)
    values.pop("sanity_check", None)  # a profile that does not say is full-size
    assert config.validate_profile(values).sanity_check is False
