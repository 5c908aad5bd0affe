"""The ``course`` command: run the notebook series, build its site, fetch data, benchmark, grade.

Sub-commands import their heavy dependencies lazily so that ``course --help`` is instant.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time

from course_utils import PROFILES
from course_utils.runner import CELL_TIMEOUT  # (runner imports papermill only when it runs)

__all__ = ["main", "build_parser"]


def _cmd_run(args: argparse.Namespace) -> int:
    from course_utils.runner import NotebookFailure, cells_over_limit, run_series

    if args.jobs < 1:
        print(f"error: --jobs {args.jobs}: run at least one notebook at a time", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        results = run_series(args.notebooks or None, profile=args.profile, out_dir=args.out,
                             cell_timeout=args.cell_timeout, html=not args.no_html,
                             jobs=args.jobs)
    except NotebookFailure as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - start
    total = sum(r.seconds for r in results)
    at_once = f", {args.jobs} at a time ({total:.0f} s of notebook time)" if args.jobs > 1 else ""
    print(f"\n{len(results)} notebook(s) executed on the '{args.profile}' profile in "
          f"{wall:.0f} s{at_once}.")
    for r in results:
        slowest = (f"slowest cell {r.slowest.cell:>3}: {r.slowest.seconds:6.1f} s"
                   if r.slowest is not None else "slowest cell: not timed")
        print(f"  {r.source.name:<34} {r.seconds:7.1f} s  {slowest}  -> {r.output}")
    if not args.no_html:
        print(f"Open {args.out}/index.html in a browser to read the executed notebooks; "
              f"'course site --build {args.out}' makes the course site from them.")
    if args.max_cell_seconds is not None:
        slow = cells_over_limit(results, args.max_cell_seconds)
        if slow:
            print("\nFAILED: cell(s) over the time limit:\n  " + "\n  ".join(slow)
                  + f"\n(every notebook ran; on a slower or busy machine raise --max-cell-seconds "
                  f"{args.max_cell_seconds:g} or leave it out: make course MAX_CELL_SECONDS=)",
                  file=sys.stderr)
            return 1
    return 0


def _cmd_site(args: argparse.Namespace) -> int:
    from course_utils.site import build_site

    try:
        site = build_site(args.build, args.out)
    except (FileNotFoundError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for warning in site.warnings:
        print(f"sphinx: {warning}", file=sys.stderr)
    print(f"Site: {len(site.notebooks)} notebook(s), {len(site.pages)} pages in "
          f"{site.seconds:.1f} s. Open {site.index} in a browser.")
    if site.external:
        print("error: the site would load from the network (it must open offline):\n  "
              + "\n  ".join(site.external), file=sys.stderr)
        return 1
    return 0


def _human_size(n: int | None) -> str:
    if n is None:
        return "size unknown"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


def _list_data() -> int:
    from course_utils import data
    from course_utils.download import data_home

    rows, failed = [], []
    for name in data.list_datasets():
        st = data.dataset_status(name)
        if st.verified is False:
            failed.append(name)
        state = ("cached" if st.cached else "not cached") + {
            True: ", verified", False: ", FAILS verification", None: ""}[st.verified]
        rows.append((name, st.profile, f"{_human_size(st.size_bytes)} {st.size_kind}", state,
                     st.where, st.note))
    head = ("dataset", "profile", "size", "status", "where", "")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    for r in [head, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[4])
        if r[5]:
            print(" " * (sum(widths) + 8) + r[5])
    from course_utils.download import MIRROR_ENV

    mirror = os.environ.get(MIRROR_ENV)
    print(f"\nCache root: {data_home()} ($COURSE_DATA). For a classroom without internet, run "
          "`course data NAME ...` on a connected machine and copy that folder, or serve it and "
          f"set ${MIRROR_ENV} to its URL or mount point"
          + (f" (now: {mirror})." if mirror else "."))
    if failed:
        print(f"error: {', '.join(failed)} fail(s) verification (see above)", file=sys.stderr)
        return 1
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from course_utils import data

    if args.list:
        return _list_data()
    if not args.names:
        print("error: name a dataset (e.g. course data fashion_mnist) or pass --list",
              file=sys.stderr)
        return 2
    for name in args.names:
        try:
            ds = data.load(name, download=not args.offline)
        except (OSError, ValueError, RuntimeError) as exc:  # download, checksum, archive errors
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"{name}: {len(ds.x_train)} training and {len(ds.x_test)} test images, "
              f"{len(ds.classes)} classes")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from course_utils.bench import BENCHMARKS

    names = list(BENCHMARKS) if args.name == "all" else [args.name]
    status = 0
    for name in names:
        module = importlib.import_module(BENCHMARKS[name][0])
        print(f"== course bench {name} ==", flush=True)
        status |= module.main(args.rest)
    return status


def _cmd_grade(args: argparse.Namespace) -> int:
    from course_utils.autograde import cli_grade

    return cli_grade(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="course", description="Transfer-learning course: run notebooks, fetch data, "
        "benchmark the library, grade assignments.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="execute notebooks in order with papermill",
                         description="Execute the notebooks in order; stop at the first failure.")
    run.add_argument("notebooks", nargs="*", help="notebooks to run (default: notebooks/NN_*.ipynb)")
    run.add_argument("--profile", choices=PROFILES, default="embedded",
                     help="smoke (CI), embedded (default, offline), full (GPU + internet)")
    run.add_argument("--out", default="build", help="folder for executed notebooks and HTML")
    run.add_argument("--cell-timeout", type=int, default=CELL_TIMEOUT,
                     help=f"seconds one cell may run before it is stopped (default {CELL_TIMEOUT})")
    run.add_argument("--max-cell-seconds", type=float, default=None, metavar="N",
                     help="fail (exit 1) when a cell ran longer than N seconds; the series still "
                     "runs to the end so every slow cell is named (make course: 60 on embedded)")
    run.add_argument("--no-html", action="store_true", help="skip the HTML rendering")
    run.add_argument("--jobs", "-j", type=int, default=1, metavar="N",
                     help="run N notebooks at once, in order as workers free up, the CPUs "
                     "shared between them (default 1; make course: 2)")
    run.set_defaults(func=_cmd_run)

    site = sub.add_parser(
        "site", help="build the course site (front page, navigation, search) from a run",
        description="Build a static site from the executed notebooks of `course run` (Sphinx, "
        "myst-nb, sphinx-book-theme; nothing is executed, nothing is downloaded). "
        "make course does this last.")
    site.add_argument("--build", default="build",
                      help="folder of executed NN_*.ipynb notebooks (course run --out)")
    site.add_argument("--out", default=None, help="where the site goes (default: BUILD/site)")
    site.set_defaults(func=_cmd_site)

    dat = sub.add_parser("data", help="make datasets available (verified download if needed)")
    dat.add_argument("names", nargs="*", help="dataset names, e.g. fashion_mnist")
    dat.add_argument("--offline", action="store_true", help="never download")
    dat.add_argument("--list", action="store_true",
                     help="every dataset: size, whether it is cached and verified, and where")
    dat.set_defaults(func=_cmd_data)

    from course_utils.bench import BENCHMARKS

    bench = sub.add_parser("bench", help="benchmarks (ratios measured side by side)",
                           description="\n".join(f"{k}: {v[1]}" for k, v in BENCHMARKS.items()))
    bench.add_argument("name", choices=[*BENCHMARKS, "all"])
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="options for the benchmark")
    bench.set_defaults(func=_cmd_bench)

    grade = sub.add_parser("grade", help="autograde an assignment, write feedback and a CSV")
    grade.add_argument("assignment", help="assignment name, e.g. a1_learning_curves")
    grade.add_argument("--course-dir", default="assignments", help="nbgrader course directory")
    grade.add_argument("--workers", type=int, default=None, help="parallel graders (default: cores)")
    grade.add_argument("--csv", default=None, help="where to write the grades CSV")
    grade.add_argument("--no-sandbox", action="store_true",
                       help="run submissions without the sandbox (trusted code only)")
    grade.add_argument("--timeout", type=int, default=300, help="wall-clock seconds per submission")
    grade.add_argument("--cell-timeout", type=int, default=None,
                       help="seconds per cell (default: nbgrader's Execute.timeout, 30 s)")
    grade.add_argument("--memory", default="4G",
                       help="memory per submission's kernel, e.g. 2G or 512M (default 4G)")
    grade.add_argument("--student", action="append", default=None, metavar="ID",
                       help="grade only this student (repeat for several)")
    grade.add_argument("--no-feedback", action="store_true", help="write no feedback HTML")
    grade.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="grade on a Dask cluster: tcp://HOST:PORT, or local:N for N local "
                       "worker processes (default: $COURSE_GRADE_SCHEDULER; unset: this machine)")
    grade.add_argument("--ro-bind", action="append", default=[], metavar="PATH",
                       help="host path the submissions may read, e.g. a dataset cache (repeatable; "
                       "also $COURSE_GRADE_RO_BINDS)")
    grade.set_defaults(func=_cmd_grade)

    from course_utils import classroom

    classroom.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command == "classroom":
        from course_utils.classroom import cli

        return cli(args)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
