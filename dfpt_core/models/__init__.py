"""The model zoo: CIFAR teachers and students (checkpoint-compatible with RepDistiller and
mdistiller), torchvision ResNets with a CIFAR or ImageNet stem, and the stage interface."""

# Registration order is the listing order of list_models(): CIFAR ResNets, WRNs, VGGs, the
# four-stage ResNets, the mobile students, torchvision models.
from . import resnet_cifar, wrn, vgg, resnet_4stage, mobilenetv2, shufflenet  # noqa: F401, I001
from . import tv_resnet, tv_mobilenet  # noqa: F401, I001
from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from .profile import count_flops, count_macs, count_params
from .registry import create_model, list_models, register
from .stages import Boundary, MissingStageSpecError, Stages, StageSpec, get_stage_spec

__all__ = [
    "Boundary",
    "CheckpointError",
    "MissingStageSpecError",
    "StageSpec",
    "Stages",
    "count_flops",
    "count_macs",
    "count_params",
    "create_model",
    "get_stage_spec",
    "list_models",
    "load_checkpoint",
    "read_checkpoint",
    "register",
    "save_checkpoint",
]
