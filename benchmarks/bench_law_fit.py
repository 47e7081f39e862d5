"""Time fitting the log-linear (dml) mixing law on the RegMix runs: 512 runs x 17 domains x 13 targets.

    python benchmarks/bench_law_fit.py --out results/bench_law_fit.json

Reports the median wall time of several fits, with BLAS and OpenMP limited to --threads
threads. The limit is set in the environment before numpy is imported, so every library
sees it, and also passed to the law.
"""

import argparse
import os
import sys

DEFAULT_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "reference_runs", "regmix")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DEFAULT_DATA,
                        help="folder with train_mixture_1m.csv and train_pile_loss_1m.csv (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="number of timed fits (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads (default: %(default)s)")
    parser.add_argument("--out", help="write the result as JSON to this path")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    for variable in THREAD_VARIABLES:
        os.environ[variable] = str(args.threads)

    # Imported only now, so that the thread limits above are in place first.
    import json
    import platform
    import statistics
    import time
    from pathlib import Path

    import numpy as np
    import scipy

    from mixbench.law_accuracy import match_targets_to_domains, read_run_table
    from mixbench.laws import get_law

    data = Path(args.data)
    if not (data / "train_mixture_1m.csv").is_file():
        print(f"RegMix tables not found in {data}; pass --data FOLDER.", file=sys.stderr)
        return 2
    table = read_run_table(data / "train_mixture_1m.csv", data / "train_pile_loss_1m.csv")
    own_domains = match_targets_to_domains(table.domains, table.targets)

    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        get_law("dml", n_threads=args.threads).fit(table.P, table.L, own_domains=own_domains)
        seconds.append(time.perf_counter() - start)

    result = {
        "benchmark": "law_fit_dml",
        "runs": int(table.P.shape[0]),
        "domains": int(table.P.shape[1]),
        "targets": int(table.L.shape[1]),
        "repeats": args.repeats,
        "threads": args.threads,
        "median_s": statistics.median(seconds),
        "min_s": min(seconds),
        "seconds": seconds,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "cpu_count": os.cpu_count(),
    }
    print(f"dml fit on {result['runs']} runs x {result['targets']} targets: "
          f"median {result['median_s']:.3f} s over {args.repeats} repeats ({args.threads} thread(s))")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        temporary = out.with_name(f".{out.name}.tmp")
        temporary.write_text(json.dumps(result, indent=2) + "\n")
        os.replace(temporary, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
