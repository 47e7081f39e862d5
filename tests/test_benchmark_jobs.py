"""`mixbench benchmark experiment.jobs=N`: tasks in worker processes, same records as one at a time."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mixbench.commands import benchmark_workers
from test_cli import mixbench, overrides

METHODS = "experiment.methods=[stratified,doremi,natural]"


def losses_by_run(results):
    """Map each stored run id to its final validation and test losses."""
    recorded = {}
    for path in sorted((results / "runs").glob("*/record.json")):
        record = json.loads(path.read_text())
        recorded[record["id"]] = (record["val_losses"], record["test_losses"])
    return recorded


@pytest.mark.parametrize(
    "jobs, tasks, threads, expected",
    [
        (4, 3, 6, (3, 2)),  # three tasks need three workers, which share the six threads
        (4, 3, 4, (3, 1)),
        (2, 6, 4, (2, 2)),
        (4, 1, 4, (1, 4)),  # one task runs in this process with every thread
        (1, 5, 2, (1, 2)),
    ],
)
def test_benchmark_workers_capped_by_tasks(jobs, tasks, threads, expected):
    assert benchmark_workers(jobs, tasks, threads, cores=16) == expected


def test_benchmark_workers_warn_oversubscription(caplog):
    assert benchmark_workers(4, 6, 2, cores=16) == (4, 1)
    assert "4 worker processes with 1 thread(s) each use more threads than train.threads=2 allows" in caplog.text
    assert "experiment.jobs" in caplog.text


def test_benchmark_workers_no_warning_within_budget(caplog):
    assert benchmark_workers(4, 2, 2, cores=16) == (2, 1)
    assert "use more threads than" not in caplog.text


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


def _children(pid: int) -> list[int]:
    listing = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(line) for line in listing.stdout.split()]


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    # A dead child of a dead parent may linger as a zombie until init reaps it.
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc").exists(), reason="reads process state from /proc")
def test_workers_exit_with_killed_parent(text_folders, tmp_path):
    common = overrides(text_folders, tmp_path / "cache")
    # Long runs, so that the workers are still training when the parent is killed.
    command = [sys.executable, "-m", "mixbench", "benchmark", *common, METHODS, "experiment.jobs=2", "train.threads=2",
               "train.steps=5000", "train.warmup_steps=10"]
    log = tmp_path / "benchmark.log"
    with open(log, "w") as stderr:
        parent = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr,
                                  env=dict(os.environ, OMP_NUM_THREADS="1"))
    workers = []
    try:
        deadline = time.monotonic() + 300
        # Wait until a worker logs a line tagged with its task: the workers are then training.
        while time.monotonic() < deadline and " seed 0]" not in log.read_text() and parent.poll() is None:
            time.sleep(0.5)
        # The pool's workers run multiprocessing's spawn_main; its resource tracker does not.
        workers = [pid for pid in _children(parent.pid) if "spawn_main" in _command_line(pid)]
        assert len(workers) == 2, f"the benchmark did not start its two worker processes: {log.read_text()[-2000:]}"
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
            time.sleep(0.5)
        assert not [pid for pid in workers if _alive(pid)], "workers kept running after their parent was killed"
    finally:
        parent.kill()
        for pid in workers:
            if _alive(pid):
                os.kill(pid, 9)
