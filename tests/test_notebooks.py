"""The source notebooks as JupyterLab shows them, without running them: a sentence whose value is
glued (``{glue:text}`` in a markdown cell, which Lab's plain renderer leaves raw) has that value
printed under the cell that computes it (:func:`asd_utils.report.notebook.glue`; that it
prints only there: ``test_headline.py``)."""

import re

import nbformat

from asd_utils.report import pipeline

GLUE_ROLE = re.compile(r"\{glue(?::\w+)?\}`([^`:]+)")
# glue("name", ...) or glue(f"best_{name}", ...): the name, or the f-string's template
GLUE_CALL = re.compile(r"\bglue\(\s*(f?)[\"']([^\"']*)[\"']")
HELPER = "from asd_utils.report.notebook import glue"


def _cells(path) -> tuple[str, str]:
    """A notebook's markdown and its code, each joined."""
    nb = nbformat.read(path, as_version=4)
    text = {kind: "\n".join(c.source for c in nb.cells if c.cell_type == kind) for kind in
            ("markdown", "code")}  # fmt: skip
    return text["markdown"], text["code"]


def test_every_glued_sentence_is_printed_in_lab_by_the_glue_that_says_it():
    glued = 0
    for path in pipeline.notebooks():
        markdown, code = _cells(path)
        names = set(GLUE_ROLE.findall(markdown))
        if not names:
            continue
        assert HELPER in code, f"{path.name}: glues with another glue than the one that prints"
        assert "myst_nb" not in code, path.name
        calls = GLUE_CALL.findall(code)
        literal = {name for f, name in calls if not f}
        templates = [re.sub(r"\\\{[^}]*\\\}", ".+", re.escape(name)) for f, name in calls if f]
        quoted = set(re.findall(r"[\"']([\w\-]+)[\"']", code))  # glue(name, ...) in a loop
        for name in names:
            known = name in literal or name in quoted
            assert known or any(re.fullmatch(t, name) for t in templates), (
                f"{path.name}: {{glue:text}}`{name}` is glued by no glue() of the notebook"
            )
        glued += len(names)
    assert glued > 50  # chapters 10 to 70 carry their results in glued sentences
