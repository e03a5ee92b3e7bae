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
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from asd_utils import data, errors, runs
from asd_utils.config import (
    REPO_ROOT,
    RunPaths,
    freeze_profile,
    load_profile,
    resolve_paths,
)
from asd_utils.files import atomic_write_text
from asd_utils.report import book

log = logging.getLogger(__name__)

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
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


class NotebookFailed(errors.RunError, RuntimeError):
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


def preflight(paths: RunPaths, profile: dict | None = None) -> dict:
    """Check at the door, before any notebook runs, everything the profile's stages will need,
    so that a run fails in seconds, naming the file or machine type and what was expected:

    - the data, indexed once (:func:`asd_utils.data.index_dataset`: a malformed name, a corrupt
      or truncated WAV, a wrong sample rate, NaN samples, an empty folder …), sample checks
      cached under ``<output_root>/cache``;
    - every machine type with train and test clips and training clips of both domains
      (:func:`asd_utils.data.check_machine_types`);
    - the backbone checkpoints the ``profile`` names, loaded once each
      (:func:`asd_utils.systems.check_checkpoints`).

    Decides which systems can run on the data (:func:`asd_utils.systems.unavailable`) and which
    machine types get no metrics (anonymous test clips, or labelled ones without anomalies or
    normals: :func:`asd_utils.evaluation.metrics.labelled`). Prints one line on the data and one per
    skipped system or machine type without metrics; returns what the run record keeps of it.
    """
    from asd_utils import stages, systems
    from asd_utils.evaluation import metrics

    clips = data.index_dataset(paths.data_root, cache_dir=paths.output_root / "cache")
    stages.write_manifest(paths.output_root, paths.data_root, clips)  # what every chapter reads
    data.check_machine_types(clips)
    skipped = systems.unavailable(clips)
    if profile is not None:
        systems.check_checkpoints(profile, skip=set(skipped))
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


def run_record(
    profile: dict,
    paths: RunPaths,
    stages: dict[str, float],
    data_summary: dict | None = None,
    status: str = "running",
    chapter: str | None = None,
) -> dict:
    """What ran: profile (in full), seed, data, commit, package versions, machine, stage times,
    each system's precision as resolved here (:func:`asd_utils.systems.precisions`: ``auto`` →
    bf16 or float32, and why), ``status`` (``running``, ``finished``, ``failed at <chapter>:
    <error>`` or ``interrupted at <chapter>``), the ``chapter`` running or last run, and the
    ``pid`` and ``host`` of the run (with the output root's lock, :mod:`asd_utils.runs`, they
    tell a dead run from a live one)."""
    from asd_utils import systems

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
        "data": "synthetic (asd_utils.data.synth)" if paths.synthetic else "user-given DCASE tree",
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
        "precision": systems.precisions(profile),
        "status": status,
        "chapter": chapter,
        "pid": os.getpid(),
        "host": platform.node(),
        "written": datetime.now(UTC).isoformat(timespec="seconds"),
        "stage_seconds": stages,
    }


def _kernel_manager(connection_dir: Path, env: dict | None = None, live: set | None = None):
    """A kernel manager on local IPC sockets in ``connection_dir`` (the run's own folder):
    papermill's kernels then start without ipykernel's "running over TCP without encryption"
    warning, and two runs from one checkout never share a socket. jupyter_client's default puts
    the sockets in the current directory as ``kernel-ipc-<N>``, N the first free number, so two
    kernels that start at once can take the same N (``Invalid Signature``). ``env``: variables
    set in the kernel's environment (its threads); ``live``: a set each manager joins as its
    kernel starts (to stop the kernels of chapters side by side)."""
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

        async def _async_pre_start_kernel(self, **kw):
            if env:
                kw["env"] = {**kw.get("env", os.environ), **env}
            if live is not None:
                live.add(self)
            return await AsyncKernelManager._async_pre_start_kernel(self, **kw)

        async def _async_interrupt_kernel(self) -> None:
            # jupyter_client interrupts a kernel before asking it to shut down; an idle kernel
            # then logs "KeyboardInterrupt caught in kernel" on the console (seen when chapters
            # ran side by side), and a busy one is killed after the shutdown request anyway
            if not self.shutting_down:
                await AsyncKernelManager._async_interrupt_kernel(self)

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


