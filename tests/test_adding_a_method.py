"""A method defined outside methods/ runs through `mixbench run` and the benchmark table."""

import csv
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import TINY_MODEL, TINY_TRAIN

from mixbench.engine import run_method
from mixbench.errors import ConfigError
from mixbench.method import OnlineMethod, StaticMethod, register, unregister
from mixbench.runs import RunStore

PLUGIN = textwrap.dedent(
    '''
    import numpy as np

    from mixbench.errors import ConfigError
    from mixbench.method import StaticMethod, register
    from mixbench.simplex import proportional


    @register
    class Temperature(StaticMethod):
        """Temperature sampling: p_j proportional to (training tokens of j) ** (1 / temperature)."""

        name = "temperature"

        def __init__(self, temperature: float = 2.0):
            self.temperature = temperature

        def check(self, context):
            if not self.temperature > 0:
                raise ConfigError(f"method.temperature={self.temperature} is invalid; use a positive number.")

        def optimize(self, context):
            return proportional(context.train_tokens ** (1.0 / self.temperature))
    '''
)


def _overrides(text_folders, cache):
    items = ["data=folders", f"data.path={text_folders}", f"data.cache_dir={cache}", "data.val_fraction=0.15", "data.test_fraction=0.15"]
    items += [f"model.{key}={value}" for key, value in TINY_MODEL.items()]
    items += [f"train.{key}={str(value).lower() if isinstance(value, bool) else value}" for key, value in TINY_TRAIN.items()]
    return items


def _mixbench(args, cwd):
    environment = dict(os.environ, PYTHONPATH=str(cwd), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "mixbench", *args], cwd=cwd, capture_output=True, text=True, env=environment, timeout=600)


