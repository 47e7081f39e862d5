"""Pure update rules of the online mixing methods.

Each rule maps (current mixture, per-domain statistics, step or hyperparameters) to the next
mixture and keeps no state, so the invariants of each method can be tested in isolation:

- equal excess losses leave DoReMi at its smoothing prior (from uniform, it stays uniform);
- gradients orthogonal to the target leave DoGE's mixture unchanged;
- Skill-It with an identity graph and equal losses gives the uniform mixture;
- every ODM probability stays at or above the exploration rate of its step.

Mixtures are numpy vectors on the simplex; m is the number of training domains.
"""

import math

import numpy as np
from scipy.special import logsumexp, softmax

from mixbench.errors import ConfigError


def log_space_step(p: np.ndarray, scores: np.ndarray, step_size: float) -> np.ndarray:
    """Return softmax(log p + step_size * scores): an exponentiated-gradient step on the simplex.

    A zero weight stays zero, because its log is minus infinity.
    """
    with np.errstate(divide="ignore"):
        logits = np.log(np.asarray(p, dtype=np.float64)) + step_size * np.asarray(scores, dtype=np.float64)
    return softmax(logits)


# ----- DoReMi ------------------------------------------------------------------------------------


def fill_absent(values: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
    """Replace NaN entries (domains absent from a batch) by their previous values.

    A domain with no previous value gets the mean of the domains present in this batch, which
    leaves its weight unchanged relative to the average domain. Returns all NaN when no domain
    is present and there is no previous value.
    """
    values = np.asarray(values, dtype=np.float64).copy()
    absent = np.isnan(values)
    if previous is not None:
        values[absent] = np.asarray(previous, dtype=np.float64)[absent]
        absent = np.isnan(values)
    if absent.any() and not absent.all():
        values[absent] = values[~absent].mean()
    return values


def doremi_update(p: np.ndarray, excess_loss: np.ndarray, eta: float, smoothing: float) -> np.ndarray:
    """Return DoReMi's next mixture: softmax(log p + eta * lambda), then (1 - eps) p + eps / m.

    `excess_loss` is lambda, each domain's mean per-token excess loss over the reference model
    (clipped at 0 per token), with absent domains already filled in by `fill_absent`.
    """
    stepped = log_space_step(p, excess_loss, eta)
    return (1.0 - smoothing) * stepped + smoothing / len(stepped)


# ----- DoGE --------------------------------------------------------------------------------------


def doge_scores(
    target_alignment: np.ndarray, gradient_gram: np.ndarray | None, lr: float, normalize_and_clip: bool, clip: float = 5.0
) -> np.ndarray:
    """Return DoGE's domain scores s_j = lr * <g_j, g_target>.

    With `normalize_and_clip`, the scores are divided by the mean gradient norm over domains (the
    square roots of the Gram matrix's diagonal) and clipped to [0, clip * lr], as the published
    DoGE code does. A negatively aligned domain then scores 0.
    """
    scores = lr * np.asarray(target_alignment, dtype=np.float64)
    if not normalize_and_clip:
        return scores
    if gradient_gram is None:
        raise ConfigError("DoGE's normalised scores need the Gram matrix of the domain gradients.")
    mean_norm = float(np.mean(np.sqrt(np.clip(np.diag(gradient_gram), 0.0, None))))
    return np.clip(scores / (mean_norm + 1e-6), 0.0, clip * lr)


def train_alignment(gradient_gram: np.ndarray) -> np.ndarray:
    """Return sum over i != j of <g_j, g_i>: each domain's alignment with the other domains' gradients.

    This is the published DoGE code's target when the target domains are the training domains.
    """
    gram = np.asarray(gradient_gram, dtype=np.float64)
    return gram.sum(axis=1) - np.diag(gram)


def doge_update(p: np.ndarray, scores: np.ndarray, mu: float) -> np.ndarray:
    """Return DoGE's next mixture: softmax(log p + s / mu)."""
    return log_space_step(p, scores, 1.0 / mu)


# ----- Skill-It ----------------------------------------------------------------------------------


def skill_it_mixture(graph: np.ndarray, loss_sums: np.ndarray, eta: float) -> np.ndarray:
    """Return Skill-It's mixture p_i proportional to exp(eta * sum_j G_ij * S_j).

    `graph[i, j]` is how much training on domain i lowers the loss of evaluation set j, and
    `loss_sums[j]` is S_j, the sum of evaluation set j's validation losses over the last
    evaluations. The mixture is recomputed from these sums alone, not multiplied onto the
    previous mixture.
    """
    return softmax(eta * (np.asarray(graph, dtype=np.float64) @ np.asarray(loss_sums, dtype=np.float64)))


def relative_loss_drop(initial: np.ndarray, single_domain: np.ndarray) -> np.ndarray:
    """Return the skills graph G[j, i] = (L0_i - L_i after training only on j) / L0_i.

    `initial` contains the untrained model's validation losses (n) and `single_domain[j]` the
    validation losses after a run on domain j alone (m x n).
    """
    initial = np.asarray(initial, dtype=np.float64)
    return (initial[None, :] - np.asarray(single_domain, dtype=np.float64)) / initial[None, :]


# ----- Aioli -------------------------------------------------------------------------------------


def smoothed_one_hot(m: int, j: int, weight: float) -> np.ndarray:
    """Return the mixture with `weight` on domain j and (1 - weight) / (m - 1) on each other domain."""
    mixture = np.full(m, (1.0 - weight) / (m - 1))
    mixture[j] = weight
    return mixture


def unsmooth(drops: np.ndarray, weight: float) -> np.ndarray:
    """Return A with drops = A S, where column j of S is `smoothed_one_hot(m, j, weight)`.

    `drops[:, j]` is the loss drop of every evaluation set after training on domain j's smoothed
    one-hot mixture, so solving against S undoes the smoothing. With weight 1, S is the identity.
    """
    m = drops.shape[1]
    mixing = np.column_stack([smoothed_one_hot(m, j, weight) for j in range(m)])
    return np.linalg.solve(mixing.T, np.asarray(drops, dtype=np.float64).T).T


def normalize_transfer(matrix: np.ndarray) -> np.ndarray:
    """Shift A to be non-negative (subtracting its minimum when any entry is negative), then divide by its sum.

    Returns the uniform matrix when every entry is equal, where the sum would be 0 after the shift.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.min() < 0:
        matrix = matrix - matrix.min()
    total = matrix.sum()
    if total <= 0:
        return np.full(matrix.shape, 1.0 / matrix.size)
    return matrix / total


def aioli_update(p: np.ndarray, transfer: np.ndarray, eta: float) -> np.ndarray:
    """Return Aioli's next mixture, proportional to p_j * exp(eta * sum_i A_ij), normalised."""
    return log_space_step(p, np.asarray(transfer, dtype=np.float64).sum(axis=0), eta)


# ----- ODM (EXP3) --------------------------------------------------------------------------------


def exploration_rate(m: int, t: int) -> float:
    """Return EXP3's exploration rate eps_t = min(1/m, sqrt(ln m / (m t))) for the 1-based step t."""
    if t < 1:
        raise ValueError(f"the bandit step t counts from 1, got {t}.")
    return min(1.0 / m, math.sqrt(math.log(m) / (m * t)))


def add_rewards(cumulative: np.ndarray, rewards: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Return the cumulative reward plus each present domain's reward divided by its probability.

    NaN rewards (domains absent from the batch) add nothing.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    present = ~np.isnan(rewards)
    updated = np.asarray(cumulative, dtype=np.float64).copy()
    updated[present] += rewards[present] / np.asarray(probabilities, dtype=np.float64)[present]
    return updated


def exp3_probabilities(cumulative: np.ndarray, previous_rate: float, rate: float) -> np.ndarray:
    """Return pi = (1 - m eps_t) softmax(eps_{t-1} R) + eps_t, so every pi_j >= eps_t."""
    cumulative = np.asarray(cumulative, dtype=np.float64)
    m = len(cumulative)
    logits = previous_rate * cumulative
    return (1.0 - m * rate) * np.exp(logits - logsumexp(logits)) + rate
