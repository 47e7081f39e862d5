"""Harness throughput against a plain PyTorch loop and transformers' Trainer, plus model FLOPs utilisation.

    python benchmarks/bench_harness.py --out results/bench_harness.json

All three train the same model on the same per-domain windows of the default corpus, with the same
batch, optimizer and thread count. Rounds are interleaved (plain, harness, Trainer, ...) so that
machine noise hits all three alike; the script reports the median tokens per second of each and the
median of the per-round ratios, and writes every round's rates and ratios too. Model FLOPs
utilisation divides the harness's model FLOPs per second (6N per token plus attention) by the peak
of a large matmul measured in the same script.
"""

import argparse
import json
import os
import statistics
import sys
import time


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round and contender (default: %(default)s)")
    parser.add_argument("--model", default="tiny", help="model config in conf/model (default: %(default)s)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override model settings, e.g. --set d_model=256 d_ff=1024 for a 3M-parameter model")
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per step (default: %(default)s)")
    parser.add_argument("--bf16", action="store_true", help="also time the harness with bf16 autocast")
    parser.add_argument("--cache", default=".cache", help="corpus cache folder (default: %(default)s)")
    parser.add_argument("--out", help="write the figures as JSON to this path")
    return parser.parse_args(argv)


def matmul_peak(dtype, size: int = 1024, repeats: int = 20) -> float:
    """Return the best FLOP/s of a square matmul in `dtype` over a few timed repeats."""
    import torch

    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = max(best, 2 * size**3 / (time.perf_counter() - started))
    return best


def main(argv=None) -> int:
    args = parse_args(argv)
    import numpy as np
    import torch
    from omegaconf import OmegaConf

    torch.set_num_threads(args.threads)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__))))
    from common import machine
    from contenders import HarnessContender, PlainLoop, TrainerContender

    from mixbench.data import prepare_corpus
    from mixbench.train.model import count_parameters, flops_per_token

    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "conf")
    model = OmegaConf.to_container(OmegaConf.load(os.path.join(root, "model", f"{args.model}.yaml")))
    model.update(OmegaConf.to_container(OmegaConf.from_dotlist(args.set)))
    train = OmegaConf.to_container(OmegaConf.load(os.path.join(root, "train", "cpu.yaml")))
    train.update(batch_size=args.batch_size, steps=10_000, threads=args.threads)
    data = OmegaConf.to_container(OmegaConf.load(os.path.join(root, "data", "default.yaml")))
    data["cache_dir"] = os.path.abspath(args.cache)
    corpus = prepare_corpus(data)
    mixture = np.full(len(corpus.domains), 1.0 / len(corpus.domains))

    contenders = {
        "plain": PlainLoop(corpus, model, train, mixture),
        "harness": HarnessContender(corpus, model, train, mixture, bf16=False),
        "trainer": TrainerContender(corpus, model, train, mixture),
    }
    if args.bf16:
        contenders["harness_bf16"] = HarnessContender(corpus, model, train, mixture, bf16=True)
    for contender in contenders.values():
        contender.run(3)  # warm up allocators and kernels

    rates = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, contender in contenders.items():
            started = time.perf_counter()
            contender.run(args.steps)
            rates[name].append(args.steps * args.batch_size * model["context"] / (time.perf_counter() - started))

    harness = contenders["harness"].backend
    parameters = count_parameters(harness.model)
    model_flops = flops_per_token(model, parameters["non_embedding"])
    peak32 = matmul_peak(torch.float32)
    pairs = {"harness_to_plain": ("harness", "plain"), "harness_to_trainer": ("harness", "trainer")}
    if args.bf16:
        pairs["bf16_to_fp32"] = ("harness_bf16", "harness")
    # The ratio of each interleaved pair, round by round; the headline figures are their medians.
    per_round = {key: [a / b for a, b in zip(rates[first], rates[second])] for key, (first, second) in pairs.items()}
    figures = {
        "machine": machine(args.threads),
        "model": args.model,
        "model_overrides": args.set,
        "non_embedding_parameters": parameters["non_embedding"],
        "tokens_per_second": {name: statistics.median(values) for name, values in rates.items()},
        "ratio_harness_to_plain": statistics.median(per_round["harness_to_plain"]),
        "ratio_harness_to_trainer": statistics.median(per_round["harness_to_trainer"]),
        "matmul_peak_fp32_gflops": peak32 / 1e9,
        "mfu_fp32": statistics.median(rates["harness"]) * model_flops / peak32,
        "date": time.strftime("%Y-%m-%d"),
        "tokens_per_second_per_round": rates,
        "ratios_per_round": per_round,
    }
    if args.bf16:
        peak16 = matmul_peak(torch.bfloat16)
        figures["matmul_peak_bf16_gflops"] = peak16 / 1e9
        figures["mfu_bf16"] = statistics.median(rates["harness_bf16"]) * model_flops / peak16
        figures["ratio_bf16_to_fp32"] = statistics.median(per_round["bf16_to_fp32"])
    print(json.dumps(figures, indent=1))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(figures, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
