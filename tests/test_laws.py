"""Tests for the mixing laws: recovery of self-generated data, determinism, optimisation, input checks."""

import sys
import warnings

import numpy as np
import pytest

from mixbench.errors import ConfigError, DataError, MixtureError
from mixbench.law_accuracy import r2_score
from mixbench.laws import DynamicLaw, LinearLaw, LogLinearLaw, available_laws, get_law, loglinear
from mixbench.laws.loglinear import huber_objective
from mixbench.simplex import design

# A log-linear law over 3 domains with 3 targets, each helped most by its own domain.
T_TRUE = np.array([[-1.5, 0.5, 0.3], [0.4, -1.0, 0.2], [0.1, 0.3, -0.8]])
C_TRUE = np.array([2.0, 2.5, 1.5])


def loglinear_losses(P, t=T_TRUE, c=C_TRUE):
    return c + np.exp(P @ t.T)


@pytest.fixture(scope="module")
def runs():
    rng = np.random.default_rng(0)
    train = np.vstack([design(3, 40, "cover", 1), rng.dirichlet(np.ones(3), 472)])
    test = rng.dirichlet(np.ones(3), 300)
    return train, test


@pytest.fixture(scope="module")
def dml_law(runs):
    train, _ = runs
    return get_law("dml").fit(train[:60], loglinear_losses(train[:60]))


def assert_on_simplex(p, caps=None):
    assert abs(p.sum() - 1.0) <= 1e-9
    assert np.all(p >= 0.0)
    if caps is not None:
        assert np.all(p <= np.asarray(caps) + 1e-9)


def min_r2(law, P, L):
    prediction = law.predict(P)
    return min(r2_score(L[:, i], prediction[:, i]) for i in range(L.shape[1]))


def test_registry_names():
    assert available_laws() == ["dml", "dynamic", "lightgbm", "linear", "trees"]


def test_dml_recovers_own_data(runs):
    train, test = runs
    law = get_law("dml").fit(train[:60], loglinear_losses(train[:60]), own_domains=[0, 1, 2])
    assert min_r2(law, test, loglinear_losses(test)) > 0.999
    np.testing.assert_allclose(law.c_, C_TRUE, rtol=1e-5)
    np.testing.assert_allclose(law.t_, T_TRUE, atol=1e-5)


def test_dml_same_predictions_across_seeds(runs):
    train, test = runs
    L = loglinear_losses(train[:60])
    first = LogLinearLaw(seed=0).fit(train[:60], L).predict(test)
    second = LogLinearLaw(seed=1, n_random_starts=6).fit(train[:60], L).predict(test)
    np.testing.assert_allclose(first, second, rtol=1e-6)


def test_dml_same_seed_is_deterministic(runs):
    train, _ = runs
    rng = np.random.default_rng(3)
    L = loglinear_losses(train[:80]) + rng.normal(0.0, 0.05, (80, 3))
    first = LogLinearLaw(seed=4).fit(train[:80], L)
    second = LogLinearLaw(seed=4).fit(train[:80], L)
    np.testing.assert_array_equal(first.t_, second.t_)
    np.testing.assert_array_equal(first.c_, second.c_)


def test_dml_rejects_non_positive_losses(runs):
    train, _ = runs
    with pytest.raises(DataError, match="positive losses"):
        LogLinearLaw().fit(train[:10], -np.ones((10, 1)))


def test_dml_objective_overflows_to_inf_quietly():
    P = np.array([[1.0, 0.0], [0.0, 1.0]])
    y = np.array([3.0, 3.5])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value, gradient = loglinear.huber_objective(np.array([1000.0, 0.0, 0.0]), P, y, 0.02)
    assert value == np.inf
    assert gradient[0] == np.inf


