"""Score an online method's A^t against the A*^t fitted on children branched from its own run.

For one branch point: fit A*^t on the children's loss changes (dL = -A* p), fit one scalar b so
that the loss drop is about b A^t p (A^t the method's recorded estimate), compare the column sums
of A*^t and A^t with a_sim, and evaluate the mixture each matrix implies for the next round.

The implied mixture ("step") is one exponentiated-gradient step, p_j proportional to
p_j exp(eta * sum_i A_ij), from the mixture in force when the method made its estimate. A is
first normalised as Aioli normalises it: shifted to be non-negative, then divided by its sum.
Without Aioli's moving average this is exactly Aioli's step, and it is the step of the Linear
Mixing Optimization view of every online method. The normalisation makes the step independent of
A's scale, so b does not enter it. With a small eta the step stays near the mixture in force.
So the argmin over the simplex of the linear predicted loss is scored as well ("argmin", the
domain of the largest column sum): it shows whether the matrix points at the right domain.
Each mixture is scored by the loss A*^t predicts after the window (on the simulator also by the
true A^t): regret 0 is the best mixture on the simplex under that law, 1 the uniform mixture.
"""

from typing import Any

import numpy as np

from mixbench.law_accuracy.dynamic_fit import _pooled_r2
from mixbench.laws import DynamicLaw
from mixbench.sim.metrics import a_sim, regret
from mixbench.simplex import eg_step
from methods.updates import normalize_transfer

# The mixtures scored at each branch point: the steps implied by the method's A^t and by the
# fitted A*^t, the mixture the method's run went on with, and the argmins of both linear laws.
MIXTURES = ("method_step", "fitted_step", "chosen", "method_argmin", "fitted_argmin")


def implied_mixture(start: np.ndarray, A: np.ndarray, eta: float) -> np.ndarray:
    """Return one exponentiated-gradient step from `start` on the column sums of normalised A."""
    return eg_step(start, normalize_transfer(A).sum(axis=0), eta)


def argmin_mixture(A: np.ndarray) -> np.ndarray:
    """Return the mixture that minimises the mean loss the linear law dL = -A p predicts: a vertex."""
    return np.eye(A.shape[1])[int(np.argmax(np.asarray(A).sum(axis=0)))]


def _mean_loss(before: np.ndarray, A: np.ndarray, p: np.ndarray) -> float:
    """Mean over evaluation sets of the loss a linear law predicts after training on p."""
    return float(np.mean(before - A @ p))


def _regrets(before: np.ndarray, A: np.ndarray, mixtures: dict[str, np.ndarray]) -> dict[str, Any]:
    """Return each mixture's regret under the law (before, A) and the law's best mixture.

    The law is linear in p, so its best mixture is the vertex of the largest column sum.
    """
    m = A.shape[1]
    best = argmin_mixture(A)
    optimal, uniform = _mean_loss(before, A, best), _mean_loss(before, A, np.full(m, 1.0 / m))
    scores = {}
    for name, p in mixtures.items():
        value = regret(_mean_loss(before, A, p), optimal, uniform)
        scores[name] = None if np.isnan(value) else value
    return {"regret": scores, "best_mixture": best.tolist()}


def fit_scale(P: np.ndarray, dL: np.ndarray, method_A: np.ndarray) -> tuple[float, float | None]:
    """Return (b, R^2): the least-squares b with -dL about b A^t p, and the pooled R^2 of that law.

    b has no intercept, as the question is whether the method's A^t, scaled once, predicts
    the loss changes. R^2 is pooled over targets, each centred on its own mean.
    """
    law = DynamicLaw(reference=method_A, scale="global").fit_dynamic(P, dL)
    return float(law.scale_[0]), _pooled_r2(dL, law.predict_dynamic(P))


def score_branch_point(parent: dict, children: list[dict], eta: float, nonnegative: bool = False) -> dict[str, Any]:
    """Score the method's A^t at one branch point; see the module docstring.

    `parent` contains the losses at the branch point ("losses"), the method's estimate ("method_A"),
    the mixture in force when it was made ("mixture_before") and the run's next mixture
    ("mixture_after"); on the simulator also "true_A" and "true_losses".
    """
    P = np.array([child["mixture"] for child in children], dtype=np.float64)
    dL = np.array([child["dL"] for child in children], dtype=np.float64)
    before = np.asarray(parent["losses"], dtype=np.float64)
    method_A = np.asarray(parent["method_A"], dtype=np.float64)

    law = DynamicLaw(nonnegative=nonnegative).fit_dynamic(P, dL)
    fitted_A = law.A_
    b, b_r2 = fit_scale(P, dL, method_A)
    start = np.asarray(parent["mixture_before"], dtype=np.float64)
    mixtures = {
        "method_step": implied_mixture(start, method_A, eta),
        "fitted_step": implied_mixture(start, fitted_A, eta),
        "chosen": np.asarray(parent["mixture_after"], dtype=np.float64),
        "method_argmin": argmin_mixture(method_A),
        "fitted_argmin": argmin_mixture(fitted_A),
    }
    scored = _regrets(before, fitted_A, mixtures)
    result: dict[str, Any] = {
        "a_sim": a_sim(fitted_A, method_A),
        "b": b,
        "b_r2": b_r2,
        "fitted_r2": _pooled_r2(dL, law.predict_dynamic(P)),
        "regret": scored["regret"],
        "fitted_best_mixture": scored["best_mixture"],
        "mixtures": {name: p.tolist() for name, p in mixtures.items()},
        "fitted_A": fitted_A.tolist(),
        "method_A": method_A.tolist(),
        "eta": eta,
    }
    if "true_A" in parent:
        result.update(_against_truth(parent, children, fitted_A, method_A, mixtures))
    return result


def _against_truth(parent: dict, children: list[dict], fitted_A, method_A, mixtures) -> dict[str, Any]:
    """Compare both matrices with the simulator's true A^t, and score the mixtures by the true law."""
    true_A = np.asarray(parent["true_A"], dtype=np.float64)
    progress = float(np.mean([child["window_progress"] for child in children]))
    # The true law over the window: dL = -progress * A_true p, from the true losses.
    scored = _regrets(np.asarray(parent["true_losses"], dtype=np.float64), progress * true_A, mixtures)
    return {
        "true_A": true_A.tolist(),
        "window_progress": progress,
        "a_sim_true": a_sim(true_A, method_A),
        "fitted_a_sim_true": a_sim(true_A, fitted_A),
        "true_regret": scored["regret"],
        "true_best_mixture": scored["best_mixture"],
    }
