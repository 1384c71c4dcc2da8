"""In-process target: a PyTorch classifier behind the black-box interface."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from onepixel.models.registry import DEFAULT_MODEL, ModelMeta, load_model
from onepixel.targets.base import Target, TargetInfo


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """Return uint8 NHWC images as a float32 NCHW tensor in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


class TorchTarget(Target):
    """Scores images with an in-process ``nn.Module`` that returns one logit per image."""

    def __init__(self, model: nn.Module, meta: ModelMeta, batch_size: int = 512):
        super().__init__()
        self.model = model.eval()
        self.meta = meta
        self.batch_size = batch_size
        self.info = TargetInfo(
            name=meta.name,
            positive=meta.positive,
            negative=meta.negative,
            input_size=meta.input_size,
        )

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = DEFAULT_MODEL, **kwargs) -> TorchTarget:
        """Return a target for bundled weights (by name) or a ``.safetensors`` file."""
        model, meta = load_model(name_or_path)
        return cls(model, meta, **kwargs)

    @torch.inference_mode()
    def _predict(self, images: np.ndarray) -> np.ndarray:
        return torch.sigmoid(self.model(to_tensor(images))).double().numpy()
