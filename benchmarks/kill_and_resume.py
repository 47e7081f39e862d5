"""Kill a running online-method run with SIGKILL at random points, resume it, and compare records.

    python benchmarks/kill_and_resume.py --kills 10 --method odm

Each trial starts `mixbench run` on a small real-text corpus, kills it with SIGKILL after a random
delay, checks that no partial or corrupt record was left behind, runs the same command again (it
resumes from the last checkpoint) and compares the final record with an uninterrupted run. Runs
use one thread, so an identical record means a bit-identical run. Exits 0 only if every trial
matches.
"""

import argparse
import json
import os
import random
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


def run_to_end(arguments: list[str], environment: dict) -> float:
    started = time.perf_counter()
    subprocess.run(arguments, env=environment, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def main(argv=None) -> int:
    args = parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="mixbench-kill-"))
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import _real_text_folders

    if not (workdir / "domains").exists():
        _real_text_folders(workdir / "domains")
    environment = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")

    reference_dir = workdir / "uninterrupted"
    duration = run_to_end(command(workdir, reference_dir, args.method, args.steps), environment)
    reference = final_record(reference_dir)
    print(f"uninterrupted run: {duration:.1f} s")

    rng = random.Random(args.seed)
    passed = 0
    for trial in range(args.kills):
        results = workdir / f"trial{trial}"
        process = subprocess.Popen(command(workdir, results, args.method, args.steps), env=environment,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        delay = rng.uniform(0.2, 0.9) * duration
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        check_no_partial_record(results)
        checkpoints = len(list((results / "runs").glob("*/checkpoint/state.pt"))) if (results / "runs").exists() else 0

        run_to_end(command(workdir, results, args.method, args.steps), environment)
        resumed = final_record(results)
        mismatched = [key for key in COMPARED if resumed.get(key) != reference.get(key)]
        status = "identical" if not mismatched else f"DIFFERENT in {', '.join(mismatched)}"
        passed += not mismatched
        print(f"trial {trial}: killed after {delay:.1f} s ({checkpoints} checkpoint(s) on disk), resumed: {status}")
    print(f"{passed} of {args.kills} resumed runs identical to the uninterrupted run")
    return 0 if passed == args.kills else 1


if __name__ == "__main__":
    sys.exit(main())
