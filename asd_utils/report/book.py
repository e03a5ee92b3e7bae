"""The book as a reader gets it: staged from the executed notebooks, built offline.

:func:`stage` copies the book's sources and the executed notebooks into the staging folder
that ``jupyter-book`` builds, and on the way

- removes from the book what a reader does not need before the results (papermill's injected
  parameters, the ``parameters`` cell and the set-up cells, tagged ``remove-cell``; the
  executed notebooks themselves keep them), and folds the source of a code cell longer than
  :data:`FOLD_LINES` lines under a "Show code cell source" toggle (``hide-input``), so that a
  reader reaches its result without scrolling past the machinery;
- replaces every absolute path of the machine that ran in the notebooks' outputs: the output
  and data roots become ``<output root>`` / ``<data root>`` (or their paths relative to the
  repository when they lie inside it), the repository ``<repository>``, any other absolute
  path its last two parts;
- writes the run's headline into the landing page (:func:`headline`): computed from the run's
  own files, never typed: the scores beside the paper's, what they mean
  (:mod:`asd_utils.report.headline`), the CPU that made them, and how to get the seed spread
  and the noise study where they have not run;
- copies MathJax 3 (the files of the ``sphinx-mathjax-offline`` package of
  ``requirements.txt``: the CommonHTML bundle, its fonts and TeX extensions) where Sphinx copies
  it into the built book's ``_static/``, so that formulas render with no network
  (``_config.yml`` points Sphinx at it).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import nbformat
import pandas as pd

from asd_utils import config, registry
from asd_utils.evaluation import metrics
from asd_utils.report import headline as headline_

BOOK_FILES = ("_config.yml", "_toc.yml", "book")
HEADLINE_MARKER = "<!-- run headline -->"
HIDDEN_TAGS = {"injected-parameters", "parameters"}
PIPELINE_FIGURE = "pipeline.svg"  # drawn into the staged book/, beside intro.md
FOLD_LINES = 12  # a longer code cell shows its output with its source folded
MATHJAX_DIR = "_mathjax/mathjax"  # not _static/: jupyter-book loads every .js file there
_GLUE = re.compile(r"\{glue(?::\w+)?\}`[^`]*`")
_DATA_URI = re.compile(r"(data:[\w/+.-]+;base64,[A-Za-z0-9+/=]+)")
_ABSOLUTE = re.compile(r"(?<![\w:/.~<>\-])/(?:[^\s/'\"<>()\[\]]+/)+([^\s/'\"<>()\[\]]+)")


def path_replacements(paths: config.RunPaths) -> list[tuple[str, str]]:
    """(absolute path, what the book shows instead), the most specific first."""
    pairs = []
    for root, label in ((paths.output_root, "<output root>"), (paths.data_root, "<data root>")):
        root = Path(root).resolve()
        try:
            pairs.append((str(root), str(root.relative_to(config.REPO_ROOT))))
        except ValueError:
            pairs.append((str(root), label))
    pairs += [(str(config.REPO_ROOT), "<repository>"), (sys.prefix, "<python>")]
    return sorted(pairs, key=lambda pair: -len(pair[0]))


def scrub(text: str, replacements: list[tuple[str, str]]) -> str:
    """``text`` with no absolute path of this machine left in it; embedded data (``data:…;
    base64,…``, e.g. a chapter's audio players) is left as it is: its ``/`` are not paths."""
    pieces = _DATA_URI.split(text)  # text, data, text, …
    pieces[::2] = [_scrub_paths(piece, replacements) for piece in pieces[::2]]
    return "".join(pieces)


def _scrub_paths(text: str, replacements: list[tuple[str, str]]) -> str:
    for old, new in replacements:
        text = text.replace(old, new)
    return _ABSOLUTE.sub(lambda m: f"…/{m.group(0).rstrip('/').split('/')[-2]}/{m.group(1)}", text)


def _scrub_output(output: dict, replacements) -> None:
    if "text" in output:
        output["text"] = scrub("".join(output["text"]), replacements)
    for kind, value in output.get("data", {}).items():
        if kind.startswith("text/") or kind == "application/json":
            if isinstance(value, str | list):
                output["data"][kind] = scrub("".join(value), replacements)


def book_notebook(source: Path, target: Path, replacements) -> None:
    """Write the book's copy of one executed notebook (cells hidden, paths scrubbed)."""
    notebook = nbformat.read(source, as_version=4)
    for cell in notebook.cells:
        tags = cell.metadata.setdefault("tags", [])
        if HIDDEN_TAGS & set(tags) and "remove-cell" not in tags:
            tags.append("remove-cell")
        long = cell.cell_type == "code" and len(cell.source.splitlines()) > FOLD_LINES
        if long and not {"remove-cell", "remove-input", "hide-input"} & set(tags):
            tags.append("hide-input")
        for output in cell.get("outputs", []):
            _scrub_output(output, replacements)
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, target)


