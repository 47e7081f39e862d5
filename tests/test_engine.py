"""The engine's handling of proxy runs: the retrain uses the proxy's mixture averaged over every step."""

import json

import numpy as np
import pytest

from mixbench.engine import run_method
from mixbench.method import OnlineMethod, Probe, StaticMethod, register, unregister
from mixbench.runs import RunStore
from mixbench.setting import model_file_settings
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

    # Skill-It's null update_steps means its published interval, 500 steps at fewer than 7 domains.
    caplog.clear()
    longer = SimSetting(dict(SIM, steps=600))
    with caplog.at_level("WARNING", logger="mixbench.engine"):
        run_method({"name": "skill_it", "graph_steps_fraction": 0.1}, longer, RunStore(tmp_path / "skill_it"), seed=0)
    assert "method skill_it changes its mixture every 500 steps, so this run of 600 steps has only 2 round(s)" in caplog.text


class ShortProbes(StaticMethod):
    """A static method whose probes train a third of the run, with model and training overrides it is given."""

    name = "test_short_probes"

    def __init__(self, model=None, train=None):
        self.model = model
        self.train = train

    def explore(self, context):
        steps = context.total_steps // 3
        return [Probe(mixture=row, steps=steps, model=self.model or {}, train=self.train or {}) for row in np.eye(context.m)]

    def fit(self, observations, context):
        self.losses_ = np.array([obs.losses.mean() for obs in observations])
        return self

    def optimize(self, context):
        return np.eye(context.m)[int(np.argmin(self.losses_))]


@pytest.fixture
def short_probes():
    register(ShortProbes)
    yield ShortProbes
    unregister(ShortProbes.name)


def test_sim_short_probe_keeps_warmup_fraction(short_probes, tmp_path):
    # 8 of 24 steps: the main run's 2 warmup steps become 1, as on the corpus.
    result = run_method({"name": short_probes.name}, SimSetting(dict(SIM)), RunStore(tmp_path), seed=0)
    probes = [run for run in result.extra if run["role"] == "probe"]
    assert len(probes) == 3
    specs = [json.loads((tmp_path / "runs" / run["id"] / "spec.json").read_text()) for run in probes]
    assert [spec["train"]["warmup_steps"] for spec in specs] == [1, 1, 1]
    assert [spec["train"]["steps"] for spec in specs] == [8, 8, 8]
    # A probe shorter than the main run's warmup (100 of 300 steps) trains with its share of the warmup.
    setting = SimSetting(dict(SIM, steps=300, warmup_steps=100))
    result = run_method({"name": short_probes.name}, setting, RunStore(tmp_path / "long"), seed=0)
    assert result.final["status"] == "complete"


@pytest.mark.parametrize("probe, message", [
    ({"train": {"stepz": 3}}, r"probe run 1 of 3: a probe's train sets stepz, which is not a training setting"),
    ({"model": 3}, r"probe run 1 of 3: a probe's model=3 is invalid"),
])
def test_probe_settings_checked_before_training(short_probes, tmp_path, probe, message):
    from mixbench.errors import ConfigError

    store = RunStore(tmp_path)
    with pytest.raises(ConfigError, match=rf"method {short_probes.name}: {message}"):
        run_method({"name": short_probes.name, **probe}, SimSetting(dict(SIM)), store, seed=0)
    assert not list((tmp_path / "runs").glob("*"))


def test_corpus_probe_model_checked(short_probes, tiny_setting, tmp_path):
    from mixbench.errors import ConfigError

    # A key that is not a model setting would be ignored, and the probe would train the main model.
    with pytest.raises(ConfigError, match=r"a probe's model sets name, which is not a model setting; .* give its name, "
                                          r"as in model='probe'"):
        run_method({"name": short_probes.name, "model": {"name": "probe"}}, tiny_setting, RunStore(tmp_path), seed=0)
    assert not list((tmp_path / "runs").glob("*"))
    # The name of a conf/model file gives that file's settings.
    spec = tiny_setting.spec(0, probe=Probe(mixture=np.full(3, 1 / 3), steps=4, model="probe"), role="probe")
    assert spec.model["d_model"] == model_file_settings("probe")["d_model"]
    assert spec.model["d_model"] != tiny_setting.model["d_model"]


class HookWithoutUpdate(OnlineMethod):
    """An online method that is its own step hook but forgot `update`."""

    name = "test_hook_without_update"

    @property
    def round_steps(self):
        return 10_000

    def optimize(self, context):
        return np.full(context.m, 1.0 / context.m)

    def step_hook(self, context):
        return self


def test_step_hook_without_update_is_named(tmp_path):
    from mixbench.errors import ConfigError

    register(HookWithoutUpdate)
    try:
        with pytest.raises(ConfigError, match=r"method 'test_hook_without_update': step_hook returned HookWithoutUpdate, "
                                              r"which has no update\(stats, mixture\) method"):
            run_method({"name": HookWithoutUpdate.name}, SimSetting(dict(SIM)), RunStore(tmp_path), seed=0)
    finally:
        unregister(HookWithoutUpdate.name)
