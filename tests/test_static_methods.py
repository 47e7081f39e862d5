"""The static probing methods: grid, random_search, dml and regmix."""

import numpy as np
import pytest
from omegaconf import OmegaConf

from mixbench.commands import CONF_DIR, method_config
from mixbench.engine import run_method
from mixbench.errors import ConfigError
from mixbench.method import MethodContext, Observation, build_method
from mixbench.runs import RunStore
from mixbench.sim.setting import SimSetting

PROBING = ("grid", "random_search", "dml", "regmix")


def make_context(m: int, seed: int = 0, tokens: float = 1e7, steps: int = 100, tokens_per_step: int = 1000) -> MethodContext:
    names = tuple(f"d{j}" for j in range(m))
    return MethodContext(
        domains=names,
        eval_sets=names,
        train_tokens=np.full(m, tokens),
        total_steps=steps,
        tokens_per_step=tokens_per_step,
        seed=seed,
    )


def observe(mixtures, losses) -> list[Observation]:
    return [Observation(np.asarray(p, dtype=float), np.asarray(l, dtype=float)) for p, l in zip(mixtures, losses)]


def sim_experiment() -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONF_DIR / "experiment" / "sim.yaml"))


# ---------------------------------------------------------------------------------------------
# grid and random_search
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m, resolution, size", [(2, 4, 5), (3, 4, 15), (3, 2, 6), (2, 10, 11)])
def test_grid_lattice_size(m, resolution, size):
    probes = build_method({"name": "grid", "resolution": resolution}).explore(make_context(m))
    mixtures = np.stack([probe.mixture for probe in probes])
    assert mixtures.shape == (size, m)
    np.testing.assert_allclose(mixtures.sum(axis=1), 1.0)
    steps = np.round(mixtures * resolution, 9)
    assert np.all(steps == np.round(steps))
    assert len({tuple(row) for row in steps}) == size


def test_grid_thins_lattice_keeping_vertices():
    mixtures = np.stack([p.mixture for p in build_method({"name": "grid", "probes": 6}).explore(make_context(3))])
    assert mixtures.shape == (6, 3)
    for vertex in np.eye(3):
        assert any(np.allclose(row, vertex) for row in mixtures)


def test_grid_rejects_more_than_three_domains():
    with pytest.raises(ConfigError, match=r"m=4.*random_search"):
        build_method(method_config("grid")).check(make_context(4))


def test_grid_rejects_too_many_probes():
    with pytest.raises(ConfigError, match="has 15 points"):
        build_method({"name": "grid", "probes": 20}).check(make_context(3))


@pytest.mark.parametrize("count", [1, 5, 12])
def test_random_search_probe_count(count):
    probes = build_method({"name": "random_search", "probes": count}).explore(make_context(4))
    assert len(probes) == count
    mixtures = np.stack([probe.mixture for probe in probes])
    np.testing.assert_allclose(mixtures.sum(axis=1), 1.0)


def test_random_search_seed_changes_probes():
    method = build_method(method_config("random_search"))
    first = np.stack([p.mixture for p in method.explore(make_context(4, seed=0))])
    again = np.stack([p.mixture for p in method.explore(make_context(4, seed=0))])
    other = np.stack([p.mixture for p in method.explore(make_context(4, seed=1))])
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


@pytest.mark.parametrize("name", ["grid", "random_search"])
def test_best_probe_is_picked(name):
    context = make_context(3)
    mixtures = [[0.6, 0.2, 0.2], [0.1, 0.3, 0.6], [0.3, 0.4, 0.3], [1.0, 0.0, 0.0]]
    # Probe 2 has the lowest mean loss, though not the lowest loss on every evaluation set.
    losses = [[3.0, 3.1, 3.2], [2.0, 3.5, 3.6], [2.5, 2.6, 2.7], [4.0, 4.0, 4.0]]
    method = build_method(method_config(name))
    assert method.fit(observe(mixtures, losses), context) is method
    assert method.best_index_ == 2
    np.testing.assert_array_equal(method.optimize(context), mixtures[2])


