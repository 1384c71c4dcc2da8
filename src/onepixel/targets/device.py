"""Where an in-process model runs: ``auto``, ``cpu`` or ``cuda``, parsed once into a torch device
(or onnxruntime's execution providers)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from onepixel.targets.base import TargetError

Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


def parse_device(text: str | None) -> Device:
    """Return ``text`` as a :data:`Device` (None: ``auto``); TargetError naming the choices otherwise."""
    value = "auto" if text is None else str(text).strip().lower()
    if value not in DEVICES:
        raise TargetError(f"unknown device {text!r}: use auto, cpu or cuda", settings=("device",))
    return value  # type: ignore[return-value]


def torch_device(device: Device | str | None = "auto"):
    """Return the ``torch.device`` to run on: cuda for ``auto`` when torch sees a GPU, else cpu.

    ``cuda`` without a GPU raises :class:`TargetError`.
    """
    import torch

    chosen = parse_device(device)
    has_cuda = torch.cuda.is_available()
    if chosen == "cuda" and not has_cuda:
        raise TargetError(
            f"device cuda asked for, but torch {torch.__version__} sees no CUDA GPU; use cpu or auto",
            settings=("device",),
        )
    return torch.device("cuda" if chosen == "cuda" or (chosen == "auto" and has_cuda) else "cpu")


def onnx_providers(device: Device | str | None, available: Sequence[str]) -> list[str]:
    """Return onnxruntime's execution providers for ``device`` given the ``available`` ones.

    ``auto`` takes CUDA when onnxruntime offers it (CPU stays as the fallback for unsupported
    operators); ``cuda`` without it raises :class:`TargetError`; ``cpu`` is CPU only.
    """
    chosen = parse_device(device)
    if chosen == "cpu":
        return [CPU_PROVIDER]
    if CUDA_PROVIDER in available:
        return [CUDA_PROVIDER, CPU_PROVIDER]
    if chosen == "cuda":
        raise TargetError(
            f"device cuda asked for, but this onnxruntime offers only {list(available)}; install "
            "onnxruntime-gpu, or use cpu or auto",
            settings=("device",),
        )
    return [CPU_PROVIDER]
