"""`mixbench benchmark experiment.jobs=N`: tasks in worker processes, same records as one at a time."""

import json

from test_cli import mixbench, overrides

METHODS = "experiment.methods=[stratified,doremi,natural]"


def losses_by_run(results):
    """Map each stored run id to its final validation and test losses."""
    recorded = {}
    for path in sorted((results / "runs").glob("*/record.json")):
        record = json.loads(path.read_text())
        recorded[record["id"]] = (record["val_losses"], record["test_losses"])
    return recorded


def test_two_jobs_match_sequential_records(text_folders, tmp_path):
    common = overrides(text_folders, tmp_path / "cache")
    parallel = mixbench("benchmark", *common, METHODS, "experiment.jobs=2", "train.threads=2", "results_dir=parallel", cwd=tmp_path)
    assert parallel.returncode == 0, parallel.stderr[-3000:]
    assert "in 2 worker processes with 1 torch thread(s) each" in parallel.stderr
    sequential = mixbench("benchmark", *common, METHODS, "train.threads=1", "results_dir=sequential", cwd=tmp_path)
    assert sequential.returncode == 0, sequential.stderr[-3000:]

    # DoReMi's reference is the stratified run, so it is trained once although two workers need it.
    parallel_runs = losses_by_run(tmp_path / "parallel")
    assert parallel_runs == losses_by_run(tmp_path / "sequential")
    # Stratified, natural, and DoReMi's proxy and final runs.
    assert len(parallel_runs) == 4
    saved = sorted(path.name for path in (tmp_path / "parallel" / "default" / "methods").glob("*.json"))
    assert saved == ["doremi-seed0.json", "natural-seed0.json", "stratified-seed0.json"]
    assert "| doremi |" in parallel.stdout


def test_invalid_jobs_rejected(text_folders, tmp_path):
    common = overrides(text_folders, tmp_path / "cache")
    result = mixbench("benchmark", *common, METHODS, "experiment.jobs=0", cwd=tmp_path)
    assert result.returncode != 0
    assert "experiment.jobs=0 is invalid" in result.stderr
    assert not (tmp_path / "results").exists()
