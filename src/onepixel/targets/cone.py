"""Incremental ("cone") inference of pixel-change queries for the bundled ``ResNetCustom``.

The idea is Krypton's (Nakandala et al., SIGMOD 2019): a query differs from its clean image in
k pixels, so at every layer only the receptive-field cone of those pixels differs from the clean
activations. :class:`ConeModel` caches each layer's clean activations per base image and, per
query, recomputes only a window of each activation map that contains the cone:

- the window starts as the bounding box of the changed pixels, grows by the kernel radius at
  every 3x3 convolution and halves at stride 2 (TensorFlow 'same' grids, asymmetric padding
  included); it is clipped to the map and becomes the whole map where the cone covers it;
- the queries of one chunk share one window size per layer (each query has its own origin), so
  every layer is one batched call on a (Q, C, h, w) tensor; the input of a convolution is
  gathered from the clean map (zero padded) with the query's current window pasted in;
- per-channel ops (batch norm, ReLU, 1x1 convolutions) run on the window only; the residual
  add reads the clean map outside the window; the global pool is the clean sum minus the
  clean window plus the new window (in float64).

Batch norms are folded into convolutions where :mod:`onepixel.targets.fuse` folds them. Each
remaining pre-activation ``relu(bn(x))`` is rewritten as ``scale * clamp(x, lo, hi) + shift``
(:class:`_Clamp`): one pass over the map, with ``scale`` and ``shift`` folded into the linear
layer that reads it (the next block's 1x1 convolutions, or the head). The maps are stored minus
a per-channel offset (the identity blocks' ``conv3`` biases, carried along the residual
stream), so no block adds a bias over its output, and each block's residual sum accumulates in
place. A request is split into tiles of queries before any block whose input windows would
hold more than ``TILE_ELEMENTS`` values: early blocks, whose windows are tiny, run on many
queries per call, late ones on fewer.

Only models whose every module is of a known type are handled (:func:`supports`); anything
else gets ``None`` from :func:`build_cone`, and the caller scores with the full pass. Exactness
against the full pass is checked by the caller (:class:`onepixel.targets.local.TorchTarget`)
at build time.
"""

from __future__ import annotations

import functools
import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from onepixel.models.resnet_custom import PreActBottleneck, ResNetCustom, SameConv2d
from onepixel.targets.fuse import fuse
from onepixel.targets.pixels import last_wins_mask

Tensor = torch.Tensor
# A query whose first-stage window exceeds this share of the map is scored by the full pass
# (measured on 2 threads with two pixels d apart: the cone was 3.0x the full pass at share 0.01,
# 1.6x at 0.18, 1.06x at 0.30 and 0.8-0.85x from 0.45 on).
FULL_PASS_SHARE = 0.25
# A layer's window longer than this share of its map, or within this many rows (columns) of it,
# covers the whole map: whole maps need no gathers, which costs more than the few rows saved
# (measured on 2 threads: slack 2 was 4-10% faster than none for k = 1..5).
FULL_MAP_SHARE = 0.9
FULL_MAP_SLACK = 2
# Queries per call of ConeModel.logits from TorchTarget (it tiles them itself).
DEFAULT_CHUNK = 1024
# A block runs on at most this many activation values of input window per call; more queries
# are split into equal tiles (measured on 2 threads: 2**20 was 8-25% faster than 2**19 or 2**21,
# that is all of a 512-query request in the first stage and 128 queries in the last).
TILE_ELEMENTS = 2**20
DEFAULT_CACHE_IMAGES = 64


def _exact_type(module: object, cls: type) -> bool:
    """Return True when ``module`` is exactly ``cls`` (a subclass may override ``forward``)."""
    return type(module) is cls


def _plain_conv(conv: object, kernel: int, stride: int | None = None) -> bool:
    """Return True for a SameConv2d with a square ``kernel``, no dilation, one group."""
    return (
        _exact_type(conv, SameConv2d)
        and conv.kernel_size == (kernel, kernel)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding == (0, 0)
        and conv.padding_mode == "zeros"
        and conv.stride[0] == conv.stride[1]
        and (stride is None or conv.stride[0] == stride)
    )


