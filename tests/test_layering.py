"""The package's walls: what loads without torch, and the layering import-linter checks."""

import subprocess
import sys

import pytest
from conftest import REPO_ROOT

TORCH_FREE = [
    "asd_utils.config",
    "asd_utils.data",
    "asd_utils.data.synth",
    "asd_utils.evaluation.metrics",
    "asd_utils.submission",
    "asd_utils.report.book",
    "asd_utils.registry",
    "asd_utils.runs",
]


BLOCK_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
sys.meta_path.insert(0, NoTorch())
"""


@pytest.mark.parametrize("module", TORCH_FREE)
def test_the_light_modules_load_without_torch(module):
    # torch made unimportable: any import of it (direct or through another module) fails
    code = BLOCK_TORCH + f"import {module}\nassert 'torch' not in sys.modules\nprint('ok')"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_the_layering_contract_holds_and_catches_a_violation(tmp_path):
    """``lint-imports`` passes on the package, and fails on a copy where the evaluation
    imports the stages (a layer above it)."""
    import shutil

    lint = [sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()"]
    done = subprocess.run([*lint, "--no-cache"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:]
    copy = tmp_path / "repo"
    shutil.copytree(REPO_ROOT / "asd_utils", copy / "asd_utils")
    shutil.copy(REPO_ROOT / ".importlinter", copy / ".importlinter")
    metrics = copy / "asd_utils" / "evaluation" / "metrics.py"
    metrics.write_text(metrics.read_text() + "\nfrom asd_utils import stages  # noqa\n")
    env = {"PYTHONPATH": str(copy), "PATH": ""}
    done = subprocess.run([*lint, "--no-cache"], cwd=copy, capture_output=True, text=True, env=env)
    assert done.returncode != 0
    assert "asd_utils.evaluation.metrics -> asd_utils.stages" in done.stdout
