"""BatchedDE: fidelity to scipy.optimize.differential_evolution, and engine behaviour.

Exact: with one seed per problem, each problem reproduces SciPy's run with that seed bit for bit
(same x, fun, nit, nfev) for both updating modes, several strategies, dithering and integrality.

Fidelity: 30 problems solved at once by our engine vs 30 SciPy runs (seeds 1000..1029) with the
same settings; two-sided Mann-Whitney U tests on the final best energy, the generation count and
the best energy after 5 and 10 generations must not reject (p > 1e-4; over 96 such comparisons
with other seeds the smallest p seen was 0.005). Power: deliberately broken settings (F = 0,
CR = 0.3 instead of 0.7, rand1bin instead of best1bin) must be rejected (p < 1e-6) by at least
one of the same tests, so the fidelity tests can fail.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from scipy.optimize import differential_evolution
from scipy.stats import mannwhitneyu

from onepixel.attack.de import BatchedDE, DEConfig

N_RUNS = 30
GENS = 30
SHIFT = np.array([3, -7, 11, 0, 5])


def sphere(x: np.ndarray) -> np.ndarray:
    """Shifted sphere with minimum 1 at (1.5, ...); vectors in the last axis."""
    return ((x - 1.5) ** 2).sum(-1) + 1.0


def rastrigin(x: np.ndarray) -> np.ndarray:
    """Rastrigin: many local minima, global minimum 0 at the origin."""
    return 10 * x.shape[-1] + (x**2 - 10 * np.cos(2 * np.pi * x)).sum(-1)


def int_sphere(x: np.ndarray) -> np.ndarray:
    """Integer sphere shifted to SHIFT, minimum 1."""
    return ((x - SHIFT) ** 2).sum(-1) + 1.0


def rosenbrock(x: np.ndarray) -> np.ndarray:
    """Rosenbrock: a curved valley, minimum 0 at (1, ...)."""
    return (100 * (x[..., 1:] - x[..., :-1] ** 2) ** 2 + (1 - x[..., :-1]) ** 2).sum(-1)


PROBLEMS = {
    "sphere": (sphere, ((-5.0, 5.0),) * 5, False),
    "rastrigin": (rastrigin, ((-5.12, 5.12),) * 5, False),
    "int_sphere": (int_sphere, ((-20.0, 20.0),) * 5, True),
    "rosenbrock": (rosenbrock, ((-2.0, 2.0),) * 5, False),
}


def config(name: str, updating: str, **overrides) -> DEConfig:
    """Return the test settings (50 members, 30 generations, tol 0.01) for a problem."""
    values = dict(popsize=50, maxiter=GENS, updating=updating, tol=0.01, integrality=PROBLEMS[name][2])
    return DEConfig(**{**values, **overrides})


def padded(history: list[float]) -> list[float]:
    """Return a best-energy history extended to GENS + 1 entries by its last value."""
    return history + [history[-1]] * (GENS + 1 - len(history))


def ours(name: str, cfg: DEConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Solve N_RUNS copies of a problem at once; return final energies, nit and histories."""
    f, bounds, _ = PROBLEMS[name]
    res = BatchedDE(lambda v, ids: f(v), np.array(bounds), N_RUNS, cfg, seed=seed).solve()
    return {
        "fun": np.array([r.fun for r in res]),
        "nit": np.array([r.nit for r in res]),
        "hist": np.array([padded(r.history) for r in res]),
    }


def recorder(store: list[float]):
    """Return a SciPy callback that appends the best energy after each generation to ``store``."""

    def callback(intermediate_result) -> None:
        store.append(float(intermediate_result.fun))

    return callback


@cache
def scipy_runs(name: str, updating: str, strategy: str = "best1bin") -> dict[str, np.ndarray]:
    """Run SciPy N_RUNS times (seeds 1000+) with the equivalent settings; same keys as ``ours``."""
    f, bounds, _ = PROBLEMS[name]
    cfg = config(name, updating, strategy=strategy)
    vectorised = updating == "deferred"  # same algorithm, one call per generation: faster
    funs, nits, hists = [], [], []
    for s in range(N_RUNS):
        best: list[float] = []
        r = differential_evolution(
            (lambda x: f(x.T)) if vectorised else f,
            bounds,
            rng=1000 + s,
            vectorized=vectorised,
            callback=recorder(best),
            **cfg.scipy_kwargs(len(bounds)),
        )
        funs.append(r.fun)
        nits.append(r.nit)
        hists.append(padded([np.nan, *best]))
    return {"fun": np.array(funs), "nit": np.array(nits), "hist": np.array(hists)}


