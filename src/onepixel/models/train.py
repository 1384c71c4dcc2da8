"""Train a binary patch classifier the deep-histopath way, with slide-grouped model selection.

Recipe (SPEC section 2): Adam (lr 7.7e-4, batch 128), L2 2.5e-5 on conv weights (as Adam weight
decay; BatchNorm and bias parameters are not decayed), batch augmentation from
:mod:`onepixel.models.augment` on the 128 px sources, 64 px inputs.

Choices beyond the recipe, and why:

- Class imbalance (AMi-Br train: 22% positive): the loss is BCE with ``pos_weight = n_neg / n_pos``,
  so both classes weigh the same in total. The score then estimates a balanced posterior and the
  fixed 0.5 threshold is the one that suits balanced accuracy.
- A cosine learning-rate decay to zero (after a short linear warm-up) and an exponential moving
  average (EMA) of the weights; the EMA model is the one validated and saved. Both steady the
  small-batch noise of a from-scratch run; inference stays one forward pass.
- Validation: whole slides (``groups``) are held out, never split across train and validation;
  the epoch with the best validation ROC AUC is kept.
- Speed on CPU: channels_last tensors and bfloat16 autocast (where the CPU has native bf16).

The recipe's batch 128 and full-strength colour jitter learn slowly from 2.9k images; the bundled
model used batch 32 and milder jitter (its MODEL_CARD.md says exactly what and why).
"""

from __future__ import annotations

import copy
import math
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from onepixel.data.patches import DataError, PatchSet, center_crop
from onepixel.models.augment import AugmentConfig, augment_batch
from onepixel.models.metrics import binary_metrics, scored_splits
from onepixel.models.registry import ModelMeta, create_model

Schedule = Literal["cosine", "constant"]
SelectMetric = Literal["roc_auc", "balanced_accuracy"]


@dataclass
class TrainConfig:
    """Every setting of a training run (stored in the weights' metadata)."""

    epochs: int = 30
    batch_size: int = 128
    lr: float = 7.7e-4
    weight_decay: float = 2.5e-5
    schedule: Schedule = "cosine"
    warmup_epochs: float = 1.0
    ema_decay: float = 0.99
    val_fraction: float = 0.15
    select_metric: SelectMetric = "roc_auc"
    balance: bool = True
    seed: int = 0
    size: int = 64
    arch: str = "resnet_custom"
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    max_steps: int | None = None
    # bfloat16 autocast for the training forward pass where the CPU has native bf16 (AMX/AVX512):
    # ~30% faster here; weights, optimiser and evaluation stay float32.
    bf16: bool | None = None
    # Train on strided views (certified partition voting): every ``size`` px crop is split into
    # views x views sub-images (view (dy, dx): pixels with y % views == dy, x % views == dx), each
    # one training example with the image's label; 1 = whole images.
    views: int = 1
    # Views drawn per image and step when training on views (a different random subset of offsets
    # every step, so every offset is data over an epoch's steps); 0 = all views x views of them.
    views_per_image: int = 0
    # Weights to start from (a bundled name or .safetensors file) instead of a fresh model; their
    # architecture and input size are kept, views are upsampled (nearest) to that input.
    init_from: str | None = None
    # Distillation: weights (bundled name or .safetensors) whose score of each example (the whole
    # augmented crop, or the same view for a model trained on views) is a second target,
    # ``teacher_weight`` of the loss and the rest the label's: a softer and less noisy target.
    teacher: str | None = None
    teacher_weight: float = 0.5
    # With views: choose the view-score threshold on the validation split that gives the highest
    # certified balanced accuracy (mean over k = 0..5), and fold it into the head's bias, so the
    # usual 0.5 rule votes with it.
    tune_vote_threshold: bool = True

    @property
    def view_size(self) -> int:
        """Return the side of one training view (``size`` when ``views`` is 1)."""
        return self.size // self.views

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-ready dict."""
        out = asdict(self)
        out["augment"] = self.augment.to_dict()
        return out


@dataclass
class TrainResult:
    """The selected model and how the run went."""

    model: nn.Module
    history: list[dict[str, Any]]
    best_epoch: int
    val_metrics: dict[str, Any]
    images_per_second: float
    seconds: float
    split: dict[str, Any]
    arch: str = "resnet_custom"
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    input_size: int = 64
    vote_threshold: dict[str, Any] | None = None


def grouped_split(
    groups: np.ndarray, y: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(train_idx, val_idx)``: whole groups go to validation until ``val_fraction`` is reached.

    Among 64 seeded shuffles of the groups, the one whose validation positive rate is closest
    to the overall rate is used, so a small validation set still holds enough positives.
    """
    groups = np.asarray(groups)
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    uniq, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    if len(uniq) < 2:
        raise DataError("need at least two groups (slides) for a grouped validation split")
    pos_per_group = np.bincount(inverse, weights=np.asarray(y, dtype=np.float64), minlength=len(uniq))
    rng = np.random.default_rng(seed)
    target, rate = val_fraction * len(groups), float(np.mean(y))
    best: tuple[float, np.ndarray] | None = None
    for _ in range(64):
        order = rng.permutation(len(uniq))
        cum = np.cumsum(counts[order])
        take = order[: int(np.searchsorted(cum, target)) + 1]
        if len(take) == len(uniq):
            take = take[:-1]
        gap = abs(pos_per_group[take].sum() / counts[take].sum() - rate)
        if best is None or gap < best[0]:
            best = (gap, take)
    assert best is not None
    in_val = np.isin(inverse, best[1])
    return np.flatnonzero(~in_val), np.flatnonzero(in_val)


