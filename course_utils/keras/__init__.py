"""Keras 3 (TensorFlow backend) counterparts of the course toolkit.

Same model names, weights names (``IMAGENET1K_V1``, ``DEFAULT``) and layer groups as
``course_utils.models``, the same ImageNet weights for EfficientNet-Lite0 (converted from the
PyTorch package; logits agree to 1e-4), the same ``History`` records as
``course_utils.train.fit``, the same feature cache (``course_utils.feature_cache``) and the
same ``learning_curve``, so a notebook can put a PyTorch run and a Keras run on one plot.
``tests/test_twins.py`` holds the two halves to one contract.

Importing this package sets ``KERAS_BACKEND=tensorflow`` (unless already set) and imports
TensorFlow, which takes several seconds; PyTorch-only notebooks never import it. It loads
Triton (PyTorch's compiler, when installed) *before* TensorFlow: the other order crashes
the interpreter as soon as torchvision is imported. Import it before ``keras`` or
``tensorflow`` in a notebook that uses both frameworks.

Two Keras 3 pitfalls the helpers handle and the tests pin down: ``base(x, training=False)``
recorded in a functional model is overridden by ``fit``'s ``training=True`` (hence
:class:`CallWithTraining`), and ``trainable`` changes need a new ``compile()`` (hence
:func:`unfreeze_top` recompiling and :func:`fit` refusing a stale compile).
"""
from course_utils.errors import NonFiniteLossError
from course_utils.keras._backend import keras, tf
from course_utils.keras.curves import learning_curve, train_and_score
from course_utils.keras.distribute import configure_cpu_devices, mirrored_strategy
from course_utils.keras.efficientnet_lite import EfficientNetLite0
from course_utils.keras.features import extract_features, feature_model
from course_utils.keras.models import (KerasModelSpec, KerasWeights, PretrainedWeightsUnavailable,
                                       create_model, get_model_weights, get_spec, layer_groups,
                                       list_models, preprocess_input)
from course_utils.keras.pipeline import TFLoader
from course_utils.keras.training import (RecompileNeeded, compile_model, evaluate, fit, predict,
                                         seed_everything)
from course_utils.keras.transfer import (CallWithTraining, build_transfer_model, copy_weights,
                                         freeze_base, get_base, layer_table,
                                         normalization_layer, unfreeze_top)

__all__ = ["keras", "tf", "create_model", "list_models", "get_spec", "get_model_weights",
           "layer_groups", "preprocess_input", "KerasModelSpec", "KerasWeights",
           "PretrainedWeightsUnavailable",
           "EfficientNetLite0", "TFLoader", "compile_model", "fit", "evaluate", "predict", "NonFiniteLossError",
           "seed_everything", "RecompileNeeded", "CallWithTraining", "build_transfer_model", "get_base",
           "freeze_base", "unfreeze_top", "layer_table", "normalization_layer", "copy_weights",
           "extract_features", "feature_model", "train_and_score", "learning_curve",
           "configure_cpu_devices", "mirrored_strategy"]
