"""Figures: training curves, confusion matrix, image grid (Agg backend, no display)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402

from course_utils.history import History  # noqa: E402
from course_utils.plots import (RIGHT_COLOR, WRONG_COLOR, image_grid,  # noqa: E402
                                plot_confusion_matrix, plot_history)


@pytest.fixture(autouse=True)
def _close_figures(monkeypatch):
    # a library function that calls plt.show() would block a script; make it fail the test
    monkeypatch.setattr(plt, "show", lambda *a, **k: pytest.fail("plots must not call plt.show()"))
    yield
    plt.close("all")


def _history(n=4, framework="pytorch", val=True, best=None):
    h = History(framework=framework)
    for e in range(1, n + 1):
        rec = dict(epoch=e, train_loss=1.0 / e, train_acc=0.5 + 0.1 * e, lr=1e-3, seconds=0.5)
        if val:
            rec.update(val_loss=1.2 / e, val_acc=0.45 + 0.1 * e)
        h.append(**rec)
    h.best_epoch = best
    return h


def test_plot_history_one_run():
    axes = plot_history(_history(best=3))
    assert len(axes) == 2 and len(axes[0].figure.axes) == 2
    loss, acc = axes
    assert loss.get_title() == "loss" and acc.get_title() == "accuracy"
    ys = {line.get_label(): line.get_ydata() for line in loss.lines}
    np.testing.assert_allclose(ys["train"], [1, 1 / 2, 1 / 3, 1 / 4])
    np.testing.assert_allclose(ys["val"], [1.2, 0.6, 0.4, 0.3])
    assert "best epoch" in ys  # vertical marker at the restored epoch
    np.testing.assert_allclose(acc.lines[0].get_xdata(), [1, 2, 3, 4])


def test_plot_history_overlay_runs_and_existing_axes():
    fig, axes = plt.subplots(1, 3)
    out = plot_history([_history(framework="pytorch"), _history(3, framework="keras", val=False)],
                       ax=axes, metrics=("loss", "acc", "lr"))
    assert list(out) == list(axes)
    labels = [line.get_label() for line in axes[0].lines]
    assert labels == ["pytorch val", "pytorch train", "keras train"]  # keras has no val curve
    c = {line.get_label(): line.get_color() for line in axes[0].lines}
    assert c["pytorch val"] == c["pytorch train"] != c["keras train"]
    assert axes[2].get_yscale() == "log"
    with pytest.raises(ValueError, match="needs 2"):
        plot_history(_history(), ax=axes[0])
    with pytest.raises(ValueError, match="no epochs"):
        plot_history(History())
    with pytest.raises(TypeError, match="History"):
        plot_history([1, 2])


def test_confusion_matrix_counts_and_normalised():
    y = np.array([0, 0, 1, 1, 2, 2, 2, 2])
    p = np.array([0, 1, 1, 1, 2, 2, 0, 2])
    from sklearn.metrics import ConfusionMatrixDisplay

    disp = plot_confusion_matrix(y, p, ["a", "b", "c"], normalize=None)
    assert isinstance(disp, ConfusionMatrixDisplay)
    ax = disp.ax_
    np.testing.assert_array_equal(disp.confusion_matrix, [[1, 1, 0], [0, 2, 0], [1, 0, 3]])
    assert ax.get_title() == "Confusion matrix (accuracy 75.0%)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert ax.get_xlabel() == "predicted" and ax.get_ylabel() == "true"
    assert disp.text_.shape == (3, 3) and disp.text_[0, 0].get_text() == "1"
    logits = np.eye(3)[p] * 5.0  # logits are reduced with argmax
    disp2 = plot_confusion_matrix(y, logits, ["a", "b", "c"], values=False)
    np.testing.assert_allclose(disp2.confusion_matrix.sum(axis=1), 1.0)
    np.testing.assert_allclose(disp2.confusion_matrix[2], [0.25, 0, 0.75])
    assert disp2.text_ is None
    fig, other = plt.subplots()
    assert disp2.plot(ax=other).ax_ is other  # a Display draws again where it is told
    with pytest.raises(ValueError, match="class names"):
        plot_confusion_matrix(y, p, ["a", "b"])
    with pytest.raises(ValueError, match="normalize"):
        plot_confusion_matrix(y, p, normalize="rows")


def test_image_grid_titles_coloured_right_and_wrong():
    imgs = np.random.default_rng(0).integers(0, 255, size=(5, 28, 28), dtype=np.uint8)
    classes = ["cat", "dog", "bird"]
    axes = image_grid(imgs, labels=[0, 1, 2, 0, 1], preds=[0, 2, 2, 1, 1], classes=classes, ncols=3)
    assert len(axes) == 5 and len(axes[0].figure.axes) == 6  # 2×3 grid, last one blank
    titles = [a.title for a in axes]
    assert titles[0].get_text() == "cat\n(cat)"
    assert titles[1].get_text() == "bird\n(dog)"
    right, wrong = to_rgba(RIGHT_COLOR), to_rgba(WRONG_COLOR)
    assert [to_rgba(t.get_color()) for t in titles] == [right, wrong, right, wrong, right]
    assert not axes[0].figure.axes[5].images  # the spare cell stays empty


def test_image_grid_accepts_tensors_and_labels_only():
    torch = pytest.importorskip("torch")
    x = torch.randn(4, 1, 8, 8)  # normalised NCHW floats
    axes = image_grid(x, labels=torch.tensor([1, 0, 1, 0]), classes=["no", "yes"])
    assert [a.get_title() for a in axes] == ["yes", "no", "yes", "no"]
    shown = axes[0].images[0].get_array()
    assert shown.shape == (8, 8) and float(shown.min()) >= 0 and float(shown.max()) <= 1
    rgb = np.zeros((2, 3, 6, 6), dtype=np.float32)
    assert image_grid(rgb)[0].images[0].get_array().shape == (6, 6, 3)
    fig = plt.figure()
    assert image_grid(np.zeros((3, 5, 5), np.uint8), fig=fig)[0].figure is fig
    with pytest.raises(ValueError, match="shape"):
        image_grid(np.zeros((2, 4, 5, 5)))
    with pytest.raises(ValueError, match="labels has 1"):
        image_grid(np.zeros((2, 5, 5)), labels=[0])
