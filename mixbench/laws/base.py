"""The MixingLaw base class and the input checks that every law shares.

A mixing law maps a mixture p (a point of the simplex over m domains) to the losses of n
evaluation sets. As in scikit-learn, `__init__` only stores hyperparameters, `fit` learns
attributes whose names end in `_`, and `get_params()` returns what `__init__` received.
"""

import inspect
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from threadpoolctl import threadpool_limits

from mixbench.errors import ConfigError, DataError, MixtureError
from mixbench.laws.search import minimize_by_sampling
from mixbench.simplex import project, validate_caps

# Mixture rows may be off the simplex by this much, because published tables round weights
# to three decimals. The laws rescale such rows to sum to exactly 1.
ROW_SUM_TOLERANCE = 0.01


def check_mixtures(P: Any, m: int | None = None, name: str = "P") -> np.ndarray:
    """Return P as a (k, m) float array whose rows are rescaled to sum to exactly 1.

    Raise MixtureError when P is not 2-D, has the wrong number of columns, contains NaN,
    infinite or negative values, or has a row whose sum is off 1 by more than 0.01.
    """
    try:
        X = np.asarray(P, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise MixtureError(f"{name} is not an array of numbers ({error}).") from None
    if X.ndim != 2 or X.shape[0] == 0:
        raise MixtureError(f"{name} must be a 2-D array with one row per run, got shape {X.shape}.")
    if m is not None and X.shape[1] != m:
        raise MixtureError(
            f"{name} has {X.shape[1]} columns but the law was fitted on {m} domains; "
            f"give one column per domain, in the order used for fitting."
        )
    bad_rows = np.flatnonzero(~np.all(np.isfinite(X), axis=1))
    if bad_rows.size:
        raise MixtureError(f"{name} has NaN or infinite weights in rows {_first(bad_rows)}; drop or fix those runs.")
    negative_rows = np.flatnonzero(np.any(X < 0, axis=1))
    if negative_rows.size:
        raise MixtureError(f"{name} has negative weights in rows {_first(negative_rows)}; weights must be >= 0.")
    totals = X.sum(axis=1)
    off_rows = np.flatnonzero(np.abs(totals - 1.0) > ROW_SUM_TOLERANCE)
    if off_rows.size:
        sums = ", ".join(f"row {i}: {totals[i]:.4g}" for i in off_rows[:5])
        raise MixtureError(
            f"{name} has rows that do not sum to 1 within {ROW_SUM_TOLERANCE} ({sums}"
            f"{', ...' if off_rows.size > 5 else ''}); divide each row by its sum first if they are unnormalised."
        )
    return X / totals[:, None]


def check_losses(L: Any, k: int, n: int | None = None, name: str = "L") -> np.ndarray:
    """Return L as a (k, n) float array; a 1-D L is read as one target. Raise DataError if invalid."""
    try:
        Y = np.asarray(L, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise DataError(f"{name} is not an array of numbers ({error}).") from None
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.ndim != 2 or Y.shape[1] == 0:
        raise DataError(f"{name} must be a 2-D array with one row per run and one column per target, got shape {Y.shape}.")
    if Y.shape[0] != k:
        raise DataError(f"{name} has {Y.shape[0]} rows but P has {k}; give one loss row per mixture row.")
    if n is not None and Y.shape[1] != n:
        raise DataError(f"{name} has {Y.shape[1]} targets but the law was fitted on {n}.")
    bad_rows = np.flatnonzero(~np.all(np.isfinite(Y), axis=1))
    if bad_rows.size:
        raise DataError(f"{name} has NaN or infinite losses in rows {_first(bad_rows)}; drop those runs before fitting.")
    return Y


def check_weights(weights: Sequence[float] | np.ndarray | None, n: int) -> np.ndarray:
    """Return per-target weights normalised to sum to 1 (uniform when None)."""
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ConfigError(
            f"target weights {np.asarray(weights).tolist()} must be {n} non-negative numbers with a positive sum "
            f"(one per target)."
        )
    return w / w.sum()


def _first(rows: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(str(int(i)) for i in rows[:limit])
    return shown + (f" and {rows.size - limit} more" if rows.size > limit else "")


class MixingLaw:
    """Base class of the mixing laws. Subclasses set `name` and implement `_fit`, `_predict`
    and `n_params`; smooth laws also override `_optimize` with a gradient-based search.
    """

    name: ClassVar[str] = ""
    # BLAS and OpenMP threads used while fitting, predicting and optimising. The problems are
    # small (hundreds of runs), and scipy's L-BFGS-B (1.17) ran about 60 times slower with two
    # OpenBLAS threads than with one on a busy 2-core machine. Laws may take it as a hyperparameter.
    n_threads: int = 1

    def get_params(self) -> dict[str, Any]:
        """Return the hyperparameters given to `__init__`, by name."""
        signature = inspect.signature(type(self).__init__)
        return {key: getattr(self, key) for key in signature.parameters if key != "self"}

    def __repr__(self) -> str:
        params = ", ".join(f"{key}={value!r}" for key, value in self.get_params().items())
        return f"{type(self).__name__}({params})"

    def n_params(self, m: int) -> int:
        """Return the number of fitted parameters per target for m domains."""
        raise NotImplementedError

    def min_runs(self, m: int) -> int:
        """Return the fewest runs that `fit` accepts for m domains (one per parameter)."""
        return self.n_params(m)

    def fit(self, P: Any, L: Any, **fit_params: Any) -> "MixingLaw":
        """Fit the law to k runs: P (k, m) mixtures and L (k, n) losses. Return self.

        Raise ConfigError when there are fewer runs than `min_runs(m)`.
        """
        X = check_mixtures(P)
        Y = check_losses(L, X.shape[0])
        k, m = X.shape
        needed = self.min_runs(m)
        if k < needed:
            raise ConfigError(
                f"the {self.name!r} law needs at least {needed} runs for {m} domains "
                f"({self.n_params(m)} parameters per target), but got {k}; add runs or pick a law with fewer parameters."
            )
        self.n_domains_ = m
        self.n_targets_ = Y.shape[1]
        with threadpool_limits(limits=self.n_threads):
            self._fit(X, Y, **fit_params)
        return self

    def predict(self, P: Any) -> np.ndarray:
        """Return the predicted losses (k, n) for mixtures P (k, m)."""
        self._check_fitted()
        X = check_mixtures(P, self.n_domains_)
        with threadpool_limits(limits=self.n_threads):
            return self._predict(X)

    def optimize(self, caps: Any = None, weights: Any = None) -> np.ndarray:
        """Return the mixture that minimises the weighted mean predicted loss over the targets.

        `caps` bounds each domain's weight from above (for example epoch caps); `weights`
        weights the targets (uniform when None). The result lies on the simplex: it sums to 1
        within 1e-9, and every weight is >= 0 and <= its cap + 1e-9.
        """
        self._check_fitted()
        u = validate_caps(caps, self.n_domains_)
        w = check_weights(weights, self.n_targets_)
        with threadpool_limits(limits=self.n_threads):
            p = self._optimize(u, w)
        return project(p, u)

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_domains_"):
            raise ConfigError(f"this {type(self).__name__} is not fitted yet; call fit(P, L) first.")

    def _fit(self, P: np.ndarray, L: np.ndarray) -> None:
        raise NotImplementedError

    def _predict(self, P: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _optimize(self, caps: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Average the best 128 of 100,000 seeded mixtures; laws with gradients override this."""
        return minimize_by_sampling(lambda X: self._predict(X) @ weights, self.n_domains_, caps, rng=0)
