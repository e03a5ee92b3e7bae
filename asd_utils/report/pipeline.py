"""Run every notebook in order with a profile through papermill, then build the book.

    python -m asd_utils.report.pipeline --profile quick [--data-root DIR] [--output-root DIR]

Executed notebooks go to ``<output_root>/executed/`` (the source notebooks are never touched);
the book is staged in ``<output_root>/book_source/`` (:mod:`asd_utils.report.book`: set-up cells
hidden, machine paths scrubbed, the run's headline on the landing page) and built strictly
(warnings are errors) into ``<build_dir>/_build/html``. ``<output_root>/run_record.json`` records
the profile, seed, paths, git commit, package versions and the time each stage took.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from asd_utils import data, errors, runs, stages
from asd_utils.config import REPO_ROOT, RunPaths, load_profile, resolve_paths
from asd_utils.report import book

log = logging.getLogger(__name__)

NOTEBOOK_DIR = REPO_ROOT / "notebooks"


class NotebookFailed(errors.RunError, RuntimeError):
    """A notebook raised: names the notebook, the cell and the error."""


def notebooks() -> list[Path]:
    """The source notebooks, in their numbered order (``NN_name.ipynb``)."""
    found = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no notebooks in {NOTEBOOK_DIR}")
    return found


def preflight(paths: RunPaths, profile: dict | None = None) -> dict:
    """Check at the door, before any notebook runs, everything the profile's stages will need
    (:func:`asd_utils.stages.entry_check`: the data indexed once and checked, the checkpoints
    ``profile`` names, the clip manifest written), so that a run fails in seconds, naming the
    file or machine type and what was expected. Prints one line on the data and one per
    skipped system or machine type without metrics (:func:`asd_utils.evaluation.metrics.
    labelled`); returns what the run record keeps of it.
    """
    from asd_utils import systems
    from asd_utils.evaluation import metrics

    clips, skipped = stages.entry_check(paths, profile)
    _, no_truth = metrics.labelled(clips)
    sets = {
        name: sorted(part["machine_type"].unique(), key=metrics.machine_sort_key)
        for name, part in clips.groupby("dataset")
    }
    log.info(
        "data: %s; %s",
        data.describe_channels(clips),
        "; ".join(f"{k}: {', '.join(v)}" for k, v in sets.items()),
    )
    if no_truth:
        log.info(metrics.no_ground_truth_note(no_truth))
    if skipped:
        log.warning(systems.skip_notice(skipped))
    return {"machine_types": sets, "no_ground_truth": no_truth, "systems_skipped": skipped}


DERIVED = (
    "systems",
    "metrics.csv",
    "table2.csv",
    "backends.csv",
    "submission",
    "executed",
    "book_source",
)
"""What a run derives in its output folder and a new full run removes first (``training/``,
the cached training runs and embeddings keyed by their inputs, stays)."""


def clear_derived(output_root: Path) -> list[str]:
    """Remove the results of an earlier run (:data:`DERIVED`) so that tables, the ensemble, the
    package and the book show only what this run computes. Returns what was removed."""
    removed = []
    for name in DERIVED:
        path = output_root / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(name)
    return removed


def _kernel_manager(connection_dir: Path):
    """A kernel manager on local IPC sockets in ``connection_dir`` (the run's own folder):
    papermill's kernels then start without ipykernel's "running over TCP without encryption"
    warning, and two runs from one checkout never share a socket. jupyter_client's default puts
    the sockets in the current directory as ``kernel-ipc-<N>``, N the first free number, so two
    kernels that start at once can take the same N (``Invalid Signature``)."""
    import uuid

    from jupyter_client import AsyncKernelManager
    from traitlets import default

    class IPCKernelManager(AsyncKernelManager):
        @default("transport")
        def _default_transport(self):
            return "ipc"

        @default("connection_file")
        def _default_connection_file(self):
            return str(connection_dir / f"kernel-{uuid.uuid4().hex[:8]}.json")

        @default("ip")
        def _default_ip(self):  # the sockets: <connection file without .json>-ipc-<N>
            return str(Path(self.connection_file).with_suffix("")) + "-ipc"

        async def shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:
            # after Ctrl-C or SIGTERM, stop the kernel at once: a graceful shutdown of a kernel
            # in the middle of a cell prints ipykernel's "Socket operation on non-socket"
            now = now or errors.stop_requested()
            await AsyncKernelManager.shutdown_kernel(self, now=now, restart=restart)

    return IPCKernelManager


KERNEL_DIR_PREFIX = "asd-kernels-"
"""The run's kernel connection files and sockets live in a fresh ``$TMPDIR/asd-kernels-<pid>-*``
folder (short: a socket path has at most ~100 characters), removed when the notebooks end; one
left by a run killed outright is removed by the next run (:func:`kernel_dir`)."""


def kernel_dir() -> Path:
    """A fresh private folder for this run's kernel connection files and sockets, after
    removing those of runs (of any checkout) whose process is gone."""
    for old in Path(tempfile.gettempdir()).glob(f"{KERNEL_DIR_PREFIX}*-*"):
        pid = old.name.removeprefix(KERNEL_DIR_PREFIX).split("-")[0]
        if pid.isdigit() and not runs.holder_alive({"pid": int(pid), "host": platform.node()}):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{KERNEL_DIR_PREFIX}{os.getpid()}-"))


def execute_notebooks(
    profile: dict,
    paths: RunPaths,
    executed_dir: Path,
    kernel: str = "python3",
    only: list[str] | None = None,
    profile_file: Path | None = None,
    seconds: dict[str, float] | None = None,
    on_start=None,
) -> dict[str, float]:
    """Execute each notebook with papermill; stop at the first failure, naming notebook and cell.

    Each notebook gets ``profile_file`` (the run's frozen profile, :func:`asd_utils.config.
    freeze_profile`) as its ``profile`` parameter, or the profile's name without one. The time of
    every notebook that finished goes into ``seconds`` (also returned) as it finishes, so a
    failure keeps the times of the chapters before it. ``on_start(chapter)`` is called as each
    notebook starts. A failure or an interruption carries the chapter (``err.chapter``). The
    kernels' connection files and sockets live in a private temporary folder
    (:data:`KERNEL_DIR_PREFIX`), removed at the end, so nothing is left in the repository.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    executed_dir.mkdir(parents=True, exist_ok=True)
    sources = [nb for nb in notebooks() if not only or nb.stem[:2] in only or nb.stem in only]
    parameters = {
        "profile": str(profile_file) if profile_file else profile["name"],
        "data_root": str(paths.data_root),
        "output_root": str(paths.output_root),
    }
    seconds = {} if seconds is None else seconds
    connection_dir = kernel_dir()
    try:
        for i, source in enumerate(sources, 1):
            target = executed_dir / source.name
            log.info("[%d/%d] %s: running …", i, len(sources), source.stem)
            if on_start is not None:
                on_start(source.stem)
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
                    stderr_file=sys.stderr,  # the stages' log lines, live on the console
                    kernel_manager_class=_kernel_manager(connection_dir),
                )
            except PapermillExecutionError as err:
                if err.ename == "KeyboardInterrupt":  # the kernel itself was interrupted
                    error = KeyboardInterrupt()
                else:
                    error = NotebookFailed(
                        f"notebook {source.name} failed in cell {err.exec_count} "
                        f"({err.ename}: {err.evalue}); the executed copy with the traceback is "
                        f"{target}"
                    )
                error.chapter = source.stem
                raise error from None
            except KeyboardInterrupt as err:
                err.chapter = source.stem
                raise
            seconds[source.stem] = round(time.perf_counter() - start, 1)
            log.info(
                "[%d/%d] %s: done in %.0f s", i, len(sources), source.stem, seconds[source.stem]
            )
    finally:
        shutil.rmtree(connection_dir, ignore_errors=True)
    return seconds


def build_book(paths: RunPaths, profile: dict, build_dir: Path) -> Path:
    """Stage the book (:func:`asd_utils.report.book.stage`) from the executed notebooks and build it
    strictly (``-W``, warnings are errors) into ``<build_dir>/_build/html``."""
    stage = paths.output_root / "book_source"
    if stage.exists():
        shutil.rmtree(stage)
    book.stage(paths, profile, paths.output_root / "executed", stage)
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
    """The whole job; returns the run record (also written to ``<output_root>/run_record.json``).

    The run is opened by :class:`asd_utils.stages.Session` (the profile validated, the output
    root locked before anything is written: a second run into it is refused, naming this one;
    the record kept; Ctrl-C or SIGTERM recorded as ``interrupted at <chapter>``), then the data
    is indexed and checked (:func:`preflight`), all before anything trains. A full run starts
    by removing the previous run's derived results (:func:`clear_derived`); an ``--only`` run
    adds to them. Every notebook runs the frozen copy ``<output_root>/profile.yaml``.
    """
    session = stages.Session(
        profile_name, data_root, output_root, unit="chapter", add_to_record=bool(only)
    )
    with session:
        _run_locked(session, build_dir, book, only, kernel)
    return json.loads((session.run.paths.output_root / runs.RECORD_NAME).read_text())


def _run_locked(session: stages.Session, build_dir, book, only, kernel) -> None:
    """:func:`run` once the output root is locked."""
    profile, paths = session.run.profile, session.run.paths
    log.info(
        "profile %s · data %s · outputs %s", profile["name"], paths.data_root, paths.output_root
    )
    session.summary = session.timed("prepare_data", preflight, paths, profile)
    if not only:
        removed = clear_derived(paths.output_root)
        if removed:
            log.info("removed the previous run's %s from %s", ", ".join(removed), paths.output_root)
    session.begin("notebooks")
    execute_notebooks(
        profile,
        paths,
        paths.output_root / "executed",
        kernel,
        only,
        session.run.profile_file,
        seconds=session.seconds,
        on_start=session.begin,
    )
    if book:
        html = session.timed(
            "book", build_book, paths, profile, Path(build_dir) if build_dir else REPO_ROOT
        )
        log.info("book built in %.0f s: %s", session.seconds["book"], html / "index.html")


def main(argv: list[str] | None = None) -> int:
    """The command line: runs :func:`run` (or, with ``--status``, says what the run in the
    output root is doing); a user error is one line and exit status 2 (:mod:`asd_utils.errors`)."""
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
    parser.add_argument(
        "--status",
        action="store_true",
        help="say what the run in the output root is doing (or how it ended), then stop",
    )
    errors.add_talk_options(parser)
    errors.add_debug_option(parser)

    def command(argv):
        args = parser.parse_args(argv)
        errors.configure_logging(args.quiet, args.verbose)
        if args.status:
            profile = load_profile(args.profile)
            print(runs.status(resolve_paths(profile, args.data_root, args.output_root).output_root))
            return
        run(
            args.profile,
            args.data_root,
            args.output_root,
            args.build_dir,
            not args.no_book,
            args.only,
            args.kernel,
        )

    return errors.run_command(command, argv)


if __name__ == "__main__":
    sys.exit(main())
