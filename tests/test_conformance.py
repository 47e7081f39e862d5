"""Every registered method, static and online, through explore, fit and optimize on both backends."""

import numpy as np
import pytest

from mixbench.commands import method_config
from mixbench.engine import run_method
from mixbench.method import available_methods, build_method, get_method_class
from mixbench.runs import RunStore
from mixbench.sim.setting import SimSetting

# Settings that fit the short runs below; every other setting is the method's config default.
SHORT_RUNS = {
    "fixed": {"mixture": [0.5, 0.3, 0.2]},
    "grid": {"resolution": 2},
    "random_search": {"probes": 3},
    "regmix": {"probes": 6, "n_samples": 2000, "top_k": 16},
    "skill_it": {"update_steps": 4, "graph_steps_fraction": 0.5},
    "aioli": {"update_steps": 6, "lp_rounds": 1, "lp_steps": 1},
    "doge": {"lr": 3e-3},
}


def short_run_settings(name: str, domains) -> dict:
    """Return the settings of a method's short test runs: its own `test_settings`, then SHORT_RUNS."""
    return {**get_method_class(name).test_settings(tuple(domains)), **SHORT_RUNS.get(name, {})}


SIM = {
    "domains": 3, "world_seed": 0, "prerequisites": False, "asymmetry": 0.3, "interference": 0.15, "step_size": 0.05,
    "steps": 24, "tokens_per_step": 1024, "eval_noise": 0.001, "train_noise": 0.0, "warmup_steps": 2, "min_lr_ratio": 0.1,
    "sampling": "largest_remainder", "eval_every": 4, "checkpoint_every": 0,
}


def _check_contract(result, domains):
    final = result.final
    assert final["status"] == "complete", final.get("error")
    mixtures = [final["final_mixture"]] + [point["mixture"] for point in final["trajectory"]]
    for run in result.extra:
        mixtures += [point["mixture"] for point in run.get("trajectory", [])]
    for mixture in mixtures:
        assert len(mixture) == len(domains)
        assert min(mixture) >= 0
        assert sum(mixture) == pytest.approx(1.0, abs=1e-9)
    assert np.isfinite(final["test_losses"]).all()
    assert final["compute"]["train_tokens"] > 0
    assert [row["step"] for row in final["metrics"]] == sorted(row["step"] for row in final["metrics"])


def _check_fit_contract(cls, monkeypatch):
    """Make every call of `cls.fit` check the estimator contract: it returns self, and what it learns ends in _."""
    original = cls.fit

    def fit(self, observations, context):
        before = set(vars(self))
        returned = original(self, observations, context)
        assert returned is self, f"{cls.__name__}.fit returned {returned!r}, not self"
        learned = sorted(set(vars(self)) - before)
        assert all(key.endswith("_") for key in learned), f"{cls.__name__}.fit stored {learned}; learned state ends in _"
        return returned

    monkeypatch.setattr(cls, "fit", fit)


def _run_twice(name, setting, tmp_path, monkeypatch):
    _check_fit_contract(get_method_class(name), monkeypatch)
    config = method_config(name, short_run_settings(name, setting.domains))
    before = build_method(config).get_params()
    first = run_method(config, setting, RunStore(tmp_path / "first"), seed=0)
    second = run_method(config, setting, RunStore(tmp_path / "second"), seed=0)
    # A fresh store retrains everything: the same config and seed must give the same result,
    # so no state leaks from one run of a method into the next.
    assert second.final["test_losses"] == first.final["test_losses"]
    assert second.final["final_mixture"] == first.final["final_mixture"]
    assert first.params == before
    return first


@pytest.mark.parametrize("name", available_methods())
def test_method_conforms_on_simulator(name, tmp_path, monkeypatch):
    setting = SimSetting(dict(SIM))
    result = _run_twice(name, setting, tmp_path, monkeypatch)
    _check_contract(result, setting.domains)
    assert "regret" in result.final


@pytest.mark.parametrize("name", available_methods())
def test_method_conforms_on_tiny_model(name, tiny_setting, tmp_path, monkeypatch):
    if get_method_class(name).name == "grid" and len(tiny_setting.domains) > 3:
        pytest.skip("grid supports at most 3 domains")
    result = _run_twice(name, tiny_setting, tmp_path, monkeypatch)
    _check_contract(result, tiny_setting.domains)
    assert all(value > 0 for value in result.final["test_bits_per_byte"])
    # Probe and single-domain runs skip the test split: methods read their validation losses only.
    for run in result.extra:
        if run["role"] in ("probe", "single_domain"):
            assert run["test_losses"] is None
            assert run["spec"]["train"]["test_pass"] is False
            assert np.isfinite(run["val_losses"]).all()


def test_fit_contract_check_catches_a_violation(tmp_path, monkeypatch):
    from mixbench.method import OnlineMethod, register, unregister

    @register
    class Forgetful(OnlineMethod):
        name = "test_forgetful"

        @property
        def round_steps(self):
            return 8

        def fit(self, observations, context):
            self.losses = [observation.losses for observation in observations]

        def optimize(self, context):
            return np.full(context.m, 1.0 / context.m)

    try:
        _check_fit_contract(Forgetful, monkeypatch)
        with pytest.raises(AssertionError, match="Forgetful.fit returned None, not self"):
            run_method({"name": "test_forgetful"}, SimSetting(dict(SIM)), RunStore(tmp_path), seed=0)
    finally:
        unregister("test_forgetful")
