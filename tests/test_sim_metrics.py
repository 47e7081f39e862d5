"""Tests of the law-accuracy helpers a_sim and regret."""

import math

import numpy as np
import pytest

from mixbench.errors import ConfigError
from mixbench.sim import a_sim, regret


def test_a_sim_identical_matrices():
    a = np.array([[1.0, 0.2, 0.0], [0.3, 2.0, -0.1], [0.0, 0.5, 0.7]])
    assert a_sim(a, a) == pytest.approx(1.0)


def test_a_sim_ignores_positive_scale():
    a = np.array([[1.0, 0.2, 0.0], [0.3, 2.0, -0.1], [0.0, 0.5, 0.7]])
    assert a_sim(a, 3.5 * a) == pytest.approx(1.0)


def test_a_sim_uses_column_sums():
    truth = np.array([[1.0, 0.0], [0.0, 3.0]])
    same_sums = np.array([[0.5, 1.0], [0.5, 2.0]])
    assert a_sim(truth, same_sums) == pytest.approx(1.0)


def test_a_sim_reversed_ranking():
    truth = np.diag([1.0, 2.0, 3.0])
    estimate = np.diag([3.0, 2.0, 1.0])
    cosine = 10.0 / 14.0
    assert a_sim(truth, estimate) == pytest.approx(0.5 * (cosine - 1.0))


def test_a_sim_constant_column_sums():
    truth = np.diag([1.0, 2.0, 3.0])
    constant = np.ones((3, 3))
    cosine = 18.0 / (np.sqrt(14.0) * np.sqrt(27.0))
    value = a_sim(truth, constant)
    assert not math.isnan(value)
    assert value == pytest.approx(0.5 * cosine)
    assert a_sim(constant, 2 * constant) == pytest.approx(1.0)


def test_a_sim_zero_estimate():
    truth = np.diag([1.0, 2.0, 3.0])
    assert a_sim(truth, np.zeros((3, 3))) == pytest.approx(0.0)
    assert a_sim(np.zeros((3, 3)), np.zeros((3, 3))) == pytest.approx(1.0)


def test_a_sim_rejects_mismatched_shapes():
    with pytest.raises(ConfigError):
        a_sim(np.eye(3), np.eye(2))
    with pytest.raises(ConfigError):
        a_sim(np.ones(3), np.ones(3))
    with pytest.raises(ConfigError):
        a_sim(np.eye(2), np.array([[np.nan, 0.0], [0.0, 1.0]]))


def test_regret_values():
    assert regret(2.0, 2.0, 3.0) == pytest.approx(0.0)
    assert regret(3.0, 2.0, 3.0) == pytest.approx(1.0)
    assert regret(2.5, 2.0, 3.0) == pytest.approx(0.5)
    assert regret(1.9, 2.0, 3.0) == pytest.approx(-0.1)


def test_regret_undefined_when_uniform_is_optimal():
    assert math.isnan(regret(2.5, 2.0, 2.0))
