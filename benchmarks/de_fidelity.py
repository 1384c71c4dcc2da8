"""Fidelity of our batched DE engine to SciPy's ``differential_evolution``, and its speed.

Two parts, both with the paper's settings (200 members, best1bin, F 0.5, CR 0.7, tol 0.01,
Latin hypercube, integrality, no polishing):

- ``synthetic``: test functions in 5 dimensions, ``--runs`` seeds each: our engine (all runs as
  one batch) vs SciPy, immediate and deferred; medians and two-sided Mann-Whitney p-values of
  the final best energy, the generation count and the best energy after 10 generations; and how
  many runs ours with per-problem seeds reproduces bit for bit.
- ``model``: one-pixel attacks on the bundled classifier over ``--images`` AMi-Br test images
  (confident ones first, per the paper's filter: true positives scored >= 0.9 for ``lower``,
  true negatives <= 0.1 for ``raise``; less confident ones fill up if too few): ours
  (immediate), ours (deferred), SciPy immediate (one image per call, as the paper ran it) and
  SciPy deferred (``vectorized=True``), and ours (immediate) with one seed per image equal to
  SciPy's seeds (``-seeded``: a bit-for-bit replay of SciPy where the model's scores do not
  depend on the batch). Success (crossing 0.5, not early-converged), strong
  success, early convergence, generations, score after, with 95% CIs; paired tests of each
  method against SciPy immediate on the same images; wall time per attack and queries/s.
- ``overhead``: the engine's own time per generation with a trivial function (K=30, M=200, D=5).

    python benchmarks/de_fidelity.py [--parts synthetic,model,overhead] [--images 50] [--maxiter 100]
        [--directions lower,raise] [--threads 1] [--stem de_fidelity] [--out PATH]
        [--methods ours-immediate,ours-deferred,scipy-immediate,scipy-deferred,ours-immediate-seeded]

The JSON goes to a new name under ``benchmarks/results/`` (``<stem>.json``, ``<stem>_2.json``...)
with provenance (:mod:`provenance`), saved as the model part progresses; an existing ``--out``
is refused.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats
from scipy.optimize import differential_evolution

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import finish, new_result_path, provenance  # noqa: E402

from onepixel.attack.de import BatchedDE, DEConfig  # noqa: E402
from onepixel.attack.objectives import (  # noqa: E402
    PlainObjective,
    crossed,
    make_fitness,
    score_to_energy,
    strong_threshold,
)
from onepixel.attack.perturb import apply_pixels, bounds_for  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
METHODS = ("ours-immediate", "ours-deferred", "scipy-immediate", "scipy-deferred", "ours-immediate-seeded")
REFERENCE = "scipy-immediate"


def paper_config(maxiter: int = 100, updating: str = "immediate", popsize: int = 200) -> DEConfig:
    """Return the paper's DE settings (003): 200 members, best1bin, F 0.5, CR 0.7, tol 0.01, LHS."""
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


# ---- statistics ------------------------------------------------------------------------------


def wilson(k: int, n: int, z: float = 1.96) -> list[float]:
    """Return the Wilson 95% interval [lo, hi] of a proportion k/n."""
    if n == 0:
        return [float("nan"), float("nan")]
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [float(centre - half), float(centre + half)]


def mean_ci(x: np.ndarray) -> dict[str, Any]:
    """Return mean and its t-based 95% interval of x."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) == 0:
        return {"mean": float("nan"), "ci": [float("nan"), float("nan")], "n": 0}
    m = float(x.mean())
    if len(x) < 2 or np.all(x == x[0]):
        return {"mean": m, "ci": [m, m], "n": len(x)}
    half = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return {"mean": m, "ci": [m - half, m + half], "n": len(x)}


def rate(flags: np.ndarray) -> dict[str, Any]:
    """Return a proportion with its Wilson 95% interval."""
    flags = np.asarray(flags, dtype=bool)
    k, n = int(flags.sum()), len(flags)
    return {"rate": k / n if n else float("nan"), "k": k, "n": n, "ci": wilson(k, n)}


def mwu(a: np.ndarray, b: np.ndarray) -> float:
    """Return the two-sided Mann-Whitney p-value (1.0 when both samples are one identical value)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(np.unique(np.concatenate([a, b]))) == 1:
        return 1.0
    return float(stats.mannwhitneyu(a, b).pvalue)