INDEPENDENT = ("20", "30", "35", "40")
"""Chapters that may run side by side: each reads only the manifest, the data and the profile
that the run and the chapters before it wrote, and writes only its own systems' folders (20
the baseline, 30 Systems 1 and 3, 35 System 5 and the noise study's table, which it only reads,
40 System 2); chapters 50 and later read what they wrote."""

WORKERS_ENV = "ASD_REPORT_WORKERS"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
THREADS_ENV = "ASD_REPORT_THREADS"
"""Threads per chapter kernel of the :data:`INDEPENDENT` chapters (default: torch's own, as a
serial run and ``asd run``): the thread count changes float rounding (a reduction split
differently), so the default keeps every file byte for byte; side by side, the kernels' idle
threads sleep (``OMP_WAIT_POLICY=PASSIVE``) rather than spin on the other chapter's cores."""


def report_workers(workers: int | None = None) -> int:
    """How many chapters run side by side: ``workers``, else ``$ASD_REPORT_WORKERS``, else
    2 on a machine with 2 or more CPUs (1 = one chapter at a time)."""
    if workers is None:
        workers = int(os.environ.get(WORKERS_ENV) or min(2, os.cpu_count() or 1))
    if workers < 1:
        raise errors.UserError(f"{WORKERS_ENV} must be 1 or more, not {workers}")
    return workers


def waves(sources: list[Path]) -> list[list[Path]]:
    """The notebooks in order, grouped: consecutive :data:`INDEPENDENT` chapters form one wave
    (run side by side), every other notebook a wave of its own."""
    grouped: list[list[Path]] = []
    for source in sources:
        joins = (
            grouped and source.stem[:2] in INDEPENDENT and grouped[-1][-1].stem[:2] in INDEPENDENT
        )
        if joins:
            grouped[-1].append(source)
        else:
            grouped.append([source])
    return grouped


def thread_env() -> dict[str, str]:
    """The kernel environment of an :data:`INDEPENDENT` chapter: idle OpenMP threads sleep, and
    with ``$ASD_REPORT_THREADS`` that many threads (torch, OpenMP, MKL, OpenBLAS)."""
    env = {"OMP_WAIT_POLICY": "PASSIVE"}
    threads = os.environ.get(THREADS_ENV)
    if threads:
        env.update(dict.fromkeys(THREAD_VARIABLES, threads))
    return env


