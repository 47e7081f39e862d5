"""Parallel sweeps: thread division, runs shared by parallel members, parallel against sequential
records, and the SLURM launcher config. Sweeps run the real command line with Hydra's joblib
launcher and train real tiny models on the small real-text corpus."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import TINY_MODEL, TINY_TRAIN
from mixbench.errors import ConfigError
from mixbench.threads import joblib_members, member_threads, parallel_members, set_torch_threads, sweep_size, warn_oversubscribed

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def sweep_overrides(text_folders: Path, cache: Path, **train) -> list[str]:
    items = ["data=folders", f"data.path={text_folders}", f"data.cache_dir={cache}", "data.val_fraction=0.15", "data.test_fraction=0.15"]
    items += [f"model.{key}={value}" for key, value in TINY_MODEL.items()]
    settings = {**TINY_TRAIN, "checkpoint_every": 0, "test_tokens": 512, **train}
    items += [f"train.{key}={str(value).lower() if isinstance(value, bool) else value}" for key, value in settings.items()]
    return items


def mixbench(*args, cwd, env=None):
    environment = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", **(env or {}))
    return subprocess.run([sys.executable, "-m", "mixbench", *args], cwd=cwd, capture_output=True, text=True, env=environment, timeout=600)


# ---------------------------------------------------------------- thread division


@pytest.mark.parametrize(
    "threads, members, cores, expected",
    [
        (2, 1, 2, 2),  # a sequential sweep or a single run keeps the count
        (2, 2, 2, 1),  # two parallel members share two threads
        (1, 2, 2, 1),  # never below one thread
        (3, 2, 16, 1),
        ("auto", 1, 8, 8),  # auto: every core
        ("auto", 3, 8, 2),
        (0, 2, 8, 0),  # 0 leaves torch's default
    ],
)
def test_member_threads_divides_count(threads, members, cores, expected):
    assert member_threads(threads, members, cores) == expected


@pytest.mark.parametrize("threads", [-1, "two", True, 1.5])
def test_member_threads_rejects_invalid(threads):
    with pytest.raises(ConfigError, match="train.threads"):
        member_threads(threads, 1, 4)


@pytest.mark.parametrize("n_jobs, cores, expected", [(2, 8, 2), (-1, 8, 8), (-2, 8, 7), (-20, 8, 1)])
def test_joblib_members_follows_joblib(n_jobs, cores, expected):
    assert joblib_members(n_jobs, cores) == expected


def test_joblib_members_rejects_zero():
    with pytest.raises(ConfigError, match="hydra.launcher.n_jobs=0"):
        joblib_members(0, 4)


@pytest.mark.parametrize("batch, expected", [(None, 6), (4, 4), (10, 6)])
def test_sweep_size_reads_saved_sweep(tmp_path, batch, expected):
    from omegaconf import OmegaConf

    saved = {"hydra": {"overrides": {"task": ["method=stratified,natural", "seed=range(0,3)", "train.steps=10"]},
                       "sweeper": {"max_batch_size": batch}}}
    OmegaConf.save(OmegaConf.create(saved), tmp_path / "multirun.yaml")
    assert sweep_size(tmp_path) == expected


def test_sweep_size_without_saved_sweep(tmp_path, caplog):
    assert sweep_size(tmp_path) == 1
    assert "cannot count the sweep's members" in caplog.text


def test_submitit_local_members_divide_threads(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install -e '.[slurm]' to test submitit sweeps")
    # submitit's local executor starts both members at once, so each gets one of the two threads.
    result = mixbench("run", "-m", "hydra/launcher=submitit_local", "experiment=sim", "method=stratified,natural",
                      "sim.steps=40", "sim.warmup_steps=4", "sim.eval_every=0", "train.threads=2", f"results_dir={tmp_path}",
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    logs = "".join(path.read_text() for path in tmp_path.glob(".multirun/*/.submitit/*/*.err"))
    assert logs.count("torch threads: 1 per member (train.threads=2, 2 parallel sweep members)") == 2
    assert len(list((tmp_path / "sim" / "methods").glob("*.json"))) == 2


def test_set_torch_threads_records_count():
    from omegaconf import OmegaConf

    before = torch.get_num_threads()
    try:
        train = OmegaConf.create({"threads": "auto", "steps": 3})
        OmegaConf.set_struct(train, True)
        used = set_torch_threads(train)
        # Outside a Hydra sweep there is one member, so auto means every available core.
        assert used == len(os.sched_getaffinity(0))
        assert train.threads == used == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_torchrun_processes_divide_threads(monkeypatch, caplog):
    # torchrun sets LOCAL_WORLD_SIZE in each process it starts; 2 threads for 2 processes give 1 each.
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    before = torch.get_num_threads()
    try:
        train = {"threads": 2}
        with caplog.at_level("INFO", logger="mixbench.threads"):
            assert set_torch_threads(train) == 1
        assert train["threads"] == 1
        assert "1 per process (train.threads=2, 2 processes of this run on this machine)" in caplog.text
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def joblib_sweep(tmp_path):
    """Set Hydra's config to a member of a joblib sweep over `overrides` in `tmp_path`, at `n_jobs`."""
    from hydra.conf import HydraConf
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    def start(n_jobs: int, overrides: list[str] | None) -> None:
        hydra = OmegaConf.structured(HydraConf)
        hydra.mode = RunMode.MULTIRUN
        hydra.launcher = {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": n_jobs}
        hydra.sweep.dir = str(tmp_path)
        if overrides is not None:
            saved = {"hydra": {"overrides": {"task": overrides}, "sweeper": {"max_batch_size": None}}}
            OmegaConf.save(OmegaConf.create(saved), tmp_path / "multirun.yaml")
        HydraConfig.instance().set_config(OmegaConf.create({"hydra": hydra}))

    before = torch.get_num_threads()
    yield start
    HydraConfig.instance().cfg = None
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    "n_jobs, overrides, expected",
    [
        (4, ["method=stratified", "seed=0,1"], 2),  # two members: joblib never runs more at once
        (2, ["method=stratified,natural", "seed=0,1,2"], 2),  # six members, two at a time
        (4, None, 4),  # without multirun.yaml the count stays n_jobs
        (4, ["train.lr=interval(0.1,1.0)"], 4),  # an interval sweep has no fixed size
    ],
)
def test_joblib_members_capped_by_sweep(joblib_sweep, n_jobs, overrides, expected):
    joblib_sweep(n_jobs, overrides)
    assert parallel_members(cores=16) == expected


