"""Search for the best fixed mixture of a simulated world.

Both searches minimise the mean loss over evaluation sets on the simplex with SLSQP, from
deterministic starting points (uniform, every vertex, and Dirichlet draws from a fixed seed),
and keep the best result.
"""

import numpy as np
from scipy.optimize import minimize

# Seed of the Dirichlet starting points; fixed so that the optimum is deterministic.
_START_SEED = 12345
_FINITE_DIFFERENCE_STEP = 1e-6


def starting_points(m: int, n_random: int) -> np.ndarray:
    """Return the uniform mixture, the m vertices and `n_random` seeded Dirichlet(1) draws."""
    rng = np.random.default_rng(_START_SEED)
    points = [np.full(m, 1.0 / m), *np.eye(m), *rng.dirichlet(np.ones(m), size=n_random)]
    return np.array(points)


def _polish(objective, start: np.ndarray, jac) -> np.ndarray:
    m = start.shape[0]
    result = minimize(
        objective,
        start,
        jac=jac,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * m,
        constraints=[{"type": "eq", "fun": lambda p: p.sum() - 1.0, "jac": lambda p: np.ones_like(p)}],
        options={"maxiter": 200, "ftol": 1e-12},
    )
    p = np.clip(result.x, 0.0, None)
    return p / p.sum()


def minimize_closed_form(world, k: float, start_losses: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Return the mixture minimising the mean of the ungated closed-form law at progress k, and that mean.

    With `start_losses`, training continues from those losses instead of the initial ones:
    L_i = c_i + (start_i - c_i) exp(-k (R p)_i), with R unchanged because A^t shrinks with the
    excess loss over the floor.
    """
    rates = world.rates
    start = world.initial_loss if start_losses is None else np.asarray(start_losses, dtype=np.float64)
    scale = start - world.floor

    def mean_loss(p):
        return float((world.floor + scale * np.exp(-k * (rates @ p))).mean())

    def gradient(p):
        decay = scale * np.exp(-k * (rates @ p))
        return -(k / world.m) * (rates.T @ decay)

    best = None
    for start in starting_points(world.m, n_random=8):
        p = _polish(mean_loss, start, gradient)
        value = mean_loss(p)
        if best is None or value < best[1] - 1e-13:
            best = (p, value)
    return best


def minimize_integrated(world, etas: np.ndarray, n_screen: int = 256, n_polish: int = 4) -> tuple[np.ndarray, float]:
    """Return the mixture minimising the mean gated loss integrated step by step, and that mean.

    The gated loss is not convex in p. All starting points are first evaluated in one batched
    integration; the `n_polish` best are refined by SLSQP with forward-difference gradients.
    """
    m = world.m
    candidates = starting_points(m, n_random=n_screen)
    screened = world.integrate(candidates, etas).mean(axis=-1)
    order = np.argsort(screened, kind="stable")[:n_polish]

    def value_and_gradient(p):
        # Row 0 is p itself; row j + 1 moves p_j by the finite-difference step.
        points = np.vstack([p, p + _FINITE_DIFFERENCE_STEP * np.eye(m)])
        means = world.integrate(points, etas).mean(axis=-1)
        return float(means[0]), (means[1:] - means[0]) / _FINITE_DIFFERENCE_STEP

    best = (candidates[order[0]].copy(), float(screened[order[0]]))
    for index in order:
        p = _polish(value_and_gradient, candidates[index], True)
        value = float(world.integrate(p, etas).mean())
        if value < best[1] - 1e-13:
            best = (p, value)
    return best
