"""Execute the notebook series with papermill, in order, and render it to HTML.

Why a runner of our own rather than a bare ``papermill`` call: the course needs the
series run *in order* (later notebooks reuse caches the earlier ones fill; with ``jobs``
several run at once but still start in order, and a slow cache entry two of them need is
built once, under :func:`course_utils.atomic.build_lock`), it must stop at the first failure
and say which notebook and which cell failed in one line a CI maintainer can read, and the
executed copies must be rendered next to an index page.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from course_utils import PROFILES

__all__ = [
    "CELL_TIMEOUT",
    "NotebookFailure",
    "NotebookResult",
    "SlowCell",
    "cells_over_limit",
    "slowest_cell",
    "discover_notebooks",
    "run_notebook",
    "run_series",
    "render_html",
    "write_index",
]

log = logging.getLogger(__name__)

#: notebooks are named ``NN_title.ipynb`` and run in that order
#: seconds one notebook cell may run, for ``run_notebook``, ``run_series`` and ``course run``
#: alike: the longest cell of the embedded profile on a 2-core CPU with room to spare
CELL_TIMEOUT = 1200

#: nbconvert templates shipped with the library (``course``: the lab page with alt text)
TEMPLATES = Path(__file__).with_name("templates")

_NOTEBOOK_NAME = re.compile(r"^\d\d_.+\.ipynb$")


@dataclass(frozen=True)
class SlowCell:
    """One executed cell's wall-clock time: ``cell`` is its 1-based number in the source
    notebook (counted as in :class:`NotebookFailure`)."""

    notebook: Path
    cell: int
    seconds: float


@dataclass
class NotebookResult:
    """What happened to one notebook: where it went, how long it took, its slowest cell."""

    source: Path
    output: Path
    seconds: float
    ok: bool
    html: Path | None = None
    error: str | None = None
    slowest: SlowCell | None = None


class NotebookFailure(RuntimeError):
    """A cell raised. ``cell`` is the 1-based position of the cell in the source notebook
    (markdown cells count, the parameters injected by papermill do not)."""

    def __init__(self, notebook: Path, cell: int | None, ename: str, evalue: str,
                 output: Path, source: str = ""):
        self.notebook, self.cell, self.ename, self.evalue = notebook, cell, ename, evalue
        self.output, self.source = output, source
        where = f"cell {cell}" if cell is not None else "an unknown cell"
        super().__init__(
            f"{notebook.name}: {where} raised {ename}: {evalue}\n"
            f"  the executed copy with the full traceback is {output}"
        )

    def __reduce__(self):
        # rebuilt from its fields when it crosses from a worker process (``jobs``)
        return (type(self), (self.notebook, self.cell, self.ename, self.evalue, self.output,
                             self.source))


def discover_notebooks(root: str | os.PathLike = "notebooks") -> list[Path]:
    """The ``NN_*.ipynb`` notebooks under ``root``, in series order."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"notebook folder {root} does not exist; run from the course root")
    return sorted(p for p in root.iterdir() if _NOTEBOOK_NAME.match(p.name))


def _source_cell_number(executed: dict, failing_index: int | None) -> int | None:
    """Map the index of the failing cell in papermill's output (which has an error banner
    and an injected-parameters cell added) back to its 1-based number in the source."""
    if failing_index is None:
        return None
    cells = executed["cells"]
    number = 0
    for i, cell in enumerate(cells):
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags or "papermill-error-cell-tag" in tags:
            continue
        number += 1
        if i == failing_index:
            return number
    return None


def _cell_durations(executed: dict) -> list[tuple[int, float]]:
    """``(source cell number, seconds)`` for every code cell papermill timed (it records
    ``metadata.papermill.duration`` in the executed copy)."""
    durations, number = [], 0
    for cell in executed.get("cells", []):
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags or "papermill-error-cell-tag" in tags:
            continue
        number += 1
        seconds = cell.get("metadata", {}).get("papermill", {}).get("duration")
        if cell.get("cell_type") == "code" and isinstance(seconds, (int, float)):
            durations.append((number, float(seconds)))
    return durations


def slowest_cell(executed: str | os.PathLike, source: str | os.PathLike | None = None
                 ) -> SlowCell | None:
    """The slowest code cell of a notebook papermill executed, or ``None`` if no cell was
    timed. ``source`` names the notebook in the result (default: the executed copy)."""
    executed = Path(executed)
    durations = _cell_durations(json.loads(executed.read_text(encoding="utf-8")))
    if not durations:
        return None
    cell, seconds = max(durations, key=lambda d: d[1])
    return SlowCell(Path(source) if source is not None else executed, cell, seconds)


def cells_over_limit(results: list[NotebookResult], max_cell_seconds: float) -> list[str]:
    """One line per notebook whose slowest cell ran longer than ``max_cell_seconds``."""
    return [
        f"{r.source.name}: cell {r.slowest.cell} took {r.slowest.seconds:.1f} s, over the "
        f"{max_cell_seconds:g} s limit (--max-cell-seconds); split the cell or cache its work"
        for r in results if r.slowest is not None and r.slowest.seconds > max_cell_seconds
    ]


