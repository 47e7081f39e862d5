"""Tests for the simplex helpers: projection, update steps, probe sampling and designs."""

import numpy as np
import pytest
from scipy.optimize import minimize

from mixbench.errors import ConfigError, MixtureError
from mixbench.simplex import (
    design,
    dirichlet_around,
    eg_step,
    epoch_caps,
    mixture_from_setting,
    project,
    project_rows,
    regmix_prior,
    smooth,
    validate_caps,
)


def assert_on_simplex(p, caps=None, tolerance=1e-9):
    p = np.atleast_2d(p)
    assert np.all(np.abs(p.sum(axis=1) - 1.0) <= tolerance), p.sum(axis=1)
    assert np.all(p >= 0.0)
    if caps is not None:
        assert np.all(p <= np.asarray(caps) + tolerance)


def projection_by_qp(v, caps):
    """Solve the projection as a generic constrained least-squares problem."""
    m = v.size
    result = minimize(
        lambda x: 0.5 * np.sum((x - v) ** 2),
        np.full(m, 1.0 / m),
        jac=lambda x: x - v,
        method="SLSQP",
        bounds=[(0.0, min(1.0, c)) for c in caps],
        constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1.0}],
        options={"ftol": 1e-14, "maxiter": 1000},
    )
    return result.x


def test_project_matches_qp_with_random_caps():
    rng = np.random.default_rng(0)
    for _ in range(40):
        m = int(rng.integers(2, 8))
        v = rng.normal(0.0, 1.0, m)
        caps = rng.uniform(0.05, 0.8, m)
        caps = caps / caps.sum() * rng.uniform(1.0, 2.0)  # feasible: the caps sum to >= 1
        p = project(v, caps)
        assert_on_simplex(p, caps)
        np.testing.assert_allclose(p, projection_by_qp(v, caps), atol=1e-6)


def test_project_without_caps_matches_qp():
    rng = np.random.default_rng(1)
    for _ in range(20):
        v = rng.normal(0.0, 2.0, 6)
        p = project(v)
        assert_on_simplex(p)
        np.testing.assert_allclose(p, projection_by_qp(v, np.ones(6)), atol=1e-6)


def test_project_keeps_simplex_points():
    p = np.array([0.2, 0.3, 0.5])
    np.testing.assert_allclose(project(p), p, atol=1e-15)
    np.testing.assert_allclose(project(p, [0.2, 0.3, 0.5]), p, atol=1e-15)


def test_project_mixes_capped_and_uncapped():
    np.testing.assert_allclose(project([5.0, 1.0, 0.0], [0.3, np.inf, 0.4]), [0.3, 0.7, 0.0], atol=1e-12)
    np.testing.assert_allclose(project([5.0, 0.0, 0.0], [0.3, np.inf, 0.4]), [0.3, 0.35, 0.35], atol=1e-12)


def test_project_rows_matches_project():
    rng = np.random.default_rng(2)
    X = rng.normal(0.0, 1.0, (50, 5))
    caps = np.array([0.5, 0.2, 0.3, 0.4, 0.1])
    expected = np.vstack([project(x, caps) for x in X])
    result = project_rows(X, caps)
    assert_on_simplex(result, caps)
    np.testing.assert_allclose(result, expected, atol=1e-9)


def test_project_rejects_caps_summing_below_one():
    with pytest.raises(MixtureError, match=r"caps .* sum to 0\.6 < 1"):
        project([0.5, 0.5], [0.3, 0.3])


def test_project_rejects_negative_cap():
    with pytest.raises(MixtureError, match="negative"):
        project([0.5, 0.5], [-0.1, 2.0])


def test_project_rejects_wrong_cap_count():
    with pytest.raises(MixtureError, match="3 domains"):
        project([0.2, 0.3, 0.5], [1.0, 1.0])


def test_project_rejects_nan_vector():
    with pytest.raises(MixtureError, match="NaN"):
        project([np.nan, 1.0])


def test_validate_caps_none_is_unbounded():
    assert np.all(np.isinf(validate_caps(None, 3)))


def test_eg_step_matches_formula():
    p = np.array([0.2, 0.3, 0.5])
    g = np.array([1.0, -1.0, 0.5])
    expected = p * np.exp(0.7 * g)
    np.testing.assert_allclose(eg_step(p, g, 0.7), expected / expected.sum(), rtol=1e-12)


def test_eg_step_is_stable_for_huge_steps():
    p = eg_step([0.25, 0.25, 0.5], [1000.0, 999.0, -1000.0], 10.0)
    assert np.all(np.isfinite(p))
    assert p[1] / p[0] == pytest.approx(np.exp(-10.0))
    assert p[2] == 0.0  # exp(-20000) underflows to 0 instead of overflowing the others


