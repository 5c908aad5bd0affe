"""Every figure carries a description: the alt text of its image in the rendered pages."""
from __future__ import annotations

import logging

import matplotlib.pyplot as plt
import nbformat
import numpy as np
import pytest

from course_utils import plots
from course_utils.history import History
from course_utils.runner import render_html, run_notebook

from _notebooks import write_notebook  # tests/_notebooks.py


def test_any_figure_is_described_from_its_titles_and_labels():
    fig, (a, b) = plt.subplots(1, 2)
    a.plot([0, 1], [1, 0])
    a.set_title("learning curve")
    a.set_xlabel("training examples")
    a.set_ylabel("error")
    b.imshow(np.zeros((4, 4)))
    b.set_title("a sample")
    fig.suptitle("Bias and variance")
    text = plots.figure_description(fig)
    assert text == ("Figure 'Bias and variance': plot 'learning curve' of error against "
                    "training examples; 1 image titled a sample")
    plt.close(fig)


def test_course_plots_say_what_they_show_and_describe_overrides():
    h = History(records=[{"epoch": 1, "train_loss": 1.0, "val_loss": 1.2, "train_acc": .5,
                          "val_acc": .4}])
    axes = plots.plot_history(h)
    text = plots.figure_description(axes[0].figure)
    assert "loss per epoch" in text and "accuracy per epoch" in text and "validation" in text
    axes = plots.image_grid(np.random.rand(4, 8, 8), labels=[0, 1, 2, 3], preds=[0, 1, 2, 0])
    assert "3 right in green, 1 wrong in red" in plots.figure_description(axes[0].figure)
    plots.describe(axes[0].figure, "Four noise images")
    assert plots.figure_description(axes[0].figure) == "Four noise images"
    with pytest.raises(ValueError, match="short sentence"):
        plots.describe(axes[0], " ")
    plt.close("all")


def test_executed_notebook_pages_give_every_figure_its_alt_text(tmp_path, caplog):
    write_notebook(tmp_path / "figs.ipynb", [
        nbformat.v4.new_code_cell('PROFILE = "embedded"\nSEED = 0',
                                  metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "import matplotlib.pyplot as plt\nimport numpy as np\n"
            "from course_utils import plots\n"
            "fig, ax = plt.subplots()\nax.plot([1, 2, 3])\nax.set_title('steps')\n"
            "ax.set_xlabel('epoch')\nax.set_ylabel('loss')\nplt.show()"),
        nbformat.v4.new_code_cell(
            "plots.image_grid(np.random.rand(3, 8, 8), labels=[0, 1, 2], classes=['a', 'b', 'c'])"),
    ])
    result = run_notebook(tmp_path / "figs.ipynb", tmp_path / "out" / "figs.ipynb",
                          progress_bar=False)
    executed = nbformat.read(str(result.output), as_version=4)
    alts = [o["metadata"]["image/png"]["alt"] for c in executed.cells if c.cell_type == "code"
            for o in c.outputs if "image/png" in o.get("data", {})]
    assert alts == ["Figure: plot 'steps' of loss against epoch", "Figure: 3 images titled a, b, c"]
    with caplog.at_level(logging.WARNING):
        page = render_html(result.output).read_text()
    assert "Alternative text is missing" not in caplog.text
    assert page.count("<img") == 2
    assert 'alt="Figure: plot &#39;steps&#39; of loss against epoch"' in page \
        or "alt=\"Figure: plot 'steps' of loss against epoch\"" in page
    assert "No description has been provided" not in page
