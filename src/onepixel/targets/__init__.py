"""Black-box targets: in-process models, MAX-style HTTP endpoints, guarded pipelines."""

from onepixel.targets.base import Target, TargetError, TargetInfo, check_batch
from onepixel.targets.local import TorchTarget

__all__ = ["Target", "TargetError", "TargetInfo", "TorchTarget", "check_batch"]