def paired(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, Any]:
    """Return paired comparisons of two methods on the same images (a minus b)."""
    out: dict[str, Any] = {}
    for key in ("success", "early"):
        x, y = a[key].astype(bool), b[key].astype(bool)
        only_a, only_b = int((x & ~y).sum()), int((~x & y).sum())
        p = 1.0 if only_a + only_b == 0 else float(stats.binomtest(only_a, only_a + only_b).pvalue)
        out[key] = {"diff": float(x.mean() - y.mean()), "only_a": only_a, "only_b": only_b, "mcnemar_p": p}
    for key in ("score_after", "nit"):
        d = np.asarray(a[key], float) - np.asarray(b[key], float)
        p = 1.0 if np.all(d == 0) else float(stats.wilcoxon(d).pvalue)
        out[key] = {"diff": mean_ci(d), "wilcoxon_p": p}
    return out


# ---- synthetic functions ---------------------------------------------------------------------

SHIFT = np.array([3, -7, 11, 0, 5])
SYNTHETIC = {
    "sphere": (lambda x: ((x - 1.5) ** 2).sum(-1) + 1.0, [(-5.0, 5.0)] * 5, False),
    "int_sphere": (lambda x: ((x - SHIFT) ** 2).sum(-1) + 1.0, [(-20.0, 20.0)] * 5, True),
    "rastrigin": (lambda x: 50 + (x**2 - 10 * np.cos(2 * np.pi * x)).sum(-1), [(-5.12, 5.12)] * 5, False),
}


def synthetic(runs: int, maxiter: int, seed: int) -> dict[str, Any]:
    """Return per function and updating mode: medians and Mann-Whitney p of ours vs SciPy."""
    out: dict[str, Any] = {}
    for name, (f, bounds, integ) in SYNTHETIC.items():
        for updating in ("immediate", "deferred"):
            cfg = DEConfig(popsize=200, maxiter=maxiter, updating=updating, integrality=integ)
            t0 = time.perf_counter()
            res = BatchedDE(lambda v, ids, f=f: f(v), np.array(bounds), runs, cfg, seed=seed).solve()
            t_ours = time.perf_counter() - t0
            ours = {
                "fun": np.array([r.fun for r in res]),
                "nit": np.array([r.nit for r in res]),
                "gen10": np.array([r.history[min(10, len(r.history) - 1)] for r in res]),
            }
            seeds = [seed + 10_000 + s for s in range(runs)]
            replay = BatchedDE(lambda v, ids, f=f: f(v), np.array(bounds), runs, cfg, seed=seeds).solve()
            ref: dict[str, list[Any]] = {"fun": [], "nit": [], "gen10": [], "x": []}
            vec = updating == "deferred"
            t0 = time.perf_counter()
            for s in range(runs):
                best: list[float] = []
                r = differential_evolution(
                    (lambda x, f=f: f(x.T)) if vec else f,
                    bounds,
                    rng=np.random.default_rng(seeds[s]),
                    vectorized=vec,
                    callback=_recorder(best),
                    **cfg.scipy_kwargs(len(bounds)),
                )
                ref["fun"].append(r.fun)
                ref["nit"].append(r.nit)
                ref["x"].append(r.x)
                ref["gen10"].append(best[min(10, len(best)) - 1])
            t_ref = time.perf_counter() - t0
            identical = sum(
                np.array_equal(a.x, b) and a.nit == n and a.fun == e
                for a, b, n, e in zip(replay, ref["x"], ref["nit"], ref["fun"], strict=True)
            )
            row: dict[str, Any] = {
                "runs": runs,
                "ours_s": t_ours,
                "scipy_s": t_ref,
                "seeded_identical": identical,
            }
            for key in ours:
                row[key] = {
                    "ours_median": float(np.median(ours[key])),
                    "scipy_median": float(np.median(ref[key])),
                    "mwu_p": mwu(ours[key], np.array(ref[key])),
                }
            out[f"{name}/{updating}"] = row
            print(
                f"synthetic {name:10s} {updating:9s}",
                _fmt_synth(row),
                f"seeded identical {identical}/{runs}",
                flush=True,
            )
    return out