def p_values(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    """Return two-sided Mann-Whitney p-values for final energy, nit, and best energy at gen 5 and 10."""
    out = {}
    for key, x, y in [
        ("fun", a["fun"], b["fun"]),
        ("nit", a["nit"], b["nit"]),
        ("gen5", a["hist"][:, 5], b["hist"][:, 5]),
        ("gen10", a["hist"][:, 10], b["hist"][:, 10]),
    ]:
        same = np.array_equal(np.unique(x), np.unique(y)) and len(np.unique(x)) == 1
        out[key] = 1.0 if same else float(mannwhitneyu(x, y).pvalue)
    return out


@pytest.mark.parametrize("updating", ["immediate", "deferred"])
@pytest.mark.parametrize("name", ["sphere", "rastrigin", "int_sphere"])
def test_matches_scipy_statistically(name: str, updating: str) -> None:
    p = p_values(ours(name, config(name, updating)), scipy_runs(name, updating))
    assert min(p.values()) > 1e-4, p


@pytest.mark.parametrize(
    "broken",
    [{"mutation": 0.0}, {"recombination": 0.3}, {"strategy": "rand1bin"}],
    ids=["F=0", "CR=0.3", "rand1bin"],
)
@pytest.mark.parametrize("updating", ["immediate", "deferred"])
def test_fidelity_tests_detect_broken_settings(updating: str, broken: dict) -> None:
    name = "int_sphere"
    p = p_values(ours(name, config(name, updating, **broken)), scipy_runs(name, updating))
    assert min(p.values()) < 1e-6, p


def test_dithered_mutation_matches_scipy() -> None:
    cfg = config("sphere", "deferred", mutation=(0.5, 1.0))
    f, bounds, _ = PROBLEMS["sphere"]
    ref = []
    for s in range(N_RUNS):
        r = differential_evolution(
            lambda x: f(x.T), bounds, rng=2000 + s, vectorized=True, **cfg.scipy_kwargs(5)
        )
        ref.append(r.nit)
    mine = ours("sphere", cfg)["nit"]
    assert mannwhitneyu(mine, ref).pvalue > 1e-4
    fixed = ours("sphere", config("sphere", "deferred"))["nit"]
    assert mannwhitneyu(fixed, ref).pvalue < 1e-6  # dithering really changes the run


def test_k_problems_at_once_match_single_runs_in_distribution() -> None:
    """Results of a K-problem run equal K=1 runs in distribution (not bit for bit: shared RNG)."""
    f, bounds, _ = PROBLEMS["int_sphere"]
    cfg = config("int_sphere", "immediate")
    batch = ours("int_sphere", cfg, seed=7)
    single = [
        BatchedDE(lambda v, ids: f(v), np.array(bounds), 1, cfg, seed=100 + s).solve()[0] for s in range(20)
    ]
    assert mannwhitneyu(batch["nit"], [r.nit for r in single]).pvalue > 1e-4
    assert mannwhitneyu(batch["hist"][:, 5], [padded(r.history)[5] for r in single]).pvalue > 1e-4


@pytest.mark.parametrize("updating", ["immediate", "deferred"])
def test_same_seed_same_results(updating: str) -> None:
    cfg = config("rosenbrock", updating, maxiter=8)
    a, b, c = (ours("rosenbrock", cfg, seed=s) for s in (5, 5, 6))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["hist"], c["hist"])


@pytest.mark.parametrize("updating", ["immediate", "deferred"])
def test_flat_function_converges_early(updating: str) -> None:
    cfg = DEConfig(popsize=20, updating=updating)
    res = BatchedDE(
        lambda v, ids: np.full(len(v), 0.7), np.array([[0, 63], [0, 255]]), 3, cfg, seed=0
    ).solve()
    for r in res:
        assert (r.nit, r.nfev, r.converged, r.early_converged) == (1, 40, True, True)
        assert r.history == [0.7, 0.7]
    ref = differential_evolution(lambda x: 0.7, [(0, 63), (0, 255)], popsize=10, polish=False, rng=0)
    assert ref.nit == 1  # SciPy reports the same for a flat function


@pytest.mark.parametrize("updating", ["immediate", "deferred"])
def test_convergence_off_runs_maxiter(updating: str) -> None:
    cfg = DEConfig(popsize=20, maxiter=7, updating=updating, convergence=False)
    res = BatchedDE(
        lambda v, ids: np.full(len(v), 0.7), np.array([[0, 63], [0, 255]]), 2, cfg, seed=0
    ).solve()
    for r in res:
        assert (r.nit, r.nfev, r.converged, r.early_converged) == (7, 160, False, False)
        assert "Maximum number of iterations" in r.message
        assert len(r.history) == 8