def _failing_cell_index(executed: dict) -> int | None:
    for i, cell in enumerate(executed["cells"]):
        if cell.get("cell_type") != "code":
            continue
        if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            return i
    return None


def _kernel_config():
    """Talk to the kernel over Unix sockets (IPC transport) where the platform has them: the
    kernel is local, and over unencrypted TCP ipykernel warns on every notebook ("Kernel is
    running over TCP without encryption").

    The socket names are set here, one fresh name per kernel in Jupyter's runtime folder:
    jupyter_client's default for a kernel started this way is ``kernel-ipc-1`` ... ``-5`` in
    the current folder, so two runs started together (``make course`` beside ``make test``)
    took the same sockets, one kernel got the other's messages and the other never answered."""
    from traitlets.config import Config

    config = Config()
    if os.name == "posix":
        config.KernelManager.transport = "ipc"
        config.KernelManager.ip = _ipc_socket_prefix()
    return config


#: a Unix socket path holds at most 107 bytes on Linux (104 on macOS); ours adds "-NNNNN"
_SOCKET_PATH_MAX = 100


def _ipc_socket_prefix() -> str:
    """A new, unused socket name prefix: Jupyter's runtime folder (private to the user), or
    the temporary folder where that path would be too long for a socket."""
    import tempfile
    import uuid

    from jupyter_core.paths import jupyter_runtime_dir

    name = f"course-kernel-{uuid.uuid4().hex[:12]}-ipc"
    runtime = Path(jupyter_runtime_dir())
    if len(str(runtime / name)) + 6 <= _SOCKET_PATH_MAX:
        try:
            runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
            return str(runtime / name)
        except OSError:
            pass
    return str(Path(tempfile.gettempdir()) / name)


