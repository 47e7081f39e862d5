"""Parameter accuracy: branch an online method's own run, fit A*^t, compare it with the method's A^t."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import TINY_MODEL, TINY_TRAIN
from mixbench.errors import ConfigError
from mixbench.law_accuracy.param import ParamOptions, param_sweep
from mixbench.method import OnlineMethod, Probe, register, unregister
from mixbench.runs import RunStore
from mixbench.sim.metrics import a_sim
from mixbench.sim.setting import SimSetting
from mixbench.simplex import uniform

REPO = Path(__file__).resolve().parents[1]

# World 3's true column sums lie at least 20% apart at the branch steps, so their ranks (half of
# a_sim) are stable. In world 0 two of them differ by 0.2% at step 216.
SIM = {
    "domains": 4, "world_seed": 3, "prerequisites": False, "asymmetry": 0.3, "interference": 0.15, "step_size": 0.01,
    "steps": 400, "tokens_per_step": 4096, "eval_noise": 0.0, "train_noise": 0.0, "warmup_steps": 40,
    "min_lr_ratio": 0.1, "sampling": "largest_remainder", "eval_every": 0, "checkpoint_every": 0,
}
# Aioli with short rounds: 4 domains x 1 x 4 = 16 exploration steps at the start of each 100-step round.
AIOLI = {"aioli": {"update_steps": 100, "lp_rounds": 1, "lp_steps": 4, "ema": 0.0}}


def options(**changes) -> ParamOptions:
    values = dict(name="param", seed=0, parent_method="aioli", method_overrides=AIOLI, rounds=(1, 2), window=5,
                  children=10, design="cover", nonnegative=False, eta=None)
    return ParamOptions(**(values | changes))


def sweep(tmp_path, setting=None, **changes) -> list[dict]:
    setting = setting or SimSetting(dict(SIM))
    return param_sweep(setting, RunStore(tmp_path), options(**changes), tmp_path)


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


class ScaledTruth(OnlineMethod):
    """A test method whose A^t is `scale` times the simulator's true A^t after a one-step probe."""

    name = "scaled_truth"
    world = None  # the simulated world, set by the fixture

    def __init__(self, scale: float = 1.0, update_steps: int = 100):
        self.scale = scale
        self.update_steps = update_steps

    @property
    def round_steps(self) -> int:
        return self.update_steps

    def explore(self, context):
        return [Probe(mixture=uniform(context.m), steps=1, role="exploration")]

    def fit(self, observations, context):
        # Without evaluation noise the probe's "after" losses are the true losses at the branch step.
        last = [observation for observation in observations if observation.role == "exploration"][-1]
        self.A_ = self.scale * type(self).world.true_A(last.losses)
        return self

    def optimize(self, context):
        return uniform(context.m)


@pytest.fixture
def scaled_truth():
    register(ScaledTruth)
    yield ScaledTruth
    unregister(ScaledTruth.name)
    ScaledTruth.world = None


@pytest.mark.parametrize("name", ["laws_param", "laws_param_sim"])
def test_configs_compose(name):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="laws", overrides=[f"experiment={name}"])
    experiment = ParamOptions.from_config(cfg.experiment)
    assert cfg.experiment.sweep == "param"
    assert experiment.parent_method == "aioli"
    assert experiment.window >= 1
    assert experiment.children >= 4
    if name == "laws_param_sim":
        assert cfg.experiment.setting == "sim"
        # The simulator benchmark's Aioli: published settings, so the same run as `mixbench benchmark experiment=sim`.
        assert experiment.method_overrides["aioli"]["update_steps"] is None


def test_noise_free_fit_matches_true_A(tmp_path):
    rows = sweep(tmp_path)
    assert [row["round"] for row in rows] == [1, 2]
    # Aioli's estimates come right after each round's 16 exploration steps.
    assert [row["step"] for row in rows] == [116, 216]
    details = json.loads((tmp_path / "param" / "laws_param.json").read_text())["rounds"]
    for row, detail in zip(rows, details):
        assert row["fitted_a_sim_true"] > 0.99
        assert row["fitted_r2"] > 0.99
        true_A, fitted_A = np.array(detail["true_A"]), np.array(detail["fitted_A"])
        # Over a 5-step window the fitted A* is the true A^t times the window's progress.
        assert np.allclose(fitted_A, detail["window_progress"] * true_A, rtol=0.05, atol=0.02 * np.abs(fitted_A).max())
        assert row["a_sim_true"] == pytest.approx(a_sim(true_A, np.array(detail["method_A"])))
        # A*'s own argmin is the best mixture under A*, by construction.
        assert row["regret_fitted_argmin"] == pytest.approx(0.0, abs=1e-12)

    run = json.loads(next((tmp_path / "branches").glob("*-run")).joinpath("record.json").read_text())
    estimates = [entry for entry in run["rounds"] if entry["A"] is not None]
    assert [estimates[r]["A"] for r in (1, 2)] == [detail["method_A"] for detail in details]
    # Each round starts from the previous round's choice and goes on with its own.
    for r, detail in zip((1, 2), details):
        assert detail["mixture_before"] == pytest.approx(estimates[r - 1]["mixture"])
        assert detail["mixtures"]["chosen"] == pytest.approx(estimates[r]["mixture"])
    table = read_csv(tmp_path / "param" / "laws_param.csv")
    assert [float(line["a_sim"]) for line in table] == pytest.approx([row["a_sim"] for row in rows], rel=1e-5)
    assert "## Round 2 (step 216)" in (tmp_path / "param" / "laws_param.md").read_text()


