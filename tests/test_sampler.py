import numpy as np
import pytest
from scipy import stats

from mixbench.errors import ConfigError
from mixbench.train.sampler import MixtureSampler, domain_counts, evaluation_windows


def test_multinomial_counts_match_mixture():
    mixture = np.array([0.5, 0.3, 0.15, 0.05])
    rng = np.random.default_rng(0)
    totals = sum(domain_counts(mixture, 64, "multinomial", rng) for _ in range(500))
    expected = mixture * totals.sum()
    statistic, p_value = stats.chisquare(totals, expected)
    assert p_value > 0.01, (totals, expected, statistic)


def test_multinomial_rejects_a_wrong_mixture():
    # A sampler drawing from the wrong mixture must fail the same chi-square test.
    rng = np.random.default_rng(0)
    totals = sum(domain_counts(np.array([0.4, 0.4, 0.15, 0.05]), 64, "multinomial", rng) for _ in range(500))
    _, p_value = stats.chisquare(totals, np.array([0.5, 0.3, 0.15, 0.05]) * totals.sum())
    assert p_value < 1e-6


def test_largest_remainder_counts_are_exact():
    rng = np.random.default_rng(0)
    counts = domain_counts(np.array([0.5, 0.25, 0.125, 0.125]), 8, "largest_remainder", rng)
    assert counts.tolist() == [4, 2, 1, 1]
    counts = domain_counts(np.array([1 / 3, 1 / 3, 1 / 3]), 16, "largest_remainder", rng)
    assert counts.sum() == 16
    assert counts.tolist() == [6, 5, 5]


def test_sampler_rows_come_from_their_domain():
    arrays = [np.full(500, 7, dtype=np.uint8), np.full(500, 9, dtype=np.uint8)]
    sampler = MixtureSampler(arrays, context=16, batch_size=32, seed=1, mode="multinomial")
    tokens, domain_ids = sampler.sample(np.array([0.25, 0.75]))
    assert tokens.shape == (32, 17)
    assert np.all(tokens[domain_ids == 0] == 7)
    assert np.all(tokens[domain_ids == 1] == 9)


def test_sampler_state_round_trip_reproduces_batches():
    arrays = [np.arange(1000) % 251, (np.arange(800) * 7) % 251]
    sampler = MixtureSampler(arrays, context=8, batch_size=4, seed=3, mode="multinomial")
    sampler.sample(np.array([0.5, 0.5]))
    state = sampler.state_dict()
    first = sampler.sample(np.array([0.5, 0.5]))
    sampler.load_state_dict(state)
    second = sampler.sample(np.array([0.5, 0.5]))
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


def test_unknown_sampling_mode_is_rejected():
    with pytest.raises(ConfigError, match="train.sampling='uniform'"):
        domain_counts(np.array([1.0]), 4, "uniform", np.random.default_rng(0))


def test_evaluation_windows_are_fixed_and_bounded():
    array = np.arange(10_000) % 256
    windows = evaluation_windows(array, context=32, max_tokens=640)
    assert windows.shape == (20, 33)
    np.testing.assert_array_equal(windows, evaluation_windows(array, context=32, max_tokens=640))
