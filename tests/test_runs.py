import json
import logging
import os
import stat
import threading

import numpy as np
import pytest

from mixbench.engine import run_method
from mixbench.errors import ConfigError
from mixbench.runs import RunSpec, RunStore, folder_lock, write_json_atomic

from conftest import tree_state


def spec(**changes):
    fields = {"data": {"fingerprint": "abc"}, "model": {"d": 1}, "train": {"steps": 3}, "seed": 0, "mixture": (0.5, 0.5)}
    fields.update(changes)
    return RunSpec(**fields)


def test_spec_id_depends_on_content_not_role():
    assert spec().id == spec(role="reference").id
    assert spec().id != spec(seed=1).id
    assert spec().id != spec(mixture=(0.4, 0.6)).id
    assert spec().id != spec(data={"fingerprint": "abd"}).id


def test_spec_id_ignores_thread_count_and_float_noise():
    assert spec(train={"steps": 3, "threads": 1}).id == spec(train={"steps": 3, "threads": 2}).id
    assert spec(mixture=(1 / 3, 2 / 3)).id == spec(mixture=(1 / 3 + 1e-14, 2 / 3 - 1e-14)).id


def test_spec_round_trips_through_dict():
    original = spec(method={"name": "x", "eta": 0.1})
    assert RunSpec.from_dict(original.to_dict()).id == original.id


def test_store_reuses_complete_record(tmp_path):
    store = RunStore(tmp_path)
    calls = []

    def train(run_spec, directory):
        calls.append(run_spec.id)
        return {"status": "complete", "value": 1}

    first, reused_first = store.get_or_run(spec(), train)
    second, reused_second = store.get_or_run(spec(role="reference"), train)
    assert calls == [spec().id]
    assert (reused_first, reused_second) == (False, True)
    assert second["value"] == 1
    assert "git_commit" in first and first["mixbench_version"]


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "record.json"
    write_json_atomic(path, {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_unwritable_results_folder_is_rejected(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user that can write anywhere (root)")
        with pytest.raises(ConfigError, match="not writable"):
            RunStore(locked / "results")
    finally:
        os.chmod(locked, stat.S_IRWXU)


def test_file_in_place_of_results_folder_is_rejected(tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="results_dir"):
        RunStore(blocker)


def test_read_only_store_creates_nothing(tmp_path):
    missing = tmp_path / "reslts"
    store = RunStore(missing, read_only=True)
    assert store.record(spec()) is None
    assert list(store.records()) == []
    assert not missing.exists()


def test_read_only_store_reads_records(tmp_path, read_only):
    RunStore(tmp_path).get_or_run(spec(), lambda run_spec, directory: {"status": "complete", "value": 1})
    read_only(tmp_path)
    before = tree_state(tmp_path)

    store = RunStore(tmp_path, read_only=True)
    assert store.record(spec())["value"] == 1
    assert [record["id"] for record in store.records()] == [spec().id]
    with pytest.raises(ConfigError, match=f"cannot train run {spec().id} .*opened read-only"):
        store.get_or_run(spec(), lambda run_spec, directory: {"status": "complete"})
    with pytest.raises(ConfigError, match="opened read-only"):
        store.lock(spec())
    assert tree_state(tmp_path) == before


def test_read_only_folder_rejects_writable_store(tmp_path, read_only):
    read_only(tmp_path)
    with pytest.raises(ConfigError, match="Read-only file system.*results_dir=PATH"):
        RunStore(tmp_path / "results")


def test_changed_data_is_not_reused(tiny_setting, tmp_path):
    store = RunStore(tmp_path)
    first = run_method({"name": "stratified"}, tiny_setting, store, seed=0)
    again = run_method({"name": "stratified"}, tiny_setting, store, seed=0)
    assert again.final["id"] == first.final["id"]

    # The same settings on a corpus with another fingerprint must train a new run.
    class Changed:
        def __init__(self, corpus):
            self._corpus = corpus
            self.fingerprint = "0" * 64

        def __getattr__(self, name):
            return getattr(self._corpus, name)

    from mixbench.setting import CorpusSetting

    changed = CorpusSetting("test", Changed(tiny_setting.corpus), tiny_setting.domains, tiny_setting.model, tiny_setting.train)
    other = run_method({"name": "stratified"}, changed, store, seed=0)
    assert other.final["id"] != first.final["id"]
    assert len(list((tmp_path / "runs").glob("*/record.json"))) == 2


def test_record_has_metrics_compute_and_provenance(tiny_setting, tmp_path):
    result = run_method({"name": "natural"}, tiny_setting, RunStore(tmp_path), seed=0)
    record = result.final
    assert record["status"] == "complete"
    assert [row["step"] for row in record["metrics"]] == [4, 8, 12]
    assert len(record["test_losses"]) == 3
    assert all(value > 0 for value in record["test_bits_per_byte"])
    assert record["compute"]["train_tokens"] == 12 * 8 * 32
    assert record["compute"]["eval_tokens"] > 0
    np.testing.assert_allclose(sum(record["final_mixture"]), 1.0)
    assert record["spec"]["id"] == record["id"]
    assert not (tmp_path / "runs" / record["id"] / "checkpoint").exists()


def test_waiting_for_a_held_lock_is_logged(tmp_path, caplog):
    locked, release = threading.Event(), threading.Event()

    def holder():
        with folder_lock(tmp_path / "run"):
            locked.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    locked.wait(10)
    threading.Timer(0.2, release.set).start()
    with caplog.at_level(logging.INFO, logger="mixbench.runs"):
        with folder_lock(tmp_path / "run", "run abc (final) is being trained by another process"):
            pass
    thread.join()
    assert "run abc (final) is being trained by another process" in caplog.text

    # A free lock is taken without a line.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mixbench.runs"):
        with folder_lock(tmp_path / "run", "never logged"):
            pass
    assert "never logged" not in caplog.text
