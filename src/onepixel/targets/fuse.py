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
A ``logit_mean`` ensemble of such models is fused member by member (a ``LogitMean`` of the
fused members).
"""

from __future__ import annotations

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


def fuse(model: nn.Module, input_size: int = 64) -> FusedResNet | LogitMean:
    """Return the BN-folded inference copy of a ``ResNetCustom`` (or of a ``LogitMean`` of them)
    for ``input_size`` inputs."""
    if not can_fuse(model):
        raise TypeError(
            f"cannot fuse {type(model).__name__}: only ResNetCustom (or a mean of them) is supported"
        )
    if isinstance(model, LogitMean):
        fused: nn.Module = LogitMean([FusedResNet(m, input_size) for m in model.members]).eval()
    else:
        fused = FusedResNet(model, input_size).eval()
    for p in fused.parameters():
        p.requires_grad_(False)
    return fused  # type: ignore[return-value]
