"""One entry point from a user's target spec (name, file or URL) to a :class:`Target`."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

from onepixel.models.registry import DEFAULT_MODEL
from onepixel.targets.base import Target


def open_target(spec: str | Path = "bundled", **kwargs: Any) -> Target:
    """Return the target that ``spec`` names; its ``info`` carries the canonical spec
    (:func:`canonical_spec`) and the weights' fingerprint (:func:`target_fingerprint`).

    ``"bundled"`` (or empty): the default bundled weights in-process; another bundled weights
    name or a ``.safetensors`` path: in-process :class:`TorchTarget`; ``http://...`` or
    ``https://...``: :class:`HttpTarget`. ``kwargs`` go to the target's constructor (e.g.
    ``mode=``/``batch_size=`` in-process, ``timeout=``/``retries=`` over HTTP). A foreign model,
    ``model.onnx``, a TorchScript ``model.pt`` or ``package.module:factory``, opens through
    :mod:`onepixel.targets.foreign` (``spec=``/``batch_size=``; ``mode=`` does not apply to it).

    ``certified`` opens the bundled view-trained model as a certified
    :class:`~onepixel.targets.partition.PartitionEnsemble`; ``certified:<spec>`` wraps any other
    spec, and ``certified@S:<spec>`` sets the stride (``stride=`` does too; default 4 zero-shot,
    a view-trained model's own stride otherwise).
    """
    text = str(spec).strip()
    target = _open(text, **kwargs)
    target.info = dataclasses.replace(
        target.info, spec=canonical_spec(text), fingerprint=target_fingerprint(text)
    )
    return target


def _open(text: str, **kwargs: Any) -> Target:
    """Return the target ``text`` names (see :func:`open_target`)."""
    from onepixel.targets.partition import is_certified_spec

    if is_certified_spec(text):
        return open_certified(text, **kwargs)
    from onepixel.targets.spec import is_foreign

    if is_foreign(text):
        from onepixel.targets.foreign import open_foreign

        kwargs.pop("mode", None)
        return open_foreign(text, **kwargs)
    if text.startswith(("http://", "https://")):
        from onepixel.targets.http import HttpTarget

        kwargs.pop("device", None)  # a served model runs where it is served
        return HttpTarget(text, **kwargs)
    from onepixel.targets.local import TorchTarget

    name = DEFAULT_MODEL if text in ("", "bundled") else text
    return TorchTarget.from_pretrained(name, **kwargs)


BUNDLED_VIEWS_MODEL = "resnet_custom_amibr_views4_w40"
# Views per forward pass of a base trained on views (24 64 px images' worth at stride 4): 16 px views
# are small, and few per pass leave the CPU on per-call overhead. Of 16-768, 384 was the fastest for
# the default view model on one thread (benchmarks/results/certify_cost_w40_t1.json); the thinner
# stride-1 pairs are fastest at 96-192 (set ``batch_size`` to override).
VIEW_CHUNK = 384


def canonical_spec(spec: str) -> str:
    """Return ``spec`` in the form a run config stores: paths made absolute, foreign specs in
    their canonical form, certified specs with their inner spec canonical."""
    from onepixel.targets.partition import certified_spec, is_certified_spec, parse_certified_spec
    from onepixel.targets.spec import canonical, is_foreign

    spec = str(spec).strip()
    if is_certified_spec(spec):
        stride, inner = parse_certified_spec(spec)
        return certified_spec(None if inner is None else canonical_spec(inner), stride)
    if spec.endswith(".safetensors"):
        return str(Path(spec).expanduser().resolve())
    return canonical(spec) if is_foreign(spec) else spec


def target_fingerprint(spec: str) -> str | None:
    """Return the first 16 hex digits of the SHA-256 of a local target's weights (None over HTTP).

    A certified spec has its base's fingerprint (the stride is part of the spec itself); a
    foreign model's comes from :func:`onepixel.targets.spec.fingerprint`.
    """
    from onepixel.models.registry import weights_path
    from onepixel.targets.partition import is_certified_spec, parse_certified_spec
    from onepixel.targets.spec import fingerprint, is_foreign

    spec = str(spec).strip()
    if is_certified_spec(spec):
        return target_fingerprint(parse_certified_spec(spec)[1] or BUNDLED_VIEWS_MODEL)
    if spec.startswith(("http://", "https://")):
        return None
    if is_foreign(spec):
        return fingerprint(spec)
    path = weights_path(DEFAULT_MODEL if spec in ("", "bundled") else spec)
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def open_certified(spec: str, stride: int | None = None, **kwargs: Any) -> Target:
    """Return the :class:`~onepixel.targets.partition.PartitionEnsemble` a ``certified`` spec names.

    A base model whose weights say they were trained on views (``info["views"]``) is used at its
    own stride and the ensemble takes ``view size x stride`` images, scoring :data:`VIEW_CHUNK`
    views per forward pass unless ``batch_size=`` says otherwise; any other base is used zero-shot
    at ``stride`` (default 4) on images of its own size.
    """
    from onepixel.targets.partition import (
        DEFAULT_STRIDE,
        PartitionEnsemble,
        PartitionError,
        parse_certified_spec,
    )

    spec_stride, inner = parse_certified_spec(spec)
    if stride is not None and spec_stride is not None and stride != spec_stride:
        raise PartitionError(
            f"{spec!r} says stride {spec_stride} but stride {stride} was asked", settings=("stride",)
        )
    stride = spec_stride if spec_stride is not None else stride
    base = open_target(BUNDLED_VIEWS_MODEL if inner is None else inner, **kwargs)
    trained = getattr(getattr(base, "meta", None), "info", {}).get("views")
    if trained:
        if "batch_size" not in kwargs and hasattr(base, "batch_size"):
            base.batch_size = VIEW_CHUNK
        if stride is not None and stride != trained["stride"]:
            raise PartitionError(
                f"{base.info.name} was trained on views at stride {trained['stride']}, not {stride}: "
                "leave the stride out or wrap another model",
                settings=("stride",),
            )
        return PartitionEnsemble(base, stride=trained["stride"], size=trained["input_size"])
    return PartitionEnsemble(base, stride=DEFAULT_STRIDE if stride is None else stride)