def test_joblib_small_sweep_threads(joblib_sweep, caplog):
    from omegaconf import OmegaConf

    caplog.set_level(logging.INFO, logger="mixbench.threads")
    joblib_sweep(4, ["method=stratified", "seed=0,1"])
    train = OmegaConf.create({"threads": 4})
    assert set_torch_threads(train) == 2
    assert train.threads == 2
    assert "torch threads: 2 per member (train.threads=4, 2 parallel sweep members)" in caplog.text


def test_joblib_small_sweep_no_false_warning(joblib_sweep, caplog):
    joblib_sweep(4, ["method=stratified", "seed=0,1"])
    assert set_torch_threads({"threads": 2}) == 1
    assert "use more threads than" not in caplog.text


def test_joblib_oversubscription_warns(joblib_sweep, caplog):
    joblib_sweep(4, ["method=stratified,natural", "seed=0,1"])
    assert set_torch_threads({"threads": 2}) == 1
    assert "4 parallel members with 1 thread(s) each use more threads than train.threads=2 allows" in caplog.text
    assert "hydra.launcher.n_jobs" in caplog.text


@pytest.mark.parametrize(
    "threads, used, members, cores, expected",
    [(2, 1, 2, 8, False), (2, 1, 4, 8, True), ("auto", 1, 2, 2, False), ("auto", 1, 3, 2, True)],
)
def test_warn_oversubscribed_compares_budget(threads, used, members, cores, expected):
    assert warn_oversubscribed(threads, used, members, cores, "worker processes", "experiment.jobs") is expected


# ---------------------------------------------------------------- runs shared by parallel members

