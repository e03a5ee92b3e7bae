"""What every command shares: user errors as one line, ``--debug``, interruptions, and how much
a command says (``-q`` / ``-v``: :func:`configure_logging`).

A command's ``main`` raises; :func:`run_command` turns what it raised into what a command-line
user sees: a problem they can fix (:class:`UserError` and its kinds — :class:`asd_utils.data.
DataError`, :class:`asd_utils.config.ProfileError`, :class:`asd_utils.submission.
SubmissionError`, a checkpoint that cannot be used — or an :class:`OSError`, whose message
names the path) is one line ``error: <message>`` on stderr and exit status 2; Ctrl-C or
SIGTERM (:class:`Interrupted`) one line and status 130. With ``--debug`` on the command line or
``ASD_DEBUG=1`` in the environment the traceback is shown as well. Anything else is a bug and
keeps its traceback. No torch here: the light modules import this one.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import signal
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

DEBUG_ENV = "ASD_DEBUG"
LOG_LEVEL_ENV = "ASD_LOG_LEVEL"  # the level a command chose, for the processes it starts
USER_ERROR_STATUS = 2
INTERRUPTED_STATUS = 130  # 128 + SIGINT, as a shell reports Ctrl-C


class UserError(Exception):
    """A problem the user can fix (bad data, a bad profile, a busy output folder …); the
    message alone says what and where, so a command prints it as one line."""


class RunError(UserError):
    """A run that cannot start or go on: a busy, unwritable or misplaced output root, a
    missing checkpoint, data a stage cannot use."""


class NonFiniteError(UserError):
    """A NaN or infinite embedding or loss: the message names the system, the precision it
    computed in and the clip(s), and how to turn bf16 off (never a silent NaN score)."""


BF16_OFF_HINT = (
    "to turn bf16 off, set mixed_precision: no in the system's train settings of the profile"
)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: the message says where the run stopped and how to go on."""


def debug_requested(argv: Sequence[str] | None = None) -> bool:
    """True with ``--debug`` among the arguments (default ``sys.argv``) or ``ASD_DEBUG`` set
    to anything but ``""``/``0``."""
    argv = sys.argv[1:] if argv is None else argv
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def one_line(err: BaseException) -> str:
    """The message of ``err`` as one line (its first; the type name when it has none)."""
    text = str(err).strip()
    if isinstance(err, KeyError) and err.args:
        text = str(err.args[0])
    return text.splitlines()[0] if text else type(err).__name__


def describe(err: BaseException) -> str:
    """What a user error says, in one line: :func:`one_line`, with a full disk said as one
    (``ENOSPC``, or numpy's "N requested and M written") and an :class:`OSError` that names no
    file given its kind and the way to see where it happened."""
    text = one_line(err)
    if not isinstance(err, OSError):
        return text
    if err.errno == errno.ENOSPC or re.fullmatch(r"\d+ requested and \d+ written", text):
        where = f" writing {err.filename}" if err.filename else ""
        return (
            f"the disk is full{where} ({text}): free space, or choose another --output-root, "
            "then run the same command again (finished work is kept)"
        )
    if err.filename is None and err.errno is not None:
        name = errno.errorcode.get(err.errno, str(err.errno))
        return (
            f"{err.strerror or text} ({name}) in a file operation that named no file: run the "
            f"same command with --debug to see where"
        )
    return text


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` is for the user (one line) rather than a bug (a traceback)."""
    return isinstance(err, UserError | OSError)


def run_command(main: Callable[[Sequence[str] | None], object], argv=None) -> int:
    """Call ``main(argv)`` and return an exit status: 0, 2 for a user error (one line
    ``error: …`` on stderr), 130 for an interruption (one line), the status of a
    ``SystemExit``. A traceback only with :func:`debug_requested`; other errors propagate."""
    debug = debug_requested(argv)
    try:
        with interrupt_on_signals():
            main(argv)
    except KeyboardInterrupt as err:
        if debug:
            traceback.print_exc()
        message = str(err) if isinstance(err, Interrupted) and str(err) else "interrupted"
        print(message, file=sys.stderr)
        return INTERRUPTED_STATUS
    except SystemExit as err:
        if err.code is None or isinstance(err.code, int):
            return err.code or 0
        print(f"error: {err.code}", file=sys.stderr)
        return USER_ERROR_STATUS
    except Exception as err:
        if not is_user_error(err):
            raise
        if debug:
            traceback.print_exc()
        print(f"error: {describe(err)}", file=sys.stderr)
        return USER_ERROR_STATUS
    return 0


_STOP = {"signal": None}  # the signal that asked this process to stop, once one has


def stop_requested() -> bool:
    """Whether Ctrl-C or SIGTERM has asked this process to stop (within
    :func:`interrupt_on_signals`): cleanup code then shuts kernels down at once instead of
    waiting for them."""
    return _STOP["signal"] is not None


@contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """Within the block, Ctrl-C (SIGINT) and SIGTERM raise :class:`KeyboardInterrupt` (so a run
    that is told to stop records where it stopped) and set :func:`stop_requested`; the old
    handlers come back after. Only in the main thread (elsewhere signals cannot be handled)."""

    def handler(signum, frame):
        _STOP["signal"] = signum
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, handler)
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def progress_bars(wanted: bool = True) -> bool:
    """Whether to draw progress bars: when ``wanted`` and standard error is a terminal. In a log
    file, a pipe or a notebook kernel a bar's carriage returns are noise, so none is drawn."""
    return wanted and sys.stderr.isatty()


def add_debug_option(parser) -> None:
    """The ``--debug`` option every command has (read by :func:`debug_requested`)."""
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show the traceback of an error (also: {DEBUG_ENV}=1)",
    )


def add_talk_options(parser) -> None:
    """``-q``/``--quiet`` (warnings and errors only) and ``-v``/``--verbose`` (say more)."""
    talk = parser.add_mutually_exclusive_group()
    talk.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    talk.add_argument("-v", "--verbose", action="store_true", help="say more")


def configure_logging(
    quiet: bool = False, verbose: bool = False, prefix: str = "", level: int | None = None
) -> None:
    """Say what the package does (logger ``asd_utils``) on standard error, one line per
    message; the level is INFO, WARNING with ``quiet``, DEBUG with ``verbose``, or ``level``.
    The level is also put in the environment (``ASD_LOG_LEVEL``) for the processes a command
    starts (the report's notebook kernels, :func:`configure_from_environment`)."""
    if level is None:
        level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    package = logging.getLogger("asd_utils")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(prefix + "%(message)s"))
    package.handlers[:] = [handler]
    package.setLevel(level)
    package.propagate = False
    warnings.showwarning = _warning_as_line
    os.environ[LOG_LEVEL_ENV] = logging.getLevelName(level)


def _warning_as_line(message, category, filename, lineno, file=None, line=None) -> None:
    """A Python warning (ours or a library's) as one log line of the package's logger, with its
    kind and the first line of its message: no file path, no echoed source line."""
    text = str(message).strip().splitlines()
    logging.getLogger("asd_utils").warning(
        "%s: %s", category.__name__, text[0] if text else "(no message)"
    )


def configure_from_environment(prefix: str = "") -> None:
    """In a process nobody configured (a notebook's kernel): log at the level the command that
    started it chose (``ASD_LOG_LEVEL``, default INFO). Leaves a configured logger alone."""
    if logging.getLogger("asd_utils").handlers:
        return
    name = os.environ.get(LOG_LEVEL_ENV, "INFO")
    level = logging.getLevelName(name) if name in ("DEBUG", "INFO", "WARNING", "ERROR") else 20
    configure_logging(prefix=prefix, level=level)