def split_views(x: torch.Tensor, stride: int, out_size: int | None = None) -> torch.Tensor:
    """Return the strided views (N * stride**2, C, v, v) of images ``x`` (N, C, S, S), image-major.

    View ``dy * stride + dx`` holds the pixels with ``y % stride == dy`` and ``x % stride == dx``
    (the partition of :mod:`onepixel.targets.partition`); with ``out_size`` each view is
    upsampled to that side by repeating pixels.
    """
    n, c, size = x.shape[0], x.shape[1], x.shape[2]
    v = size // stride
    views = x.reshape(n, c, v, stride, v, stride).permute(0, 3, 5, 1, 2, 4).reshape(n * stride**2, c, v, v)
    return views if out_size is None else upsample_nearest(views, out_size)


def upsample_nearest(x: torch.Tensor, size: int) -> torch.Tensor:
    """Return images ``x`` (N, C, s, s) upsampled to ``size`` by repeating each pixel (``size``
    a whole multiple of ``s``); ``x`` itself when it is that size already."""
    factor = size // x.shape[-1]
    if factor == 1:
        return x
    return x.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)


def sample_views(
    x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, input_size: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(views, labels)`` for a training batch: ``cfg.views_per_image`` random views per image.

    Each image keeps its label (a row of ``y``) on every view; offsets are drawn without replacement
    per image.
    """
    per = cfg.views**2
    views = split_views(x, cfg.views, input_size).reshape(len(x), per, *x.shape[1:2], input_size, input_size)
    take = cfg.views_per_image if 0 < cfg.views_per_image < per else per
    if take < per:
        picks = torch.rand(len(x), per, generator=gen).argsort(dim=1)[:, :take]
        views = views[torch.arange(len(x))[:, None], picks]
    return views.reshape(len(x) * take, *views.shape[2:]), y.repeat_interleave(take, dim=0)


@torch.inference_mode()
def predict_view_scores(
    model: nn.Module, images: np.ndarray, stride: int, input_size: int, batch_size: int = 64
) -> np.ndarray:
    """Return the sigmoid scores (N, stride**2) float64 of every strided view of uint8 NHWC ``images``."""
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size])).permute(0, 3, 1, 2)
        views = split_views(x.float().div_(255.0), stride, input_size)
        out.append(torch.sigmoid(model(views)).double().reshape(-1, stride**2))
    return torch.cat(out).numpy() if out else np.zeros((0, stride**2))


def validation_scores(model: nn.Module, images: np.ndarray, cfg: TrainConfig, input_size: int) -> np.ndarray:
    """Return one score per image (N,): the model's, or the mean view score when training on views."""
    if cfg.views == 1:
        return predict_scores(model, images)
    return predict_view_scores(model, images, cfg.views, input_size).mean(axis=1)


@torch.inference_mode()
def predict_scores(model: nn.Module, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Return sigmoid scores (N,) float64 of uint8 NHWC ``images`` (model put in eval mode)."""
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size])).permute(0, 3, 1, 2)
        out.append(torch.sigmoid(model(x.float().div_(255.0))).double())
    return torch.cat(out).numpy() if out else np.zeros(0)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def _lr_factor(step: int, total: int, warmup: int, schedule: Schedule) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p, 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        e.copy_(b)


def bf16_supported() -> bool:
    """Return True when this CPU runs bfloat16 convolutions natively (oneDNN with AVX512-BF16/AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _train_val_sets(data: PatchSet, val: PatchSet | None, cfg: TrainConfig) -> tuple[PatchSet, PatchSet]:
    """Return ``(train, validation)``: ``val`` as given, or whole groups of ``data`` held out.

    Without groups every image is its own group.
    """
    if val is not None:
        return data, val
    return held_out_split(data, cfg.val_fraction, cfg.seed)


def held_out_split(data: PatchSet, val_fraction: float, seed: int) -> tuple[PatchSet, PatchSet]:
    """Return ``(train, validation)`` of ``data`` as training splits it: whole groups held out by
    :func:`grouped_split` (without groups every image is its own group)."""
    groups = data.groups if data.groups is not None else np.asarray(data.names, dtype=object)
    tr_idx, va_idx = grouped_split(groups, data.y, val_fraction, seed)
    return data.subset(tr_idx), data.subset(va_idx)


def _positive_weight(y_train: torch.Tensor, balance: bool) -> torch.Tensor:
    """Return BCE's ``pos_weight``: negatives / positives when ``balance``, else 1.

    Raises :class:`DataError` when the training split holds only one class.
    """
    n_pos = int(y_train.sum())
    n_neg = len(y_train) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise DataError("the training split holds only one class")
    return torch.tensor(n_neg / n_pos if balance else 1.0)


def _split_info(train_set: PatchSet, val_set: PatchSet, pos_weight: torch.Tensor) -> dict[str, Any]:
    """Return the sizes of the train/validation split and the loss weight, as stored in the metadata."""
    return {
        "train": len(train_set),
        "train_positive": int(train_set.y.sum()),
        "val": len(val_set),
        "val_positive": int(val_set.y.sum()),
        "val_groups": int(len(np.unique(val_set.groups))) if val_set.groups is not None else None,
        "pos_weight": float(pos_weight),
    }


@dataclass
class _Best:
    """The best validation epoch seen so far: its score, weights, number (1-based) and metrics."""

    score: float = -math.inf
    state: dict[str, Any] | None = None
    epoch: int = -1
    metrics: dict[str, Any] = field(default_factory=dict)

    def offer(self, score: float, epoch: int, metrics: dict[str, Any], model: nn.Module) -> bool:
        """Keep ``model``'s weights when ``score`` beats the best so far; return True when it did."""
        if not score > self.score:  # a NaN score never wins
            return False
        self.score, self.epoch, self.metrics = score, epoch, metrics
        self.state = copy.deepcopy(model.state_dict())
        return True


@dataclass
class _Loop:
    """The optimisation state of one training run: model, EMA, optimiser, data and step counters."""

    cfg: TrainConfig
    model: nn.Module
    ema: nn.Module | None
    opt: torch.optim.Optimizer
    sources: torch.Tensor
    y_train: torch.Tensor
    pos_weight: torch.Tensor
    input_size: int
    gen: torch.Generator
    steps_per_epoch: int
    total: int
    warmup: int
    use_bf16: bool
    teacher: Teacher | None = None
    step: int = 0
    seen: int = 0

    @property
    def selected(self) -> nn.Module:
        """Return the model that is validated and saved: the EMA when there is one."""
        return self.ema if self.ema is not None else self.model

    def batch_step(self, idx: torch.Tensor) -> torch.Tensor:
        """Augment the sources at ``idx``, take one optimiser step; return the batch loss."""
        cfg = self.cfg
        x = augment_batch(self.sources[idx], cfg.size, cfg.augment, self.gen)
        target = self.y_train[idx]
        teacher, taught = self.teacher, None
        if teacher is not None and teacher.sees == "crop":
            taught = teacher.scores(x)
        if cfg.views > 1:
            if taught is not None:  # the crop's score goes with each of its views, as its label does
                target = torch.stack([target, taught], dim=1)
            x, target = sample_views(x, target, cfg, self.input_size, self.gen)
            if taught is not None:
                target, taught = target[:, 0], target[:, 1]
        if teacher is not None and teacher.sees == "view":
            taught = teacher.scores(x)
        x = x.contiguous(memory_format=torch.channels_last)
        for g in self.opt.param_groups:
            g["lr"] = cfg.lr * _lr_factor(self.step, self.total, self.warmup, cfg.schedule)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.use_bf16):
            logits = self.model(x)
        loss = training_loss(logits.float(), target, self.pos_weight, taught, cfg.teacher_weight)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.ema is not None:
            # Early on the EMA would mostly remember the random init; ramp its decay up.
            _ema_update(self.ema, self.model, min(cfg.ema_decay, (1 + self.step) / (10 + self.step)))
        self.seen += len(idx)
        self.step += 1
        return loss

    def epoch(self, epoch: int, bar: Any, task: Any) -> list[float]:
        """Run one epoch (stopping at the step budget); return its batch losses."""
        cfg = self.cfg
        self.model.train()
        perm = torch.randperm(len(self.sources), generator=self.gen)
        losses = []
        for b in range(self.steps_per_epoch):
            if self.step >= self.total:
                break
            loss = self.batch_step(perm[b * cfg.batch_size : (b + 1) * cfg.batch_size])
            losses.append(loss.item())
            bar.update(task, advance=1, description=f"epoch {epoch + 1}/{cfg.epochs} loss {loss:.3f}")
        return losses


def _start_loop(
    cfg: TrainConfig,
    train_set: PatchSet,
    y_train: torch.Tensor,
    pos_weight: torch.Tensor,
    gen: torch.Generator,
) -> tuple[_Loop, str, dict[str, Any]]:
    """Return the training loop for ``cfg`` on ``train_set`` with the model's arch and arch kwargs."""
    if cfg.size % cfg.views:
        raise DataError(f"a {cfg.size} px crop does not split into views at stride {cfg.views}")
    model, arch, arch_kwargs, input_size = initial_model(cfg)
    # channels_last roughly halves the CPU time of these thin convolutions (oneDNN).
    model = model.to(memory_format=torch.channels_last)
    steps_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    loop = _Loop(
        cfg=cfg,
        model=model,
        ema=copy.deepcopy(model) if cfg.ema_decay > 0 else None,
        opt=torch.optim.Adam(_param_groups(model, cfg.weight_decay), lr=cfg.lr),
        sources=torch.from_numpy(np.ascontiguousarray(train_set.images)),
        y_train=y_train,
        pos_weight=pos_weight,
        input_size=input_size,
        gen=gen,
        steps_per_epoch=steps_per_epoch,
        total=total,
        warmup=int(cfg.warmup_epochs * steps_per_epoch),
        use_bf16=bf16_supported() if cfg.bf16 is None else cfg.bf16,
        teacher=load_teacher(cfg),
    )
    return loop, arch, arch_kwargs


@dataclass(frozen=True)
class Teacher:
    """A distillation teacher: its model (eval mode), what it scores and its input side.

    ``sees`` is ``"crop"`` (the whole augmented crop: a full-resolution model) or ``"view"`` (the
    same view as the student, upsampled to ``input_size``: a model trained on views).
    """

    model: nn.Module
    sees: Literal["crop", "view"]
    input_size: int

    @torch.no_grad()
    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Return the teacher's scores (N,) of ``x`` (upsampled to its input when smaller)."""
        x = upsample_nearest(x, self.input_size).contiguous(memory_format=torch.channels_last)
        return torch.sigmoid(self.model(x).float())


def training_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    pos_weight: torch.Tensor,
    teacher_scores: torch.Tensor | None = None,
    teacher_weight: float = 0.0,
) -> torch.Tensor:
    """Return the batch loss: BCE on the labels with ``pos_weight`` (class balance) and, given a
    teacher's scores, ``teacher_weight`` of it replaced by BCE on those scores unweighted (the
    teacher was trained balanced already: weighting its scores again would skew towards positives)."""
    loss = F.binary_cross_entropy_with_logits(logits, labels, pos_weight=pos_weight)
    if teacher_scores is None or teacher_weight == 0.0:
        return loss
    distil = F.binary_cross_entropy_with_logits(logits, teacher_scores)
    return (1.0 - teacher_weight) * loss + teacher_weight * distil


def load_teacher(cfg: TrainConfig) -> Teacher | None:
    """Return ``cfg.teacher`` (None without one): a model trained on views at ``cfg.views`` scores
    the student's views, any other model of ``cfg.size`` px input the whole crop.

    Raises :class:`DataError` when it fits neither or the weight is not in [0, 1].
    """
    if cfg.teacher is None:
        return None
    if not 0.0 <= cfg.teacher_weight <= 1.0:
        raise DataError(
            f"the teacher's weight must be in [0, 1], got {cfg.teacher_weight}", settings=("teacher",)
        )
    from onepixel.models.registry import load_model

    model, meta = load_model(cfg.teacher)
    model = model.eval().to(memory_format=torch.channels_last)
    views = meta.info.get("views")
    if cfg.views > 1 and views and views.get("stride") == cfg.views and meta.input_size % cfg.view_size == 0:
        return Teacher(model, "view", meta.input_size)
    if meta.input_size == cfg.size:
        return Teacher(model, "crop", meta.input_size)
    raise DataError(
        f"the teacher {cfg.teacher} takes {meta.input_size} px images: neither the {cfg.size} px crops "
        f"nor, as a model trained on views at stride {cfg.views}, their {cfg.view_size} px views",
        settings=("teacher",),
    )


def _epoch_row(
    epoch: int, losses: list[float], loop: _Loop, metrics: dict[str, Any], t_start: float
) -> dict[str, Any]:
    """Return the history row of a finished epoch (1-based ``epoch``)."""
    return {
        "epoch": epoch,
        "loss": float(np.mean(losses)),
        "lr": loop.opt.param_groups[0]["lr"],
        "val_roc_auc": metrics["roc_auc"],
        "val_balanced_accuracy": metrics["balanced_accuracy"],
        "seconds": time.perf_counter() - t_start,
    }


def _epoch_line(row: dict[str, Any], best: bool) -> str:
    """Return the console line of an epoch's history row (a star marks the best so far)."""
    return (
        f"epoch {row['epoch']:>3}  loss {row['loss']:.4f}  val AUC {row['val_roc_auc']:.4f}  "
        f"val bal.acc {row['val_balanced_accuracy']:.4f}" + ("  *" if best else "")
    )


def train_classifier(
    data: PatchSet,
    cfg: TrainConfig,
    *,
    val: PatchSet | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train ``cfg.arch`` on ``data`` and return the model of the best validation epoch.

    ``data`` holds source patches (N, S, S, 3) with S >= ``cfg.size`` and the figure at the
    centre (AMi-Br: 128 px). Without ``val``, whole ``data.groups`` (slides) are held out for
    validation; without groups every image is its own group.
    """
    if data.images.shape[1] < cfg.size or data.images.shape[2] < cfg.size:
        raise DataError(f"training images of {data.images.shape[1:3]} are smaller than {cfg.size} px")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    train_set, val_set = _train_val_sets(data, val, cfg)
    val_images, y_val = center_crop(val_set.images, cfg.size), val_set.y
    y_train = torch.from_numpy(train_set.y).float()
    pos_weight = _positive_weight(y_train, cfg.balance)
    split = _split_info(train_set, val_set, pos_weight)
    loop, arch, arch_kwargs = _start_loop(cfg, train_set, y_train, pos_weight, gen)
    history: list[dict[str, Any]] = []
    best = _Best()
    train_time, t_start = 0.0, time.perf_counter()
    with _progress(progress) as bar:
        task = bar.add_task("training", total=loop.total)
        for epoch in range(cfg.epochs):
            if loop.step >= loop.total:
                break
            t0 = time.perf_counter()
            losses = loop.epoch(epoch, bar, task)
            train_time += time.perf_counter() - t0
            metrics = binary_metrics(
                y_val, validation_scores(loop.selected, val_images, cfg, loop.input_size)
            )
            row = _epoch_row(epoch + 1, losses, loop, metrics, t_start)
            history.append(row)
            best.offer(metrics[cfg.select_metric], epoch + 1, metrics, loop.selected)
            bar.console.print(_epoch_line(row, best.epoch == epoch + 1))
            if on_epoch is not None:
                on_epoch(row)
    final = create_model(arch, **arch_kwargs)
    final.load_state_dict(best.state if best.state is not None else loop.model.state_dict())
    final.eval()
    vote, val_metrics = None, best.metrics
    if cfg.views > 1 and cfg.tune_vote_threshold and 0 < int(np.sum(y_val)) < len(y_val):
        vote = fold_vote_threshold(final, val_images, y_val, cfg.views, loop.input_size)
        val_metrics = binary_metrics(y_val, validation_scores(final, val_images, cfg, loop.input_size))
    return TrainResult(
        model=final,
        history=history,
        best_epoch=best.epoch,
        val_metrics=val_metrics,
        vote_threshold=vote,
        images_per_second=loop.seen / train_time if train_time else float("nan"),
        seconds=time.perf_counter() - t_start,
        split=split,
        arch=arch,
        arch_kwargs=arch_kwargs,
        input_size=loop.input_size,
    )


@torch.no_grad()
def fold_vote_threshold(
    model: nn.Module, images: np.ndarray, y: np.ndarray, stride: int, input_size: int
) -> dict[str, Any]:
    """Choose the view-score threshold on ``images`` (validation) with :func:`tune_view_threshold`,
    fold it into ``model``'s head bias (a score >= 0.5 afterwards is one >= the threshold before)
    and return what was chosen."""
    from onepixel.models.logit_mean import shift_logit
    from onepixel.models.votes import tune_view_threshold

    scores = predict_view_scores(model, images, stride, input_size)
    threshold, mean = tune_view_threshold(scores, np.asarray(y) == 1)
    shift_logit(model, -math.log(threshold / (1.0 - threshold)))
    return {
        "threshold": threshold,
        "validation_certified_balanced_accuracy_mean_k0_5": round(mean, 4),
        "folded_into": "the head's bias (logit of the threshold subtracted)",
    }


def initial_model(cfg: TrainConfig) -> tuple[nn.Module, str, dict[str, Any], int]:
    """Return ``(model, arch, arch_kwargs, input side)`` to train: fresh, or ``cfg.init_from``'s weights."""
    if cfg.init_from is None:
        return create_model(cfg.arch, **cfg.arch_kwargs), cfg.arch, dict(cfg.arch_kwargs), cfg.view_size
    from onepixel.models.registry import load_model

    model, meta = load_model(cfg.init_from)
    if meta.input_size % cfg.view_size:
        raise DataError(
            f"{cfg.init_from} takes {meta.input_size} px images; views of {cfg.view_size} px cannot be "
            "scaled to that by whole pixels"
        )
    return model.train(), meta.arch, dict(meta.arch_kwargs), meta.input_size


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
    )


def git_commit(path: Path | None = None) -> str | None:
    """Return the git commit of the code (with ``-dirty`` when the tree has changes), or None."""
    where = str(path or Path(__file__).resolve().parent)
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "../models", "../data"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")


def build_meta(
    name: str,
    data: PatchSet,
    cfg: TrainConfig,
    result: TrainResult,
    *,
    data_info: dict[str, Any] | None = None,
    test_metrics: dict[str, Any] | None = None,
    command: str | None = None,
) -> ModelMeta:
    """Return the :class:`ModelMeta` for a trained model: labels, settings, data and metrics."""
    info: dict[str, Any] = {
        "data": data_info or {},
        "training": cfg.to_dict(),
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "best_epoch": result.best_epoch,
        "split": result.split,
        "validation": result.val_metrics,
        "test": test_metrics,
        "history": result.history,
        "images_per_second": round(result.images_per_second, 1),
        "train_seconds": round(result.seconds, 1),
        "torch_threads": torch.get_num_threads(),
        "bf16_autocast": bf16_supported() if cfg.bf16 is None else cfg.bf16,
        "torch": torch.__version__,
        "code_commit": git_commit(),
        "command": command,
    }
    if cfg.views > 1:
        info["views"] = {
            "stride": cfg.views,
            "input_size": cfg.size,
            "view_size": cfg.view_size,
            "init_from": cfg.init_from,
            "vote_threshold": result.vote_threshold,
        }
    return ModelMeta(
        name=name,
        arch=result.arch,
        classes=data.classes,
        positive=data.positive,
        input_size=result.input_size,
        arch_kwargs=dict(result.arch_kwargs),
        info=info,
    )


def fit_data(
    root: str | Path,
    cfg: TrainConfig,
    out: str | Path,
    *,
    name: str = "resnet_custom_amibr",
    split: str | None = None,
    positive: str | None = None,
    progress: bool = True,
    command: str | None = None,
) -> tuple[Path, ModelMeta]:
    """Train on the data folder ``root`` and save the weights; return ``(path, meta)``.

    :func:`onepixel.data.open.open_patches` decides the layout: AMi-Br trains on its train split
    and is scored on its test split; any other folder is read as class folders (under its
    ``split`` folder when given, ``positive`` naming the positive class).
    """
    from onepixel.data.open import open_patches

    opened = open_patches(root, split, input_size=None, positive=positive, amibr_split="train")
    if opened.layout == "amibr":
        if opened.split != "train":
            raise DataError(
                f"{opened.root} is AMi-Br: a model trains on its train split, not {opened.split!r}",
                settings=("split",),
            )
        return _fit_amibr(opened.root, opened.patches, cfg, out, name, progress, command)
    return _fit_folder(opened.root, split, opened.patches, cfg, out, name, progress, command)


def _fit_amibr(
    root: Path,
    train: PatchSet,
    cfg: TrainConfig,
    out: str | Path,
    name: str,
    progress: bool,
    command: str | None,
) -> tuple[Path, ModelMeta]:
    """Train on the AMi-Br train split ``train`` of ``root``, score the test split, save; return
    (path, meta)."""
    from onepixel.data.download import AMIBR_COMMIT, AMIBR_REPO
    from onepixel.data.open import open_patches
    from onepixel.models.registry import save_model

    test = open_patches(root, "test").patches
    result = train_classifier(train, cfg, progress=progress)
    test_metrics = binary_metrics(
        test.y, validation_scores(result.model, test.images, cfg, result.input_size)
    )
    data_info = {
        "name": "AMi-Br",
        "source": f"https://github.com/{AMIBR_REPO}",
        "commit": AMIBR_COMMIT,
        "train_split": "amibr_train_split.csv rows",
        "test_split": "all other images",
        "train": len(train),
        "train_positive": int(train.y.sum()),
        "test": len(test),
        "test_positive": int(test.y.sum()),
        "input": f"{cfg.size}x{cfg.size} crops of the 128x128 sources (centre crop at evaluation)",
    }
    meta = build_meta(
        name, train, cfg, result, data_info=data_info, test_metrics=test_metrics, command=command
    )
    return save_model(result.model, meta, out), meta


def _fit_folder(
    root: Path,
    split: str | None,
    data: PatchSet,
    cfg: TrainConfig,
    out: str | Path,
    name: str,
    progress: bool,
    command: str | None,
) -> tuple[Path, ModelMeta]:
    """Train on a class-per-folder set ``data`` read from ``root`` (its ``split`` folder), save;
    return (path, meta)."""
    from onepixel.models.registry import save_model

    result = train_classifier(data, cfg, progress=progress)
    data_info = {
        "name": str(root),
        "split": split,
        "train": len(data),
        "train_positive": int(data.y.sum()),
        "classes": list(data.classes),
    }
    meta = build_meta(name, data, cfg, result, data_info=data_info, command=command)
    return save_model(result.model, meta, out), meta


def teacher_lines(cfg: dict[str, Any]) -> list[str]:
    """Return the model card's line on distillation (none when trained without a teacher)."""
    if not cfg.get("teacher"):
        return []
    weight = cfg.get("teacher_weight", 0.5)
    return [
        f"- distilled from `{cfg['teacher']}`: {weight:g} of the loss is on the teacher's score (plain "
        f"BCE), {1 - weight:g} on the label (BCE with pos_weight); a model trained on views scores the "
        "same view, upsampled, any other model the whole crop"
    ]


def vote_threshold_lines(vote: dict[str, Any] | None) -> list[str]:
    """Return the model card's lines on the tuned view threshold (none when it was not tuned)."""
    if not vote:
        return []
    return [
        f"A view votes positive when its trained score is >= {vote['threshold']:g}, the threshold with the "
        "highest certified balanced accuracy (mean over k = 0..5) on the validation split "
        f"({vote['validation_certified_balanced_accuracy_mean_k0_5']:.4f}); it is folded into the head's "
        "bias, so the saved model's score is >= 0.5 exactly then and every tool's 0.5 rule votes with it.",
        "",
    ]


def views_section(meta: ModelMeta, certified: dict[str, Any] | None = None) -> list[str]:
    """Return the model card lines on training on views and, given ``onepixel certify --json``'s
    output, what the ensemble certifies."""
    views = meta.info["views"]
    stride, size, view = views["stride"], views["input_size"], views["view_size"]
    lines = [
        "## Views: a base model for certified pixel-partition voting",
        "",
        (
            "Each member was trained on strided views (its command above)"
            if "members" in meta.info
            else "Trained on strided views"
        )
        + f": every {size} px crop splits into {stride} x {stride} = {stride**2} views "
        f"of {view} x {view} px (view (dy, dx) holds the pixels with y % {stride} == dy and "
        f"x % {stride} == dx), "
        "each an example with the image's label"
        + (
            f", upsampled to the model's {meta.input_size} px input by repeating pixels"
            if meta.input_size != view
            else ""
        )
        + (
            f"; {meta.info['training'].get('views_per_image') or stride**2} random views per image and step"
            if "members" not in meta.info
            else "; the ensemble scores each view with every member, and the view votes once"
        )
        + (f"; fine-tuned from `{views['init_from']}`" if views.get("init_from") else "")
        + ".",
        "",
        *vote_threshold_lines(views.get("vote_threshold")),
        f"Use: `onepixel certify --target certified:{meta.name}` (a bundled name; any weights file works "
        "as `certified:<file>`, and `--target certified` is the bundled default view model). Each of the "
        f"{stride**2} views votes; k changed pixels change at most k votes, so a vote won by a margin "
        "above 2k (ties go to the positive label) is certified against every k-pixel change. The scores "
        "above are of the mean view score; the vote's are in the certified table.",
        "",
    ]
    if certified:
        lines += [
            f"### What it certifies (AMi-Br test split, n = {certified['n']}; `onepixel certify --json`)",
            "",
            "| pixels k | certified balanced accuracy | certified share |",
            "|---|---|---|",
            f"| 0 (clean vote) | {certified['clean_balanced_accuracy']:.4f} | 1.0000 |",
        ]
        lines += [
            f"| {r['pixels']} | {r['certified_balanced_accuracy']:.4f} | {r['certified_share']:.4f} |"
            for r in certified["certified"]
        ]
        lines.append("")
    return lines


def scores_section(info: dict[str, Any]) -> list[str]:
    """Return a model card's "Scores" heading and table (validation and test rows in ``info``)."""
    lines = [
        "## Scores (threshold 0.5)",
        "",
        "| split | n | positive | balanced accuracy | ROC AUC | sensitivity | specificity |",
        "|---|---|---|---|---|---|---|",
    ]
    for part, m in scored_splits(info):
        lines.append(
            f"| {part} | {m['n']} | {m['n_positive']} | {m['balanced_accuracy']:.4f} | "
            f"{m['roc_auc']:.4f} | {m['sensitivity']:.4f} | {m['specificity']:.4f} |"
        )
    return lines


def model_card(meta: ModelMeta, certified: dict[str, Any] | None = None) -> str:
    """Return a Markdown model card for trained weights, built from their metadata (and, for a
    view-trained model, what it certifies)."""
    info = meta.info
    cfg, aug = info["training"], info["training"]["augment"]
    lines = [
        f"# {meta.name}",
        "",
        f"`{meta.arch}` (deep-histopath's pre-activation bottleneck ResNet, {meta.input_size}x"
        f"{meta.input_size} RGB input, one logit; score = sigmoid = probability of `{meta.positive}`).",
        f"Classes: {', '.join(meta.classes)}; positive: `{meta.positive}`."
        + (f" Architecture changed from the original: {meta.arch_kwargs}." if meta.arch_kwargs else ""),
        "",
        "## Data",
        "",
    ]
    data = info.get("data", {})
    lines += [f"- {k}: {v}" for k, v in data.items()]
    split = info.get("split", {})
    lines += [
        f"- validation: {split.get('val')} images ({split.get('val_positive')} positive) from "
        f"{split.get('val_groups')} whole slides of the train split, held out from training",
        "",
        "## Training",
        "",
        f"Command: `{info.get('command')}`",
        "",
        f"- Adam, lr {cfg['lr']} ({cfg['schedule']} schedule, {cfg['warmup_epochs']} warm-up epoch), "
        f"batch {cfg['batch_size']}, {cfg['epochs']} epochs, weight decay {cfg['weight_decay']} on conv "
        "weights",
        f"- loss: BCE with pos_weight {split.get('pos_weight', 0):.3f} (= negatives / positives), so the "
        "0.5 threshold suits balanced accuracy",
        *teacher_lines(cfg),
        f"- EMA of weights (decay {cfg['ema_decay']}); the epoch with the best validation "
        f"{cfg['select_metric']} is kept (epoch {info.get('best_epoch')})",
        f"- augmentation: 64 px crop of the 128 px source with its centre within {aug['max_shift']} px "
        f"of the figure, 90-degree rotations and flips, brightness +-{aug['brightness'] * 255:.0f}/255, "
        f"contrast {aug['contrast']}, saturation {aug['saturation']}, hue +-{aug['hue']}",
        f"- seed {info.get('seed')}; code commit {info.get('code_commit')}; torch {info.get('torch')}, "
        f"{info.get('torch_threads')} CPU thread(s), bf16 autocast {info.get('bf16_autocast')}",
        f"- {info.get('images_per_second')} training images/s; {info.get('train_seconds')} s in all",
        "",
        *scores_section(info),
    ]
    lines += [
        "",
        "Reproduce the test row: `onepixel evaluate --split test` (bundled weights, AMi-Br test split)."
        if "views" not in info
        else "Scores of the mean view score; reproduce the certified table below: "
        "`onepixel certify --target certified --json`.",
        "",
    ]
    if "views" in info:
        lines += views_section(meta, certified)
    return "\n".join(lines)
