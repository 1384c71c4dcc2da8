"""An ensemble that is one model: the mean of its members' logits (:class:`LogitMean`).

Its score is ``sigmoid(mean of the members' logits)``. Registered as the architecture
``logit_mean`` with ``members`` = ``[{"arch": ..., "kwargs": {...}}, ...]``, so its weights load by
name like any other model; every member takes the same input.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class LogitMean(nn.Module):
    """Members' logits (N,) averaged (the registry's ``logit_mean`` builds the members by name)."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the mean of the members' logits for ``x`` (N, 3, H, W) in [0, 1]."""
        return torch.stack([member(x) for member in self.members]).mean(dim=0)


@torch.no_grad()
def shift_logit(model: nn.Module, delta: float) -> None:
    """Add ``delta`` to ``model``'s output logit: to its ``head``'s bias, or for a
    :class:`LogitMean` to every member's (the mean moves by ``delta``). Raises TypeError for a model
    with neither."""
    if isinstance(model, LogitMean):
        for member in model.members:
            shift_logit(member, delta)
        return
    head = getattr(model, "head", None)
    if head is None or getattr(head, "bias", None) is None:
        raise TypeError(f"cannot shift the logit of a {type(model).__name__}: no head with a bias")
    head.bias += delta


def members_spec(metas: list[Any]) -> list[dict[str, Any]]:
    """Return the ``members`` argument of ``logit_mean`` for members with these metadata."""
    return [{"arch": m.arch, "kwargs": dict(m.arch_kwargs)} for m in metas]


__all__ = ["LogitMean", "members_spec", "shift_logit"]
