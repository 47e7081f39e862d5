"""A diverging run stops with a failed record; the others carry on and the table shows the failure."""

import csv
import json
import os
import subprocess
import sys

from mixbench.engine import run_method, save_method_result
from mixbench.report import load_results, summarize, to_markdown
from mixbench.runs import RunStore
from mixbench.setting import CorpusSetting


def test_diverging_run_is_recorded_as_failed(tiny_setting, tmp_path, caplog):
    store = RunStore(tmp_path)
    # A complete result of the same method and seed, from healthy training settings.
    experiment = tmp_path / "experiment"
    complete = run_method({"name": "stratified"}, tiny_setting, store, seed=0)
    save_method_result(complete, experiment)
    exploding = CorpusSetting("test", tiny_setting.corpus, tiny_setting.domains, tiny_setting.model, dict(tiny_setting.train, lr=1e30, grad_clip=0.0))
    failed = run_method({"name": "stratified"}, exploding, store, seed=0)
    assert failed.final["status"] == "failed"
    assert "became NaN or infinite at step" in failed.final["error"]
    assert "last finite training losses" in failed.final["error"]
    stored = json.loads((tmp_path / "runs" / failed.final["id"] / "record.json").read_text())
    assert stored["status"] == "failed"

    # A healthy member of the same sweep still completes, and the table keeps the failed row.
    healthy = run_method({"name": "natural"}, tiny_setting, store, seed=0)
    assert healthy.final["status"] == "complete"
    caplog.clear()
    save_method_result(failed, experiment)
    # The failure replaces the complete result, with a warning that explains how to restore it.
    assert f"replacing the complete result of stratified seed 0 in {experiment} (final run {complete.final['id']})" in caplog.text
    assert "rerunning with the earlier settings restores it without training" in caplog.text
    save_method_result(healthy, experiment)
    rows = {row["method"]: row for row in summarize(load_results(experiment), store)}
    assert rows["stratified"]["failed"] == 1
    assert "avg_test_ppl" not in rows["stratified"]
    assert rows["natural"]["failed"] == 0
    assert "| stratified | 1 | 1 |" in to_markdown(list(rows.values()))


CRASHING_PLUGIN = '''
from mixbench.method import StaticMethod, register


@register
class Crashing(StaticMethod):
    """A static method whose fit raises, standing in for a method with a bug."""

    name = "crashing"

    def fit(self, observations, context):
        raise RuntimeError("fit exploded on purpose")

    def optimize(self, context):
        raise AssertionError("optimize must not be reached")
'''


def test_crashing_method_does_not_stop_benchmark(tmp_path):
    (tmp_path / "crashing_methods.py").write_text(CRASHING_PLUGIN)
    (tmp_path / "conf" / "method").mkdir(parents=True)
    (tmp_path / "conf" / "method" / "crashing.yaml").write_text("# A method that raises.\n# Launch: mixbench run method=crashing\nname: crashing\n")
    environment = dict(os.environ, PYTHONPATH=str(tmp_path), OMP_NUM_THREADS="1")
    command = [
        sys.executable, "-m", "mixbench", "benchmark", "experiment=sim", "plugins=[crashing_methods]",
        f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "experiment.methods=[crashing,stratified]",
        "experiment.seeds=[0]", "sim.steps=50", "sim.warmup_steps=5", "sim.eval_every=25", f"results_dir={tmp_path / 'results'}",
    ]
    finished = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=environment, timeout=300)

    # The benchmark reports the failure with a non-zero exit, after the other method ran and the table was written.
    assert finished.returncode == 2, finished.stderr[-3000:]
    assert "crashing (seed 0)" in finished.stderr
    methods = tmp_path / "results" / "sim" / "methods"
    crashed = json.loads((methods / "crashing-seed0.json").read_text())
    assert crashed["status"] == "failed"
    assert "fit exploded on purpose" in crashed["error"]
    assert json.loads((methods / "stratified-seed0.json").read_text())["status"] == "complete"
    with open(tmp_path / "results" / "sim" / "table.csv") as handle:
        rows = {row["method"]: row for row in csv.DictReader(handle)}
    assert rows["crashing"]["status"] == "failed"
    assert rows["stratified"]["status"] == "ok"
