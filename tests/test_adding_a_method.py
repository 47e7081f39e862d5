"""A method defined outside methods/ runs through `mixbench run` and the benchmark table."""

import csv
import json
import os
import subprocess
import sys
import textwrap

from conftest import TINY_MODEL, TINY_TRAIN

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
