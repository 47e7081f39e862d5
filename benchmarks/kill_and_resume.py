"""Kill a running online-method run with SIGKILL at random points, resume it, and compare records.

    python benchmarks/kill_and_resume.py --kills 10 --method odm

Each trial starts `mixbench run` on a small real-text corpus, kills it with SIGKILL at a random
point after its first checkpoint, checks that no partial or corrupt record was left behind, runs
the same command again (it resumes from the last checkpoint) and compares the final record with an
uninterrupted run. Runs use one thread, so an identical record means a bit-identical run. The kill
delay is drawn from the time the uninterrupted run took from its first checkpoint to its record.
A delay counted from process start would mostly hit interpreter start-up, corpus loading and model
set-up, and a run killed before its first checkpoint only starts over. Exits 0 only if every
trial matches.
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Record fields that must match exactly; wall times and provenance may differ between runs.
COMPARED = ("test_losses", "val_losses", "metrics", "trajectory", "rounds", "final_mixture", "test_perplexity")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10, help="number of kill-and-resume trials (default: %(default)s)")
    parser.add_argument("--method", default="odm", help="the method to run (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=96, help="training steps of the run (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill times (default: %(default)s)")
    parser.add_argument("--workdir", help="folder for the corpus and results (default: a new temporary folder)")
    return parser.parse_args(argv)


def command(workdir: Path, results: Path, method: str, steps: int) -> list[str]:
    overrides = [
        "data=folders", f"data.path={workdir / 'domains'}", f"data.cache_dir={workdir / 'cache'}",
        "data.val_fraction=0.15", "data.test_fraction=0.15",
        "model.d_model=32", "model.n_layer=1", "model.n_head=2", "model.d_ff=64", "model.context=32",
        f"train.steps={steps}", "train.batch_size=8", "train.warmup_steps=2", "train.eval_every=4",
        "train.checkpoint_every=4", "train.eval_tokens=512", "train.test_tokens=512", "train.threads=1",
        f"method={method}", f"results_dir={results}",
    ]
    if method == "aioli":
        overrides += ["method.update_steps=12", "method.lp_rounds=1", "method.lp_steps=1"]
    return [sys.executable, "-m", "mixbench", "run", *overrides]


def final_record(results: Path) -> dict:
    records = [json.loads(path.read_text()) for path in (results / "runs").glob("*/record.json")]
    finals = [record for record in records if record.get("role") == "final"]
    if len(finals) != 1:
        raise RuntimeError(f"expected one final record under {results}, found {len(finals)}")
    return finals[0]


def check_no_partial_record(results: Path) -> None:
    """Every record.json that exists must parse and be complete; a killed run leaves none."""
    for path in (results / "runs").glob("*/record.json"):
        record = json.loads(path.read_text())
        if record.get("status") != "complete":
            raise RuntimeError(f"{path} is a partial record: status {record.get('status')!r}")


def run_file(results: Path, name: str) -> Path | None:
    found = sorted((results / "runs").glob(f"*/{name}")) if (results / "runs").exists() else []
    return found[0] if found else None


def start(arguments: list[str], environment: dict, log: Path) -> subprocess.Popen:
    with log.open("w") as handle:
        return subprocess.Popen(arguments, env=environment, stdout=handle, stderr=subprocess.STDOUT, text=True)


CHECKPOINT = "checkpoint/state.pt"


def wait_for(process: subprocess.Popen, results: Path, name: str) -> float | None:
    """Poll until the run's `name` file exists; return the time it was seen, or None if the process exited first."""
    while run_file(results, name) is None:
        if process.poll() is not None:
            return None
        time.sleep(0.01)
    return time.perf_counter()


def timed_run(arguments: list[str], environment: dict, results: Path, log: Path) -> tuple[float, float]:
    """Run to the end; return the total time and the time from the first checkpoint to the record."""
    started = time.perf_counter()
    process = start(arguments, environment, log)
    checkpoint_seen = wait_for(process, results, CHECKPOINT)
    record_seen = wait_for(process, results, "record.json")
    if process.wait() != 0 or checkpoint_seen is None or record_seen is None:
        raise RuntimeError(f"mixbench run failed (status {process.returncode}) or wrote no checkpoint; see {log}")
    return time.perf_counter() - started, record_seen - checkpoint_seen


def resume(arguments: list[str], environment: dict, log: Path) -> int | None:
    """Run to the end; return the step it resumed from, or None if it started over or reused a record."""
    with log.open("w") as handle:
        status = subprocess.run(arguments, env=environment, stdout=handle, stderr=subprocess.STDOUT, text=True).returncode
    if status != 0:
        raise RuntimeError(f"the resumed mixbench run failed with status {status}; see {log}")
    match = re.search(r"resuming from step (\d+)", log.read_text())
    return int(match.group(1)) if match else None


def killed_state(results: Path) -> str:
    if run_file(results, "record.json") is not None:
        return "after its record was written"
    if run_file(results, CHECKPOINT) is not None:
        return "with a checkpoint on disk"
    return "before its first checkpoint"


def main(argv=None) -> int:
    args = parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="mixbench-kill-"))
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import _real_text_folders

    if not (workdir / "domains").exists():
        _real_text_folders(workdir / "domains")
    environment = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")

    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    reference_dir = workdir / "uninterrupted"
    # Results left by an earlier invocation in the same workdir would turn every run into a cache hit.
    for stale in [reference_dir, *workdir.glob("trial*")]:
        shutil.rmtree(stale, ignore_errors=True)
    started = time.perf_counter()
    duration, training = timed_run(command(workdir, reference_dir, args.method, args.steps), environment,
                                   reference_dir, logs / "uninterrupted.log")
    reference = final_record(reference_dir)
    print(f"uninterrupted run: {duration:.1f} s, {training:.1f} s of it from the first checkpoint to the record")

    rng = random.Random(args.seed)
    passed = from_checkpoint = 0
    for trial in range(args.kills):
        results = workdir / f"trial{trial}"
        arguments = command(workdir, results, args.method, args.steps)
        log = logs / f"trial{trial}-killed.log"
        process = start(arguments, environment, log)
        if wait_for(process, results, CHECKPOINT) is None:
            raise RuntimeError(f"trial {trial}: mixbench run exited (status {process.returncode}) before its first checkpoint; see {log}")
        delay = rng.uniform(0.0, 1.0) * training
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        state = killed_state(results)
        check_no_partial_record(results)

        step = resume(arguments, environment, logs / f"trial{trial}-resumed.log")
        from_checkpoint += step is not None
        resumed = final_record(results)
        mismatched = [key for key in COMPARED if resumed.get(key) != reference.get(key)]
        status = "identical" if not mismatched else f"DIFFERENT in {', '.join(mismatched)}"
        passed += not mismatched
        origin = f"from step {step}" if step is not None else "from the start or the stored record"
        print(f"trial {trial}: killed {delay:.2f} s after the first checkpoint, {state}; resumed {origin}: {status}")
    print(f"{passed} of {args.kills} resumed runs identical to the uninterrupted run "
          f"({from_checkpoint} resumed from a checkpoint; {time.perf_counter() - started:.0f} s in all)")
    return 0 if passed == args.kills else 1


if __name__ == "__main__":
    sys.exit(main())
