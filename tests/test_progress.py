"""Progress bars: live by default, one tidy line per loop in notebooks ``course run`` executes."""
from __future__ import annotations

import subprocess

import nbformat
import numpy as np

from course_utils import curves, progress

from _notebooks import write_notebook  # tests/_notebooks.py


def _score(x_tr, y_tr, x_val, y_val, seed):
    return 0.1, 0.2


def test_a_library_loop_shows_a_live_bar_with_an_eta_by_default(monkeypatch, capsys):
    monkeypatch.delenv(progress.ENV, raising=False)
    x, y = np.zeros((40, 2)), np.repeat([0, 1], 20)
    curves.learning_curve(_score, x, y, sizes=[4, 8], seeds=[0, 1])
    err = capsys.readouterr().err
    assert "learning curve:" in err and "0/4 [00:00<?" in err, err  # bar, count and ETA field
    curves.learning_curve(_score, x, y, sizes=[4, 8], seeds=[0, 1], progress=False)
    assert capsys.readouterr().err == ""


def test_final_mode_writes_one_line_per_top_level_loop_and_caps_them(monkeypatch, capsys):
    monkeypatch.setenv(progress.ENV, "final")
    for _ in range(progress.MAX_FINAL_LINES + 3):
        with progress.tqdm(total=50, desc="fit", mininterval=0) as outer:
            for _ in range(50):
                with progress.tqdm(total=5, desc="epoch", leave=False, mininterval=0) as inner:
                    inner.update(5)
                outer.update(1)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == progress.MAX_FINAL_LINES, err
    assert all(line.startswith("fit: 100%|") and "50/50" in line for line in lines)
    assert "\r" not in err and "epoch" not in err


def test_off_mode_and_an_unknown_mode(monkeypatch, capsys, caplog):
    monkeypatch.setenv(progress.ENV, "off")
    for _ in progress.tqdm(range(3), desc="quiet"):
        pass
    assert capsys.readouterr().err == ""
    monkeypatch.setenv(progress.ENV, "loud")
    assert progress.progress_mode() == "live"
    assert "COURSE_PROGRESS='loud' is not one of live, final, off" in caplog.text


def _progress_lines(cell) -> int:
    """Lines of progress-bar output a cell kept (text and stderr streams, widgets)."""
    n = 0
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            n += sum(1 for part in out["text"].replace("\r", "\n").splitlines() if "%|" in part)
        elif "application/vnd.jupyter.widget-view+json" in out.get("data", {}):
            n += 1
    return n


def test_course_run_keeps_a_few_progress_lines_per_cell(course_bin, tmp_path):
    write_notebook(tmp_path / "bars.ipynb", [
        nbformat.v4.new_code_cell('PROFILE = "embedded"\nSEED = 0',
                                  metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(  # ten trainings with an epoch bar and a transient batch bar
            "import time\nfrom course_utils.progress import tqdm\n"
            "for run in range(10):\n"
            "    for epoch in tqdm(range(20), desc=f'run {run + 1}/10', mininterval=0):\n"
            "        for batch in tqdm(range(10), desc='batches', leave=False, mininterval=0):\n"
            "            time.sleep(0.0005)\n"),
        nbformat.v4.new_code_cell(
            "import numpy as np\nfrom course_utils import curves\n"
            "lc = curves.learning_curve(lambda *a: (0.1, 0.2), np.zeros((40, 2)),\n"
            "                           np.repeat([0, 1], 20), sizes=[4, 8], seeds=[0, 1])\n"
            "print('done')"),
    ])
    proc = subprocess.run([str(course_bin), "run", str(tmp_path / "bars.ipynb"), "--profile",
                           "smoke", "--out", str(tmp_path / "out"), "--no-html"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    executed = nbformat.read(str(tmp_path / "out" / "bars.ipynb"), as_version=4)
    code = [c for c in executed.cells if c["cell_type"] == "code"
            and "injected-parameters" not in c["metadata"].get("tags", [])]
    counts = [_progress_lines(c) for c in code]
    assert counts == [0, progress.MAX_FINAL_LINES, 0], counts
    assert "run 1/10: 100%|" in "".join(o.get("text", "") for o in code[1]["outputs"])


def test_the_line_count_sees_a_flood():
    """The counter used above does see a bar's updates (so the test above can fail)."""
    cell = {"outputs": [{"output_type": "stream", "name": "stderr",
                         "text": "\r".join(f"fit: {i}%|" for i in range(0, 101, 10))}]}
    assert _progress_lines(cell) == 11
