"""Attack power per CPU-second: every method of ours and the peers at equal query budgets.

Images: a fixed, seeded selection of AMi-Br test images per direction, ``--confident`` confident
ones (true positives scored >= 0.9 for ``lower``, true negatives <= 0.1 for ``raise``),
``--moderate`` ones (0.7-0.9 on the true side) and ``--borderline`` ones (0.5-0.7). Every
method attacks the same images with stop-on-flip (``stop_at=0.5``) and the largest budget of
``--budgets``; a flip needs the score before on the true side of 0.5 (true of every selected image) and the
re-scored adversarial image across it.

Methods (k = 1 unless named ``-k3``):

- ours, through :func:`onepixel.attack_images` (all images of a direction batched): ``de``
  (paper preset, with its convergence test), ``de-noconv``, ``exhaustive`` (8 cube corners,
  centre and even-even pixels first), ``sparse-rs`` and ``sparse-rs-k3``;
- peers, image by image through the adapters of ``benchmarks/attack_vs_peers.py``:
  ``torchattacks`` (``OnePixel``, 200 members, its own stop on misclassification), ``art``
  (``PixelAttack`` th=1 es=1 with its stop-on-success callback, 400 members) and ``scipy``
  (``scipy.optimize.differential_evolution``, the paper's settings, a callback stopping at the
  first flip).

Queries to the first flip: ours report it exactly (the query number of the first score across
0.5); the peers' target is wrapped by :class:`FlipWatch`, which notes the same number for them.
Flips within a budget b are the flips with ``queries_to_flip <= b`` of the run at the largest
budget: the searches of DE, the exhaustive plan and the peers' DE do not depend on the budget
(it only truncates them). Sparse-RS's schedule does depend on it, so it runs once per budget.
CPU seconds are ``time.process_time()`` around each method's whole call (ours: all images of
the direction; peers: each image).

    python benchmarks/attack_power.py [--confident 2] [--moderate 0] [--borderline 2]
        [--budgets 500,2000,10000] [--methods de,exhaustive,...] [--directions lower,raise] [--threads 1]
        [--out benchmarks/results/attack_power.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import onepixel
from onepixel.attack.objectives import crossed, score_to_energy
from onepixel.attack.perturb import apply_pixels, bounds_for
from onepixel.attack.records import is_flip
from onepixel.models import DEFAULT_MODEL
from onepixel.targets import Target, TorchTarget

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from attack_vs_peers import attack_art, attack_torchattacks, paper_config, versions  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "attack_power.json"
OURS = ("de", "de-noconv", "exhaustive", "sparse-rs", "sparse-rs-k3")
PEERS = ("torchattacks", "art", "scipy")
METHODS = OURS + PEERS
BUDGET_DEPENDENT = ("sparse-rs", "sparse-rs-k3")


class FlipWatch(Target):
    """A counting wrapper of a target that notes the query number of the first flipping score.

    ``first`` is the 1-based number (since :meth:`reset`) of the first query scored across 0.5
    in ``direction``, None until then; ``queries`` counts what the wrapped method asked.
    """

    def __init__(self, inner: Target, direction: str):
        super().__init__()
        self.inner, self.direction = inner, direction
        self.info, self.batch_size = inner.info, inner.batch_size
        self.first: int | None = None

    def reset(self) -> None:
        """Forget the queries and the first flip."""
        self.queries, self.first = 0, None

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Return the inner target's scores, noting the first flip among them."""
        scores = self.inner.predict(images)
        hits = np.flatnonzero(crossed(scores, self.direction))
        if self.first is None and hits.size:
            self.first = self.queries + int(hits[0]) + 1
        self.queries += len(scores)
        return scores

    def _predict(self, images: np.ndarray) -> np.ndarray:
        return self.predict(images)


def select(
    scores: np.ndarray,
    positive: np.ndarray,
    direction: str,
    confident: int,
    borderline: int,
    seed: int,
    moderate: int = 0,
) -> tuple[np.ndarray, list[str]]:
    """Return (indices, kinds) of the seeded selection of true-side images, in a seeded order.

    Kinds by the score on the true label's side: confident (>= 0.9), moderate (0.7-0.9),
    borderline (0.5-0.7).
    """
    want = np.flatnonzero(positive if direction == "lower" else ~positive)
    want = want[np.random.default_rng(seed).permutation(len(want))]
    s = scores[want] if direction == "lower" else 1.0 - scores[want]  # distance to the far side
    parts = [
        ("confident", want[s >= 0.9][:confident]),
        ("moderate", want[(s >= 0.7) & (s < 0.9)][:moderate]),
        ("borderline", want[(s >= 0.5) & (s < 0.7)][:borderline]),
    ]
    kinds = [kind for kind, chosen in parts for _ in chosen]
    return np.concatenate([chosen for _, chosen in parts]), kinds


