"""Device benchmark: full pass, DE and confidence maps of the bundled model on ``--device``.

For a machine with a GPU (``--device cuda``; ``auto`` takes it when torch sees one), and on CPU
for comparison. The bundled ResNet is fully convolutional, so ``--size`` runs it at other input
sizes (real AMi-Br test patches, centre-cropped from 128 px, or resized above 128) as a stand-in
for a user's model at that size. Measures, with wall time (a GPU's work is synchronised by the
copy of the scores back to the host):

- full pass: images/s of ``target.predict`` at each ``--batch`` size;
- DE: a de-noconv attack (popsize 200, ``--generations`` generations) of ``--de-images``
  images, queries/s;
- confidence map at L = 8: ``compute_confmap`` over ``--confmap-rows`` rows of one image,
  evaluations/s, extrapolated to a whole map at L = 8 and at the paper's L = 52 (the paper's
  anchor: about 5 h per L = 52 map of a 64-px image on one V100).

    python benchmarks/gpu.py [--device auto|cpu|cuda] [--size 64] [--batch 32 256 1024]
                             [--seconds 2] [--de-images 4] [--generations 3]
                             [--confmap-rows 1] [--threads N]

Writes ``benchmarks/results/gpu_<device>_<size>px.json`` (a new name when taken) with provenance.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import finish, new_result_path, provenance  # noqa: E402

import onepixel  # noqa: E402
from onepixel.analysis.confmap import compute_confmap  # noqa: E402
from onepixel.config import resolve_data_dir  # noqa: E402
from onepixel.data import open_patches  # noqa: E402
from onepixel.targets.device import torch_device  # noqa: E402
from onepixel.targets.local import TorchTarget  # noqa: E402

PAPER_LEVELS = 52
PAPER_V100_HOURS = 5.0
POPSIZE = 200
NATIVE = 128  # AMi-Br patches


def build_target(device: str, size: int, batch_size: int) -> TorchTarget:
    """Return the bundled model on ``device`` taking ``size``-px input."""
    import dataclasses

    base = TorchTarget.from_pretrained(mode="eager", pixel_mode="full", device="cpu")
    meta = dataclasses.replace(base.meta, input_size=size)
    return TorchTarget(base.model, meta, batch_size=batch_size, device=device)


def real_images(size: int, n: int) -> np.ndarray:
    """Return ``n`` real AMi-Br test patches at ``size`` px (crop when smaller than 128, else resize)."""
    opened = open_patches(resolve_data_dir(), "test", input_size=size, resize=size > NATIVE)
    return opened.patches.images[:n]


def full_pass(target: TorchTarget, images: np.ndarray, batches: list[int], seconds: float) -> list[dict]:
    """Return images/s of ``target.predict`` per request size (each measured for ``seconds``)."""
    rows = []
    for batch in batches:
        x = images[np.arange(batch) % len(images)]
        target.predict(x)  # warm-up: kernels, allocator, oneDNN primitives
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            target.predict(x)
            done += batch
        wall = time.perf_counter() - start
        rows.append({"batch": batch, "images": done, "seconds": wall, "images_per_s": done / wall})
    return rows


def de_rate(target: TorchTarget, images: np.ndarray, generations: int) -> dict[str, Any]:
    """Return queries/s of a de-noconv attack of ``images`` for ``generations`` generations."""
    budget = (generations + 1) * POPSIZE
    q0, start = target.queries, time.perf_counter()
    onepixel.attack_images(target, images, method="de-noconv", direction="lower", budget=budget, seed=0)
    wall = time.perf_counter() - start
    queries = target.queries - q0
    return {
        "images": len(images),
        "generations": generations,
        "queries": queries,
        "seconds": wall,
        "queries_per_s": queries / wall,
    }


def confmap_rate(target: TorchTarget, image: np.ndarray, rows: int, size: int) -> dict[str, Any]:
    """Return evaluations/s of a confidence map at L = 8 over ``rows`` rows, and whole-map
    extrapolations at L = 8 and L = 52 from that rate."""
    levels = 8
    compute_confmap(target, image, levels=levels, rows=[0], progress=False)  # warm-up
    start = time.perf_counter()
    cmap = compute_confmap(target, image, levels=levels, rows=list(range(rows)), progress=False)
    wall = time.perf_counter() - start
    evaluations = rows * size * levels**3
    rate = evaluations / wall
    full_8 = size * size * levels**3
    full_52 = size * size * PAPER_LEVELS**3
    return {
        "levels": levels,
        "rows": rows,
        "evaluations": evaluations,
        "seconds": wall,
        "evaluations_per_s": rate,
        "rows_done": int(cmap.done.sum()),
        "full_map_l8_evaluations": full_8,
        "full_map_l8_hours_extrapolated": full_8 / rate / 3600,
        "full_map_l52_evaluations": full_52,
        "full_map_l52_hours_extrapolated": full_52 / rate / 3600,
        "paper_v100_hours_l52_64px": PAPER_V100_HOURS,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--size", type=int, default=64, help="input size, px")
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 256, 1024])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--de-images", type=int, default=4)
    parser.add_argument("--generations", type=int, default=3)
    parser.add_argument("--confmap-rows", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    parser.add_argument(
        "--target-batch", type=int, default=None, help="target batch size (default: 32 on CPU, 1024 on a GPU)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    prov = provenance(sys.argv if argv is None else ["benchmarks/gpu.py", *argv])
    device = torch_device(args.device).type
    batch_size = args.target_batch or (1024 if device == "cuda" else 32)
    target = build_target(args.device, args.size, batch_size)
    images = real_images(args.size, max(args.de_images, 64))
    out: dict[str, Any] = {
        "benchmark": "gpu",
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
        "input_size": args.size,
        "target_batch_size": batch_size,
        "inference_mode": target.resolved_mode,
        "pixel_mode": target.resolved_pixel_mode,
        "full_pass": full_pass(target, images, args.batch, args.seconds),
        "de": de_rate(target, images[: args.de_images], args.generations),
        "confmap": confmap_rate(target, images[0], args.confmap_rows, args.size),
    }
    out["provenance"] = finish(prov)
    path = new_result_path(f"gpu_{device}_{args.size}px")
    path.write_text(json.dumps(out, indent=2) + "\n")
    best = max(out["full_pass"], key=lambda r: r["images_per_s"])
    cm = out["confmap"]
    print(
        f"device {device}{' (' + out['gpu'] + ')' if out['gpu'] else ''}, {args.size} px, "
        f"inference {out['inference_mode']}, pixels {out['pixel_mode']}"
    )
    for row in out["full_pass"]:
        print(f"  full pass, batch {row['batch']:>5}: {row['images_per_s']:10.0f} images/s")
    print(
        f"  DE (de-noconv, {out['de']['images']} images x {args.generations} generations): "
        f"{out['de']['queries_per_s']:.0f} queries/s"
    )
    l8, l52 = cm["full_map_l8_hours_extrapolated"], cm["full_map_l52_hours_extrapolated"]
    print(f"  confmap L=8 ({cm['rows']} rows): {cm['evaluations_per_s']:.0f} evaluations/s")
    print(f"  whole map: L=8 {l8:.2f} h, L=52 {l52:.1f} h (paper: {PAPER_V100_HOURS} h on one V100 at 64 px)")
    print(f"  best full pass {best['images_per_s']:.0f} images/s")
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