# ---------------------------------------------------------------------------------------------
# Probe settings shared by the four methods
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PROBING)
def test_probe_specs_carry_model_and_steps(name):
    context = make_context(3, steps=200)
    method = build_method(method_config(name, {"probe_steps": 0.25, "probe_model": {"d_model": 16, "n_layer": 1}}))
    probes = method.explore(context)
    assert probes
    for probe in probes:
        assert probe.steps == 50
        assert probe.model == {"d_model": 16, "n_layer": 1}
        assert probe.role == "probe"
        assert probe.mixture.shape == (3,)


@pytest.mark.parametrize("name", PROBING)
def test_probe_defaults_are_short_and_small(name):
    probes = build_method(method_config(name)).explore(make_context(3, steps=300))
    assert probes[0].steps is not None and probes[0].steps < 300
    assert probes[0].model["d_model"] == 64


def test_full_length_probes_of_main_model():
    probes = build_method(method_config("dml", {"probe_steps": None, "probe_model": None})).explore(make_context(3))
    assert probes[0].steps is None
    assert probes[0].model == {}


@pytest.mark.parametrize(
    "setting, message",
    [({"probe_steps": 1.5}, "probe_steps=1.5"), ({"probe_steps": 0}, "probe_steps=0"),
     ({"probe_model": "no_such_model"}, "no_such_model"), ({"probe_model": 3}, "probe_model=3")],
)
def test_invalid_probe_settings_are_rejected(setting, message):
    for name in PROBING:
        with pytest.raises(ConfigError, match=message):
            build_method(method_config(name, setting)).check(make_context(3))


@pytest.mark.parametrize("name", PROBING)
def test_wrong_domain_count_in_observation(name):
    method = build_method(method_config(name))
    observations = observe([[0.5, 0.5]] * 8, [[3.0, 3.0, 3.0]] * 8)
    with pytest.raises(ConfigError, match=r"\[0.5, 0.5\] with 2 weights.*3 domains"):
        method.fit(observations, make_context(3))


# ---------------------------------------------------------------------------------------------
# dml and regmix: laws, caps and errors
# ---------------------------------------------------------------------------------------------


def loglinear_world(P: np.ndarray) -> np.ndarray:
    """Losses of a known log-linear law whose optimum is interior and non-uniform."""
    t = np.array([[-1.5, 0.3, 0.2], [0.4, -1.0, 0.1], [0.2, 0.3, -0.5]])
    return 2.0 + np.exp(P @ t.T)


@pytest.mark.parametrize("name, count, needed", [("dml", 3, 4), ("regmix", 3, 4)])
def test_too_few_probes_names_minimum(name, count, needed):
    method = build_method(method_config(name, {"probes": count}))
    with pytest.raises(ConfigError, match=rf"probes={count}.*at least {needed}"):
        method.check(make_context(3))
    P = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    with pytest.raises(ConfigError, match=rf"got 3 probe runs.*at least {needed}.*probes={needed}"):
        method.fit(observe(P, loglinear_world(P)), make_context(3))


def test_dml_grid_design_names_its_setting():
    method = build_method(method_config("dml", {"design": "grid"}))
    method.check(make_context(3))
    with pytest.raises(ConfigError, match=r"method.design=grid is only available for m <= 3 domains \(this setting has "
                                          r"m=5\).* use method.design=cover or method.design=dirichlet"):
        method.check(make_context(5))


def test_dml_default_probe_count_is_twice_m():
    assert len(build_method(method_config("dml")).explore(make_context(5))) == 10


@pytest.mark.parametrize("name", ["dml", "regmix"])
def test_fit_recovers_loglinear_optimum(name):
    from scipy.optimize import minimize

    context = make_context(3)
    method = build_method(method_config(name, {"probes": 12}))
    P = np.stack([probe.mixture for probe in method.explore(context)])
    assert method.fit(observe(P, loglinear_world(P)), context) is method
    chosen = method.optimize(context)
    mean_loss = lambda p: float(loglinear_world(np.abs(p)[None, :] / np.abs(p).sum()).mean())
    best = minimize(mean_loss, np.full(3, 1 / 3), method="Nelder-Mead").x
    best = np.abs(best) / np.abs(best).sum()
    assert mean_loss(chosen) - mean_loss(best) < 0.02 * (mean_loss(np.full(3, 1 / 3)) - mean_loss(best))
    assert method.predicted_loss_.shape == (3,)
    assert hasattr(method, "law_")


