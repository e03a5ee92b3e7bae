"""The rehearsal: every stage of the pipeline at the real data size on this machine, timed.

Generates the profile's synthetic data (timed; found, not made again, when it is there), then runs
each stage as its own subprocess of the ``asd`` command, in ``asd run``'s order
(:func:`asd_utils.stages.run_all`): ``prepare``, ``baseline``, ``train`` and ``embed`` per
fine-tuned system the data can feed (:func:`asd_utils.stages.trainable`), ``score``,
``training-free``, ``ensemble``, ``evaluate``, ``package``, all with ``--profile <profile>
--output-root <dir>``. The child's output streams to the console as it comes (its progress bars
show). Per stage it records the wall seconds, the CPU seconds, the peak resident memory and the
clips handled (and clips/s). The peak memory is the child's ``ru_maxrss`` from ``os.wait4`` on
its pid: the largest resident set of the child or of any descendant it waited for (the
synthesiser's worker processes, for one), not their sum. It stops at the first failing stage,
with its message.

Writes ``rehearsal.md`` (the table, the machine: CPU, its bf16 flags, cores, memory, the load
average at each stage's start) and ``rehearsal.json`` into the output root (default
``outputs/<profile>``, as the pipeline's), or ``--output``.

    python benchmarks/rehearse.py                            # the rehearsal profile: 14,400 clips
    python benchmarks/rehearse.py --train-fraction 0.25      # a quarter of the training clips
    python benchmarks/rehearse.py --profile smoke --output-root /tmp/r   # the tiny check (a test)

``--train-fraction f`` keeps the full test sets and ``ceil(f · n_train_source)`` source training
clips per machine type (990 → 248 at 0.25; the 10 target clips stay), through a variant of the
profile (its own name and synthetic root) that every stage process gets as ``--set``
arguments; the output says so. ``EAT_CHECKPOINT`` / ``BEATS_CHECKPOINT`` are removed from the
children's environment: the rehearsal's backbones are tiny and random.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from machine import cpu_model, load_recorded

from asd_utils import config, registry
from asd_utils.config import schema
from asd_utils.files import atomic_write_text
from asd_utils.models import precision

KIB = 1024
STAGES_AFTER_TRAINING = ("score", "training-free", "ensemble", "evaluate", "package")


def memory_total_gib() -> float:
    """The machine's memory (GiB) from /proc/meminfo; 0 where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * KIB / 2**30
    except OSError:
        pass
    return 0.0


def describe_machine() -> dict:
    """CPU model, its bf16 flags, cores, memory, and the load average now."""
    return {
        "cpu": cpu_model(),
        "bf16_flags": list(precision.cpu_flags()),
        "cores": os.cpu_count(),
        "memory_gib": round(memory_total_gib(), 1),
        "load_at_start": round(os.getloadavg()[0], 2),
        "python": sys.version.split()[0],
    }


def asd_command() -> list[str]:
    """The ``asd`` command of this interpreter's environment (``python -m asd_utils.cli`` when
    the script is not installed beside it)."""
    script = Path(sys.executable).with_name("asd")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "asd_utils.cli"]


def run_child(command: list[str], env: dict, tail_chars: int = 4000) -> dict:
    """Run ``command``, streaming its output (stdout and stderr merged) to ours as it comes.

    Returns ``returncode``, ``wall_s``, ``cpu_s`` (user + system of the child and the
    descendants it waited for), ``peak_rss_gib`` (``ru_maxrss`` from ``os.wait4``: the largest
    resident set among them) and ``tail`` (the last ``tail_chars`` of its output).
    """
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    tail = b""
    out = sys.stdout.buffer
    while True:
        chunk = os.read(child.stdout.fileno(), 65536)
        if not chunk:
            break
        out.write(chunk)
        out.flush()
        tail = (tail + chunk)[-tail_chars:]
    child.stdout.close()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait
    return {
        "returncode": child.returncode,
        "wall_s": time.perf_counter() - start,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_gib": usage.ru_maxrss * KIB / 2**30,
        "tail": tail.decode(errors="replace"),
    }


def train_fraction(profile: schema.Profile, fraction: float) -> tuple[list[str], str]:
    """The ``--set`` arguments of a variant of ``profile`` with ``ceil(fraction ·
    n_train_source)`` source training clips (test sets and target clips as they are), its own
    name and synthetic root, and a sentence saying what changed."""
    before = profile.synth.n_train_source
    clips = max(2, math.ceil(fraction * before))
    suffix = f"-train{round(100 * fraction)}"
    root = f"{profile.data.synthetic_root}{suffix}"
    overrides = [
        f"name={profile.name}{suffix}",
        f"synth.n_train_source={clips}",
        f"data.synthetic_root={root}",
    ]
    note = (
        f"--train-fraction {fraction}: {clips} source training clips per machine type instead "
        f"of {before} (target clips and test sets in full), data {root}"
    )
    return overrides, note


def train_fraction_profile(profile: schema.Profile, fraction: float) -> tuple[schema.Profile, str]:
    """The variant of :func:`train_fraction` itself (``--set`` applied) and its sentence."""
    overrides, note = train_fraction(profile, fraction)
    return config.load_profile(profile, overrides), note


