"""Model zoo and fine-tuning toolkit (PyTorch).

``create_model(name, weights=..., num_classes=...)`` builds any registered model
(``small_cnn``, ``efficientnet_lite0``, ``resnet18``, ``vgg16``, ``mobilenet_v2``);
``layer_groups(model)`` lists its groups from input to output. The toolkit
(``replace_head``, ``freeze``/``unfreeze``, ``summary``, ``param_groups``,
``load_matching_state_dict``) works from those groups for every model.
"""
from course_utils.models.efficientnet_lite import EfficientNetLite, efficientnet_lite0
from course_utils.models.finetune import (FrozenBatchNorm2d, LoadResult, ModelSummary, freeze,
                                          frozen_groups, is_frozen_bn, load_matching_state_dict,
                                          param_groups, replace_head, summary, unfreeze,
                                          unwrap_model)
from course_utils.models.imagenet import EvalTransform, imagenet_categories, topk_labels
from course_utils.models.registry import (ModelSpec, Weights, create_model, get_model_weights,
                                          get_spec, layer_groups, list_models)
from course_utils.models.small_cnn import SMALL_CNN_LAYOUT, SmallCNN
from course_utils.models.torchvision_zoo import WeightsUnavailableError, hub_checkpoint_path
from course_utils.models import zoo as _zoo  # noqa: F401,E402 - registers the models (once, here)

__all__ = ["EfficientNetLite", "efficientnet_lite0", "EvalTransform", "imagenet_categories",
           "topk_labels", "ModelSpec", "Weights", "create_model", "get_model_weights", "get_spec", "layer_groups",
           "list_models", "SmallCNN", "SMALL_CNN_LAYOUT", "WeightsUnavailableError",
           "hub_checkpoint_path", "replace_head", "freeze", "unfreeze", "frozen_groups",
           "is_frozen_bn", "FrozenBatchNorm2d", "summary", "ModelSummary", "param_groups",
           "load_matching_state_dict", "LoadResult", "unwrap_model"]
