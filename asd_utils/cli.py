"""``asd``: the pipeline's stages from the command line, one sub-command each.

    asd run      --profile quick                      # every stage; no notebook, no book
    asd report   --profile quick                      # the notebooks (calling the stages), book
    asd prepare  --profile paper --data-root /data/dcase2026
    asd train    --profile paper --system "System 1"  # or: accelerate launch -m asd_utils.cli
    asd embed    --profile paper --system "System 1"
    asd score | ensemble | evaluate | package  --profile paper
    asd detect   --profile paper --system "System 4" NEW_CLIPS/ --output scores.csv  # any system
    asd profile  --profile quick                      # the profile whole, as YAML
    asd package  --profile paper --check outputs/paper/submission/task2   # check a package
    asd study noise --profile quick                   # System 5 against the near-mic SNR
    asd run --profile smoke --set osscl.train.steps=2 --set synth.n_train_source=20

Every sub-command takes the same ``--profile``, ``--data-root`` and ``--output-root``
(default: ``$DATA_ROOT`` / ``$OUTPUT_ROOT``, else the profile's synthetic data and
``outputs/<profile>``) and reads what the stages before it wrote there; a finished stage is found,
not redone. ``--set KEY=VALUE`` (repeatable) changes one key of the profile as an edit of its
YAML would (:func:`asd_utils.config.override`): the run's record ``profile.yaml`` holds it and
run keys follow from it. Every command that writes opens its run with
:class:`asd_utils.stages.Session` (the output root's lock before any write, the run record,
interruptions); ``status``, ``profile``, ``detect`` and ``package --check`` only read;
``study`` writes its own folder and table. ``-q`` says only warnings, ``-v`` says more; an error
is one line (``--debug`` or ``ASD_DEBUG=1`` for the traceback).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from asd_utils import errors, registry

log = logging.getLogger("asd_utils")


def _common() -> argparse.ArgumentParser:
    """The options every sub-command shares, defined once."""
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("what and where")
    where.add_argument("--profile", required=True, help="smoke, quick, paper, or a YAML path")
    where.add_argument(
        "--data-root", help="a DCASE tree (default: $DATA_ROOT, else the profile's synthetic data)"
    )
    where.add_argument(
        "--output-root", help="results (default: $OUTPUT_ROOT, else outputs/<profile>)"
    )
    where.add_argument(
        "--set",
        action="append",
        default=[],
        dest="overrides",
        metavar="KEY=VALUE",
        help="change a profile key (dotted, the value as YAML: osscl.train.steps=2); repeatable",
    )
    talk = common.add_argument_group("how much it says")
    errors.add_talk_options(talk)
    errors.add_debug_option(talk)
    return common


def parser() -> argparse.ArgumentParser:
    common = _common()
    top = argparse.ArgumentParser(
        prog="asd",
        description="XJU system for DCASE 2026 Task 2: the pipeline's stages, one sub-command "
        "each (prepare → train → embed → score → ensemble → evaluate → package).",
        epilog="Start with `asd run --profile smoke` (a minute) or `asd report --profile quick`.",
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[common], help=help, description=help)

    trainable = registry.of_kind("fine-tuned")
    command("run", "every stage in order, no notebook and no book")
    report = command("report", "the notebooks (papermill; they call the stages), then the book")
    report.add_argument("--only", nargs="*", help="notebook numbers or names (default: all)")
    report.add_argument("--no-book", action="store_true", help="skip the book")
    report.add_argument("--build-dir", help="the book goes to <build-dir>/_build/html")
    report.add_argument("--kernel", default="python3", help="Jupyter kernel (default python3)")
    command("status", "what the run in the output root is doing, or how it ended")
    command("profile", "the profile whole (what it extends merged in, validated), as YAML")
    command("prepare", "index and check every clip; write the clip manifest clips.csv")
    command("baseline", "the autoencoder baseline: train per machine type, score, write files")
    train = command("train", "train fine-tuned systems (resumable; under accelerate launch too)")
    train.add_argument("--system", nargs="+", required=True, choices=trainable)
    embed = command("embed", "embed every clip with trained systems")
    embed.add_argument("--system", nargs="+", required=True, choices=trainable)
    score = command("score", "score embedded systems with the default back end; official files")
    score.add_argument("--system", nargs="+", help="default: every embedded system")
    command("training-free", "Systems 0 and 6 (a frozen encoder each) and the log-mel floor: score")
    command("ensemble", "System 4 from its members' written scores")
    command("evaluate", "metrics.csv and table2.csv from the written official files")
    _package_options(command("package", "the DCASE submission package, checked after writing"))
    study = commands.add_parser("study", help="a study (noise: System 5 against the SNR)")
    studies = study.add_subparsers(dest="study", required=True, metavar="STUDY")
    studies.add_parser(
        "noise",
        parents=[common],
        help=NOISE_STUDY,
        description=f"{NOISE_STUDY}. It makes its own synthetic sets (no --data-root); "
        "<output root>/noise_study.csv is written after every run and resumed.",
    )
    detect = command(
        "detect", "score new recordings (WAV files or folders, any names) with a finished system"
    )
    detect.add_argument("clips", nargs="+", help="WAV files or folders of them")
    detect.add_argument(
        "--system",
        required=True,
        help="a system this run made, any case, with or without spaces (System 4, system4, "
        "baseline-mse, log-mel floor)",
    )
    detect.add_argument(
        "--output",
        required=True,
        help="the CSV to write (new, empty, or one detect wrote); - for standard output",
    )
    detect.add_argument(
        "--machine-type", help="whose training clips are the reference (any case: Fan)"
    )
    detect.add_argument("--section", help="the section of that machine type (00, 0 or section_00)")
    return top


NOISE_STUDY = "Systems 1, 3, 5 and 0 against the near microphone's SNR, over seeds"


def _package_options(package: argparse.ArgumentParser) -> None:
    """``asd package``'s own options: what to write, or ``--check`` a package (only reads)."""
    package.add_argument("--label", help="<Lastname>_<Institute> (default: the profile's)")
    package.add_argument("--systems", nargs="+", help="at most 4 (default: the profile's)")
    package.add_argument("--destination", help="default: <output root>/submission")
    package.add_argument("--zip", action="store_true", help="also write <label>_task2.zip")
    check = package.add_argument_group("checking a package instead (writes nothing)")
    check.add_argument(
        "--check",
        metavar="FOLDER",
        help="check one system folder, or a folder of them (task2/, dev/), against the data "
        "root's test clips",
    )
    check.add_argument(
        "--against",
        choices=["eval", "dev"],
        dest="which",
        help="the test clips to check against (default: eval if the data has any)",
    )


