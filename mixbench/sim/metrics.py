"""Scores that compare a method's estimated law and mixture with the simulator's ground truth."""

import numpy as np
from scipy.stats import spearmanr

from mixbench.errors import ConfigError

# Vectors whose spread or norm is below this are treated as constant or zero.
_TOLERANCE = 1e-12


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    norm_a, norm_b = np.linalg.norm(a), np.linalg.norm(b)
    if norm_a <= _TOLERANCE or norm_b <= _TOLERANCE:
        return 1.0 if norm_a <= _TOLERANCE and norm_b <= _TOLERANCE else 0.0
    return float(a @ b / (norm_a * norm_b))


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    constant_a = np.ptp(a) <= _TOLERANCE * max(1.0, np.abs(a).max())
    constant_b = np.ptp(b) <= _TOLERANCE * max(1.0, np.abs(b).max())
    if constant_a or constant_b:
        return 1.0 if constant_a and constant_b else 0.0
    return float(spearmanr(a, b).statistic)


def a_sim(A_true: np.ndarray, A_est: np.ndarray) -> float:
    """Return (cosine + Spearman) / 2 between the column sums of two transfer matrices, in [-1, 1].

    Column j sums the effect of training on domain j over all evaluation sets, which is what an
    exponentiated-gradient mixing step uses. Rank correlation is undefined for a constant
    vector, so Spearman counts as 1 when both column-sum vectors are constant and 0 when only
    one is. Cosine likewise counts as 1 when both are zero vectors and 0 when only one is.
    """
    if np.ndim(A_true) != 2 or np.shape(A_true) != np.shape(A_est):
        raise ConfigError(f"A_true and A_est must be matrices of the same shape, got {np.shape(A_true)} and {np.shape(A_est)}.")
    true_sums = np.asarray(A_true, dtype=np.float64).sum(axis=0)
    estimated_sums = np.asarray(A_est, dtype=np.float64).sum(axis=0)
    if not (np.all(np.isfinite(true_sums)) and np.all(np.isfinite(estimated_sums))):
        raise ConfigError("A_true and A_est must be finite.")
    return 0.5 * (_cosine(true_sums, estimated_sums) + _spearman(true_sums, estimated_sums))


def regret(loss_method: float, loss_optimal: float, loss_stratified: float) -> float:
    """Return (method - optimal) / (stratified - optimal): 0 at the optimum, 1 at the uniform mixture.

    The inputs are mean losses over evaluation sets. A negative value means the method beat
    the reference optimum (possible for a dynamic schedule measured against the best static
    mixture). When the stratified loss equals the optimal one, the ratio is undefined and NaN
    is returned.
    """
    gap = float(loss_stratified) - float(loss_optimal)
    if abs(gap) <= _TOLERANCE:
        return float("nan")
    return (float(loss_method) - float(loss_optimal)) / gap
