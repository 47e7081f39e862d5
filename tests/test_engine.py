"""The engine's handling of proxy runs: the retrain uses the proxy's mixture averaged over every step."""

import numpy as np
import pytest

from mixbench.engine import run_method
from mixbench.method import OnlineMethod, register, unregister
from mixbench.runs import RunStore
from mixbench.sim.setting import SimSetting

from test_conformance import SIM


class SwitchingProxy(OnlineMethod):
    """A proxy whose step hook puts all weight on the first domain for 6 steps, then on the second."""

    name = "test_switching_proxy"
    trains_proxy = True

    def __init__(self, switch_step: int = 6):
        self.switch_step = switch_step

    @property
    def round_steps(self) -> int:
        return 10_000

    def optimize(self, context):
        return np.full(context.m, 1.0 / context.m)

    def step_hook(self, context):
        return self

    requires = frozenset()

    def update(self, stats, mixture):
        weights = np.zeros(len(mixture))
        weights[0 if stats.step < self.switch_step else 1] = 1.0
        return weights


@pytest.fixture
def switching_proxy():
    register(SwitchingProxy)
    yield SwitchingProxy
    unregister(SwitchingProxy.name)


def test_retrain_uses_step_averaged_proxy_mixture(switching_proxy, tmp_path):
    setting = SimSetting(dict(SIM))
    result = run_method({"name": "test_switching_proxy", "switch_step": 6}, setting, RunStore(tmp_path), seed=0)
    proxy = next(run for run in result.extra if run["role"] == "proxy")
    # 24 steps: 6 on the first domain, 18 on the second.
    np.testing.assert_allclose(proxy["mean_mixture"], [0.25, 0.75, 0.0])
    np.testing.assert_allclose(result.final["final_mixture"], [0.25, 0.75, 0.0])
    assert result.final["role"] == "final"


def test_online_trajectory_records_steps_between_validations(switching_proxy, tmp_path):
    # Validation only at the end, yet the mixture that moved at step 6 is recorded where it moved.
    setting = SimSetting(dict(SIM, eval_every=0))
    result = run_method({"name": "test_switching_proxy", "switch_step": 6}, setting, RunStore(tmp_path), seed=0)
    proxy = next(run for run in result.extra if run["role"] == "proxy")
    trajectory = proxy["trajectory"]
    assert [entry["step"] for entry in trajectory] == list(range(1, 25))
    assert [int(np.argmax(entry["mixture"])) for entry in trajectory] == [0] * 6 + [1] * 18


def test_skill_it_rounds_shorter_than_validation_interval(tmp_path):
    # Rounds of 4 steps with validation every 12: later rounds start before any periodic validation.
    setting = SimSetting(dict(SIM, eval_every=12))
    config = {"name": "skill_it", "update_steps": 4, "graph_steps_fraction": 0.5}
    result = run_method(config, setting, RunStore(tmp_path), seed=0)
    assert result.final["status"] == "complete"
    assert len([entry for entry in result.final["rounds"] if entry["A"] is not None]) >= 2


def test_few_rounds_warn(tmp_path, caplog):
    # 24 steps in rounds of 10 give 3 rounds, rounds of 12 only 2; a per-step method is not warned.
    setting = SimSetting(dict(SIM))
    config = {"name": "aioli", "update_steps": 10, "lp_rounds": 1, "lp_steps": 2}
    with caplog.at_level("WARNING", logger="mixbench.engine"):
        run_method(config, setting, RunStore(tmp_path / "ten"), seed=0)
        run_method({"name": "odm"}, setting, RunStore(tmp_path / "odm"), seed=0)
    assert "round(s)" not in caplog.text

    with caplog.at_level("WARNING", logger="mixbench.engine"):
        run_method(dict(config, update_steps=12), setting, RunStore(tmp_path / "twelve"), seed=0)
    assert "method aioli changes its mixture every 12 steps, so this run of 24 steps has only 2 round(s)" in caplog.text