def _execute(source: Path, target: Path, parameters: dict, kernel: str, manager, stderr) -> None:
    """One notebook through papermill (its standard error to ``stderr``); a failure becomes
    :class:`NotebookFailed` (or KeyboardInterrupt), with ``chapter`` set."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    try:
        papermill.execute_notebook(
            str(source),
            str(target),
            parameters=parameters,
            kernel_name=kernel,
            cwd=str(REPO_ROOT),
            progress_bar=False,
            log_output=False,
            stderr_file=stderr,  # the stages' log lines
            kernel_manager_class=manager,
        )
    except PapermillExecutionError as err:
        if err.ename == "KeyboardInterrupt":  # the kernel itself was interrupted
            error = KeyboardInterrupt()
        else:
            error = NotebookFailed(
                f"notebook {source.name} failed in cell {err.exec_count} "
                f"({err.ename}: {err.evalue}); the executed copy with the traceback is {target}"
            )
        error.chapter = source.stem
        raise error from None
    except KeyboardInterrupt as err:
        err.chapter = source.stem
        raise


def _relay(path: Path, position: int, until) -> int:
    """Copy what ``path`` gained past ``position`` to standard error, until ``until()`` is
    true (then once more); returns the new position."""
    with open(path, encoding="utf-8", errors="replace") as reader:
        reader.seek(position)
        while True:
            done = until()
            text = reader.read()
            if text:
                sys.stderr.write(text)
                sys.stderr.flush()
            if done:
                return reader.tell()
            time.sleep(0.2)


def _run_wave(wave, numbers, run_one, workers, connection_dir, seconds, on_start) -> None:
    """The notebooks of ``wave`` side by side, ``workers`` at a time, each kernel with its
    threads (:func:`thread_env`, also when ``workers`` is 1). The console and
    ``on_start`` follow the serial order:
    each chapter's standard error is kept in a file and relayed when the chapters before it
    have ended (the first running chapter's live). A failure stops the others' kernels."""
    from concurrent.futures import ThreadPoolExecutor

    env, live = thread_env(), set()
    manager = _kernel_manager(connection_dir, env, live)
    logs = {s.stem: connection_dir / f"{s.stem}.stderr" for s in wave}
    for path in logs.values():
        path.write_text("", encoding="utf-8")

    def work(source: Path) -> float:
        start = time.perf_counter()
        with open(logs[source.stem], "a", encoding="utf-8", buffering=1) as stderr:
            run_one(source, manager, stderr)
        return round(time.perf_counter() - start, 1)

    log.info(
        "chapters %s: %d at a time, %s threads each",
        ", ".join(s.stem for s in wave),
        workers,
        env.get(THREAD_VARIABLES[0], "torch's default"),
    )
    with ThreadPoolExecutor(workers, thread_name_prefix="chapter") as pool:
        futures = {s.stem: pool.submit(work, s) for s in wave}
        try:
            for number, source in zip(numbers, wave, strict=True):
                log.info("%s %s: running …", number, source.stem)
                if on_start is not None:
                    on_start(source.stem)
                future = futures[source.stem]
                _relay(logs[source.stem], 0, future.done)
                seconds[source.stem] = future.result()
                log.info("%s %s: done in %.0f s", number, source.stem, seconds[source.stem])
        except BaseException:
            for future in futures.values():
                future.cancel()
            for kernel_manager in list(live):  # the chapters still running: stop their kernels
                process = getattr(kernel_manager.provisioner, "process", None)
                if process is not None and process.poll() is None:
                    process.kill()
            raise


def execute_notebooks(
    profile: dict,
    paths: RunPaths,
    executed_dir: Path,
    kernel: str = "python3",
    only: list[str] | None = None,
    profile_file: Path | None = None,
    seconds: dict[str, float] | None = None,
    on_start=None,
    workers: int | None = None,
) -> dict[str, float]:
    """Execute each notebook with papermill; stop at the first failure, naming notebook and cell.

    Each notebook gets ``profile_file`` (the run's frozen profile, :func:`asd_utils.config.
    freeze_profile`) as its ``profile`` parameter, or the profile's name without one. The
    :data:`INDEPENDENT` chapters run side by side, :func:`report_workers` at a time with the
    threads split (:func:`_run_wave`); the console, ``on_start`` and every file are as in a
    serial run (``workers=1``). The time of every notebook that finished goes into
    ``seconds`` (also returned) as it finishes, so a failure keeps the times of the chapters
    before it. ``on_start(chapter)`` is called as each notebook's turn comes. A failure or an
    interruption carries the chapter (``err.chapter``). The kernels' connection files and
    sockets live in a private temporary folder (:data:`KERNEL_DIR_PREFIX`), removed at the end,
    so nothing is left in the repository.
    """
    executed_dir.mkdir(parents=True, exist_ok=True)
    sources = [nb for nb in notebooks() if not only or nb.stem[:2] in only or nb.stem in only]
    parameters = {
        "profile": str(profile_file) if profile_file else profile["name"],
        "data_root": str(paths.data_root),
        "output_root": str(paths.output_root),
    }
    workers = report_workers(workers)
    seconds = {} if seconds is None else seconds
    connection_dir = kernel_dir()

    def run_one(source: Path, manager, stderr) -> None:
        _execute(source, executed_dir / source.name, parameters, kernel, manager, stderr)

    try:
        done = 0
        for wave in waves(sources):
            numbers = [f"[{done + i}/{len(sources)}]" for i in range(1, len(wave) + 1)]
            done += len(wave)
            if wave[0].stem[:2] in INDEPENDENT:
                _run_wave(wave, numbers, run_one, workers, connection_dir, seconds, on_start)
                continue
            for number, source in zip(numbers, wave, strict=True):
                log.info("%s %s: running …", number, source.stem)
                if on_start is not None:
                    on_start(source.stem)
                start = time.perf_counter()
                run_one(source, _kernel_manager(connection_dir), sys.stderr)
                seconds[source.stem] = round(time.perf_counter() - start, 1)
                log.info("%s %s: done in %.0f s", number, source.stem, seconds[source.stem])
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


def _earlier_stages(record_path: Path, profile: dict, paths: RunPaths) -> dict[str, float]:
    """Stage times of the previous run into the same folder, for an ``--only`` run that adds to
    it (same profile settings and data root); otherwise none."""
    try:
        earlier = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return {}
    same = earlier.get("settings") == profile and earlier.get("data_root") == str(paths.data_root)
    return dict(earlier.get("stage_seconds", {})) if same else {}


def run(
    profile_name: str,
    data_root: str | None = None,
    output_root: str | None = None,
    build_dir: str | None = None,
    book: bool = True,
    only: list[str] | None = None,
    kernel: str = "python3",
    workers: int | None = None,
) -> dict:
    """The whole job; returns the run record (also written to ``<output_root>/run_record.json``).

    The profile is validated first (:func:`asd_utils.config.load_profile`), then the output
    root is checked and locked (:class:`asd_utils.runs.OutputLock`: a second run into it is
    refused, naming this one), then the data is indexed and checked (:func:`preflight`), all
    before anything trains. A full run starts by removing the previous run's derived results
    (:func:`clear_derived`); an ``--only`` run adds to them. Every notebook runs the frozen copy
    ``<output_root>/profile.yaml`` of the validated profile. Ctrl-C or SIGTERM records
    ``interrupted at <chapter>`` and raises :class:`asd_utils.errors.Interrupted` saying so.
    ``workers``: chapters side by side (:func:`report_workers`; the files do not change).
    """
    profile = load_profile(profile_name)
    paths = resolve_paths(profile, data_root, output_root)
    runs.check_output_root(paths.output_root)
    with runs.OutputLock(paths.output_root) as lock, errors.interrupt_on_signals():
        if lock.taken_over is not None:
            log.warning(runs.takeover_note(lock.taken_over, paths.output_root))
        return _run_locked(profile, paths, build_dir, book, only, kernel, workers)


def _run_locked(profile, paths, build_dir, book, only, kernel, workers=None) -> dict:
    """:func:`run` once the output root is locked."""
    log.info(
        "profile %s · data %s · outputs %s", profile["name"], paths.data_root, paths.output_root
    )
    record_path = paths.output_root / runs.RECORD_NAME
    stages = _earlier_stages(record_path, profile, paths) if only else {}
    start = time.perf_counter()
    data.prepare_data(profile, paths)
    summary = preflight(paths, profile)
    stages["prepare_data"] = round(time.perf_counter() - start, 1)
    if not only:
        removed = clear_derived(paths.output_root)
        if removed:
            log.info("removed the previous run's %s from %s", ", ".join(removed), paths.output_root)
    profile_file = freeze_profile(profile, paths.output_root / "profile.yaml")
    current = "notebooks"

    def record(status: str) -> dict:
        written = run_record(profile, paths, stages, summary, status, current)
        atomic_write_text(record_path, json.dumps(written, indent=2))
        return written

    def started(chapter: str) -> None:
        nonlocal current
        current = chapter
        record("running")

    record("running")
    try:
        execute_notebooks(
            profile,
            paths,
            paths.output_root / "executed",
            kernel,
            only,
            profile_file,
            seconds=stages,
            on_start=started,
            workers=workers,
        )
        if book:
            current = "book"
            record("running")
            start = time.perf_counter()
            html = build_book(paths, profile, Path(build_dir) if build_dir else REPO_ROOT)
            stages["book"] = round(time.perf_counter() - start, 1)
            log.info("book built in %.0f s: %s", stages["book"], html / "index.html")
    except KeyboardInterrupt as err:
        current = getattr(err, "chapter", current)
        record(f"interrupted at {current}")
        where = f"chapter {current}" if current not in ("notebooks", "book") else current
        raise errors.Interrupted(
            f"interrupted in {where}; run the same command to resume"
        ) from None
    except BaseException as err:
        current = getattr(err, "chapter", current)
        record(f"failed at {current}: {errors.one_line(err)}")
        raise
    return record("finished")


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
