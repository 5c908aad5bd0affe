"""The course site (``course site``, course_utils.site): a front page written from the executed
notebooks, figures with their alt text, nothing loaded from the network, and, in Debian's
Chromium, every page reachable from the front page, its images loaded and described, search
finding a word of the course, and pages that fit a phone's width."""
from __future__ import annotations

import base64
import struct
import subprocess
import zlib
from pathlib import Path

import nbformat
import pytest

from course_utils.site import build_site, external_assets, summarize

from _notebooks import write_notebook  # tests/_notebooks.py


def _png(red: int) -> str:
    """A 2x2 PNG of one colour, base64 (different ``red`` gives different bytes)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    rows = b"".join(b"\x00" + bytes([red, 0, 0]) * 2 for _ in range(2))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return base64.b64encode(png).decode()


def _executed(path: Path, title: str, paragraphs: list[str], seconds: float | None,
              images: list[tuple[str, dict, str]] = ()) -> Path:
    """A notebook as ``course run`` leaves it: markdown, outputs, papermill's metadata.
    ``images``: (base64 PNG, output metadata, text/plain) for one figure output each."""
    md = "\n\n".join([f"# {title}", *paragraphs])
    outputs = [nbformat.v4.new_output("display_data", data={"image/png": png, "text/plain": plain},
                                      metadata=meta) for png, meta, plain in images]
    cells = [nbformat.v4.new_markdown_cell(md),
             nbformat.v4.new_code_cell('PROFILE = "smoke"', metadata={"tags": ["parameters"]}),
             nbformat.v4.new_markdown_cell("## A section\n\nMore prose."),
             nbformat.v4.new_code_cell("show()", outputs=outputs, execution_count=1)]
    path = write_notebook(path, cells)
    if seconds is not None:
        nb = nbformat.read(str(path), as_version=4)
        nb.metadata["papermill"] = {"duration": seconds, "end_time": "2026-12-02T14:30:11+00:00",
                                    "parameters": {"PROFILE": "smoke"}}
        nbformat.write(nb, str(path))
    return path


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory) -> Path:
    """Two executed notebooks: one figure described by its metadata, one only by text/plain."""
    build = tmp_path_factory.mktemp("tiny_build")
    _executed(build / "01_first.ipynb", "01 · Learning curves",
              ["- a list is not a summary",
               "Read the **learning curve** before you transfer.\nA second line.",
               "A later paragraph."], 97.4,
              [(_png(200), {"image/png": {"alt": "Figure: plot 'Learning curve' of error"}},
                "<Figure size 600x400 with 1 Axes>")])
    _executed(build / "02_second.ipynb", "02 · BatchNorm in fine-tuning",
              ["Why BatchNorm statistics move when the weights do not."], 12.0,
              [(_png(10), {}, "A photo of a trouser")])
    (build / "01_first.html").write_text("nbconvert's page, not a notebook")  # ignored
    return build


@pytest.fixture(scope="module")
def tiny_site(tiny_build, tmp_path_factory):
    return build_site(tiny_build, tmp_path_factory.mktemp("tiny_site") / "site")


def test_summary_is_the_title_and_first_paragraph_of_prose(tiny_build, tmp_path):
    s = summarize(tiny_build / "01_first.ipynb")
    assert s.title == "01 · Learning curves"
    assert s.summary == "Read the **learning curve** before you transfer.\nA second line."
    assert (s.seconds, s.profile) == (97.4, "smoke")
    # a first cell holding only the title: the summary comes from the next markdown cell;
    # no papermill metadata: no run time
    # (papermill's banner over a failed notebook is skipped)
    bare = write_notebook(tmp_path / "03_bare.ipynb", [
        nbformat.v4.new_markdown_cell('<span style="color:red">An Exception was encountered',
                                      metadata={"tags": ["papermill-error-cell-tag"]}),
        nbformat.v4.new_markdown_cell("# 03 · Bare"),
        nbformat.v4.new_markdown_cell("What the next cell says.")])
    s = summarize(bare)
    assert (s.title, s.summary, s.seconds, s.profile) == ("03 · Bare", "What the next cell says.",
                                                          None, None)


def test_front_page_says_what_each_notebook_teaches_and_how_long_it_ran(tiny_site):
    assert [p.name for p in tiny_site.pages] == [
        "01_first.html", "02_second.html", "genindex.html", "index.html", "search.html"]
    front = tiny_site.index.read_text()
    assert 'href="01_first.html"' in front and 'href="02_second.html"' in front
    assert "Read the <strong>learning curve</strong> before you transfer." in front
    assert "a list is not a summary" not in front and "A later paragraph" not in front
    assert "Ran in 1 min 37 s on the smoke profile." in front
    assert "Ran in 12 s on the smoke profile." in front
    assert "2 notebooks executed on the <strong>smoke</strong> profile on 2026-12-02" in front
    # every notebook page: previous/next links and a table of contents of its sections
    second = (tiny_site.index.parent / "02_second.html").read_text()
    assert 'class="left-prev"' in second and 'href="01_first.html"' in second
    assert 'class="page-toc' in second and "A section" in second


def test_figures_keep_their_alt_text(tiny_site):
    first = (tiny_site.index.parent / "01_first.html").read_text()
    second = (tiny_site.index.parent / "02_second.html").read_text()
    assert "alt=\"Figure: plot 'Learning curve' of error\"" in first  # output metadata
    assert 'alt="A photo of a trouser"' in second                     # text/plain fallback
    assert "&lt;Figure size" not in first


def test_an_undescribed_figure_is_a_build_warning(tmp_path):
    _executed(tmp_path / "01_bare.ipynb", "01 · Bare", ["Prose."], 1.0,
              [(_png(99), {}, "<Figure size 600x400 with 1 Axes>")])
    site = build_site(tmp_path, tmp_path / "site")
    assert len(site.warnings) == 1 and "has no alt text" in site.warnings[0], site.warnings
    assert site.warnings[0].startswith(str(tmp_path / "01_bare.ipynb"))  # the build folder's


def test_site_loads_nothing_from_the_network(tiny_site, tmp_path):
    assert tiny_site.external == [] and tiny_site.warnings == []
    page = tmp_path / "p.html"
    page.write_text('<script src="https://cdn.example/mathjax.js"></script>'
                    '<link rel="stylesheet" href="//fonts.example/a.css">'
                    '<a href="https://pytorch.org">docs</a><img src="_images/x.png">')
    assert external_assets(tmp_path) == ["p.html: https://cdn.example/mathjax.js",
                                         "p.html: //fonts.example/a.css"]


def test_build_replaces_its_own_site_but_not_another_folder(tiny_build, tmp_path):
    out = tmp_path / "site"
    build_site(tiny_build, out, notebooks=[tiny_build / "02_second.ipynb"])
    build_site(tiny_build, out)  # a site there: replaced
    assert (out / "01_first.html").exists()
    assert not any(p.name.startswith(".course-site-") for p in tmp_path.iterdir())
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a site"):
        build_site(tiny_build, other)
    assert (other / "notes.txt").read_text() == "keep me"
    with pytest.raises(FileNotFoundError, match="no executed notebook"):
        build_site(tmp_path / "empty_build_folder_that_is_missing")


def test_cli_builds_the_site_into_build_site(course_bin, tiny_build, tmp_path):
    import shutil

    build = tmp_path / "build"
    shutil.copytree(tiny_build, build)
    proc = subprocess.run([str(course_bin), "site", "--build", str(build)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Site: 2 notebook(s), 5 pages" in proc.stdout
    assert (build / "site" / "index.html").is_file()
    empty = subprocess.run([str(course_bin), "site", "--build", str(tmp_path / "nothing")],
                           capture_output=True, text=True, timeout=300)
    assert empty.returncode == 2 and "no executed notebook" in empty.stderr


# --- in the browser, on the smoke run the notebook tests already made ---------------------------

WALK = """() => Array.from(document.querySelectorAll('a[href]'), a => a.href)"""
IMAGES = """async () => Promise.all(Array.from(document.images, async i => {
  try { await i.decode(); } catch (e) {}
  return {ok: i.complete && i.naturalWidth > 0, alt: i.alt, src: i.getAttribute('src')};
}))"""


@pytest.mark.browser
@pytest.mark.slow
def test_browser_walks_the_site_sees_described_figures_and_finds_batchnorm(smoke_series,
                                                                          tmp_path):
    from test_classroom import CHROMIUM, CHROMIUM_ARGS, _browser_reason

    reason = _browser_reason()
    if reason:
        pytest.fail(reason)
    from playwright.sync_api import sync_playwright

    site = build_site(smoke_series, tmp_path / "site")
    assert site.external == [], site.external
    root = site.index.parent.as_uri() + "/"
    notebook_pages = {f"{p.stem}.html" for p in smoke_series.glob("0*_*.ipynb")}
    assert len(notebook_pages) >= 7
    problems, seen, queue = [], set(), ["index.html"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(60_000)
        while queue:  # breadth first over the site's own pages, from the front page
            name = queue.pop(0)
            if name in seen:
                continue
            seen.add(name)
            page.goto(root + name)
            for href in page.evaluate(WALK):
                target = href.split("#")[0].split("?")[0]
                if target.startswith(root) and target.endswith(".html"):
                    queue.append(target[len(root):])
            for img in page.evaluate(IMAGES):
                if not img["ok"]:
                    problems.append(f"{name}: image {img['src'][:60]} did not load")
                # (Sphinx writes the image's path as alt when it has no description)
                if (not img["alt"].strip() or img["alt"].startswith("<Figure size")
                        or img["alt"] == img["src"]):
                    problems.append(f"{name}: image {img['src'][:60]} has no description")
        missing = notebook_pages - seen
        assert not missing, f"not reachable from the front page: {sorted(missing)}"
        assert not problems, "\n".join(problems[:20])
        # Sphinx's search runs in the page (searchindex.js): wait for its results
        page.goto(root + "search.html?q=BatchNorm")
        page.wait_for_selector("#search-results ul.search li a")
        hits = page.evaluate("""() => Array.from(
            document.querySelectorAll('#search-results ul.search li a'), a => a.href)""")
        assert any("03_finetuning_pytorch.html" in h for h in hits), hits
        # on a phone every page fits the screen's width (no sideways scrolling: code and
        # figures scroll or shrink inside the page)
        phone = browser.new_page(viewport={"width": 390, "height": 844})
        for name in sorted(seen):
            phone.goto(root + name)
            width = phone.evaluate("() => document.documentElement.scrollWidth")
            if width > 390:
                problems.append(f"{name} is {width} px wide on a 390 px screen")
        assert not problems, "\n".join(problems)
        browser.close()
