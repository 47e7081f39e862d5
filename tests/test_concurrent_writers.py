"""Several OS processes writing into one results folder at once lose nothing and leave no temp files.

Each worker process opens the same `RunStore`, and all workers start at the same moment. Each
trains runs of its own, requests runs that every worker requests, and runs a whole method
(`run_method`, whose probe runs every worker shares). It also overwrites shared files with
`save_method_result` and `write_json_atomic`. Runs are real simulated runs through the engine's
loop, which take tens of milliseconds, so the test is about the store: each spec is trained
exactly once, every record is complete and identical to a sequential recomputation, and a reader
polling the folder meanwhile never sees a partial file.
"""

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mixbench.engine import MethodResult, execute_run, run_method
from mixbench.runs import RunStore
from mixbench.sim.setting import SimSetting

REPO = Path(__file__).resolve().parents[1]
WORKERS = 4
OWN_RUNS = 8        # runs that only one worker requests
SHARED_RUNS = 4     # runs that every worker requests
OVERWRITES = 25     # writes of each shared file by each worker
PAYLOAD = 4000      # numbers per shared-file write, large enough that a torn write would show
METHOD = {"name": "dml", "probe_steps": None}   # 2m = 6 probe runs, then a final run

# The worker script. Its arguments are the folder and the worker index, then four JSON values (sim
# config, method config, own mixtures, shared mixtures), then the overwrite count and payload size.
WORKER = r"""
import json, os, sys, time
from pathlib import Path
from mixbench.engine import MethodResult, execute_run, run_method, save_method_result
from mixbench.runs import RunStore, write_json_atomic
from mixbench.sim.setting import SimSetting

root, worker = Path(sys.argv[1]), int(sys.argv[2])
config, method, own, shared = (json.loads(value) for value in sys.argv[3:7])
overwrites, payload = int(sys.argv[7]), int(sys.argv[8])


class CountingSetting(SimSetting):
    # Every training builds one backend: log it with one O_APPEND write, which is atomic.
    def make_backend(self, spec):
        handle = os.open(root / "trained.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(handle, f"{spec.id} {worker}\n".encode())
        os.close(handle)
        return super().make_backend(spec)


setting = CountingSetting(config)
setting.world(0)   # build the simulated world before the start signal

def train(spec, directory):
    return execute_run(spec, setting, directory)

(root / f"ready-{worker}").touch()
while not (root / "go").exists():
    time.sleep(0.002)

store = RunStore(root / "results")
seen = {}
for index in range(max(len(own), overwrites)):
    if index < len(shared):
        # Every worker requests the same shared run at about the same moment.
        spec = setting.spec(0, mixture=shared[index])
        record, reused = store.get_or_run(spec, train)
        seen[spec.id] = {"test_losses": record["test_losses"], "reused": reused}
    if index < len(own):
        store.get_or_run(setting.spec(0, mixture=own[index]), train)
    if index < overwrites:
        write_json_atomic(root / "results" / "shared.json",
                          {"worker": worker, "iteration": index, "values": [worker * 1000 + index] * payload})
        result = MethodResult(method="shared", params={"writer": worker}, seed=0, final={"id": f"w{worker}"},
                              extra=[], fitted={"values": [float(index)] * 200}, wall_time_s=float(index))
        save_method_result(result, root / "results" / "experiment")
    if index < len(own):
        result = MethodResult(method=f"worker{worker}", params={}, seed=index, final={"id": f"own{index}"},
                              extra=[], fitted={}, wall_time_s=0.0)
        save_method_result(result, root / "results" / "experiment")

result = run_method(method, setting, store, seed=0)
save_method_result(result, root / "results" / "experiment")
print(json.dumps({"shared": seen, "method_final": result.final["id"], "method_runs": [r["id"] for r in result.extra]}))
"""


def sim_config() -> dict:
    config = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "experiment" / "sim.yaml"))["sim"]
    config.update(domains=3, steps=120, warmup_steps=12, eval_every=40, checkpoint_every=40)
    return config


def own_mixtures(worker: int) -> list[list[float]]:
    """Mixtures only `worker` trains: (w + 1, i + 1, 7) normalised differs for every (w, i)."""
    return [[value / (worker + index + 9.0) for value in (worker + 1.0, index + 1.0, 7.0)] for index in range(OWN_RUNS)]


