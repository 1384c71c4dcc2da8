"""One-pixel attack: ours against what a user would pick instead, at the paper's budget.

Methods (``--methods``), all attacking the bundled classifier through ONE counting target
(``TorchTarget``, its fastest exact inference path), so every method pays the same price per
image and "queries" are counted, not assumed:

- ``ours-deferred``: :class:`~onepixel.attack.de.BatchedDE`, all images of a direction in one
  engine, every generation of every image in one target call;
- ``ours-immediate``: the same engine with SciPy's immediate updating (one trial per image per call);
- ``scipy-immediate`` / ``scipy-deferred``: ``scipy.optimize.differential_evolution`` image by
  image (``popsize=40`` = 200 members for D = 5, ``polish=False``, integrality; deferred with
  ``vectorized=True``);
- ``torchattacks`` / ``torchattacks-noes``: ``torchattacks.OnePixel`` (popsize 200 total, steps
  = maxiter) as shipped, which stops an image as soon as it is misclassified, and a subclass with
  that stop switched off (its DE never stops on convergence: it passes ``atol=-1``);
- ``art`` / ``art-noes``: ART ``PixelAttack(th=1, es=1)``; its DE has 400 members (hard-coded
  ``popsize=400 // 5``), so ``max_iter = ceil((maxiter + 1) * 200 / 400) - 1`` gives the nearest
  budget at or above ours; ``-noes`` drops its stop-on-success callback. It returns the clean
  image when the attack fails, so its score after is then the clean score.

All use the paper's 200 members x ``--maxiter`` generations and no attacker's stop threshold
(except the peers' as-shipped variants). Ours and SciPy keep the paper's convergence test
(tol 0.01), which is part of DE; on a confident model it often stops at the first check
(early convergence, a failed attack), so ``-notol`` runs them with the test off
(``DEConfig(convergence=False)``; SciPy ``tol=atol=0``): the full budget, as the peers spend it.
Images: ``--images`` AMi-Br test images per direction (true positives scored >= 0.9 for
``lower``, true negatives <= 0.1 for ``raise``, seeded order; the most confident others fill up
if too few). The methods in ``SLOW`` (SciPy immediate and deferred without tol, torchattacks,
ART) attack the first ``--peer-images`` of them; ours' results on that same subset are stored
beside them (``on_peer_images``).

Reported per method and direction: success (crossing 0.5, early convergence at the first
check counts as failure), strong success, mean score after (re-scored by the target on the
uint8 image each method returns), queries per attack, wall time per attack, queries/s, and for
ours the fraction of the model's raw batched throughput (``benchmarks/throughput.py``'s
``raw_throughput`` on requests of 1024 images, measured right before and after the run); the
table's speed-up is wall time per attack relative to ``ours-deferred-notol``.

    python benchmarks/attack_vs_peers.py [--images 30] [--peer-images 5] [--maxiter 100]
        [--methods ours-deferred-notol,torchattacks-noes,art-noes,...] [--directions lower,raise]
        [--threads 1] [--model resnet_custom_amibr] [--quick]
        [--out PATH]

The JSON goes to a new name under ``benchmarks/results/`` (``attack_vs_peers.json``,
``attack_vs_peers_2.json``...) with provenance (:mod:`provenance`), saved as methods finish; an
existing ``--out`` is refused.

Peers install: ``pip install --no-deps torchattacks adversarial-robustness-toolbox six tqdm``
(torchattacks lists torchvision, which it does not need to import).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import differential_evolution
from torch import nn

from onepixel.attack.de import BatchedDE, DEConfig
from onepixel.attack.objectives import (
    PlainObjective,
    crossed,
    make_fitness,
    score_to_energy,
    strong_threshold,
)
from onepixel.attack.perturb import apply_pixels, bounds_for
from onepixel.models import DEFAULT_MODEL
from onepixel.targets import Target, TorchTarget

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from provenance import finish, new_result_path, provenance  # noqa: E402
from throughput import raw_throughput  # noqa: E402

METHODS = (
    "ours-deferred",
    "ours-immediate",
    "ours-deferred-notol",
    "ours-immediate-notol",
    "scipy-deferred",
    "scipy-immediate",
    "scipy-deferred-notol",
    "torchattacks",
    "torchattacks-noes",
    "art",
    "art-noes",
)
SLOW = ("scipy-immediate", "scipy-deferred-notol", "torchattacks", "torchattacks-noes", "art", "art-noes")
# Speed-ups are relative to this one: it spends the full budget, like the peers.
REFERENCE = "ours-deferred-notol"
DEFAULT_METHODS = ",".join(METHODS)
ART_MEMBERS = 400  # ART PixelAttack: popsize = 400 // len(bounds) multiplier -> 400 members for D = 5


def paper_config(maxiter: int, updating: str, popsize: int = 200) -> DEConfig:
    """Return the paper's DE settings (best1bin, F 0.5, CR 0.7, tol 0.01, LHS, integers)."""
    return DEConfig(
        strategy="best1bin",
        popsize=popsize,
        mutation=0.5,
        recombination=0.7,
        maxiter=maxiter,
        tol=0.01,
        atol=0.0,
        init="latinhypercube",
        updating=updating,
        integrality=True,
    )