def test_callback_stops_chosen_problems() -> None:
    seen: list[np.ndarray] = []

    def cb(solver: BatchedDE) -> np.ndarray:
        seen.append(solver.nit.copy())
        return solver.best_energy < 20  # problem-specific: offsets make some problems easier

    offsets = np.array([0.0, 10.0, 1000.0])
    bounds = np.array(PROBLEMS["int_sphere"][1])
    cfg = DEConfig(popsize=30, maxiter=15, convergence=False)
    de = BatchedDE(lambda v, ids: int_sphere(v) + offsets[ids], bounds, 3, cfg, seed=1, callback=cb)
    res = de.solve()
    for r, off in zip(res, offsets, strict=True):
        if off < 20:
            assert r.message == "callback function requested stop early" and not r.converged
            assert r.fun < 20 and r.nit < 15
            assert all(h >= 20 for h in r.history[:-1])  # it stopped at the first generation below 20
        else:
            assert r.nit == 15 and "Maximum" in r.message
    assert [int(s[2]) for s in seen] == list(range(1, 16))  # called after every generation


@pytest.mark.parametrize("updating", ["immediate", "deferred"])
def test_integrality_and_bounds(updating: str) -> None:
    evaluated: list[np.ndarray] = []
    batch_sizes: list[int] = []
    bounds = np.array([[0, 3], [0, 63], [-10, 10], [0, 255], [5, 5]], float)

    def f(v: np.ndarray, ids: np.ndarray) -> np.ndarray:
        evaluated.append(v.copy())
        batch_sizes.append(len(v))
        return rastrigin(v / 20)

    cfg = DEConfig(popsize=200, maxiter=5, updating=updating, convergence=False)
    de = BatchedDE(f, bounds, 4, cfg, seed=2, max_batch=300)
    res = de.solve()
    allv = np.concatenate(evaluated)
    assert len(allv) == 4 * 200 * 6 == sum(r.nfev for r in res)
    np.testing.assert_array_equal(allv, np.round(allv))
    assert np.all(allv >= bounds[:, 0]) and np.all(allv <= bounds[:, 1])
    # Latin hypercube, scaled to [0, 3] and rounded as SciPy does: the end values half as often.
    first = np.concatenate(evaluated)[: 4 * 200, 0].reshape(4, 200)
    for row in first:
        counts = np.bincount(row.astype(int), minlength=4)
        assert np.all(np.abs(counts - np.array([1, 2, 2, 1]) * 200 / 6) <= 1), counts
    assert max(batch_sizes) <= 300
    if updating == "immediate":
        assert batch_sizes[-200:] == [4] * 200  # one trial per problem per call
    assert all(r.x.dtype == np.int64 for r in res)


def test_real_valued_bounds_respected() -> None:
    bounds = np.array([[-1.0, 2.0], [10.0, 10.5]])
    evaluated: list[np.ndarray] = []

    def f(v: np.ndarray, ids: np.ndarray) -> np.ndarray:
        evaluated.append(v.copy())
        return -np.abs(v).sum(1)  # optimum on the boundary: pushes trials out of bounds

    cfg = DEConfig(popsize=20, maxiter=20, integrality=False, updating="deferred")
    BatchedDE(f, bounds, 2, cfg, seed=0).solve()
    allv = np.concatenate(evaluated)
    assert np.all(allv >= bounds[:, 0]) and np.all(allv <= bounds[:, 1])
    assert not np.array_equal(allv, np.round(allv))


def test_max_batch_changes_no_result() -> None:
    cfg = DEConfig(popsize=40, maxiter=6, updating="deferred")
    f = PROBLEMS["int_sphere"][0]
    bounds = np.array(PROBLEMS["int_sphere"][1])
    a = BatchedDE(lambda v, ids: f(v), bounds, 5, cfg, seed=4).solve()
    b = BatchedDE(lambda v, ids: f(v), bounds, 5, cfg, seed=4, max_batch=33).solve()
    for ra, rb in zip(a, b, strict=True):
        np.testing.assert_array_equal(ra.x, rb.x)
        assert (ra.fun, ra.nit, ra.history) == (rb.fun, rb.nit, rb.history)


def test_init_population_is_used() -> None:
    bounds = np.array([[0, 63], [0, 63]], float)
    init = np.tile(np.arange(10, dtype=float)[None, :, None], (2, 1, 2))
    init[1, 0] = [500, -4]  # clipped to bounds
    seen: list[np.ndarray] = []

    def f(v: np.ndarray, ids: np.ndarray) -> np.ndarray:
        seen.append(v.copy())
        return v.sum(1)

    de = BatchedDE(f, bounds, 2, DEConfig(popsize=10, maxiter=1), seed=0, init_population=init)
    de.initialise()
    first = seen[0].reshape(2, 10, 2)
    np.testing.assert_array_equal(first[0], init[0])
    np.testing.assert_array_equal(first[1, 0], [63, 0])
    np.testing.assert_array_equal(de.best_x[0], [0, 0])  # best promoted to member 0


