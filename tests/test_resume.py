"""A run stopped after a checkpoint and resumed ends bit-identical to an uninterrupted run."""

import numpy as np
import pytest

from mixbench.runs import RunStore
from mixbench.train.harness import HarnessBackend


class Interrupted(Exception):
    pass


def test_resume_after_checkpoint_is_bit_identical(tiny_setting, tmp_path, monkeypatch):
    from mixbench.engine import run_method

    reference = run_method({"name": "natural"}, tiny_setting, RunStore(tmp_path / "a"), seed=0).final

    # Stop the second run in the middle of its third chunk, after the checkpoint at step 8.
    original_train = HarnessBackend.train

    def stopping_train(self, steps, mixture, **options):
        if self.step >= 8:
            raise Interrupted()
        return original_train(self, steps, mixture, **options)

    store = RunStore(tmp_path / "b")
    monkeypatch.setattr(HarnessBackend, "train", stopping_train)
    with pytest.raises(Interrupted):
        run_method({"name": "natural"}, tiny_setting, store, seed=0)
    run_dir = tmp_path / "b" / "runs" / reference["id"]
    assert (run_dir / "checkpoint" / "state.pt").exists()
    assert not (run_dir / "record.json").exists()

    monkeypatch.setattr(HarnessBackend, "train", original_train)
    resumed = run_method({"name": "natural"}, tiny_setting, store, seed=0).final
    assert resumed["test_losses"] == reference["test_losses"]
    assert resumed["metrics"] == reference["metrics"]
    assert resumed["compute"]["train_tokens"] == reference["compute"]["train_tokens"]
    assert np.array_equal(resumed["final_mixture"], reference["final_mixture"])
