"""Attack power per CPU-second: every method of ours and the peers at equal query budgets, k = 1, 3, 5.

Images: a fixed, seeded selection of AMi-Br test images per direction, ``--confident`` confident
ones (true positives scored >= 0.9 for ``lower``, true negatives <= 0.1 for ``raise``),
``--moderate`` ones (0.7-0.9 on the true side) and ``--borderline`` ones (0.5-0.7). For every k
of ``--pixels`` every method attacks the same images with stop-on-flip (``stop_at=0.5``) at the
largest budget of ``--budgets``. A flip needs the score before on the true side of 0.5 (true of
every selected image), the re-scored adversarial image across it, and at most k changed pixels.

Methods:

- ours, through :func:`onepixel.attack_images` (all images of a direction batched): ``exhaustive``
  (k = 1 only: the 8 cube corners, even-even pixels from the centre first, then the rest),
  ``sparse-rs`` (k pixels, corner colours, a 1,024-query single-pixel screen as its start),
  ``de`` (the paper's preset with its convergence test) and ``de-noconv`` (without it);
- peers, image by image: ``torchattacks`` (``OnePixel(pixels=k)``, 200 members in total, its
  own stop on misclassification), ``pixle`` (torchattacks ``Pixle``, one restart of 1 x k source
  patches mapped to random destinations, its own stop on misclassification; one restart keeps it
  at <= k changed pixels, as Pixle's restarts add their pixels up; its stop test re-scores the
  image its loss just scored, and that repeat is served from a one-image cache, not counted),
  ``art`` (ART ``PixelAttack(th=k, es=1)`` with its stop-on-success callback, 400 // (5k) x 5k
  members) and ``scipy`` (``scipy.optimize.differential_evolution``, the paper's settings with
  200 // (5k) x 5k members, a callback stopping at the first flip).

Queries to the first flip: ours report it exactly (the query number of the first score across
0.5); the peers' target is wrapped by :class:`FlipWatch`, which notes the same number for them.
Flips within a budget b are the flips with ``queries_to_flip <= b`` of the run at the largest
budget: DE, the exhaustive plan, Pixle's single restart and Sparse-RS with one pixel resampled
per step (``round(alpha_init * k) <= 1``) do not depend on the budget, it only truncates them
(a DE run at b = 500 would stop after 400 queries: the count is generous to DE). A Sparse-RS
whose schedule depends on the budget runs once per budget. CPU seconds are
``time.process_time()`` around each method's whole call (ours: all images of the direction;
peers: each image); CPU s per flip = the method's CPU seconds over all images / its flips.

    OMP_NUM_THREADS=1 python benchmarks/attack_power.py [--confident 2] [--moderate 0]
        [--borderline 2] [--pixels 1,3,5] [--budgets 500,2000,10000,20200]
        [--methods exhaustive,sparse-rs,de,torchattacks,pixle,art,scipy] [--directions lower,raise]
        [--threads 1] [--out benchmarks/results/attack_power.json]
    OMP_NUM_THREADS=1 python benchmarks/attack_power.py --de-throughput [--rounds 4]

``--de-throughput`` measures instead our DE's queries/s (a de-noconv campaign batch on the
selected images) against raw ``target.predict`` images/s on the same images, interleaved
(raw, DE, raw, DE, ...), and writes the ratio to ``attack_power_de_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
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
from attack_vs_peers import TargetModule, _to_uint8_nhwc, art_classifier, paper_config, versions  # noqa: E402
from provenance import finish, new_result_path, provenance  # noqa: E402
from stats import wilson  # noqa: E402

OURS = ("exhaustive", "sparse-rs", "de", "de-noconv")
PEERS = ("torchattacks", "pixle", "art", "scipy")
METHODS = OURS + PEERS
DEFAULT_METHODS = ("exhaustive", "sparse-rs", "de", "torchattacks", "pixle", "art", "scipy")
K1_ONLY = ("exhaustive",)  # methods that change exactly one pixel
# Our method options in this benchmark (none: every method at its defaults).
OPTIONS: dict[str, dict[str, Any]] = {}


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


class CachedModule(TargetModule):
    """TargetModule that answers a repeat of the last single image from a one-image cache.

    Pixle scores every candidate twice (its loss, then its stop test on the same tensor); the
    repeat is not a new query, so it is neither sent nor counted.
    """

    def __init__(self, target: Target):
        super().__init__(target)
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits of ``x``; a repeat of the last one-image input comes from the cache."""
        if self._last is not None and x.shape == self._last[0].shape and torch.equal(x, self._last[0]):
            return self._last[1]
        out = super().forward(x)
        if len(x) == 1:
            self._last = (x.detach().clone(), out)
        return out


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


