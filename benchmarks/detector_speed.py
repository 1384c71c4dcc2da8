"""Detector throughput: VAE training steps, VAE scoring, residual scoring (images/s, one thread).

Usage: python benchmarks/detector_speed.py [--data AMI_BR] [--n 512] [--threads 1] [--out PATH]
Prints and writes JSON with provenance (:mod:`provenance`) to a new name under
benchmarks/results/ (``detector_speed.json``, ``detector_speed_2.json``...); an existing
``--out`` is refused.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import finish, new_result_path, provenance  # noqa: E402

from onepixel.data.amibr import load_amibr  # noqa: E402
from onepixel.defense.detector import VAEDetector  # noqa: E402
from onepixel.defense.residual import ResidualDetector  # noqa: E402
from onepixel.defense.train import TrainConfig, train_vae  # noqa: E402
from onepixel.defense.vae import VAE  # noqa: E402


def rate(fn, n: int, repeats: int = 3) -> float:
    """Return the best images/s of ``repeats`` calls of fn() that each process n images."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n / best


def main() -> None:
    """Measure each detector step's images/s, print them and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    here = Path(__file__).resolve().parent
    parser.add_argument(
        "--data", default=os.environ.get("ONEPIXEL_DATA", here.parents[1] / "shared/data/ami-br")
    )
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--out", type=Path, default=None, help="result path (default: a new name in benchmarks/results/)"
    )
    args = parser.parse_args()
    if args.out is not None and args.out.exists():
        parser.error(f"--out {args.out} exists: results are never overwritten, name a new file")
    torch.set_num_threads(args.threads)
    prov = provenance()
    images = load_amibr(args.data, "test").images[: args.n]
    vae = VAEDetector.from_pretrained("vae_amibr")
    residual = ResidualDetector()
    n = len(images)
    train_n = 300
    result = train_vae(images[:train_n], TrainConfig(epochs=1, threads=args.threads), model=VAE())
    out = {
        "images": n,
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "load_average": os.getloadavg()[0],
        "vae_score_images_per_s": rate(lambda: vae.score(images), n),
        "vae_score_p3_p5_p7_images_per_s": rate(lambda: vae.score_all(images), n),
        "residual_score_images_per_s": rate(lambda: residual.score(images), n),
        "residual_locate_repair_images_per_s": rate(lambda: residual.repair(images), n),
        "vae_train_images_per_s": result.images_per_second,
    }
    out["provenance"] = finish(prov)
    text = json.dumps(out, indent=2)
    print(text)
    path = args.out or new_result_path("detector_speed")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