# Instruments a sweep member without replacing any training: it logs each run request, each
# training of a run, and each returned record to $SWEEP_EVENTS, one O_APPEND write per line. The
# member that trains the uniform run holds its lock until another member has requested the same
# run, so the two members are sure to meet on it.
COUNTING_PLUGIN = '''
import json
import os
import time

from mixbench import engine
from mixbench.runs import RunStore

EVENTS = os.environ["SWEEP_EVENTS"]


def write(event, spec, **extra):
    line = json.dumps({"event": event, "pid": os.getpid(), "id": spec.id, "role": spec.role, "time": time.time(), **extra})
    handle = os.open(EVENTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(handle, (line + "\\n").encode())
    os.close(handle)


def requested_elsewhere(spec):
    with open(EVENTS) as handle:
        events = [json.loads(line) for line in handle]
    return any(e["event"] == "request" and e["id"] == spec.id and e["pid"] != os.getpid() for e in events)


store_get_or_run = RunStore.get_or_run
engine_execute_run = engine.execute_run


def get_or_run(self, spec, train, main=True):
    write("request", spec)
    record, reused = store_get_or_run(self, spec, train, main)
    write("returned", spec, reused=reused)
    return record, reused


def execute_run(spec, *args, **kwargs):
    write("train", spec)
    if spec.mixture is not None and len(set(spec.mixture)) == 1:
        deadline = time.time() + 90
        while not requested_elsewhere(spec) and time.time() < deadline:
            time.sleep(0.05)
    return engine_execute_run(spec, *args, **kwargs)


RunStore.get_or_run = get_or_run
engine.execute_run = execute_run
'''


