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
    result = run_method({"name": "natural"}, tiny_setting, store, seed=0)
    resumed = result.final
    assert resumed["test_losses"] == reference["test_losses"]
    assert resumed["metrics"] == reference["metrics"]
    assert resumed["compute"]["train_tokens"] == reference["compute"]["train_tokens"]
    assert np.array_equal(resumed["final_mixture"], reference["final_mixture"])

    # The method's wall time is its run's, both parts counted, also when the run is reused later.
    assert result.wall_time_s == resumed["compute"]["wall_time_s"] > 0
    again = run_method({"name": "natural"}, tiny_setting, store, seed=0)
    assert again.wall_time_s == resumed["compute"]["wall_time_s"]


def test_checkpoint_left_mid_save_is_recovered(tmp_path):
    from mixbench.engine import LoopState, _load_checkpoint, _save_checkpoint

    class Backend:
        def __init__(self, step):
            self.step = step

        def snapshot(self):
            return {"step": self.step}

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _save_checkpoint(run_dir, Backend(4), LoopState(mixture=np.array([0.5, 0.5])), None)
    _save_checkpoint(run_dir, Backend(8), LoopState(mixture=np.array([0.5, 0.5])), None)
    assert _load_checkpoint(run_dir)[0] == {"step": 8}

    # A kill between the two renames leaves only the previous checkpoint, which is used.
    (run_dir / "checkpoint").rename(run_dir / ".checkpoint-old")
    # A kill while writing leaves a temporary folder, which is removed.
    (run_dir / ".checkpoint-abc123").mkdir()
    (run_dir / ".checkpoint-abc123" / "state.pt").write_bytes(b"partial")
    assert _load_checkpoint(run_dir)[0] == {"step": 8}
    assert not (run_dir / ".checkpoint-abc123").exists()