def test_dml_exact_fit_no_overflow_warning(monkeypatch):
    # Three runs for the three parameters of two domains: a line search of this fit tries a log c
    # so large that exp overflows, and the fit goes on from finite points.
    rng = np.random.default_rng(54)
    P = np.vstack([np.eye(2), rng.dirichlet(np.ones(2), 1)])
    L = rng.uniform(2.5, 4.5, (3, 1))
    values = []

    def objective(*args):
        value, gradient = huber_objective(*args)
        values.append(value)
        return value, gradient

    monkeypatch.setattr(loglinear, "huber_objective", objective)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        law = LogLinearLaw().fit(P, L)
        prediction = law.predict(np.vstack([P, [[0.5, 0.5]]]))
    assert np.inf in values
    np.testing.assert_allclose(prediction[:3], L, rtol=1e-6)
    assert np.all(np.isfinite(prediction))


def test_linear_recovers_own_data(runs):
    train, test = runs
    w = np.array([[3.0, 2.0, 1.0], [1.0, 4.0, 2.5]])
    law = LinearLaw().fit(train[:20], 0.5 + train[:20] @ w.T)
    assert min_r2(law, test, 0.5 + test @ w.T) > 0.999


def test_linear_ridge_shrinks_coefficients(runs):
    train, _ = runs
    L = train[:50] @ np.array([3.0, 2.0, 1.0])
    plain = LinearLaw().fit(train[:50], L)
    ridge = LinearLaw(alpha=10.0).fit(train[:50], L)
    assert np.ptp(ridge.coef_) < np.ptp(plain.coef_)


def test_dynamic_recovers_matrix(runs):
    train, test = runs
    A = np.array([[0.3, 0.1, -0.05], [0.0, 0.2, 0.1]])
    law = DynamicLaw().fit_dynamic(train[:10], -train[:10] @ A.T)
    np.testing.assert_allclose(law.A_, A, atol=1e-10)
    expected = -test @ A.T
    prediction = law.predict_dynamic(test)
    assert min(r2_score(expected[:, i], prediction[:, i]) for i in range(2)) > 0.999


def test_dynamic_fit_with_before(runs):
    train, test = runs
    A = np.array([[0.3, 0.1, 0.05], [0.05, 0.2, 0.1]])
    before = np.array([4.0, 5.0])
    law = DynamicLaw().fit(train[:10], before - train[:10] @ A.T, before=before)
    np.testing.assert_allclose(law.A_, A, atol=1e-10)
    np.testing.assert_allclose(law.predict(test, before=before), before - test @ A.T, atol=1e-10)
    with pytest.raises(ConfigError, match="before="):
        law.predict(test)


def test_dynamic_static_form(runs):
    train, test = runs
    A = np.array([[0.3, 0.1, 0.05]])
    law = DynamicLaw().fit(train[:10], 4.0 - train[:10] @ A.T)
    assert min_r2(law, test, 4.0 - test @ A.T) > 0.999


def test_dynamic_nonnegative(runs):
    train, _ = runs
    rng = np.random.default_rng(5)
    dL = -train[:40] @ np.array([[0.3, 0.0, 0.2]]).T + rng.normal(0.0, 0.05, (40, 1))
    law = DynamicLaw(nonnegative=True).fit_dynamic(train[:40], dL)
    assert np.all(law.A_ >= 0.0)


@pytest.mark.parametrize("scale", ["row", "global"])
def test_dynamic_reference_scale(runs, scale):
    train, _ = runs
    reference = np.array([[0.3, 0.1, 0.0], [0.1, 0.2, 0.3]])
    b = np.array([2.0, 2.0])
    law = DynamicLaw(reference=reference, scale=scale).fit_dynamic(train[:5], -train[:5] @ (b[:, None] * reference).T)
    np.testing.assert_allclose(law.scale_, b, rtol=1e-10)
    static = DynamicLaw(reference=reference, scale=scale).fit(train[:5], 4.0 - train[:5] @ (b[:, None] * reference).T)
    np.testing.assert_allclose(static.scale_, b, rtol=1e-8)
    np.testing.assert_allclose(static.L0_, [4.0, 4.0], rtol=1e-8)


