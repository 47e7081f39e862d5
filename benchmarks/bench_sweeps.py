"""Wall time of a sweep run in parallel with Hydra's joblib launcher against the same sweep run sequentially.

    python benchmarks/bench_sweeps.py --repeats 3 --out bench_sweeps.json

Each sweep is `mixbench run -m method=M1,M2 seed=S1,S2` through the real command line, in three
modes with the same thread budget (`--threads`, passed as `train.threads`):
- `sequential`: one member at a time, each with the whole budget;
- `sequential_split`: one member at a time, each with the budget divided by `--jobs`;
- `parallel`: `--jobs` members at a time through the joblib launcher, each with the divided budget.
Every sweep starts from an empty results folder, so nothing is reused, and the modes rotate which
goes first from one repeat to the next. The corpus is prepared once before timing. Reported: each
mode's wall times and median, the ratio of each sequential median to the parallel median (above 1
means parallel is faster), and whether the parallel records match the `sequential_split` ones
(same per-member thread count) apart from wall times.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="stratified,natural", help="comma-separated methods (default: %(default)s)")
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=2, help="parallel members, hydra.launcher.n_jobs (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="train.threads of both sweeps (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=60, help="training steps per run (default: %(default)s)")
    parser.add_argument("--data", default="three", help="data config in conf/data (default: %(default)s)")
    parser.add_argument("--model", default="tiny", help="model config in conf/model (default: %(default)s)")
    parser.add_argument("--overrides", nargs="*", default=[], help="further Hydra overrides for both sweeps, e.g. train.test_tokens=4096")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each sweep (default: %(default)s)")
    parser.add_argument("--cache", default=".cache", help="corpus cache folder (default: %(default)s)")
    parser.add_argument("--out", help="write the figures as JSON to this path")
    return parser.parse_args(argv)


def mixbench(args: list[str], cwd: Path) -> float:
    """Run one mixbench command and return its wall time in seconds; raise if it fails."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "mixbench", *args], cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"mixbench {' '.join(args[:3])} ... failed with status {result.returncode}:\n{result.stderr[-3000:]}")
    return elapsed


def records(results: Path) -> dict:
    """Return every run record of a results folder with its wall-time fields (keys ending in _time_s) removed."""

    def without_times(value):
        if isinstance(value, dict):
            return {key: without_times(item) for key, item in value.items() if not key.endswith("_time_s")}
        if isinstance(value, list):
            return [without_times(item) for item in value]
        return value

    return {path.parent.name: without_times(json.loads(path.read_text())) for path in (results / "runs").glob("*/record.json")}


def machine() -> dict:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    cache = Path(args.cache).resolve()
    common = [f"data={args.data}", f"data.cache_dir={cache}", f"model={args.model}", f"train.steps={args.steps}"]
    common += ["train.checkpoint_every=0", *args.overrides]
    sweep = [f"method={args.methods}", f"seed={args.seeds}"]
    parallel_launcher = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.jobs}"]
    split = max(1, args.threads // args.jobs)
    modes = {
        "sequential": [f"train.threads={args.threads}"],
        "sequential_split": [f"train.threads={split}"],
        "parallel": [*parallel_launcher, f"train.threads={args.threads}"],
    }
    times = {mode: [] for mode in modes}
    loads = []
    matches = []
    with tempfile.TemporaryDirectory(prefix="bench-sweeps-") as folder:
        work = Path(folder)
        mixbench(["prepare", f"data={args.data}", f"data.cache_dir={cache}"], work)
        for repeat in range(args.repeats):
            names = list(modes)
            for mode in names[repeat % len(names) :] + names[: repeat % len(names)]:
                results = work / f"{mode}-{repeat}"
                loads.append(os.getloadavg()[0])
                elapsed = mixbench(["run", "-m", *common, *modes[mode], *sweep, f"results_dir={results}"], work)
                times[mode].append(elapsed)
                print(f"repeat {repeat} {mode}: {elapsed:.1f} s", file=sys.stderr)
            matches.append(records(work / f"sequential_split-{repeat}") == records(work / f"parallel-{repeat}"))

    medians = {mode: statistics.median(values) for mode, values in times.items()}
    figures = {
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["python", "benchmarks/bench_sweeps.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine() | {"torch": torch.__version__, "load_average_at_starts": loads},
        "settings": {
            "methods": args.methods.split(","),
            "seeds": args.seeds.split(","),
            "jobs": args.jobs,
            "threads": args.threads,
            "threads_per_parallel_member": split,
            "steps": args.steps,
            "data": args.data,
            "model": args.model,
            "overrides": args.overrides,
        },
        "wall_time_s": times,
        "median_s": medians,
        "sequential_over_parallel": medians["sequential"] / medians["parallel"],
        "sequential_split_over_parallel": medians["sequential_split"] / medians["parallel"],
        "parallel_records_match_sequential_split": matches,
    }
    text = json.dumps(figures, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
