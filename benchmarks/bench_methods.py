"""Per-method overhead at the same training budget, from the records of real runs.

    python benchmarks/bench_methods.py --domains 7 --out results/bench_methods.json

Trains stratified and each listed method on the first `--domains` domains of the default corpus
with the default tiny model, `--repeats` times in alternation (a fresh run store each time), and
reads the compute that each run's record holds. Reported per method, as medians over repeats of the
ratio to the stratified run of the same repeat:
- `train_time_per_token`: training plus exploration time per training token of the method's own
  run (the proxy run for DoReMi and DoGE), evaluation excluded;
- `step_time`: wall time per optimizer step of that run, evaluation excluded;
- `extra_run_time`: time of every extra run (probes, reference, single-domain runs, the proxy)
  over the stratified run's training time;
- `eval_time`: evaluation time (validation, exploration passes, test) over the stratified run's
  training time.
The stratified run's own evaluation overhead (evaluation over training time) is reported too.
"""

import argparse
import statistics
import sys
import tempfile
import time

# Settings that scale the online methods to a short CPU run, as conf/experiment/default.yaml does.
SHORT_RUN = {
    "aioli": {"update_steps": 50, "lp_rounds": 1, "lp_steps": 2},
    "skill_it": {"update_steps": 50, "graph_steps_fraction": 0.25},
    "doge": {"lr": 3.0e-3},
}


def parse_args(argv=None) -> argparse.Namespace:
    from common import add_setting_arguments

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="doremi,doge,odm,aioli,skill_it", help="comma-separated methods (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=300, help="training steps per run (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating repeats (default: %(default)s)")
    add_setting_arguments(parser, threads=2)
    return parser.parse_args(argv)


def own_run(result) -> dict:
    """Return the run in which the method chose its mixture: the proxy run, else the final run."""
    return next((run for run in result.extra if run.get("role") == "proxy"), result.final)


def figures_of(result, steps: int) -> dict:
    run = own_run(result)
    compute = run["compute"]
    trained = compute["train_tokens"] + compute["exploration_tokens"]
    working = compute["train_time_s"] + compute["exploration_time_s"]
    extra = sum(record["compute"]["wall_time_s"] for record in result.extra if record is not run)
    evaluation = result.final["compute"]["eval_time_s"] + sum(record["compute"]["eval_time_s"] for record in result.extra)
    return {"per_token": working / trained, "per_step": working / steps, "extra": extra, "eval": evaluation, "train": working}


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from common import default_setting, machine, report

    from mixbench.commands import method_config
    from mixbench.engine import run_method
    from mixbench.runs import RunStore

    setting = default_setting(args.cache, args.domains, args.steps, args.threads)

    methods = args.methods.split(",")
    ratios = {name: {"train_time_per_token": [], "step_time": [], "extra_run_time": [], "eval_time": []} for name in methods}
    eval_overhead = []
    for repeat in range(args.repeats):
        store = RunStore(tempfile.mkdtemp(prefix="mixbench-bench-"))
        baseline = figures_of(run_method({"name": "stratified"}, setting, store, seed=repeat), args.steps)
        eval_overhead.append(baseline["eval"] / baseline["train"])
        for name in methods:
            started = time.perf_counter()
            figures = figures_of(run_method(method_config(name, SHORT_RUN.get(name)), setting, store, seed=repeat), args.steps)
            ratios[name]["train_time_per_token"].append(figures["per_token"] / baseline["per_token"])
            ratios[name]["step_time"].append(figures["per_step"] / baseline["per_step"])
            ratios[name]["extra_run_time"].append(figures["extra"] / baseline["train"])
            ratios[name]["eval_time"].append(figures["eval"] / baseline["train"])
            print(f"repeat {repeat} {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr)

    report({
        "machine": machine(args.threads),
        "domains": args.domains,
        "steps": args.steps,
        "repeats": args.repeats,
        "stratified_eval_over_train": statistics.median(eval_overhead),
        "ratios_to_stratified": {name: {key: statistics.median(values) for key, values in table.items()} for name, table in ratios.items()},
        "date": time.strftime("%Y-%m-%d"),
    }, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