def _check_package(args, profile) -> None:
    """``asd package --check FOLDER``: says ``ok:`` (and what is left to fill in) or fails."""
    from asd_utils import config, submission

    paths = config.resolve_paths(profile, args.data_root, args.output_root)
    print(submission.check_folder(args.check, paths.data_root, args.which))


def _study(args, profile) -> None:
    """``asd study noise``: runs (or resumes) the study of the profile."""
    from asd_utils.studies import noise_study

    if args.data_root:
        raise errors.UserError("the noise study makes its own synthetic sets: drop --data-root")
    table = noise_study.run(profile, args.output_root, progress=False)
    log.info("%d rows", len(table))


def _dispatch(args):
    """Run the sub-command on the profile (``--set`` applied); returns the output root whose
    scores it ends with (``run``, ``evaluate``, ``report``, ``status``), else ``None``."""
    from asd_utils import config, detection, runs, stages

    profile = config.load_profile(args.profile, args.overrides)
    if args.command == "report":
        from asd_utils.report import pipeline

        record = pipeline.run(
            profile,
            args.data_root,
            args.output_root,
            args.build_dir,
            not args.no_book,
            args.only,
            args.kernel,
        )
        return record["output_root"]
    if args.command == "profile":
        import yaml

        print(yaml.safe_dump(profile.plain(), sort_keys=False), end="")
        return
    if args.command == "study":
        return _study(args, profile)
    if args.command == "package" and args.check:
        return _check_package(args, profile)
    if args.command == "status":
        output_root = config.resolve_paths(profile, args.data_root, args.output_root).output_root
        print(runs.status(output_root))
        return output_root
    if args.command == "detect":  # reads the run; writes only its --output
        run = stages.open_run(profile, args.data_root, args.output_root, write=False)
        detection.detect(run, args.system, args.clips, args.output, args.machine_type, args.section)
        return
    session = stages.Session(
        profile,
        args.data_root,
        args.output_root,
        progress=errors.progress_bars(not args.quiet),
        distributed=args.command == "train",  # accelerate launch: one process prepares
        add_to_record=args.command != "run",
    )
    with session:
        _stage(args, session)
    if args.command in ("run", "evaluate"):
        return session.run.paths.output_root
    return None


def _say_scores(output_root) -> None:
    """The headline on standard output: one line per system's official score, the best and the
    log-mel floor marked (:func:`asd_utils.report.headline.score_lines`)."""
    from asd_utils.report import headline

    print("\n".join(headline.score_lines(output_root)), flush=True)


def _stage(args, session) -> None:
    """One stage sub-command (or all of them, ``run``) on the locked output root."""
    from asd_utils import stages

    run, progress = session.run, errors.progress_bars(not args.quiet)
    if args.command == "run":
        stages.run_all(run, progress, session.seconds, on_stage=session.begin)
    elif args.command == "prepare":
        session.timed("prepare", stages.prepare, run)
    elif args.command == "baseline":
        session.timed("baseline", stages.baseline, run, progress=progress)
    elif args.command == "train":
        for system in args.system:
            main = session.main_process
            session.timed(f"train {system}", stages.train, run, system, progress=progress and main)
    elif args.command == "embed":
        for system in args.system:
            session.timed(f"embed {system}", stages.embed, run, system, progress=progress)
    elif args.command == "score":
        session.timed("score", stages.score, run, args.system)
    elif args.command == "training-free":
        session.timed("training-free", stages.training_free, run, progress=progress)
    elif args.command == "ensemble":
        session.timed("ensemble", stages.ensemble, run, required=True)
    elif args.command == "evaluate":
        session.timed("evaluate", stages.evaluate, run)
    elif args.command == "package":
        _package(args, session)


def _package(args, session) -> None:
    """``asd package``: writes the package; with the dev ground truth, says how to score it."""
    from asd_utils import stages, submission

    folder = session.timed(
        "package",
        stages.package,
        session.run,
        args.systems,
        args.label,
        args.destination,
        args.zip,
    )
    if folder is not None and (folder / "ground_truth").is_dir():
        log.info("official evaluator on the dev folders:\n%s", submission.evaluator_command(folder))


def _main(argv) -> None:
    args = parser().parse_args(argv)
    errors.configure_logging(args.quiet, args.verbose)
    start = time.perf_counter()
    scored = _dispatch(args)
    log.info("asd %s: done in %.0f s", args.command, time.perf_counter() - start)
    if scored is not None:  # the headline last, after everything else the command said
        _say_scores(scored)


def main(argv: list[str] | None = None) -> int:
    """``asd``: returns the exit status (0; 2 for a user error, said in one line; 130 when
    interrupted): :func:`asd_utils.errors.run_command`."""
    return errors.run_command(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
