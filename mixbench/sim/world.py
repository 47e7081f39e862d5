"""The simulator's ground truth: per-domain losses driven by a known linear mixing law.

Domain i (which is also evaluation set i) starts at loss L0_i and can never go below its floor
c_i. One optimizer step with learning-rate multiplier s on mixture p moves the losses along

    dL_i/dt = -eta * sum_j A_ij(L) p_j,   A_ij(L) = gate_i(L) * A0_ij * (L_i - c_i) / (L0_i - c_i)

for a time eta = step_size * s. Within a step p, eta and the gates are constant, so the step is
the exact solution of a linear ODE: L_i - c_i is multiplied by exp(-eta * gate_i * (R p)_i) with
R_ij = A0_ij / (L0_i - c_i). To first order this is the per-round law dL = -eta A p. Without
gates, a whole run on a fixed p therefore has the closed form

    L_i(T) = c_i + (L0_i - c_i) * exp(-k * (R p)_i),   k = step_size * (sum of the multipliers),

which is the log-linear static mixing law L_i = c_i + exp(b_i + sum_j t_ij p_j) with
b_i = log(L0_i - c_i) and t_ij = -k R_ij.
"""

from dataclasses import dataclass, field

import numpy as np
from scipy.special import expit

from mixbench.errors import ConfigError
from mixbench.simplex import validate_mixture
from mixbench.sim import optimum
from mixbench.sim.schedule import LRSchedule


@dataclass(frozen=True)
class Prerequisite:
    """A prerequisite in the style of Skill-It: all transfer into `domain` (its row of A) is
    scaled down to `floor` until the loss of domain `requires` falls below `threshold`.

    The gate opens smoothly, as a logistic function of (threshold - L_requires) / width, so
    that losses stay differentiable in the mixture. The gate is re-evaluated at every step.
    """

    domain: int
    requires: int
    threshold: float
    width: float
    floor: float = 0.1

    def gate(self, losses: np.ndarray) -> np.ndarray:
        """Return the gate value in [floor, 1] for losses of shape (..., m)."""
        opened = expit((self.threshold - losses[..., self.requires]) / self.width)
        return self.floor + (1.0 - self.floor) * opened