def test_scale_b_recovered(tmp_path, scaled_truth):
    setting = SimSetting(dict(SIM))
    scaled_truth.world = setting.world(0)
    scale = 7.0
    rows = sweep(tmp_path, setting, parent_method="scaled_truth", method_overrides={"scaled_truth": {"scale": scale}},
                 rounds=(0, 2), window=3)
    details = json.loads((tmp_path / "param" / "laws_param.json").read_text())["rounds"]
    for row, detail in zip(rows, details):
        # The loss drop over the window is progress * A_true p = (progress / scale) * A^t p.
        assert row["b"] == pytest.approx(detail["window_progress"] / scale, rel=0.03)
        assert row["b_r2"] > 0.99
        assert row["a_sim_true"] == pytest.approx(1.0)
        assert row["a_sim"] > 0.99


def test_rerun_reuses_records(tmp_path, monkeypatch):
    setting = SimSetting(dict(SIM))
    first = sweep(tmp_path, setting)

    def no_training(spec):
        raise AssertionError("the sweep trained again instead of reusing its records")

    monkeypatch.setattr(setting, "make_backend", no_training)
    again = sweep(tmp_path, setting)
    assert [row["a_sim"] for row in again] == [row["a_sim"] for row in first]
    assert [row["b"] for row in again] == [row["b"] for row in first]

    # A lost child is retrained from the saved state of its round, not by training the run again.
    monkeypatch.undo()
    child = sorted(next((tmp_path / "branches").glob("*-step216")).joinpath("children").glob("*.json"))[0]
    child.unlink()
    trained = []
    make_backend = setting.make_backend

    def recording_backend(spec):
        backend = make_backend(spec)
        train = backend.train
        backend.train = lambda steps, mixture, **kw: trained.append(steps) or train(steps, mixture, **kw)
        return backend

    monkeypatch.setattr(setting, "make_backend", recording_backend)
    third = sweep(tmp_path, setting)
    assert trained == [5]
    assert [row["a_sim"] for row in third] == [row["a_sim"] for row in first]


def test_bad_input(tmp_path):
    # 400 steps in rounds of 100 give at most 4 estimates: round 9 is rejected before the run trains.
    with pytest.raises(ConfigError, match=r"asks for round 9, but a run of 400 steps in rounds of 100 steps records at most 4"):
        sweep(tmp_path, rounds=(1, 9))
    assert not list((tmp_path / "runs").glob("*/record.json"))
    with pytest.raises(ConfigError, match=r"parent_method='stratified' is a static method.*aioli"):
        sweep(tmp_path, parent_method="stratified")
    with pytest.raises(ConfigError, match=r"window=90 from round 3 \(step 316\) passes the run's 400 steps: only 84"):
        sweep(tmp_path, rounds=(3,), window=90)
    with pytest.raises(ConfigError, match="children=4 is too few"):
        sweep(tmp_path, children=4)
    with pytest.raises(ConfigError, match=r"experiment.rounds=\[\] is invalid"):
        ParamOptions.from_config(OmegaConf.create({"name": "x", "parent_method": "aioli", "rounds": [], "seed": 0, "window": 5, "children": 6}))


def test_corpus_through_cli(text_folders, tmp_path):
    """The whole path on real text: Hydra config, the engine's Aioli run of a tiny model, children, report."""
    data = ["data=folders", f"data.path={text_folders}", f"data.cache_dir={tmp_path / 'cache'}",
            "data.val_fraction=0.15", "data.test_fraction=0.15"]
    model = [f"model.{key}={value}" for key, value in TINY_MODEL.items()]
    training = [f"training.{key}={str(value).lower() if isinstance(value, bool) else value}" for key, value in TINY_TRAIN.items()]
    aioli = ["experiment.method_overrides.aioli.update_steps=4", "experiment.method_overrides.aioli.lp_steps=1"]
    environment = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    result = subprocess.run(
        [sys.executable, "-m", "mixbench", "laws", "experiment=laws_param", *data, *model, *training, *aioli,
         "experiment.rounds=[1]", "experiment.window=4", "experiment.children=5"],
        cwd=tmp_path, capture_output=True, text=True, env=environment, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [row] = read_csv(tmp_path / "results" / "laws_param" / "laws_param.csv")
    # Rounds start every 4 steps with 3 exploration steps: round 1's estimate is made at step 7.
    assert (row["method"], row["round"], row["step"], row["children"]) == ("aioli", "1", "7", "5")
    assert -1.0 <= float(row["a_sim"]) <= 1.0
    assert all(row[key] != "" for key in ("b", "b_r2", "fitted_r2", "regret_method_step"))
    assert "a_sim_true" not in row
    assert "## Round 1 (step 7)" in result.stdout


def test_misspelt_parent_method():
    experiment = OmegaConf.create({"name": "x", "parent_method": "aioly", "rounds": [1], "seed": 0, "window": 5, "children": 6})
    with pytest.raises(ConfigError, match=r"parent_method='aioly' is not a registered method. Did you mean "
                                          r"experiment.parent_method=aioli\? The online methods.*: aioli, doge"):
        ParamOptions.from_config(experiment)


def test_rounds_beyond_the_recorded_estimates_are_named():
    from mixbench.law_accuracy.param import branch_points

    # A run whose method skipped some rounds' estimates: two recorded where four rounds fit.
    record = {"id": "r1", "spec": {"train": {"steps": 400}},
              "rounds": [{"step": 0, "A": [[1.0]]}, {"step": 100}, {"step": 200, "A": [[2.0]]}]}
    with pytest.raises(ConfigError, match=r"asks for round 3, but the aioli run recorded 2 estimates of A \(rounds 0 to 1, at steps 0, 200\)"):
        branch_points(record, options(rounds=(1, 3)))
    assert [point["step"] for point in branch_points(record, options(rounds=(0, 1)))] == [0, 200]