def changed_pixels(clean: np.ndarray, adv: np.ndarray) -> int:
    """Return how many pixels of ``adv`` (H, W, 3) differ from ``clean`` in any channel."""
    return int(np.any(clean != adv, axis=-1).sum())


def budget_dependent(method: str, k: int) -> bool:
    """Return True when the method's search itself changes with the budget (not just its end)."""
    if method != "sparse-rs":
        return False
    from onepixel.attack.sparse_rs import SparseRS

    return not SparseRS(pixels=k, **OPTIONS.get(method, {})).budget_independent()


def run_ours(
    method: str, target: Target, images: np.ndarray, direction: str, budget: int, seed: int, k: int
) -> list[dict[str, Any]]:
    """Attack all images with one of our methods; return per-image outcomes."""
    q0, cpu0 = target.queries, time.process_time()
    records = onepixel.attack_images(
        target,
        images,
        method=method,
        direction=direction,
        budget=budget,
        pixels=k,
        seed=seed,
        stop_at=0.5,
        **OPTIONS.get(method, {}),
    )
    cpu = (time.process_time() - cpu0) / len(images)
    spent = target.queries - q0
    vectors = np.array([r.vector for r in records], dtype=np.int64)
    adv = apply_pixels(images, vectors, np.arange(len(images)))
    after = target.predict(adv)  # re-scored on the uint8 image, as the peers' are
    target.queries -= len(adv)  # the check is not the method's query
    rows = []
    for i, r in enumerate(records):
        changed = changed_pixels(images[i], adv[i])
        flip = is_flip(r.score_before, float(after[i]), direction) and changed <= k
        rows.append(
            {
                "score_before": r.score_before,
                "score_after": float(after[i]),
                "flip": flip,
                "queries_to_flip": r.queries_to_flip if flip else None,
                "queries": r.queries,
                "cpu_s": cpu,
                "all_queries_share": spent / len(images),
                "pixels_changed": changed,
                "vector": r.vector,
            }
        )
    return rows


