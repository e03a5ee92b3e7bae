"""The package's shape: no function in asd_utils is longer than one screen (80 lines, from
``def`` to its last line, docstring included), so each can be read at once. A longer one is
split into named steps, or listed below with the reason it cannot be. And one command-line
program: only ``asd_utils/cli.py`` parses arguments (every command is an ``asd`` sub-command)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "asd_utils"
MAX_LINES = 80

# "path/inside/asd_utils.py:function" -> why it stays longer. Keep it empty.
ALLOWED: dict[str, str] = {}


def long_functions(root: Path = PACKAGE, limit: int = MAX_LINES) -> dict[str, int]:
    """``{"<path>:<line> <name>": lines}`` of every function (methods and nested ones too)
    under ``root`` longer than ``limit`` lines."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found[f"{path.relative_to(root).as_posix()}:{node.name}"] = lines
    return found


def test_no_function_is_longer_than_a_screen():
    over = {name: n for name, n in long_functions().items() if name not in ALLOWED}
    listing = "; ".join(f"{name} ({n} lines)" for name, n in sorted(over.items()))
    assert not over, f"functions over {MAX_LINES} lines (split them into named steps): {listing}"


def test_the_allow_list_names_only_long_functions():
    stale = sorted(set(ALLOWED) - set(long_functions()))
    assert not stale, f"ALLOWED lists functions that are no longer long (remove them): {stale}"


def test_the_check_finds_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (tmp_path / "long.py").write_text(f"def short():\n    pass\n\n\ndef long():\n{body}\n")
    assert long_functions(tmp_path) == {"long.py:long": MAX_LINES + 1}


def command_lines(root: Path = PACKAGE) -> list[str]:
    """The modules under ``root`` that import :mod:`argparse`, name an ``ArgumentParser`` or
    run as a program (``if __name__ == "__main__"``, a ``__main__.py``)."""
    found = set()
    for path in sorted(root.rglob("*.py")):
        name = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            imported = isinstance(node, ast.Import) and any(
                a.name == "argparse" for a in node.names
            )
            imported |= isinstance(node, ast.ImportFrom) and node.module == "argparse"
            named = isinstance(node, ast.Name | ast.Attribute) and "ArgumentParser" in (
                getattr(node, "id", None),
                getattr(node, "attr", None),
            )
            program = isinstance(node, ast.Constant) and node.value == "__main__"
            if imported or named or program or path.name == "__main__.py":
                found.add(name)
    return sorted(found)


def test_only_the_asd_command_parses_arguments():
    assert command_lines() == ["cli.py"], "make it an `asd` sub-command (asd_utils/cli.py)"


def test_the_check_finds_a_second_program(tmp_path):
    (tmp_path / "cli.py").write_text("import argparse\n")
    (tmp_path / "quiet.py").write_text("import os\n")
    (tmp_path / "other.py").write_text("from argparse import ArgumentParser\n")
    (tmp_path / "built.py").write_text("import x\np = x.ArgumentParser()\n")
    (tmp_path / "run.py").write_text("if __name__ == '__main__':\n    pass\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__main__.py").write_text("")
    expected = ["built.py", "cli.py", "other.py", "pkg/__main__.py", "run.py"]
    assert command_lines(tmp_path) == expected
