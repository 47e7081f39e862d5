"""Mixtures on the probability simplex: validation, projection and update steps.

A mixture over m domains is a vector p with p_j >= 0 and sum_j p_j = 1.
"""

from collections.abc import Sequence

import numpy as np

from mixbench.errors import MixtureError

SUM_TOLERANCE = 1e-6


def validate_mixture(
    mixture: Sequence[float] | np.ndarray,
    domains: Sequence[str] | int,
    *,
    normalize: bool = False,
    name: str = "mixture",
) -> np.ndarray:
    """Return `mixture` as a float64 array after checking that it lies on the simplex.

    `domains` is the list of domain names (used in messages) or just their count. With
    `normalize=True` a non-negative vector with a positive sum is rescaled to sum to 1; it is
    never rescaled silently.
    """
    names = [f"domain {j}" for j in range(domains)] if isinstance(domains, int) else list(domains)
    try:
        p = np.asarray(mixture, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise MixtureError(f"{name} {mixture!r} is not a list of numbers ({error}).") from None
    if p.ndim != 1 or p.shape[0] != len(names):
        raise MixtureError(
            f"{name} has {p.size} weights but there are {len(names)} domains ({', '.join(names)}); "
            f"give one weight per domain, in that order."
        )
    if not np.all(np.isfinite(p)):
        bad = [names[j] for j in np.flatnonzero(~np.isfinite(p))]
        raise MixtureError(f"{name} {p.tolist()} has a NaN or infinite weight for {', '.join(bad)}.")
    if np.any(p < 0):
        bad = [f"{names[j]}={p[j]:g}" for j in np.flatnonzero(p < 0)]
        raise MixtureError(f"{name} has negative weights ({', '.join(bad)}); weights must be >= 0.")
    total = float(p.sum())
    if normalize:
        if total <= 0:
            raise MixtureError(f"{name} {p.tolist()} sums to 0 and cannot be normalised.")
        return p / total
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise MixtureError(
            f"{name} {p.tolist()} sums to {total:.9g}, not 1 (tolerance {SUM_TOLERANCE:g}). "
            f"Fix the weights, or set normalize=true to rescale them explicitly."
        )
    return p


def uniform(m: int) -> np.ndarray:
    """Return the uniform mixture over m domains."""
    return np.full(m, 1.0 / m)


def proportional(counts: Sequence[float]) -> np.ndarray:
    """Return the mixture proportional to non-negative `counts` (for example token counts)."""
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or np.any(c < 0) or c.sum() <= 0:
        raise MixtureError(f"counts {c.tolist()} must be non-negative with a positive sum.")
    return c / c.sum()
