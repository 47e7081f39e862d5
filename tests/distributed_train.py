"""Train one method on a prepared corpus and write its losses and mixtures as JSON.

Run by tests/test_distributed.py, once under torchrun with two processes and once as one process:
    python tests/distributed_train.py CORPUS RESULTS METHOD OUT SETTINGS_JSON
SETTINGS_JSON contains the model and training settings ({"model": ..., "train": ...}).
"""

import json
import sys


def main(corpus_path: str, results: str, method: str, out: str, settings: str) -> None:
    import torch

    from mixbench.data import load_corpus
    from mixbench.engine import run_method
    from mixbench.runs import RunStore
    from mixbench.setting import CorpusSetting
    from mixbench.train.accelerator import get_accelerator

    # Sums are bit-identical only at a fixed thread count, so the one-process run uses the same one.
    torch.set_num_threads(1)
    sizes = json.loads(settings)
    corpus = load_corpus(corpus_path)
    setting = CorpusSetting("parity", corpus, corpus.domains, dict(sizes["model"]), dict(sizes["train"]))
    config = {"name": method, "lr": sizes["train"]["lr"]} if method == "doge" else {"name": method}
    result = run_method(config, setting, RunStore(results), seed=0)
    if setting.is_main_process():
        # A proxy method's trajectory is the one its proxy run learned.
        learned = next((run for run in result.extra if run.get("role") == "proxy"), result.final)
        trajectory = [point["mixture"] for point in learned["trajectory"]]
        with open(out, "w") as handle:
            json.dump({"test": result.final["test_losses"], "trajectory": trajectory, "val": result.final["val_losses"],
                       "processes": get_accelerator().num_processes}, handle)


if __name__ == "__main__":
    from mixbench.train.accelerator import leave_process_group

    main(*sys.argv[1:6])
    leave_process_group()
