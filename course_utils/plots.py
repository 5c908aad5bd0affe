"""The course's figures: training curves, confusion matrices and image grids.

Every function draws with matplotlib on the axes you pass (or on a new figure), returns
the axes and never calls ``plt.show()``: notebooks display figures inline, tests use the
Agg backend, and a function returning a ``Figure`` would be shown twice in Jupyter when it
is the last line of a cell. ``axes[0].figure`` gives the figure to save.

Every figure shown in a notebook carries a short text description (the ``alt`` of its image
in the rendered pages, for screen readers): the functions here describe what they draw, and
:func:`figure_description` describes any other figure from its titles and axis labels;
:func:`describe` sets your own. Importing this module inside a Jupyter kernel turns it on
(:func:`enable_alt_text`).
"""
from __future__ import annotations

import logging
import math
import sys
import weakref
from typing import Sequence

import numpy as np

from course_utils.history import History

__all__ = ["plot_history", "plot_confusion_matrix", "image_grid", "RIGHT_COLOR", "WRONG_COLOR",
           "describe", "figure_description", "enable_alt_text"]

log = logging.getLogger(__name__)

#: title colours of :func:`image_grid` for right and wrong predictions
RIGHT_COLOR = "green"
WRONG_COLOR = "red"

_TITLES = {"loss": "loss", "acc": "accuracy", "lr": "learning rate", "seconds": "seconds per epoch"}


# --------------------------------------------------------------------------- descriptions

#: descriptions set with :func:`describe`, by figure or axes (weak: figures get closed)
_DESCRIPTIONS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
#: longest description :func:`figure_description` returns (alt text is read aloud)
MAX_DESCRIPTION = 400


def describe(artist, text: str):
    """Describe what a figure or one of its Axes shows, in a sentence; the description becomes
    the image's alt text in the notebook and its rendered page. Returns ``artist``."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"describe: text={text!r}; give a short sentence saying what it shows")
    _DESCRIPTIONS[artist] = " ".join(text.split())
    return artist


def _shorten(text: str, limit: int = MAX_DESCRIPTION) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _axes_description(ax) -> str | None:
    explicit = _DESCRIPTIONS.get(ax)
    if explicit:
        return explicit
    title = " ".join(ax.get_title().split())
    x, y = ax.get_xlabel().strip(), ax.get_ylabel().strip()
    kind = "plot"
    if ax.images and not ax.lines:
        kind = "image"
    elif ax.patches and not ax.lines:
        kind = "bar chart"
    text = f"{kind} '{title}'" if title else kind
    if kind != "image" and x:
        text += f" of {y or 'values'} against {x}"
    elif kind != "image" and y:
        text += f" of {y}"
    return text


def figure_description(fig) -> str:
    """A short description of ``fig``: the one given to :func:`describe`, else one built from
    its title, its panels' own descriptions, titles and axis labels, and its images."""
    explicit = _DESCRIPTIONS.get(fig)
    if explicit:
        return _shorten(explicit)
    suptitle = fig._suptitle.get_text().strip() if getattr(fig, "_suptitle", None) else ""
    panels: list[str] = []
    images: list[str] = []
    for ax in fig.axes:
        if not ax.get_visible() or getattr(ax, "_colorbar", None) is not None:
            continue
        if not ax.has_data() and not ax.get_title() and ax not in _DESCRIPTIONS:
            continue  # an empty cell of a grid
        if ax.images and not ax.lines and ax not in _DESCRIPTIONS:
            images.append(" ".join(ax.get_title().split()))
            continue
        text = _axes_description(ax)
        if text and (not panels or panels[-1] != text):
            panels.append(text)
    if images:
        titled = [t for t in images if t]
        grid = f"{len(images)} image{'s' if len(images) > 1 else ''}"
        if titled:
            grid += " titled " + ", ".join(titled[:12]) + (", …" if len(titled) > 12 else "")
        panels.append(grid)
    head = f"Figure '{suptitle}'" if suptitle else "Figure"
    if not panels:
        return _shorten(head)
    return _shorten(f"{head}: " + "; ".join(panels))


def _with_alt_text(inner):
    """Wrap an IPython image formatter of matplotlib figures: same image, plus ``alt``."""
    def format_figure(fig, *args, **kwargs):
        data = inner(fig, *args, **kwargs)
        if data is None:
            return None
        metadata = {}
        if isinstance(data, tuple) and len(data) == 2:
            data, metadata = data[0], dict(data[1] or {})
        try:
            metadata.setdefault("alt", figure_description(fig))
        except Exception:  # a description must never hide the figure itself
            log.warning("could not describe a figure for its alt text", exc_info=True)
        return data, metadata

    format_figure.course_alt_text = True
    return format_figure


