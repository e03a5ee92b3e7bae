"""Run every notebook in order with a profile through papermill, then build the book.

    asd report --profile quick [--data-root DIR] [--output-root DIR]    (asd_utils.cli)

Executed notebooks go to ``<output_root>/executed/`` (the source notebooks are never touched);
the book is staged in ``<output_root>/book_source/`` (:mod:`asd_utils.report.book`: set-up cells
hidden, machine paths scrubbed, the run's headline on the landing page) and built strictly
(warnings are errors) into ``<build_dir>/_build/html``. ``<output_root>/run_record.json`` records
the profile, seed, paths, git commit, package versions and the time each stage took.
"""

from __future__ import annotations

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
from asd_utils.config import REPO_ROOT, RunPaths
from asd_utils.config.schema import Profile
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


def check_only(only: list[str] | None) -> None:
    """A :class:`~asd_utils.errors.UserError` when an ``--only`` value names no notebook (by
    number or name), listing those there are."""
    if not only:
        return
    known = [(nb.stem[:2], nb.stem) for nb in notebooks()]
    unknown = [o for o in only if not any(o in pair for pair in known)]
    if unknown:
        raise errors.UserError(
            f"--only {' '.join(unknown)}: no such notebook; choose numbers or "
            f"names of {', '.join(stem for _, stem in known)}"
        )


def preflight(paths: RunPaths, profile: Profile | None = None) -> dict:
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


DERIVED = stages.DERIVED  # what a new full run removes first (asd run does the same)
clear_derived = stages.clear_derived


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


INDEPENDENT = (("00", "40", "10", "20", "30", "35", "45"), ("55", "60"))
"""Groups of chapters that may run side by side, each in the order its chapters start. In the
first, each chapter reads only what the run wrote (the clip manifest, the data, the frozen
profile) and writes only its own systems' folders (00 nothing, 10 Systems 0 and 6 and the
log-mel floor, 20 the baseline, 30 Systems 1 and 3, 35 System 5 (the noise study's table it
only reads), 40 System 2, 45 System 7); 40 starts first, after 00, as the longest (tiny BEATs'
steps are the slowest), so that no long chapter starts last while the other core idles. 50
scores the fine-tuned systems alone. In the second, 55 reads and writes only the
training-free systems (their scores again, the same bytes, written atomically; every
embedding; ``backends.csv``) and 60 reads the scores of every system and writes System 4's.
70 reads what all of them wrote."""


def _group(chapter: str) -> int | None:
    """The :data:`INDEPENDENT` group of ``chapter`` (its number), None for a chapter alone."""
    return next((i for i, group in enumerate(INDEPENDENT) if chapter in group), None)


def _start_rank(source: Path) -> int:
    """Where ``source`` starts among its :data:`INDEPENDENT` group's chapters."""
    chapter = source.stem[:2]
    return INDEPENDENT[_group(chapter)].index(chapter)


WORKERS_ENV = "ASD_REPORT_WORKERS"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
THREADS_ENV = "ASD_REPORT_THREADS"
"""Threads per chapter kernel of the :data:`INDEPENDENT` chapters (:func:`chapter_threads`)."""


