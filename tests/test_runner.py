"""The ``course run`` pipeline: order, failure reporting, HTML rendering."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from course_utils.runner import NotebookFailure, cells_over_limit, discover_notebooks, run_series

FIXTURES = Path(__file__).parent / "fixtures" / "notebooks"


def test_failing_notebook_names_the_third_cell_and_exits_nonzero(course_bin, tmp_path):
    proc = subprocess.run(
        [str(course_bin), "run", str(FIXTURES / "fails_in_cell3.ipynb"), "--profile", "smoke",
         "--out", str(tmp_path), "--no-html"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "fails_in_cell3.ipynb: cell 3 raised ValueError" in proc.stderr, proc.stderr
    assert "deliberate failure in the third cell" in proc.stderr
    assert (tmp_path / "fails_in_cell3.ipynb").exists()  # executed copy kept for the traceback


def test_series_stops_at_first_failure(tmp_path):
    with pytest.raises(NotebookFailure) as info:
        run_series([FIXTURES / "fails_in_cell3.ipynb", FIXTURES / "ok_notebook.ipynb"],
                   profile="smoke", out_dir=tmp_path, html=False)
    assert info.value.cell == 3 and info.value.ename == "ValueError"
    assert not (tmp_path / "ok_notebook.ipynb").exists()


def test_success_renders_html_index_and_passes_profile(tmp_path):
    results = run_series([FIXTURES / "ok_notebook.ipynb"], profile="smoke", out_dir=tmp_path)
    assert [r.ok for r in results] == [True]
    html = (tmp_path / "ok_notebook.html").read_text()
    assert "profile smoke" in html
    index = (tmp_path / "index.html").read_text()
    assert 'href="ok_notebook.html"' in index
    # the notebook recorded its figures next to the executed copy
    assert json.loads((tmp_path / "ok_notebook.json").read_text()) == {"profile": "smoke", "seed": 0}


def test_unknown_profile_is_refused(tmp_path):
    with pytest.raises(ValueError, match="profile='huge' is not one of smoke, embedded, full"):
        run_series([FIXTURES / "ok_notebook.ipynb"], profile="huge", out_dir=tmp_path)


def test_missing_notebook_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ipynb"):
        run_series([tmp_path / "nope.ipynb"], out_dir=tmp_path)


def test_series_is_discovered_in_order(repo_root):
    names = [p.name for p in discover_notebooks(repo_root / "notebooks")]
    assert names, "notebooks/ holds no NN_*.ipynb notebook"
    assert names == sorted(names) and names[0].startswith("00_")


def test_cli_help_lists_subcommands(course_bin):
    out = subprocess.run([str(course_bin), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for sub in ("run", "data", "bench", "grade"):
        assert sub in out.stdout


def test_one_default_cell_timeout_for_the_runner_and_the_cli():
    import inspect

    from course_utils import cli, runner

    defaults = {inspect.signature(f).parameters["cell_timeout"].default
                for f in (runner.run_notebook, runner.run_series)}
    assert defaults == {runner.CELL_TIMEOUT}
    assert cli.build_parser().parse_args(["run"]).cell_timeout == runner.CELL_TIMEOUT


def _timed_notebook(path: Path, sleeps: list[float]) -> Path:
    """A notebook whose cells after the parameters cell sleep for the given seconds (a
    markdown cell sits between them so the cell numbers count it, as NotebookFailure does)."""
    import nbformat

    from _notebooks import write_notebook  # tests/_notebooks.py

    return write_notebook(path, [
        nbformat.v4.new_code_cell('PROFILE = "embedded"\nSEED = 0',
                                  metadata={"tags": ["parameters"]}),
        nbformat.v4.new_markdown_cell("Timed cells follow."),
        *[nbformat.v4.new_code_cell(f"import time\ntime.sleep({s})") for s in sleeps]])


def test_slowest_cell_is_measured_and_numbered_as_in_the_source(tmp_path):
    nb = _timed_notebook(tmp_path / "timed.ipynb", [0.0, 1.5, 0.2])
    [result] = run_series([nb], profile="smoke", out_dir=tmp_path / "out", html=False)
    # cells: 1 parameters, 2 markdown, 3 sleep 0, 4 sleep 1.5, 5 sleep 0.2
    assert result.slowest is not None and result.slowest.cell == 4
    assert 1.4 <= result.slowest.seconds < 10
    assert result.slowest.notebook == nb
    assert cells_over_limit([result], 5) == []
    [line] = cells_over_limit([result], 1)
    assert line.startswith("timed.ipynb: cell 4 took ") and "over the 1 s limit" in line


def test_cli_reports_slowest_cell_and_fails_over_max_cell_seconds(course_bin, tmp_path):
    nb = _timed_notebook(tmp_path / "timed.ipynb", [1.5])
    cmd = [str(course_bin), "run", str(nb), "--profile", "smoke", "--out",
           str(tmp_path / "out"), "--no-html"]
    ok = subprocess.run(cmd + ["--max-cell-seconds", "30"], capture_output=True, text=True,
                        timeout=300)
    assert ok.returncode == 0, ok.stderr
    # the kernel talks over Unix sockets: no "running over TCP without encryption" warning
    assert "without encryption" not in ok.stderr, ok.stderr
    assert re.search(r"timed\.ipynb .* slowest cell +3: +1\.\d s", ok.stdout), ok.stdout
    slow = subprocess.run(cmd + ["--max-cell-seconds", "1"], capture_output=True, text=True,
                          timeout=300)
    assert slow.returncode == 1, slow.stdout + slow.stderr
    assert re.search(r"timed\.ipynb: cell 3 took 1\.\d s, over the 1 s limit", slow.stderr), \
        slow.stderr


def test_two_course_runs_at_once_in_one_folder_each_talk_to_their_own_kernel(course_bin, tmp_path):
    """IPC sockets named after the kernel, not jupyter_client's default ``kernel-ipc-1..5``
    in the notebook's folder: with the default, two runs started together (``make course``
    beside ``make test``, or a parallel build) picked the same socket names, one kernel got
    the other's messages ("Invalid Signature") and the other never answered."""
    nb = _timed_notebook(tmp_path / "timed.ipynb", [1.0, 1.0])
    procs = [subprocess.Popen([str(course_bin), "run", str(nb), "--profile", "smoke",
                               "--out", str(tmp_path / f"out{i}"), "--no-html"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, out + err
        assert "Invalid Signature" not in err, err
    # and no socket files are left beside the notebook
    assert sorted(f.name for f in tmp_path.iterdir()) == ["out0", "out1", "timed.ipynb"]


def _clock_notebook(path: Path, seconds: float, fail: bool = False) -> Path:
    """A notebook that records when it ran and the thread count its kernel was given."""
    import nbformat

    from _notebooks import write_notebook

    body = ("import json, os, time\nt0 = time.time()\n"
            f"time.sleep({seconds})\n"
            + ("raise ValueError('deliberate')\n" if fail else "")
            + "print(json.dumps({'start': t0, 'end': time.time(), "
              "'threads': os.environ.get('OMP_NUM_THREADS')}))")
    return write_notebook(path, [
        nbformat.v4.new_code_cell('PROFILE = "embedded"', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(body)])


def _clock(executed: Path) -> dict:
    nb = json.loads(executed.read_text())
    return json.loads("".join(nb["cells"][-1]["outputs"][0]["text"]))


def test_jobs_run_notebooks_side_by_side_in_order_sharing_the_cpus(tmp_path, monkeypatch):
    from course_utils.threads import available_cpus

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    nbs = [_clock_notebook(tmp_path / f"{i:02d}_nb.ipynb", 4.0) for i in range(3)]
    results = run_series(nbs, profile="smoke", out_dir=tmp_path / "out", html=False, jobs=2)
    assert [r.source for r in results] == nbs          # results in the series' order
    clocks = [_clock(r.output) for r in results]
    # the first two ran at the same time; the third started only when a worker was free
    assert clocks[1]["start"] < clocks[0]["end"] and clocks[0]["start"] < clocks[1]["end"]
    assert clocks[2]["start"] >= min(clocks[0]["end"], clocks[1]["end"]) - 0.5
    # each kernel got its share of the CPUs, not all of them
    assert {c["threads"] for c in clocks} == {str(max(1, available_cpus() // 2))}
    assert all(r.slowest is not None and r.slowest.seconds >= 3.9 for r in results)


def test_jobs_raise_the_first_failure_in_notebook_order(tmp_path):
    nbs = [_clock_notebook(tmp_path / "00_ok.ipynb", 3.0),
           _clock_notebook(tmp_path / "01_fails.ipynb", 0.0, fail=True),
           _clock_notebook(tmp_path / "02_after.ipynb", 0.0)]
    with pytest.raises(NotebookFailure) as info:
        run_series(nbs, profile="smoke", out_dir=tmp_path / "out", html=False, jobs=2)
    assert info.value.notebook == nbs[1] and info.value.ename == "ValueError"
    assert info.value.cell == 2
    assert (tmp_path / "out" / "00_ok.ipynb").exists()       # the running one finished


def test_cli_refuses_zero_jobs(course_bin, tmp_path):
    nb = _timed_notebook(tmp_path / "timed.ipynb", [0.0])
    proc = subprocess.run([str(course_bin), "run", str(nb), "--jobs", "0", "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--jobs 0" in proc.stderr, proc.stderr
