"""Two CPU processes (gloo) and one process with the same global batch train the same model."""

import json

import numpy as np
import pytest
from accelerate import debug_launcher

from conftest import TINY_MODEL, TINY_TRAIN


def _train(corpus_path: str, results: str, method: str, out: str) -> None:
    import torch
    from accelerate.state import AcceleratorState

    import mixbench.train.accelerator as accelerator
    from mixbench.data import load_corpus
    from mixbench.engine import run_method
    from mixbench.runs import RunStore
    from mixbench.setting import CorpusSetting

    torch.set_num_threads(1)
    # A forked process inherits the parent's Accelerator; start from a clean state.
    accelerator._current = None
    AcceleratorState._reset_state(reset_partial_state=True)
    corpus = load_corpus(corpus_path)
    setting = CorpusSetting("parity", corpus, corpus.domains, dict(TINY_MODEL), dict(TINY_TRAIN))
    config = {"name": method, "lr": TINY_TRAIN["lr"]} if method == "doge" else {"name": method}
    result = run_method(config, setting, RunStore(results), seed=0)
    if setting.is_main_process():
        # A proxy method's trajectory is the one its proxy run learned.
        learned = next((run for run in result.extra if run.get("role") == "proxy"), result.final)
        trajectory = [point["mixture"] for point in learned["trajectory"]]
        with open(out, "w") as handle:
            json.dump({"test": result.final["test_losses"], "trajectory": trajectory, "val": result.final["val_losses"]}, handle)


@pytest.mark.parametrize("method", ["natural", "doge", "doremi"])
def test_two_processes_match_one(small_corpus, tmp_path, method):
    corpus_path = str(small_corpus.path)
    two, one = tmp_path / "two.json", tmp_path / "one.json"
    debug_launcher(lambda: _train(corpus_path, str(tmp_path / "r2"), method, str(two)), num_processes=2)
    _train(corpus_path, str(tmp_path / "r1"), method, str(one))

    parallel, single = json.loads(two.read_text()), json.loads(one.read_text())
    np.testing.assert_allclose(parallel["trajectory"], single["trajectory"], rtol=1e-4)
    assert parallel["test"] == pytest.approx(single["test"], rel=1e-4)
    assert parallel["val"] == pytest.approx(single["val"], rel=1e-4)
