"""Batched differential evolution: many independent minimisation problems advanced together.

Semantics follow ``scipy.optimize.differential_evolution`` (same parameter names and meanings):
the population lives on the unit hypercube and is scaled to the bounds for evaluation; Latin
hypercube initialisation; mutation strategies ``best1bin`` (default), ``rand1bin``,
``currenttobest1bin``, ``randtobest1bin``, ``best2bin``, ``rand2bin`` with a guaranteed crossover
``fill_point``; ``mutation=(min, max)`` dithers F once per generation; trial parameters outside
[0, 1] are replaced by uniform random values; integrality rounds scaled parameters (SciPy scales
with the unwidened bounds, so the two end values are half as likely as inner ones; same here
unless ``uniform_integers``); the best member is kept at index 0; convergence is
``std(E) <= atol + tol * |mean(E)|`` after every generation, so ``nit >= 1``.

What is different from SciPy, by design:

- ``popsize`` is the TOTAL number of members (SciPy multiplies it by the dimension).
- K problems share one engine: every state array has a leading K axis and every evaluation of
  all active problems goes into ONE call of ``func(vectors (B, D), problem_ids (B,))``.
  ``updating="immediate"`` (SciPy's default) walks member j = 0..M-1 of every active problem in
  lockstep: each step builds one trial per active problem, scores the K trials in one call, and
  each accepted trial replaces its parent (and the best) at once. ``updating="deferred"`` scores
  the whole generation of every active problem in one call (split by ``max_batch``).
- Random numbers: with one seed (int or Generator) all problems draw from ONE Generator in
  vectorised draws; a run is reproducible for the same seed and the same set of problems, but
  problem k's numbers depend on the problems beside it, so a K-problem run matches K=1 runs in
  distribution, not bit for bit. With a sequence of K seeds, each problem draws from its own
  Generator in exactly SciPy's order (a short Python loop over problems per step): every problem
  then gives bit-for-bit the result of ``scipy.optimize.differential_evolution(rng=its seed)``
  with the same settings, whatever else runs in the batch.
- ``convergence=False`` disables the stop test (always ``maxiter`` generations unless stopped by
  the callback). Non-finite energies (NaN) count as +inf.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

import numpy as np

Strategy = Literal["best1bin", "rand1bin", "currenttobest1bin", "randtobest1bin", "best2bin", "rand2bin"]
Init = Literal["latinhypercube", "random"]
Updating = Literal["immediate", "deferred"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
# How many distinct random members (besides the candidate) each strategy draws.
_N_SAMPLES = {
    "best1bin": 2,
    "rand1bin": 3,
    "currenttobest1bin": 2,
    "randtobest1bin": 3,
    "best2bin": 4,
    "rand2bin": 5,
}
INITS: tuple[str, ...] = get_args(Init)
UPDATINGS: tuple[str, ...] = get_args(Updating)

# Status codes per problem and their messages (SciPy's wording where SciPy has one).
RUNNING, CONVERGED, MAXITER, CALLBACK = 0, 1, 2, 3
MESSAGES = {
    RUNNING: "in progress",
    CONVERGED: "Optimization terminated successfully.",
    MAXITER: "Maximum number of iterations has been exceeded.",
    CALLBACK: "callback function requested stop early",
}

Func = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class DEConfig:
    """Differential-evolution settings; names and meanings as in SciPy except ``popsize`` (total)."""

    strategy: Strategy = "best1bin"
    popsize: int = 200  # TOTAL members, not SciPy's multiplier of the dimension
    mutation: float | tuple[float, float] = 0.5
    recombination: float = 0.7
    maxiter: int = 100
    tol: float = 0.01
    atol: float = 0.0
    init: Init = "latinhypercube"
    updating: Updating = "immediate"
    integrality: bool = True
    convergence: bool = True  # False: never stop on the convergence test
    uniform_integers: bool = False  # True: every integer equally likely (SciPy: end values half as likely)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"DEConfig.strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.init not in INITS:
            raise ValueError(f"DEConfig.init must be one of {INITS}, got {self.init!r}")
        if self.updating not in UPDATINGS:
            raise ValueError(f"DEConfig.updating must be one of {UPDATINGS}, got {self.updating!r}")
        need = max(5, _N_SAMPLES[self.strategy] + 1)
        if int(self.popsize) != self.popsize or self.popsize < need:
            raise ValueError(f"DEConfig.popsize must be an integer >= {need}, got {self.popsize}")
        if int(self.maxiter) != self.maxiter or self.maxiter < 0:
            raise ValueError(f"DEConfig.maxiter must be an integer >= 0, got {self.maxiter}")
        m = np.atleast_1d(np.asarray(self.mutation, dtype=np.float64))
        if m.size not in (1, 2) or not np.all(np.isfinite(m)) or np.any(m < 0) or np.any(m >= 2):
            raise ValueError(
                f"DEConfig.mutation must be a float or (min, max) in [0, 2), got {self.mutation!r}"
            )
        if isinstance(self.mutation, list):
            self.mutation = tuple(self.mutation)
        if not 0.0 <= self.recombination <= 1.0:
            raise ValueError(f"DEConfig.recombination must be in [0, 1], got {self.recombination}")
        if self.tol < 0 or self.atol < 0:
            raise ValueError(f"DEConfig.tol and atol must be >= 0, got {self.tol}, {self.atol}")

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a plain JSON-ready dict."""
        d = asdict(self)
        if isinstance(d["mutation"], tuple):
            d["mutation"] = list(d["mutation"])
        return d

    def scipy_kwargs(self, n_dims: int) -> dict[str, Any]:
        """Return the ``scipy.optimize.differential_evolution`` keyword arguments for these settings.

        SciPy's popsize multiplies the dimension, so ``popsize`` must be a multiple of ``n_dims``.
        ``convergence=False`` maps to tol=atol=0 (SciPy then stops only on an all-equal population).
        """
        if self.uniform_integers:
            raise ValueError("uniform_integers has no SciPy equivalent")
        if self.popsize % n_dims:
            raise ValueError(f"popsize {self.popsize} is not a multiple of the dimension {n_dims}")
        return {
            "strategy": self.strategy,
            "popsize": self.popsize // n_dims,
            "mutation": self.mutation,
            "recombination": self.recombination,
            "maxiter": self.maxiter,
            "tol": self.tol if self.convergence else 0.0,
            "atol": self.atol if self.convergence else 0.0,
            "init": self.init,
            "updating": self.updating,
            "integrality": np.full(n_dims, self.integrality),
            "polish": False,
        }


