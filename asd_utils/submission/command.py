"""The DCASE 2026 Task 2 submission package: write it from a finished run, and check it.

The command line (:func:`main`; the layout written: :mod:`asd_utils.submission.package`)::

    python -m asd_utils.submission write --profile quick [--label Lastname_Institute]
        [--systems "System 4" "System 1"] [--zip] [--data-root D] [--output-root O]
    python -m asd_utils.submission check DIR [--data-root D] [--set eval|dev]
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import pandas as pd

from asd_utils import config, data, errors
from asd_utils.evaluation import official
from asd_utils.submission.check import (
    _SYSTEM_FOLDER,
    check_package,
    meta_notes,
    read_meta,
    system_folders,
)
from asd_utils.submission.ground_truth import evaluator_command
from asd_utils.submission.package import write_package

log = logging.getLogger(__name__)


def _test_clips(data_root: Path, which: str | None) -> tuple[pd.DataFrame, str]:
    clips = data.index_dataset(data_root, split="test")
    which = which or ("eval" if (clips["dataset"] == "eval").any() else "dev")
    return clips[clips["dataset"] == which], which


def _check_command(directory: Path, data_root: Path, which: str | None) -> str:
    test_clips, which = _test_clips(data_root, which)
    subfolders = [p for p in directory.iterdir() if p.is_dir()] if directory.is_dir() else []
    if any(_SYSTEM_FOLDER.fullmatch(p.name) for p in subfolders):
        if which == "eval":
            check_package(directory, test_clips)
        else:
            for folder in system_folders(directory):
                official.check(folder, test_clips)
        names = [folder.name for folder in system_folders(directory)]
        notes = [
            f"{name}: {note}"
            for name in names
            if (meta := directory / name / f"{name}.meta.yaml").is_file()
            for note in meta_notes(read_meta(meta))
        ]
        summary = f"{len(names)} system folders ({', '.join(names)})"
        return f"ok: {directory}: {summary} pass against the {which} test clips" + "".join(
            f"\nto do: {note}" for note in notes
        )
    official.check(directory, test_clips)
    kinds = test_clips.groupby(["machine_type", "section"]).ngroups
    return f"ok: {directory}: {kinds} machine types pass against the {which} test clips"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    write = commands.add_parser("write", help="write the package of a finished run")
    write.add_argument("--profile", required=True, help="smoke, quick, paper, or a YAML path")
    write.add_argument("--data-root", help="the DCASE tree (default: $DATA_ROOT, else synthetic)")
    write.add_argument("--output-root", help="the run (default: $OUTPUT_ROOT, else outputs/<p>)")
    write.add_argument("--label", help="<Lastname>_<Institute> (default: the profile's)")
    write.add_argument("--systems", nargs="+", help="up to 4 systems (default: the profile's)")
    write.add_argument("--destination", help="default: <output_root>/submission")
    write.add_argument("--zip", action="store_true", help="also write <label>_task2.zip")
    check_ = commands.add_parser("check", help="check a system folder or a package's task2/")
    check_.add_argument("directory", help="one system folder, or a folder of them (task2/, dev/)")
    check_.add_argument("--data-root", help="the DCASE tree (default: $DATA_ROOT)")
    check_.add_argument("--profile", help="resolve the data root as the pipeline does")
    check_.add_argument(
        "--set",
        choices=["eval", "dev"],
        dest="which",
        help="the test clips to check against (default: eval if the data has any)",
    )
    errors.add_talk_options(parser)
    errors.add_debug_option(parser)

    def command(argv):
        args = parser.parse_args(argv)
        errors.configure_logging(args.quiet, args.verbose)
        if args.command == "write":
            profile = config.load_profile(args.profile)
            paths = config.resolve_paths(profile, args.data_root, args.output_root)
            written = write_package(
                paths.output_root,
                paths.data_root,
                profile,
                systems=args.systems,
                label=args.label,
                destination=args.destination,
                zip=args.zip,
            )
            if (written / "ground_truth").is_dir():  # asked for the package: say how to score it
                log.info("official evaluator on the dev folders:\n%s", evaluator_command(written))
        else:
            data_root = args.data_root or os.environ.get("DATA_ROOT")
            if args.profile:
                data_root = config.resolve_paths(config.load_profile(args.profile), data_root)
                data_root = data_root.data_root
            if not data_root:
                raise errors.UserError("give --data-root (or $DATA_ROOT, or --profile)")
            print(_check_command(Path(args.directory), Path(data_root), args.which))

    return errors.run_command(command, argv)