def _frozen_array(values, name: str, ndim: int) -> np.ndarray:
    array = np.array(values, dtype=np.float64)
    if array.ndim != ndim or not np.all(np.isfinite(array)):
        raise ConfigError(f"{name} must be a finite {ndim}-dimensional array, got {values!r}.")
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class SimWorld:
    """Ground truth of a simulated setting with m domains, which are also the m evaluation sets.

    `transfer` is A0 (rows: evaluation sets, columns: training domains), the loss drop per unit
    of learning rate at the start of training. `step_size` is the time eta of one step at a
    learning-rate multiplier of 1. Build one with `make_world` or directly from arrays.
    """

    initial_loss: np.ndarray
    floor: np.ndarray
    transfer: np.ndarray
    step_size: float = 0.01
    prerequisites: tuple[Prerequisite, ...] = ()
    names: tuple[str, ...] | None = None
    _cache: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        initial = _frozen_array(self.initial_loss, "initial_loss", 1)
        floor = _frozen_array(self.floor, "floor", 1)
        transfer = _frozen_array(self.transfer, "transfer", 2)
        m = initial.shape[0]
        if floor.shape != (m,) or transfer.shape != (m, m):
            raise ConfigError(
                f"initial_loss has {m} domains, so floor must have shape ({m},) and transfer ({m}, {m}); "
                f"got {floor.shape} and {transfer.shape}."
            )
        if np.any(initial <= floor):
            raise ConfigError(f"every initial_loss {initial.tolist()} must exceed its floor {floor.tolist()}.")
        if not self.step_size > 0:
            raise ConfigError(f"step_size must be positive, got {self.step_size!r}.")
        names = tuple(self.names) if self.names is not None else tuple(f"d{i}" for i in range(m))
        if len(names) != m or len(set(names)) != m:
            raise ConfigError(f"names must be {m} distinct strings, got {list(names)!r}.")
        for prerequisite in self.prerequisites:
            self._check_prerequisite(prerequisite, m)
        object.__setattr__(self, "initial_loss", initial)
        object.__setattr__(self, "floor", floor)
        object.__setattr__(self, "transfer", transfer)
        object.__setattr__(self, "prerequisites", tuple(self.prerequisites))
        object.__setattr__(self, "names", names)

    @staticmethod
    def _check_prerequisite(prerequisite: Prerequisite, m: int) -> None:
        if not (0 <= prerequisite.domain < m and 0 <= prerequisite.requires < m):
            raise ConfigError(f"{prerequisite} refers to a domain outside 0..{m - 1}.")
        if prerequisite.domain == prerequisite.requires:
            raise ConfigError(f"{prerequisite} makes a domain its own prerequisite.")
        if not (prerequisite.width > 0 and 0 <= prerequisite.floor <= 1):
            raise ConfigError(f"{prerequisite} needs width > 0 and floor in [0, 1].")

    @property
    def m(self) -> int:
        """Number of domains (and of evaluation sets)."""
        return self.initial_loss.shape[0]

    @property
    def has_gates(self) -> bool:
        """Whether any prerequisite gates the transfer."""
        return bool(self.prerequisites)

    @property
    def rates(self) -> np.ndarray:
        """Relative transfer R = A0 / (L0 - c), row by row: the exponents of the static law per unit k."""
        return self.transfer / (self.initial_loss - self.floor)[:, None]

    def gates(self, losses: np.ndarray) -> np.ndarray:
        """Return each domain's gate (product of its prerequisites' gates) for losses of shape (..., m)."""
        losses = np.asarray(losses, dtype=np.float64)
        gates = np.ones_like(losses)
        for prerequisite in self.prerequisites:
            gates[..., prerequisite.domain] *= prerequisite.gate(losses)
        return gates

    def true_A(self, losses: np.ndarray, *, gated: bool = True) -> np.ndarray:
        """Return the current transfer matrix A^t (m x m) at the given per-domain losses."""
        losses = self._check_losses(losses)
        shrink = (losses - self.floor) / (self.initial_loss - self.floor)
        if gated:
            shrink = shrink * self.gates(losses)
        return self.transfer * shrink[:, None]

    def advance(self, losses: np.ndarray, mixture: np.ndarray, eta: float, *, gated: bool = True) -> np.ndarray:
        """Return the losses after one step of time `eta` on `mixture` (exact within the step).

        Accepts a batch: losses and mixture of shape (..., m). The gates are taken at the start
        of the step. The mixture is not validated here, so callers validate it first.
        """
        excess = losses - self.floor
        exponent = mixture @ self.rates.T
        if gated and self.prerequisites:
            exponent = exponent * self.gates(losses)
        return self.floor + excess * np.exp(-eta * exponent)

    def etas(self, total_steps: int, schedule: LRSchedule | None = None) -> np.ndarray:
        """Return the time eta of every step of a run: step_size times the learning-rate multiplier."""
        return self.step_size * (schedule or LRSchedule()).scales(total_steps)

    def progress(self, total_steps: int, schedule: LRSchedule | None = None) -> float:
        """Return k = step_size * (sum of the learning-rate multipliers) of a run of `total_steps` steps."""
        return float(self.etas(total_steps, schedule).sum())

    def static_loss(
        self,
        mixture: np.ndarray,
        total_steps: int,
        *,
        gated: bool | None = None,
        schedule: LRSchedule | None = None,
    ) -> np.ndarray:
        """Return the per-domain losses after a run of `total_steps` steps on a fixed mixture.

        With `gated=False` this is the closed-form log-linear law and ignores prerequisites.
        With `gated=True` the gated dynamics are integrated step by step (what `SimBackend`
        does without noise). The default, None, uses the gates exactly when the world has
        prerequisites, so it always returns the true loss. `schedule` defaults to `LRSchedule()`.
        """
        p = validate_mixture(mixture, self.names)
        etas = self.etas(total_steps, schedule)
        if self._use_gates(gated):
            return self.integrate(p, etas)
        return self.closed_form(p, float(etas.sum()))

    def closed_form(self, mixtures: np.ndarray, k: float) -> np.ndarray:
        """Return the ungated static law at progress k for mixtures of shape (..., m)."""
        return self.floor + (self.initial_loss - self.floor) * np.exp(-k * (mixtures @ self.rates.T))

    def integrate(self, mixtures: np.ndarray, etas: np.ndarray, *, gated: bool = True) -> np.ndarray:
        """Return the losses after one step per entry of `etas` on fixed mixtures of shape (..., m)."""
        mixtures = np.asarray(mixtures, dtype=np.float64)
        losses = np.broadcast_to(self.initial_loss, mixtures.shape).copy()
        for eta in etas:
            losses = self.advance(losses, mixtures, eta, gated=gated)
        return losses

    def optimal_static_mixture(
        self,
        total_steps: int,
        *,
        gated: bool | None = None,
        schedule: LRSchedule | None = None,
    ) -> np.ndarray:
        """Return the fixed mixture that minimises the mean static loss over the evaluation sets.

        `gated` has the meaning it has in `static_loss`. The ungated law is convex in p (a sum
        of exponentials of affine functions), so its minimum is global. The gated objective is
        not convex and is searched from many deterministic starting points. Results are cached.
        """
        return self._static_optimum(total_steps, gated, schedule)[0].copy()

    def optimal_static_loss(
        self,
        total_steps: int,
        *,
        gated: bool | None = None,
        schedule: LRSchedule | None = None,
    ) -> float:
        """Return the mean loss over evaluation sets of `optimal_static_mixture` with the same arguments."""
        return self._static_optimum(total_steps, gated, schedule)[1]

    def domain_gradients(self, losses: np.ndarray, *, gated: bool = True) -> np.ndarray:
        """Return per-domain gradient vectors (row j is g_j) whose Gram matrix is sym(A^t).

        Inner products can only form a positive semidefinite matrix. When sym(A^t) has negative
        eigenvalues, the Gram matrix is its nearest PSD matrix in Frobenius norm (the negative
        eigenvalues set to 0), so g_j are the rows of V diag(sqrt(max(lambda, 0))).
        """
        a = self.true_A(losses, gated=gated)
        symmetric = 0.5 * (a + a.T)
        eigenvalues, eigenvectors = np.linalg.eigh(symmetric)
        return eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))

    def _use_gates(self, gated: bool | None) -> bool:
        return self.has_gates if gated is None else bool(gated) and self.has_gates

    def _static_optimum(self, total_steps, gated, schedule) -> tuple[np.ndarray, float]:
        use_gates = self._use_gates(gated)
        schedule = schedule or LRSchedule()
        key = (total_steps, schedule, use_gates)
        if key not in self._cache:
            etas = self.etas(total_steps, schedule)
            if use_gates:
                self._cache[key] = optimum.minimize_integrated(self, etas)
            else:
                self._cache[key] = optimum.minimize_closed_form(self, float(etas.sum()))
        return self._cache[key]

    def _check_losses(self, losses) -> np.ndarray:
        losses = np.asarray(losses, dtype=np.float64)
        if losses.shape != (self.m,):
            raise ConfigError(f"losses must have shape ({self.m},), got {losses.shape}.")
        return losses
