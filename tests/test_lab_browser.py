"""Chapter 00 as a person first meets it: JupyterLab (from this venv, on the project's
``asd-xju`` kernel) opened in Debian's Chromium (Playwright, launched as in
``test_book_browser.py``), every cell run from Lab's Run menu on the smoke profile.

Asserted on the page: every code cell ran, no output shows a traceback or an error, the glued
values are printed (``[name] value``, :mod:`asd_utils.report.notebook`), and no rendered markdown
cell shows a raw MyST role (``{glue:text}``, ``{cite}``, ``{doc}`` …). Lab works on a temporary
copy of the notebook with the smoke data and results in a temporary folder (``$ASD_PROFILE`` a
smoke profile there, ``$OUTPUT_ROOT``): nothing is written into ``notebooks/``. Skipped without
Chromium unless ``ASD_REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from test_book_browser import CHROMIUM_ARGS

pytestmark = pytest.mark.slow  # JupyterLab, a kernel and the smoke data in a real browser

REPO_ROOT = Path(__file__).resolve().parents[1]
CHAPTER = "00_data_exploration.ipynb"
KERNEL = "asd-xju"
# Bounded, generous for 2 loaded cores (measured: 55 s in all): Lab's start, each wait on the page,
# each try of Run All Cells, the chapter's run; a failure reports within 4 min.
STARTUP_S, PAGE_S, TRY_S, RUN_S = 45, 45, 15, 120
# A MyST role as Lab's plain markdown renderer leaves it: the name in braces before the text.
RAW_ROLE = re.compile(r"\{(?:glue|cite|doc|ref|numref|eq|term|download|abbr)(?::\w+)?\}")
ERROR = re.compile(r"Traceback|\w*Error\b")
# Lab's settings for this test only: every cell in the page (no windowing, so each cell's
# output is in the DOM), no news or update check (this machine's network is closed).
SETTINGS = {
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
}
# What the page shows of the notebook: each code cell's prompt and outputs, each markdown cell's
# rendered text (textContent: also what is scrolled out of view).
NOTEBOOK = """() => {
  const cells = [...document.querySelectorAll(".jp-Notebook .jp-Cell")];
  const code = cells.filter(c => c.classList.contains("jp-CodeCell"));
  const markdown = cells.filter(c => c.classList.contains("jp-MarkdownCell"));
  const text = e => (e ? e.textContent : "");
  return {
    prompts: code.map(c => text(c.querySelector(".jp-InputArea-prompt")).trim()),
    outputs: code.map(c => text(c.querySelector(".jp-OutputArea"))),
    stderr: [...document.querySelectorAll(
      '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')].map(text),
    markdown: markdown.map(c => text(c.querySelector(".jp-RenderedMarkdown"))),
    kernel: text(document.querySelector(".jp-Toolbar-kernelName")).trim(),
    status: document.querySelector(".jp-Notebook-ExecutionIndicator")
      ?.getAttribute("data-status") || "",
  };
}"""
STARTED = """() => [...document.querySelectorAll(".jp-InputArea-prompt")]
  .some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))"""  # a cell queued, running or run


def _chromium() -> str:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        message = "no Chromium here: `apt-get install chromium` (.ci/run installs it)"
        if os.environ.get("ASD_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return executable


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _workspace(tmp: Path) -> dict[str, str]:
    """The chapter copied into ``tmp/notebooks``, a smoke profile whose synthetic data lies in
    ``tmp/data``, Lab's settings; returns the environment Lab and its kernel run in."""
    import yaml

    from asd_utils import config

    (tmp / "notebooks").mkdir()
    shutil.copy(REPO_ROOT / "notebooks" / CHAPTER, tmp / "notebooks" / CHAPTER)
    profile = config.load_profile("smoke").plain()
    profile["data"]["synthetic_root"] = str(tmp / "data")
    (tmp / "smoke.yaml").write_text(yaml.safe_dump(profile))
    for plugin, values in SETTINGS.items():
        target = tmp / "settings" / f"{plugin}.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values))
    env = {k: v for k, v in os.environ.items() if k not in ("DATA_ROOT", "ASD_LOG_LEVEL")}
    return env | {
        "ASD_PROFILE": str(tmp / "smoke.yaml"),  # the parameters cell's empty profile
        "OUTPUT_ROOT": str(tmp / "out"),
        "PYTHONPATH": str(REPO_ROOT),  # the kernel imports this checkout's package
        "JUPYTERLAB_SETTINGS_DIR": str(tmp / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
        "JUPYTER_CONFIG_DIR": str(tmp / "config"),  # no user configuration
    }


def _wait_ready(url: str, lab: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if lab.poll() is not None:
            pytest.fail(f"jupyter lab exited with {lab.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"jupyter lab did not answer {url} within {STARTUP_S} s")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on a temporary copy of chapter 00: ``(base address, token, folder)``; skipped
    first when there is no browser to open it."""
    from jupyter_client.kernelspec import KernelSpecManager

    _chromium()
    pytest.importorskip("playwright.sync_api")
    specs = KernelSpecManager().find_kernel_specs()
    assert KERNEL in specs, f"no {KERNEL} kernel in this venv: `make setup` installs it"
    tmp = tmp_path_factory.mktemp("lab")
    env = _workspace(tmp)
    port, token = _free_port(), secrets.token_hex(16)
    command = [
        str(Path(sys.executable).with_name("jupyter")), "lab", "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp / 'notebooks'}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--allow-root",  # a container's root user (CI)
    ]  # fmt: skip
    log = (tmp / "lab.log").open("w")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(f"{base}/api/status?token={token}", server, tmp / "lab.log")
        yield base, token, tmp
    finally:
        server.terminate()  # the server shuts its kernels down
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def _run_all(page, timeout_error: type[Exception]) -> None:
    """Lab's menu: Run › Run All Cells, on the notebook made current by a click in it; tried
    again if no cell started (a click before Lab had the notebook current does nothing)."""
    for _ in range(2):
        page.locator(".jp-Notebook .jp-Cell").first.click()
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.get_by_role("menuitem", name=re.compile(r"^Run All Cells")).click()
        try:
            page.wait_for_function(STARTED, timeout=TRY_S * 1000)
            return
        except timeout_error:
            continue
    pytest.fail("Run › Run All Cells started no cell")


def _wait_finished(page) -> dict:
    """Poll the page until the run is over: the kernel idle, no cell queued or running, twice
    a second apart (a cell that fails clears the queue behind it). Returns what the page shows."""
    deadline, calm = time.monotonic() + RUN_S, 0
    while time.monotonic() < deadline:
        shown = page.evaluate(NOTEBOOK)
        ran = any(re.fullmatch(r"\[\d+\]:", p) for p in shown["prompts"])
        busy = any("*" in p for p in shown["prompts"]) or shown["status"] != "idle"
        calm = calm + 1 if ran and not busy else 0
        if calm == 2:
            return shown
        page.wait_for_timeout(1000)
    pytest.fail(f"chapter 00 did not finish within {RUN_S} s: prompts {shown['prompts']}")


def test_chapter_00_runs_in_lab_on_smoke_without_error_or_raw_role(lab):
    base, token, tmp = lab
    source = REPO_ROOT / "notebooks" / CHAPTER
    before = hashlib.sha256(source.read_bytes()).hexdigest()
    cells = json.loads(source.read_text())["cells"]
    code_cells = sum(c["cell_type"] == "code" for c in cells)
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(PAGE_S * 1000)
        page.goto(f"{base}/lab/tree/{CHAPTER}?token={token}", wait_until="load")
        page.locator(".jp-Notebook .jp-Cell").first.wait_for()
        # the kernel started: the status bar names it, idle
        page.locator(".jp-StatusBar-Widget", has_text=re.compile(r"asd-xju\) \| Idle")).wait_for()
        _run_all(page, playwright.TimeoutError)
        shown = _wait_finished(page)
        keep = Path(os.environ.get("ASD_SCREENSHOTS", tmp))  # for a person to look at
        keep.mkdir(parents=True, exist_ok=True)
        page.locator(".jp-Notebook .jp-Cell").nth(4).scroll_into_view_if_needed()
        page.screenshot(path=str(keep / "lab_00_data_exploration.png"))
        browser.close()
    log = (tmp / "lab.log").read_text()
    assert KERNEL in shown["kernel"], f"not on the {KERNEL} kernel: {shown['kernel']}"
    errors = [t for t in shown["stderr"] + shown["outputs"] if ERROR.search(t)]
    assert not errors, f"errors in chapter 00's outputs: {errors}\nlab log:\n{log[-3000:]}"
    assert len(shown["prompts"]) == code_cells, shown["prompts"]
    assert all(re.fullmatch(r"\[\d+\]:", p) for p in shown["prompts"]), shown["prompts"]
    raw = [m for text in shown["markdown"] + shown["outputs"] for m in RAW_ROLE.findall(text)]
    assert not raw, f"raw MyST roles in Lab's rendered markdown: {raw}"
    # not vacuous: the markdown was rendered, the chapter read the smoke run and printed its values
    assert len(shown["markdown"]) == sum(c["cell_type"] == "markdown" for c in cells)
    assert all(text.strip() for text in shown["markdown"]), shown["markdown"]
    printed = "".join(shown["outputs"])
    assert "profile smoke" in printed and str(tmp / "out") in printed, printed[:500]
    assert "The dataset holds" in printed and "machine types (" in printed, printed[:500]
    assert hashlib.sha256(source.read_bytes()).hexdigest() == before, "notebooks/ was written"