@pytest.mark.slow
def test_parallel_members_train_shared_run_once(text_folders, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "sweep_counter.py").write_text(COUNTING_PLUGIN)
    events = tmp_path / "events.jsonl"
    common = sweep_overrides(text_folders, tmp_path / "cache")
    # DoReMi's reference run is the stratified run, so both members need it.
    result = mixbench(
        "run", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *common,
        "method=stratified,doremi", "seed=0", "plugins=[sweep_counter]",
        cwd=tmp_path, env={"PYTHONPATH": str(plugins), "SWEEP_EVENTS": str(events)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]

    methods = tmp_path / "results" / "default" / "methods"
    stratified = json.loads((methods / "stratified-seed0.json").read_text())
    doremi = json.loads((methods / "doremi-seed0.json").read_text())
    shared = stratified["final_run"]
    assert shared in [run["id"] for run in doremi["extra_runs"]]

    log = [json.loads(line) for line in events.read_text().splitlines()]
    requests = [e for e in log if e["event"] == "request" and e["id"] == shared]
    trainings = [e for e in log if e["event"] == "train" and e["id"] == shared]
    returns = {e["pid"]: e for e in log if e["event"] == "returned" and e["id"] == shared}
    assert len({e["pid"] for e in requests}) == 2, "both members must request the shared run"
    assert len(trainings) == 1, f"the shared run was trained {len(trainings)} times"
    trainer = trainings[0]["pid"]
    waiter = next(e["pid"] for e in requests if e["pid"] != trainer)
    assert returns[trainer]["reused"] is False
    assert returns[waiter]["reused"] is True
    # The other member asked while the run was training, so it waited on the run's lock.
    waiter_request = next(e for e in requests if e["pid"] == waiter)
    assert waiter_request["time"] < returns[trainer]["time"]
    assert f"run {shared} (reference): reusing the stored record" in result.stderr or (
        f"run {shared} (final): reusing the stored record" in result.stderr
    )


# ---------------------------------------------------------------- parallel against sequential


def _without_times(value):
    """Drop wall-time fields (keys ending in _time_s), the only fields a rerun may change."""
    if isinstance(value, dict):
        return {key: _without_times(item) for key, item in value.items() if not key.endswith("_time_s")}
    if isinstance(value, list):
        return [_without_times(item) for item in value]
    return value


def _records(results: Path) -> dict:
    return {path.parent.name: json.loads(path.read_text()) for path in (results / "runs").glob("*/record.json")}


@pytest.mark.slow
def test_parallel_sweep_matches_sequential(text_folders, tmp_path):
    common = sweep_overrides(text_folders, tmp_path / "cache", steps=30, warmup_steps=3, eval_every=10)
    sweep = ["method=natural,odm", "seed=0,1"]
    sequential = mixbench("run", "-m", *common, "train.threads=1", *sweep, "results_dir=sequential", cwd=tmp_path)
    assert sequential.returncode == 0, sequential.stderr[-3000:]
    # Two threads divided between two parallel members: one each, as in the sequential sweep.
    parallel = mixbench(
        "run", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *common, "train.threads=2", *sweep,
        "results_dir=parallel", cwd=tmp_path,
    )  # fmt: skip
    assert parallel.returncode == 0, parallel.stderr[-3000:]
    assert "backend=loky" in parallel.stdout
    assert parallel.stderr.count("torch threads: 1 per member (train.threads=2, 2 parallel sweep members)") == 4

    first, second = _records(tmp_path / "sequential"), _records(tmp_path / "parallel")
    assert len(first) == 4
    assert sorted(first) == sorted(second)
    for run_id, record in first.items():
        other = second[run_id]
        assert record["spec"]["train"]["threads"] == other["spec"]["train"]["threads"] == 1
        assert record["test_losses"] == other["test_losses"], run_id
        assert record["final_mixture"] == other["final_mixture"], run_id
        assert _without_times(record) == _without_times(other), run_id
        weights = torch.load(tmp_path / "sequential" / "runs" / run_id / "final_model.pt")
        parallel_weights = torch.load(tmp_path / "parallel" / "runs" / run_id / "final_model.pt")
        assert all(torch.equal(weights[name], parallel_weights[name]) for name in weights), run_id

    for path in sorted((tmp_path / "sequential" / "default" / "methods").glob("*.json")):
        other = tmp_path / "parallel" / "default" / "methods" / path.name
        assert _without_times(json.loads(path.read_text())) == _without_times(json.loads(other.read_text())), path.name


# ---------------------------------------------------------------- SLURM launcher config


def test_slurm_launcher_config_submits_array(tmp_path, monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install -e '.[slurm]' to test the SLURM config")
    import submitit
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    # submitit's SLURM executor only checks that srun exists. Nothing is submitted here, because
    # map_array (the call that would run sbatch) is replaced by one that keeps the executor.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    submitted = {}

    def keep_executor(executor, function, *arguments):
        submitted["executor"], submitted["members"] = executor, len(arguments[0])
        return []

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", keep_executor)

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("run", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"], return_hydra_config=True)
    launcher_cfg = cfg.hydra.launcher
    assert launcher_cfg._target_.endswith("SlurmLauncher")
    assert launcher_cfg.partition == "gpu"
    assert launcher_cfg.tasks_per_node == 1
    for field in ("gpus_per_node", "cpus_per_task", "timeout_min", "mem_gb", "array_parallelism"):
        assert isinstance(launcher_cfg[field], int) and launcher_cfg[field] > 0, field

    launcher = instantiate(launcher_cfg)
    launcher.setup(hydra_context=None, task_function=lambda cfg: None, config=cfg)
    launcher.launch([["method=stratified", "seed=0"], ["method=natural", "seed=0"]], initial_job_idx=0)
    assert submitted["members"] == 2

    executor = submitted["executor"]._executor
    assert executor.parameters["array_parallelism"] == launcher_cfg.array_parallelism
    script = executor._make_submission_file_text("python -m mixbench", "test")
    for line in (
        "#SBATCH --partition=gpu",
        f"#SBATCH --gpus-per-node={launcher_cfg.gpus_per_node}",
        f"#SBATCH --cpus-per-task={launcher_cfg.cpus_per_task}",
        f"#SBATCH --time={launcher_cfg.timeout_min}",
        f"#SBATCH --mem={launcher_cfg.mem_gb}GB",
        "#SBATCH --ntasks-per-node=1",
    ):
        assert line in script, line