def _members(k: int, total: int) -> tuple[int, int]:
    """Return (SciPy-style popsize multiplier, members) for ``total`` members over 5k dimensions."""
    mult = max(1, total // (5 * k))
    return mult, mult * 5 * k


def attack_scipy_stop(
    target: FlipWatch, image: np.ndarray, direction: str, budget: int, seed: int, k: int
) -> np.ndarray:
    """Return SciPy DE's adversarial image (paper settings, deferred, stop at the first flip)."""
    from scipy.optimize import differential_evolution

    mult, members = _members(k, 200)
    cfg = paper_config(max(0, budget // members - 1), "deferred", popsize=members)
    kw = cfg.scipy_kwargs(5 * k)
    one = image[None]

    def f(x: np.ndarray) -> np.ndarray:
        v = np.atleast_2d(x.T)
        return score_to_energy(target.predict(apply_pixels(one, v, np.zeros(len(v), int))), direction)

    result = differential_evolution(
        f,
        [tuple(b) for b in bounds_for(k, image.shape[0])],
        rng=np.random.default_rng(seed),
        vectorized=True,
        callback=lambda intermediate_result: bool(target.first is not None),
        **kw,
    )
    return apply_pixels(one, np.rint(result.x)[None].astype(int), np.zeros(1, int))[0]


def attack_torchattacks_k(
    target: FlipWatch, image: np.ndarray, direction: str, budget: int, k: int
) -> np.ndarray:
    """Return torchattacks OnePixel's adversarial image (k pixels, 200 members, its own stop)."""
    import torchattacks

    _, members = _members(k, 200)
    attack = torchattacks.OnePixel(
        TargetModule(target), pixels=k, steps=max(0, budget // members - 1), popsize=200, inf_batch=1024
    )
    label = torch.tensor([1 if direction == "lower" else 0])
    x = torch.from_numpy(image[None].transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    return _to_uint8_nhwc(attack(x, label), 1.0, channels_first=True)[0]


def attack_pixle(target: FlipWatch, image: np.ndarray, direction: str, budget: int, k: int) -> np.ndarray:
    """Return torchattacks Pixle's adversarial image: one restart of 1 x k patches, random mapping."""
    import torchattacks

    attack = torchattacks.Pixle(
        CachedModule(target),
        x_dimensions=(k, k),
        y_dimensions=(1, 1),
        pixel_mapping="random",
        restarts=1,
        max_iterations=max(1, budget - 1),  # +1 query: the clean image's loss
        update_each_iteration=False,
    )
    label = torch.tensor([1 if direction == "lower" else 0])
    x = torch.from_numpy(image[None].transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    return _to_uint8_nhwc(attack(x, label), 1.0, channels_first=True)[0]


def attack_art_k(target: FlipWatch, image: np.ndarray, direction: str, budget: int, k: int) -> np.ndarray:
    """Return ART PixelAttack's adversarial image (th=k pixels, es=1, its stop-on-success)."""
    from art.attacks.evasion import PixelAttack

    classifier = art_classifier(target, image.shape[0])
    _, members = _members(k, 400)
    attack = PixelAttack(
        classifier,
        th=k,
        es=1,
        max_iter=max(1, math.ceil(budget / members) - 1),
        targeted=False,
        verbose=False,
    )
    # y=None: ART takes the predicted class (one query) as the label (it rejects 2-class labels).
    adv = attack.generate(image[None].astype(np.float32))
    return _to_uint8_nhwc(adv, 255.0, channels_first=False)[0]


def run_peer(
    method: str, target: TorchTarget, images: np.ndarray, direction: str, budget: int, seed: int, k: int
) -> list[dict[str, Any]]:
    """Attack image by image with a peer through a FlipWatch; return per-image outcomes."""
    watch = FlipWatch(target, direction)
    out = []
    for i, image in enumerate(images):
        before = float(target.predict(image[None])[0])
        watch.reset()
        np.random.seed(seed + i)  # noqa: NPY002 - the peers draw from NumPy's global state
        torch.manual_seed(seed + i)
        cpu0 = time.process_time()
        if method == "scipy":
            adv = attack_scipy_stop(watch, image, direction, budget, seed + i, k)
        elif method == "torchattacks":
            adv = attack_torchattacks_k(watch, image, direction, budget, k)
        elif method == "pixle":
            adv = attack_pixle(watch, image, direction, budget, k)
        else:
            adv = attack_art_k(watch, image, direction, budget, k)
        cpu = time.process_time() - cpu0
        after = float(target.predict(adv[None])[0])
        changed = changed_pixels(image, adv)
        flip = is_flip(before, after, direction) and changed <= k
        out.append(
            {
                "score_before": before,
                "score_after": after,
                "flip": flip,
                "queries_to_flip": (watch.first or watch.queries) if flip else None,
                "queries": watch.queries,
                "cpu_s": cpu,
                "pixels_changed": changed,
            }
        )
    return out


def summarise(rows: list[dict[str, Any]], budgets: list[int], per_budget: dict[int, list] | None) -> dict:
    """Return flips per budget, median queries to flip, CPU s per attack and per flip."""
    flips = [r for r in rows if r["flip"]]
    cpu = float(sum(r["cpu_s"] for r in rows))
    at, cpu_at = {}, {}
    for b in budgets:
        source = per_budget[b] if per_budget else rows
        at[str(b)] = int(sum(bool(r["flip"]) and r["queries_to_flip"] <= b for r in source))
    return {
        "n": len(rows),
        "flips": len(flips),
        "flips_at_budget": at,
        "flips_ci95_at_budget": {b: wilson(f, len(rows)) for b, f in at.items()},
        "queries_to_flip_n": len(flips),
        "l0_checked": all("pixels_changed" in r for r in rows),
        "queries_to_flip_median": float(np.median([r["queries_to_flip"] for r in flips])) if flips else None,
        "queries_per_attack": float(np.mean([r["queries"] for r in rows])),
        "cpu_s_per_attack": cpu / len(rows),
        "cpu_s_per_flip": cpu / len(flips) if flips else None,
        "mean_score_after": float(np.mean([r["score_after"] for r in rows])),
        "per_image": rows,
        **({"cpu_at_budget": cpu_at} if cpu_at else {}),
    }


def figure(out: dict[str, Any], path: Path) -> None:
    """Write the flips-vs-queries curves (one panel per direction and k) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(d, k) for d, by_k in out["directions"].items() for k in by_k["runs"]]
    cols = max(1, len(out["pixels"]))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    for ax, (direction, k) in zip(axes.ravel(), panels, strict=False):
        section = out["directions"][direction]
        n = len(section["images"])
        for method, s in section["runs"][k].items():
            if s.get("budget_dependent"):
                xs = [int(b) for b in s["flips_at_budget"]]
                ax.plot(
                    xs,
                    [s["flips_at_budget"][str(b)] / n for b in xs],
                    "o-",
                    lw=2,
                    label=f"{method} (per budget)",
                )
                continue
            q = sorted(r["queries_to_flip"] for r in s["per_image"] if r["flip"])
            xs = [1, *q, max(out["budgets"])]
            ys = [0, *range(1, len(q) + 1), len(q)]
            ours = method in OURS
            ax.step(
                xs,
                np.array(ys) / n,
                where="post",
                label=method,
                lw=2 if ours else 1.2,
                ls="-" if ours else ":",
            )
        for b in out["budgets"]:
            ax.axvline(b, color="0.85", lw=0.8, zorder=0)
        ax.set_xscale("log")
        ax.set_xlabel("target queries")
        ax.set_ylabel("share of images flipped")
        ax.set_title(f"{direction}, k = {k} ({n} images, stop at first flip)", fontsize=9)
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def de_throughput(target: TorchTarget, images: np.ndarray, rounds: int, generations: int) -> dict[str, Any]:
    """Return our DE's queries per CPU-second against raw ``target.predict`` images per CPU-second.

    Raw: a whole generation of the images (200 members each) painted with random pixels and
    scored by ``target.predict`` (full passes in the target's chunks). DE: a de-noconv attack of
    the same images for ``generations`` generations, through the target's pixel path (cone
    inference) and through a full-pass copy of the target (``pixel_mode="full"``: DE's own
    overhead over raw). The three alternate ``rounds`` times; CPU time (``time.process_time``)
    keeps other processes' load out; ratios are medians of the per-round ratios.
    """
    popsize = 200
    full = TorchTarget(target.model, target.meta, batch_size=target.batch_size, pixel_mode="full")
    rng = np.random.default_rng(0)
    n = len(images)
    rows: list[dict[str, float]] = []

    def de_rate(t: TorchTarget) -> float:
        q0, c0 = t.queries, time.process_time()
        onepixel.attack_images(
            t, images, method="de-noconv", direction="lower", budget=(generations + 1) * popsize, seed=0
        )
        return (t.queries - q0) / (time.process_time() - c0)

    for _ in range(rounds):
        vec = np.stack(
            [rng.integers(0, 64, n * popsize), rng.integers(0, 64, n * popsize)]
            + [rng.integers(0, 256, n * popsize) for _ in range(3)],
            axis=1,
        )
        batch = apply_pixels(images, vec, np.repeat(np.arange(n), popsize))
        c0 = time.process_time()
        target.predict(batch)
        raw = len(batch) / (time.process_time() - c0)
        cone, flat = de_rate(target), de_rate(full)
        rows.append(
            {
                "raw_images_per_cpu_s": raw,
                "de_queries_per_cpu_s": cone,
                "de_full_pass_queries_per_cpu_s": flat,
                "ratio": cone / raw,
                "ratio_full_pass": flat / raw,
            }
        )
    return {
        "images": n,
        "generations": generations,
        "pixel_mode": target.resolved_pixel_mode,
        "batch_size": target.batch_size,
        "rounds": rows,
        "ratio_median": float(np.median([r["ratio"] for r in rows])),
        "ratio_full_pass_median": float(np.median([r["ratio_full_pass"] for r in rows])),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print the table, write the JSON and the figure, return the results."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--confident", type=int, default=2)
    p.add_argument("--borderline", type=int, default=2)
    p.add_argument("--moderate", type=int, default=0, help="images scored 0.7-0.9 on the true side")
    p.add_argument("--pixels", default="1,3,5", help="k values")
    p.add_argument("--budgets", default="500,2000,10000,20200")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    p.add_argument("--directions", default="lower,raise")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--de-throughput", action="store_true", help="measure DE vs raw throughput instead")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--generations", type=int, default=5)
    p.add_argument(
        "--data", default=os.environ.get("ONEPIXEL_DATA", str(REPO.parent / "shared" / "data" / "ami-br"))
    )
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--out", type=Path, default=None, help="result JSON (default: a new results name)")
    p.add_argument("--stem", default="attack_power", help="name of the result JSON when --out is not given")
    p.add_argument(
        "--pieces",
        type=Path,
        default=None,
        help="folder of finished (direction, k, method) pieces: a rerun with the same folder resumes",
    )
    p.add_argument("--from-json", type=Path, default=None, help="print the tables of a results file")
    args = p.parse_args(argv)
    if args.from_json:
        done = json.loads(args.from_json.read_text())
        done["comparison"] = compare(done)
        print_table(done)
        return done
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; use {list(METHODS)}")
    budgets = sorted(int(b) for b in args.budgets.split(","))
    pixels = [int(k) for k in args.pixels.split(",")]
    torch.set_num_threads(args.threads)

    from onepixel.data.amibr import load_amibr

    target = TorchTarget.from_pretrained(args.model)
    data = load_amibr(Path(args.data), "test")
    clean = target.predict(data.images)
    positive = data.labels == data.positive_index
    command = "python benchmarks/attack_power.py " + " ".join(sys.argv[1:] if argv is None else argv)
    machine = {"cpus": os.cpu_count(), "threads": args.threads, "platform": platform.platform()}
    if args.de_throughput:
        idx, _ = select(clean, positive, "lower", args.confident, args.borderline, args.seed, args.moderate)
        load0 = os.getloadavg()[0]
        res = de_throughput(target, data.images[idx], args.rounds, args.generations)
        res.update(command=command, machine=machine, load_avg_1min=[load0, os.getloadavg()[0]])
        path = args.out or new_result_path("attack_power_de_throughput")
        path.write_text(json.dumps(res, indent=1))
        for r in res["rounds"]:
            print(
                f"raw {r['raw_images_per_cpu_s']:.0f} img/cpu-s  DE {r['de_queries_per_cpu_s']:.0f} q/cpu-s "
                f"(ratio {r['ratio']:.2f})  DE full pass {r['de_full_pass_queries_per_cpu_s']:.0f} q/cpu-s "
                f"(ratio {r['ratio_full_pass']:.2f})"
            )
        print(
            f"median ratio {res['ratio_median']:.2f} ({res['pixel_mode']}), "
            f"full pass {res['ratio_full_pass_median']:.2f}"
        )
        return res
    if args.out is not None and args.out.exists():
        raise SystemExit(f"{args.out} exists: result files are never overwritten (pick a new --out)")
    prov = provenance()
    if args.pieces is not None:
        args.pieces.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {
        "provenance": prov,
        "command": command,
        "budgets": budgets,
        "pixels": pixels,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "options": OPTIONS,
        "versions": versions(),
        "machine": machine,
        "pixel_mode": target.resolved_pixel_mode,
        "load_avg_1min_start": os.getloadavg()[0],
        "directions": {},
    }
    wall0 = time.perf_counter()
    for direction in args.directions.split(","):
        idx, kinds = select(
            clean, positive, direction, args.confident, args.borderline, args.seed, args.moderate
        )
        images = data.images[idx]
        section: dict[str, Any] = {
            "images": [data.names[i] for i in idx],
            "kinds": kinds,
            "scores_before": clean[idx].tolist(),
            "runs": {},
        }
        out["directions"][direction] = section
        print(f"{direction}: {len(idx)} images ({kinds.count('confident')} confident)", flush=True)
        for k in pixels:
            runs: dict[str, Any] = {}
            section["runs"][str(k)] = runs
            for method in methods:
                if k > 1 and method in K1_ONLY:
                    continue
                piece = None if args.pieces is None else args.pieces / f"{direction}_k{k}_{method}.json"
                if piece is not None and piece.exists():
                    stored = json.loads(piece.read_text())
                    if stored["images"] != section["images"]:
                        raise SystemExit(f"{piece} attacked other images: use a new --pieces folder")
                    runs[method] = stored["summary"]
                    print(f"  k={k} {method:13s} resumed from {piece}", flush=True)
                    continue
                t0 = time.perf_counter()
                per_budget = None
                dependent = budget_dependent(method, k)
                if method in OURS:
                    rows = run_ours(method, target, images, direction, budgets[-1], args.seed, k)
                    if dependent:
                        per_budget = {
                            b: run_ours(method, target, images, direction, b, args.seed, k)
                            for b in budgets[:-1]
                        }
                        per_budget[budgets[-1]] = rows
                else:
                    rows = run_peer(method, target, images, direction, budgets[-1], args.seed, k)
                s = summarise(rows, budgets, per_budget)
                s["budget_dependent"] = dependent
                s["wall_s"] = time.perf_counter() - t0
                runs[method] = s
                if piece is not None:
                    record = {"images": section["images"], "summary": s, "provenance": finish(prov)}
                    piece.write_text(json.dumps(record, indent=1))
                print(
                    f"  k={k} {method:13s} flips {s['flips']}/{s['n']} at {s['flips_at_budget']} "
                    f"median q {s['queries_to_flip_median']} cpu/attack {s['cpu_s_per_attack']:.2f} s "
                    f"cpu/flip {s['cpu_s_per_flip']} wall {s['wall_s']:.0f} s",
                    flush=True,
                )
    out["load_avg_1min_end"] = os.getloadavg()[0]
    out["wall_s"] = time.perf_counter() - wall0
    out["comparison"] = compare(out)
    out["provenance"] = finish(prov)
    args.out = args.out or new_result_path(args.stem)
    args.out.write_text(json.dumps(out, indent=1))
    figure(out, args.out.with_suffix(".png"))
    print(f"wrote {args.out}")
    print_table(out)
    return out


def compare(out: dict[str, Any]) -> list[dict[str, Any]]:
    """Return, per direction, k and budget, our best method's flips and the best peer's.

    Also the lowest CPU s per flip (at the largest budget, the run as made) among ours and among
    the peers, and their ratio (peer / ours: > 1 means ours is cheaper per flip).
    """
    rows = []
    for direction, section in out["directions"].items():
        for k, runs in section["runs"].items():
            ours = {m: s for m, s in runs.items() if m in OURS}
            peers = {m: s for m, s in runs.items() if m in PEERS}
            if not ours or not peers:
                continue

            def cheapest(group: dict[str, Any]) -> tuple[str | None, float | None]:
                costs = {m: s["cpu_s_per_flip"] for m, s in group.items() if s["cpu_s_per_flip"]}
                if not costs:
                    return None, None
                m = min(costs, key=costs.__getitem__)
                return m, costs[m]

            (om, oc), (pm, pc) = cheapest(ours), cheapest(peers)

            def strongest(group: dict[str, Any]) -> str:
                """Most flips at the largest budget, then the lowest CPU s per flip."""
                return min(
                    group, key=lambda name: (-group[name]["flips"], group[name]["cpu_s_per_flip"] or np.inf)
                )

            so, sp = strongest(ours), strongest(peers)
            so_c, sp_c = ours[so]["cpu_s_per_flip"], peers[sp]["cpu_s_per_flip"]
            for b in out["budgets"]:
                best_o = max(ours, key=lambda m: ours[m]["flips_at_budget"][str(b)])
                best_p = max(peers, key=lambda m: peers[m]["flips_at_budget"][str(b)])
                fo, fp = ours[best_o]["flips_at_budget"][str(b)], peers[best_p]["flips_at_budget"][str(b)]
                rows.append(
                    {
                        "direction": direction,
                        "k": int(k),
                        "budget": b,
                        "ours_best": best_o,
                        "ours_flips": fo,
                        "peer_best": best_p,
                        "peer_flips": fp,
                        "ours_at_least_peer": fo >= fp,
                        "ours_cheapest_per_flip": om,
                        "ours_cpu_s_per_flip": oc,
                        "peer_cheapest_per_flip": pm,
                        "peer_cpu_s_per_flip": pc,
                        "per_flip_ratio_peer_over_ours": pc / oc if oc and pc else None,
                        "strongest_ours": so,
                        "strongest_peer": sp,
                        "strongest_ratio_peer_over_ours": sp_c / so_c if so_c and sp_c else None,
                    }
                )
    return rows


def print_table(out: dict[str, Any]) -> None:
    """Print the Markdown table: flips per budget, median queries to flip, CPU s per attack and flip."""
    budgets = out["budgets"]
    head = " | ".join(f"flips @{b}" for b in budgets)
    print(
        f"| direction | k | method | images | {head} | median queries to flip | CPU s/attack | CPU s/flip |"
    )
    print("|---|---|---|---|" + "---|" * len(budgets) + "---|---|---|")
    for direction, section in out["directions"].items():
        for k, runs in section["runs"].items():
            for method, s in runs.items():
                at = " | ".join(str(s["flips_at_budget"][str(b)]) for b in budgets)
                med = "-" if s["queries_to_flip_median"] is None else f"{s['queries_to_flip_median']:.0f}"
                per_flip = "-" if s["cpu_s_per_flip"] is None else f"{s['cpu_s_per_flip']:.2f}"
                cpu = f"{s['cpu_s_per_attack']:.2f}"
                print(f"| {direction} | {k} | {method} | {s['n']} | {at} | {med} | {cpu} | {per_flip} |")
    print()
    print("| direction | k | budget | our best (flips) | best peer (flips) | ours >= peer | ", end="")
    print("cheapest per flip: ours | peers | peer / ours | strongest: ours / peer, peer / ours per flip |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in out.get("comparison", []):
        oc = (
            "-"
            if r["ours_cpu_s_per_flip"] is None
            else f"{r['ours_cheapest_per_flip']} {r['ours_cpu_s_per_flip']:.2f}"
        )
        pc = (
            "-"
            if r["peer_cpu_s_per_flip"] is None
            else f"{r['peer_cheapest_per_flip']} {r['peer_cpu_s_per_flip']:.2f}"
        )
        ratio = (
            "-" if r["per_flip_ratio_peer_over_ours"] is None else f"{r['per_flip_ratio_peer_over_ours']:.2f}"
        )
        sr = r.get("strongest_ratio_peer_over_ours")
        strong = "-" if sr is None else f"{sr:.2f}"
        print(
            f"| {r['direction']} | {r['k']} | {r['budget']} | {r['ours_best']} ({r['ours_flips']}) | "
            f"{r['peer_best']} ({r['peer_flips']}) | {'yes' if r['ours_at_least_peer'] else 'NO'} | "
            f"{oc} | {pc} | {ratio} | {r['strongest_ours']} / {r['strongest_peer']}, {strong} |"
        )


if __name__ == "__main__":
    main()