def supports(model: nn.Module) -> bool:
    """Return True when every module of ``model`` is a layer type cone inference handles.

    That is exactly :class:`ResNetCustom` built of :class:`PreActBottleneck` blocks (1x1 strided
    conv, 3x3 stride-1 conv, 1x1 conv, optional 1x1 strided shortcut), eval-mode batch norms,
    and a 1x1 convolution head with one output. Subclasses are refused (their forward may differ).
    """
    if not _exact_type(model, ResNetCustom) or model.training:
        return False
    if set(dict(model.named_children())) != {"stem", "stages", "bn", "head"}:
        return False
    if not (_plain_conv(model.stem, model.stem.kernel_size[0]) and model.stem.kernel_size[0] % 2 == 1):
        return False
    if not (_exact_type(model.stages, nn.Sequential) and _exact_type(model.bn, nn.BatchNorm2d)):
        return False
    head = model.head
    if not (_exact_type(head, nn.Conv2d) and head.kernel_size == (1, 1) and head.out_channels == 1):
        return False
    if head.stride != (1, 1) or head.groups != 1 or head.padding != (0, 0):
        return False
    for block in model.stages:
        if not _exact_type(block, PreActBottleneck):
            return False
        names = set(dict(block.named_children()))
        if names - {"bn1", "conv1", "bn2", "conv2", "bn3", "conv3", "shortcut"}:
            return False
        if not all(_exact_type(getattr(block, n), nn.BatchNorm2d) for n in ("bn1", "bn2", "bn3")):
            return False
        if not (
            _plain_conv(block.conv1, 1) and _plain_conv(block.conv2, 3, 1) and _plain_conv(block.conv3, 1, 1)
        ):
            return False
        if block.shortcut is not None and not (
            _plain_conv(block.shortcut, 1) and block.shortcut.stride == block.conv1.stride
        ):
            return False
        if block.shortcut is None and block.conv1.stride != (1, 1):
            return False
    for bn in model.modules():
        if isinstance(bn, nn.BatchNorm2d) and (bn.running_mean is None or not bn.affine):
            return False
    return True


@functools.cache
def _fused_linear() -> bool:
    """Return True when oneDNN's fused linear(+ReLU) runs here and equals ``F.linear``.

    Probed on first use, not at import (every CLI command imports this module)."""
    try:
        x, w, b = torch.randn(4, 2, 8), torch.randn(3, 8), torch.randn(3)
        got = torch.ops.mkldnn._linear_pointwise(x, w, b, "relu", [], "")
        return bool(torch.allclose(got, F.linear(x, w, b).relu(), atol=1e-6))
    except Exception:  # noqa: BLE001 - no oneDNN in this build: plain linear + ReLU
        return False


def _linear_relu(x: Tensor, wb: tuple[Tensor, Tensor]) -> Tensor:
    """Return relu(x @ W.T + b) of NHWC ``x`` (any leading shape), fused where oneDNN allows."""
    if _fused_linear():
        return torch.ops.mkldnn._linear_pointwise(x, wb[0], wb[1], "relu", [], "")
    return F.linear(x, wb[0], wb[1]).relu_()