def test_trees_fit_smooth_law(runs):
    # Trees are piecewise constant, so they cannot reproduce a smooth law exactly. With 512
    # noise-free runs over 3 domains they still explain over 99% of the held-out variance.
    train, test = runs
    law = get_law("trees").fit(train, loglinear_losses(train))
    assert min_r2(law, test, loglinear_losses(test)) > 0.99


def test_trees_gbr_fit_smooth_law(runs):
    train, test = runs
    law = get_law("trees", estimator="gbr").fit(train, loglinear_losses(train)[:, :1])
    assert min_r2(law, test, loglinear_losses(test)[:, :1]) > 0.99


def fitted_laws(train):
    L = loglinear_losses(train)
    return {
        "dml": get_law("dml").fit(train[:60], L[:60]),
        "linear": get_law("linear").fit(train, L),
        "trees": get_law("trees", n_samples=2000, top_k=32).fit(train, L),
        "dynamic": get_law("dynamic").fit(train, L),
    }


def random_caps(rng, m):
    caps = rng.uniform(0.0, 1.0, m) * (rng.uniform(size=m) < 0.7)
    caps[rng.integers(m)] = np.inf if rng.uniform() < 0.2 else caps.max()
    total = caps[np.isfinite(caps)].sum()
    if np.all(np.isfinite(caps)) and total < 1.0:
        caps = caps / max(total, 1e-3) * rng.uniform(1.0, 1.5)
        if caps.sum() < 1.0:
            caps[0] += 1.0
    return caps


def test_optimize_respects_random_caps(runs):
    train, _ = runs
    rng = np.random.default_rng(11)
    for name, law in fitted_laws(train).items():
        for _ in range(25):
            caps = random_caps(rng, 3)
            weights = rng.uniform(0.0, 1.0, 3) + 0.01
            p = law.optimize(caps=caps, weights=weights)
            assert_on_simplex(p, caps), (name, caps, p)


def test_optimize_edge_caps(runs):
    train, _ = runs
    for law in fitted_laws(train).values():
        np.testing.assert_allclose(law.optimize(caps=[0.2, 0.3, 0.5]), [0.2, 0.3, 0.5], atol=1e-9)
        assert law.optimize(caps=[0.0, 1.0, 0.0])[1] == pytest.approx(1.0)


def test_optimize_rejects_empty_caps(runs):
    train, _ = runs
    law = get_law("linear").fit(train[:10], loglinear_losses(train[:10]))
    with pytest.raises(MixtureError, match=r"sum to 0\.9 < 1"):
        law.optimize(caps=[0.3, 0.3, 0.3])


def brute_force_minimum(mean_loss, caps=None, steps=400):
    grid = np.array([(i, j, steps - i - j) for i in range(steps + 1) for j in range(steps + 1 - i)]) / steps
    if caps is not None:
        grid = grid[np.all(grid <= np.asarray(caps) + 1e-12, axis=1)]
    values = mean_loss(grid)
    return grid[np.argmin(values)], values.min()


@pytest.mark.parametrize("caps", [None, [0.35, 0.5, 0.4], [1.0, 0.1, 1.0]])
def test_dml_finds_known_optimum(dml_law, caps):
    p = dml_law.optimize(caps=caps)
    assert_on_simplex(p, caps)
    grid_point, grid_value = brute_force_minimum(lambda X: loglinear_losses(X).mean(axis=1), caps)
    assert loglinear_losses(p[None, :]).mean() <= grid_value + 1e-9
    np.testing.assert_allclose(p, grid_point, atol=2 / 400)


def test_dml_optimize_weights_single_target(dml_law):
    p = dml_law.optimize(weights=[1.0, 0.0, 0.0])
    grid_point, _ = brute_force_minimum(lambda X: loglinear_losses(X)[:, 0])
    np.testing.assert_allclose(p, grid_point, atol=2 / 400)


def test_linear_optimize_is_exact_vertex(runs):
    train, _ = runs
    w = np.array([[3.0, 2.0, 1.0]])
    law = LinearLaw().fit(train[:20], train[:20] @ w.T)
    np.testing.assert_allclose(law.optimize(), [0.0, 0.0, 1.0], atol=1e-9)
    np.testing.assert_allclose(law.optimize(caps=[1.0, 0.7, 0.4]), [0.0, 0.6, 0.4], atol=1e-9)


