"""Open the rendered notebooks in headless Chromium: every figure is an image that loaded and
says what it shows (alt text), and no cell shows an error. This reads the pages the way a
student's browser does."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PROBE = """
<script>
window.addEventListener("load", () => {
  const imgs = Array.from(document.images).map(i => ({ok: i.complete && i.naturalWidth > 0,
                                                      src: i.src.slice(0, 40), alt: i.alt}));
  const errors = Array.from(document.querySelectorAll(
      '[data-mime-type="application/vnd.jupyter.stderr"]'))
      .map(e => e.textContent).filter(t => /Traceback|Error:/.test(t)).map(t => t.slice(0, 300));
  const out = document.createElement("pre");
  out.id = "course-probe";
  out.textContent = JSON.stringify({images: imgs, errors: errors});
  document.body.appendChild(out);
});
</script>
"""


def _probe(page: Path, tmp_path: Path) -> dict:
    """Load ``page`` (with a probe script appended) in Chromium and return what it saw."""
    probed = tmp_path / f"probe_{page.name}"
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"),
                      encoding="utf-8")
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'chromium-profile'}",
         "--virtual-time-budget=15000", "--dump-dom", probed.as_uri()],
        capture_output=True, text=True, timeout=180)
    match = re.search(r'<pre id="course-probe">(.*?)</pre>', proc.stdout, re.S)
    assert match, f"Chromium did not run the probe on {page.name}: {proc.stderr[-2000:]}"
    import html

    return json.loads(html.unescape(match.group(1)))


#: what nbconvert writes when an image has no alt text of its own
NO_DESCRIPTION = "No description has been provided for this image"


def _undescribed(seen: dict) -> int:
    """How many images the page shows without a description of their own."""
    return sum(1 for i in seen["images"] if not i["alt"].strip() or i["alt"] == NO_DESCRIPTION)


@pytest.fixture(scope="module")
def chromium():
    if CHROMIUM is None:
        pytest.fail("Chromium is not installed: 'apt-get install chromium' (make test's "
                    "system-deps step does this when run as root)")
    return CHROMIUM


def test_probe_catches_a_broken_image_and_an_error(chromium, tmp_path):
    page = tmp_path / "bad.html"
    page.write_text(
        "<html><body><img src='data:image/png;base64,AAAA' alt='No description has been "
        "provided for this image'>"
        "<div data-mime-type='application/vnd.jupyter.stderr'>Traceback (most recent call last)"
        "</div></body></html>")
    seen = _probe(page, tmp_path)
    assert [i["ok"] for i in seen["images"]] == [False]
    assert _undescribed(seen) == 1
    assert len(seen["errors"]) == 1


def test_every_rendered_notebook_shows_loaded_figures_and_no_error(chromium, smoke_series,
                                                                   tmp_path):
    pages = sorted(smoke_series.glob("0*_*.html"))
    assert pages, "no rendered notebook pages"
    problems = []
    for page in pages:
        seen = _probe(page, tmp_path)
        if not seen["images"]:
            problems.append(f"{page.name}: no figure")
        broken = [i["src"] for i in seen["images"] if not i["ok"]]
        if broken:
            problems.append(f"{page.name}: {len(broken)} image(s) did not load: {broken[:3]}")
        if _undescribed(seen):
            problems.append(f"{page.name}: {_undescribed(seen)} image(s) without alt text")
        if seen["errors"]:
            problems.append(f"{page.name}: error output: {seen['errors'][0]}")
    index = (smoke_series / "index.html").read_text()
    for page in pages:
        if f'href="{page.name}"' not in index:
            problems.append(f"index.html does not link {page.name}")
    assert not problems, "\n".join(problems)
