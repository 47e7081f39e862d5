"""The linear mixing law L_i(p) = c_i + w_i . p, fitted by least squares or ridge regression."""

import numpy as np

from mixbench.errors import ConfigError
from mixbench.laws.base import MixingLaw
from mixbench.laws.search import minimize_linear


def fit_centered(P: np.ndarray, L: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Return (intercept (n,), coef (n, m)) of L = intercept + P coef^T with an unpenalised intercept.

    On the simplex the intercept and a constant shift of coef are interchangeable, so the
    centred design is rank deficient; alpha = 0 takes the minimum-norm least-squares solution
    (coef then sums to 0 per target), alpha > 0 the ridge solution.
    """
    mean_p, mean_l = P.mean(axis=0), L.mean(axis=0)
    X, Y = P - mean_p, L - mean_l
    if alpha > 0:
        coef = np.linalg.solve(X.T @ X + alpha * np.eye(X.shape[1]), X.T @ Y).T
    else:
        coef = np.linalg.lstsq(X, Y, rcond=None)[0].T
    return mean_l - coef @ mean_p, coef


class LinearLaw(MixingLaw):
    """L_i(p) = c_i + w_i . p, the linear regression RegMix compares against.

    `alpha` is the ridge penalty on w (0 = ordinary least squares). On the simplex c_i folds
    into w_i, so the law has m identifiable parameters per target.
    """

    name = "linear"

    def __init__(self, alpha: float = 0.0):
        self.alpha = alpha

    def n_params(self, m: int) -> int:
        return m

    def _fit(self, P: np.ndarray, L: np.ndarray) -> None:
        if not (np.isfinite(self.alpha) and self.alpha >= 0):
            raise ConfigError(f"ridge penalty alpha={self.alpha!r} must be a number >= 0.")
        self.intercept_, self.coef_ = fit_centered(P, L, float(self.alpha))

    def _predict(self, P: np.ndarray) -> np.ndarray:
        return self.intercept_[None, :] + P @ self.coef_.T

    def _optimize(self, caps: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return minimize_linear(weights @ self.coef_, caps)
