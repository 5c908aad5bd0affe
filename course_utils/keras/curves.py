"""Learning curves for Keras models through the framework-agnostic ``course_utils.curves``.

``course_utils.curves.learning_curve`` takes a ``train_and_score(x_train, y_train, x_val,
y_val, seed) -> (train_error, val_error)`` callable; :func:`train_and_score` builds one that
trains a fresh Keras model with :func:`course_utils.keras.fit`, so the result is a
``LearningCurveResult`` like the PyTorch one and ``LearningCurveDisplay`` can draw both on
one axis.

``learning_curve`` here *is* ``course_utils.curves.learning_curve`` (re-exported, so the
twins cannot drift): its first argument is a ``train_and_score`` callable on both sides. In
Keras, make one with ``learning_curve(train_and_score(build_model, epochs=...), x, y, ...)``.
"""
from __future__ import annotations

import inspect
from typing import Callable

from course_utils.curves import learning_curve
from course_utils.keras.pipeline import TFLoader
from course_utils.keras.training import evaluate, fit, seed_everything

__all__ = ["train_and_score", "learning_curve"]


def train_and_score(build_model: Callable, *, epochs: int = 5, lr: float = 1e-3,
                    optimizer="adam", batch_size: int = 32, size: int | None = None,
                    rgb: bool = False, mean=None, std=None, progress: bool = False) -> Callable:
    """A ``train_and_score`` callable for ``course_utils.curves.learning_curve``.

    ``build_model()`` (or ``build_model(seed)``) returns a fresh Keras model for one run; it
    is called after seeding with the run's seed, so the initial weights follow the seed too.
    Images are fed through :class:`TFLoader` with ``size``/``rgb``/``mean``/``std``. Errors
    are ``1 - accuracy`` on the training subset (evaluated after training, no dropout) and
    on the validation set.
    """
    takes_seed = len(inspect.signature(build_model).parameters) > 0

    def run(x_train, y_train, x_val, y_val, seed):
        seed_everything(seed)
        model = build_model(seed) if takes_seed else build_model()
        kw = dict(size=size, rgb=rgb, mean=mean, std=std)
        train = TFLoader(x_train, y_train, batch_size, shuffle=True, seed=seed, **kw)
        fit(model, train, epochs=epochs, lr=lr, optimizer=optimizer, seed=seed, progress=progress)
        tr = evaluate(model, TFLoader(x_train, y_train, 256, **kw))["acc"]
        va = evaluate(model, TFLoader(x_val, y_val, 256, **kw))["acc"]
        return 1.0 - tr, 1.0 - va

    run.__name__ = f"keras_train_and_score[{getattr(build_model, '__name__', 'model')}]"
    return run
