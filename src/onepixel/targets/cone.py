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

Batch norms are folded into convolutions where :mod:`onepixel.targets.fuse` folds them and
applied per channel elsewhere (eval-mode statistics). Only models whose every module is of a
known type are handled (:func:`supports`); anything else gets ``None`` from :func:`build_cone`,
and the caller scores with the full pass. Exactness against the full pass is checked by the
caller (:class:`onepixel.targets.local.TorchTarget`) at build time.
"""

from __future__ import annotations

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
# (measured on one thread: cone pays below it, 2.4-2.9x for one pixel or a 5x5 patch; at shares
# of 0.06-0.12 the later windows already cover the maps and the cone was 10% slower than the
# full pass; k pixels spread over the image cover more still).
FULL_PASS_SHARE = 0.06
# A layer's window longer than this share of its map (rows or columns) covers the whole map.
FULL_MAP_SHARE = 0.9
DEFAULT_CHUNK = 128
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
    """One bottleneck block with batch norms folded where possible."""

    affine1: tuple[Tensor, Tensor] | None  # bn1 as per-channel scale/shift; None when folded
    stride: int
    conv1: tuple[Tensor, Tensor]  # 1x1 (bn2 folded)
    conv2: tuple[Tensor, Tensor]  # KxK stride 1, 'same' (bn3 folded)
    conv3: tuple[Tensor, Tensor]  # 1x1
    shortcut: tuple[Tensor, Tensor] | None  # 1x1, stride ``stride``
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

    A window longer than ``FULL_MAP_SHARE`` of the map becomes the whole map (cheaper to gather).
    """
    length = min(max(int((hi - lo).max()), 1), size)
    if length > FULL_MAP_SHARE * size:
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
        # The current window is the whole map: the request is a (padded) crop of it.
        if rh == n + 2 * p and rw == n + 2 * p:
            v = cur.values
            return F.pad(v, (0, 0, p, p, p, p)) if p else v
        if rh == n and rw == n:
            return cur.values
    wp = clean.padded
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
    py = ry[:, None] + step * np.arange(rh)
    px = rx[:, None] + step * np.arange(rw)
    iy = py - cur.oy[:, None]
    ix = px - cur.ox[:, None]
    inside = ((iy >= 0) & (iy < cur.h))[:, :, None] & ((ix >= 0) & (ix < cur.w))[:, None, :]
    src = (np.arange(q) * (cur.h * cur.w))[:, None, None] + (iy * cur.w)[:, :, None] + ix[:, None, :]
    keep = inside.reshape(-1)
    out[torch.from_numpy(keep)] = values.index_select(0, torch.from_numpy(src.reshape(-1)[keep]))
    return out.view(q, rh, rw, c)