def test_plugin_method_runs_and_appears_in_table(text_folders, tmp_path):
    (tmp_path / "my_methods.py").write_text(PLUGIN)
    (tmp_path / "conf" / "method").mkdir(parents=True)
    (tmp_path / "conf" / "method" / "temperature.yaml").write_text(
        "# Temperature sampling with T = 4.\n# Launch: mixbench run method=temperature\nname: temperature\ntemperature: 4.0\n"
    )
    common = _overrides(text_folders, tmp_path / "cache")

    run = _mixbench(["run", *common, "plugins=[my_methods]", "method=temperature", f"hydra.searchpath=[file://{tmp_path / 'conf'}]"], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "temperature seed 0: average test perplexity" in run.stderr

    # The benchmark finds the plugin's config file on the same search path as `run`.
    bench = _mixbench(
        ["benchmark", *common, "plugins=[my_methods]", "experiment.methods=[stratified,temperature]",
         "hydra.searchpath=[file://conf]"],
        tmp_path,
    )
    assert bench.returncode == 0, bench.stderr[-3000:]
    saved = json.loads((tmp_path / "results" / "default" / "methods" / "temperature-seed0.json").read_text())
    assert saved["params"] == {"temperature": 4.0}
    with open(tmp_path / "results" / "default" / "table.csv") as handle:
        rows = {row["method"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"stratified", "temperature"}
    assert float(rows["temperature"]["avg_test_ppl"]) > 1
    assert rows["temperature"]["delta_vs_stratified"] != ""


def test_missing_plugin_is_a_clear_error(text_folders, tmp_path):
    result = _mixbench(["run", *_overrides(text_folders, tmp_path / "cache"), "plugins=[no_such_module]"], tmp_path)
    assert result.returncode == 2
    assert "plugin module 'no_such_module' could not be imported" in result.stderr


SIM_RUN = ["experiment=sim", "sim.steps=40", "sim.eval_every=20", "sim.warmup_steps=4"]


def _plugin_folder(tmp_path, module, source, configs):
    """Write `module`.py and conf/method/NAME.yaml files into tmp_path, as a user's plugin folder."""
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    (tmp_path / "conf" / "method").mkdir(parents=True, exist_ok=True)
    for name, text in configs.items():
        (tmp_path / "conf" / "method" / f"{name}.yaml").write_text(text)


def test_plugins_without_brackets_is_one_module(tmp_path):
    _plugin_folder(tmp_path, "my_methods", PLUGIN, {"temperature": "name: temperature\ntemperature: 4.0\n"})
    result = _mixbench(["run", *SIM_RUN, "plugins=my_methods", "method=temperature", "hydra.searchpath=[file://conf]"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "temperature seed 0: final mean loss" in result.stderr


def test_plugin_modules_setting_forms():
    from mixbench.commands import plugin_modules
    from mixbench.errors import ConfigError

    assert plugin_modules("my_methods") == ["my_methods"]
    assert plugin_modules(["a", "b.c"]) == ["a", "b.c"]
    assert plugin_modules(None) == []
    assert plugin_modules("") == []
    with pytest.raises(ConfigError, match=r"plugins=\[1\] contains \[1\], which are not module names"):
        plugin_modules([1])


BROKEN_IMPORT = '''
import numpy as np
from mixbench.method import StaticMethd, register
'''

STORED_UNDER_OTHER_NAME = '''
import numpy as np
from mixbench.method import StaticMethod, register


@register
class Upweight(StaticMethod):
    """Puts `factor` times the weight of each other domain on the first domain."""

    name = "upweight"

    def __init__(self, factor: float = 2.0):
        self._factor = factor

    def optimize(self, context):
        weights = np.ones(context.m)
        weights[0] = self._factor
        return weights / weights.sum()
'''

MISSPELT_OPTIMIZE = '''
import numpy as np
from mixbench.method import StaticMethod, register


@register
class Upweight(StaticMethod):
    """Spells optimize the British way, so the base class's optimize is left in place."""

    name = "upweight"

    def optimise(self, context):
        return np.full(context.m, 1.0 / context.m)
'''

NO_ROUND_STEPS = '''
import numpy as np
from mixbench.method import OnlineMethod, register


@register
class Rounds(OnlineMethod):
    """An online method that forgot to say how long its rounds are."""

    name = "rounds"

    def optimize(self, context):
        return np.full(context.m, 1.0 / context.m)
'''

ROUND_STEPS_SETTING = '''
import numpy as np
from mixbench.method import OnlineMethod, register


@register
class Rounds(OnlineMethod):
    """An online method whose setting has the name of the base class's round_steps property."""

    name = "rounds"

    def __init__(self, round_steps: int = 10):
        self.round_steps = round_steps

    def optimize(self, context):
        return np.full(context.m, 1.0 / context.m)
'''


@pytest.mark.parametrize(
    ("source", "method", "config", "expected"),
    [
        (BROKEN_IMPORT, "upweight", "name: upweight\n",
         ["plugin module 'my_methods' was found, but importing it failed at {folder}/my_methods.py, line 3: "
          "ImportError: cannot import name 'StaticMethd'"]),
        (STORED_UNDER_OTHER_NAME, "upweight", "name: upweight\nfactor: 3.0\n",
         ["method 'upweight' (my_methods.Upweight) has no attribute 'factor' after __init__, which stored: _factor.",
          "must store each setting under its own name (self.factor = factor)"]),
        (MISSPELT_OPTIMIZE, "upweight", "name: upweight\n",
         ["method 'upweight' (my_methods.Upweight) does not override optimize(self, context)",
          "(the class defines optimise: rename it to optimize)"]),
        (NO_ROUND_STEPS, "rounds", "name: rounds\n", ["method 'rounds' (my_methods.Rounds) does not override round_steps"]),
        (ROUND_STEPS_SETTING, "rounds", "name: rounds\nround_steps: 10\n",
         ["has a setting 'round_steps', which is the name of OnlineMethod's property round_steps",
          "Rename the setting in __init__ and in the method's config file (for example steps_per_round) and return it from round_steps."]),
        (PLUGIN, "temperature", "temperature: 4.0\n",
         ["the config file {folder}/conf/method/temperature.yaml has no `name:` key", "add the line `name: temperature`"]),
    ],
    ids=["import_error_inside", "setting_under_other_name", "optimise", "no_round_steps", "round_steps_setting", "config_without_name"],
)
def test_bad_plugin_rejected_before_training(tmp_path, source, method, config, expected):
    _plugin_folder(tmp_path, "my_methods", source, {method: config})
    result = _mixbench(["run", *SIM_RUN, "plugins=[my_methods]", f"method={method}", "hydra.searchpath=[file://conf]"], tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    for fragment in expected:
        assert fragment.format(folder=tmp_path) in result.stderr
    assert "Traceback" not in result.stderr
    assert "PYTHONPATH" not in result.stderr
    assert not (tmp_path / "results").exists()


def test_benchmark_names_config_file_without_name(tmp_path):
    _plugin_folder(tmp_path, "my_methods", PLUGIN, {"temperature": "temperature: 4.0\n"})
    arguments = ["benchmark", *SIM_RUN, "plugins=[my_methods]", "experiment.methods=[temperature]", "hydra.searchpath=[file://conf]"]
    result = _mixbench(arguments, tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"the config file {tmp_path}/conf/method/temperature.yaml has no `name:` key" in result.stderr


def test_plugin_import_errors_say_where(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from mixbench.commands import load_plugins
    from mixbench.errors import ConfigError

    (tmp_path / "needs_dependency.py").write_text("import numpy\nimport no_such_dependency_of_the_plugin\n")
    (tmp_path / "package_of_methods").mkdir()
    (tmp_path / "package_of_methods" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))

    # A module that the plugin imports is missing: the plugin was found, and its line is named.
    with pytest.raises(ConfigError) as raised:
        load_plugins(OmegaConf.create({"plugins": ["needs_dependency"]}))
    message = str(raised.value)
    assert f"importing it failed at {tmp_path}/needs_dependency.py, line 2: ModuleNotFoundError" in message
    assert "PYTHONPATH" not in message

    # The plugin or its package is missing: the folder belongs on PYTHONPATH.
    for module in ("package_of_methods.missing", "missing_package.methods"):
        with pytest.raises(ConfigError, match=rf"plugin module '{module}' could not be imported .*PYTHONPATH"):
            load_plugins(OmegaConf.create({"plugins": [module]}))

    # A file path is not a module name.
    with pytest.raises(ConfigError, match=r"names a file, but plugins takes module names.* Pass plugins=\[needs_dependency\] with"):
        load_plugins(OmegaConf.create({"plugins": ["./needs_dependency.py"]}))


def test_register_rejects_classes_that_would_fail_later():
    from mixbench.backend import DOMAIN_GRADIENTS, REFERENCE_LOSS
    from mixbench.errors import ConfigError
    from mixbench.method import OnlineMethod, StaticMethod, available_methods, register

    class NoOptimize(StaticMethod):
        name = "test_no_optimize"

    with pytest.raises(ConfigError, match=r"method 'test_no_optimize' \(.*NoOptimize\) does not override optimize\(self, context\)"):
        register(NoOptimize)

    class NothingOnline(OnlineMethod):
        name = "test_nothing_online"

    with pytest.raises(ConfigError, match=r"does not override optimize\(self, context\), .* and round_steps, .*\. Define them"):
        register(NothingOnline)

    class KindSetting(StaticMethod):
        name = "test_kind_setting"

        def __init__(self, kind: str = "a"):
            self.kind = kind

        def optimize(self, context):
            return np.full(context.m, 1.0 / context.m)

    with pytest.raises(ConfigError, match=r"has a setting 'kind', which is the name of StaticMethod's class attribute kind"):
        register(KindSetting)

    class CheckSetting(KindSetting):
        name = "test_check_setting"

        def __init__(self, check: bool = True):
            self.check = check

    with pytest.raises(ConfigError, match=r"has a setting 'check', which is the name of MixingMethod's method check"):
        register(CheckSetting)

    def hook_method(requires):
        class Hooked(OnlineMethod):
            name = "test_hooked"

            @property
            def round_steps(self):
                return 10

            def optimize(self, context):
                return np.full(context.m, 1.0 / context.m)

        Hooked.requires = requires
        return Hooked

    # A string would be read as a set of its letters.
    with pytest.raises(ConfigError, match=r"has requires='domain_gradients'; give a frozenset of the statistics"):
        register(hook_method(DOMAIN_GRADIENTS))
    with pytest.raises(ConfigError, match=r"requires gradient_norms, which no backend provides; the known statistics are"):
        register(hook_method(frozenset({"gradient_norms"})))
    with pytest.raises(ConfigError, match=r"requires both reference_loss and domain_gradients"):
        register(hook_method(frozenset({REFERENCE_LOSS, DOMAIN_GRADIENTS})))

    registered = available_methods()
    for name in ("test_no_optimize", "test_nothing_online", "test_kind_setting", "test_check_setting", "test_hooked"):
        assert name not in registered


def test_base_class_placeholders_name_the_class():
    from mixbench.method import MethodContext, OnlineMethod

    class Bare(OnlineMethod):
        pass

    context = MethodContext(domains=("a", "b"), eval_sets=("a", "b"), train_tokens=np.ones(2), total_steps=10, tokens_per_step=8)
    with pytest.raises(NotImplementedError, match=r"Bare does not implement optimize\(self, context\); every mixing method must"):
        Bare().optimize(context)
    with pytest.raises(NotImplementedError, match=r"Bare does not define round_steps; every online method must override it"):
        Bare().round_steps


def test_setting_stored_under_other_name_is_named():
    from mixbench.errors import ConfigError
    from mixbench.method import StaticMethod, build_method, register, unregister

    @register
    class Hidden(StaticMethod):
        name = "test_hidden_setting"

        def __init__(self, factor: float = 2.0):
            self._factor = factor

        def optimize(self, context):
            return np.full(context.m, 1.0 / context.m)

    try:
        with pytest.raises(ConfigError, match=r"\(.*Hidden\) has no attribute 'factor' after __init__, which stored: _factor\. "
                                              r"Its __init__ must store each setting under its own name \(self\.factor = factor\)"):
            build_method({"name": "test_hidden_setting", "factor": 3.0})
    finally:
        unregister("test_hidden_setting")


HOOK_PLUGIN = '''
import numpy as np

from mixbench.method import OnlineMethod, register


@register
class FollowLoss(OnlineMethod):
    """Moves weight toward the domains with the highest training loss, at every step, as its own step hook."""

    name = "follow_loss"

    def __init__(self, rate: float = 0.1):
        self.rate = rate

    @property
    def round_steps(self):
        return 10_000

    def optimize(self, context):
        return np.full(context.m, 1.0 / context.m)

    def step_hook(self, context):
        return self

    def update(self, stats, mixture):
        weights = mixture * np.exp(self.rate * np.nan_to_num(stats.train_loss))
        return weights / weights.sum()
'''


def test_step_hook_without_requires_trains(text_folders, tmp_path):
    _plugin_folder(tmp_path, "hook_methods", HOOK_PLUGIN, {"follow_loss": "name: follow_loss\nrate: 0.1\n"})
    common = _overrides(text_folders, tmp_path / "cache")
    result = _mixbench(["run", *common, "plugins=[hook_methods]", "method=follow_loss", "hydra.searchpath=[file://conf]"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "follow_loss seed 0: average test perplexity" in result.stderr


class FirstDomain:
    """A step hook object with `update` only: it puts all weight on the first domain."""

    def update(self, stats, mixture):
        return np.eye(len(mixture))[0]


class SeparateHook(OnlineMethod):
    """An online method whose step hook is another object, one without `requires`."""

    name = "test_separate_hook"

    @property
    def round_steps(self):
        return 10_000

    def optimize(self, context):
        return np.full(context.m, 1.0 / context.m)

    def step_hook(self, context):
        return FirstDomain()


def test_separate_hook_without_requires_trains(tiny_setting, tmp_path):
    register(SeparateHook)
    try:
        result = run_method({"name": "test_separate_hook"}, tiny_setting, RunStore(tmp_path), seed=0)
    finally:
        unregister("test_separate_hook")
    assert result.final["status"] == "complete", result.final.get("error")
    assert result.final["final_mixture"][0] == 1.0


@pytest.fixture
def api_plugin(tmp_path, monkeypatch):
    """Temperature as module api_methods in tmp_path, importable, with its config in tmp_path/conf; removed afterwards."""
    from mixbench.method import unregister

    _plugin_folder(tmp_path, "api_methods", PLUGIN, {"temperature": "name: temperature\ntemperature: 4.0\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    unregister("temperature")
    sys.modules.pop("api_methods", None)


def test_api_benchmark_reads_plugin_config(api_plugin):
    from mixbench import api

    overrides = [*SIM_RUN[1:], "experiment.methods=[temperature]", "experiment.seeds=[0]", "hydra.searchpath=[file://conf]"]
    api.benchmark(experiment="sim", plugins=["api_methods"], overrides=overrides)
    saved = json.loads((api_plugin / "results" / "sim" / "methods" / "temperature-seed0.json").read_text())
    assert saved["params"] == {"temperature": 4.0}


def test_api_names_plugin_config_without_name(api_plugin):
    from mixbench import api
    from mixbench.errors import ConfigError

    (api_plugin / "conf" / "method" / "temperature.yaml").write_text("temperature: 4.0\n")
    with pytest.raises(ConfigError, match=r"config file .*/conf/method/temperature.yaml has no `name:` key; add the line `name: temperature`,"):
        api.run(experiment="sim", plugins="api_methods", method="temperature", overrides=["hydra.searchpath=[file://conf]"])
    assert not (api_plugin / "results").exists()


def test_api_hints_plugin_setting(api_plugin):
    from mixbench import api
    from mixbench.errors import ConfigError

    with pytest.raises(ConfigError, match=r"method.temperatur is not a setting of mixbench run; did you mean method.temperature\?"):
        api.compose_config("run", method="temperature", overrides=["method.temperatur=3", "hydra.searchpath=[file://conf]"])


def test_api_runs_method_registered_in_script(tmp_path):
    from mixbench import api
    from mixbench.method import StaticMethod, register, unregister

    @register
    class FirstHeavy(StaticMethod):
        """Puts `weight` on the first domain and spreads the rest evenly."""

        name = "test_first_heavy"

        def __init__(self, weight: float = 0.5):
            self.weight = weight

        def optimize(self, context):
            rest = (1 - self.weight) / (context.m - 1)
            return np.array([self.weight] + [rest] * (context.m - 1))

    results = tmp_path / "results"
    try:
        # No config file: the name alone runs the class defaults, and a mapping adds settings.
        defaults = api.run(experiment="sim", method="test_first_heavy", results_dir=results, overrides=SIM_RUN[1:])
        chosen = api.run(experiment="sim", method={"name": "test_first_heavy", "weight": 0.8}, results_dir=results, overrides=SIM_RUN[1:])
    finally:
        unregister("test_first_heavy")
    assert defaults.params == {"weight": 0.5}
    assert chosen.params == {"weight": 0.8}
    assert chosen.final["final_mixture"][0] == pytest.approx(0.8)
    # A method with a config file is still picked by it, with settings set on top.
    fixed = api.compose_config("run", method={"name": "fixed", "mixture": [0.5, 0.5], "normalize": True})
    assert dict(fixed.method) == {"name": "fixed", "mixture": [0.5, 0.5], "normalize": True}


class OneDomainHeavy(StaticMethod):
    """Uniform, with `factor` times the weight on `domain`: a default that names a corpus domain."""

    name = "test_one_domain_heavy"

    def __init__(self, domain: str = "python", factor: float = 3.0):
        self.domain = domain
        self.factor = factor

    def check(self, context):
        if self.domain not in context.domains:
            raise ConfigError(f"method.domain={self.domain!r} is not a domain here; use one of {', '.join(context.domains)}.")

    def optimize(self, context):
        weights = np.ones(context.m)
        weights[context.domains.index(self.domain)] = self.factor
        return weights / weights.sum()

    @classmethod
    def test_settings(cls, domains):
        return {"domain": domains[-1]}


def test_conformance_uses_method_test_settings(tmp_path, monkeypatch):
    from test_conformance import SIM, _check_contract, _run_twice

    from mixbench.sim.setting import SimSetting

    register(OneDomainHeavy)
    try:
        # The default domain is not among the simulator's d0, d1, d2, so the defaults alone would fail.
        setting = SimSetting(dict(SIM))
        with pytest.raises(ConfigError, match="method.domain='python' is not a domain here"):
            run_method({"name": OneDomainHeavy.name}, setting, RunStore(tmp_path / "defaults"), seed=0)
        result = _run_twice(OneDomainHeavy.name, setting, tmp_path, monkeypatch)
        _check_contract(result, setting.domains)
        assert result.params["domain"] == "d2"
        assert np.argmax(result.final["final_mixture"]) == 2
    finally:
        unregister(OneDomainHeavy.name)
