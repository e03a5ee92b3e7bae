"""``make test`` in two pytest-xdist workers (tests/conftest.py): the tests that share the smoke
run, and each module's tests, stay in one worker, and the smoke run's unit starts first."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.slow  # a pytest run with two worker processes
def test_a_module_and_the_smoke_runs_modules_each_stay_in_one_worker(tmp_path):
    shutil.copy(HERE / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: slow\n")
    tests = "\n".join(f"def test_{i}(): pass" for i in range(4))
    (tmp_path / "test_a.py").write_text(tests)
    (tmp_path / "test_b.py").write_text(tests)
    # names the fixture (a default keeps it from being requested): the smoke run's unit
    (tmp_path / "test_x.py").write_text(f"def test_s(smoke_run=None): pass\n{tests}")
    (tmp_path / "test_y.py").write_text(f"def test_s(smoke_run=None): pass\n{tests}")
    (tmp_path / "test_z.py").write_text(f"import pytest\n@pytest.mark.slow\n{tests}")
    command = [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}  # not ours
    done = subprocess.run(
        [*command, "-p", "no:cacheprovider"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ran = re.findall(r"\[(gw\d)\] \[ *\d+%\] PASSED (test_\w)\.py::(test_\w+)", done.stdout)
    assert len(ran) == 22, done.stdout[-3000:]
    workers = {}
    for worker, module, _ in ran:
        unit = "smoke" if module in ("test_x", "test_y") else module
        workers.setdefault(unit, set()).add(worker)
    assert all(len(w) == 1 for w in workers.values()), workers
    first = {}
    for worker, module, _ in ran:
        first.setdefault(worker, module)
    assert "test_x" in first.values()  # the smoke run's unit first, the slow module next
    assert set(first.values()) == {"test_x", "test_z"}
