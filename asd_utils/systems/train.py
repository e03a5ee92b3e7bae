r"""Train fine-tuned systems from the command line, into the run folders the notebooks find.

    python -m asd_utils.systems.train --profile paper --system "System 1" \
        [--data-root D] [--output-root O]
    accelerate launch --multi_gpu --num_processes 4 -m asd_utils.systems.train --profile paper \
        --system "System 1"
    make train PROFILE=paper SYSTEM="System 1"

Each system trains into ``<output_root>/training/<system>-<key>`` (:func:`asd_utils.systems.
run_dir`, keyed by everything that changes its weights), resuming a stopped run from its last
checkpoint; ``make report`` (or the chapter) afterwards finds the finished run and goes straight
on to embedding and scoring. Under ``accelerate launch`` every process runs this same command;
the batch size stays global. Before anything trains the data is indexed and checked (as the
pipeline's door, :func:`asd_utils.report.pipeline.preflight`: train and test clips of both domains,
the checkpoints), a system that cannot run on it (System 3 or 5 on mono clips) is refused with
the reason, and the output root is locked (:class:`asd_utils.runs.OutputLock`) by the main
process, so a pipeline or another training run into it is refused. Every refusal is one line
(``--debug`` or ``ASD_DEBUG=1`` for the traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time

from accelerate import PartialState

from asd_utils import config, data, errors, registry, runs, systems

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> dict:
    """Train the systems named on the command line; returns ``{system: TrainResult}``. Raises
    on a user error (:func:`asd_utils.errors.run_command` makes it one line)."""
    parser = argparse.ArgumentParser(
        prog="python -m asd_utils.systems.train",
        description="Train fine-tuned systems into the run folders the notebooks find.",
    )
    parser.add_argument("--profile", required=True, help="smoke, quick, paper, or a YAML path")
    parser.add_argument(
        "--system",
        nargs="+",
        required=True,
        choices=registry.of_kind("fine-tuned"),
        help="one or more of the fine-tuned systems",
    )
    parser.add_argument("--data-root", help="a DCASE tree (default: $DATA_ROOT, else synthetic)")
    parser.add_argument("--output-root", help="default: $OUTPUT_ROOT, else outputs/<profile>")
    parser.add_argument("--no-progress", action="store_true")
    errors.add_talk_options(parser)
    errors.add_debug_option(parser)
    args = parser.parse_args(argv)
    if not logging.getLogger("asd_utils").handlers:  # run alone (accelerate launch), not by asd
        errors.configure_logging(args.quiet, args.verbose)

    profile = config.load_profile(args.profile)
    paths = config.resolve_paths(profile, args.data_root, args.output_root)
    state = PartialState()
    main_process = state.is_main_process
    lock = contextlib.nullcontext()
    if main_process:
        runs.check_output_root(paths.output_root)
        lock = runs.OutputLock(paths.output_root)
    with lock:
        if getattr(lock, "taken_over", None) is not None:
            log.warning(runs.takeover_note(lock.taken_over, paths.output_root))
        return _train(args, profile, paths, state)


def _train(args, profile: dict, paths: config.RunPaths, state: PartialState) -> dict:
    """:func:`main` once the output root is locked."""
    main_process = state.is_main_process
    with state.main_process_first():  # one process makes the synthetic data, the others wait
        data.prepare_data(profile, paths, progress=main_process)
    clips = data.index_dataset(paths.data_root, cache_dir=paths.output_root / "cache")
    data.check_machine_types(clips)
    refused = {s: why for s, why in systems.unavailable(clips).items() if s in args.system}
    if refused:
        sys.exit(systems.skip_notice(refused))
    systems.check_checkpoints(profile, only=args.system)
    if main_process:
        log.info(
            "profile %s · data %s · outputs %s", profile["name"], paths.data_root, paths.output_root
        )
        log.info(data.describe_channels(clips))
    results = {}
    for system in args.system:
        start = time.perf_counter()
        systems.random_init_warning(systems.settings(profile, system), system)
        result = systems.train_system(
            paths.data_root,
            args.profile,
            system,
            paths.output_root,
            progress=main_process and not args.no_progress,
        )
        results[system] = result
        if main_process:
            log.info("%s: %s (%.0f s)", system, result.summary, time.perf_counter() - start)
            log.info("  run folder: %s", result.output_dir)
    return results


if __name__ == "__main__":
    sys.exit(errors.run_command(main))
