"""Minimisers over the capped simplex {p : sum p = 1, 0 <= p <= caps} used by the laws."""

from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize

from mixbench.simplex import RngLike, as_rng, dirichlet_around, project, project_rows


def minimize_linear(coefficients: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Return the exact minimiser of coefficients . p over the capped simplex.

    A linear objective is minimised at a vertex: fill the domains in order of increasing
    coefficient, each up to its cap, until the weights sum to 1.
    """
    p = np.zeros(coefficients.size)
    left = 1.0
    for j in np.argsort(coefficients, kind="stable"):
        p[j] = min(caps[j], left)
        left -= p[j]
        if left <= 0:
            break
    return project(p, caps)


def minimize_smooth(
    objective: Callable[[np.ndarray], tuple[float, np.ndarray]],
    m: int,
    caps: np.ndarray,
    n_starts: int = 8,
    rng: RngLike = 0,
) -> np.ndarray:
    """Minimise a differentiable objective (returning value and gradient) over the capped simplex.

    Runs SLSQP from the uniform mixture and from n_starts - 1 seeded Dirichlet draws, all
    projected onto the caps, projects each result back onto the caps and returns the best.
    For a convex objective such as the log-linear law every start reaches the same optimum.
    """
    generator = as_rng(rng)
    starts = np.vstack([np.full((1, m), 1.0 / m), generator.dirichlet(np.ones(m), size=max(n_starts - 1, 0))])
    starts = project_rows(starts, caps)
    bounds = [(0.0, min(1.0, float(cap))) for cap in caps]
    total = {"type": "eq", "fun": lambda p: p.sum() - 1.0, "jac": lambda p: np.ones_like(p)}
    best, best_value = starts[0], objective(starts[0])[0]
    for start in starts:
        result = minimize(
            objective,
            start,
            jac=True,
            method="SLSQP",
            bounds=bounds,
            constraints=[total],
            options={"maxiter": 500, "ftol": 1e-12},
        )
        candidate = project(result.x, caps)
        value = objective(candidate)[0]
        if value < best_value:
            best, best_value = candidate, value
    return best


def minimize_by_sampling(
    mean_loss: Callable[[np.ndarray], np.ndarray],
    m: int,
    caps: np.ndarray,
    n_samples: int = 100_000,
    top_k: int = 128,
    rng: RngLike = 0,
    prior: np.ndarray | None = None,
    concentration: float = 1.0,
) -> np.ndarray:
    """Return the average of the top_k of n_samples simulated mixtures, ranked by mean_loss.

    This is RegMix's search for regressors without gradients (it ranks 100,000 mixtures and
    averages the best 128). Mixtures are drawn uniformly on the simplex, or from
    Dirichlet(concentration * prior) when a prior is given, then projected onto the caps;
    the capped simplex is convex, so their average respects the caps too.
    """
    generator = as_rng(rng)
    if prior is None:
        samples = generator.dirichlet(np.ones(m), size=n_samples)
    else:
        samples = dirichlet_around(prior, concentration, n_samples, generator, min_weight=0.0)
    if np.any(samples > caps):
        samples = project_rows(samples, caps)
    losses = np.concatenate([mean_loss(samples[i : i + 20_000]) for i in range(0, n_samples, 20_000)])
    k = min(top_k, n_samples)
    best = np.argpartition(losses, k - 1)[:k]
    return project(samples[best].mean(axis=0), caps)
