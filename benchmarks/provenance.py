"""Provenance for benchmark results, and result files that are never overwritten.

``provenance(argv)`` returns what a reader needs to trust and rerun a number: the git commit and
whether the tree was dirty, the date, CPU model, core count, torch threads, the load average
(call :func:`finish` at the end to add the closing load), the versions of torch, numpy and the
peers, and the exact command. ``new_result_path(stem)`` returns ``benchmarks/results/<stem>.json``,
or ``<stem>_2.json``, ``<stem>_3.json``... when that name is taken.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "numpy", "onnxruntime", "torchattacks", "adversarial-robustness-toolbox", "scipy")


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo (or platform's guess)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions() -> dict[str, str | None]:
    """Return the installed versions of torch, numpy and the peers (None when absent)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def provenance(argv: list[str] | None = None) -> dict[str, Any]:
    """Return the provenance dict of a benchmark run started now with ``argv`` (default sys.argv)."""
    import torch

    argv = sys.argv if argv is None else argv
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(dirty) if dirty is not None else None,
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_start": list(os.getloadavg()),
        "versions": versions(),
        "command": "python " + " ".join(shlex.quote(a) for a in argv),
    }


def finish(prov: dict[str, Any]) -> dict[str, Any]:
    """Return ``prov`` with the load average at the end of the run added."""
    return {**prov, "load_average_end": list(os.getloadavg())}


def new_result_path(stem: str, suffix: str = ".json") -> Path:
    """Return a path under benchmarks/results/ named after ``stem`` that no file holds yet: the
    stem itself, else ``<stem>_<n>`` numbered after the highest existing ``n`` (never into a gap,
    so a larger number is always a later run)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{stem}{suffix}"
    if not path.exists():
        return path
    numbers = [
        int(tail)
        for p in RESULTS.glob(f"{stem}_*{suffix}")
        if (tail := p.name[len(stem) + 1 : len(p.name) - len(suffix)]).isdigit()
    ]
    return RESULTS / f"{stem}_{max(numbers, default=1) + 1}{suffix}"
