"""The dynamic linear mixing law used by Aioli: one round of training on p changes the losses
by dL = -A p, with A (n x m) the loss drop of each target per unit weight of each domain.
"""

from typing import Any

import numpy as np
from scipy.optimize import nnls

from mixbench.errors import ConfigError
from mixbench.laws.base import MixingLaw, check_losses, check_mixtures
from mixbench.laws.linear import fit_centered
from mixbench.laws.search import minimize_linear

SCALES = ("row", "global")


class DynamicLaw(MixingLaw):
    """dL = -A p, fitted by least squares from runs branched off one checkpoint.

    - `nonnegative=True` constrains A >= 0 (no domain raises any loss), solved by NNLS.
    - `reference` (n x m) fits only a scale b so that dL is about -b A_ref p: one b per target
      row (`scale="row"`) or one for the whole matrix (`scale="global"`). This is how a
      method's own estimate of A is compared with the true one.

    `fit_dynamic(P, dL)` fits A from loss changes. `fit(P, L, before)` does the same with
    dL = L - before; without `before` it fits the static form L = L0 - A p, with one unknown
    starting loss L0_i per target (then L0_i and a constant shift of A_i are interchangeable
    on the simplex, and the minimum-norm solution is kept).
    """

    name = "dynamic"

    def __init__(self, nonnegative: bool = False, reference: Any = None, scale: str = "row"):
        self.nonnegative = nonnegative
        self.reference = reference
        self.scale = scale

    def n_params(self, m: int) -> int:
        if self.reference is not None:
            return 1
        return m

    def fit(self, P: Any, L: Any, before: Any = None) -> "DynamicLaw":
        """Fit from mixtures P (k, m) and losses L (k, n) after a round. Return self.

        `before` (k, n) contains the losses at the branch point, and a single row is broadcast.
        """
        if before is None:
            return super().fit(P, L)
        X = check_mixtures(P)
        Y = check_losses(L, X.shape[0])
        start = np.broadcast_to(np.asarray(before, dtype=np.float64), Y.shape)
        start = check_losses(start, X.shape[0], Y.shape[1], name="before")
        return self.fit_dynamic(X, Y - start)

    def fit_dynamic(self, P: Any, dL: Any) -> "DynamicLaw":
        """Fit A from mixtures P (k, m) and loss changes dL (k, n) = L_after - L_before. Return self."""
        X = check_mixtures(P)
        change = check_losses(dL, X.shape[0], name="dL")
        k, m = X.shape
        if k < self.min_runs(m):
            raise ConfigError(
                f"the 'dynamic' law needs at least {self.min_runs(m)} runs for {m} domains, but got {k}; add runs."
            )
        self.n_domains_, self.n_targets_ = m, change.shape[1]
        self.L0_ = None
        self.A_ = self._solve(X, -change)
        return self

    def _fit(self, P: np.ndarray, L: np.ndarray) -> None:
        # Static form L = L0 - A p: each target's starting loss L0_i is one more unknown.
        if self.reference is None and not self.nonnegative:
            self.L0_, coef = fit_centered(P, L, 0.0)
            self.A_ = -coef
            return
        k, n = L.shape
        if self.reference is None:
            solutions = [self._least_squares(np.column_stack([np.ones(k), -P]), L[:, i]) for i in range(n)]
            self.L0_ = np.array([solution[0] for solution in solutions])
            self.A_ = np.vstack([solution[1:] for solution in solutions])
            return
        ref = self._reference(P.shape[1], n)
        drops = P @ ref.T  # column i: the reference's predicted loss drop of target i
        if self.scale == "row":
            solutions = [self._least_squares(np.column_stack([np.ones(k), -drops[:, i]]), L[:, i]) for i in range(n)]
            self.L0_ = np.array([solution[0] for solution in solutions])
            self.scale_ = np.array([solution[1] for solution in solutions])
        else:
            # One scale for all targets: stack the targets, with one L0 column per target.
            design = np.column_stack([np.kron(np.eye(n), np.ones((k, 1))), -drops.T.reshape(-1)])
            solution = self._least_squares(design, L.T.reshape(-1))
            self.L0_ = solution[:n]
            self.scale_ = np.full(n, solution[n])
        self.A_ = self.scale_[:, None] * ref

    def _least_squares(self, design: np.ndarray, target: np.ndarray) -> np.ndarray:
        if self.nonnegative:
            return nnls(design, target)[0]
        return np.linalg.lstsq(design, target, rcond=None)[0]

    def _reference(self, m: int, n: int) -> np.ndarray:
        ref = np.asarray(self.reference, dtype=np.float64)
        if ref.shape != (n, m) or not np.all(np.isfinite(ref)):
            raise ConfigError(f"reference must be a finite ({n}, {m}) matrix (targets x domains), got shape {ref.shape}.")
        if self.scale not in SCALES:
            raise ConfigError(f"scale={self.scale!r} must be one of {', '.join(SCALES)}.")
        return ref

    def _solve(self, P: np.ndarray, drop: np.ndarray) -> np.ndarray:
        """Return A (n, m) with drop ~ P A^T, under the configured constraint."""
        n = drop.shape[1]
        if self.reference is not None:
            ref = self._reference(P.shape[1], n)
            Q = P @ ref.T  # column i: the reference's predicted drop of target i
            if self.scale == "global":
                b = np.full(n, float((Q * drop).sum() / max((Q * Q).sum(), 1e-300)))
            else:
                b = (Q * drop).sum(axis=0) / np.maximum((Q * Q).sum(axis=0), 1e-300)
            if self.nonnegative:
                b = np.maximum(b, 0.0)
            self.scale_ = b
            return b[:, None] * ref
        if self.nonnegative:
            return np.vstack([nnls(P, drop[:, i])[0] for i in range(n)])
        return np.linalg.lstsq(P, drop, rcond=None)[0].T

    def predict_dynamic(self, P: Any) -> np.ndarray:
        """Return the predicted loss changes dL = -A p, shape (k, n)."""
        self._check_fitted()
        return -check_mixtures(P, self.n_domains_) @ self.A_.T

    def predict(self, P: Any, before: Any = None) -> np.ndarray:
        """Return predicted losses: before + dL, or L0 - A p for a law fitted without `before`."""
        change = self.predict_dynamic(P)
        if before is not None:
            return np.asarray(before, dtype=np.float64) + change
        if self.L0_ is None:
            raise ConfigError("this law was fitted on loss changes; pass before= (the losses at the branch point).")
        return self.L0_[None, :] + change

    def _predict(self, P: np.ndarray) -> np.ndarray:
        return self.predict(P)

    def _optimize(self, caps: np.ndarray, weights: np.ndarray) -> np.ndarray:
        # The starting losses do not depend on p, so minimising the loss maximises w . A p.
        return minimize_linear(-(weights @ self.A_), caps)