def test_history_and_counters() -> None:
    f = PROBLEMS["int_sphere"][0]
    cfg = config("int_sphere", "immediate")
    res = BatchedDE(lambda v, ids: f(v), np.array(PROBLEMS["int_sphere"][1]), 6, cfg, seed=9).solve()
    for r in res:
        assert len(r.history) == r.nit + 1 and r.history[-1] == r.fun
        assert np.all(np.diff(r.history) <= 0)  # elitist: the best never gets worse
        assert r.nfev == 50 * (r.nit + 1)
        assert r.fun == int_sphere(r.x.astype(float))


def test_bad_settings_are_named() -> None:
    with pytest.raises(ValueError, match="strategy"):
        DEConfig(strategy="best3bin")
    with pytest.raises(ValueError, match="popsize"):
        DEConfig(popsize=4)
    with pytest.raises(ValueError, match="mutation"):
        DEConfig(mutation=2.5)
    with pytest.raises(ValueError, match="updating"):
        DEConfig(updating="lazy")
    with pytest.raises(ValueError, match="bounds"):
        BatchedDE(lambda v, i: v[:, 0], np.array([[0, 1, 2]]), 1)
    with pytest.raises(ValueError, match="integer"):
        BatchedDE(lambda v, i: v[:, 0], np.array([[0.2, 0.4]]), 1)
    with pytest.raises(ValueError, match="init_population"):
        BatchedDE(
            lambda v, i: v[:, 0],
            np.array([[0, 9]]),
            2,
            DEConfig(popsize=5),
            init_population=np.zeros((1, 5, 1)),
        )
    de = BatchedDE(lambda v, i: np.zeros(3), np.array([[0, 9]]), 2, DEConfig(popsize=5))
    with pytest.raises(ValueError, match="energies"):
        de.solve()


@pytest.mark.parametrize("updating", ["immediate", "deferred"])
def test_fidelity_tests_tell_updating_modes_apart(updating: str) -> None:
    """Immediate updating really is immediate: it converges measurably faster than deferred."""
    other = "deferred" if updating == "immediate" else "immediate"
    p = p_values(ours("sphere", config("sphere", updating)), scipy_runs("sphere", other))
    assert min(p.values()) < 1e-6, p


def test_uniform_integers_gives_every_integer_equal_mass() -> None:
    seen: list[np.ndarray] = []

    def f(v: np.ndarray, ids: np.ndarray) -> np.ndarray:
        seen.append(v.copy())
        return v.sum(1)

    cfg = DEConfig(popsize=200, maxiter=1, uniform_integers=True)
    BatchedDE(f, np.array([[0, 3], [0, 255]]), 3, cfg, seed=0).initialise()
    for row in seen[0].reshape(3, 200, 2)[:, :, 0]:
        np.testing.assert_array_equal(np.bincount(row.astype(int), minlength=4), [50, 50, 50, 50])
    with pytest.raises(ValueError, match="SciPy"):
        cfg.scipy_kwargs(2)


@pytest.mark.parametrize("updating", ["immediate", "deferred"])
@pytest.mark.parametrize(
    ("name", "strategy", "mutation"),
    [
        ("int_sphere", "best1bin", 0.5),
        ("rastrigin", "best1bin", (0.5, 1.0)),
        ("int_sphere", "currenttobest1bin", (0.5, 1.0)),
        ("rastrigin", "rand2bin", 0.7),
    ],
)
def test_per_problem_seeds_replay_scipy_bit_for_bit(
    name: str, strategy: str, mutation, updating: str
) -> None:
    """With one seed per problem every problem reproduces SciPy's run with that seed exactly."""
    f, bounds, _ = PROBLEMS[name]
    cfg = config(name, updating, popsize=20, maxiter=60, strategy=strategy, mutation=mutation)
    seeds = [21, 22, 23]
    batch = BatchedDE(lambda v, ids: f(v), np.array(bounds), 3, cfg, seed=seeds).solve()
    for s, mine in zip(seeds, batch, strict=True):
        ref = differential_evolution(f, bounds, rng=np.random.default_rng(s), **cfg.scipy_kwargs(5))
        np.testing.assert_array_equal(mine.x, ref.x)
        assert (mine.fun, mine.nit, mine.nfev, mine.converged) == (ref.fun, ref.nit, ref.nfev, ref.success)
    alone = BatchedDE(lambda v, ids: f(v), np.array(bounds), 1, cfg, seed=seeds[1:2]).solve()[0]
    assert (alone.history, alone.nit) == (batch[1].history, batch[1].nit)  # independent of the batch
