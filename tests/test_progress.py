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
        nbformat.v4.new_code_cell(  # an experiment: outer 'run i/N' bar, a fit bar inside each run
            "import numpy as np\nfrom course_utils.data import ImageData\n"
            "from course_utils.experiments import fair_comparison\nfrom course_utils.progress import tqdm\n"
            "x, y = np.zeros((40, 8, 8), np.uint8), np.repeat(np.arange(4), 10).astype(np.int64)\n"
            "pool, val = ImageData('f', x, y, x, y, tuple('abcd')).train_val_split(0.25, 0)\n"
            "def trainer(model, data, seed, *, lr, validation=None, progress=False):\n"
            "    for _ in tqdm(range(5), desc='fit', mininterval=0):\n"
            "        pass\n"
            "    return {'test_acc': lr, 'val_acc': lr}\n"
            "res = fair_comparison(lambda seed: {}, 'S', pool, [1, 2], (0, 1, 2), validation=val,\n"
            "                      lr_grid={'scratch': [1, 2], 'pretrained': [3, 4]}, trainer=trainer,\n"
            "                      load_state=lambda m, s: m, label='small/fake')"),
    ])
    proc = subprocess.run([str(course_bin), "run", str(tmp_path / "bars.ipynb"), "--profile",
                           "smoke", "--out", str(tmp_path / "out"), "--no-html"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    executed = nbformat.read(str(tmp_path / "out" / "bars.ipynb"), as_version=4)
    code = [c for c in executed.cells if c["cell_type"] == "code"
            and "injected-parameters" not in c["metadata"].get("tags", [])]
    counts = [_progress_lines(c) for c in code]
    assert counts == [0, progress.MAX_FINAL_LINES, 0, 1], counts
    assert "run 1/10: 100%|" in "".join(o.get("text", "") for o in code[1]["outputs"])
    # the experiment keeps one line, its outer bar naming the last run; no fit line
    text = "".join(o.get("text", "") for o in code[3]["outputs"])
    assert "run 16/16: small/fake, 2/class, seed 2" in text and "fit" not in text, text


def test_the_line_count_sees_a_flood():
    """The counter used above does see a bar's updates (so the test above can fail)."""
    cell = {"outputs": [{"output_type": "stream", "name": "stderr",
                         "text": "\r".join(f"fit: {i}%|" for i in range(0, 101, 10))}]}
    assert _progress_lines(cell) == 11


def _nested_experiment():
    """A small scratch-vs-pretrained experiment on fake data: six runs, each a real ``fit``
    with its own bar inside the experiment's bar."""
    from course_utils.data import ImageData
    from course_utils.experiments import scratch_vs_pretrained
    from course_utils.models import create_model

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(40, 12, 12)).astype(np.uint8)
    y = np.repeat(np.arange(4), 10).astype(np.int64)
    data = ImageData("fake", x, y, x[:8], y[:8], ("a", "b", "c", "d"))
    state = create_model("small_cnn", num_classes=4).state_dict()
    return scratch_vs_pretrained("small_cnn", state, data, [1, 2], (0, 1, 2), epochs=2,
                                 inits=("scratch",), label="small/fake")


def test_an_experiment_shows_one_outer_bar_naming_the_run_and_a_transient_inner_bar(monkeypatch, capsys):
    monkeypatch.delenv(progress.ENV, raising=False)
    _nested_experiment()
    err = capsys.readouterr().err
    # the outer bar names each run as it goes ...
    assert "run 1/6: small/fake, 1/class, seed 0, from scratch" in err, err
    assert "run 6/6: small/fake, 2/class, seed 2, from scratch" in err, err
    # ... and each fit's own bar runs inside it, transient: the last thing left on the
    # screen is the outer bar at 6/6, not a finished fit bar
    assert "fit:" in err
    last = err.replace("\r", "\n").rstrip().splitlines()[-1]
    assert "run 6/6" in last and "6/6" in last, last
    from tqdm.auto import tqdm as auto_tqdm
    assert not [b for b in auto_tqdm._instances if not b.disable]  # every bar closed


def test_an_experiment_in_final_mode_writes_one_line_naming_the_last_run(monkeypatch, capsys):
    monkeypatch.setenv(progress.ENV, "final")
    monkeypatch.setattr(progress, "_final_lines", {})  # outside IPython the line cap is per process
    _nested_experiment()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("run 6/6: small/fake, 2/class, seed 2, from scratch") and "6/6 [" in lines[0]


def test_a_bar_opened_inside_a_running_bar_is_transient(monkeypatch, capsys):
    monkeypatch.delenv(progress.ENV, raising=False)
    with progress.tqdm(total=2, desc="outer") as outer:
        with progress.tqdm(total=3, desc="inner") as inner:
            assert inner.leave is False          # nested: disappears when it closes
        with progress.tqdm(total=3, desc="kept", leave=True) as asked:
            assert asked.leave is True           # unless it asks to stay
        outer.update(2)
    assert outer.leave is True
    with progress.tqdm(total=1, desc="disabled", disable=True):
        with progress.tqdm(total=1, desc="alone") as alone:
            assert alone.leave is True           # a disabled bar is not a running one


def test_a_fair_comparison_is_one_bar_over_search_and_runs(monkeypatch, capsys):
    from test_experiments import DisagreeingTrainer, _fake_data, _fake_factory, _fake_load

    from course_utils.experiments import fair_comparison

    monkeypatch.setenv(progress.ENV, "final")
    monkeypatch.setattr(progress, "_final_lines", {})
    pool, val = _fake_data().train_val_split(0.25, 0)
    fair_comparison(_fake_factory, "S", pool, [2], seeds=(0, 1, 2), validation=val,
                    lr_grid={"scratch": [1e-3, 1e-2], "pretrained": [1e-4, 1e-3]},
                    trainer=DisagreeingTrainer(), load_state=_fake_load, label="small/fake")
    lines = capsys.readouterr().err.splitlines()
    # 4 search runs + 2 more seeds x 2 arms, in one bar: one line, naming the last run
    assert len(lines) == 1 and lines[0].startswith("run 8/8: small/fake, 2/class, seed 2"), lines
