"""The training command: trains into the run folder the notebooks find, reuses a finished run,
refuses a system the data cannot feed."""

import numpy as np
import pytest
import yaml

from asd_utils import config, data, systems
from asd_utils.data import synth
from asd_utils.systems import train


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    settings = synth.SynthConfig(
        machine_types=("fan",), n_train_source=6, n_train_target=2, n_test=2,
        clip_seconds={"default": 1.0},
    )  # fmt: skip
    synth.generate_dataset(tmp / "data", settings, progress=False)
    profile = config.load_profile("smoke")
    profile["osscl"]["train"].update(steps=2, checkpoint_every=1)
    path = tmp / "profile.yaml"
    path.write_text(yaml.safe_dump(profile))
    return tmp, path, profile


def test_trains_into_the_notebooks_run_folder_and_finds_it_finished(tree, capsys):
    tmp, path, profile = tree
    argv = ["--profile", str(path), "--system", "System 1", "--data-root", str(tmp / "data"),
            "--output-root", str(tmp / "out"), "--no-progress"]  # fmt: skip
    first = train.main(argv)["System 1"]
    assert first.output_dir == systems.run_dir(tmp / "out", profile, "System 1", tmp / "data")
    assert first.steps == 2 and not first.reused
    again = train.main(argv)["System 1"]
    assert again.reused  # what the notebook would find: nothing trains again
    assert "run folder" in capsys.readouterr().err  # logged, on standard error


def test_refuses_a_system_the_data_cannot_feed_before_training(tmp_path, tree):
    _, path, _ = tree
    rng = np.random.default_rng(0)
    for split, domain, label in [
        ("train", "source", "normal"),
        ("train", "target", "normal"),
        ("test", "source", "normal"),
        ("test", "source", "anomaly"),
    ]:
        name = f"section_00_{domain}_{split}_{label}_0000_noAttribute.wav"
        audio = rng.uniform(-0.1, 0.1, (1, 8000)).astype(np.float32)
        data.write_wav(tmp_path / "mono" / "fan" / split / name, audio)
    argv = ["--profile", str(path), "--system", "System 3", "--data-root", str(tmp_path / "mono"),
            "--output-root", str(tmp_path / "out")]  # fmt: skip
    with pytest.raises(SystemExit, match="System 3 is skipped: its ANC front-end needs the far"):
        train.main(argv)
    assert not (tmp_path / "out" / "training").exists()
    with pytest.raises(SystemExit):  # argparse: System 0 trains nothing
        train.main(["--profile", str(path), "--system", "System 0"])
