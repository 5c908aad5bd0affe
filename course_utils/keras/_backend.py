"""Import Keras on the TensorFlow backend, quietly, and say so clearly when that is not possible.

Every module of ``course_utils.keras`` imports ``keras`` from here. Keras reads
``KERAS_BACKEND`` once, when it is first imported, so the variable is set before that
(unless the user chose a backend already, in which case we check it is TensorFlow: the
course's callbacks, ``tf.data`` pipelines and distribution strategies need it).
"""
from __future__ import annotations

import importlib.util
import logging
import os
import sys
import warnings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# TensorFlow and Triton (pulled in by torch._dynamo, which torchvision imports) both carry
# LLVM; loading Triton's library after TensorFlow's crashes the interpreter with a
# segmentation fault. Loaded first, both work, so a notebook can use both frameworks.
# (If TensorFlow is already loaded, importing Triton now would be the crash, so we only warn.)
if "tensorflow" not in sys.modules:
    try:  # pragma: no cover - depends on the torch build (CUDA wheels ship Triton)
        import triton  # noqa: F401,E402
    except ImportError:  # pragma: no cover
        pass
elif "triton" not in sys.modules and importlib.util.find_spec("triton") is not None:  # pragma: no cover
    logging.getLogger(__name__).warning(
        "TensorFlow was imported before Triton (torch's compiler): importing torchvision or "
        "torch._dynamo in this process will now crash with a segmentation fault. Import "
        "course_utils.keras (or torchvision) before tensorflow/keras, e.g. first in the notebook.")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

__all__ = ["keras", "tf", "save_weights"]

if keras.backend.backend() != "tensorflow":  # pragma: no cover - depends on the user's environment
    raise ImportError(
        f"course_utils.keras needs Keras on the TensorFlow backend, but Keras was loaded with "
        f"backend {keras.backend.backend()!r} (KERAS_BACKEND={os.environ.get('KERAS_BACKEND')!r}). "
        "Set KERAS_BACKEND=tensorflow before Python imports keras (restart the kernel).")


def save_weights(model, path) -> None:
    """``model.save_weights(path)`` without the DeprecationWarning per tensor that Keras 3
    emits under NumPy 2 (``np.array(variable)`` inside Keras; harmless, but hundreds of
    lines in a notebook)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="__array__ implementation doesn't accept a copy",
                                category=DeprecationWarning)
        model.save_weights(str(path))
