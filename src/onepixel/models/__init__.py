"""Classifiers: architectures by name, bundled weights, training."""

from onepixel.models.registry import (
    DEFAULT_MODEL,
    ModelMeta,
    create_model,
    list_architectures,
    list_pretrained,
    load_model,
    read_meta,
    save_model,
)

__all__ = [
    "DEFAULT_MODEL",
    "ModelMeta",
    "create_model",
    "list_architectures",
    "list_pretrained",
    "load_model",
    "read_meta",
    "save_model",
]
