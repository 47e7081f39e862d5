"""Two CPU processes (gloo, launched by torchrun) and one process with the same global batch train the same model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_MODEL, TINY_TRAIN

SCRIPT = Path(__file__).with_name("distributed_train.py")
# A hung process group fails the test instead of stalling the suite.
TIMEOUT_S = 900


def _train(arguments: list[str], corpus_path: str, results: Path, method: str, out: Path) -> dict:
    settings = json.dumps({"model": TINY_MODEL, "train": TINY_TRAIN})
    environment = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    command = [sys.executable, *arguments, str(SCRIPT), corpus_path, str(results), method, str(out), settings]
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("method", ["natural", "doge", "doremi"])
def test_two_processes_match_one(small_corpus, tmp_path, method):
    # torchrun starts fresh interpreters. Forking this process, whose torch and logging threads may
    # hold locks, can leave the children waiting forever.
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    corpus_path = str(small_corpus.path)
    parallel = _train(torchrun, corpus_path, tmp_path / "r2", method, tmp_path / "two.json")
    single = _train([], corpus_path, tmp_path / "r1", method, tmp_path / "one.json")

    assert (parallel["processes"], single["processes"]) == (2, 1)
    np.testing.assert_allclose(parallel["trajectory"], single["trajectory"], rtol=1e-4)
    assert parallel["test"] == pytest.approx(single["test"], rel=1e-4)
    assert parallel["val"] == pytest.approx(single["val"], rel=1e-4)


LEAVE_GROUP_SCRIPT = """
import sys
import torch.distributed as dist
from mixbench.train.accelerator import leave_process_group

dist.init_process_group("gloo", init_method="file://" + sys.argv[1], rank=0, world_size=1)
before = dist.is_initialized()
leave_process_group()
print(before, dist.is_initialized())
leave_process_group()  # a second call, or a command that never joined a group, does nothing
"""


def test_leave_process_group_shuts_the_group_down(tmp_path):
    # In a fresh interpreter, so that the test process never joins a group.
    result = subprocess.run([sys.executable, "-c", LEAVE_GROUP_SCRIPT, str(tmp_path / "store")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["True", "False"]