def shared_mixtures() -> list[list[float]]:
    return [[value / (index + 6.0) for value in (index + 1.0, 2.0, 3.0)] for index in range(SHARED_RUNS)]


def start_workers(root: Path, config: dict) -> list[subprocess.Popen]:
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    workers = []
    for index in range(WORKERS):
        mixtures = [json.dumps(own_mixtures(index)), json.dumps(shared_mixtures())]
        arguments = [json.dumps(config), json.dumps(METHOD), *mixtures, OVERWRITES, PAYLOAD]
        log = open(root / f"worker-{index}.log", "w")
        workers.append(subprocess.Popen(
            [sys.executable, "-c", WORKER, str(root), str(index), *map(str, arguments)],
            stdout=subprocess.PIPE, stderr=log, text=True, env=environment,
        ))
        log.close()
    return workers


def release_when_ready(root: Path, workers: list[subprocess.Popen], timeout: float = 120.0) -> None:
    """Create the start signal once every worker has imported mixbench and built its world."""
    deadline = time.monotonic() + timeout
    while len(list(root.glob("ready-*"))) < WORKERS:
        failed = [index for index, worker in enumerate(workers) if worker.poll() is not None]
        assert not failed, f"workers {failed} exited before the start: {worker_log(root, failed[0])}"
        assert time.monotonic() < deadline, f"workers not ready after {timeout} s"
        time.sleep(0.05)
    (root / "go").touch()


def worker_log(root: Path, index: int) -> str:
    """Return the end of a worker's stderr without its progress bars."""
    lines = (root / f"worker-{index}.log").read_text().replace("\r", "\n").splitlines()
    return "\n".join(line for line in lines if line.strip() and "it/s]" not in line)[-3000:]