class _Clamp:
    """``relu(scale * x + shift)`` per channel, computed as ``scale * clamp(x, lo, hi) + shift'``.

    ``clamp`` is one pass over the map (a single ``maximum`` when every scale is positive);
    ``scale`` and ``shift'`` are folded into the linear layer that reads the result
    (:meth:`fold`). For scale > 0 the bound is a lower one, for scale < 0 an upper one; a zero
    scale leaves the constant ``relu(shift)``.
    """

    def __init__(self, scale: Tensor, shift: Tensor):
        scale, shift = scale.double(), shift.double()
        bound = torch.where(scale != 0, -shift / torch.where(scale != 0, scale, 1.0), 0.0)
        inf = torch.full_like(scale, float("inf"))
        self.lo = torch.where(scale > 0, bound, torch.where(scale < 0, -inf, 0.0)).float()
        hi = torch.where(scale < 0, bound, torch.where(scale > 0, inf, 0.0)).float()
        self.hi = hi if bool((scale <= 0).any()) else None
        self.scale = scale
        self.shift = torch.where(scale == 0, shift.clamp_min(0.0), shift)

    def __call__(self, x: Tensor) -> Tensor:
        """Return clamp(x, lo, hi) per channel (last dimension) as a new tensor."""
        return torch.maximum(x, self.lo) if self.hi is None else torch.clamp(x, self.lo, self.hi)

    def fold(self, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
        """Return (weight', bias') with ``weight' @ clamp(x) + bias' = weight @ relu(.) + bias``."""
        w = weight.double()
        return (w * self.scale).float().contiguous(), (bias.double() + w @ self.shift).float()


def _affine(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Return the per-channel (scale, shift) of an eval-mode batch norm."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var.detach() + bn.eps)
    return scale.float().clone(), (bn.bias.detach() - bn.running_mean.detach() * scale).float().clone()


def _lin(conv: nn.Conv2d) -> tuple[Tensor, Tensor]:
    """Return the (weight (Cout, Cin), bias (Cout,)) of a 1x1 convolution."""
    w = conv.weight.detach().reshape(conv.out_channels, conv.in_channels).float().clone()
    b = conv.bias.detach().float().clone() if conv.bias is not None else torch.zeros(conv.out_channels)
    return w, b


@dataclass
class _Block:
    """One bottleneck block, rewritten for cone inference (see the module docstring)."""

    pre: _Clamp  # relu(bn1(x)) of the stored (offset) input, its scale/shift folded below
    stride: int
    conv1: tuple[Tensor, Tensor]  # 1x1 (bn2 and the pre-activation's scale/shift folded)
    conv2: tuple[Tensor, Tensor]  # KxK stride 1, 'same' (bn3 folded)
    conv3: Tensor  # 1x1 weight (Cout, width); its bias is in the shortcut's or in the offset
    shortcut: tuple[Tensor, Tensor] | None  # 1x1, stride ``stride`` (conv3's bias folded in)
    size_in: int
    size_out: int


# Window geometry (origins, ranges) is kept in NumPy int64 arrays (Q,): tiny arrays, for which
# NumPy's per-call cost is a fraction of torch's.
Ints = np.ndarray


def _out_range(lo: Ints, hi: Ints, kernel: int, stride: int, pad_top: int, size_out: int):
    """Return the output rows [lo', hi') of a conv whose input rows [lo, hi) changed."""
    # np.minimum/np.maximum, not np.clip: clip costs several times more on tiny arrays.
    a = np.minimum(np.maximum(-((kernel - 1 - pad_top - lo) // stride), 0), size_out)
    b = np.minimum((hi - 1 + pad_top) // stride + 1, size_out)
    return a, np.maximum(a, b)


def _window(lo: Ints, hi: Ints, size: int) -> tuple[Ints, int]:
    """Return (origin (Q,), common length) of windows inside [0, size) that hold every [lo, hi).

    A window longer than ``FULL_MAP_SHARE`` of the map, or shorter by at most
    ``FULL_MAP_SLACK``, becomes the whole map (cheaper than gathering).
    """
    length = min(max(int((hi - lo).max()), 1), size)
    if length > FULL_MAP_SHARE * size or size - length <= FULL_MAP_SLACK:
        return np.zeros_like(lo), size
    return np.maximum(np.minimum(lo, size - length), 0), length


class _Map:
    """A clean activation map of every cached image: flat (slots*Hp*Wp, C), zero padded by ``pad``."""

    def __init__(self, slots: int, size: int, channels: int, pad: int):
        self.size, self.pad, self.channels = size, pad, channels
        self.padded = size + 2 * pad
        self.data = torch.zeros(slots, self.padded, self.padded, channels)
        self.flat = self.data.view(-1, channels)
        self._grids: dict[tuple[int, int, int], Ints] = {}

    def put(self, slots: Tensor, nhwc: Tensor) -> None:
        """Store the clean maps ``nhwc`` (n, size, size, C) into ``slots``."""
        p = self.pad
        self.data[slots, p : p + self.size, p : p + self.size] = nhwc

    def grid(self, rh: int, rw: int, step: int) -> Ints:
        """Return the flat offsets (rh*rw,) of a (rh, rw) window with ``step`` in this map."""
        key = (rh, rw, step)
        if key not in self._grids:
            g = (np.arange(rh) * (step * self.padded))[:, None] + np.arange(rw) * step
            self._grids[key] = g.reshape(-1)
        return self._grids[key]


class _Win:
    """A window of an activation map per query: values (Q, h, w, C) at origins (oy, ox)."""

    __slots__ = ("values", "oy", "ox", "h", "w")

    def __init__(self, values: Tensor, oy: Ints, ox: Ints):
        self.values, self.oy, self.ox = values, oy, ox
        self.h, self.w = values.shape[1], values.shape[2]


_GRIDS: dict[tuple[int, int, int], Ints] = {}


def _local_grid(h: int, w: int, stride_row: int) -> Ints:
    """Return the flat offsets (h*w,) of an (h, w) block inside rows of length ``stride_row``."""
    key = (h, w, stride_row)
    if key not in _GRIDS:
        _GRIDS[key] = ((np.arange(h) * stride_row)[:, None] + np.arange(w)).reshape(-1)
    return _GRIDS[key]


def _gather(
    clean: _Map, slots: Ints, cur: _Win | None, ry: Ints, rx: Ints, rh: int, rw: int, step: int = 1
) -> Tensor:
    """Return (Q, rh, rw, C): the map at rows ry + step*i, cols rx + step*j, ``cur`` where it covers.

    Positions outside the map read the zero padding of ``clean`` (at most ``clean.pad`` away).
    """
    q, c = len(slots), clean.channels
    n, p = clean.size, clean.pad
    if cur is not None and step > 1 and cur.h == n and cur.w == n and rh == rw == -(-n // step):
        # The whole strided grid of a whole map (origins are then 0): a strided view.
        return cur.values[:, ::step, ::step]
    if cur is not None and step == 1 and cur.h == n and cur.w == n:
        # The current window is the whole map and the request is all of it (padded or not).
        if rh == n + 2 * p and rw == n + 2 * p:
            v = cur.values
            return F.pad(v, (0, 0, p, p, p, p)) if p else v
        if rh == n and rw == n and not (ry.any() or rx.any()):
            return cur.values
    if cur is not None:
        # The request lies inside the current window (say a strided grid over it): pick from it.
        iy, ix = ry - cur.oy, rx - cur.ox
        last_y, last_x = iy + step * (rh - 1), ix + step * (rw - 1)
        if bool(((iy >= 0) & (ix >= 0) & (last_y < cur.h) & (last_x < cur.w)).all()):
            grid = (np.arange(rh) * (step * cur.w))[:, None] + np.arange(rw) * step
            src = (np.arange(q) * (cur.h * cur.w) + iy * cur.w + ix)[:, None] + grid.reshape(-1)
            picked = cur.values.reshape(-1, c).index_select(0, torch.from_numpy(src.reshape(-1)))
            return picked.view(q, rh, rw, c)
    wp = clean.padded
    if step == 1 and rh == wp and rw == wp:
        # The whole (padded) map of every query: whole slots, one contiguous copy each.
        out = clean.data.index_select(0, torch.from_numpy(slots)).view(-1, c)
    else:
        start = slots * (wp * wp) + (ry + p) * wp + (rx + p)
        idx = start[:, None] + clean.grid(rh, rw, step)
        out = clean.flat.index_select(0, torch.from_numpy(idx.reshape(-1)))
    if cur is None:
        return out.view(q, rh, rw, c)
    dy, dx = cur.oy - ry, cur.ox - rx
    values = cur.values.reshape(-1, c)
    if step == 1 and bool(((dy >= 0) & (dx >= 0) & (dy + cur.h <= rh) & (dx + cur.w <= rw)).all()):
        # Common case: the current window lies inside the request; paste it whole.
        dst = (np.arange(q) * (rh * rw) + dy * rw + dx)[:, None] + _local_grid(cur.h, cur.w, rw)
        out.index_copy_(0, torch.from_numpy(dst.reshape(-1)), values)
        return out.view(q, rh, rw, c)
    # General case (a strided grid, or a window reaching outside the request): paste the
    # positions of the request that the current window holds, found on the NumPy side.
    py = ry[:, None] + step * np.arange(rh)
    px = rx[:, None] + step * np.arange(rw)
    iy = py - cur.oy[:, None]
    ix = px - cur.ox[:, None]
    inside = ((iy >= 0) & (iy < cur.h))[:, :, None] & ((ix >= 0) & (ix < cur.w))[:, None, :]
    src = (np.arange(q) * (cur.h * cur.w))[:, None, None] + (iy * cur.w)[:, :, None] + ix[:, None, :]
    dst = np.flatnonzero(inside)
    picked = values.index_select(0, torch.from_numpy(src.reshape(-1)[dst]))
    out.index_copy_(0, torch.from_numpy(dst), picked)
    return out.view(q, rh, rw, c)


def _conv(
    x: Tensor, weight: Tensor, bias: Tensor, stride: int = 1, padding: tuple[int, int] = (0, 0)
) -> Tensor:
    """Return the convolution of NHWC ``x`` (zero ``padding`` rows, columns) as NHWC."""
    out = F.conv2d(x.permute(0, 3, 1, 2), weight, bias, stride=stride, padding=padding)
    return out.permute(0, 2, 3, 1)


def _linear(x: Tensor, wb: tuple[Tensor, Tensor]) -> Tensor:
    """Return the 1x1 convolution of NHWC ``x`` (any leading shape)."""
    return F.linear(x, wb[0], wb[1])


class ConeModel:
    """Cone inference for one :class:`ResNetCustom` (see the module docstring).

    :meth:`logits` returns the logits of pixel-change queries; clean activations of the base
    images are cached (least recently used first out, ``cache_images`` images at most).
    """

    def __init__(
        self, model: ResNetCustom, input_size: int = 64, *, cache_images: int = DEFAULT_CACHE_IMAGES
    ):
        fused = fuse(model, input_size)
        self.input_size = input_size
        self.stem_w = fused.stem.weight.detach().float().clone()
        self.stem_b = (
            fused.stem.bias.detach().float().clone()
            if fused.stem.bias is not None
            else torch.zeros(self.stem_w.shape[0])
        )
        self.stem_k = self.stem_w.shape[-1]
        self.stem_s = fused.stem.stride[0]
        self.stem_pad_top = fused.stem_pad[2]
        if fused.stem_pad[0] != fused.stem_pad[2] or fused.stem_pad[1] != fused.stem_pad[3]:
            raise TypeError("stem padding must be the same for rows and columns")
        size = -(-input_size // self.stem_s)
        self.stem_size = size
        self.blocks: list[_Block] = []
        # The stored maps are the true activations minus ``offset`` (per channel).
        offset = torch.zeros(self.stem_w.shape[0], dtype=torch.float64)
        for fb in fused.stages:
            stride = fb.conv1.stride[0]
            out = -(-size // stride)
            pre = self._pre(fb.bn1, offset, fb.conv1.in_channels)
            w2 = fb.conv2.weight.detach().float().contiguous(memory_format=torch.channels_last)
            b2 = fb.conv2.bias.detach().float().clone()
            w3, b3 = _lin(fb.conv3)
            shortcut = None
            if fb.shortcut is not None:
                # conv3's bias moves into the shortcut's: out = conv3(t2) + shortcut(pre) in one addmm.
                ws, bs = _lin(fb.shortcut)
                shortcut = pre.fold(ws, bs + b3)
                offset = torch.zeros(w3.shape[0], dtype=torch.float64)
            else:
                offset = offset + b3.double()
            self.blocks.append(
                _Block(
                    pre=pre,
                    stride=stride,
                    conv1=pre.fold(*_lin(fb.conv1)),
                    conv2=(w2, b2),
                    conv3=w3.contiguous(),
                    shortcut=shortcut,
                    size_in=size,
                    size_out=out,
                )
            )
            size = out
        self.final_size = size
        self.final_pre = self._pre(fused.bn, offset, offset.shape[0])
        hw, hb = _lin(fused.head)
        # logit = hw . mean(scale * clamp(z) + shift) + hb, in float64.
        self.head_w = (hw.double()[0] * self.final_pre.scale).contiguous()
        self.head_b = float(hb.double()[0] + hw.double()[0] @ self.final_pre.shift)
        self.cache_images = cache_images
        self.tile_elements = TILE_ELEMENTS
        self._slots: OrderedDict[bytes, int] = OrderedDict()
        self._free = list(range(cache_images - 1, -1, -1))
        self._alloc()

    @staticmethod
    def _pre(bn: nn.BatchNorm2d | None, offset: Tensor, channels: int) -> _Clamp:
        """Return relu(bn(x + offset)) as a :class:`_Clamp` of the stored map x (bn None: relu)."""
        if bn is None:
            scale = torch.ones(channels, dtype=torch.float64)
            shift = torch.zeros(channels, dtype=torch.float64)
        else:
            s, t = _affine(bn)
            scale, shift = s.double(), t.double()
        return _Clamp(scale, shift + scale * offset)

    # ----- clean activations -------------------------------------------------------------
    def _alloc(self) -> None:
        s = self.cache_images
        self.m_input = _Map(s, self.input_size, 3, max(self.stem_pad_top, self._stem_pad_bottom(), 1))
        self.m_in: list[_Map] = []
        self.m_t1: list[_Map] = []
        self.m_res: list[_Map | None] = []
        for b in self.blocks:
            cin = b.conv1[0].shape[1]
            width = b.conv1[0].shape[0]
            cout = b.conv3.shape[0]
            self.m_in.append(_Map(s, b.size_in, cin, 0))
            self.m_t1.append(_Map(s, b.size_out, width, b.conv2[0].shape[-1] // 2))
            self.m_res.append(_Map(s, b.size_out, cout, 0) if b.shortcut is not None else None)
        cfin = self.final_pre.lo.shape[0]
        self.m_z = _Map(s, self.final_size, cfin, 0)
        self.z_sum = torch.zeros(s, cfin, dtype=torch.float64)

    def _stem_pad_bottom(self) -> int:
        n, k, s = self.input_size, self.stem_k, self.stem_s
        return max((-(-n // s) - 1) * s + k - n, 0) - self.stem_pad_top

    @torch.inference_mode()
    def _clean_forward(self, images: np.ndarray, slots: Tensor) -> None:
        """Compute the clean maps of uint8 NHWC ``images`` and store them in ``slots``."""
        x = torch.from_numpy(np.ascontiguousarray(images)).float().mul_(2.0 / 255.0).sub_(1.0)
        self.m_input.put(slots, x)
        pt, pb = self.stem_pad_top, self._stem_pad_bottom()
        xp = F.pad(x.permute(0, 3, 1, 2), (pt, pb, pt, pb))
        a = F.conv2d(xp, self.stem_w, self.stem_b, stride=self.stem_s).permute(0, 2, 3, 1)
        for i, b in enumerate(self.blocks):
            self.m_in[i].put(slots, a)
            pre = b.pre(a[:, :: b.stride, :: b.stride] if b.stride > 1 else a)
            t1 = _linear_relu(pre, b.conv1)
            self.m_t1[i].put(slots, t1)
            res = a
            if b.shortcut is not None:
                res = _linear(pre, b.shortcut)
                self.m_res[i].put(slots, res)
            pad = b.conv2[0].shape[-1] // 2
            t2 = F.conv2d(t1.permute(0, 3, 1, 2), *b.conv2, padding=pad).relu_().permute(0, 2, 3, 1)
            a = _project_add(t2.contiguous(), b, res.contiguous())
        z = self.final_pre(a)
        self.m_z.put(slots, z)
        self.z_sum[slots] = z.sum((1, 2), dtype=torch.float64)

    def slots_for(self, base: np.ndarray) -> Tensor:
        """Return the cache slot (B,) of every image of ``base`` (at most ``cache_images``),
        computing the clean activations of the images not cached yet."""
        if len(base) > self.cache_images:
            raise ValueError(f"at most {self.cache_images} base images per call, got {len(base)}")
        keys = [hashlib.blake2b(np.ascontiguousarray(img).tobytes(), digest_size=16).digest() for img in base]
        wanted = set(keys)
        out = np.empty(len(base), dtype=np.int64)
        new: list[int] = []
        for i, key in enumerate(keys):
            if key in self._slots:
                self._slots.move_to_end(key)
            else:
                if self._free:
                    slot = self._free.pop()
                else:
                    slot = self._slots.pop(next(k for k in self._slots if k not in wanted))
                self._slots[key] = slot
                new.append(i)
            out[i] = self._slots[key]
        if new:
            try:
                self._clean_forward(base[new], torch.from_numpy(out[new]))
            except BaseException:
                for i in new:
                    if self._slots.pop(keys[i], None) is not None:
                        self._free.append(int(out[i]))
                raise
        return torch.from_numpy(out)

    # ----- queries ------------------------------------------------------------------------
    def stem_extent(self, changes: np.ndarray) -> np.ndarray:
        """Return (2, Q) the rows and columns of the stem map that each query's cone covers."""
        y, x = changes[..., 1], changes[..., 0]
        lo = np.stack([y.min(1), x.min(1)])
        hi = np.stack([y.max(1), x.max(1)]) + 1
        a, b = _out_range(lo, hi, self.stem_k, self.stem_s, self.stem_pad_top, self.stem_size)
        return b - a

    def stem_share(self, changes: np.ndarray) -> np.ndarray:
        """Return per query the share (0..1] of the stem map that its cone covers."""
        extent = self.stem_extent(changes)
        return extent[0] * extent[1] / float(self.stem_size**2)

    @torch.inference_mode()
    def logits(self, slots: Tensor, changes: np.ndarray) -> Tensor:
        """Return the logits (Q,) of cached images ``slots`` (Q,) with ``changes`` (Q, k, 5)."""
        q, k = changes.shape[:2]
        changes = np.asarray(changes, dtype=np.int64)
        px, py = changes[..., 0], changes[..., 1]
        # Changed rows/cols [lo, hi) at the input: bounding box of the changed pixels.
        ylo, yhi = py.min(1), py.max(1) + 1
        xlo, xhi = px.min(1), px.max(1) + 1
        sl = slots.numpy()
        # ----- stem: gather the input window, paint, convolve -----
        ks, ss, pt = self.stem_k, self.stem_s, self.stem_pad_top
        n = self.stem_size
        ylo, yhi = _out_range(ylo, yhi, ks, ss, pt, n)
        xlo, xhi = _out_range(xlo, xhi, ks, ss, pt, n)
        oy, h = _window(ylo, yhi, n)
        ox, w = _window(xlo, xhi, n)
        iy, ix = oy * ss - pt, ox * ss - pt
        ih, iw = ss * (h - 1) + ks, ss * (w - 1) + ks
        inp = _gather(self.m_input, sl, None, iy, ix, ih, iw)
        keep = last_wins_mask(px, py, self.input_size)
        ry, rx = py - iy[:, None], px - ix[:, None]
        # A pixel outside the window changes no output of the window (e.g. off a stride-2 grid).
        keep &= (ry >= 0) & (ry < ih) & (rx >= 0) & (rx < iw)
        rows = np.broadcast_to(np.arange(q)[:, None], (q, k))
        rgb = torch.from_numpy(changes[..., 2:][keep]).float().mul_(2.0 / 255.0).sub_(1.0)
        inp[torch.from_numpy(rows[keep]), torch.from_numpy(ry[keep]), torch.from_numpy(rx[keep])] = rgb
        cur = _Win(_conv(inp, self.stem_w, self.stem_b, ss), oy, ox)
        return self._from_block(0, sl, cur, (ylo, yhi, xlo, xhi))

    def _from_block(self, first: int, sl: Ints, cur: _Win, ranges: tuple[Ints, ...]) -> Tensor:
        """Return the logits (Q,) of queries whose block ``first`` input window is ``cur``.

        ``ranges`` are the changed rows and columns (ylo, yhi, xlo, xhi) of that input. Before a
        block whose input windows hold more than ``tile_elements`` values in all, the queries
        are split into equal tiles, each run through the rest of the network on its own.
        """
        q = len(sl)
        for i in range(first, len(self.blocks)):
            per_query = cur.values[0].numel()
            tiles = -(-q * per_query // self.tile_elements)
            if tiles > 1 and q > 1:
                size = -(-q // min(tiles, q))
                parts = []
                for a in range(0, q, size):
                    e = min(a + size, q)
                    piece = _Win(cur.values[a:e], cur.oy[a:e], cur.ox[a:e])
                    part = tuple(r[a:e] for r in ranges)
                    parts.append(self._from_block(i, sl[a:e], piece, part))
                return torch.cat(parts)
            cur, ranges = self._block(i, self.blocks[i], sl, cur, *ranges)
        return self._head(sl, cur)

    def _head(self, sl: Ints, cur: _Win) -> Tensor:
        """Return the logits of the last block's output window: final BN-ReLU, global mean, head."""
        z = self.final_pre(cur.values)
        nf = self.final_size
        if cur.h == nf and cur.w == nf:
            # float32 sum (pairwise, of nf*nf terms), float64 from here on.
            pooled = z.sum((1, 2)).double()
        else:
            clean_win = _gather(self.m_z, sl, None, cur.oy, cur.ox, cur.h, cur.w)
            f64 = torch.float64
            clean_sum = self.z_sum[torch.from_numpy(sl)]
            pooled = clean_sum - clean_win.sum((1, 2), dtype=f64) + z.sum((1, 2), dtype=f64)
        return (pooled / float(nf * nf)) @ self.head_w + self.head_b

    def _block(self, i: int, b: _Block, slots: Ints, cur: _Win, ylo, yhi, xlo, xhi):
        """Return the block's output window and its changed ranges given its input window."""
        s = b.stride
        if s == 1:
            g = cur.values
            oy, ox = cur.oy, cur.ox
        else:
            ylo, yhi = _out_range(ylo, yhi, 1, s, 0, b.size_out)
            xlo, xhi = _out_range(xlo, xhi, 1, s, 0, b.size_out)
            oy, h = _window(ylo, yhi, b.size_out)
            ox, w = _window(xlo, xhi, b.size_out)
            g = _gather(self.m_in[i], slots, cur, oy * s, ox * s, h, w, step=s)
        pre = b.pre(g)
        t1 = _Win(_linear_relu(pre, b.conv1), oy, ox)
        if b.shortcut is not None:
            res = _Win(_linear(pre, b.shortcut), oy, ox)
            res_map = self.m_res[i]
        else:
            res = cur
            res_map = self.m_in[i]
        kk = b.conv2[0].shape[-1]
        r = kk // 2
        n = b.size_out
        ylo, yhi = _out_range(ylo, yhi, kk, 1, r, n)
        xlo, xhi = _out_range(xlo, xhi, kk, 1, r, n)
        oy2, h2 = _window(ylo, yhi, n)
        ox2, w2 = _window(xlo, xhi, n)
        # Where the output window spans the whole map (rows or columns), the convolution pads
        # itself: a smaller gather, and oneDNN is faster on its own padding than on a padded copy.
        pad_y, pad_x = r * (h2 == n), r * (w2 == n)
        gy, gh = (np.zeros_like(oy2), n) if pad_y else (oy2 - r, h2 + 2 * r)
        gx, gw = (np.zeros_like(ox2), n) if pad_x else (ox2 - r, w2 + 2 * r)
        t1g = _gather(self.m_t1[i], slots, t1, gy, gx, gh, gw)
        t2 = _conv(t1g, *b.conv2, padding=(pad_y, pad_x)).relu_()
        resg = _gather(res_map, slots, res, oy2, ox2, h2, w2)
        return _Win(_project_add(t2, b, resg), oy2, ox2), (ylo, yhi, xlo, xhi)


def _project_add(t2: Tensor, b: _Block, residual: Tensor) -> Tensor:
    """Return conv3(t2) + residual (NHWC), accumulated into ``residual`` itself.

    Every residual passed here is the caller's own tensor (a fresh gather, the block's input
    window or a shortcut's output) that nothing reads afterwards, so no copy is made.
    """
    shape = (*t2.shape[:-1], b.conv3.shape[0])
    flat = residual.reshape(-1, shape[-1])
    flat.addmm_(t2.reshape(-1, t2.shape[-1]), b.conv3.T)
    return flat.view(shape)


def build_cone(model: nn.Module, input_size: int = 64, **kwargs) -> ConeModel | None:
    """Return a :class:`ConeModel` for ``model``, or None when its layers are not all supported."""
    if not supports(model):
        return None
    try:
        return ConeModel(model, input_size, **kwargs)
    except (TypeError, ValueError):
        return None