def paper_de_config(**overrides: Any) -> DEConfig:
    """Return the paper's DE settings (best1bin, 200 members, F 0.5, CR 0.7, 100 generations,
    tol 0.01) with deferred updating, changed by ``overrides``."""
    values: dict[str, Any] = {
        "strategy": "best1bin",
        "popsize": 200,
        "mutation": 0.5,
        "recombination": 0.7,
        "maxiter": 100,
        "tol": 0.01,
        "atol": 0.0,
        "updating": "deferred",
        "convergence": True,
    }
    values.update(overrides)
    return DEConfig(**values)


@dataclass
class DEResult:
    """The outcome of one problem: best vector and energy, generations, evaluations, why it stopped."""

    x: np.ndarray  # (D,) best parameters; int64 when integrality is on
    fun: float
    nit: int
    nfev: int
    converged: bool  # stopped by the convergence test
    early_converged: bool  # converged at the first convergence check (nit == 1)
    history: list[float] = field(default_factory=list)  # best energy after init and each generation
    message: str = ""


class SharedDraws:
    """Random draws for all problems from ONE Generator, vectorised over problems and members."""

    def __init__(self, rng: np.random.Generator, n_problems: int, popsize: int, n_dims: int, n_samples: int):
        self.rng, self.K, self.M, self.D, self.n_samples = rng, n_problems, popsize, n_dims, n_samples

    def lhs(self) -> np.ndarray:
        """Return a Latin hypercube population (K, M, D) on the unit cube, one design per problem."""
        k, m, d = self.K, self.M, self.D
        offsets = np.linspace(0.0, 1.0, m, endpoint=False)[:, None]
        samples = (1.0 / m) * self.rng.uniform(size=(k, m, d)) + offsets
        order = np.argsort(self.rng.uniform(size=(k, m, d)), axis=1)  # independent shuffle per column
        return np.take_along_axis(samples, order, axis=1)

    def uniform_population(self) -> np.ndarray:
        """Return a uniformly random population (K, M, D) on the unit cube."""
        return self.rng.uniform(size=(self.K, self.M, self.D))

    def dither(self, problems: np.ndarray, low: float, high: float) -> np.ndarray:
        """Return one mutation constant per problem, uniform in [low, high)."""
        return self.rng.uniform(low, high, size=problems.size)

    def trial_draws(self, problems: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, ...]:
        """Return (samples (..., n_samples), fill points (...), crossover uniforms (..., D)).

        ``candidates`` is (n,) for one member per problem or (n, M) for whole generations.
        """
        samples = self._samples(candidates)
        fill = self.rng.integers(0, self.D, size=candidates.shape)
        return samples, fill, self.rng.uniform(size=(*candidates.shape, self.D))

    def _samples(self, candidates: np.ndarray) -> np.ndarray:
        """Return distinct random member indices (..., n_samples), none equal to the candidate."""
        excluded = candidates[..., None]
        picks = []
        for i in range(self.n_samples):
            v = self.rng.integers(0, self.M - 1 - i, size=candidates.shape)
            # Skip over the excluded indices in ascending order: uniform over the rest.
            ordered = np.sort(excluded, axis=-1)
            for j in range(i + 1):
                v += v >= ordered[..., j]
            picks.append(v)
            excluded = np.concatenate([excluded, v[..., None]], axis=-1)
        return np.stack(picks, axis=-1)

    def replace_out_of_bounds(self, problems: np.ndarray, trial: np.ndarray) -> None:
        """Replace, in place, every trial parameter outside [0, 1] by a uniform random value."""
        out = (trial > 1) | (trial < 0)
        if n_out := np.count_nonzero(out):
            trial[out] = self.rng.uniform(size=n_out)


