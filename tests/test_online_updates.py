"""The pure update rules of the online methods: invariants and two-step examples worked by hand."""

import math

import numpy as np
import pytest

from methods.updates import (
    add_rewards,
    aioli_update,
    doge_scores,
    doge_update,
    train_alignment,
    doremi_update,
    exp3_probabilities,
    exploration_rate,
    fill_absent,
    normalize_transfer,
    relative_loss_drop,
    skill_it_mixture,
    unsmooth,
)


def test_doremi_equal_excess_keeps_smoothing_prior():
    uniform = np.full(4, 0.25)
    np.testing.assert_allclose(doremi_update(uniform, np.full(4, 0.7), eta=1.0, smoothing=1e-3), uniform)
    skewed = np.array([0.7, 0.1, 0.1, 0.1])
    expected = (1 - 1e-3) * skewed + 1e-3 / 4
    np.testing.assert_allclose(doremi_update(skewed, np.full(4, 2.0), eta=1.0, smoothing=1e-3), expected)


def test_doremi_two_steps_by_hand():
    # Step 1: lambda = [1, 0] from p = [0.5, 0.5]; softmax gives [e, 1] / (e + 1), then eps = 0.1.
    p1 = doremi_update(np.array([0.5, 0.5]), np.array([1.0, 0.0]), eta=1.0, smoothing=0.1)
    first = math.e / (math.e + 1)
    np.testing.assert_allclose(p1, [0.9 * first + 0.05, 0.9 * (1 - first) + 0.05])

    # Step 2: domain 0 is absent and keeps lambda 1; domain 1 has lambda 0.5.
    excess = fill_absent(np.array([np.nan, 0.5]), previous=np.array([1.0, 0.0]))
    np.testing.assert_allclose(excess, [1.0, 0.5])
    p2 = doremi_update(p1, excess, eta=1.0, smoothing=0.1)
    a, b = p1[0] * math.e, p1[1] * math.exp(0.5)
    np.testing.assert_allclose(p2, [0.9 * a / (a + b) + 0.05, 0.9 * b / (a + b) + 0.05])


def test_fill_absent_without_history_uses_mean_of_present():
    np.testing.assert_allclose(fill_absent(np.array([1.0, np.nan, 3.0]), previous=None), [1.0, 2.0, 3.0])
    assert np.isnan(fill_absent(np.array([np.nan, np.nan]), previous=None)).all()


@pytest.mark.parametrize("normalize_and_clip", [False, True])
def test_doge_orthogonal_gradients_leave_mixture_unchanged(normalize_and_clip):
    p = np.array([0.2, 0.3, 0.5])
    gram = np.diag([1.0, 4.0, 9.0])
    scores = doge_scores(np.zeros(3), gram, lr=1e-3, normalize_and_clip=normalize_and_clip)
    np.testing.assert_allclose(doge_update(p, scores, mu=0.01), p)


def test_doge_two_steps_by_hand():
    # Step 1, raw scores: s = 0.01 * [1, -1], s / mu = [1, -1].
    scores = doge_scores(np.array([1.0, -1.0]), None, lr=0.01, normalize_and_clip=False)
    p1 = doge_update(np.array([0.5, 0.5]), scores, mu=0.01)
    np.testing.assert_allclose(p1, [math.e / (math.e + 1 / math.e), (1 / math.e) / (math.e + 1 / math.e)])

    # Step 2, published scaling: gradient norms 2 and 1 (mean 1.5), alignments [3, 0.3] and
    # s = 0.01 * [3, 0.3] / 1.5 = [0.02, 0.002], inside [0, 5 * 0.01]; s / mu = [2, 0.2].
    scores = doge_scores(np.array([3.0, 0.3]), np.diag([4.0, 1.0]), lr=0.01, normalize_and_clip=True)
    np.testing.assert_allclose(scores, [0.02, 0.002], rtol=1e-5)
    p2 = doge_update(p1, scores, mu=0.01)
    a, b = p1[0] * math.exp(2.0), p1[1] * math.exp(0.2)
    np.testing.assert_allclose(p2, [a / (a + b), b / (a + b)], rtol=1e-5)


def test_doge_clips_negative_and_large_scores():
    scores = doge_scores(np.array([-5.0, 100.0]), np.diag([1.0, 1.0]), lr=0.1, normalize_and_clip=True)
    np.testing.assert_allclose(scores, [0.0, 0.5])


def test_skill_it_identity_graph_equal_losses_is_uniform():
    np.testing.assert_allclose(skill_it_mixture(np.eye(4), np.full(4, 7.5), eta=0.5), np.full(4, 0.25))