def test_eg_step_keeps_zero_weight_zero():
    p = eg_step([0.0, 0.5, 0.5], [100.0, 0.0, 0.0], 1.0)
    assert p[0] == 0.0
    assert_on_simplex(p)


def test_eg_step_zero_eta_is_identity():
    np.testing.assert_allclose(eg_step([0.1, 0.9], [3.0, -2.0], 0.0), [0.1, 0.9])


def test_eg_step_rejects_bad_gradient():
    with pytest.raises(MixtureError, match="one per domain"):
        eg_step([0.5, 0.5], [1.0, 2.0, 3.0], 1.0)
    with pytest.raises(MixtureError, match="eta"):
        eg_step([0.5, 0.5], [1.0, 2.0], np.nan)


def test_smooth_sets_floor():
    p = smooth([1.0, 0.0, 0.0, 0.0], 0.1)
    np.testing.assert_allclose(p, [0.925, 0.025, 0.025, 0.025])
    with pytest.raises(MixtureError, match="eps"):
        smooth([1.0, 0.0], 1.5)


def test_regmix_prior_square_root():
    np.testing.assert_allclose(regmix_prior([4.0, 1.0, 0.0]), [2 / 3, 1 / 3, 0.0])
    np.testing.assert_allclose(regmix_prior([3.0, 1.0], temperature=1.0), [0.75, 0.25])
    with pytest.raises(MixtureError, match="temperature"):
        regmix_prior([1.0, 1.0], temperature=0.0)


def test_epoch_caps_values():
    caps = epoch_caps([1e9, 3e9], total_tokens=1e10, max_epochs=5)
    np.testing.assert_allclose(caps, [0.5, 1.5])


def test_epoch_caps_reject_too_little_data():
    with pytest.raises(MixtureError, match="sum to 0.04"):
        epoch_caps([1e9, 1e9], total_tokens=1e11, max_epochs=2)


def test_dirichlet_around_respects_caps_and_floor():
    prior = regmix_prior([10.0, 5.0, 2.0, 1.0])
    caps = np.array([0.6, 0.8, 0.5, 0.4])
    samples = dirichlet_around(prior, [0.1, 1.0, 5.0], 500, 0, epoch_caps=caps, min_weight=0.01)
    assert samples.shape == (500, 4)
    assert_on_simplex(samples, caps)
    assert not np.any((samples > 0) & (samples < 0.01))


def test_dirichlet_around_is_seeded():
    prior = np.array([0.5, 0.3, 0.2])
    first = dirichlet_around(prior, 2.0, 20, 7)
    np.testing.assert_array_equal(first, dirichlet_around(prior, 2.0, 20, np.random.default_rng(7)))
    assert not np.array_equal(first, dirichlet_around(prior, 2.0, 20, 8))


def test_dirichlet_around_centres_on_prior():
    prior = np.array([0.6, 0.3, 0.1])
    samples = dirichlet_around(prior, 200.0, 2000, 0)
    np.testing.assert_allclose(samples.mean(axis=0), prior, atol=0.01)


def test_dirichlet_around_zero_prior_stays_zero():
    samples = dirichlet_around([0.5, 0.0, 0.5], 1.0, 100, 0)
    assert np.all(samples[:, 1] == 0.0)


def test_dirichlet_around_unreachable_caps_raise():
    with pytest.raises(MixtureError, match="respected the epoch caps"):
        dirichlet_around([1 / 3, 1 / 3, 1 / 3], 30.0, 10, 0, epoch_caps=[0.6, 0.6, 0.001])


def test_dirichlet_around_rejects_bad_arguments():
    with pytest.raises(MixtureError, match="concentration"):
        dirichlet_around([0.5, 0.5], -1.0, 10, 0)
    with pytest.raises(ConfigError, match="positive integer"):
        dirichlet_around([0.5, 0.5], 1.0, 0, 0)
    with pytest.raises(MixtureError, match="min_weight"):
        dirichlet_around([0.5, 0.5], 1.0, 10, 0, min_weight=0.6)


@pytest.mark.parametrize("kind", ["grid", "dirichlet", "cover"])
def test_design_points_on_simplex(kind):
    points = design(3, 12, kind, 0)
    assert points.shape == (12, 3)
    assert_on_simplex(points)


def test_design_grid_two_domains_even():
    points = design(2, 5, "grid", 0)
    np.testing.assert_allclose(points[:, 0], [0.0, 0.25, 0.5, 0.75, 1.0])


