"""A target's scores on a labelled data folder: the positive class against the rest at 0.5, and
top-1 accuracy for a model of more than two classes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from onepixel.data.errors import DataError
from onepixel.data.labels import LabelMap
from onepixel.data.open import OpenedData, evaluation_choice, open_for_model
from onepixel.models.metrics import binary_metrics
from onepixel.targets.base import Target


def evaluation_data(
    target: Target,
    root: str | Path,
    split: str,
    *,
    label_map: LabelMap | None = None,
    resize: bool = False,
    skip_bad: bool = False,
) -> OpenedData:
    """Return the images to evaluate ``target`` on: an AMi-Br split, a split folder of ``root``, or
    the whole folder (see :func:`~onepixel.data.open.evaluation_choice`), fitted to the target.
    Raises :class:`DataError` when the target's positive label is not among the data's."""
    positive = target.info.positive
    chosen, named = evaluation_choice(root, split, positive, label_map)
    opened = open_for_model(
        root,
        chosen,
        input_size=target.info.input_size,
        labels=target.info.labels,
        positive=named,
        label_map=label_map,
        resize=resize,
        skip_bad=skip_bad,
    )
    if positive not in opened.patches.classes:
        raise DataError(
            f"the model's positive label {positive!r} is not among the data's labels "
            f"{opened.patches.classes}",
            settings=("label_map",),
        )
    return opened


def evaluate_target(
    target: Target,
    root: str | Path,
    split: str,
    *,
    label_map: LabelMap | None = None,
    resize: bool = False,
    skip_bad: bool = False,
) -> tuple[dict[str, Any], OpenedData]:
    """Return ``(metrics, opened data)`` of ``target`` on ``split`` of the data at ``root``: the
    binary metrics of the positive class against the rest at 0.5 (:func:`binary_metrics`), plus
    ``top1_accuracy`` for more than two classes, ``model`` and ``split`` (None: a plain folder
    scored whole)."""
    opened = evaluation_data(target, root, split, label_map=label_map, resize=resize, skip_bad=skip_bad)
    data = opened.patches
    y = (data.labels == data.classes.index(target.info.positive)).astype(np.int64)
    result: dict[str, Any] = dict(binary_metrics(y, target.predict(data.images)))
    if len(target.info.labels) > 2:
        predicted = target.predict_proba(data.images).argmax(axis=1)
        result["top1_accuracy"] = float(np.mean(predicted == data.labels))
    return {**result, "model": target.info.name, "split": opened.split}, opened


__all__ = ["evaluate_target", "evaluation_data"]
