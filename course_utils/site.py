"""The course site: the executed notebooks of a ``course run`` folder as a small book.

Why a site and not nbconvert's pages alone: a student expects what d2l or fastbook give, a
front page saying what each notebook teaches and how long it ran, previous/next navigation,
a table of contents on every page, search, and pages that read on a phone. Sphinx with
``myst-nb`` (which renders notebooks that are *already executed*: nothing runs again) and
``sphinx-book-theme`` gives all of that from PyPI packages that ship their own assets, so
the build needs no network and the site opens from disk (``file://``) without a server.

Nothing on the front page is written by hand: each notebook's title and first paragraph come
from its first markdown cell, its run time from the metadata papermill records in the
executed copy. Figures keep the alt text :mod:`course_utils.plots` attaches to each image
output (myst-nb reads only width and height from an output's metadata; :func:`setup`, this
module as a Sphinx extension, carries the ``alt`` across).

``course site --build build`` writes ``build/site/index.html``; ``make course`` runs it last.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import time
import warnings as warnings_module
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

__all__ = [
    "NotebookSummary",
    "SiteBuild",
    "summarize",
    "front_page",
    "build_site",
    "external_assets",
    "image_alt_texts",
    "setup",
]

#: executed notebooks of the series are named like their sources: ``NN_title.ipynb``
_NOTEBOOK_NAME = re.compile(r"^\d\d_.+\.ipynb$")
#: the site's title (browser tab, header, front page)
TITLE = "Transfer-learning course"
#: the site's own stylesheet (package data), copied into the site's ``_static``
STATIC = Path(__file__).with_name("site_static")
#: IPython's text/plain of a matplotlib figure: a fallback alt text that says nothing
_BARE_FIGURE = re.compile(r"^<Figure size [\dx. ]+with \d+ Axes>$")


@dataclass(frozen=True)
class NotebookSummary:
    """What the front page says about one executed notebook."""

    name: str            #: file name, e.g. ``01_bias_variance.ipynb``
    title: str           #: the first markdown cell's ``#`` heading (the file stem if none)
    summary: str         #: the first paragraph after that heading (Markdown), may be ``""``
    seconds: float | None  #: papermill's ``duration`` of the run; ``None`` if not recorded
    profile: str | None  #: the ``PROFILE`` parameter papermill injected, if any
    finished: str | None  #: papermill's ``end_time`` (ISO 8601), if recorded

    @property
    def docname(self) -> str:
        return self.name[: -len(".ipynb")]


@dataclass
class SiteBuild:
    """What :func:`build_site` made: the front page, every HTML page, the time it took,
    Sphinx's warnings, and any asset the pages would fetch from the network (none expected)."""

    index: Path
    pages: list[Path]
    seconds: float
    notebooks: list[NotebookSummary]
    warnings: list[str] = field(default_factory=list)
    external: list[str] = field(default_factory=list)


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _paragraphs(markdown: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", markdown) if p.strip()]


def summarize(executed: str | os.PathLike) -> NotebookSummary:
    """Title, first paragraph and run time of an executed notebook.

    The title is the first ``# heading`` of the first markdown cell; the summary is the first
    paragraph of prose after it (the next markdown cell's if the first holds only the title).
    Lists, headings and blocks are not prose: the summary is the first paragraph that is
    neither."""
    path = Path(executed)
    nb = json.loads(path.read_text(encoding="utf-8"))
    markdown = [_source(c) for c in nb.get("cells", []) if c.get("cell_type") == "markdown"
                # papermill's banner over a notebook that failed is not the notebook's prose
                and "papermill-error-cell-tag" not in c.get("metadata", {}).get("tags", [])]
    title, summary = path.stem, ""
    paragraphs = [p for md in markdown[:2] for p in _paragraphs(md)]
    if paragraphs and paragraphs[0].startswith("# "):
        title = paragraphs.pop(0).splitlines()[0][2:].strip()
    for p in paragraphs:
        if not re.match(r"^(#|[-*+] |\d+\. |>|```|\||<)", p):
            summary = p
            break
    pm = nb.get("metadata", {}).get("papermill", {})
    seconds = pm.get("duration")
    return NotebookSummary(
        name=path.name, title=title, summary=summary,
        seconds=float(seconds) if isinstance(seconds, (int, float)) else None,
        profile=(pm.get("parameters") or {}).get("PROFILE"), finished=pm.get("end_time"))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "run time not recorded"
    seconds = round(seconds)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def front_page(notebooks: list[NotebookSummary]) -> str:
    """The front page (MyST Markdown): one entry per notebook, its title linking its page,
    what it teaches, how long it ran; a hidden toctree gives the sidebar and previous/next."""
    profiles = sorted({n.profile for n in notebooks if n.profile})
    timed = [n.seconds for n in notebooks if n.seconds is not None]
    dates = sorted(n.finished[:10] for n in notebooks if n.finished)
    facts = [f"{len(notebooks)} notebooks"]
    if profiles:
        facts.append(f"executed on the **{', '.join(profiles)}** profile")
    if dates:
        facts.append(f"on {dates[-1]}")
    if timed:
        facts.append(f"in {_duration(sum(timed))} in all")
    lines = [
        f"# {TITLE}", "",
        " ".join(facts) + ". Each page is an executed notebook: its prose, its code, and what "
        "the code printed and drew on that run. Open the notebooks themselves in JupyterLab "
        "(`make lab`) to run and change them.", "",
        "```{toctree}", ":hidden:", ":maxdepth: 1", "",
        *[n.docname for n in notebooks], "```", "",
    ]
    for n in notebooks:
        ran = f"Ran in {_duration(n.seconds)}" + (
            f" on the {n.profile} profile." if n.profile else ".")
        lines += ["````{container} course-entry", f"**[{n.title}]({n.name})**", ""]
        if n.summary:
            lines += [n.summary, ""]
        lines += ["```{container} course-ran", ran, "```", "````", ""]
    return "\n".join(lines)


# --- alt text: a Sphinx extension -----------------------------------------------------------

def image_alt_texts(notebook: dict) -> dict[str, str]:
    """``{sha256 of the image bytes: alt text}`` for every PNG/JPEG output of a notebook.

    myst-nb names each image it writes by the SHA-256 of its bytes, so the hash finds the
    output an image node came from. The text is the output's ``alt`` metadata (what
    :mod:`course_utils.plots` writes), else the cell's, else the output's text/plain unless
    that is only matplotlib's ``<Figure size ...>``."""
    texts = {}
    for cell in notebook.get("cells", []):
        cell_alt = cell.get("metadata", {}).get("alt")
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            for mime in ("image/png", "image/jpeg"):
                if mime not in data:
                    continue
                raw = data[mime]
                raw = "".join(raw) if isinstance(raw, list) else raw
                digest = hashlib.sha256(base64.b64decode(raw)).hexdigest()
                plain = data.get("text/plain", "")
                plain = ("".join(plain) if isinstance(plain, list) else plain).strip()
                alt = (out.get("metadata", {}).get(mime, {}).get("alt") or cell_alt
                       or ("" if _BARE_FIGURE.match(plain) else plain))
                if alt:
                    texts[digest] = str(alt)
    return texts


def _collect_alt_texts(app) -> None:
    texts = {}
    for path in Path(app.srcdir).glob("*.ipynb"):
        texts.update(image_alt_texts(json.loads(path.read_text(encoding="utf-8"))))
    app.env.course_alt_texts = texts


def _apply_alt_texts(app, doctree) -> None:
    from docutils import nodes

    from sphinx.util import logging as sphinx_logging

    texts = getattr(app.env, "course_alt_texts", {})
    for node in doctree.findall(nodes.image):
        if node.get("alt"):
            continue
        stem = Path(node.get("uri", "")).stem
        if stem in texts:
            node["alt"] = texts[stem]
        elif re.fullmatch(r"[0-9a-f]{64}", stem):  # a notebook output myst-nb wrote
            # Sphinx would fall back to the file name as alt text: say so at build time
            sphinx_logging.getLogger(__name__).warning(
                "a notebook image has no alt text (no 'alt' in its output metadata)",
                location=node)


def setup(app):
    """Sphinx extension: give every notebook image the alt text of its output."""
    app.connect("builder-inited", _collect_alt_texts)
    app.connect("doctree-read", _apply_alt_texts)
    return {"parallel_read_safe": False, "parallel_write_safe": True}


# --- offline check ---------------------------------------------------------------------------

class _AssetParser(HTMLParser):
    """URLs a page loads by itself: script/img/iframe/source ``src``, stylesheet and preload
    ``href`` (plain links a reader may follow are not loads)."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in {"script", "img", "iframe", "source", "audio", "video", "embed"} and a.get("src"):
            self.urls.append(a["src"])
        if tag == "link" and a.get("href") and set((a.get("rel") or "").split()) & {
                "stylesheet", "preload", "modulepreload", "icon", "prefetch", "preconnect"}:
            self.urls.append(a["href"])


def external_assets(site: str | os.PathLike) -> list[str]:
    """``page: url`` for every asset a page of the site would fetch from the network."""
    found = []
    for page in sorted(Path(site).rglob("*.html")):
        parser = _AssetParser()
        parser.feed(page.read_text(encoding="utf-8", errors="replace"))
        found += [f"{page.name}: {u}" for u in parser.urls if re.match(r"^(https?:)?//", u)]
    return found


# --- the build -------------------------------------------------------------------------------

def _conf(notebooks: list[NotebookSummary]) -> dict:
    return {
        "project": TITLE,
        "html_title": TITLE,
        "extensions": ["myst_nb", "course_utils.site"],
        "exclude_patterns": ["_build"],
        # render the outputs saved in the executed notebooks; never run a kernel
        "nb_execution_mode": "off",
        "nb_merge_streams": True,
        # no ipywidgets scripts (require.js and the widget embedder come from a CDN)
        "nb_ipywidgets_js": {},
        "myst_enable_extensions": [],
        "html_theme": "sphinx_book_theme",
        "html_theme_options": {
            "home_page_in_toc": True,
            "show_toc_level": 2,
            "use_download_button": True,
            "use_fullscreen_button": False,
            "use_repository_button": False,
            "search_bar_text": "Search the course...",
            # one search field (the sidebar's), not a second one in a header bar
            "navbar_persistent": [],
        },
        "html_static_path": [str(STATIC)],
        "html_css_files": ["course-site.css"],
        "html_show_sourcelink": False,
        "html_last_updated_fmt": None,
        # nothing from the network: no intersphinx, no MathJax from a CDN (the notebooks
        # have no math; a page that had some would show the TeX source)
        "html_math_renderer": None,
        "suppress_warnings": ["mystnb.unknown_mime_type"],
    }


def _is_site(folder: Path) -> bool:
    return (folder / ".buildinfo").is_file() or (folder / "searchindex.js").is_file()


def build_site(build: str | os.PathLike = "build", out: str | os.PathLike | None = None, *,
               notebooks: list[str | os.PathLike] | None = None) -> SiteBuild:
    """Build the site from the executed ``NN_*.ipynb`` notebooks in ``build`` into ``out``
    (default ``build/site``), replacing a site already there. Nothing is executed.

    Raises ``FileNotFoundError`` when there is no executed notebook, and
    ``FileExistsError`` rather than delete an ``out`` folder that is not a site."""
    from sphinx.application import Sphinx
    from sphinx.util.docutils import docutils_namespace

    build = Path(build)
    out = Path(out) if out is not None else build / "site"
    paths = ([Path(p) for p in notebooks] if notebooks else
             sorted(p for p in build.glob("*.ipynb") if _NOTEBOOK_NAME.match(p.name)))
    if not paths:
        raise FileNotFoundError(f"no executed notebook (NN_*.ipynb) in {build}; run `course run` "
                                "first")
    if out.exists() and any(out.iterdir()) and not _is_site(out):
        raise FileExistsError(f"{out} exists and is not a site this command built; "
                              "choose another --out")
    start = time.perf_counter()
    summaries = [summarize(p) for p in paths]
    warnings = io.StringIO()
    out.parent.mkdir(parents=True, exist_ok=True)
    # Sphinx writes into a folder beside ``out`` (myst-nb also puts its jupyter_execute/
    # next to the HTML folder), which then replaces ``out``: a failed build leaves the old
    # site, and nothing else lands in the build folder.
    with tempfile.TemporaryDirectory(prefix=".course-site-", dir=out.parent) as tmp:
        src, html = Path(tmp) / "src", Path(tmp) / "html"
        src.mkdir()
        for p in paths:
            shutil.copyfile(p, src / p.name)
        (src / "index.md").write_text(front_page(summaries), encoding="utf-8")
        # docutils_namespace: what Sphinx's own command does, so that a second build in one
        # process (tests, a notebook) does not meet the first one's directives and nodes
        with docutils_namespace(), warnings_module.catch_warnings():
            # the theme and myst-parser use Sphinx APIs that Sphinx 11 will remove: their
            # maintainers' matter, not the reader's
            warnings_module.filterwarnings(
                "ignore", message=".*Check CHANGES for Sphinx API modifications")
            app = Sphinx(str(src), None, str(html), str(Path(tmp) / "doctrees"), "html",
                         confoverrides=_conf(summaries), status=io.StringIO(),
                         warning=warnings, freshenv=True)
            app.build()
        if app.statuscode:
            raise RuntimeError(f"Sphinx failed to build the site:\n{warnings.getvalue()}")
        if out.exists():
            shutil.rmtree(out)
        html.rename(out)
    pages = sorted(out.glob("*.html"))
    return SiteBuild(
        index=out / "index.html", pages=pages, seconds=time.perf_counter() - start,
        notebooks=summaries,
        warnings=[re.sub(r"\x1b\[[0-9;]*m", "", w).replace(str(src), str(build))
                  for w in warnings.getvalue().splitlines() if w.strip()],
        external=external_assets(out))