class PerProblemDraws:
    """One Generator per problem, drawn in exactly SciPy's order (a Python loop over problems).

    Problem k's numbers never depend on the other problems, so a batch gives the same results as
    K separate runs, and those equal ``scipy.optimize.differential_evolution(rng=Generator)``.
    """

    def __init__(self, rngs: list[np.random.Generator], popsize: int, n_dims: int, n_samples: int):
        self.rngs, self.K, self.M, self.D, self.n_samples = rngs, len(rngs), popsize, n_dims, n_samples
        # SciPy keeps one member index array per solver and reshuffles it for every sample draw.
        self.index = np.tile(np.arange(popsize), (self.K, 1))

    def lhs(self) -> np.ndarray:
        """Return SciPy's Latin hypercube population for each problem (K, M, D)."""
        m = self.M
        offsets = np.linspace(0.0, 1.0, m, endpoint=False)[:, None]
        out = np.empty((self.K, m, self.D))
        for k, g in enumerate(self.rngs):
            samples = (1.0 / m) * g.uniform(size=(m, self.D)) + offsets
            for j in range(self.D):
                out[k, :, j] = samples[g.permutation(range(m)), j]
        return out

    def uniform_population(self) -> np.ndarray:
        """Return SciPy's uniformly random population for each problem (K, M, D)."""
        return np.stack([g.uniform(size=(self.M, self.D)) for g in self.rngs])

    def dither(self, problems: np.ndarray, low: float, high: float) -> np.ndarray:
        """Return one mutation constant per problem, uniform in [low, high)."""
        return np.array([self.rngs[k].uniform(low, high) for k in problems])

    def _select(self, k: int, candidate: int) -> np.ndarray:
        g, idx = self.rngs[k], self.index[k]
        g.shuffle(idx)
        first = idx[:6]  # SciPy always draws 5 samples; strategies use the first few
        return first[first != candidate][: self.n_samples]

    def trial_draws(self, problems: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, ...]:
        """Return (samples, fill points, crossover uniforms) as SciPy draws them, per problem."""
        samples = np.empty((*candidates.shape, self.n_samples), dtype=np.int64)
        fill = np.empty(candidates.shape, dtype=np.int64)
        uniforms = np.empty((*candidates.shape, self.D))
        for i, k in enumerate(problems):
            g = self.rngs[k]
            if candidates.ndim == 1:  # immediate: fill point, samples, crossover
                fill[i] = g.integers(self.D)
                samples[i] = self._select(k, candidates[i])
                uniforms[i] = g.uniform(size=self.D)
            else:  # deferred: samples of every member, then fill points, then crossover
                samples[i] = [self._select(k, c) for c in candidates[i]]
                fill[i] = g.integers(self.D, size=candidates.shape[1])
                uniforms[i] = g.uniform(size=(candidates.shape[1], self.D))
        return samples, fill, uniforms

    def replace_out_of_bounds(self, problems: np.ndarray, trial: np.ndarray) -> None:
        """Replace, in place, every trial parameter outside [0, 1] by a uniform random value."""
        for i, k in enumerate(problems):
            t = trial[i]
            out = (t > 1) | (t < 0)
            if n_out := np.count_nonzero(out):
                t[out] = self.rngs[k].uniform(size=n_out)