def stage_plan(
    profile: schema.Profile, clips, only: list[str] | None = None
) -> list[tuple[str, list[str], int, str]]:
    """The stages after ``prepare``: ``(name, asd arguments, clips handled, what they are)``;
    the fine-tuned systems of the registry the data allows, or those of them in ``only``.

    ``clips``: the manifest ``asd prepare`` wrote. Training handles ``steps × batch ×
    accumulation`` clips (presentations); embedding, scoring and the training-free systems every
    clip; evaluate the labelled test clips; package the evaluation test clips (or the test clips).
    """
    from asd_utils import systems

    total = len(clips)
    test = clips[clips["split"] == "test"]
    labelled = int(test["label"].notna().sum())
    anonymous = len(test) - labelled
    unavailable = systems.unavailable(clips)
    plan = [("baseline", ["baseline"], total, "every clip: features, training, scores")]
    for system in registry.of_kind("fine-tuned"):
        if system in unavailable or (only is not None and system not in only):
            continue
        train = registry.settings(profile, system).train
        seen = train.steps * train.batch_size * train.grad_accumulation
        plan.append((f"train {system}", ["train", "--system", system], seen, "clips presented"))
        plan.append((f"embed {system}", ["embed", "--system", system], total, "every clip"))
    plan += [
        ("score", ["score"], total, "every clip, every embedded system"),
        ("training-free", ["training-free"], total, "every clip, near + far (+ ANC), the floor"),
        ("ensemble", ["ensemble"], total, "every clip"),
        ("evaluate", ["evaluate"], labelled, "labelled test clips"),
        ("package", ["package"], anonymous or len(test), "test clips packaged"),
    ]
    return plan


def _row(name: str, measured: dict, clips: int, what: str, load: float) -> dict:
    wall = measured["wall_s"]
    return {
        "stage": name,
        "wall_s": round(wall, 1),
        "cpu_s": round(measured["cpu_s"], 1),
        "peak_rss_gib": round(measured["peak_rss_gib"], 2),
        "clips": int(clips),
        "clips_per_s": round(clips / wall, 1) if wall > 0 and clips else None,
        "what": what,
        "load_at_start": round(load, 2),
        "returncode": measured["returncode"],
    }


