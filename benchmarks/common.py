"""Set-up and output shared by the benchmark scripts."""

import json
import os
import platform

CONF = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "conf")


def cpu_model() -> str:
    """Return the CPU's model name where Linux reports it, else the architecture."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def add_setting_arguments(parser, threads: int) -> None:
    """Add the options shared by the scripts that train on the default corpus: domains, threads, cache, output."""
    parser.add_argument("--domains", type=int, default=7, help="use the first N default domains (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=threads, help="torch threads (default: %(default)s)")
    parser.add_argument("--cache", default=".cache", help="corpus cache folder (default: %(default)s)")
    parser.add_argument("--out", help="write the figures as JSON to this path")


def machine(threads: int) -> dict:
    """Return the machine description that every figure is reported with."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": threads}


def default_setting(cache: str, domains: int, steps: int, threads: int):
    """Return a CorpusSetting of the tiny default model on the first `domains` default domains."""
    from omegaconf import OmegaConf

    from mixbench.data import prepare_corpus
    from mixbench.setting import CorpusSetting

    data = OmegaConf.to_container(OmegaConf.load(os.path.join(CONF, "data", "default.yaml")))
    data["cache_dir"] = os.path.abspath(cache)
    corpus = prepare_corpus(data)
    model = OmegaConf.to_container(OmegaConf.load(os.path.join(CONF, "model", "tiny.yaml")))
    train = OmegaConf.to_container(OmegaConf.load(os.path.join(CONF, "train", "cpu.yaml")))
    train.update(steps=steps, threads=threads, checkpoint_every=0)
    return CorpusSetting("bench", corpus, corpus.domains[:domains], model, train)


def report(figures: dict, out: str | None) -> None:
    """Print the figures as JSON, and write them to `out` when given."""
    print(json.dumps(figures, indent=1))
    if out:
        with open(out, "w") as handle:
            json.dump(figures, handle, indent=1)
