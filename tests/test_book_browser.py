"""The built smoke book as a reader sees it: every page opened in a real browser (Debian's
Chromium, driven by Playwright), over a local HTTP server and from ``file://``.

What an HTML grep cannot see is asserted on the rendered page: every formula typeset by MathJax
(none left as raw TeX, no MathJax error), every image loaded, no console error, no request to an
address outside the machine. Without Chromium the test is skipped with the command that installs
it, unless ``ASD_REQUIRE_BROWSER=1`` (set by ``.ci/run``, which installs it), where it fails.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

pytestmark = pytest.mark.slow  # the smoke book in a real browser

CHROMIUM_ARGS = [  # no background traffic: this machine's network is closed
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOCAL_SCHEMES = {"data", "blob", "about", "file"}
# Sphinx writes each formula as TeX in a `.math` element; MathJax 3 replaces the TeX with an
# <mjx-container>. What a reader still sees as text (code aside) must not be TeX.
RENDERED = """async () => {
  if (window.MathJax && MathJax.startup) { await MathJax.startup.promise; }
  const body = document.body.cloneNode(true);
  body.querySelectorAll("pre, code, script, style, mjx-assistive-mml").forEach(e => e.remove());
  const text = body.innerText;
  const tex = /\\\\(\\(|\\[|begin\\{|frac|mathcal|mathbb|operatorname)[^\\n]{0,40}/g;
  const rawTeX = text.match(tex) || [];
  return {
    mathjax: Boolean(window.MathJax && MathJax.startup),
    formulas: document.querySelectorAll(".math").length,
    typeset: document.querySelectorAll(".math mjx-container").length,
    errors: document.querySelectorAll("mjx-merror, [data-mjx-error]").length,
    rawTeX: rawTeX.slice(0, 5),
    images: [...document.images].map(i => ({src: i.src, loaded: i.complete && i.naturalWidth > 0})),
    dollars: (text.match(/\\$\\$/g) || []).length,
  };
}"""


# What a reader at 1280 px sees of the figures and blocks: each figure's displayed width over
# its natural width (a figure made for the column is shown at its own size), and every block
# whose content is wider than the box that shows it (a reader would have to scroll sideways).
# Inline formulas are left out: MathJax's inline boxes overhang by a few pixels by design.
LAYOUT = """() => {
  const main = document.querySelector("article") || document.body;
  const figures = [...main.querySelectorAll(".cell_output img")].filter(i => i.naturalWidth > 0)
    .map(i => ({src: i.src.split("/").pop(), scale: i.clientWidth / i.naturalWidth}));
  const clipped = [...main.querySelectorAll("*")].filter(e => {
    if (e.closest("span.math, mjx-assistive-mml, details:not([open])")) return false;
    const overflow = getComputedStyle(e).overflowX;
    return ["auto", "scroll", "hidden"].includes(overflow) && e.scrollWidth > e.clientWidth + 2;
  }).map(e => `${e.tagName}.${e.className}: ${e.scrollWidth - e.clientWidth} px ` +
                e.innerText.slice(0, 50).replace(/\\s+/g, " "));
  return {figures, clipped};
}"""
MIN_FIGURE_SCALE = 0.9  # 10 pt figure text (14 px at 100 dpi) stays above 12 px on the page


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    if executable is None:
        message = "no Chromium here: `apt-get install chromium` (.ci/run installs it)"
        if os.environ.get("ASD_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def served_book(smoke_run):
    """The smoke book over a local HTTP server: ``(html folder, base address)``."""
    tmp, _ = smoke_run
    html = tmp / "build" / "_build" / "html"
    handler = functools.partial(_QuietHandler, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield html, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # the test reports what matters
        pass


def _open(browser, url: str, local_host: str | None) -> tuple[dict, list[str], list[str]]:
    """Load ``url``, wait for MathJax, return (what rendered, console errors, foreign requests)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors, foreign = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))

    def check(request):
        address = urlparse(request.url)
        if address.scheme in LOCAL_SCHEMES:
            return
        if local_host is None or address.netloc != local_host:
            foreign.append(request.url)

    page.on("request", check)
    page.goto(url, wait_until="load")
    rendered = page.evaluate(RENDERED)
    page.close()
    return rendered, errors, foreign


def test_every_page_renders_its_formulas_images_and_nothing_from_outside(browser, served_book):
    html, base = served_book
    host = urlparse(base).netloc
    pages = sorted(
        p.relative_to(html).as_posix()
        for p in html.glob("**/*.html")
        if not p.relative_to(html).parts[0].startswith("_")  # the theme's templates
        and p.name != "index.html"  # a redirect to the landing page: see the file:// test
    )
    assert len(pages) > 10
    formulas = {}
    for name in pages:
        rendered, errors, foreign = _open(browser, f"{base}/{name}", host)
        # Sphinx loads MathJax on the pages that have formulas
        assert rendered["mathjax"] or not rendered["formulas"], f"{name}: MathJax did not load"
        assert not rendered["rawTeX"], f"{name}: formulas left as raw TeX: {rendered['rawTeX']}"
        assert rendered["errors"] == 0, f"{name}: {rendered['errors']} MathJax errors"
        assert rendered["typeset"] == rendered["formulas"], (name, rendered)
        assert rendered["dollars"] == 0, f"{name}: $$ left in the text"
        broken = [i["src"] for i in rendered["images"] if not i["loaded"]]
        assert not broken, f"{name}: images not loaded: {broken}"
        assert not errors, f"{name}: console errors: {errors}"
        assert not foreign, f"{name}: requests to other machines: {foreign}"
        formulas[name] = rendered["formulas"]
    # not vacuous: the pages with the equations have them typeset
    for name in ("book/methods.html", "notebooks/30_osscl_training.html"):
        assert formulas[name] >= 5, (name, formulas[name])
    assert sum(formulas.values()) >= 50, formulas


def test_figures_fit_the_column_and_no_block_is_clipped(browser, served_book):
    """At 1280 px no figure is scaled below 90 % (its text stays at least ~12 px, the figures
    are drawn for the column: :mod:`asd_utils.report.plots`), and no table, equation or
    output is wider than the column."""
    html, base = served_book
    figures = 0
    for path in sorted(html.glob("**/*.html")):
        name = path.relative_to(html).as_posix()
        if name.startswith("_") or path.name == "index.html":
            continue
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{base}/{name}", wait_until="load")
        page.evaluate(RENDERED)  # formulas typeset first: they change the layout
        layout = page.evaluate(LAYOUT)
        page.close()
        small = [f for f in layout["figures"] if f["scale"] < MIN_FIGURE_SCALE]
        assert not small, f"{name}: figures shown below {MIN_FIGURE_SCALE:.0%}: {small}"
        assert not layout["clipped"], f"{name}: blocks wider than the column: {layout['clipped']}"
        figures += len(layout["figures"])
    assert figures >= 10, "not vacuous: the chapters' figures were measured"


def test_the_book_renders_from_file_too(browser, served_book):
    """Opened from the disk (a reader double-clicking index.html), as over HTTP."""
    html, _ = served_book
    page = browser.new_page()
    page.goto((html / "index.html").as_uri())
    page.wait_for_url("**/book/intro.html")  # index.html sends the reader to the landing page
    page.close()
    for name in ("book/intro.html", "book/methods.html", "notebooks/30_osscl_training.html"):
        rendered, errors, foreign = _open(browser, (html / name).as_uri(), None)
        assert not rendered["rawTeX"] and rendered["errors"] == 0, (name, rendered["rawTeX"])
        assert all(i["loaded"] for i in rendered["images"]), name
        assert not errors and not foreign, (name, errors, foreign)


def test_no_live_code_or_launch_buttons_offline(served_book):
    """Thebe and the launch buttons need a server this book does not have: none on any page."""
    html, _ = served_book
    for page in html.glob("**/*.html"):
        text = page.read_text()
        assert "thebe" not in text.lower(), page.name
        assert "launch-buttons" not in text and "binder" not in text.lower(), page.name


def test_screenshots_for_a_reader(browser, served_book, tmp_path):
    """The landing page, the OSSCL chapter, the methods page, the ensemble and the results as
    PNGs (kept where ``ASD_SCREENSHOTS`` points, for a person to look at)."""
    html, base = served_book
    keep = Path(os.environ.get("ASD_SCREENSHOTS", tmp_path))
    keep.mkdir(parents=True, exist_ok=True)
    shown = ("book/intro", "notebooks/30_osscl_training", "book/methods", "notebooks/60_ensemble")
    for name in [f"{page}.html" for page in (*shown, "notebooks/70_results")]:
        page = browser.new_page(viewport={"width": 1280, "height": 1600})
        page.goto(f"{base}/{name}", wait_until="load")
        page.evaluate(RENDERED)
        target = keep / (name.replace("/", "_").removesuffix(".html") + ".png")
        page.screenshot(path=str(target), full_page=True)
        page.close()
        assert target.stat().st_size > 20_000, target
