"""The time of a DoGE step split into its per-domain passes, its target pass and the rest.

    python benchmarks/bench_doge_parts.py --domains 7 --out results/bench_doge_parts.json

Trains a DoGE proxy backend and a plain backend on the first `--domains` default domains with the
tiny model, one after the other, and times the harness's per-domain gradient passes and its
target-gradient pass inside the DoGE steps. Every figure is in plain steps: time per step divided
by the plain backend's time per step, as medians over repeats.
"""

import argparse
import statistics
import sys
import time


def parse_args(argv=None) -> argparse.Namespace:
    from common import add_setting_arguments

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per repeat (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats (default: %(default)s)")
    add_setting_arguments(parser, threads=1)
    return parser.parse_args(argv)


def timed(spent: dict, name: str, function):
    """Wrap `function` so that its calls add their wall time to `spent[name]`."""

    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            spent[name] += time.perf_counter() - started

    return wrapper


def main(argv=None) -> int:
    args = parse_args(argv)
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from common import default_setting, machine, report

    from mixbench.commands import method_config
    from mixbench.method import build_method
    from mixbench.train import signals

    spent = {"domain_passes": 0.0, "target_pass": 0.0}
    signals.domain_gradients = timed(spent, "domain_passes", signals.domain_gradients)
    signals.target_gradient = timed(spent, "target_pass", signals.target_gradient)

    setting = default_setting(args.cache, args.domains, 100_000, args.threads)
    context = setting.context(0)
    plain = setting.make_backend(setting.spec(0, method="stratified"))
    doge = setting.make_backend(setting.spec(0, method="doge"))
    method = build_method(method_config("doge"))
    method.use_prerequisites([], context)
    uniform = np.full(args.domains, 1.0 / args.domains)
    plain.train(2, uniform)
    doge.train(2, method.mixture_, by_loss_weights=True, hook=method)

    shares = {"doge_step": [], "domain_passes": [], "target_pass": [], "rest": []}
    for _ in range(args.repeats):
        started = time.perf_counter()
        plain.train(args.steps, uniform)
        plain_step = (time.perf_counter() - started) / args.steps
        spent.update(domain_passes=0.0, target_pass=0.0)
        started = time.perf_counter()
        doge.train(args.steps, method.mixture_, by_loss_weights=True, hook=method)
        doge_step = (time.perf_counter() - started) / args.steps
        passes, target = spent["domain_passes"] / args.steps, spent["target_pass"] / args.steps
        shares["doge_step"].append(doge_step / plain_step)
        shares["domain_passes"].append(passes / plain_step)
        shares["target_pass"].append(target / plain_step)
        shares["rest"].append((doge_step - passes - target) / plain_step)

    report({
        "machine": machine(args.threads),
        "domains": args.domains,
        "steps_per_repeat": args.steps,
        "repeats": args.repeats,
        "in_plain_steps": {name: statistics.median(values) for name, values in shares.items()},
        "date": time.strftime("%Y-%m-%d"),
    }, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