def _recorder(store: list[float]):
    def callback(intermediate_result) -> None:
        store.append(float(intermediate_result.fun))

    return callback


def _fmt_synth(row: dict[str, Any]) -> str:
    return "  ".join(
        f"{k}: {row[k]['ours_median']:.4g} vs {row[k]['scipy_median']:.4g} (p={row[k]['mwu_p']:.2f})"
        for k in ("fun", "nit", "gen10")
    )


# ---- engine overhead ---------------------------------------------------------------------------


def overhead(generations: int = 5) -> dict[str, Any]:
    """Return the engine's own ms per generation (K=30, M=200, D=5) with a trivial numpy function."""
    out = {}
    for updating, seeded in [
        ("immediate", False),
        ("deferred", False),
        ("immediate", True),
        ("deferred", True),
    ]:
        calls = [0]

        def f(v: np.ndarray, ids: np.ndarray, calls: list[int] = calls) -> np.ndarray:
            calls[0] += 1
            return (v * v).sum(1) * 1e-6

        cfg = DEConfig(popsize=200, maxiter=generations + 1, updating=updating, convergence=False)
        de = BatchedDE(f, bounds_for(1), 30, cfg, seed=list(range(30)) if seeded else 0)
        de.initialise()
        calls[0] = 0
        t0 = time.perf_counter()
        for _ in range(generations):
            de.step()
        ms = (time.perf_counter() - t0) / generations * 1000
        name = updating + ("-seeded" if seeded else "")
        out[name] = {"ms_per_generation": ms, "func_calls_per_generation": calls[0] / generations}
        print(f"overhead {name:16s} {ms:.1f} ms/generation, {calls[0] / generations:.0f} calls", flush=True)
    return out


# ---- attacks on the model ----------------------------------------------------------------------


