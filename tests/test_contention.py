"""Thread settings for a shared CPU, and ``course bench contention`` that measures them."""
from __future__ import annotations

import os
import subprocess
import sys

import nbformat
import pytest

from course_utils import threads
from course_utils.runner import run_notebook

from _notebooks import write_notebook  # tests/_notebooks.py


def test_thread_env_sleeps_idle_threads_and_counts_the_cpus_we_may_use():
    env = threads.thread_env()
    assert env["GOMP_SPINCOUNT"] == "1000" and "OMP_WAIT_POLICY" not in env
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert threads.available_cpus() == n
    assert env["OMP_NUM_THREADS"] == env["TF_NUM_INTRAOP_THREADS"] == str(n)
    assert threads.thread_env(3)["OMP_NUM_THREADS"] == "3"


def test_thread_env_gives_numpys_openblas_one_thread():
    """OpenBLAS ignores the OpenMP settings and would take OMP_NUM_THREADS threads that spin."""
    probe = ("import numpy, threadpoolctl\n"
             "print(sorted({p['num_threads'] for p in threadpoolctl.threadpool_info()"
             " if p['internal_api'] == 'openblas'}))")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENBLAS", "OMP_"))}
    for cpus, expected in ((2, "[1]"), (None, "[1]")):
        out = subprocess.run([sys.executable, "-c", probe], env={**env, **threads.thread_env(cpus)},
                             capture_output=True, text=True, check=True).stdout.strip()
        assert out == expected, out


def test_course_run_kernels_get_the_thread_settings_unless_the_caller_set_them(
        tmp_path, monkeypatch):
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the caller's choice wins
    write_notebook(tmp_path / "env.ipynb", [
        nbformat.v4.new_code_cell('PROFILE = "embedded"\nSEED = 0',
                                  metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import os\nprint(os.environ['GOMP_SPINCOUNT'], "
                                  "os.environ['OMP_NUM_THREADS'])")])
    result = run_notebook(tmp_path / "env.ipynb", tmp_path / "out" / "env.ipynb",
                          progress_bar=False)
    executed = nbformat.read(str(result.output), as_version=4)
    printed = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    assert printed.strip() == "1000 1"
    assert "GOMP_SPINCOUNT" not in os.environ  # the runner restores its own environment


@pytest.mark.slow
def test_bench_contention_prints_its_ratio(course_bin, fashion, tmp_path):
    out = tmp_path / "c.json"
    proc = subprocess.run([str(course_bin), "bench", "contention", "--images", "64",
                           "--epochs", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "slowdown" in proc.stdout and "GOMP_SPINCOUNT" in proc.stdout, proc.stdout
    import json

    figures = json.loads(out.read_text())
    assert figures["ratio"] == pytest.approx(figures["beside_s"] / figures["alone_s"])
    assert figures["settings"]["GOMP_SPINCOUNT"] == "1000"