def parse_whole(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        pytest.fail(f"{path} was read while partly written: {error}")


def read_while_writing(root: Path, workers: list[subprocess.Popen]) -> dict[str, int]:
    """Parse every record and the shared file until the workers exit; return how many reads succeeded."""
    reads = Counter()
    shared = root / "results" / "shared.json"
    while any(worker.poll() is None for worker in workers):
        for path in (root / "results" / "runs").glob("*/record.json"):
            record = parse_whole(path)
            assert record["status"] == "complete", f"{path} was read with status {record['status']!r}"
            reads["record"] += 1
        if shared.exists():
            payload = parse_whole(shared)
            expected = payload["worker"] * 1000 + payload["iteration"]
            assert payload["values"] == [expected] * PAYLOAD, f"{shared} mixes two writes"
            reads["shared"] += 1
        time.sleep(0.01)
    return reads


@pytest.fixture(scope="module")
def concurrent_folder(tmp_path_factory):
    """Run the workers once and return the folder, their outputs and the reader's counts."""
    root = tmp_path_factory.mktemp("concurrent")
    config = sim_config()
    workers = start_workers(root, config)
    try:
        release_when_ready(root, workers)
        reads = read_while_writing(root, workers)
        outputs = []
        for index, worker in enumerate(workers):
            stdout, _ = worker.communicate(timeout=120)
            assert worker.returncode == 0, f"worker {index} failed: {worker_log(root, index)}"
            outputs.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    return root, config, outputs, reads


def test_every_spec_trained_exactly_once(concurrent_folder):
    root, _, outputs, _ = concurrent_folder
    trained = Counter(line.split()[0] for line in (root / "trained.log").read_text().splitlines())
    twice = {spec_id: count for spec_id, count in trained.items() if count != 1}
    assert not twice, f"specs trained more than once: {twice}"
    method_runs = set(outputs[0]["method_runs"]) | {outputs[0]["method_final"]}
    expected = WORKERS * OWN_RUNS + SHARED_RUNS + len(method_runs)
    assert len(trained) == expected


def test_shared_run_trained_by_one_worker(concurrent_folder):
    _, _, outputs, _ = concurrent_folder
    shared_ids = set(outputs[0]["shared"])
    assert len(shared_ids) == SHARED_RUNS
    for spec_id in shared_ids:
        answers = [output["shared"][spec_id] for output in outputs]
        assert sum(not answer["reused"] for answer in answers) == 1, f"run {spec_id}: {answers}"
        assert all(answer["test_losses"] == answers[0]["test_losses"] for answer in answers)


def test_method_run_concurrently_agrees(concurrent_folder):
    _, _, outputs, _ = concurrent_folder
    assert len({output["method_final"] for output in outputs}) == 1
    assert all(output["method_runs"] == outputs[0]["method_runs"] for output in outputs)


def test_every_record_complete_and_matches_sequential_run(concurrent_folder, tmp_path):
    root, config, _, _ = concurrent_folder
    store = RunStore(root / "results")
    run_dirs = sorted(path for path in (root / "results" / "runs").iterdir() if path.is_dir())
    trained = {line.split()[0] for line in (root / "trained.log").read_text().splitlines()}
    assert {path.name for path in run_dirs} == trained

    # The same work done by one process: every record must come out the same.
    setting, fresh = SimSetting(config), RunStore(tmp_path)
    mixtures = [mixture for worker in range(WORKERS) for mixture in own_mixtures(worker)] + shared_mixtures()
    for mixture in mixtures:
        fresh.get_or_run(setting.spec(0, mixture=mixture), lambda s, d: execute_run(s, setting, d))
    run_method(METHOD, setting, fresh, seed=0)

    for directory in run_dirs:
        record = store.record(directory.name)
        assert record is not None, f"run {directory.name} has no record"
        assert record["status"] == "complete"
        spec = json.loads((directory / "spec.json").read_text())
        assert spec["id"] == record["id"] == directory.name
        expected = fresh.record(directory.name)
        assert expected is not None, f"run {directory.name} was not trained by the sequential process"
        for key in ("test_losses", "metrics", "final_mixture", "true_losses"):
            assert record[key] == expected[key], f"run {directory.name}: {key} differs from a sequential run"
        assert not (directory / "checkpoint").exists(), f"finished run {directory.name} kept its checkpoint"


def test_method_results_all_present_and_whole(concurrent_folder):
    root, _, _, _ = concurrent_folder
    folder = root / "results" / "experiment" / "methods"
    names = sorted(path.name for path in folder.iterdir())
    expected = [f"worker{w}-seed{i}.json" for w in range(WORKERS) for i in range(OWN_RUNS)]
    assert names == sorted(expected + ["shared-seed0.json", "dml-seed0.json"])
    keys = set(MethodResult("m", {}, 0, {"id": "x"}, [], {}, 0.0).to_dict())
    for path in folder.iterdir():
        assert keys <= set(json.loads(path.read_text())), f"{path} is not a whole method result"
    shared = json.loads((folder / "shared-seed0.json").read_text())
    # The surviving write is one worker's last one, whole.
    assert shared["fitted"]["values"] == [float(OVERWRITES - 1)] * 200
    assert shared["final_run"] == f"w{shared['params']['writer']}"


def test_shared_file_is_one_whole_write(concurrent_folder):
    root, _, _, _ = concurrent_folder
    payload = json.loads((root / "results" / "shared.json").read_text())
    assert payload["iteration"] == OVERWRITES - 1
    assert payload["values"] == [payload["worker"] * 1000 + payload["iteration"]] * PAYLOAD


def test_reader_saw_only_whole_files(concurrent_folder):
    # read_while_writing asserts on every read; this checks that it did read during the writes.
    _, _, _, reads = concurrent_folder
    assert reads["shared"] > 0, reads
    assert reads["record"] > 0, reads


def test_no_temporary_files_left(concurrent_folder):
    root, _, _, _ = concurrent_folder
    leftovers = [
        path for path in (root / "results").rglob("*")
        if path.name.endswith(".tmp") or path.name.startswith((".write-test-", ".checkpoint", ".final_model"))
    ]
    assert not leftovers, f"temporary files left behind: {leftovers}"


def test_store_opened_by_many_threads_at_once(tmp_path):
    """Opening a store checks that the folder is writable; concurrent checks must not collide."""
    errors = []

    def open_repeatedly():
        for _ in range(400):
            try:
                RunStore(tmp_path)
            except Exception as error:  # noqa: BLE001 - every failure is collected and reported
                errors.append(repr(error))

    threads = [threading.Thread(target=open_repeatedly) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
    assert [path.name for path in (tmp_path / "runs").iterdir()] == []

