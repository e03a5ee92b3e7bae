"""Run every notebook in order with a profile through papermill, then build the book.

    python -m asd_utils.pipeline --profile quick [--data-root DIR] [--output-root DIR]

Executed notebooks go to ``<output_root>/book_source/notebooks/`` (the source notebooks are
never touched); the book is staged in ``<output_root>/book_source/`` and built strictly
(warnings are errors) into ``<build_dir>/_build/html``. ``<output_root>/run_record.json`` records
the profile, seed, paths, git commit, package versions and the time each stage took.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from asd_utils.config import REPO_ROOT, RunPaths, load_profile, prepare_data, resolve_paths
from asd_utils.data import DataError
from asd_utils.files import atomic_write_text

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
BOOK_FILES = ("_config.yml", "_toc.yml", "book")
PACKAGES = (
    "torch",
    "numpy",
    "scipy",
    "scikit-learn",
    "pandas",
    "soundfile",
    "papermill",
    "jupyter-book",
    "matplotlib",
)


class NotebookFailed(RuntimeError):
    """A notebook raised: names the notebook, the cell and the error."""


def notebooks() -> list[Path]:
    """The source notebooks, in their numbered order (``NN_name.ipynb``)."""
    found = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no notebooks in {NOTEBOOK_DIR}")
    return found


def git_commit() -> str:
    """The checked-out commit, with ``-dirty`` when tracked files have uncommitted changes."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def preflight(paths: RunPaths) -> dict:
    """Index the data once before any notebook runs, so a bad tree fails in seconds, and decide
    which systems can run on it (:func:`asd_utils.systems.unavailable`). Prints one line on the
    data and one per skipped system; returns what the run record keeps of it."""
    from asd_utils import data, metrics, systems

    clips = data.index_dataset(paths.data_root)
    skipped = systems.unavailable(clips)
    _, no_truth = metrics.labelled(clips)
    sets = {
        name: sorted(part["machine_type"].unique(), key=metrics.machine_sort_key)
        for name, part in clips.groupby("dataset")
    }
    print(
        f"data: {data.describe_channels(clips)}; "
        + "; ".join(f"{k}: {', '.join(v)}" for k, v in sets.items())
    )
    if no_truth:
        print(metrics.no_ground_truth_note(no_truth))
    if skipped:
        print(systems.skip_notice(skipped))
    return {"machine_types": sets, "no_ground_truth": no_truth, "systems_skipped": skipped}


def run_record(
    profile: dict, paths: RunPaths, stages: dict[str, float], data_summary: dict | None = None
) -> dict:
    """What ran: profile (in full), seed, data, commit, package versions, machine, stage times."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "profile": profile["name"],
        "seed": profile["seed"],
        "settings": profile,
        "data_root": str(paths.data_root),
        "data": "synthetic (asd_utils.synth)" if paths.synthetic else "user-given DCASE tree",
        **(data_summary or {}),
        "output_root": str(paths.output_root),
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "packages": versions,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
        },
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "stage_seconds": stages,
    }


def execute_notebooks(
    profile: dict,
    paths: RunPaths,
    executed_dir: Path,
    kernel: str = "python3",
    only: list[str] | None = None,
) -> dict[str, float]:
    """Execute each notebook with papermill; stop at the first failure, naming notebook and cell."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    executed_dir.mkdir(parents=True, exist_ok=True)
    sources = [nb for nb in notebooks() if not only or nb.stem[:2] in only or nb.stem in only]
    parameters = {
        "profile": profile["name"],
        "data_root": str(paths.data_root),
        "output_root": str(paths.output_root),
    }
    seconds = {}
    for i, source in enumerate(sources, 1):
        target = executed_dir / source.name
        print(f"[{i}/{len(sources)}] {source.stem}: running …", flush=True)
        start = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(source),
                str(target),
                parameters=parameters,
                kernel_name=kernel,
                cwd=str(REPO_ROOT),
                progress_bar=False,
                log_output=False,
            )
        except PapermillExecutionError as err:
            raise NotebookFailed(
                f"notebook {source.name} failed in cell {err.exec_count} "
                f"({err.ename}: {err.evalue}); the executed copy with the traceback is {target}"
            ) from None
        seconds[source.stem] = round(time.perf_counter() - start, 1)
        print(
            f"[{i}/{len(sources)}] {source.stem}: done in {seconds[source.stem]:.0f} s", flush=True
        )
    return seconds


def build_book(stage: Path, build_dir: Path) -> Path:
    """Stage the book's sources beside the executed notebooks and build it strictly (``-W``)."""
    for name in BOOK_FILES:
        source, target = REPO_ROOT / name, stage / name
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copy2(source, target)
    command = [
        str(Path(sys.executable).parent / "jupyter-book"),
        "build",
        str(stage),
        "--path-output",
        str(build_dir),
        "-W",
        "--keep-going",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"jupyter-book build failed (warnings are errors):\n"
            f"{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
        )
    return build_dir / "_build" / "html"


def run(
    profile_name: str,
    data_root: str | None = None,
    output_root: str | None = None,
    build_dir: str | None = None,
    book: bool = True,
    only: list[str] | None = None,
    kernel: str = "python3",
) -> dict:
    """The whole job; returns the run record (also written to ``<output_root>/run_record.json``)."""
    profile = load_profile(profile_name)
    paths = resolve_paths(profile, data_root, output_root)
    print(f"profile {profile['name']} · data {paths.data_root} · outputs {paths.output_root}")
    stages: dict[str, float] = {}
    start = time.perf_counter()
    prepare_data(profile, paths)
    summary = preflight(paths)
    stages["prepare_data"] = round(time.perf_counter() - start, 1)
    stage = paths.output_root / "book_source"
    record_path = paths.output_root / "run_record.json"
    record = run_record(profile, paths, stages, summary)
    atomic_write_text(record_path, json.dumps(record, indent=2))
    stages |= execute_notebooks(profile, paths, stage / "notebooks", kernel=kernel, only=only)
    record = run_record(profile, paths, stages, summary)
    atomic_write_text(record_path, json.dumps(record, indent=2))
    if book:
        start = time.perf_counter()
        html = build_book(stage, Path(build_dir) if build_dir else REPO_ROOT)
        stages["book"] = round(time.perf_counter() - start, 1)
        print(f"book built in {stages['book']:.0f} s: {html / 'index.html'}")
        record = run_record(profile, paths, stages, summary)
        atomic_write_text(record_path, json.dumps(record, indent=2))
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", required=True, help="smoke, quick, paper, or a YAML path")
    parser.add_argument("--data-root", help="a DCASE tree (default: $DATA_ROOT, else synthetic)")
    parser.add_argument(
        "--output-root", help="results (default: $OUTPUT_ROOT, else outputs/<profile>)"
    )
    parser.add_argument(
        "--build-dir", help="the book goes to <build-dir>/_build/html (default: repo root)"
    )
    parser.add_argument("--only", nargs="*", help="notebook numbers or names to run (default: all)")
    parser.add_argument("--no-book", action="store_true", help="run the notebooks, skip the book")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name (default python3)")
    args = parser.parse_args(argv)
    try:
        run(
            args.profile,
            args.data_root,
            args.output_root,
            args.build_dir,
            not args.no_book,
            args.only,
            args.kernel,
        )
    except (NotebookFailed, FileNotFoundError, FileExistsError, RuntimeError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