def test_design_grid_full_lattice():
    points = design(3, 10, "grid", 0)  # 10 points = the lattice with step 1/3
    scaled = points * 3
    np.testing.assert_allclose(scaled, np.round(scaled), atol=1e-12)
    assert len({tuple(np.round(row, 9)) for row in points}) == 10


def test_design_grid_rejects_many_domains():
    with pytest.raises(ConfigError, match="cover"):
        design(4, 10, "grid", 0)


def test_design_cover_includes_vertices():
    points = design(5, 20, "cover", 0)
    np.testing.assert_array_equal(points[:5], np.eye(5))
    assert_on_simplex(points)


def test_design_cover_spreads_more_than_random():
    def min_distance(points):
        diff = points[:, None, :] - points[None, :, :]
        distance = np.linalg.norm(diff, axis=2)
        return distance[np.triu_indices(len(points), 1)].min()

    cover = design(4, 30, "cover", 0)
    random = design(4, 30, "dirichlet", 0)
    assert min_distance(cover) > 2 * min_distance(random)


def test_design_is_seeded():
    np.testing.assert_array_equal(design(4, 15, "cover", 3), design(4, 15, "cover", 3))


def test_design_unknown_kind_suggests_name():
    with pytest.raises(ConfigError, match="Did you mean 'cover'"):
        design(3, 5, "covr", 0)


def test_design_grid_names_setting():
    with pytest.raises(ConfigError, match="method.design=grid is only available .* use method.design=cover or method.design=dirichlet"):
        design(4, 10, "grid", 0, setting="method.design")


DOMAINS = ("legal", "prose", "code")


def test_mixture_mapping_fills_left_out_domains():
    mixture = mixture_from_setting({"code": 0.25, "legal": 0.75}, DOMAINS, name="m")

    assert mixture.tolist() == [0.75, 0.0, 0.25]


def test_mixture_list_and_mapping_agree():
    from_list = mixture_from_setting([0.5, 0.3, 0.2], DOMAINS, name="m")
    from_mapping = mixture_from_setting({"prose": 0.3, "code": 0.2, "legal": 0.5}, DOMAINS, name="m")

    assert from_list.tolist() == from_mapping.tolist()


@pytest.mark.parametrize("weight", ["abc", ".nan", None, True, [0.5]])
def test_mixture_mapping_rejects_non_number(weight):
    with pytest.raises(MixtureError) as raised:
        mixture_from_setting({"legal": weight, "prose": 1.0}, DOMAINS, name="fixed's mixture")

    message = str(raised.value)
    assert f"fixed's mixture gives domain 'legal' the weight {weight!r}" in message
    assert "which is not a number" in message


def test_mixture_mapping_nan_weight_is_named():
    with pytest.raises(MixtureError, match="NaN or infinite weight for legal. Give every domain a finite weight"):
        mixture_from_setting({"legal": float("nan"), "prose": 1.0}, DOMAINS, name="m")


def test_mixture_mapping_matches_numeric_domain_names_as_text():
    # YAML reads {2023: 0.25} with a number as the key; the domains are folder or column names, so text.
    mixture = mixture_from_setting({2023: 0.25, "2024": 0.75}, ("2023", "2024"), name="m")

    assert mixture.tolist() == [0.25, 0.75]
    with pytest.raises(MixtureError, match="names domain '2023' twice"):
        mixture_from_setting({2023: 0.25, "2023": 0.75}, ("2023", "2024"), name="m")


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("value", [[0, 0, 0], {}])
def test_mixture_without_positive_weight_says_so(value, normalize):
    # Normalizing cannot help here, so the message does not suggest it.
    with pytest.raises(MixtureError, match=r"has no positive weight. Give at least one domain") as raised:
        mixture_from_setting(value, DOMAINS, name="m", normalize=normalize, normalize_setting="m.normalize=true")

    assert "normalize" not in str(raised.value)


def test_mixture_mapping_suggests_close_domain():
    with pytest.raises(MixtureError) as raised:
        mixture_from_setting({"legal": 0.5, "prse": 0.5}, DOMAINS, name="m")

    message = str(raised.value)
    assert "unknown domain(s) 'prse' (did you mean 'prose'?)" in message
    assert "The domains are legal, prose, code." in message


def test_mixture_list_rejects_boolean():
    with pytest.raises(MixtureError, match="contains True, which is not a number"):
        mixture_from_setting([True, 0, 0], DOMAINS, name="m")


@pytest.mark.parametrize("value", ["0.5,0.5", 0.5])
def test_mixture_rejects_scalar_and_string(value):
    with pytest.raises(MixtureError, match="is not a list of numbers or a mapping"):
        mixture_from_setting(value, DOMAINS, name="m")