def not_run(source: Path, target: Path) -> None:
    """The book's copy of a chapter that did not run for these results."""
    notebook = nbformat.read(source, as_version=4)
    note = nbformat.v4.new_markdown_cell(
        "```{note}\nThis chapter did not run for the results in this book (a run of selected "
        "chapters, `--only`): it shows its text and code, without outputs.\n```"
    )
    note.id = "not-run"
    notebook.cells.insert(1, note)
    for cell in notebook.cells:
        if "parameters" in cell.metadata.get("tags", []):
            cell.metadata["tags"].append("remove-cell")
        if cell.cell_type == "markdown":  # what the chapter would have computed
            cell.source = _GLUE.sub("*(not computed)*", cell.source)
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, target)


# MathJax 3's bundles the book does not load (the SVG and MathML builds, the speech engine)
MATHJAX_UNUSED = (
    "tex-svg*",
    "tex-mml-*",
    "mml-*",
    "tex-chtml-full*",
    "node-main.js",
    "sre",
    "svg*",
)


def _mathjax_source() -> Path:
    """MathJax 3's ``es5`` files, as the ``sphinx-mathjax-offline`` wheel ships them (its
    folder name has hyphens, so it is found through its distribution, not imported)."""
    from importlib import metadata

    root = metadata.distribution("sphinx-mathjax-offline").locate_file("")
    return Path(root) / "sphinx-mathjax-offline" / "static" / "mathjax"


def headline(paths: config.RunPaths, profile: config.schema.Profile) -> str:
    """The landing page's account of this run, from its files: what ran on what, the official
    score and the source / target harmonic means of every system, the seed spread when
    ``make seeds`` wrote one for this data, and where each system is made."""
    out = paths.output_root
    record = (
        json.loads((out / "run_record.json").read_text())
        if (out / "run_record.json").exists()
        else {}
    )
    lines = ["## This run", "", _what_ran(paths, profile, record), ""]
    lines += _score_table(out / "metrics.csv")
    scores = headline_.official_scores(out)
    if not scores.empty:
        members = profile.ensemble.members
        lines += [" ".join(headline_.meaning(scores, members)), ""]
        lines += [headline_.cpu_sentence((record.get("machine") or {}).get("processor")), ""]
    lines += _seed_spread(out / "bench_seeds.csv", paths.data_root) or [
        f"No seed spread for this data yet: `make seeds PROFILE={profile.name}` trains "
        "System 1 and the autoencoder again with other seeds, and the next build shows it here.",
        "",
    ]
    if not (out / "noise_study.csv").exists():
        lines += [
            f"System 5's noise study has not run: `make noise-study PROFILE={profile.name}` "
            "runs it, and the next build shows it in the fusion chapter.",
            "",
        ]
    return "\n".join(lines)


def _what_ran(paths: config.RunPaths, profile: config.schema.Profile, record: dict) -> str:
    """One sentence: the profile and seed, the data (with its machine types from
    ``run_record.json``), the weights each near-mic backbone started from."""
    weights = []
    backbones = registry.of_kind("fine-tuned", "training-free")
    for system in [n for n in backbones if registry.REGISTRY[n].reads == registry.NEAR]:
        section = registry.settings(profile, system)
        backbone = {"eat": "EAT", "beats": "BEATs"}[section.backbone]
        kind = "pre-trained" if section.checkpoint else f"random {section.size}"
        weights.append(f"{system} {kind} {backbone} weights")
    data = record.get("data", "synthetic" if paths.synthetic else "user-given DCASE tree")
    types = record.get("machine_types", {})
    listed = (
        "; ".join(f"{kind}: {', '.join(names)}" for kind, names in types.items())
        if isinstance(types, dict)
        else ""
    )
    return (
        f"Profile **{profile.name}** (seed {profile.seed}) on the **{data}** data"
        + (f" ({listed})" if listed else "")
        + f"; {'; '.join(weights)}."
        + (
            " The synthetic data is ours: its numbers check the machinery, they are not evidence "
            "about real machines."
            if paths.synthetic
            else ""
        )
    )