def _conv(x: Tensor, weight: Tensor, bias: Tensor, stride: int = 1) -> Tensor:
    """Return the unpadded convolution of NHWC ``x`` as NHWC."""
    out = F.conv2d(x.permute(0, 3, 1, 2), weight, bias, stride=stride)
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
        for fb in fused.stages:
            stride = fb.conv1.stride[0]
            out = -(-size // stride)
            w2 = fb.conv2.weight.detach().float().contiguous(memory_format=torch.channels_last)
            b2 = fb.conv2.bias.detach().float().clone()
            conv3 = _lin(fb.conv3)
            shortcut = _lin(fb.shortcut) if fb.shortcut is not None else None
            if shortcut is not None:
                # conv3's bias moves into the shortcut's: out = conv3(t2) + shortcut(pre) in one addmm.
                shortcut = (shortcut[0], shortcut[1] + conv3[1])
                conv3 = (conv3[0], torch.zeros_like(conv3[1]))
            self.blocks.append(
                _Block(
                    affine1=_affine(fb.bn1) if fb.bn1 is not None else None,
                    stride=stride,
                    conv1=_lin(fb.conv1),
                    conv2=(w2, b2),
                    conv3=conv3,
                    shortcut=shortcut,
                    size_in=size,
                    size_out=out,
                )
            )
            size = out
        self.final_size = size
        self.final_affine = _affine(fused.bn)
        self.head = _lin(fused.head)
        self.cache_images = cache_images
        self._slots: OrderedDict[bytes, int] = OrderedDict()
        self._free = list(range(cache_images - 1, -1, -1))
        self._alloc()

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
            cout = b.conv3[0].shape[0]
            self.m_in.append(_Map(s, b.size_in, cin, 0))
            self.m_t1.append(_Map(s, b.size_out, width, b.conv2[0].shape[-1] // 2))
            self.m_res.append(_Map(s, b.size_out, cout, 0) if b.shortcut is not None else None)
        cfin = self.final_affine[0].shape[0]
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
            if b.stride > 1:
                pre = _pre_activate(a[:, :: b.stride, :: b.stride], b.affine1)
            else:
                pre = _pre_activate(a, b.affine1)
            t1 = F.linear(pre, *b.conv1).relu_()
            self.m_t1[i].put(slots, t1)
            res = a
            if b.shortcut is not None:
                res = _linear(pre, b.shortcut)
                self.m_res[i].put(slots, res)
            pad = b.conv2[0].shape[-1] // 2
            t2 = F.conv2d(t1.permute(0, 3, 1, 2), *b.conv2, padding=pad).relu_().permute(0, 2, 3, 1)
            a = _project_add(t2.contiguous(), b, res)
        z = _pre_activate(a, self.final_affine)
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
        # ----- blocks -----
        for i, b in enumerate(self.blocks):
            cur, ylo, yhi, xlo, xhi = self._block(i, b, sl, cur, ylo, yhi, xlo, xhi)
        # ----- final batch norm, ReLU, global mean, head -----
        fa = self.final_affine
        z = _pre_activate(cur.values, fa)
        nf = self.final_size
        if cur.h == nf and cur.w == nf:
            # float32 sum (pairwise, of nf*nf terms), float64 from here on.
            pooled = z.sum((1, 2)).double()
        else:
            clean_win = _gather(self.m_z, sl, None, cur.oy, cur.ox, cur.h, cur.w)
            f64 = torch.float64
            pooled = self.z_sum[slots] - clean_win.sum((1, 2), dtype=f64) + z.sum((1, 2), dtype=f64)
        pooled = pooled / float(nf * nf)
        hw, hb = self.head
        return pooled @ hw.double().T[:, 0] + hb.double()[0]

    def _block(self, i: int, b: _Block, slots: Ints, cur: _Win, ylo, yhi, xlo, xhi):
        """Return the block's output window and changed ranges given its input window."""
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
        pre = _pre_activate(g, b.affine1)
        t1 = _Win(F.linear(pre, *b.conv1).relu_(), oy, ox)
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
        if h2 == n and w2 == n and t1.h == n and t1.w == n:
            # The whole map in and out: the convolution pads itself (no padded copy).
            t2 = F.conv2d(t1.values.permute(0, 3, 1, 2), *b.conv2, padding=r).relu_().permute(0, 2, 3, 1)
        else:
            t1g = _gather(self.m_t1[i], slots, t1, oy2 - r, ox2 - r, h2 + 2 * r, w2 + 2 * r)
            t2 = _conv(t1g, *b.conv2).relu_()
        resg = _gather(res_map, slots, res, oy2, ox2, h2, w2)
        return _Win(_project_add(t2, b, resg), oy2, ox2), ylo, yhi, xlo, xhi


def _pre_activate(x: Tensor, affine: tuple[Tensor, Tensor] | None) -> Tensor:
    """Return relu(scale * x + shift) (or relu(x) without an affine) as a new tensor."""
    if affine is None:
        return F.relu(x)
    return torch.addcmul(affine[1], x, affine[0]).relu_()


def _project_add(t2: Tensor, b: _Block, residual: Tensor) -> Tensor:
    """Return conv3(t2) + residual (NHWC) in one matrix product; the residual is not modified."""
    weight, bias = b.conv3
    shape = (*t2.shape[:-1], weight.shape[0])
    flat = torch.addmm(residual.reshape(-1, shape[-1]), t2.reshape(-1, t2.shape[-1]), weight.T)
    if b.shortcut is None:
        flat.add_(bias)  # with a projection shortcut the bias is folded into the shortcut's
    return flat.view(shape)


def build_cone(model: nn.Module, input_size: int = 64, **kwargs) -> ConeModel | None:
    """Return a :class:`ConeModel` for ``model``, or None when its layers are not all supported."""
    if not supports(model):
        return None
    try:
        return ConeModel(model, input_size, **kwargs)
    except (TypeError, ValueError):
        return None
