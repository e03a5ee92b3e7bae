"""Profiles and paths: the one place where defaults live.

A profile is a YAML file in ``profiles/`` (``smoke``, ``quick``, ``paper``) or any YAML path.
Paths resolve in this order: an explicit argument, then the environment (``DATA_ROOT``,
``OUTPUT_ROOT``), then the profile (synthetic data under the repository's ``data/``, results
under ``outputs/<profile>``). Relative paths are taken from the repository root, never from the
current directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
PROFILE_DIR = REPO_ROOT / "profiles"


def load_profile(profile: str | os.PathLike) -> dict:
    """Read a profile by name (``profiles/<name>.yaml``) or by path; clear error if absent."""
    path = Path(profile)
    if path.suffix not in (".yaml", ".yml"):
        path = PROFILE_DIR / f"{profile}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
        raise FileNotFoundError(
            f"profile {str(profile)!r} not found ({path}); known profiles: {known}"
        )
    values = yaml.safe_load(path.read_text())
    if not isinstance(values, dict) or "name" not in values:
        raise ValueError(f"{path} is not a profile (a YAML mapping with a 'name')")
    return values


def _from_repo(path: str | os.PathLike) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


@dataclass(frozen=True)
class RunPaths:
    """Where a run reads data and writes results.

    ``synthetic`` is True when ``data_root`` is the profile's embedded synthetic dataset (made on
    demand); False for a dataset the user pointed at, which is only ever read.
    """

    data_root: Path
    output_root: Path
    synthetic: bool

    def system_dir(self, system: str) -> Path:
        """Directory of one system's official CSVs and score table."""
        return self.output_root / "systems" / system


def resolve_paths(
    profile: dict, data_root: str | None = None, output_root: str | None = None
) -> RunPaths:
    """Resolve the run's data and output roots (argument > environment > profile default)."""
    given = data_root or os.environ.get("DATA_ROOT") or None
    synthetic_root = _from_repo(profile["data"]["synthetic_root"])
    data = _from_repo(given) if given else synthetic_root
    out = output_root or os.environ.get("OUTPUT_ROOT") or f"outputs/{profile['name']}"
    # The pipeline hands the resolved root to each notebook: the same root is still synthetic.
    synthetic = data.resolve() == synthetic_root.resolve()
    return RunPaths(data_root=data, output_root=_from_repo(out), synthetic=synthetic)


def prepare_data(profile: dict, paths: RunPaths, progress: bool = True) -> Path:
    """Make sure the run's dataset exists: generate the synthetic one if needed (idempotent).

    A user-given data root is never written to; it must already hold a DCASE tree. The
    profile's own synthetic root is made again when its settings or the generator changed.
    """
    if paths.synthetic:
        from asd_utils.synth import SynthConfig, generate_dataset

        generate_dataset(
            paths.data_root,
            SynthConfig.from_dict(profile["synth"]),
            progress=progress,
            replace=True,
        )
    elif not paths.data_root.is_dir():
        raise FileNotFoundError(f"data_root {paths.data_root} does not exist")
    return paths.data_root