# ---- images --------------------------------------------------------------------------------------


def select(
    scores: np.ndarray, positive: np.ndarray, direction: str, n: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return (indices, confident flags) of ``n`` images to attack in ``direction``.

    Confident true positives (score >= 0.9, lower) or true negatives (<= 0.1, raise) in a seeded
    order; when fewer than ``n`` are confident, the most confident of the rest fill up.
    """
    want = positive if direction == "lower" else ~positive
    cand = np.flatnonzero(want)
    cand = cand[np.random.default_rng(seed).permutation(len(cand))]
    conf = scores[cand] >= 0.9 if direction == "lower" else scores[cand] <= 0.1
    rest = cand[~conf]
    rest = rest[np.argsort(-scores[rest] if direction == "lower" else scores[rest], kind="stable")]
    chosen = np.concatenate([cand[conf], rest])[:n]
    return chosen, np.isin(chosen, cand[conf])


# ---- adapters: the target as the peers' model --------------------------------------------------


def _to_uint8_nhwc(x: torch.Tensor | np.ndarray, scale: float, channels_first: bool) -> np.ndarray:
    """Return float images (values in [0, scale]) as rounded uint8 NHWC numpy images."""
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if channels_first:
        a = a.transpose(0, 2, 3, 1)
    return np.clip(np.rint(a * (255.0 / scale)), 0, 255).astype(np.uint8)


def two_class_probs(scores: np.ndarray) -> np.ndarray:
    """Return (N, 2) probabilities [negative, positive] for positive-class scores (N,)."""
    s = np.asarray(scores, dtype=np.float64)
    return np.stack([1.0 - s, s], axis=1)


class TargetModule(nn.Module):
    """An ``nn.Module`` face of a black-box target for torchattacks: float NCHW [0, 1] -> 2 logits.

    Images are rounded to uint8 (what a real image holds) and scored by ``target`` (which counts
    the queries); logits are [log(1 - s), log(s)], so softmax gives back [1 - s, s] exactly.
    """

    def __init__(self, target: Target):
        super().__init__()
        self.target = target
        self._device_probe = nn.Parameter(
            torch.zeros(1), requires_grad=False
        )  # torchattacks reads the device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return (N, 2) float64 logits of float NCHW images in [0, 1]."""
        s = torch.from_numpy(self.target.predict(_to_uint8_nhwc(x, 1.0, channels_first=True)))
        s = s.clamp(1e-300, 1.0)
        return torch.stack([torch.log1p(-s.clamp(max=1 - 1e-16)), torch.log(s)], dim=1)


def _peer_labels(direction: str, n: int) -> np.ndarray:
    """Return the true class index (0 negative, 1 positive) of the attacked images, as int64."""
    return np.full(n, 1 if direction == "lower" else 0, dtype=np.int64)


def attack_torchattacks(
    target: Target, images: np.ndarray, direction: str, maxiter: int, popsize: int, early_stop: bool
) -> dict[str, Any]:
    """Attack image by image with torchattacks.OnePixel (untargeted on the true class)."""
    import torchattacks

    class NoEarlyStop(torchattacks.OnePixel):
        """OnePixel whose per-generation 'already misclassified' stop never fires."""

        def _attack_success(self, image, label, delta):  # noqa: ANN001, ANN202 - torchattacks' signature
            return False

    cls = torchattacks.OnePixel if early_stop else NoEarlyStop
    # OnePixel passes popsize // D to its SciPy copy as the multiplier: popsize is the total.
    attack = cls(TargetModule(target), pixels=1, steps=maxiter, popsize=popsize, inf_batch=1024)
    labels = torch.from_numpy(_peer_labels(direction, 1))
    out: dict[str, list[Any]] = {"adv": [], "queries": [], "wall": []}
    for image in images:
        x = torch.from_numpy(image[None].transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
        q0, t0 = target.queries, time.perf_counter()
        adv = attack(x, labels)
        out["wall"].append(time.perf_counter() - t0)
        out["queries"].append(target.queries - q0)
        out["adv"].append(_to_uint8_nhwc(adv, 1.0, channels_first=True)[0])
    return _peer_result(out)


@contextlib.contextmanager
def _art_without_callback() -> Iterator[None]:
    """Within the block, ART's pixel attack runs its DE without the stop-on-success callback."""
    from art.attacks.evasion import pixel_threshold

    original = pixel_threshold.differential_evolution

    def no_callback(*args: Any, **kwargs: Any) -> Any:
        kwargs["callback"] = None
        return original(*args, **kwargs)

    pixel_threshold.differential_evolution = no_callback
    try:
        yield
    finally:
        pixel_threshold.differential_evolution = original


def art_classifier(target: Target, size: int) -> Any:
    """Return ART's black-box classifier view of ``target`` (NHWC 0-255 in, two-class probabilities out)."""
    from art.estimators.classification import BlackBoxClassifierNeuralNetwork

    return BlackBoxClassifierNeuralNetwork(
        lambda x: two_class_probs(target.predict(_to_uint8_nhwc(x, 255.0, channels_first=False))),
        input_shape=(size, size, 3),
        nb_classes=2,
        channels_first=False,
        clip_values=(0.0, 255.0),
    )


def art_max_iter(maxiter: int, popsize: int) -> int:
    """Return ART's max_iter giving the nearest query budget >= ours ((maxiter + 1) * popsize)."""
    return max(1, math.ceil((maxiter + 1) * popsize / ART_MEMBERS) - 1)


def attack_art(
    target: Target, images: np.ndarray, direction: str, maxiter: int, popsize: int, early_stop: bool
) -> dict[str, Any]:
    """Attack image by image with ART PixelAttack (th=1 pixel, es=1: its DE), untargeted."""
    from art.attacks.evasion import PixelAttack

    classifier = art_classifier(target, images.shape[1])
    attack = PixelAttack(
        classifier, th=1, es=1, max_iter=art_max_iter(maxiter, popsize), targeted=False, verbose=False
    )
    out: dict[str, list[Any]] = {"adv": [], "queries": [], "wall": []}
    ctx = contextlib.nullcontext() if early_stop else _art_without_callback()
    with ctx:
        for image in images:
            q0, t0 = target.queries, time.perf_counter()
            # y=None: ART takes the predicted class (one query) as the label; it rejects 2-class labels
            # ("not yet been tested for binary classification"); the images are classified correctly.
            adv = attack.generate(image[None].astype(np.float32))
            out["wall"].append(time.perf_counter() - t0)
            out["queries"].append(target.queries - q0)
            out["adv"].append(_to_uint8_nhwc(adv, 255.0, channels_first=False)[0])
    return _peer_result(out)


def _peer_result(out: dict[str, list[Any]]) -> dict[str, Any]:
    n = len(out["wall"])
    return {
        "adv": np.stack(out["adv"]),
        "nit": np.full(n, -1),  # the peers do not report generations
        "early": np.zeros(n, dtype=bool),  # no convergence test (atol=-1): never early-converged
        "queries_each": np.array(out["queries"]),
        "wall_each": np.array(out["wall"]),
        "wall_s": float(np.sum(out["wall"])),
        "queries": int(np.sum(out["queries"])),
    }


# ---- ours and SciPy ------------------------------------------------------------------------------


def attack_ours(
    target: Target, images: np.ndarray, direction: str, cfg: DEConfig, seed: int
) -> dict[str, Any]:
    """Attack all images in one BatchedDE (shared Generator); return outcomes and timings."""
    fitness = make_fitness(target, images, PlainObjective(direction))
    q0, t0 = target.queries, time.perf_counter()
    res = BatchedDE(fitness, bounds_for(1, images.shape[1]), len(images), cfg, seed=seed).solve()
    wall = time.perf_counter() - t0
    x = np.array([r.x for r in res])
    return {
        "adv": apply_pixels(images, x, np.arange(len(images))),
        "nit": np.array([r.nit for r in res]),
        "early": np.array([r.early_converged for r in res]),
        "queries_each": np.array([r.nfev for r in res]),
        "wall_s": wall,
        "queries": target.queries - q0,
    }


def attack_scipy(
    target: Target, images: np.ndarray, direction: str, cfg: DEConfig, seed: int, vectorized: bool
) -> dict[str, Any]:
    """Attack image by image with scipy.optimize.differential_evolution; return outcomes and timings."""
    bounds = [tuple(b) for b in bounds_for(1, images.shape[1])]
    kw = cfg.scipy_kwargs(5)
    kw["updating"] = "deferred" if vectorized else "immediate"
    out: dict[str, list[Any]] = {"x": [], "nit": [], "early": [], "queries": [], "wall": []}
    for i, image in enumerate(images):
        one = image[None]

        def f(x: np.ndarray, one: np.ndarray = one) -> np.ndarray | float:
            v = np.atleast_2d(x.T if vectorized else x)
            e = score_to_energy(target.predict(apply_pixels(one, v, np.zeros(len(v), int))), direction)
            return e if vectorized else float(e[0])

        q0, t0 = target.queries, time.perf_counter()
        r = differential_evolution(
            f, bounds, rng=np.random.default_rng(seed + 1 + i), vectorized=vectorized, **kw
        )
        out["wall"].append(time.perf_counter() - t0)
        out["queries"].append(target.queries - q0)
        out["x"].append(np.rint(r.x).astype(int))
        out["nit"].append(r.nit)
        out["early"].append(bool(r.success and r.nit == 1))
    x = np.array(out["x"])
    return {
        "adv": apply_pixels(images, x, np.arange(len(images))),
        "nit": np.array(out["nit"]),
        "early": np.array(out["early"]),
        "queries_each": np.array(out["queries"]),
        "wall_each": np.array(out["wall"]),
        "wall_s": float(np.sum(out["wall"])),
        "queries": int(np.sum(out["queries"])),
    }


# ---- summary -------------------------------------------------------------------------------------


def summarise(target: Target, r: dict[str, Any], direction: str, before: np.ndarray) -> dict[str, Any]:
    """Return one method's statistics; the score after is the target's score of the returned image."""
    q = target.queries
    after = target.predict(r["adv"])
    target.queries = q  # the re-scoring is ours, not the method's
    early = np.asarray(r["early"], dtype=bool)
    success = crossed(after, direction) & ~early
    strong = crossed(after, direction, strong_threshold(direction)) & ~early
    n = len(after)
    nit = np.asarray(r["nit"])
    return {
        "n": n,
        "success_rate": float(success.mean()),
        "successes": int(success.sum()),
        "strong_success_rate": float(strong.mean()),
        "early_converged": int(early.sum()),
        "mean_generations": float(nit.mean()) if (nit >= 0).all() else None,
        "mean_score_before": float(np.mean(before)),
        "mean_score_after": float(np.mean(after)),
        "median_score_after": float(np.median(after)),
        "queries_per_attack": r["queries"] / n,
        "wall_s": r["wall_s"],
        "wall_s_per_attack": r["wall_s"] / n,
        "queries_per_s": r["queries"] / r["wall_s"],
        "per_image": {
            "score_after": after.tolist(),
            "success": success.tolist(),
            "early": early.tolist(),
            "nit": nit.tolist(),
            "queries": np.asarray(r["queries_each"]).tolist(),
        },
    }


def subset_summary(s: dict[str, Any], k: int) -> dict[str, Any]:
    """Return success rate and mean score after of a method over its first ``k`` images."""
    p = s["per_image"]
    return {
        "n": min(k, s["n"]),
        "success_rate": float(np.mean(p["success"][:k])),
        "mean_score_after": float(np.mean(p["score_after"][:k])),
    }


def measure_raw(target: Target, batch_size: int, seconds: float) -> float:
    """Return the target's images/s on requests of ``batch_size`` images (queries not counted)."""
    q = target.queries
    rate = raw_throughput(target, batch_size, seconds=seconds)
    target.queries = q
    return rate


def run_method(
    method: str, target: Target, images: np.ndarray, direction: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Run one method on ``images``; return its raw outcome dict."""
    engine, _, variant = method.partition("-")
    updating = variant.split("-")[0]
    if engine in ("ours", "scipy"):
        cfg = paper_config(args.maxiter, updating, args.popsize)
        cfg.convergence = not method.endswith("-notol")  # SciPy: tol = atol = 0
        if engine == "ours":
            return attack_ours(target, images, direction, cfg, args.seed)
        return attack_scipy(target, images, direction, cfg, args.seed, vectorized=updating == "deferred")
    early_stop = not method.endswith("-noes")
    peer: Callable[..., dict[str, Any]] = (
        attack_torchattacks if method.startswith("torchattacks") else attack_art
    )
    return peer(target, images, direction, args.maxiter, args.popsize, early_stop)


def weights_sha256(model: str) -> str | None:
    """Return the sha256 of the weights file (bundled name or path), or None when it cannot be found."""
    path = Path(model)
    if not path.suffix:
        path = REPO / "src" / "onepixel" / "models" / "weights" / f"{model}.safetensors"
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def versions() -> dict[str, str | None]:
    """Return the versions of the packages compared."""
    out: dict[str, str | None] = {}
    for name in ("scipy", "torch", "torchattacks", "art"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - a peer that is not installed
            out[name] = None
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the comparison; print the table, write the JSON to ``--out``, return the results."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=30)
    p.add_argument(
        "--peer-images", type=int, default=5, help="images for the slow methods (first of --images)"
    )
    p.add_argument("--maxiter", type=int, default=100)
    p.add_argument("--popsize", type=int, default=200)
    p.add_argument("--methods", default=DEFAULT_METHODS)
    p.add_argument("--directions", default="lower,raise")
    # One thread: with two and other jobs on the 2 cores, torch's thread pool collapses (12 vs 400 images/s).
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--raw-seconds", type=float, default=3.0)
    p.add_argument(
        "--data", default=os.environ.get("ONEPIXEL_DATA", str(REPO.parent / "shared" / "data" / "ami-br"))
    )
    p.add_argument("--model", default=DEFAULT_MODEL, help="bundled model name or .safetensors path")
    p.add_argument(
        "--quick", action="store_true", help="defaults: 4 images, 1 for slow methods, 5 generations"
    )
    p.add_argument(
        "--out", type=Path, default=None, help="result path (default: a new name in benchmarks/results/)"
    )
    if "--quick" in (sys.argv[1:] if argv is None else argv):
        p.set_defaults(images=4, peer_images=1, maxiter=5, raw_seconds=1.0)
    args = p.parse_args(argv)
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; use {METHODS}")
    if args.out is not None and args.out.exists():
        p.error(f"--out {args.out} exists: results are never overwritten, name a new file")
    out_path = args.out or new_result_path("attack_vs_peers")
    torch.set_num_threads(args.threads)
    prov = provenance(sys.argv if argv is None else [sys.argv[0], *argv])

    from onepixel.data.amibr import load_amibr

    target = TorchTarget.from_pretrained(args.model)
    data = load_amibr(Path(args.data), "test")
    positive = data.labels == data.positive_index
    clean = target.predict(data.images)
    target.queries = 0
    out: dict[str, Any] = {
        "command": "python benchmarks/attack_vs_peers.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "provenance": prov,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "model": {
            "name": target.meta.name,
            "source": str(args.model),
            "weights_sha256": weights_sha256(args.model),
            "test_metrics": target.meta.info.get("test"),
            "inference_mode": target.resolved_mode,
            "batch_size": target.batch_size,
        },
        "art_max_iter": art_max_iter(args.maxiter, args.popsize),
        "versions": versions(),
        "machine": {"cpus": os.cpu_count(), "threads": args.threads, "platform": platform.platform()},
        "directions": {},
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        out_path.write_text(json.dumps(out, indent=1))

    for direction in args.directions.split(","):
        idx, confident = select(clean, positive, direction, args.images, args.seed)
        images, before = data.images[idx], clean[idx]
        section: dict[str, Any] = {
            "images": [data.names[i] for i in idx],
            "confident": int(confident.sum()),
            "peer_images": min(args.peer_images, len(idx)),
            "methods": {},
        }
        out["directions"][direction] = section
        print(f"{direction}: {len(idx)} images, {confident.sum()} confident", flush=True)
        for method in methods:
            n = section["peer_images"] if method in SLOW else len(idx)
            raw_before = measure_raw(target, 1024, args.raw_seconds) if method.startswith("ours") else None
            load_before = os.getloadavg()[0]
            r = run_method(method, target, images[:n], direction, args)
            s = summarise(target, r, direction, before[:n])
            s["load_avg_1min"] = [load_before, os.getloadavg()[0]]
            if raw_before is not None:
                raw = 0.5 * (raw_before + measure_raw(target, 1024, args.raw_seconds))
                s["raw_throughput"] = raw
                s["fraction_of_raw"] = s["queries_per_s"] / raw
            section["methods"][method] = s
            save()
            frac = f" {s['fraction_of_raw']:.2f} of raw" if raw_before is not None else ""
            print(
                f"  {method:18s} n={s['n']:2d} success {s['success_rate']:.2f} "
                f"after {s['mean_score_after']:.3f} "
                f"{s['queries_per_attack']:.0f} q/attack {s['wall_s_per_attack']:.2f} s/attack "
                f"{s['queries_per_s']:.0f} q/s{frac}",
                flush=True,
            )
        k = section["peer_images"]
        for method, s in section["methods"].items():
            if method not in SLOW:
                s["on_peer_images"] = subset_summary(s, k)
        save()
    out["provenance"] = finish(prov)
    save()
    print(f"wrote {out_path}")
    print_table(out)
    return out


def print_table(out: dict[str, Any]) -> None:
    """Print the Markdown table of the results (speed-ups relative to ``REFERENCE``)."""
    print(
        "| direction | method | images | success | mean score after | queries/attack | s/attack "
        f"| queries/s | of raw | {REFERENCE} faster by |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for direction, section in out["directions"].items():
        methods = section["methods"]
        ours = methods.get(REFERENCE)
        for method, s in methods.items():
            frac = f"{s['fraction_of_raw']:.2f}" if "fraction_of_raw" in s else ""
            speed = f"{s['wall_s_per_attack'] / ours['wall_s_per_attack']:.1f}x" if ours else ""
            print(
                f"| {direction} | {method} | {s['n']} | {s['successes']}/{s['n']} "
                f"| {s['mean_score_after']:.3f} "
                f"| {s['queries_per_attack']:.0f} | {s['wall_s_per_attack']:.2f} | {s['queries_per_s']:.0f} "
                f"| {frac} | {speed} |"
            )


if __name__ == "__main__":
    main()