def _wrap_figure_formatters(shell) -> None:
    from matplotlib.figure import Figure

    for mime in ("image/png", "image/jpeg"):
        formatter = shell.display_formatter.formatters.get(mime)
        if formatter is None:
            continue
        try:
            current = formatter.lookup_by_type(Figure)
        except KeyError:
            continue  # the inline backend does not emit this format
        if not getattr(current, "course_alt_text", False):
            formatter.for_type(Figure, _with_alt_text(current))


def _start_backend() -> None:
    """Let pyplot load its backend now rather than on the first figure: the inline backend
    registers its figure formatters as it loads, and a figure shown with ``plt.show()`` in
    that same cell would otherwise go out before they are wrapped. Done only while no
    figure is open (switching backends closes figures)."""
    if "matplotlib.pyplot" not in sys.modules:
        return
    import matplotlib
    import matplotlib.pyplot as plt

    if not plt.get_fignums():
        plt.switch_backend(matplotlib.get_backend())


def enable_alt_text(shell=None) -> bool:
    """Attach :func:`figure_description` as ``alt`` metadata to every matplotlib figure an
    IPython kernel displays, from now on (the inline backend registers its formatters when
    it starts and again when its settings change, so this is checked before and after each
    cell). Returns ``False`` outside IPython."""
    if shell is None:
        if "IPython" not in sys.modules:
            return False
        from IPython import get_ipython

        shell = get_ipython()
    if shell is None or not hasattr(shell, "display_formatter"):
        return False
    _start_backend()
    _wrap_figure_formatters(shell)
    if not getattr(shell, "_course_alt_text_hook", False):
        # pyplot picks its backend lazily (on the first figure), and the inline backend shows
        # figures from its own post_execute hook: wrapping again in post_execute (registered
        # before the backend's) catches a backend that started during this very cell
        shell.events.register("pre_run_cell", lambda *_: _wrap_figure_formatters(shell))
        shell.events.register("post_execute", lambda *_: _wrap_figure_formatters(shell))
        shell._course_alt_text_hook = True
    return True


# --------------------------------------------------------------------------- training curves

def _records(h) -> list[dict]:
    if isinstance(h, History):
        return h.records
    if hasattr(h, "records"):  # a History-like object (e.g. loaded by another version)
        return list(h.records)
    if isinstance(h, dict) and "records" in h:
        return list(h["records"])
    raise TypeError(f"plot_history got {type(h).__name__}; pass a course_utils.history.History "
                    "(returned by course_utils.train.fit and the Keras helpers) or a list of them")


def _column(records, key) -> np.ndarray:
    return np.array([float(r.get(key, math.nan)) if r.get(key) is not None else math.nan
                     for r in records], dtype=float)