def run_notebook(source: str | os.PathLike, output: str | os.PathLike, *,
                 profile: str = "embedded", parameters: dict | None = None,
                 cell_timeout: int | None = CELL_TIMEOUT, kernel_name: str = "python3",
                 progress_bar: bool = True, cwd: str | os.PathLike | None = None,
                 threads: int | None = None) -> NotebookResult:
    """Execute one notebook with papermill; raise :class:`NotebookFailure` if a cell raises.

    ``threads``: the kernel's thread pools (default: every CPU this process may use); a
    variable the caller's environment already sets wins."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r} is not one of {', '.join(PROFILES)}")
    source, output = Path(source), Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    params = {"PROFILE": profile, **(parameters or {})}
    start = time.perf_counter()
    # The kernel inherits our environment: figures must go inline (a test runner's
    # MPLBACKEND=Agg would silently drop them), TensorFlow's C++ chatter stays out of the page,
    # results.record() writes next to the executed copy, and progress bars leave one final
    # line each instead of widgets or hundreds of updates (course_utils.progress).
    kernel_env = {"COURSE_BUILD_DIR": str(output.parent.resolve()),
                  "COURSE_PROGRESS": os.environ.get("COURSE_PROGRESS") or "final",
                  "MPLBACKEND": "module://matplotlib_inline.backend_inline",
                  "TF_CPP_MIN_LOG_LEVEL": "2"}
    # and the kernel's OpenMP threads spin only briefly before they sleep, sized to the CPUs
    # we may use (course_utils.threads), unless the caller's environment says otherwise
    from course_utils.threads import thread_env

    kernel_env.update({k: v for k, v in thread_env(threads).items() if k not in os.environ})
    env_before = {k: os.environ.get(k) for k in kernel_env}
    os.environ.update(kernel_env)
    try:
        pm.execute_notebook(
            str(source), str(output), parameters=params, kernel_name=kernel_name,
            progress_bar=progress_bar, execution_timeout=cell_timeout,
            cwd=str(cwd if cwd is not None else source.parent), config=_kernel_config(),
        )
    except PapermillExecutionError as exc:
        executed = json.loads(output.read_text()) if output.exists() else {"cells": []}
        cell = _source_cell_number(executed, _failing_cell_index(executed))
        raise NotebookFailure(source, cell, exc.ename, exc.evalue, output,
                              exc.source) from None
    finally:
        for key, value in env_before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return NotebookResult(source, output, time.perf_counter() - start, ok=True,
                          slowest=slowest_cell(output, source))


def render_html(executed: str | os.PathLike) -> Path:
    """Render an executed notebook to ``<name>.html`` beside it (images embedded)."""
    import nbformat
    from nbconvert import HTMLExporter

    executed = Path(executed)
    nb = nbformat.read(str(executed), as_version=4)
    # the "course" template is nbconvert's lab page plus each figure's alt text
    # (course_utils.plots puts a description in the output's metadata)
    exporter = HTMLExporter(embed_images=True, template_name="course",
                            extra_template_basedirs=[str(TEMPLATES)])
    body, _ = exporter.from_notebook_node(nb)
    html = executed.with_suffix(".html")
    html.write_text(body, encoding="utf-8")
    return html


def write_index(results: list[NotebookResult], out_dir: str | os.PathLike, profile: str) -> Path:
    """``index.html`` linking every executed notebook's HTML page."""
    out_dir = Path(out_dir)
    rows = "\n".join(
        f'<li><a href="{r.html.name}">{r.source.stem}</a> '
        f'<small>({r.seconds:.1f} s)</small></li>'
        for r in results if r.html is not None
    )
    page = (
        "<!doctype html>\n<html><head><meta charset='utf-8'>"
        "<title>Transfer-learning course: executed notebooks</title></head>\n"
        f"<body><h1>Transfer-learning course</h1><p>Profile: <b>{profile}</b></p>\n"
        f"<ol>\n{rows}\n</ol>\n"
        "<p>The course site (front page, navigation, search) is <a href=\"site/index.html\">"
        "site/index.html</a>, built by <code>make course</code> or "
        f"<code>course site --build {out_dir.name}</code>.</p></body></html>\n"
    )
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def run_series(notebooks: list[str | os.PathLike] | None = None, *, profile: str = "embedded",
               out_dir: str | os.PathLike = "build", cell_timeout: int | None = CELL_TIMEOUT,
               html: bool = True, parameters: dict | None = None,
               jobs: int = 1) -> list[NotebookResult]:
    """Run notebooks in order, stopping at the first failure (which is raised).

    ``jobs`` > 1 runs that many notebooks at once, each in its own worker process, taken in
    order as workers free up, with the CPUs shared out between their kernels (``threads``
    of :func:`run_notebook`). Why it pays: these small networks barely gain from a second
    thread (on 2 cores, 01 took 69 s with two threads and 69 s with one, 06 141 s and 148 s),
    so two one-thread notebooks side by side use the cores a lone notebook leaves idle.
    Results come back in the given order; after a failure no new notebook starts, the
    running ones finish, and the first failure in notebook order is raised."""
    paths = [Path(p) for p in notebooks] if notebooks else discover_notebooks()
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"notebook(s) not found: {', '.join(missing)}")
    if jobs < 1:
        raise ValueError(f"jobs={jobs!r}: run at least one notebook at a time (jobs >= 1)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = dict(profile=profile, cell_timeout=cell_timeout, parameters=parameters, html=html)
    if jobs == 1 or len(paths) == 1:
        results = _run_in_order(paths, out_dir, **run)
    else:
        results = _run_at_once(paths, out_dir, jobs=min(jobs, len(paths)), **run)
    if html:
        write_index(results, out_dir, profile)
    return results


def _log_done(result: NotebookResult) -> None:
    if result.slowest is not None:
        log.info("%s done in %.1f s (slowest: cell %d, %.1f s)", result.source.name,
                 result.seconds, result.slowest.cell, result.slowest.seconds)
    else:
        log.info("%s done in %.1f s", result.source.name, result.seconds)


def _run_one(path: Path, output: Path, *, html: bool, threads: int | None = None,
             progress_bar: bool = True, **run) -> NotebookResult:
    result = run_notebook(path, output, threads=threads, progress_bar=progress_bar, **run)
    if html:
        result.html = render_html(result.output)
    return result


def _run_in_order(paths: list[Path], out_dir: Path, **run) -> list[NotebookResult]:
    from tqdm.auto import tqdm

    results: list[NotebookResult] = []
    bar = tqdm(paths, desc=f"notebooks ({run['profile']})", unit="nb")
    for path in bar:
        bar.set_postfix_str(path.name)
        results.append(_run_one(path, out_dir / path.name, **run))
        _log_done(results[-1])
    return results


def _run_at_once(paths: list[Path], out_dir: Path, *, jobs: int, **run) -> list[NotebookResult]:
    """``jobs`` worker processes (spawned: no copy of a parent's threads or open kernels);
    each kernel gets an equal share of the CPUs and no per-cell bar (they would interleave)."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from tqdm.auto import tqdm

    from course_utils.threads import available_cpus

    threads = max(1, available_cpus() // jobs)
    log.info("running %d notebooks, %d at a time, %d thread(s) each", len(paths), jobs, threads)
    done: dict[int, NotebookResult] = {}
    failures: dict[int, BaseException] = {}
    bar = tqdm(total=len(paths), desc=f"notebooks ({run['profile']}, {jobs} at once)", unit="nb")
    with ProcessPoolExecutor(max_workers=jobs,
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        # the pool's queue is first in, first out: notebooks start in the series' order
        pending = {pool.submit(_run_one, path, out_dir / path.name, threads=threads,
                               progress_bar=False, **run): i for i, path in enumerate(paths)}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                i = pending.pop(future)
                if future.cancelled():
                    continue
                exc = future.exception()
                if exc is not None:
                    failures[i] = exc
                    for other in pending:   # nothing new starts; running ones finish
                        other.cancel()
                    continue
                done[i] = future.result()
                _log_done(done[i])
                bar.set_postfix_str(paths[i].name)
                bar.update()
    bar.close()
    if failures:
        raise failures[min(failures)]
    return [done[i] for i in range(len(paths))]
