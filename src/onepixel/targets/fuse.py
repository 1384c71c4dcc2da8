"""Inference-only rebuild of ``ResNetCustom`` with batch norms folded into convolutions.

In a pre-activation bottleneck the batch norms that follow a convolution whose output feeds
nothing else can be folded into that convolution (``BN(conv(x)) = conv'(x) + b'``):

- ``conv1 -> bn2`` and ``conv2 -> bn3`` in every block;
- the stem conv -> ``bn1`` of the first block, because that block has a projection shortcut,
  so the raw stem output is used only through ``bn1``.

The other ``bn1``s and the final ``bn`` sit after a residual sum that is also passed on raw
(identity shortcut), so they stay batch norms. Folding needs nothing from padding: every
folded BN follows its conv, and zero padding happens on the conv's input. 3x3 stride-1 convs
use the conv's own symmetric padding (TF 'same' is symmetric there); the stride-2 stem keeps
TF's bottom/right padding. Input normalisation is done while converting from uint8.
A ``logit_mean`` ensemble of such models is fused member by member; members of one architecture
then run side by side as one network (:class:`SideBySide`: every layer's convolutions stacked as
groups, member m owning group m): fewer, larger operations, so the bundled view pair certifies
at 3.6x a bare pass instead of 4.5x as two networks, each at its fastest chunk on one thread
(``benchmarks/results/certify_cost_final_t1.json``, ``certify_cost_warm_t1_before.json``).
Members that differ stay a ``LogitMean`` of fused members.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from onepixel.models.logit_mean import LogitMean
from onepixel.models.resnet_custom import PreActBottleneck, ResNetCustom


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d, *, padding: int = 0) -> nn.Conv2d:
    """Return a new conv (with bias) that computes ``bn(conv(x))`` of the eval-mode ``bn``."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var.detach() + bn.eps)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=padding,
        bias=True,
    )
    with torch.no_grad():
        fused.weight.copy_(conv.weight.detach() * scale.reshape(-1, 1, 1, 1))
        fused.bias.copy_((bias - bn.running_mean.detach()) * scale + bn.bias.detach())
    return fused


def plain_conv(conv: nn.Conv2d, *, padding: int = 0) -> nn.Conv2d:
    """Return a copy of ``conv`` as a plain ``nn.Conv2d`` with symmetric ``padding``."""
    out = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=padding,
        bias=conv.bias is not None,
    )
    out.load_state_dict(conv.state_dict())
    return out


class FusedBlock(nn.Module):
    """A :class:`PreActBottleneck` with ``bn2``/``bn3`` folded (and ``bn1`` when ``pre_folded``)."""

    def __init__(self, block: PreActBottleneck, *, pre_folded: bool):
        super().__init__()
        self.bn1 = None if pre_folded else block.bn1
        self.conv1 = fold_bn(block.conv1, block.bn2)
        self.conv2 = fold_bn(block.conv2, block.bn3, padding=1)
        self.conv3 = plain_conv(block.conv3)
        self.shortcut = plain_conv(block.shortcut) if block.shortcut is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the block output for ``x``."""
        pre = F.relu(x if self.bn1 is None else self.bn1(x))
        residual = self.shortcut(pre) if self.shortcut is not None else x
        out = F.relu(self.conv1(pre))
        out = F.relu(self.conv2(out))
        return self.conv3(out).add_(residual)


class FusedResNet(nn.Module):
    """Inference-only ``ResNetCustom``: takes inputs already normalised to [-1, 1]."""

    def __init__(self, model: ResNetCustom, input_size: int = 64):
        super().__init__()
        model = model.eval()
        blocks = list(model.stages)
        first = blocks[0]
        # The stem output is read only by the first block's bn1 when that block projects.
        fold_stem = first.shortcut is not None
        self.stem = fold_bn(model.stem, first.bn1) if fold_stem else plain_conv(model.stem)
        self.stages = nn.Sequential(
            *[FusedBlock(b, pre_folded=fold_stem and i == 0) for i, b in enumerate(blocks)]
        )
        self.bn = model.bn
        self.head = model.head
        self.stem_pad = _stem_padding(model.stem, input_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return one logit per image for ``x`` (N, 3, H, W) normalised to [-1, 1]."""
        x = self.stem(F.pad(x, self.stem_pad))
        x = self.stages(x)
        x = F.relu(self.bn(x))
        return self.head(x.mean((2, 3), keepdim=True)).flatten()