class BatchedDE:
    """Minimise ``n_problems`` independent problems with shared bounds by differential evolution.

    ``func(vectors (B, D) float, problem_ids (B,) int) -> energies (B,)``; vectors are in
    parameter units (integer-valued floats when ``config.integrality``). ``init_population``
    (n_problems, popsize, D) in parameter units replaces the Latin hypercube (clipped to bounds).
    ``callback(solver) -> (K,) bool | None`` runs after every generation; True stops a problem.
    ``max_batch`` caps the rows of one ``func`` call (deferred and initial evaluations are split).

    State (K = n_problems, M = popsize): ``population`` (K, M, D) parameters, ``energies`` (K, M),
    ``best_x`` (K, D), ``best_energy`` (K,), ``nit`` (K,), ``nfev`` (K,), ``active`` (K,),
    ``converged`` (K,), ``status`` (K,), ``history`` (list per problem).
    """

    def __init__(
        self,
        func: Func,
        bounds: np.ndarray,
        n_problems: int,
        config: DEConfig | None = None,
        seed: int | np.random.Generator | Sequence[int | np.random.Generator] | None = None,
        init_population: np.ndarray | None = None,
        callback: Callable[[BatchedDE], np.ndarray | None] | None = None,
        max_batch: int | None = None,
    ):
        self.config = config = config if config is not None else DEConfig()
        self.func = func
        self.callback = callback
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch must be >= 1 or None, got {max_batch}")
        self.max_batch = max_batch
        if int(n_problems) != n_problems or n_problems < 1:
            raise ValueError(f"n_problems must be an integer >= 1, got {n_problems}")

        limits = np.array(bounds, dtype=np.float64)
        if limits.ndim != 2 or limits.shape[1] != 2 or len(limits) == 0:
            raise ValueError(f"bounds must be (D, 2) (min, max) pairs, got shape {limits.shape}")
        if not np.all(np.isfinite(limits)) or np.any(limits[:, 0] > limits[:, 1]):
            raise ValueError(f"bounds must be finite with min <= max, got {limits.tolist()}")
        self.bounds = limits.copy()
        if config.integrality:
            lb, ub = np.ceil(limits[:, 0]), np.floor(limits[:, 1])
            if np.any(lb > ub):
                raise ValueError(f"bounds {limits.tolist()} hold no integer value in some dimension")
            if config.uniform_integers:
                # Widen to (lb - 0.5, ub + 0.5): rounding then gives every integer the same mass.
                limits = np.stack([np.nextafter(lb - 0.5, np.inf), np.nextafter(ub + 0.5, -np.inf)], axis=1)
            else:
                # SciPy computes its scaling before widening, so in effect it scales to [lb, ub] and
                # rounds: the two end values get half the mass of the others. Same here.
                limits = np.stack([lb, ub], axis=1)
        self._centre = 0.5 * (limits[:, 0] + limits[:, 1])
        self._width = np.abs(limits[:, 1] - limits[:, 0])
        with np.errstate(divide="ignore"):
            recip = 1.0 / self._width
        self._recip = np.where(np.isfinite(recip), recip, 0.0)

        self.K, self.M, self.D = int(n_problems), int(config.popsize), len(limits)
        self._n_samples = _N_SAMPLES[config.strategy]
        if isinstance(seed, (list, tuple, np.ndarray)):
            if len(seed) != self.K:
                raise ValueError(f"seed holds {len(seed)} per-problem seeds for {self.K} problems")
            self.rng = None
            rngs = [np.random.default_rng(s) for s in seed]
            self._draws: SharedDraws | PerProblemDraws = PerProblemDraws(
                rngs, self.M, self.D, self._n_samples
            )
        else:
            self.rng = np.random.default_rng(seed)
            self._draws = SharedDraws(self.rng, self.K, self.M, self.D, self._n_samples)
        mut = np.atleast_1d(np.asarray(config.mutation, dtype=np.float64))
        self._dither = tuple(np.sort(mut)) if mut.size == 2 else None
        self.scale = np.full(self.K, mut[0])  # F per problem (dithered each generation)

        if init_population is None:
            lhs = config.init == "latinhypercube"
            self._pop = self._draws.lhs() if lhs else self._draws.uniform_population()
        else:
            init = np.asarray(init_population, dtype=np.float64)
            if init.shape != (self.K, self.M, self.D):
                raise ValueError(
                    f"init_population must be (n_problems, popsize, D) = {(self.K, self.M, self.D)}, "
                    f"got {init.shape}"
                )
            self._pop = np.clip(self._unscale(init), 0.0, 1.0)
        self.energies = np.full((self.K, self.M), np.inf)
        self.nit = np.zeros(self.K, dtype=np.int64)
        self.nfev = np.zeros(self.K, dtype=np.int64)
        self.active = np.ones(self.K, dtype=bool)
        self.converged = np.zeros(self.K, dtype=bool)
        self.status = np.full(self.K, RUNNING, dtype=np.int64)
        self._history = np.full((self.K, config.maxiter + 1), np.nan)
        self.initialised = False

    # ---- scaling -------------------------------------------------------------------------------

    def _scale(self, unit: np.ndarray) -> np.ndarray:
        """Return parameters for unit-hypercube vectors (rounded when integrality is on)."""
        params = self._centre + (unit - 0.5) * self._width
        return np.round(params) if self.config.integrality else params

    def _unscale(self, params: np.ndarray) -> np.ndarray:
        return (params - self._centre) * self._recip + 0.5

    # ---- state views ---------------------------------------------------------------------------

    @property
    def population(self) -> np.ndarray:
        """Return the population (K, M, D) in parameter units; member 0 is each problem's best."""
        return self._scale(self._pop)

    @property
    def best_x(self) -> np.ndarray:
        """Return the best vector (K, D) of every problem in parameter units."""
        return self._scale(self._pop[:, 0])

    @property
    def best_energy(self) -> np.ndarray:
        """Return the best energy (K,) of every problem."""
        return self.energies[:, 0].copy()

    @property
    def history(self) -> list[list[float]]:
        """Return, per problem, the best energy after initialisation and after each generation."""
        return [
            h[: n + 1].tolist() if self.initialised else []
            for h, n in zip(self._history, self.nit, strict=True)
        ]

    # ---- initialisation ------------------------------------------------------------------------

    def initialise(self) -> None:
        """Score the initial population of every problem (one call, split by max_batch)."""
        if self.initialised:
            return
        k, m = self.K, self.M
        ids = np.repeat(np.arange(k), m)
        self.energies[:] = self._evaluate(self._pop.reshape(k * m, self.D), ids).reshape(k, m)
        self.nfev += m
        self._promote_lowest(np.arange(k))
        self._history[:, 0] = self.energies[:, 0]
        self.initialised = True
        if self.config.maxiter == 0:
            self._finish(np.arange(k), MAXITER)

    # ---- evaluation ----------------------------------------------------------------------------

    def _evaluate(self, unit: np.ndarray, problem_ids: np.ndarray) -> np.ndarray:
        params = self._scale(unit)
        n = len(params)
        step = self.max_batch or max(n, 1)
        parts = []
        for start in range(0, n, step):
            e = np.asarray(self.func(params[start : start + step], problem_ids[start : start + step]))
            e = e.astype(np.float64).reshape(-1)
            if e.shape != (min(step, n - start),):
                raise ValueError(f"func returned {e.shape} energies for {min(step, n - start)} vectors")
            parts.append(e)
        energies = np.concatenate(parts) if parts else np.zeros(0)
        return np.where(np.isnan(energies), np.inf, energies)

    # ---- evolution -----------------------------------------------------------------------------

    def _mutants(self, problems: np.ndarray, candidates: np.ndarray, r: np.ndarray) -> np.ndarray:
        """Return mutant vectors (..., D) for candidates (n,) or (n, M) of ``problems`` (n,), samples r."""
        extra = (1,) * (candidates.ndim - 1)
        p = problems.reshape(-1, *extra)

        def g(i: int) -> np.ndarray:
            return self._pop[p, r[..., i]]

        f = self.scale[problems].reshape(-1, *extra, 1)
        best = self._pop[problems, 0].reshape(len(problems), *extra, self.D)
        s = self.config.strategy
        if s == "best1bin":
            return best + f * (g(0) - g(1))
        if s == "rand1bin":
            return g(0) + f * (g(1) - g(2))
        if s == "randtobest1bin":
            b = g(0)
            return b + f * (best - b) + f * (g(1) - g(2))
        if s == "currenttobest1bin":
            c = self._pop[p, candidates]
            return c + f * (best - c + g(0) - g(1))
        if s == "best2bin":
            return best + f * (g(0) + g(1) - g(2) - g(3))
        return g(0) + f * (g(1) + g(2) - g(3) - g(4))  # rand2bin

    def _trials(self, problems: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Return binomial-crossover trials (..., D) in [0, 1] for candidates of ``problems``."""
        samples, fill, uniforms = self._draws.trial_draws(problems, candidates)
        bprime = self._mutants(problems, candidates, samples)
        cross = uniforms < self.config.recombination
        np.put_along_axis(cross, fill[..., None], True, axis=-1)
        p = problems.reshape(-1, *(1,) * (candidates.ndim - 1))
        trial = np.where(cross, bprime, self._pop[p, candidates])
        self._draws.replace_out_of_bounds(problems, trial)
        return trial

    def _promote_lowest(self, problems: np.ndarray) -> None:
        """Swap each problem's lowest-energy member (first on ties) into index 0."""
        low = np.argmin(self.energies[problems], axis=1)
        self._swap(problems, low)

    def _swap(self, problems: np.ndarray, members: np.ndarray) -> None:
        if problems.size == 0:
            return
        pop0, e0 = self._pop[problems, 0].copy(), self.energies[problems, 0].copy()
        self._pop[problems, 0] = self._pop[problems, members]
        self.energies[problems, 0] = self.energies[problems, members]
        self._pop[problems, members] = pop0
        self.energies[problems, members] = e0

    def _immediate_generation(self, problems: np.ndarray) -> None:
        n = len(problems)
        for j in range(self.M):
            cand = np.full(n, j)
            trial = self._trials(problems, cand)
            e = self._evaluate(trial, problems)
            self.nfev[problems] += 1
            best_before = self.energies[problems, 0]
            accept = e <= self.energies[problems, j]
            acc = problems[accept]
            self._pop[acc, j] = trial[accept]
            self.energies[acc, j] = e[accept]
            if j:
                # SciPy re-promotes the argmin, which stays at index 0 on a tie.
                promote = accept & (e < best_before)
                self._swap(problems[promote], cand[promote])

    def _deferred_generation(self, problems: np.ndarray) -> None:
        n, m = len(problems), self.M
        cand = np.broadcast_to(np.arange(m), (n, m))
        trial = self._trials(problems, cand)
        e = self._evaluate(trial.reshape(n * m, self.D), np.repeat(problems, m)).reshape(n, m)
        self.nfev[problems] += m
        accept = e <= self.energies[problems]
        self._pop[problems] = np.where(accept[..., None], trial, self._pop[problems])
        self.energies[problems] = np.where(accept, e, self.energies[problems])
        self._promote_lowest(problems)

    def _converged_now(self, problems: np.ndarray) -> np.ndarray:
        e = self.energies[problems]
        finite = np.all(np.isfinite(e), axis=1)
        with np.errstate(invalid="ignore"):
            ok = np.std(e, axis=1) <= self.config.atol + self.config.tol * np.abs(np.mean(e, axis=1))
        return finite & ok

    def _finish(self, problems: np.ndarray, code: int) -> None:
        self.active[problems] = False
        self.status[problems] = code
        self.converged[problems] = code == CONVERGED

    def step(self) -> None:
        """Advance every active problem by one generation, then apply callback and stop tests."""
        self.initialise()
        problems = np.flatnonzero(self.active)
        if problems.size == 0:
            return
        if self._dither is not None:
            self.scale[problems] = self._draws.dither(problems, *self._dither)
        if self.config.updating == "immediate":
            self._immediate_generation(problems)
        else:
            self._deferred_generation(problems)
        self.nit[problems] += 1
        self._history[problems, self.nit[problems]] = self.energies[problems, 0]

        # Order as in SciPy: callback first, then the convergence test, then maxiter.
        stop_cb = np.zeros(self.K, dtype=bool)
        if self.callback is not None:
            asked = self.callback(self)
            if asked is not None:
                stop_cb = np.broadcast_to(np.asarray(asked, dtype=bool), (self.K,)).copy()
        cb = problems[stop_cb[problems]]
        self._finish(cb, CALLBACK)
        rest = problems[~stop_cb[problems]]
        if self.config.convergence:
            conv = rest[self._converged_now(rest)]
            self._finish(conv, CONVERGED)
            rest = rest[self.active[rest]]
        self._finish(rest[self.nit[rest] >= self.config.maxiter], MAXITER)

    def solve(self) -> list[DEResult]:
        """Run until every problem has stopped; return one DEResult per problem."""
        self.initialise()
        while self.active.any():
            self.step()
        return self.results()

    def results(self) -> list[DEResult]:
        """Return the current DEResult of every problem (final once it is no longer active)."""
        best = self.best_x
        if self.config.integrality:
            best = best.astype(np.int64)
        hist = self.history
        return [
            DEResult(
                x=best[k],
                fun=float(self.energies[k, 0]),
                nit=int(self.nit[k]),
                nfev=int(self.nfev[k]),
                converged=bool(self.converged[k]),
                early_converged=bool(self.converged[k] and self.nit[k] == 1),
                history=hist[k],
                message=MESSAGES[int(self.status[k])],
            )
            for k in range(self.K)
        ]
