"""Profiles and paths: the one place where defaults live.

A profile is a YAML file in ``profiles/`` (``smoke``, ``quick``, ``paper``) or any YAML path.
Paths resolve in this order: an explicit argument, then the environment (``DATA_ROOT``,
``OUTPUT_ROOT``), then the profile (synthetic data under the repository's ``data/``, results
under ``outputs/<profile>``). A relative path the user gives (argument or environment) is taken
from the current directory, as any command-line tool takes it; the profile's own relative
defaults are taken from the repository root. Every resolved path is absolute.
"""

from __future__ import annotations

import difflib
import os
import re
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pydantic
import yaml

from asd_utils import registry
from asd_utils.config import schema as schema
from asd_utils.errors import RunError, UserError
from asd_utils.files import atomic_write_text

REPO_ROOT = Path(__file__).resolve().parents[2]
PROFILE_DIR = REPO_ROOT / "profiles"


class ProfileError(UserError, ValueError):
    """A profile that does not match the schema: names the file, the key path and what was
    expected."""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats: ``5e-4`` and ``1e3`` are numbers, not the
    strings YAML 1.1 makes of an exponent without a dot."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.VERBOSE,
    ),
    list("-+0123456789."),
)


def profile_path(profile: str | os.PathLike, relative_to: Path | None = None) -> Path:
    """The file of a profile given by name (``profiles/<name>.yaml``) or by path (a relative
    path from ``relative_to``, the folder of the profile that names it, else the current
    directory)."""
    path = Path(profile).expanduser()
    if path.suffix not in (".yaml", ".yml"):
        path = PROFILE_DIR / f"{profile}.yaml"
    elif relative_to is not None and not path.is_absolute():
        path = relative_to / path
    if not path.is_file():
        known = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
        raise FileNotFoundError(
            f"profile {str(profile)!r} not found ({path}); known profiles: {known}"
        )
    return path


EXTENDS = "extends"
"""A profile's key naming the profile it starts from (a name or a path relative to it)."""