def test_trees_optimize_beats_uniform(runs):
    train, _ = runs
    L = loglinear_losses(train)
    law = get_law("trees", n_samples=20_000).fit(train, L)
    p = law.optimize()
    assert loglinear_losses(p[None, :]).mean() < loglinear_losses(np.full((1, 3), 1 / 3)).mean()


def test_fit_too_few_runs_says_how_many(runs):
    train, _ = runs
    with pytest.raises(ConfigError, match="at least 4 runs for 3 domains"):
        get_law("dml").fit(train[:3], loglinear_losses(train[:3]))
    with pytest.raises(ConfigError, match="at least 40 runs"):
        get_law("trees").fit(train[:30], loglinear_losses(train[:30]))


def test_predict_wrong_columns(runs):
    train, _ = runs
    law = get_law("linear").fit(train[:10], loglinear_losses(train[:10]))
    with pytest.raises(MixtureError, match="4 columns but the law was fitted on 3 domains"):
        law.predict(np.full((2, 4), 0.25))


def test_fit_mismatched_rows(runs):
    train, _ = runs
    with pytest.raises(DataError, match="has 9 rows but P has 10"):
        get_law("linear").fit(train[:10], loglinear_losses(train[:9]))


def test_fit_nan_mixture(runs):
    train, _ = runs
    P = train[:10].copy()
    P[4, 1] = np.nan
    with pytest.raises(MixtureError, match="rows 4"):
        get_law("linear").fit(P, loglinear_losses(train[:10]))


def test_fit_nan_loss(runs):
    train, _ = runs
    L = loglinear_losses(train[:10])
    L[7, 2] = np.nan
    with pytest.raises(DataError, match="rows 7"):
        get_law("dml").fit(train[:10], L)


def test_fit_rows_off_simplex(runs):
    train, _ = runs
    with pytest.raises(MixtureError, match="row 0: 2"):
        get_law("linear").fit(2 * train[:10], loglinear_losses(train[:10]))


def test_predict_before_fit():
    with pytest.raises(ConfigError, match="not fitted"):
        get_law("linear").predict(np.full((1, 3), 1 / 3))


def test_optimize_bad_weights(runs):
    train, _ = runs
    law = get_law("linear").fit(train[:10], loglinear_losses(train[:10]))
    with pytest.raises(ConfigError, match="one per target"):
        law.optimize(weights=[1.0, 2.0])


def test_get_law_unknown_name():
    with pytest.raises(ConfigError, match="Did you mean 'dml'"):
        get_law("dmll")


def test_get_law_unknown_hyperparameter():
    with pytest.raises(ConfigError, match="huber_delta"):
        get_law("dml", huber_delt=0.01)


def test_get_params_round_trip():
    law = get_law("dml", huber_delta=0.01, seed=3)
    assert law.get_params()["huber_delta"] == 0.01
    assert type(law)(**law.get_params()).get_params() == law.get_params()
    assert "seed=3" in repr(law)


def test_lightgbm_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightgbm", None)  # makes `import lightgbm` raise ImportError
    with pytest.raises(ConfigError, match=r"pip install mixbench\[lightgbm\]"):
        get_law("lightgbm")


def test_lightgbm_fits_when_installed(runs):
    pytest.importorskip("lightgbm")
    train, test = runs
    law = get_law("lightgbm", n_samples=2000).fit(train, loglinear_losses(train))
    assert min_r2(law, test, loglinear_losses(test)) > 0.98
    assert_on_simplex(law.optimize(caps=[0.5, 0.5, 0.5]), [0.5, 0.5, 0.5])


def test_n_params_and_min_runs():
    assert get_law("dml").n_params(17) == 18
    assert get_law("linear").n_params(17) == 17
    assert get_law("dynamic").n_params(17) == 17
    assert get_law("dynamic", reference=np.ones((1, 17))).n_params(17) == 1
    assert get_law("trees").min_runs(3) == 40