def plot_history(history, ax=None, metrics: Sequence[str] = ("loss", "acc"), *,
                 labels: Sequence[str] | None = None, mark_best: bool = True):
    """Training and validation curves per epoch, one panel per metric.

    ``history`` is a :class:`~course_utils.history.History` or a list of them (e.g. a
    PyTorch and a Keras run): each run gets one colour, training dashed and validation
    solid. ``metrics`` are ``"loss"``, ``"acc"`` (plotted as ``train_*`` and ``val_*``),
    ``"lr"`` or ``"seconds"``. ``ax`` is one Axes per metric (a single Axes for one metric).
    ``labels`` name the runs in the legend (default: the framework, or ``run i``).
    Returns a NumPy array of the Axes, one per metric.
    """
    import matplotlib.pyplot as plt

    histories = list(history) if isinstance(history, (list, tuple)) else [history]
    if not histories:
        raise ValueError("plot_history got an empty list of histories")
    runs = [_records(h) for h in histories]
    for i, r in enumerate(runs):
        if not r:
            raise ValueError(f"history {i} has no epochs: train for at least one epoch before plotting")
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    if not metrics:
        raise ValueError("metrics is empty: pass e.g. ('loss', 'acc')")
    if labels is None:
        fw = [getattr(h, "framework", None) for h in histories]
        if len(histories) == 1:
            labels = [""]
        elif all(fw) and len(set(fw)) == len(fw):
            labels = fw
        else:
            labels = [f"run {i + 1}" for i in range(len(histories))]
    elif len(labels) != len(histories):
        raise ValueError(f"{len(labels)} labels for {len(histories)} histories")

    if ax is None:
        _, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
        axes = axes.ravel()
    else:
        axes = np.atleast_1d(np.asarray(ax, dtype=object)).ravel()
        if len(axes) != len(metrics):
            raise ValueError(f"ax holds {len(axes)} Axes but metrics={metrics} needs {len(metrics)}")

    for a, metric in zip(axes, metrics):
        drawn = 0
        for recs, h, label in zip(runs, histories, labels):
            epochs = _column(recs, "epoch")
            prefix = f"{label} " if label else ""
            color = None
            if metric in ("lr", "seconds"):
                series = [(metric, _column(recs, metric), "-o")]
            else:
                series = [(f"{prefix}val", _column(recs, f"val_{metric}"), "-o"),
                          (f"{prefix}train", _column(recs, f"train_{metric}"), "--")]
            for name, values, style in series:
                if np.all(np.isnan(values)):
                    continue
                kw = {} if color is None else {"color": color}
                (line,) = a.plot(epochs, values, style, markersize=3, label=name.strip(), **kw)
                color = line.get_color()
                drawn += 1
            best = getattr(h, "best_epoch", None)
            if mark_best and best is not None and metric not in ("lr", "seconds"):
                a.axvline(best, color=color or "k", linestyle=":", linewidth=1,
                          label=f"{prefix}best epoch".strip())
        if drawn == 0:
            log.warning("plot_history: no run has values for metric %r", metric)
        a.set_title(_TITLES.get(metric, metric))
        runs_text = f" for {', '.join(l for l in labels if l)}" if any(labels) else ""
        describe(a, f"{_TITLES.get(metric, metric)} per epoch{runs_text}" + (
            "" if metric in ("lr", "seconds") else
            ", validation solid and training dashed, dotted line at the best epoch"))
        a.set_xlabel("epoch")
        a.set_ylabel(_TITLES.get(metric, metric))
        if metric == "lr":
            a.set_yscale("log")
        a.grid(True, alpha=0.3)
        if drawn:
            a.legend(fontsize="small")
    return axes


# --------------------------------------------------------------------------- confusion matrix

def plot_confusion_matrix(y_true, y_pred, classes: Sequence[str] | None = None, ax=None, *,
                          normalize: str | None = "true", cmap: str = "Blues",
                          values: bool | None = None, title: str | None = None):
    """Confusion matrix with true classes as rows and predictions as columns, drawn by
    scikit-learn's ``ConfusionMatrixDisplay``, which it returns (``.confusion_matrix``,
    ``.ax_``, ``.figure_``; ``.plot(ax=...)`` draws it again).

    ``y_pred`` may be labels or logits/probabilities (reduced with ``argmax``). ``normalize``
    is ``"true"`` (default: each row sums to 1, so the diagonal is per-class recall),
    ``"pred"`` (columns sum to 1: precision), ``"all"`` or ``None`` (counts). ``values``
    writes each cell's number (default: when there are at most 15 classes). The title
    defaults to the accuracy.
    """
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    y_true = _to_numpy(y_true).ravel()
    y_pred = _to_numpy(y_pred)
    if y_pred.ndim == 2:  # logits or probabilities
        y_pred = y_pred.argmax(axis=1)
    y_pred = y_pred.ravel()
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} labels but y_pred has {len(y_pred)}")
    if normalize not in (None, "true", "pred", "all"):
        raise ValueError(f"normalize={normalize!r}: use 'true', 'pred', 'all' or None")
    n = len(classes) if classes is not None else int(max(y_true.max(initial=0), y_pred.max(initial=0))) + 1
    if classes is not None and len(y_true) and max(y_true.max(), y_pred.max()) >= n:
        raise ValueError(f"labels go up to {int(max(y_true.max(), y_pred.max()))} but classes has "
                         f"{n} names; pass all class names")
    if ax is None:
        size = max(4.0, 0.55 * n + 2)
        _, ax = plt.subplots(figsize=(size, size * 0.9))
    # (scikit-learn turns the 0/0 of a class never seen into 0, not NaN)
    disp = ConfusionMatrixDisplay.from_predictions(
        y_true, y_pred, labels=np.arange(n),
        display_labels=list(classes) if classes is not None else None,
        normalize=normalize, cmap=cmap, ax=ax, xticks_rotation=45,
        include_values=n <= 15 if values is None else bool(values),
        values_format=".2f" if normalize else "d",
        im_kw={"vmin": 0, "vmax": 1} if normalize else None, colorbar=True)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    acc = float(np.mean(y_true == y_pred)) if len(y_true) else math.nan
    ax.set_title(title if title is not None else f"Confusion matrix (accuracy {acc:.1%})")
    describe(ax, f"{ax.get_title()}: {n} classes, true class in rows, predicted in columns"
             + (", rows sum to 1" if normalize == "true" else ""))
    return disp