def test_skill_it_two_updates_by_hand():
    graph = np.array([[1.0, 0.5], [0.0, 1.0]])
    # Update 1: S = [2, 1]; exponents 0.5 * [1 * 2 + 0.5 * 1, 1] = [1.25, 0.5].
    p1 = skill_it_mixture(graph, np.array([2.0, 1.0]), eta=0.5)
    np.testing.assert_allclose(p1, np.exp([1.25, 0.5]) / np.exp([1.25, 0.5]).sum())
    # Update 2: S = [1, 1]; recomputed from the sums alone: exponents [0.75, 0.5].
    p2 = skill_it_mixture(graph, np.array([1.0, 1.0]), eta=0.5)
    np.testing.assert_allclose(p2, np.exp([0.75, 0.5]) / np.exp([0.75, 0.5]).sum())


def test_relative_loss_drop_rows_are_training_domains():
    graph = relative_loss_drop(np.array([4.0, 2.0]), np.array([[3.0, 2.0], [4.0, 1.0]]))
    np.testing.assert_allclose(graph, [[0.25, 0.0], [0.0, 0.5]])


def test_aioli_two_rounds_by_hand():
    # Round 1: the smoothed one-hot drops (f = 0.75) of A = [[0.4, 0.1], [0, 0.2]] are
    # D[:, 0] = A [0.75, 0.25] = [0.325, 0.05] and D[:, 1] = A [0.25, 0.75] = [0.175, 0.15].
    drops = np.array([[0.325, 0.175], [0.05, 0.15]])
    estimate = unsmooth(drops, 0.75)
    np.testing.assert_allclose(estimate, [[0.4, 0.1], [0.0, 0.2]], atol=1e-12)
    normalized = normalize_transfer(estimate)
    np.testing.assert_allclose(normalized, np.array([[0.4, 0.1], [0.0, 0.2]]) / 0.7)
    p1 = aioli_update(np.array([0.5, 0.5]), normalized, eta=1.0)
    np.testing.assert_allclose(p1, np.exp([0.4 / 0.7, 0.3 / 0.7]) / np.exp([0.4 / 0.7, 0.3 / 0.7]).sum())

    # Round 2: a negative entry shifts the matrix by its minimum, 0.1, before dividing by 0.9.
    normalized = normalize_transfer(np.array([[0.2, -0.1], [0.1, 0.3]]))
    np.testing.assert_allclose(normalized, np.array([[0.3, 0.0], [0.2, 0.4]]) / 0.9)
    p2 = aioli_update(p1, normalized, eta=1.0)
    weights = p1 * np.exp([0.5 / 0.9, 0.4 / 0.9])
    np.testing.assert_allclose(p2, weights / weights.sum())


def test_aioli_one_hot_weight_one_is_no_smoothing():
    drops = np.array([[0.3, 0.1], [0.2, 0.5]])
    np.testing.assert_allclose(unsmooth(drops, 1.0), drops)


def test_odm_two_steps_by_hand():
    # Step t = 1: eps_1 = min(1/2, sqrt(ln 2 / 2)) = 1/2, so pi is uniform whatever R is.
    reward = add_rewards(np.zeros(2), 0.1 * np.array([2.0, 1.0]), np.array([0.5, 0.5]))
    np.testing.assert_allclose(reward, [0.4, 0.2])
    rate_1 = exploration_rate(2, 1)
    assert rate_1 == 0.5
    pi_1 = exp3_probabilities(reward, previous_rate=0.5, rate=rate_1)
    np.testing.assert_allclose(pi_1, [0.5, 0.5])

    # Step t = 2: only domain 0 is in the batch; R = [0.4 + 0.1 / 0.5, 0.2] = [0.6, 0.2].
    reward = add_rewards(reward, 0.1 * np.array([1.0, np.nan]), pi_1)
    np.testing.assert_allclose(reward, [0.6, 0.2])
    rate_2 = exploration_rate(2, 2)
    assert rate_2 == pytest.approx(math.sqrt(math.log(2) / 4))
    pi_2 = exp3_probabilities(reward, previous_rate=rate_1, rate=rate_2)
    soft = np.exp([0.3, 0.1]) / np.exp([0.3, 0.1]).sum()
    np.testing.assert_allclose(pi_2, (1 - 2 * rate_2) * soft + rate_2)


def test_odm_never_below_exploration_floor():
    rng = np.random.default_rng(0)
    m, reward, rate, pi = 5, np.zeros(5), 0.2, np.full(5, 0.2)
    for t in range(1, 2001):
        losses = rng.uniform(0.5, 8.0, size=m)
        losses[rng.random(m) < 0.3] = np.nan
        reward = add_rewards(reward, 0.1 * losses, pi)
        next_rate = exploration_rate(m, t)
        pi = exp3_probabilities(reward, rate, next_rate)
        rate = next_rate
        assert pi.min() >= rate - 1e-12
        assert pi.sum() == pytest.approx(1.0)


def test_doge_train_alignment_skips_diagonal():
    # Domains 0 and 1 agree, domain 2 opposes both: s_j = sum over i != j of G_ji.
    gram = np.array([[4.0, 2.0, -1.0], [2.0, 9.0, -3.0], [-1.0, -3.0, 1.0]])
    np.testing.assert_allclose(train_alignment(gram), [1.0, -1.0, -4.0])
