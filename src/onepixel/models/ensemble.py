"""Combine trained classifiers into one model whose logit is the mean of theirs (``logit_mean``).

For models trained on views (the certified defence's base), each view is scored by every member
and still casts one vote, so the certificate is unchanged while the vote is steadier. The
ensemble's vote threshold is tuned again on the members' own validation split (whole slides held
out from their training, found from their stored settings), and its metrics and model card are
written like a trained model's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from onepixel.data.patches import DataError, center_crop
from onepixel.models.logit_mean import LogitMean, members_spec
from onepixel.models.metrics import binary_metrics
from onepixel.models.registry import ModelMeta, load_model, save_model
from onepixel.models.train import (
    TrainConfig,
    _train_val_sets,
    fold_vote_threshold,
    git_commit,
    validation_scores,
)

SHARED = ("input_size", "classes", "positive")


def load_members(sources: list[str]) -> tuple[list[nn.Module], list[ModelMeta]]:
    """Return the members' models and metadata; DataError (naming the file) when they differ in
    input size, classes, positive label, view stride or validation split."""
    if len(sources) < 2:
        raise DataError("an ensemble needs at least two weights files", settings=("weights",))
    models, metas = zip(*(load_model(s) for s in sources), strict=True)
    first = metas[0]
    for source, meta in zip(sources[1:], metas[1:], strict=True):
        for key in SHARED:
            if getattr(meta, key) != getattr(first, key):
                mine, theirs = getattr(meta, key), getattr(first, key)
                raise DataError(
                    f"{source}: {key} {mine!r} differs from {sources[0]}'s {theirs!r}", settings=("weights",)
                )
        if _stride(meta) != _stride(first) or _split_settings(meta) != _split_settings(first):
            raise DataError(
                f"{source} was trained on other views or another validation split than {sources[0]}",
                settings=("weights",),
            )
    return list(models), list(metas)


def _stride(meta: ModelMeta) -> int:
    return int((meta.info.get("views") or {}).get("stride", 1))


def _split_settings(meta: ModelMeta) -> tuple[Any, ...]:
    training = meta.info.get("training", {})
    return training.get("val_fraction"), training.get("seed"), training.get("size")


def combine(models: list[nn.Module], metas: list[ModelMeta], name: str) -> tuple[LogitMean, ModelMeta]:
    """Return the ``logit_mean`` ensemble of ``models`` (their weights copied) and its metadata
    (members' names, commands and scores in ``info["members"]``)."""
    ensemble = LogitMean(models).eval()
    first = metas[0]
    info: dict[str, Any] = {
        "data": first.info.get("data", {}),
        "members": [
            {
                "name": m.name,
                "command": m.info.get("command"),
                "validation": m.info.get("validation"),
                "test": m.info.get("test"),
                "vote_threshold": (m.info.get("views") or {}).get("vote_threshold"),
            }
            for m in metas
        ],
        "training": {k: first.info.get("training", {}).get(k) for k in ("val_fraction", "seed", "size")},
        "torch": torch.__version__,
        "code_commit": git_commit(),
    }
    if "views" in first.info:
        info["views"] = {k: first.info["views"][k] for k in ("stride", "input_size", "view_size")}
    meta = ModelMeta(
        name=name,
        arch="logit_mean",
        classes=first.classes,
        positive=first.positive,
        input_size=first.input_size,
        arch_kwargs={"members": members_spec(metas)},
        info=info,
    )
    return ensemble, meta


def ensemble_on_data(
    root: str | Path, sources: list[str], out: str | Path, *, name: str, command: str | None = None
) -> tuple[Path, ModelMeta]:
    """Combine the weights ``sources``, tune a view ensemble's vote threshold on the members'
    validation split of ``root``, score it (and AMi-Br's test split), save; return ``(path, meta)``."""
    from onepixel.data.open import open_patches

    models, metas = load_members(sources)
    ensemble, meta = combine(models, metas, name)
    training, stride = meta.info["training"], _stride(meta)
    cfg = TrainConfig(
        val_fraction=training["val_fraction"] or 0.15,
        seed=training["seed"] or 0,
        size=training["size"] or meta.info.get("views", {}).get("input_size", 64),
        views=stride,
    )
    opened = open_patches(root, None, input_size=None, positive=metas[0].positive, amibr_split="train")
    _, val = _train_val_sets(opened.patches, None, cfg)
    val_images = center_crop(val.images, cfg.size)
    if stride > 1 and 0 < int(val.y.sum()) < len(val.y):
        meta.info["views"]["vote_threshold"] = fold_vote_threshold(
            ensemble, val_images, val.y, stride, meta.input_size
        )
    meta.info["validation"] = binary_metrics(
        val.y, validation_scores(ensemble, val_images, cfg, meta.input_size)
    )
    if opened.layout == "amibr":
        test = open_patches(opened.root, "test").patches
        test_images = center_crop(test.images, cfg.size)
        meta.info["test"] = binary_metrics(
            test.y, validation_scores(ensemble, test_images, cfg, meta.input_size)
        )
    meta.info["command"] = command
    return save_model(ensemble, meta, out), meta


def ensemble_card(meta: ModelMeta, certified: dict[str, Any] | None = None) -> str:
    """Return a Markdown model card for a ``logit_mean`` ensemble built from its metadata (and,
    for view models, ``onepixel certify --json``'s output)."""
    from onepixel.models.train import scores_section, views_section

    info = meta.info
    lines = [
        f"# {meta.name}",
        "",
        f"`logit_mean` of {len(info['members'])} classifiers ({meta.input_size}x{meta.input_size} RGB input; "
        f"score = sigmoid of the members' mean logit = probability of `{meta.positive}`).",
        f"Classes: {', '.join(meta.classes)}; positive: `{meta.positive}`.",
        "",
        "## Members",
        "",
        "| member | validation ROC AUC | test ROC AUC | command |",
        "|---|---|---|---|",
    ]
    for m in info["members"]:
        val, test = (m.get(part) or {} for part in ("validation", "test"))
        auc = " | ".join(f"{d.get('roc_auc', float('nan')):.4f}" for d in (val, test))
        lines.append(f"| `{m['name']}` | {auc} | `{m.get('command')}` |")
    lines += [
        "",
        f"Combined with: `{info.get('command')}` (code commit {info.get('code_commit')}).",
        "",
        *scores_section(info),
        "",
    ]
    if "views" in info:
        lines += ["Scores of the mean view score.", "", *views_section(meta, certified)]
    return "\n".join(lines)


__all__ = ["combine", "ensemble_card", "ensemble_on_data", "load_members"]
