"""Per-step cost of each online method's training step, relative to a plain step.

    python benchmarks/bench_steps.py --domains 7 --out results/bench_steps.json

Builds one harness backend per contender on the first `--domains` domains of the default corpus
with the default tiny model. Each backend has the method's own step hook attached: DoReMi's
reference losses, DoGE's per-domain and target gradients (also with `target=train`, which has no
target batch), or ODM's bandit. Each contender trains `--steps` timed steps per repeat, in rotating
order, `--repeats` times. Each figure is the median over repeats of the ratio of a contender's
training time per step to the plain (stratified) step timed in the same repeat. Evaluation is not part of a step. Aioli and Skill-It take plain steps between their
rounds, so their per-token cost is the plain step's plus their rounds' exploration passes, which
`bench_methods.py` measures on whole runs.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

CONTENDERS = ("stratified", "doremi", "doge", "doge_train_target", "odm")
# Contenders that are a method with changed settings: DoGE aligned with the other domains'
# training gradients (the published code's setting when every domain is a target), no target batch.
VARIANTS = {"doge_train_target": ("doge", {"target": "train"})}


def parse_args(argv=None) -> argparse.Namespace:
    from common import add_setting_arguments

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per contender and repeat (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=7, help="rotating repeats (default: %(default)s)")
    add_setting_arguments(parser, threads=1)
    return parser.parse_args(argv)


def build_contender(name, setting, reference_path):
    """Return (backend, method or None) for one contender, ready to train."""
    from mixbench.commands import method_config
    from mixbench.method import build_method

    name, overrides = VARIANTS.get(name, (name, None))
    spec = setting.spec(0, method=name)
    backend = setting.make_backend(spec)
    if name == "stratified":
        return backend, None
    method = build_method(method_config(name, overrides))
    method.use_prerequisites([], setting.context(0))
    if name == "doremi":
        # Any weights of the same model serve for timing; the reference's quality does not change its cost.
        backend.set_reference_model(setting.model, reference_path)
        backend.set_loss_normalization(method.normalization)
    return backend, method


def timed_steps(backend, method, steps: int, context) -> float:
    """Train `steps` steps with the method's hook and return the training seconds per step."""
    mixture = method.mixture_ if method is not None else [1.0 / len(backend.domains)] * len(backend.domains)
    hook = method.step_hook(context) if method is not None else None
    by_weights = bool(getattr(method, "by_loss_weights", False))
    before = backend.compute.train_time_s
    backend.train(steps, mixture, by_loss_weights=by_weights, hook=hook)
    return (backend.compute.train_time_s - before) / steps


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from common import default_setting, machine, report

    from mixbench.train.model import build_model

    # A long schedule, so that no contender reaches its end while being timed.
    setting = default_setting(args.cache, args.domains, 100_000, args.threads)
    context = setting.context(0)

    reference_path = os.path.join(tempfile.mkdtemp(prefix="mixbench-bench-"), "reference.pt")
    torch.save(build_model(setting.model, setting.corpus.vocab_size, seed=1).state_dict(), reference_path)
    contenders = {name: build_contender(name, setting, reference_path) for name in CONTENDERS}
    for backend, method in contenders.values():
        timed_steps(backend, method, 2, context)  # warm-up: allocations and first-call costs

    per_step = {name: [] for name in CONTENDERS}
    for repeat in range(args.repeats):
        # Rotate the order so that no contender always runs first after a pause.
        order = CONTENDERS[repeat % len(CONTENDERS):] + CONTENDERS[: repeat % len(CONTENDERS)]
        for name in order:
            per_step[name].append(timed_steps(*contenders[name], args.steps, context))
        print(f"repeat {repeat}: " + " ".join(f"{n}={per_step[n][-1] * 1e3:.0f}ms" for n in CONTENDERS), file=sys.stderr)

    ratios = {name: [value / base for value, base in zip(per_step[name], per_step["stratified"])] for name in CONTENDERS}
    report({
        "machine": machine(args.threads),
        "domains": args.domains,
        "steps_per_repeat": args.steps,
        "repeats": args.repeats,
        "median_step_ms": {name: 1e3 * statistics.median(values) for name, values in per_step.items()},
        "median_ratio_to_stratified": {name: statistics.median(values) for name, values in ratios.items()},
        "date": time.strftime("%Y-%m-%d"),
    }, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