class SideBySide(nn.Module):
    """Fused members of one architecture computed as one network: every convolution of the first
    member's layout holds all members' filters as groups (the stem, reading the shared image, stacks
    them as plain output channels), every batch norm all members' channels, and the head one logit
    per member. Returns the mean of the members' logits, as :class:`LogitMean` does."""

    def __init__(self, members: list[FusedResNet]):
        super().__init__()
        self.net = copy.deepcopy(members[0])
        self.n_members = len(members)
        layers = [dict(m.named_modules()) for m in members]
        for name, module in list(self.net.named_modules()):
            if isinstance(module, (nn.Conv2d, nn.BatchNorm2d)):
                stacked = _stack([layer[name] for layer in layers], shared_input=name == "stem")
                parent, _, attr = name.rpartition(".")
                setattr(self.net.get_submodule(parent) if parent else self.net, attr, stacked)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the mean of the members' logits (N,) for ``x`` normalised to [-1, 1]."""
        return self.net(x).reshape(-1, self.n_members).mean(dim=1)


def _stack(layers: list[nn.Module], *, shared_input: bool) -> nn.Module:
    """Return one layer that computes every member's ``layers`` side by side on stacked channels."""
    first = layers[0]
    if isinstance(first, nn.BatchNorm2d):
        bn = nn.BatchNorm2d(first.num_features * len(layers), eps=first.eps)
        for key in ("weight", "bias", "running_mean", "running_var"):
            getattr(bn, key).data.copy_(torch.cat([getattr(layer, key).detach() for layer in layers]))
        return bn.eval()
    assert isinstance(first, nn.Conv2d) and first.groups == 1
    groups = 1 if shared_input else len(layers)
    conv = nn.Conv2d(
        first.in_channels * (1 if shared_input else len(layers)),
        first.out_channels * len(layers),
        first.kernel_size,
        stride=first.stride,
        padding=first.padding,
        groups=groups,
        bias=any(layer.bias is not None for layer in layers),
    )
    with torch.no_grad():
        conv.weight.copy_(torch.cat([layer.weight.detach() for layer in layers]))
        if conv.bias is not None:
            zeros = torch.zeros(first.out_channels)
            conv.bias.copy_(torch.cat([zeros if m.bias is None else m.bias.detach() for m in layers]))
    return conv


def _same_layout(models: list[nn.Module]) -> bool:
    """Return True when ``models`` have the same layers, types and parameter shapes, name by name."""

    def layout(model: nn.Module) -> list[tuple[str, str, tuple[int, ...]]]:
        return [
            (
                n,
                type(m).__name__,
                tuple(m.weight.shape) if hasattr(m, "weight") and m.weight is not None else (),
            )
            for n, m in model.named_modules()
        ]

    return all(layout(m) == layout(models[0]) for m in models[1:])


def _stem_padding(conv: nn.Conv2d, size: int) -> tuple[int, int, int, int]:
    """Return the TF 'same' (left, right, top, bottom) padding of the stem at ``size`` input."""
    k, s = conv.kernel_size[0], conv.stride[0]
    pad = max((-(-size // s) - 1) * s + k - size, 0)
    return (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2)


def _fusable_resnet(model: nn.Module) -> bool:
    return isinstance(model, ResNetCustom) and all(isinstance(b, PreActBottleneck) for b in model.stages)


def can_fuse(model: nn.Module) -> bool:
    """Return True when ``model`` is a :class:`ResNetCustom` that :class:`FusedResNet` rebuilds, or
    a :class:`LogitMean` of them."""
    if isinstance(model, LogitMean):
        return all(_fusable_resnet(m) for m in model.members)
    return _fusable_resnet(model)


def fuse(model: nn.Module, input_size: int = 64) -> FusedResNet | SideBySide | LogitMean:
    """Return the BN-folded inference copy of a ``ResNetCustom`` for ``input_size`` inputs; of a
    ``LogitMean`` of them, a :class:`SideBySide` network when the members share one architecture,
    else a ``LogitMean`` of the fused members."""
    if not can_fuse(model):
        raise TypeError(
            f"cannot fuse {type(model).__name__}: only ResNetCustom (or a mean of them) is supported"
        )
    if isinstance(model, LogitMean):
        members = [FusedResNet(m, input_size) for m in model.members]
        fused: nn.Module = (SideBySide(members) if _same_layout(members) else LogitMean(members)).eval()
    else:
        fused = FusedResNet(model, input_size).eval()
    for p in fused.parameters():
        p.requires_grad_(False)
    return fused  # type: ignore[return-value]