@pytest.mark.parametrize("name", ["dml", "regmix"])
def test_optimize_respects_epoch_caps(name):
    # The final run reads 1e4 tokens; domain 0 holds 100, so 15 epochs cap its weight at 0.15.
    context = MethodContext(("a", "b", "c"), ("a", "b", "c"), np.array([100.0, 1e5, 1e5]), 10, 1000)
    method = build_method(method_config(name, {"probes": 12}))
    P = np.stack([probe.mixture for probe in method.explore(context)])
    method.fit(observe(P, loglinear_world(P)), context)
    chosen = method.optimize(context)
    assert chosen[0] <= 0.15 + 1e-9
    assert chosen.sum() == pytest.approx(1.0)
    if name == "regmix":
        assert np.all(P[:, 0] <= 0.15 + 1e-9)


@pytest.mark.parametrize("name", ["dml", "regmix"])
def test_empty_capped_simplex_is_rejected(name):
    context = make_context(3, tokens=100.0, steps=100, tokens_per_step=1000)
    with pytest.raises(ConfigError, match=r"max_epochs=15 leaves no valid mixture.*at least 333"):
        build_method(method_config(name)).check(context)


def test_regmix_probes_follow_tempered_prior():
    context = MethodContext(("a", "b"), ("a", "b"), np.array([1e6, 1e8]), 100, 1000)
    method = build_method(method_config("regmix", {"probes": 400}))
    P = np.stack([probe.mixture for probe in method.explore(context)])
    # The prior is proportional to sqrt(tokens): 1/11 and 10/11.
    assert P[:, 0].mean() == pytest.approx(1 / 11, abs=0.03)
    assert np.all((P == 0) | (P >= 2e-4))


def test_regmix_search_sizes_are_configurable():
    context = make_context(3)
    method = build_method(method_config("regmix", {"probes": 12, "n_samples": 500, "top_k": 5}))
    P = np.stack([probe.mixture for probe in method.explore(context)])
    method.fit(observe(P, loglinear_world(P)), context)
    assert method.optimize(context).sum() == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="top_k=600 exceeds n_samples=500"):
        build_method(method_config("regmix", {"n_samples": 500, "top_k": 600})).check(context)


# ---------------------------------------------------------------------------------------------
# End to end: the simulator and a tiny real corpus
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, bound, max_probes", [("dml", 0.05, 10), ("regmix", 0.10, None)])
def test_sim_regret_over_five_seeds(tmp_path, name, bound, max_probes):
    experiment = sim_experiment()
    setting = SimSetting(experiment["sim"])
    config = method_config(name, experiment["experiment"]["method_overrides"].get(name))
    store = RunStore(tmp_path)
    regrets = []
    for seed in range(5):
        result = run_method(config, setting, store, seed)
        assert result.final["status"] == "complete"
        if max_probes is not None:
            assert len(result.extra) <= max_probes
        regrets.append(result.final["regret"])
    assert np.mean(regrets) <= bound, f"{name} regrets {np.round(regrets, 3).tolist()}"


@pytest.mark.parametrize("name", ["dml", "regmix"])
def test_real_corpus_probes_then_final(tiny_setting, tmp_path, name):
    # Five probe runs of 3 steps each (probe_steps 0.25 of 12) with a smaller model.
    config = method_config(name, {"probes": 5, "probe_model": {"d_model": 16, "d_ff": 32}})
    store = RunStore(tmp_path)
    result = run_method(config, tiny_setting, store, 0)
    assert len(result.extra) == 5
    for record in result.extra:
        assert record["status"] == "complete"
        assert record["role"] == "probe"
        assert store.record(record["id"])["compute"]["train_tokens"] == 3 * 8 * 32
    assert result.final["status"] == "complete"
    mixture = np.asarray(result.final["final_mixture"])
    assert mixture.shape == (3,)
    assert np.all(mixture >= 0)
    assert mixture.sum() == pytest.approx(1.0)