# --------------------------------------------------------------------------- image grid

def _to_numpy(a) -> np.ndarray:
    if hasattr(a, "detach"):  # torch tensor
        a = a.detach().cpu().numpy()
    elif hasattr(a, "numpy") and not isinstance(a, np.ndarray):  # tf tensor
        a = a.numpy()
    return np.asarray(a)


def _displayable(images) -> np.ndarray:
    """NHW or NHWC array with values in [0, 1] (floats) or uint8."""
    x = _to_numpy(images)
    if x.ndim == 2:
        x = x[None]
    if x.ndim == 4 and x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3):
        x = x.transpose(0, 2, 3, 1)  # NCHW (PyTorch) -> NHWC
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] != 3):
        raise ValueError(f"images of shape {x.shape}: expected N×H×W, N×H×W×C or N×C×H×W with C in (1, 3)")
    if x.dtype == np.uint8:
        return x
    x = x.astype(np.float32)
    lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
    if lo < 0.0 or hi > 1.0:
        # normalised inputs (mean/std) or 0..255 floats: rescale each image to [0, 1] for display
        axes = tuple(range(1, x.ndim))
        mn, mx = x.min(axis=axes, keepdims=True), x.max(axis=axes, keepdims=True)
        x = (x - mn) / np.maximum(mx - mn, 1e-12)
    return x


def image_grid(images, labels=None, preds=None, classes: Sequence[str] | None = None, *,
               ncols: int = 8, max_images: int | None = 64, fig=None, axes=None,
               cmap: str = "gray", title: str | None = None):
    """Show images in a grid with their labels, and predictions coloured right or wrong.

    ``images``: N×H×W, N×H×W×C or N×C×H×W (NumPy, PyTorch or TensorFlow; normalised floats
    are rescaled for display). With ``preds`` (labels, or logits N×K) each title reads
    ``"pred (true label)"`` in green when right and red when wrong; with ``labels`` only,
    the title is the label. ``fig`` or ``axes`` (at least as many as images) let you draw
    into an existing figure. Returns the array of Axes used (one per image).
    """
    import matplotlib.pyplot as plt

    x = _displayable(images)
    n = len(x) if max_images is None else min(len(x), int(max_images))
    if n == 0:
        raise ValueError("image_grid got no images")
    x = x[:n]
    y = None if labels is None else _to_numpy(labels).ravel()[:n]
    p = None
    if preds is not None:
        p = _to_numpy(preds)
        p = (p.argmax(axis=1) if p.ndim == 2 else p.ravel())[:n]
    for name, arr in (("labels", y), ("preds", p)):
        if arr is not None and len(arr) < n:
            raise ValueError(f"{name} has {len(arr)} entries for {n} images")
    if ncols < 1:
        raise ValueError(f"ncols={ncols}: use a positive number of columns")
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    if axes is None:
        if fig is None:
            fig = plt.figure(figsize=(1.6 * ncols, 1.9 * nrows))
        axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False), dtype=object).ravel()
    else:
        axes = np.atleast_1d(np.asarray(axes, dtype=object)).ravel()
        if len(axes) < n:
            raise ValueError(f"axes holds {len(axes)} Axes for {n} images")

    def name(k):
        k = int(k)
        return classes[k] if classes is not None and 0 <= k < len(classes) else str(k)

    for i, a in enumerate(axes):
        a.set_axis_off()
        if i >= n:
            continue
        a.imshow(x[i], cmap=cmap if x[i].ndim == 2 else None,
                 vmin=0, vmax=255 if x.dtype == np.uint8 else 1)
        if p is not None:
            text = name(p[i]) if y is None else f"{name(p[i])}\n({name(y[i])})"
            color = "black" if y is None else (RIGHT_COLOR if p[i] == y[i] else WRONG_COLOR)
            a.set_title(text, color=color, fontsize="small")
        elif y is not None:
            a.set_title(name(y[i]), fontsize="small")
    if title:
        axes[0].figure.suptitle(title)
    if p is not None and y is not None:
        wrong = int(np.sum(p != y))
        describe(axes[0], f"{n} images, each titled with its prediction and, in brackets, its "
                 f"true label ({n - wrong} right in green, {wrong} wrong in red)")
        for a in axes[1:n]:
            describe(a, _DESCRIPTIONS[axes[0]])  # one sentence for the grid, not one per image
    return axes[:n]


enable_alt_text()