def run_ours(
    method: str, target: Target, images: np.ndarray, direction: str, budget: int, seed: int
) -> list[dict[str, Any]]:
    """Attack all images with one of our methods; return per-image outcomes."""
    name, pixels = (method.removesuffix("-k3"), 3) if method.endswith("-k3") else (method, 1)
    q0, cpu0 = target.queries, time.process_time()
    records = onepixel.attack_images(
        target, images, method=name, direction=direction, budget=budget, pixels=pixels, seed=seed, stop_at=0.5
    )
    cpu = (time.process_time() - cpu0) / len(images)
    spent = target.queries - q0
    return [
        {
            "score_before": r.score_before,
            "score_after": r.score_after,
            "flip": bool(r.flip),
            "queries_to_flip": r.queries_to_flip,
            "queries": r.queries,
            "cpu_s": cpu,
            "all_queries_share": spent / len(images),
        }
        for r in records
    ]


def attack_scipy_stop(
    target: FlipWatch, image: np.ndarray, direction: str, budget: int, seed: int
) -> np.ndarray:
    """Return SciPy DE's adversarial image (paper settings, deferred, stop at the first flip)."""
    from scipy.optimize import differential_evolution

    cfg = paper_config(max(0, budget // 200 - 1), "deferred")
    kw = cfg.scipy_kwargs(5)
    one = image[None]

    def f(x: np.ndarray) -> np.ndarray:
        v = np.atleast_2d(x.T)
        return score_to_energy(target.predict(apply_pixels(one, v, np.zeros(len(v), int))), direction)

    result = differential_evolution(
        f,
        [tuple(b) for b in bounds_for(1, image.shape[0])],
        rng=np.random.default_rng(seed),
        vectorized=True,
        callback=lambda intermediate_result: bool(target.first is not None),
        **kw,
    )
    return apply_pixels(one, np.rint(result.x)[None].astype(int), np.zeros(1, int))[0]


def run_peer(
    method: str, target: TorchTarget, images: np.ndarray, direction: str, budget: int, seed: int
) -> list[dict[str, Any]]:
    """Attack image by image with a peer through a FlipWatch; return per-image outcomes."""
    watch = FlipWatch(target, direction)
    maxiter = max(0, budget // 200 - 1)
    out = []
    for i, image in enumerate(images):
        before = float(target.predict(image[None])[0])
        watch.reset()
        np.random.seed(seed + i)  # noqa: NPY002 - the peers draw from NumPy's global state
        torch.manual_seed(seed + i)
        cpu0 = time.process_time()
        if method == "scipy":
            adv = attack_scipy_stop(watch, image, direction, budget, seed + i)
        else:
            peer: Callable[..., dict[str, Any]] = (
                attack_torchattacks if method == "torchattacks" else attack_art
            )
            adv = peer(watch, image[None], direction, maxiter, 200, True)["adv"][0]
        cpu = time.process_time() - cpu0
        after = float(target.predict(adv[None])[0])
        flip = is_flip(before, after, direction)
        out.append(
            {
                "score_before": before,
                "score_after": after,
                "flip": flip,
                "queries_to_flip": (watch.first or watch.queries) if flip else None,
                "queries": watch.queries,
                "cpu_s": cpu,
            }
        )
    return out


def summarise(rows: list[dict[str, Any]], budgets: list[int], per_budget: dict[int, list] | None) -> dict:
    """Return flips per budget, median queries to flip, CPU s per attack and per flip."""
    flips = [r for r in rows if r["flip"]]
    cpu = float(sum(r["cpu_s"] for r in rows))
    at = {}
    for b in budgets:
        source = per_budget[b] if per_budget else rows
        at[str(b)] = sum(r["flip"] and r["queries_to_flip"] <= b for r in source)
    return {
        "n": len(rows),
        "flips": len(flips),
        "flips_at_budget": at,
        "queries_to_flip_median": float(np.median([r["queries_to_flip"] for r in flips])) if flips else None,
        "queries_per_attack": float(np.mean([r["queries"] for r in rows])),
        "cpu_s_per_attack": cpu / len(rows),
        "cpu_s_per_flip": cpu / len(flips) if flips else None,
        "mean_score_after": float(np.mean([r["score_after"] for r in rows])),
        "per_image": rows,
    }


def figure(out: dict[str, Any], path: Path) -> None:
    """Write the flips-vs-queries curves (one panel per direction) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dirs = list(out["directions"])
    fig, axes = plt.subplots(1, len(dirs), figsize=(6 * len(dirs), 4), squeeze=False)
    for ax, direction in zip(axes[0], dirs, strict=True):
        section = out["directions"][direction]
        n = len(section["images"])
        for method, s in section["methods"].items():
            if method in BUDGET_DEPENDENT:
                xs = [int(b) for b in s["flips_at_budget"]]
                ax.plot(xs, [s["flips_at_budget"][str(b)] / n for b in xs], "o--", label=method)
                continue
            q = sorted(r["queries_to_flip"] for r in s["per_image"] if r["flip"])
            xs = [1, *q, max(out["budgets"])]
            ys = [0, *range(1, len(q) + 1), len(q)]
            ax.step(xs, np.array(ys) / n, where="post", label=method)
        ax.set_xscale("log")
        ax.set_xlabel("target queries")
        ax.set_ylabel("share of images flipped")
        ax.set_title(f"{direction} ({n} images, stop at first flip)")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print the table, write the JSON and the figure, return the results."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--confident", type=int, default=2)
    p.add_argument("--borderline", type=int, default=2)
    p.add_argument("--moderate", type=int, default=0, help="images scored 0.7-0.9 on the true side")
    p.add_argument("--budgets", default="500,2000,10000")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--directions", default="lower,raise")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--data", default=os.environ.get("ONEPIXEL_DATA", str(REPO.parent / "shared" / "data" / "ami-br"))
    )
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; use {list(METHODS)}")
    budgets = sorted(int(b) for b in args.budgets.split(","))
    torch.set_num_threads(args.threads)

    from onepixel.data.amibr import load_amibr

    target = TorchTarget.from_pretrained(args.model)
    data = load_amibr(Path(args.data), "test")
    clean = target.predict(data.images)
    positive = data.labels == data.positive_index
    out: dict[str, Any] = {
        "command": "python benchmarks/attack_power.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "budgets": budgets,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "versions": versions(),
        "machine": {"cpus": os.cpu_count(), "threads": args.threads, "platform": platform.platform()},
        "load_avg_1min_start": os.getloadavg()[0],
        "directions": {},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for direction in args.directions.split(","):
        idx, kinds = select(
            clean, positive, direction, args.confident, args.borderline, args.seed, args.moderate
        )
        images = data.images[idx]
        section: dict[str, Any] = {
            "images": [data.names[i] for i in idx],
            "kinds": kinds,
            "scores_before": clean[idx].tolist(),
            "methods": {},
        }
        out["directions"][direction] = section
        print(f"{direction}: {len(idx)} images ({kinds.count('confident')} confident)", flush=True)
        for method in methods:
            t0 = time.perf_counter()
            per_budget = None
            if method in OURS:
                rows = run_ours(method, target, images, direction, budgets[-1], args.seed)
                if method in BUDGET_DEPENDENT:
                    per_budget = {
                        b: run_ours(method, target, images, direction, b, args.seed) for b in budgets[:-1]
                    }
                    per_budget[budgets[-1]] = rows
            else:
                rows = run_peer(method, target, images, direction, budgets[-1], args.seed)
            s = summarise(rows, budgets, per_budget)
            s["wall_s"] = time.perf_counter() - t0
            section["methods"][method] = s
            args.out.write_text(json.dumps(out, indent=1))
            print(
                f"  {method:13s} flips {s['flips']}/{s['n']} at {s['flips_at_budget']} "
                f"median q {s['queries_to_flip_median']} cpu/attack {s['cpu_s_per_attack']:.2f} s "
                f"cpu/flip {s['cpu_s_per_flip']}",
                flush=True,
            )
    out["load_avg_1min_end"] = os.getloadavg()[0]
    args.out.write_text(json.dumps(out, indent=1))
    figure(out, args.out.with_suffix(".png"))
    print_table(out)
    return out


def print_table(out: dict[str, Any]) -> None:
    """Print the Markdown table: flips per budget, median queries to flip, CPU s per attack and flip."""
    budgets = out["budgets"]
    head = " | ".join(f"flips @{b}" for b in budgets)
    print(f"| direction | method | images | {head} | median queries to flip | CPU s/attack | CPU s/flip |")
    print("|---|---|---|" + "---|" * len(budgets) + "---|---|---|")
    for direction, section in out["directions"].items():
        for method, s in section["methods"].items():
            at = " | ".join(str(s["flips_at_budget"][str(b)]) for b in budgets)
            med = "-" if s["queries_to_flip_median"] is None else f"{s['queries_to_flip_median']:.0f}"
            per_flip = "-" if s["cpu_s_per_flip"] is None else f"{s['cpu_s_per_flip']:.2f}"
            cpu = f"{s['cpu_s_per_attack']:.2f}"
            print(f"| {direction} | {method} | {s['n']} | {at} | {med} | {cpu} | {per_flip} |")


if __name__ == "__main__":
    main()
