"""Model zoo and fine-tuning toolkit (PyTorch).

``create_model(name, weights=..., num_classes=...)`` builds any registered model;
``layer_groups(model)`` lists its groups from input to output.
"""
from course_utils.models.efficientnet_lite import EfficientNetLite, efficientnet_lite0
from course_utils.models.imagenet import EvalTransform, imagenet_categories, topk_labels
from course_utils.models.registry import (ModelSpec, Weights, create_model, get_spec,
                                          layer_groups, list_models)

__all__ = ["EfficientNetLite", "efficientnet_lite0", "EvalTransform", "imagenet_categories",
           "topk_labels", "ModelSpec", "Weights", "create_model", "get_spec", "layer_groups",
           "list_models"]
