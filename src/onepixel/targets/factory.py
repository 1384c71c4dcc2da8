"""One entry point from a user's target spec (name, file or URL) to a :class:`Target`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onepixel.models.registry import DEFAULT_MODEL
from onepixel.targets.base import Target


def open_target(spec: str | Path = "bundled", **kwargs: Any) -> Target:
    """Return the target that ``spec`` names.

    ``"bundled"`` (or empty): the default bundled weights in-process; another bundled weights
    name or a ``.safetensors`` path: in-process :class:`TorchTarget`; ``http://...`` or
    ``https://...``: :class:`HttpTarget`. ``kwargs`` go to the target's constructor (e.g.
    ``mode=``/``batch_size=`` in-process, ``timeout=``/``retries=`` over HTTP). A foreign model,
    ``model.onnx``, a TorchScript ``model.pt`` or ``package.module:factory``, opens through
    :mod:`onepixel.targets.foreign` (``spec=``/``batch_size=``; ``mode=`` does not apply to it).
    """
    text = str(spec).strip()
    from onepixel.targets.spec import is_foreign

    if is_foreign(text):
        from onepixel.targets.foreign import open_foreign

        kwargs.pop("mode", None)
        return open_foreign(text, **kwargs)
    if text.startswith(("http://", "https://")):
        from onepixel.targets.http import HttpTarget

        return HttpTarget(text, **kwargs)
    from onepixel.targets.local import TorchTarget

    name = DEFAULT_MODEL if text in ("", "bundled") else text
    return TorchTarget.from_pretrained(name, **kwargs)