def cpus() -> int:
    """The CPUs this process may run on (its affinity; ``os.cpu_count()`` where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def report_workers(workers: int | None = None) -> int:
    """How many chapters run side by side: ``workers``, else ``$ASD_REPORT_WORKERS``, else
    2 on a machine with 2 or more CPUs (1 = one chapter at a time)."""
    if workers is None:
        workers = int(os.environ.get(WORKERS_ENV) or min(2, cpus()))
    if workers < 1:
        raise errors.UserError(f"{WORKERS_ENV} must be 1 or more, not {workers}")
    return workers


def chapter_threads() -> int:
    """The threads of each :data:`INDEPENDENT` chapter's kernel: ``$ASD_REPORT_THREADS``, else
    half the CPUs (at least 1), the share of each of the two chapters that run side by side by
    default. Whatever the number of workers: the thread count changes float rounding (a
    reduction split differently), so a serial run (``ASD_REPORT_WORKERS=1``) keeps it and
    writes the side-by-side run's files byte for byte."""
    threads = int(os.environ.get(THREADS_ENV) or max(1, cpus() // 2))
    if threads < 1:
        raise errors.UserError(f"{THREADS_ENV} must be 1 or more, not {threads}")
    return threads


def thread_env(workers: int | None = None) -> dict[str, str]:
    """The kernel environment of an :data:`INDEPENDENT` chapter: :func:`chapter_threads`
    threads (torch, OpenMP, MKL, OpenBLAS); when the chapters side by side would ask for more
    threads than there are CPUs, idle OpenMP threads sleep (``OMP_WAIT_POLICY=PASSIVE``)
    rather than spin on the other chapter's cores. Only then: a sleeping thread wakes late,
    which made the tiny models' training steps 1.7 times slower (measured, Intel Xeon)."""
    threads = chapter_threads()
    env = dict.fromkeys(THREAD_VARIABLES, str(threads))
    if threads * report_workers(workers) > cpus():
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env


def waves(sources: list[Path]) -> list[list[Path]]:
    """The notebooks in order, grouped: consecutive chapters of one :data:`INDEPENDENT` group
    form one wave (run side by side), every other notebook a wave of its own."""
    grouped: list[list[Path]] = []
    for source in sources:
        group = _group(source.stem[:2])
        if grouped and group is not None and _group(grouped[-1][-1].stem[:2]) == group:
            grouped[-1].append(source)
        else:
            grouped.append([source])
    return grouped


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
    """The notebooks of ``wave`` side by side, ``workers`` at a time in their group's start
    order (:data:`INDEPENDENT`; one at a time: in their numbered order), each kernel with its
    threads (:func:`thread_env`, also when ``workers`` is 1). The console and
    ``on_start`` follow the numbered order:
    each chapter's standard error is kept in a file and relayed when the chapters before it
    have ended (the first running chapter's live). A failure stops the others' kernels."""
    from concurrent.futures import ThreadPoolExecutor

    env, live = thread_env(workers), set()
    manager = _kernel_manager(connection_dir, env, live)
    logs = {s.stem: connection_dir / f"{s.stem}.stderr" for s in wave}
    for path in logs.values():
        path.write_text("", encoding="utf-8")

    def work(source: Path) -> float:
        start = time.perf_counter()
        with open(logs[source.stem], "a", encoding="utf-8", buffering=1) as stderr:
            run_one(source, manager, stderr)
        return round(time.perf_counter() - start, 1)

    threads = int(env[THREAD_VARIABLES[0]])
    log.info(
        "chapters %s: %d at a time, %d thread%s each",
        ", ".join(s.stem for s in wave),
        workers,
        threads,
        "" if threads == 1 else "s",
    )
    with ThreadPoolExecutor(workers, thread_name_prefix="chapter") as pool:
        started = sorted(wave, key=_start_rank) if workers > 1 else wave
        futures = {s.stem: pool.submit(work, s) for s in started}
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
    profile: Profile,
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
        "profile": str(profile_file) if profile_file else profile.name,
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
            if _group(wave[0].stem[:2]) is not None:
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


def build_book(paths: RunPaths, profile: Profile, build_dir: Path) -> Path:
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
    profile: str | Path | Profile,
    data_root: str | None = None,
    output_root: str | None = None,
    build_dir: str | None = None,
    book: bool = True,
    only: list[str] | None = None,
    kernel: str = "python3",
    workers: int | None = None,
) -> dict:
    """The whole job; returns the run record (also written to ``<output_root>/run_record.json``).

    The run is opened by :class:`asd_utils.stages.Session` (the profile validated, the output
    root locked before anything is written: a second run into it is refused, naming this one;
    the record kept; Ctrl-C or SIGTERM recorded as ``interrupted at <chapter>``), then the data
    is indexed and checked (:func:`preflight`), all before anything trains. A full run starts
    by removing the previous run's derived results (:func:`clear_derived`); an ``--only`` run
    adds to them. Every notebook runs the frozen copy ``<output_root>/profile.yaml``.
    ``workers``: chapters side by side (:func:`report_workers`; the files do not change).
    """
    check_only(only)
    session = stages.Session(
        profile, data_root, output_root, unit="chapter", add_to_record=bool(only)
    )
    with session:
        _run_locked(session, build_dir, book, only, kernel, workers)
    return json.loads((session.run.paths.output_root / runs.RECORD_NAME).read_text())


def _run_locked(session: stages.Session, build_dir, book, only, kernel, workers=None) -> None:
    """:func:`run` once the output root is locked."""
    profile, paths = session.run.profile, session.run.paths
    log.info("profile %s · data %s · outputs %s", profile.name, paths.data_root, paths.output_root)
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
        workers=workers,
    )
    if book:
        html = session.timed(
            "book", build_book, paths, profile, Path(build_dir) if build_dir else REPO_ROOT
        )
        log.info("book built in %.0f s: %s", session.seconds["book"], html / "index.html")