def _merge(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` laid over it: mappings merge key by key, any other value
    (a list, a number, a string) replaces the base's whole."""
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            value = _merge(merged[key], value)
        merged[key] = value
    return merged


def _read_yaml(path: Path):
    try:
        return yaml.load(path.read_text(), Loader=_Loader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as err:
        raise ProfileError(f"{path}: not valid YAML ({err})") from None


def read_profile_values(profile: str | os.PathLike, _chain: tuple[Path, ...] = ()) -> dict:
    """A profile's values as written, with the profile it ``extends`` merged under them; not
    yet validated (:func:`load_profile` does both).

    A profile may start from another (``extends: paper``) and write only what differs; YAML
    anchors (``&train`` / ``<<: *train``) share blocks within a file. Two things are never
    inherited, so that a derived profile cannot write into another's folders: its ``name``
    (required) and its ``data`` section (default ``synthetic_root: data/synthetic/<name>``).
    """
    path = profile_path(profile, _chain[-1].parent if _chain else None)
    if path.resolve() in [p.resolve() for p in _chain]:
        cycle = " -> ".join(str(p) for p in (*_chain, path))
        raise ProfileError(f"{path}: {EXTENDS} makes a cycle ({cycle})")
    values = _read_yaml(path)
    if not isinstance(values, dict) or EXTENDS not in values:
        return values
    values = dict(values)
    parent = values.pop(EXTENDS)
    if not isinstance(parent, str) or not parent:
        raise ProfileError(f"{path}: {EXTENDS}: a profile name or a YAML path, got {parent!r}")
    if not isinstance(values.get("name"), str):
        raise ProfileError(
            f"{path}: name: missing (a profile that extends another names itself, so that its "
            "results and synthetic data get their own folders)"
        )
    try:
        base = read_profile_values(parent, (*_chain, path))
    except FileNotFoundError as err:
        raise ProfileError(f"{path}: {EXTENDS}: {err}") from None
    if not isinstance(base, dict):
        raise ProfileError(f"{path}: {EXTENDS}: {parent!r} is not a profile (a YAML mapping)")
    base.pop("data", None)
    values.setdefault("data", {"synthetic_root": f"data/synthetic/{values['name']}"})
    return _merge(base, values)


RENAMED = {"frozen": "training_free"}
"""Profile sections renamed since a release: an old profile's key is refused naming the new."""


def _describe_error(error: dict) -> str:
    """One pydantic error as ``key.path: what was expected`` (a close match for a typo)."""
    location = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        parent = schema.Profile
        for part in error["loc"][:-1]:
            field = parent.model_fields.get(str(part))
            parent = field.annotation if field is not None else None
            if not (isinstance(parent, type) and issubclass(parent, schema.Section)):
                parent = None
                break
        known = sorted(parent.model_fields) if parent is not None else []
        if location in RENAMED:  # no list of keys: the new name says it
            return (
                f"{location}: unknown key: renamed {RENAMED[location]!r} (December 2026); rename it"
            )
        close = difflib.get_close_matches(str(error["loc"][-1]), known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        listed = f" (known keys: {', '.join(known)})" if known and not close else ""
        return f"{location}: unknown key{hint}{listed}"
    if error["type"] == "missing":
        return f"{location}: missing (every profile sets it; see profiles/quick.yaml)"
    got = error.get("input")
    shown = "" if isinstance(got, dict) else f", got {got!r} ({type(got).__name__})"
    message = error["msg"].removeprefix("Value error, ")
    return f"{location}: {message[:1].lower()}{message[1:]}{shown}"


def validate_profile(values, source: str = "profile") -> schema.Profile:
    """Check a profile's values against :class:`asd_utils.config.schema.Profile`.

    Returns the validated profile, what every stage receives (its dict form for a record or a
    key: :meth:`~asd_utils.config.schema.Section.plain`). Raises :class:`ProfileError` naming
    ``source``, every offending key path and what was expected, before anything runs.
    """
    if not isinstance(values, dict):
        raise ProfileError(f"{source}: a profile is a YAML mapping of sections, not {values!r}")
    try:
        profile = schema.Profile.model_validate(values)
    except pydantic.ValidationError as err:
        problems = {}  # one line per key path (a union type reports each of its members)
        for error in err.errors():
            problems.setdefault(tuple(error["loc"][:3]), _describe_error(error))
        problems = list(problems.values())
        if len(problems) > 6:  # e.g. a file that is not a profile at all
            problems = [*problems[:6], f"and {len(problems) - 6} more"]
        raise ProfileError(f"{source}: " + "; ".join(problems)) from None
    return profile


def load_profile(
    profile: str | os.PathLike | schema.Profile, overrides: Sequence[str] = ()
) -> schema.Profile:
    """Read and validate a profile by name (``profiles/<name>.yaml``) or by path (a validated
    :class:`~asd_utils.config.schema.Profile` is taken as it is), then apply ``overrides``
    (``KEY=VALUE``: :func:`override`).

    Clear errors: a missing file lists the known profiles; a profile that does not match the
    schema is a :class:`ProfileError` naming the file and the key (:func:`validate_profile`).
    What it ``extends`` is merged in first (:func:`read_profile_values`).
    """
    if not isinstance(profile, schema.Profile):
        path = profile_path(profile)
        profile = validate_profile(read_profile_values(path), str(path))
    return override(profile, overrides) if overrides else profile


def override(profile: schema.Profile, settings: Sequence[str]) -> schema.Profile:
    """``profile`` with each ``KEY=VALUE`` of ``settings`` (``asd … --set``) applied in order,
    as an edit of its YAML would be: a dotted key path (``osscl.train.steps=2``,
    ``synth.clip_seconds.fan=3``), the value read as YAML (``1e-4`` a number, ``[fan]`` a list,
    ``null``), the whole validated again by the schema. The result records the keys as set
    (:meth:`~asd_utils.config.schema.Plain.plain`), so run keys follow. A key the schema does
    not know is a :class:`ProfileError` naming the closest valid one; a wrong type or range
    names the key and what was expected (:func:`validate_profile`)."""
    values = profile.model_dump(exclude_unset=True)
    for setting in settings:
        key, sep, text = setting.partition("=")
        if not sep or not key:
            raise ProfileError(f"--set {setting!r}: KEY=VALUE, e.g. osscl.train.steps=2")
        try:
            value = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader)
        except yaml.YAMLError as err:
            raise ProfileError(f"--set {setting!r}: the value is not YAML ({err})") from None
        _assign(values, key.strip(), value)
    return validate_profile(values, f"{profile.name} with --set {' '.join(settings)}")


def _assign(values: dict, key: str, value) -> None:
    """Set the dotted ``key`` of a profile's ``values`` (nested dicts) to ``value``; each part
    must be a key the schema knows where the schema types it (a section), any key below a
    mapping the schema leaves open (``clip_seconds``, a back end's options)."""
    parts, model, node = key.split("."), schema.Profile, values
    for depth, part in enumerate(parts):
        path = ".".join(parts[: depth + 1])
        if model is not None:
            known = list(model.model_fields)
            if model.model_config.get("extra") == "allow":  # e.g. the back ends' options
                known += [k for k in node if k not in known]
            if part not in known:
                close = difflib.get_close_matches(part, known, n=1)
                hint = (
                    f"; did you mean {'.'.join([*parts[:depth], close[0]])!r}?"
                    if close
                    else f" (known: {', '.join(known)})"
                )
                raise ProfileError(f"--set {key}: unknown key {path}{hint}")
        if depth == len(parts) - 1:
            node[part] = value
            return
        if node.get(part) is None:  # a section the profile leaves out (``classes``)
            node[part] = {}
        if not isinstance(node[part], dict):
            raise ProfileError(f"--set {key}: {path} is a value, not a section")
        model, node = _section_model(model, part), node[part]


def _section_model(model: type[pydantic.BaseModel] | None, key: str):
    """The model of ``model``'s field ``key`` (of an optional one too); None for a mapping the
    schema leaves open."""
    field = model.model_fields.get(key) if model is not None else None
    if field is None:
        return None
    for kind in (field.annotation, *typing.get_args(field.annotation)):
        if isinstance(kind, type) and issubclass(kind, pydantic.BaseModel):
            return kind
    return None


def freeze_profile(profile: schema.Profile, path: str | os.PathLike) -> Path:
    """Write the validated ``profile`` (``--set`` overrides included) to ``path`` (atomically,
    and only when it changed): the run's record (``<output root>/profile.yaml``), which the
    notebooks of one run load; nothing else writes a profile (a derived profile is
    ``profile.model_copy(update=...)``, or ``--set`` for a command)."""
    text = "# the profile this run ran with (asd_utils.report.pipeline); do not edit\n"
    text += yaml.safe_dump(profile.plain(), sort_keys=False)
    path = Path(path)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return path
    return atomic_write_text(path, text)


def _from_repo(path: str | os.PathLike) -> Path:
    path = Path(path).expanduser()
    return Path(os.path.normpath(path if path.is_absolute() else REPO_ROOT / path))


def _from_user(path: str | os.PathLike) -> Path:
    """A path the user typed (argument or environment variable): relative to the current
    directory, made absolute (the notebooks run elsewhere) and normalised (``x/../DATA`` is
    ``DATA``: one folder, one key)."""
    return Path(os.path.normpath(Path(path).expanduser().absolute()))


def absolute_checkpoints() -> None:
    """Make a relative ``$EAT_CHECKPOINT`` / ``$BEATS_CHECKPOINT`` absolute (from the current
    directory, as the user meant it) in this process's environment, which the notebooks'
    kernels inherit (they run from the repository)."""
    for variable in registry.CHECKPOINT_ENV.values():
        value = os.environ.get(variable)
        if value and not Path(value).expanduser().is_absolute():
            os.environ[variable] = str(_from_user(value))


@dataclass(frozen=True)
class RunPaths:
    """Where a run reads data and writes results.

    ``synthetic`` is True when ``data_root`` is the profile's embedded synthetic dataset (made on
    demand); False for a dataset the user pointed at, which is only ever read. ``edition``: how
    the tree is read (the profile's ``data.edition``; :mod:`asd_utils.data.editions`).
    """

    data_root: Path
    output_root: Path
    synthetic: bool
    edition: str = "auto"

    def system_dir(self, system: str) -> Path:
        """Directory of one system's official CSVs and score table."""
        return self.output_root / "systems" / system


def resolve_paths(
    profile: schema.Profile, data_root: str | None = None, output_root: str | None = None
) -> RunPaths:
    """Resolve the run's data and output roots (argument > environment > profile default);
    a given relative path is taken from the current directory, a profile default from the
    repository root; both normalised. An output root inside the data root (which is only read)
    is a :class:`~asd_utils.errors.RunError`; a relative checkpoint variable is made absolute
    (:func:`absolute_checkpoints`)."""
    absolute_checkpoints()
    given = data_root or os.environ.get("DATA_ROOT") or None
    synthetic_root = _from_repo(profile.data.synthetic_root)
    data = _from_user(given) if given else synthetic_root
    out = output_root or os.environ.get("OUTPUT_ROOT") or None
    out = _from_user(out) if out else _from_repo(f"outputs/{profile.name}")
    # The pipeline hands the resolved root to each notebook: the same root is still synthetic.
    synthetic = data.resolve() == synthetic_root.resolve()
    if data.resolve() in (out.resolve(), *out.resolve().parents):
        raise RunError(
            f"output root {out} is inside the data root {data}, which is only read: choose an "
            "--output-root outside it"
        )
    return RunPaths(
        data_root=data, output_root=out, synthetic=synthetic, edition=profile.data.edition
    )
