"""Where a DoGE step's time goes: its gradient pass, the rest, and the same step with separate passes.

    python benchmarks/bench_doge_parts.py --domains 7 --out bench_doge_parts.json

Times, in rotating order, four backends on the first `--domains` default domains with the tiny
model: a plain step; a plain step over the batch and the target rows together (the least a DoGE
step can cost, since it differentiates both); DoGE as it runs, with every domain's and the
target's gradient from one pass; and DoGE with one pass per domain and one for the target (what a
model with an unsupported layer gets). Every figure is in plain steps: the time per step divided
by the plain step's time in the same repeat, as the median over repeats.
"""

import argparse
import statistics
import sys
import time


def parse_args(argv=None) -> argparse.Namespace:
    from common import add_setting_arguments

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per repeat (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=7, help="repeats (default: %(default)s)")
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


def contenders(setting, domains: int):
    """Return name -> function(steps) for every timed step, and the DoGE method they share."""
    import numpy as np

    from mixbench.commands import method_config
    from mixbench.method import build_method
    from mixbench.setting import CorpusSetting

    method = build_method(method_config("doge"))
    method.use_prerequisites([], setting.context(0))
    uniform = np.full(domains, 1.0 / domains)
    plain = setting.make_backend(setting.spec(0, method="stratified"))
    one_pass = setting.make_backend(setting.spec(0, method="doge"))
    separate = setting.make_backend(setting.spec(0, method="doge"))
    separate.group_gradients.unsupported = "this benchmark's request for separate passes"
    # The target batch has one validation window per domain.
    rows = int(setting.train["batch_size"]) + domains
    wide = CorpusSetting("bench", setting.corpus, setting.domains, setting.model, dict(setting.train, batch_size=rows))
    plain_wide = wide.make_backend(wide.spec(0, method="stratified"))

    def doge(backend):
        return lambda steps: backend.train(steps, method.mixture_, by_loss_weights=True, hook=method)

    return {
        "plain_step": lambda steps: plain.train(steps, uniform),
        "plain_step_with_target_rows": lambda steps: plain_wide.train(steps, uniform),
        "doge_step": doge(one_pass),
        "doge_step_separate_passes": doge(separate),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from common import default_setting, machine, report

    from mixbench.train import signals

    spent = {"gradient_pass": 0.0}
    signals._one_pass = timed(spent, "gradient_pass", signals._one_pass)
    steps = contenders(default_setting(args.cache, args.domains, 100_000, args.threads), args.domains)
    for run in steps.values():
        run(2)

    shares = {name: [] for name in steps} | {"doge_gradient_pass": [], "doge_rest": []}
    for repeat in range(args.repeats):
        names = list(steps)
        names = names[repeat % len(names) :] + names[: repeat % len(names)]
        times = {}
        for name in names:
            spent["gradient_pass"] = 0.0
            started = time.perf_counter()
            steps[name](args.steps)
            times[name] = (time.perf_counter() - started) / args.steps
            if name == "doge_step":
                times["doge_gradient_pass"] = spent["gradient_pass"] / args.steps
        times["doge_rest"] = times["doge_step"] - times["doge_gradient_pass"]
        for name, value in times.items():
            shares[name].append(value / times["plain_step"])
        print(f"repeat {repeat + 1}/{args.repeats}: plain step {times['plain_step'] * 1000:.0f} ms", file=sys.stderr)

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
