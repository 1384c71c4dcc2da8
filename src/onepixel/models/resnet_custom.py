"""PyTorch port of deep-histopath's ``resnet_custom``: a pre-activation bottleneck ResNet.

Reads top-down: stem -> three stages of bottleneck blocks -> head. Input is a float tensor
(N, 3, H, W) in [0, 1]; the model normalises it to [-1, 1] (``(x - 0.5) * 2``, as the MAX
detector does) and returns one logit per image (N,). ``sigmoid(logit)`` is the score.

Strided convolutions pad the TensorFlow 'same' way (the extra row/column goes at the bottom
and right), so sampling grids match the Keras original: that alignment is what makes even
pixel coordinates special for stride-2 layers.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Return ``x`` padded as TensorFlow's 'same' padding would for this kernel and stride."""
    h, w = x.shape[-2:]
    pad_h = max((-(-h // stride) - 1) * stride + kernel - h, 0)
    pad_w = max((-(-w // stride) - 1) * stride + kernel - w, 0)
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))


class SameConv2d(nn.Conv2d):
    """A Conv2d with TensorFlow 'same' padding (asymmetric when the stride is 2)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, bias: bool = False):
        super().__init__(cin, cout, kernel, stride=stride, padding=0, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the convolution of ``x`` with 'same' padding."""
        return super().forward(same_pad(x, self.kernel_size[0], self.stride[0]))


class PreActBottleneck(nn.Module):
    """BN-ReLU-1x1(stride) -> BN-ReLU-3x3 -> BN-ReLU-1x1, plus a shortcut.

    The shortcut is the identity when shape is kept, else a strided 1x1 conv of the
    pre-activated input (as in pre-activation ResNets).
    """

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        width = cout // 4
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = SameConv2d(cin, width, 1, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = SameConv2d(width, width, 3)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = SameConv2d(width, cout, 1)
        self.shortcut = SameConv2d(cin, cout, 1, stride) if (stride != 1 or cin != cout) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the block output for ``x``."""
        pre = F.relu(self.bn1(x))
        residual = self.shortcut(pre) if self.shortcut is not None else x
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + residual


class ResNetCustom(nn.Module):
    """deep-histopath ``resnet_custom``: 3x3/16 stride-2 stem, stages of depth 32/64/128.

    ``blocks`` blocks per stage (3 in the original); stages 2 and 3 open with stride 2.
    ``stem_stride`` 1 keeps the input's resolution through the first stage: the view model of
    the certified defence uses it (16 px views) with half the widths, at about the cost of the
    original on one 64 px image per 16 views.
    """

    def __init__(
        self, depths: tuple[int, ...] = (32, 64, 128), blocks: int = 3, stem: int = 16, stem_stride: int = 2
    ):
        super().__init__()
        self.stem = SameConv2d(3, stem, 3, stride=stem_stride)
        layers: list[nn.Module] = []
        cin = stem
        for stage, depth in enumerate(depths):
            for b in range(blocks):
                stride = 2 if (stage > 0 and b == 0) else 1
                layers.append(PreActBottleneck(cin, depth, stride))
                cin = depth
        self.stages = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(cin)
        self.head = nn.Conv2d(cin, 1, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return one logit per image for ``x`` (N, 3, H, W) float in [0, 1]."""
        x = (x - 0.5) * 2.0
        x = self.stages(self.stem(x))
        x = F.relu(self.bn(x))
        x = F.adaptive_avg_pool2d(x, 1)
        return self.head(x).flatten()
