"""Black-box targets: in-process models, MAX-style HTTP endpoints, guarded pipelines."""

from onepixel.targets.base import Target, TargetError, TargetInfo, check_batch
from onepixel.targets.factory import open_target
from onepixel.targets.http import HttpTarget
from onepixel.targets.local import TorchTarget

__all__ = ["HttpTarget", "Target", "TargetError", "TargetInfo", "TorchTarget", "check_batch", "open_target"]
