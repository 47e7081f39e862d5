"""A diverging run stops with a failed record; the others carry on and the table shows the failure."""

import json

from mixbench.engine import run_method, save_method_result
from mixbench.report import load_results, summarize, to_markdown
from mixbench.runs import RunStore
from mixbench.setting import CorpusSetting


def test_diverging_run_is_recorded_as_failed(tiny_setting, tmp_path):
    store = RunStore(tmp_path)
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
    experiment = tmp_path / "experiment"
    save_method_result(failed, experiment)
    save_method_result(healthy, experiment)
    rows = {row["method"]: row for row in summarize(load_results(experiment), store)}
    assert rows["stratified"]["failed"] == 1
    assert "avg_test_ppl" not in rows["stratified"]
    assert rows["natural"]["failed"] == 0
    assert "| stratified | 1 | 1 |" in to_markdown(list(rows.values()))