def _score_table(metrics_path: Path) -> list[str]:
    """The markdown table of every system's official score and source / target harmonic
    means (in %) from ``metrics.csv``; a sentence when nothing has ground truth; nothing
    without the file."""
    if not metrics_path.exists():
        return []
    table = pd.read_csv(metrics_path, dtype={"section": str})
    reported = headline_.reported()
    rows = []
    for system in [*registry.paper(), *registry.beyond()]:
        part = table[table["system"] == system]
        if part.empty:
            continue
        summary = metrics.summarise(part)
        entry = registry.REGISTRY[system]
        name = f"[{system}](../notebooks/{entry.chapter}.ipynb)"
        where = "paper" if entry.paper else "beyond the paper"
        told = f"{reported[system]:.2f}" if system in reported else ""
        rows.append(
            f"| {name} | {where} | {100 * summary['hmean']:.2f} | "
            f"{100 * summary['hmean_source']:.2f} | {100 * summary['hmean_target']:.2f} | "
            f"{told} |"
        )
    if not rows:
        return ["No machine type of this run has ground truth: nothing to score.", ""]
    return [
        "Official score (harmonic mean of AUC-s, AUC-t and pAUC over the machine types "
        "with ground truth) and the harmonic means of the source and target AUCs, in %, "
        "computed from the submission files this run wrote "
        "([the results](../notebooks/70_results.ipynb)), beside the official score the paper "
        "reports for its systems (real development set, pre-trained weights):",
        "",
        "| system | | official score | AUC source (hmean) | AUC target (hmean) | paper reports |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
        *rows,
        "",
    ]


def _seed_spread(spread_path: Path, data_root: Path) -> list[str]:
    """The mean ± standard deviation of each score over the seeds ``make seeds`` wrote to
    ``bench_seeds.csv`` for this ``data_root``; nothing with fewer than two seeds."""
    if not spread_path.exists():
        return []
    spread = pd.read_csv(spread_path)
    spread = spread[spread["data_root"] == str(data_root)]
    columns = [c for c in spread if c not in ("seed", "data_root") and not c.endswith("seconds")]
    if len(spread) < 2 or not columns:
        return []
    parts = [f"{c} {spread[c].mean():.2f} ± {spread[c].std():.2f}" for c in columns]
    return [
        f"Over {len(spread)} seeds ({', '.join(str(s) for s in spread['seed'])}; "
        f"`make seeds`), official score mean ± standard deviation: {'; '.join(parts)}.",
        "",
    ]


def draw_pipeline(target: Path) -> Path:
    """The landing page's pipeline diagram (:func:`asd_utils.report.plots.pipeline_diagram`)
    as an SVG at ``target``: drawn by code at each build, the column's width, 10 pt text."""
    import matplotlib

    matplotlib.use("Agg")  # no display here; the notebooks keep their own backend
    import matplotlib.pyplot as plt

    from asd_utils.report import plots

    figure = plots.pipeline_diagram()
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, format="svg", metadata={"Date": None})
    plt.close(figure)
    return target


def stage(
    paths: config.RunPaths, profile: config.schema.Profile, executed_dir: Path, stage_dir: Path
) -> Path:
    """Fill ``stage_dir`` with what ``jupyter-book build`` reads (see the module docstring)."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    for name in BOOK_FILES:
        source, target = config.REPO_ROOT / name, stage_dir / name
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copy2(source, target)
    replacements = path_replacements(paths)
    executed = {p.name: p for p in executed_dir.glob("*.ipynb")}
    for source in sorted((config.REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        target = stage_dir / "notebooks" / source.name
        if source.name in executed:
            book_notebook(executed[source.name], target, replacements)
        else:  # an --only run into a fresh folder: the chapter's text and code, no outputs
            not_run(source, target)
    draw_pipeline(stage_dir / "book" / PIPELINE_FIGURE)
    intro = stage_dir / "book" / "intro.md"
    text = intro.read_text()
    summary = scrub(headline(paths, profile), replacements)
    intro.write_text(text.replace(HEADLINE_MARKER, summary) if HEADLINE_MARKER in text else text)
    shutil.copytree(
        _mathjax_source(),
        stage_dir / MATHJAX_DIR,
        ignore=shutil.ignore_patterns(*MATHJAX_UNUSED),
        dirs_exist_ok=True,
    )
    return stage_dir