def markdown(record: dict) -> str:
    """The rehearsal as Markdown: the machine, the notes, one row per stage."""
    machine = record["machine"]
    flags = ", ".join(machine["bf16_flags"]) or "none"
    lines = [
        f"# Rehearsal: profile {record['profile']}",
        "",
        f"- machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB; "
        f"bf16 flags: {flags}; load average (1 min) {machine['load_at_start']} at start, "
        f"{record.get('load_at_end', '?')} at the end",
        f"- data: {record['data_root']} ({record['clips']:,} clips); results: "
        f"{record['output_root']}",
        f"- status: {record['status']}; total wall {record['total_wall_s']:.0f} s",
        "- peak memory: `ru_maxrss` of the stage's process (os.wait4): its largest resident set, "
        "or that of a descendant it waited for",
        *[f"- {note}" for note in record["notes"]],
        "",
        "| stage | wall s | CPU s | peak GiB | clips | clips/s | load at start | what |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in record["stages"]:
        rate = "" if row["clips_per_s"] is None else f"{row['clips_per_s']:,}"
        failed = "" if row["returncode"] == 0 else f" (FAILED, exit {row['returncode']})"
        lines.append(
            f"| {row['stage']}{failed} | {row['wall_s']:,} | {row['cpu_s']:,} | "
            f"{row['peak_rss_gib']} | {row['clips']:,} | {rate} | {row['load_at_start']} | "
            f"{row['what']} |"
        )
    if record.get("failure"):
        lines += ["", "## The failing stage's last output", "", "```", record["failure"], "```"]
    return "\n".join(lines) + "\n"


def rehearse(args) -> int:
    profile = config.load_profile(args.profile)
    notes, overrides = [], []
    hidden = ("EAT_CHECKPOINT", "BEATS_CHECKPOINT", "DATA_ROOT", "OUTPUT_ROOT")
    env = {k: v for k, v in os.environ.items() if k not in hidden}
    env["PYTHONUNBUFFERED"] = "1"
    if args.train_fraction is not None:
        if not 0 < args.train_fraction <= 1:
            raise SystemExit("--train-fraction must be in (0, 1]")
        overrides, note = train_fraction(profile, args.train_fraction)
        profile = config.load_profile(profile, overrides)
        notes.append(f"{note}; {' '.join(f'--set {o}' for o in overrides)}")
        print(notes[-1], flush=True)
    paths = config.resolve_paths(profile, args.data_root, args.output_root)
    output_root = paths.output_root
    output_root.mkdir(parents=True, exist_ok=True)
    common = ["--profile", args.profile, "--output-root", str(output_root)]
    common += [f"--set={o}" for o in overrides]
    if args.data_root:
        common += ["--data-root", str(args.data_root)]
    asd = asd_command()
    record = {
        "profile": profile.name,
        "profile_file": str(config.profile_path(args.profile)),
        "overrides": overrides,
        "command": " ".join(asd),
        "data_root": str(paths.data_root),
        "output_root": str(output_root),
        "machine": describe_machine(),
        "notes": notes,
        "stages": [],
        "clips": 0,
        "status": "running",
        "total_wall_s": 0.0,
    }
    report = Path(args.output) if args.output else output_root
    start = time.perf_counter()

    def write() -> None:
        record["total_wall_s"] = round(time.perf_counter() - start, 1)
        record["load_at_end"] = round(os.getloadavg()[0], 2)
        report.mkdir(parents=True, exist_ok=True)
        atomic_write_text(report / "rehearsal.json", json.dumps(record, indent=2))
        atomic_write_text(report / "rehearsal.md", markdown(record))

    def run(name: str, arguments: list[str], clips: int, what: str, command=None) -> bool:
        load = os.getloadavg()[0]
        banner = f"=== {name} (load average {load:.2f}) ==="
        print(f"\n{banner}\n{' '.join(command or [*asd, *arguments, *common])}", flush=True)
        measured = run_child(command or [*asd, *arguments, *common], env)
        row = _row(name, measured, clips, what, load)
        record["stages"].append(row)
        print(
            f"=== {name}: {row['wall_s']} s, peak {row['peak_rss_gib']} GiB, "
            f"{row['clips_per_s'] or '-'} clips/s, exit {row['returncode']} ===",
            flush=True,
        )
        if measured["returncode"] != 0:
            record["status"] = f"failed at {name} (exit {measured['returncode']})"
            record["failure"] = measured["tail"].strip()[-2000:]
            write()
            print(f"\nrehearsal stopped: {name} failed; its last output:\n{record['failure']}")
            return False
        write()
        return True

    # The synthetic data, timed in its own process (found when it is there: the time says so).
    if paths.synthetic:
        from asd_utils.data.synth import SynthConfig, clip_plan

        synth = SynthConfig.from_section(profile.synth)
        planned = len(clip_plan(synth))
        manifest = paths.data_root / "synth_config.json"
        found = (
            manifest.is_file()
            and json.loads(manifest.read_text()).get("fingerprint") == synth.fingerprint()
        )
        if found:
            made = json.loads(manifest.read_text()).get("seconds")
            notes.append(
                f"synthesise: the data was there already (made in {made} s by an earlier "
                "process); the row times the check"
            )
        code = (
            "import sys; from asd_utils import config, data; "
            "p = config.load_profile(sys.argv[1], sys.argv[2:]); "
            "data.prepare_data(p, config.resolve_paths(p), progress=True)"
        )
        command = [sys.executable, "-c", code, args.profile, *overrides]
        if not run("synthesise", [], planned, "clips written", command):
            return 1
    if not run("prepare", ["prepare"], 0, "every clip indexed and checked"):
        return 1
    from asd_utils import stages

    clips = stages.read_manifest(output_root, paths.data_root)
    if clips is None:
        raise SystemExit(f"asd prepare wrote no clip manifest in {output_root}")
    record["clips"] = len(clips)
    prepared = record["stages"][-1]
    prepared["clips"] = len(clips)
    prepared["clips_per_s"] = round(len(clips) / prepared["wall_s"], 1)
    from asd_utils import systems

    skipped = systems.unavailable(clips)
    if skipped:
        notes.append(f"not run (the data cannot feed them): {', '.join(skipped)}")
    ablation = [
        a.name for s in registry.of_kind("fine-tuned") if s not in skipped
        for a in registry.ablations_of(s) if getattr(registry.settings(profile, s), a.flag)
    ]  # fmt: skip
    if ablation:
        notes.append(f"not rehearsed: the ablations asd run adds ({', '.join(ablation)})")
    write()
    for name, arguments, handled, what in stage_plan(profile, clips, args.systems):
        if not run(name, arguments, handled, what):
            return 1
    record["status"] = "finished"
    write()
    print("\n" + markdown(record))
    print(f"written to {report / 'rehearsal.md'} and rehearsal.json")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="rehearsal", help="default: rehearsal")
    parser.add_argument("--data-root", help="a DCASE tree (default: the profile's synthetic data)")
    parser.add_argument("--output-root", help="default: outputs/<profile>")
    parser.add_argument("--output", help="folder for rehearsal.md / .json (default: output root)")
    parser.add_argument(
        "--train-fraction",
        type=float,
        help="keep this share of the source training clips (e.g. 0.25: 248 of 990); tests in full",
    )
    parser.add_argument("--no-settle", action="store_true", help="do not wait for idle cores")
    parser.add_argument(
        "--systems",
        nargs="+",
        choices=registry.of_kind("fine-tuned"),
        help="train and embed only these fine-tuned systems (default: every one the data allows)",
    )
    args = parser.parse_args(argv)
    with load_recorded(limit_s=0 if args.no_settle else 120):
        return rehearse(args)


if __name__ == "__main__":
    sys.exit(main())
