"""Optional experiment trackers: TensorBoard event files from real runs, unchanged results, and
clear errors for unknown or missing trackers."""

import sys

import numpy as np
import pytest

from conftest import TINY_MODEL, TINY_TRAIN
from mixbench.engine import run_method
from mixbench.errors import ConfigError
from mixbench.runs import RunStore
from mixbench.setting import CorpusSetting
from mixbench.trackers import tracker_names


def setting_with(corpus, **train) -> CorpusSetting:
    return CorpusSetting("test", corpus, corpus.domains, dict(TINY_MODEL), {**TINY_TRAIN, **train})


def _without_times(value):
    if isinstance(value, dict):
        return {key: _without_times(item) for key, item in value.items() if not key.endswith("_time_s")}
    if isinstance(value, list):
        return [_without_times(item) for item in value]
    return value


def test_tensorboard_logs_losses_and_mixture(small_corpus, tmp_path):
    pytest.importorskip("tensorboard", reason="pip install tensorboard to test the TensorBoard tracker")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    setting = setting_with(small_corpus, trackers=["tensorboard"], tracker_dir=str(tmp_path / "tb"))
    result = run_method({"name": "odm"}, setting, RunStore(tmp_path / "results"), seed=0)
    record = result.final
    logs = tmp_path / "tb" / f"final-{record['id']}"
    assert list(logs.glob("events.out.tfevents.*")), f"no event file in {logs}"

    events = EventAccumulator(str(logs))
    events.Reload()
    steps = int(TINY_TRAIN["steps"])
    train_loss = events.Scalars("train/loss")
    assert [event.step for event in train_loss] == list(range(1, steps + 1))
    assert all(np.isfinite(event.value) for event in train_loss)

    evaluated = [entry["step"] for entry in record["metrics"]]
    assert evaluated == [4, 8, 12]
    for index, domain in enumerate(setting.domains):
        logged = events.Scalars(f"val/{domain}")
        assert [event.step for event in logged] == evaluated
        expected = [entry["losses"][index] for entry in record["metrics"]]
        np.testing.assert_allclose([event.value for event in logged], expected, rtol=1e-6)
        mixture = {event.step: event.value for event in events.Scalars(f"mixture/{domain}")}
        assert sorted(mixture) == list(range(1, steps + 1))
        for entry in record["trajectory"]:
            assert mixture[entry["step"]] == pytest.approx(entry["mixture"][index], rel=1e-6)
    mean = events.Scalars("val/mean")
    np.testing.assert_allclose([event.value for event in mean], [np.mean(entry["losses"]) for entry in record["metrics"]], rtol=1e-6)

    # The settings are hparams of the run itself, with val/mean as their metric, not of a sub-run without scalars.
    from tensorboard.plugins.hparams import plugin_data_pb2

    assert [path for path in logs.iterdir() if path.is_dir()] == []
    content = events.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert [metric.name.tag for metric in experiment.metric_infos] == ["val/mean"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["method"].string_value == "odm"
    assert start.hparams["method.reward_scale"].number_value == pytest.approx(0.1)
    assert start.hparams["data.domains"].string_value == ",".join(setting.domains)


def test_resumed_tensorboard_run_purges_later_steps(tmp_path):
    pytest.importorskip("tensorboard", reason="pip install tensorboard to test the TensorBoard tracker")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.compat.proto.event_pb2 import SessionLog

    from mixbench.trackers import RunTracker

    def log_steps(steps, start_step):
        tracker = RunTracker(["tensorboard"], "final-x", "x", tmp_path, ["a", "b"], {"role": "final"}, start_step=start_step)
        for step in steps:
            tracker.log_validation(step, [float(step), float(step)])
        tracker.finish()

    # Interrupted after step 10 with its last checkpoint at step 8, then resumed from step 8.
    log_steps(range(1, 11), start_step=0)
    log_steps(range(9, 13), start_step=8)
    events = EventAccumulator(str(tmp_path / "final-x"))
    events.Reload()
    assert [event.step for event in events.Scalars("val/mean")] == list(range(1, 13))
    # Each writer marks where it starts: step 1 for a fresh run (which replaces an earlier run that
    # had no checkpoint) and step 9 after the resume, so that every reader drops the older steps 9 and 10.
    starts = []
    for path in sorted((tmp_path / "final-x").glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                starts.append(event.step)
    assert starts == [1, 9]


def test_interrupted_wandb_run_marked_failed():
    from mixbench.trackers import RunTracker

    class StandInRun:
        """Records how a W&B run was finished, in place of the wandb package's run."""

        def __init__(self):
            self.exit_codes = []

        def finish(self, exit_code=None):
            self.exit_codes.append(exit_code)

    class StandInTracker:
        def __init__(self):
            self.run = StandInRun()

        def finish(self):
            self.run.finish()

    tracker = RunTracker.__new__(RunTracker)
    tracker.trackers = [StandInTracker()]
    tracker.finish(interrupted=True)
    assert tracker.trackers[0].run.exit_codes == [1]
    tracker.trackers = [StandInTracker()]
    tracker.finish()
    assert tracker.trackers[0].run.exit_codes == [None]


@pytest.mark.parametrize("method", ["odm", "doremi"])
def test_trackers_leave_records_unchanged(small_corpus, tmp_path, method):
    pytest.importorskip("tensorboard", reason="pip install tensorboard to test the TensorBoard tracker")
    # ODM and the DoReMi proxy change their mixture every step, so a tracked run, trained one
    # step per call, must still match the untracked run, trained in chunks, exactly. DoReMi's
    # retrain also depends on the proxy's step-averaged mixture.
    config = {"name": method}
    plain = run_method(config, setting_with(small_corpus), RunStore(tmp_path / "plain"), seed=1).final
    tracked_setting = setting_with(small_corpus, trackers=["tensorboard"], tracker_dir=str(tmp_path / "tb"))
    tracked = run_method(config, tracked_setting, RunStore(tmp_path / "tracked"), seed=1).final

    assert tracked["id"] == plain["id"]
    assert tracked["test_losses"] == plain["test_losses"]
    assert tracked["final_mixture"] == plain["final_mixture"]
    for key in ("spec", "compute", "git_commit"):
        tracked.pop(key)
        plain.pop(key)
    assert _without_times(tracked) == _without_times(plain)


def test_trackers_off_by_default(small_corpus, tmp_path):
    setting = setting_with(small_corpus)
    assert "trackers" not in setting.train
    record = run_method({"name": "stratified"}, setting, RunStore(tmp_path / "results"), seed=0).final
    run_dir = tmp_path / "results" / "runs" / record["id"]
    assert not list(run_dir.rglob("events.out.tfevents.*"))


def test_missing_tensorboard_named_before_training(small_corpus, tmp_path, monkeypatch):
    # A None entry in sys.modules is how Python marks a module as not importable.
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    setting = setting_with(small_corpus, trackers=["tensorboard"], tracker_dir=str(tmp_path / "tb"))
    store = RunStore(tmp_path / "results")
    with pytest.raises(ConfigError, match=r"pip install tensorboard"):
        run_method({"name": "stratified"}, setting, store, seed=0)
    assert list(store.records()) == []
    assert not list((tmp_path / "results" / "runs").rglob("final_model.pt"))
    assert not (tmp_path / "tb").exists()


def test_missing_wandb_names_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ConfigError, match=r"'wandb' but the wandb package is not installed; run `pip install wandb`"):
        tracker_names({"trackers": ["wandb"]})


def test_unknown_tracker_rejected():
    with pytest.raises(ConfigError, match=r"'mlflow', which is not a supported tracker; use any of tensorboard, wandb"):
        tracker_names({"trackers": ["mlflow"]})


def test_tracker_names_default_empty():
    assert tracker_names({}) == []
    assert tracker_names({"trackers": None}) == []
    assert tracker_names({"trackers": []}) == []


def test_flat_config_names_training_method():
    from mixbench.runs import RunSpec
    from mixbench.trackers import _flat_config

    static = RunSpec(data={}, model={"d_model": 32}, train={"steps": 12}, seed=0, mixture=(0.5, 0.5), role="reference")
    config = _flat_config(static, "doremi")
    assert config["role"] == "reference"
    assert config["method"] == "doremi"
    assert config["model.d_model"] == 32
    assert "method" not in _flat_config(static)

    # A proxy's spec names its method, which wins over the task's.
    proxy = RunSpec(data={"domains": ["a", "b"], "fingerprint": "f0"}, model={}, train={}, seed=0,
                    method={"name": "doremi", "eta": 1.0, "reference_mixture": [0.5, 0.5]}, role="proxy")
    config = _flat_config(proxy, "other")
    assert config["method"] == "doremi"
    # Method settings tell the members of a sweep apart, and a list is logged as JSON text.
    assert config["method.eta"] == 1.0
    assert config["method.reference_mixture"] == "[0.5, 0.5]"
    assert config["data.domains"] == "a,b"
    assert config["data.fingerprint"] == "f0"
    assert config_of_static_mixture(static) == "0.5000,0.5000"


def config_of_static_mixture(spec) -> str:
    from mixbench.trackers import _flat_config

    return _flat_config(spec)["mixture"]


def test_tracked_runs_name_their_method(small_corpus, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard", reason="pip install tensorboard to test the TensorBoard tracker")
    from mixbench import engine, trackers

    logged = []

    def capture(spec, run_dir, domains, trained_by=None, start_step=0):
        logged.append(trackers._flat_config(spec, trained_by))
        return None

    monkeypatch.setattr(engine, "open_run_tracker", capture)
    setting = setting_with(small_corpus, trackers=["tensorboard"], tracker_dir=str(tmp_path / "tb"))
    run_method({"name": "doremi", "eta": 0.5}, setting, RunStore(tmp_path / "results"), seed=0)
    assert [config["role"] for config in logged] == ["reference", "proxy", "final"]
    assert [config["method"] for config in logged] == ["doremi"] * 3
    # The static reference and final runs carry the method's settings too, so a sweep's runs tell apart.
    assert [config["method.eta"] for config in logged] == [0.5] * 3
