"""Training throughput of resnet_custom on this CPU: images/s of one training step (augment + step).

For each batch size and bf16 autocast on/off, times full steps (augmentation of 128 px uint8
sources, forward, backward, Adam) on random sources. Rounds are interleaved across settings so
load from other processes hits every setting alike; the median of the rounds is reported.

    python benchmarks/train_speed.py [--threads 1] [--rounds 5] [--out PATH]

The JSON goes to a new name under ``benchmarks/results/`` (``train_speed.json``,
``train_speed_2.json``...) with provenance (:mod:`provenance`); an existing ``--out`` is refused.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import finish, new_result_path, provenance  # noqa: E402

from onepixel.models import create_model  # noqa: E402
from onepixel.models.augment import AugmentConfig, augment_batch  # noqa: E402
from onepixel.models.train import bf16_supported  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def step_seconds(batch: int, bf16: bool, steps: int, gen: torch.Generator) -> float:
    """Return the mean seconds of one training step after a warm-up step."""
    model = create_model("resnet_custom").to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=7.7e-4)
    sources = torch.randint(0, 256, (batch, 128, 128, 3), dtype=torch.uint8, generator=gen)
    y = (torch.rand(batch, generator=gen) < 0.22).float()
    cfg = AugmentConfig()
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        x = augment_batch(sources, 64, cfg, gen).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - start)
    return sum(times) / len(times)


def main() -> None:
    """Measure and print images/s per setting; write the JSON to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batches", default="32,128")
    parser.add_argument(
        "--out", type=Path, default=None, help="result path (default: a new name in benchmarks/results/)"
    )
    args = parser.parse_args()
    if args.out is not None and args.out.exists():
        parser.error(f"--out {args.out} exists: results are never overwritten, name a new file")
    torch.set_num_threads(args.threads)
    prov = provenance()
    gen = torch.Generator().manual_seed(0)
    settings = [(int(b), bf) for b in args.batches.split(",") for bf in (False, True)]
    if not bf16_supported():
        settings = [s for s in settings if not s[1]]
    rounds: dict[str, list[float]] = {f"batch{b}_bf16={bf}": [] for b, bf in settings}
    for _ in range(args.rounds):
        for b, bf in settings:
            rounds[f"batch{b}_bf16={bf}"].append(b / step_seconds(b, bf, args.steps, gen))
    result = {
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "images_per_second_median": {k: round(statistics.median(v), 1) for k, v in rounds.items()},
        "rounds": rounds,
        "provenance": finish(prov),
    }
    for key, value in result["images_per_second_median"].items():
        print(f"{key:>22}: {value:8.1f} images/s")
    path = args.out or new_result_path("train_speed")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