def select(
    target: Any, data: Any, direction: str, n: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (indices, clean scores, confident flags) of n images to attack in ``direction``."""
    scores = target.predict(data.images)
    positive = data.labels == data.positive_index
    want = positive if direction == "lower" else ~positive
    cand = np.flatnonzero(want)
    cand = cand[np.random.default_rng(seed).permutation(len(cand))]
    conf = scores[cand] >= 0.9 if direction == "lower" else scores[cand] <= 0.1
    confident = cand[conf]
    # Fill with the most confident of the rest (highest score for lower, lowest for raise).
    rest = cand[~conf]
    rest = rest[np.argsort(-scores[rest] if direction == "lower" else scores[rest], kind="stable")]
    chosen = np.concatenate([confident, rest])[:n]
    return chosen, scores[chosen], np.isin(chosen, confident)


def attack_ours(
    target: Any, images: np.ndarray, direction: str, cfg: DEConfig, seed: int | list[int]
) -> dict[str, Any]:
    """Attack all images in one BatchedDE; return per-image outcomes and timings."""
    fitness = make_fitness(target, images, PlainObjective(direction))
    q0, t0 = target.queries, time.perf_counter()
    res = BatchedDE(fitness, bounds_for(1), len(images), cfg, seed=seed).solve()
    wall = time.perf_counter() - t0
    return {
        "score_after": fitness.best_scores.copy(),
        "nit": np.array([r.nit for r in res]),
        "early": np.array([r.early_converged for r in res]),
        "nfev": np.array([r.nfev for r in res]),
        "x": np.array([r.x for r in res]),
        "wall_s": wall,
        "queries": target.queries - q0,
    }


def attack_scipy(
    target: Any, images: np.ndarray, direction: str, cfg: DEConfig, seed: int, vectorized: bool
) -> dict[str, Any]:
    """Attack image by image with scipy.optimize.differential_evolution; return outcomes and timings."""
    bounds = [tuple(b) for b in bounds_for(1)]
    kw = cfg.scipy_kwargs(5)
    kw["updating"] = "deferred" if vectorized else "immediate"
    out: dict[str, list[Any]] = {"score_after": [], "nit": [], "early": [], "nfev": [], "x": []}
    q0, t0 = target.queries, time.perf_counter()
    for i, image in enumerate(images):
        one = image[None]
        evals = [0]

        def f(x: np.ndarray, one: np.ndarray = one, evals: list[int] = evals) -> np.ndarray | float:
            v = np.atleast_2d(x.T if vectorized else x)
            evals[0] += len(v)
            e = score_to_energy(target.predict(apply_pixels(one, v, np.zeros(len(v), int))), direction)
            return e if vectorized else float(e[0])

        rng = np.random.default_rng(seed + 1 + i)
        r = differential_evolution(f, bounds, rng=rng, vectorized=vectorized, **kw)
        out["x"].append(np.rint(r.x).astype(int))
        out["score_after"].append(float(score_to_energy(r.fun, direction)))
        out["nit"].append(r.nit)
        out["early"].append(bool(r.success and r.nit == 1))
        out["nfev"].append(evals[0])
    wall = time.perf_counter() - t0
    res: dict[str, Any] = {k: np.array(v) for k, v in out.items()}
    res.update(wall_s=wall, queries=target.queries - q0)
    return res


def summarise(r: dict[str, Any], direction: str, before: np.ndarray) -> dict[str, Any]:
    """Return the outcome statistics of one method (and store its success flags in r)."""
    after = np.asarray(r["score_after"])
    early = np.asarray(r["early"], bool)
    r["success"] = crossed(after, direction) & ~early
    strong = crossed(after, direction, strong_threshold(direction)) & ~early
    n = len(after)
    return {
        "n": n,
        "success": rate(r["success"]),
        "strong_success": rate(strong),
        "early_converged": rate(early),
        "success_among_not_early": rate(r["success"][~early]),
        "generations": mean_ci(r["nit"]),
        "generations_not_early": mean_ci(np.asarray(r["nit"])[~early]),
        "score_before": mean_ci(before),
        "score_after": mean_ci(after),
        "median_score_after": float(np.median(after)),
        "evaluations": int(np.sum(r["nfev"])),
        "wall_s": r["wall_s"],
        "wall_s_per_attack": r["wall_s"] / n,
        "queries_per_s": r["queries"] / r["wall_s"],
    }


def model_part(args: argparse.Namespace, out: dict[str, Any], save: Any) -> dict[str, Any]:
    """Run the attacks of every method on the selected images into ``out`` (saved after each method)."""
    from onepixel.data.amibr import load_amibr
    from onepixel.targets import TorchTarget

    target = TorchTarget.from_pretrained(args.model)
    data = load_amibr(Path(args.data), "test")
    out.update(model=str(args.model), inference_mode=target.resolved_mode, model_info=_model_info(target))
    for direction in args.directions.split(","):
        idx, before, confident = select(target, data, direction, args.images, args.seed)
        images = data.images[idx]
        section: dict[str, Any] = {
            "images": [data.names[i] for i in idx],
            "confident": int(confident.sum()),
            "methods": {},
            "paired_vs_" + REFERENCE: {},
        }
        raw: dict[str, dict[str, Any]] = {}
        for method in args.methods.split(","):
            if method not in METHODS:
                raise SystemExit(f"unknown method {method!r}; use {METHODS}")
            engine, updating = method.split("-")[:2]
            cfg = paper_config(args.maxiter, updating, args.popsize)
            if engine == "ours":
                # "-seeded": one seed per image, the one SciPy gets: a bit-for-bit replay of SciPy.
                seeded = method.endswith("seeded")
                seeds = [args.seed + 1 + i for i in range(len(images))] if seeded else args.seed
                r = attack_ours(target, images, direction, cfg, seeds)
            else:
                r = attack_scipy(target, images, direction, cfg, args.seed, vectorized=updating == "deferred")
            section["methods"][method] = summarise(r, direction, before)
            section["methods"][method]["per_image"] = {
                k: np.asarray(r[k]).tolist() for k in ("score_after", "nit", "early", "nfev")
            }
            raw[method] = r
            out[direction] = section
            save()
            s = section["methods"][method]
            print(
                f"{direction:5s} {method:21s} n={s['n']} success {s['success']['rate']:.2f} "
                f"early {s['early_converged']['rate']:.2f} gens {s['generations']['mean']:.1f} "
                f"after {s['score_after']['mean']:.3f}  {s['wall_s_per_attack']:.2f} s/attack "
                f"{s['queries_per_s']:.0f} q/s",
                flush=True,
            )
        if REFERENCE in raw:
            for method, r in raw.items():
                if method != REFERENCE:
                    cmp = paired(r, raw[REFERENCE])
                    ref = raw[REFERENCE]
                    same = (r["x"] == ref["x"]).all(axis=1) & (r["nit"] == ref["nit"])
                    cmp["identical_attacks"] = {"k": int(same.sum()), "n": len(same)}
                    section["paired_vs_" + REFERENCE][method] = cmp
                    succ = cmp["success"]
                    print(
                        f"{direction:5s} {method:21s} vs {REFERENCE}: identical {same.sum()}/{len(same)},"
                        f" success diff {succ['diff']:+.2f} (McNemar p={succ['mcnemar_p']:.2f})",
                        flush=True,
                    )
        out[direction] = section
        save()
    return out


def _model_info(target: Any) -> dict[str, Any]:
    """Return the model's recorded test metrics and training summary, where its metadata has them."""
    info = getattr(getattr(target, "meta", None), "info", {}) or {}
    return {k: info[k] for k in ("test", "epochs", "best_epoch", "command") if k in info}


def main() -> None:
    """Parse arguments, run the chosen parts, print a summary and write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="synthetic,model,overhead")
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--maxiter", type=int, default=100)
    ap.add_argument("--popsize", type=int, default=200)
    ap.add_argument("--directions", default="lower")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--runs", type=int, default=30, help="seeds per synthetic function")
    ap.add_argument(
        "--model", default="resnet_custom_amibr", help="bundled weights name or .safetensors path"
    )
    ap.add_argument(
        "--data", default=os.environ.get("ONEPIXEL_DATA", str(REPO.parent / "shared/data/ami-br"))
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stem", default="de_fidelity", help="name of the result JSON when --out is not given")
    ap.add_argument(
        "--out", type=Path, default=None, help="result path (default: a new name in benchmarks/results/)"
    )
    args = ap.parse_args()
    if args.out is not None and args.out.exists():
        ap.error(f"--out {args.out} exists: results are never overwritten, name a new file")
    out_path = args.out or new_result_path(args.stem)

    import torch

    torch.set_num_threads(args.threads)
    prov = provenance()
    parts = args.parts.split(",")
    result: dict[str, Any] = {
        "command": "python benchmarks/de_fidelity.py "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
        "settings": paper_config(args.maxiter, popsize=args.popsize).to_dict(),
        "machine": {
            "python": platform.python_version(),
            "cpu": platform.processor(),
            "threads": args.threads,
        },
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "provenance": prov,
    }

    def save() -> None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=1, default=str))

    if "overhead" in parts:
        result["overhead"] = overhead()
    if "synthetic" in parts:
        result["synthetic"] = synthetic(args.runs, args.maxiter, args.seed)
    if "model" in parts:
        result["model"] = {}
        model_part(args, result["model"], save)
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result["provenance"] = finish(prov)
    save()
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
