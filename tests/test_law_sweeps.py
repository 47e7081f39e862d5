"""Static and dynamic law sweeps on the small real-text corpus (tiny model, few steps) and the simulator."""

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from conftest import TINY_MODEL, TINY_TRAIN
from mixbench.law_accuracy.branch import BranchOptions, branch_sweep
from mixbench.law_accuracy.sweeps import StaticOptions, static_sweep
from mixbench.runs import RunStore
from mixbench.sim.setting import SimSetting

REPO = Path(__file__).resolve().parents[1]

SIM = {
    "domains": 4, "world_seed": 0, "prerequisites": False, "asymmetry": 0.3, "interference": 0.15, "step_size": 0.01,
    "steps": 400, "tokens_per_step": 4096, "eval_noise": 0.0, "train_noise": 0.0, "warmup_steps": 40,
    "min_lr_ratio": 0.1, "sampling": "largest_remainder", "eval_every": 0, "checkpoint_every": 0,
}


def static_options(**changes) -> StaticOptions:
    options = dict(name="sweep", seed=0, mixtures=6, design="cover", held_out_fraction=0.34,
                   laws=["linear", "dml", "trees"], cv_folds=0, loss_split="val")
    return StaticOptions(**(options | changes))


def branch_options(**changes) -> BranchOptions:
    options = dict(name="branch", seed=0, branch_step=6, window=4, children=6, design="cover",
                   held_out_fraction=0.34, parent_mixture="uniform", nonnegative=False)
    return BranchOptions(**(options | changes))


def read_report(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("name", ["laws_static", "laws_static_sim", "laws_dynamic", "laws_dynamic_sim"])
def test_sweep_configs_compose(name):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="laws", overrides=[f"experiment={name}"])
    assert cfg.experiment.name == name
    assert cfg.experiment.sweep in ("static", "dynamic")
    if name.endswith("_sim"):
        assert cfg.experiment.setting == "sim"
        assert cfg.sim.domains >= 2
    else:
        assert cfg.training.steps >= 150
    if name == "laws_static":
        assert cfg.experiment.mixtures >= 12


def test_static_sweep_tiny_corpus(tiny_setting, tmp_path):
    store = RunStore(tmp_path / "results")
    rows = static_sweep(tiny_setting, store, static_options(), tmp_path / "results" / "sweep")

    assert {row["test_set"] for row in rows} == {"held_out"}
    assert {(row["n_train"], row["n_test"]) for row in rows} == {(4, 2)}
    assert {row["law"] for row in rows} == {"linear", "dml", "trees"}
    assert len(rows) == 3 * len(tiny_setting.domains)
    linear = [row for row in rows if row["law"] == "linear"]
    assert all(row["r2"] is not None and row["in_sample_r2"] is not None and row["spearman"] is None for row in linear)
    assert {row["status"] for row in linear} == {"partial: spearman needs 3 or more test runs, got 2"}
    report = tmp_path / "results" / "sweep" / "laws_static.csv"
    assert read_report(report)[0]["law"] == "linear"
    markdown = report.with_suffix(".md").read_text()
    assert "## Averages over targets" in markdown
    assert "mean RMSE" in markdown

    runs = json.loads((tmp_path / "results" / "sweep" / "laws_static_runs.json").read_text())["runs"]
    assert len(runs) == 6
    assert sorted(run["split"] for run in runs) == ["fit"] * 4 + ["held_out"] * 2
    assert all((store.root / "runs" / run["id"] / "record.json").exists() for run in runs)

    static_sweep(tiny_setting, store, static_options(), tmp_path / "results" / "sweep")
    again = json.loads((tmp_path / "results" / "sweep" / "laws_static_runs.json").read_text())["runs"]
    assert all(run["reused"] for run in again)


def test_static_sweep_sim_law_fits(tmp_path):
    setting = SimSetting(dict(SIM, domains=3))
    rows = static_sweep(setting, RunStore(tmp_path), static_options(mixtures=10, held_out_fraction=0.3, laws=["dml"], cv_folds=5),
                        tmp_path / "sweep")
    held = [row for row in rows if row["test_set"] == "held_out"]
    assert len(held) == 3
    assert min(row["r2"] for row in held) > 0.99
    assert {row["test_set"] for row in rows} == {"held_out", "cv"}


def test_rerun_with_other_settings_names_the_replaced_report(tmp_path, caplog):
    setting = SimSetting(dict(SIM, domains=3))
    folder = tmp_path / "sweep"
    options = static_options(mixtures=9, held_out_fraction=0.34, laws=["linear"])
    static_sweep(setting, RunStore(tmp_path), options, folder)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mixbench.law_accuracy.sweeps"):
        static_sweep(setting, RunStore(tmp_path), options, folder)
    assert "replaces" not in caplog.text

    # Longer runs give another report: the warning names what changed, before the runs train.
    longer = SimSetting(dict(SIM, domains=3, steps=500))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mixbench.law_accuracy.sweeps"):
        static_sweep(longer, RunStore(tmp_path), static_options(mixtures=9, held_out_fraction=0.34, laws=["dml"]), folder)
    warning = next(record for record in caplog.records if "replaces" in record.getMessage())
    assert warning.levelno == logging.WARNING
    assert "experiment.laws: ['linear'] -> ['dml']" in warning.getMessage()
    assert "train.steps: 400 -> 500" in warning.getMessage()
    first_run = next(record for record in caplog.records if "static sweep run 1/9" in record.getMessage())
    assert caplog.records.index(warning) < caplog.records.index(first_run)


def test_branch_sweep_tiny_corpus(tiny_setting, tmp_path, monkeypatch):
    rows, fitted = branch_sweep(tiny_setting, branch_options(), tmp_path)

    m = len(tiny_setting.domains)
    assert len(rows) == m
    assert {(row["n_train"], row["n_test"]) for row in rows} == {(4, 2)}
    assert all(row["in_sample_r2_all"] is not None for row in rows)
    assert np.shape(fitted["A"]) == (m, m)
    saved = json.loads((tmp_path / "branch" / "laws_dynamic_A.json").read_text())
    assert saved["A"] == fitted["A"]
    assert saved["branch_step"] == 6
    assert (tmp_path / "branch" / "laws_dynamic.csv").exists()
    assert "In-sample R^2 with all 6 children" in (tmp_path / "branch" / "laws_dynamic.md").read_text()

    [branch] = list((tmp_path / "branches").iterdir())
    assert branch.name.endswith("-step6")
    children = sorted((branch / "children").glob("*.json"))
    assert len(children) == 6
    record = json.loads(children[0].read_text())
    assert record["window"] == 4
    assert np.allclose(np.array(record["after"]) - np.array(record["before"]), record["dL"])

    # A second run reuses every record and trains nothing.
    def no_training(spec):
        raise AssertionError("the branch sweep trained again instead of reusing its records")

    monkeypatch.setattr(tiny_setting, "make_backend", no_training)
    again, _ = branch_sweep(tiny_setting, branch_options(), tmp_path)
    assert [row["r2"] for row in again] == [row["r2"] for row in rows]


def test_branch_sweep_reuses_parent_state(tmp_path, monkeypatch):
    setting = SimSetting(dict(SIM))
    branch_sweep(setting, branch_options(branch_step=200, window=5, children=8), tmp_path)
    [branch] = list((tmp_path / "branches").iterdir())
    assert (branch / "parent_state.pt").exists()
    first = json.loads((branch / "parent.json").read_text())

    # More children of the same parent restore its saved state: every training call is a child's window.
    steps_trained = []
    make_backend = setting.make_backend

    def recording_backend(spec):
        backend = make_backend(spec)
        train = backend.train
        backend.train = lambda steps, mixture, **options: steps_trained.append(steps) or train(steps, mixture, **options)
        return backend

    monkeypatch.setattr(setting, "make_backend", recording_backend)
    branch_sweep(setting, branch_options(branch_step=200, window=5, children=12), tmp_path)
    assert steps_trained == [5] * 4
    assert json.loads((branch / "parent.json").read_text()) == first
    assert len(list((branch / "children").glob("*.json"))) == 12


def test_noise_free_sim_true_law(tmp_path):
    setting = SimSetting(dict(SIM))
    rows, fitted = branch_sweep(setting, branch_options(branch_step=200, window=5, children=12, held_out_fraction=0.25), tmp_path)

    assert all(row["true_law_r2"] >= 0.99 for row in rows)
    assert fitted["true_law_r2_pooled"] >= 0.99
    # 9 fit children for the 4 parameters per target of 4 domains.
    assert {row["status"] for row in rows} == {"ok"}
    assert all(row["in_sample_r2_all"] >= 0.99 for row in rows)
    assert all(row["r2"] >= 0.95 for row in rows)
    assert fitted["relative_error"] < 0.05
    assert fitted["scale_vs_true"] == pytest.approx(1.0, abs=0.05)
    # Two column sums of this world differ by 1%, so a 2% error may swap their ranks and halve Spearman.
    assert fitted["a_sim"] >= 0.85
    assert np.shape(fitted["true_A"]) == (4, 4)


def test_dynamic_exact_fit_flagged(tmp_path):
    # 6 children hold out 2 and fit on 4, one per parameter of each target's row of A.
    rows, _ = branch_sweep(SimSetting(dict(SIM)), branch_options(branch_step=200, window=5, children=6), tmp_path)
    assert {row["status"] for row in rows} == {
        "partial: spearman needs 3 or more test runs, got 2; exactly determined: the dynamic law has 4 parameters per "
        "target for 4 domains and was fitted on 4 runs, so its predictions are not constrained; fit on more runs"}


def test_sim_children_draw_their_own_noise(tmp_path):
    # Children restore one parent state; each must still get an independent draw of evaluation noise.
    setting = SimSetting(dict(SIM, eval_noise=0.05))
    branch_sweep(setting, branch_options(branch_step=200, window=5, children=8), tmp_path)
    [branch] = [path for path in (tmp_path / "branches").iterdir() if path.is_dir()]
    children = [json.loads(path.read_text()) for path in sorted((branch / "children").glob("*.json"))]
    noise = np.array([np.subtract(child["after"], child["true_losses"]) for child in children])
    assert noise.shape == (8, 4)
    assert np.all(np.abs(noise).max(axis=1) > 0)
    assert len({tuple(np.round(row, 12)) for row in noise}) == 8
    # The noise is a function of the child, so a rerun into a fresh folder gives the same records.
    again = tmp_path / "again"
    branch_sweep(SimSetting(dict(SIM, eval_noise=0.05)), branch_options(branch_step=200, window=5, children=8), again)
    [branch_again] = [path for path in (again / "branches").iterdir() if path.is_dir()]
    for child in children:
        assert json.loads((branch_again / "children" / f"{child['key']}.json").read_text())["after"] == child["after"]


def test_two_held_out_runs_leave_spearman_blank(caplog):
    from mixbench.law_accuracy.scoring import prediction_metrics
    from mixbench.law_accuracy.sweeps import check_split, split_rows

    # Two points rank the same or the opposite way, whatever a law predicts.
    two = prediction_metrics(np.array([1.0, 2.0]), np.array([1.5, 1.6]))
    assert np.isnan(two["spearman"])
    assert two["r2"] == pytest.approx(0.18)
    three = prediction_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.5, 1.6, 1.4]))
    assert three["spearman"] == pytest.approx(-0.5)

    # The sweep checks its split before any run trains, and warns there; splitting the runs does not warn again.
    check_split(6, 0.34, 2, "experiment.mixtures", "fitting the laws")
    assert "experiment.mixtures=6 holds out only 2" in caplog.text
    caplog.clear()
    mixtures = np.random.default_rng(0).dirichlet(np.ones(3), size=6)
    fit, held_out = split_rows(mixtures, 0.34, seed=0)
    assert (len(fit), len(held_out)) == (4, 2)
    assert "holds out only" not in caplog.text
    check_split(9, 0.34, 2, "experiment.mixtures", "fitting the laws")
    assert "holds out only" not in caplog.text


def test_branch_sweep_too_few_children(tmp_path):
    from mixbench.errors import ConfigError

    with pytest.raises(ConfigError, match="children=4 is too few"):
        branch_sweep(SimSetting(dict(SIM)), branch_options(branch_step=200, children=4), tmp_path)
    with pytest.raises(ConfigError, match="passes the parent's 400 training steps"):
        branch_sweep(SimSetting(dict(SIM)), branch_options(branch_step=390, window=20), tmp_path)


def mixbench(*args, cwd):
    environment = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run([sys.executable, "-m", "mixbench", "laws", *args], cwd=cwd, capture_output=True, text=True,
                          env=environment, timeout=600)


def test_dynamic_sim_through_cli(tmp_path):
    result = mixbench("experiment=laws_dynamic_sim", "sim.eval_noise=0", "experiment.window=5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = tmp_path / "results" / "laws_dynamic_sim"
    rows = read_report(folder / "laws_dynamic.csv")
    assert len(rows) == 5
    assert min(float(row["true_law_r2"]) for row in rows) >= 0.99
    assert "a_sim" in json.loads((folder / "laws_dynamic_A.json").read_text())
    assert "Simulator truth at step 300" in result.stdout


def test_sweep_bad_settings_exit_2(tmp_path):
    result = mixbench("experiment=laws_dynamic_sim", "experiment.children=3", cwd=tmp_path)
    assert result.returncode == 2
    assert "experiment.children=3 is too few" in result.stderr
    result = mixbench("experiment=laws_static_sim", "experiment.held_out_fraction=1.5", cwd=tmp_path)
    assert result.returncode == 2
    assert "experiment.held_out_fraction=1.5 is invalid" in result.stderr


def test_static_corpus_through_cli(text_folders, tmp_path):
    data = ["data=folders", f"data.path={text_folders}", f"data.cache_dir={tmp_path / 'cache'}",
            "data.val_fraction=0.15", "data.test_fraction=0.15"]
    model = [f"model.{key}={value}" for key, value in TINY_MODEL.items()]
    training = [f"training.{key}={str(value).lower() if isinstance(value, bool) else value}" for key, value in TINY_TRAIN.items()]
    result = mixbench("experiment=laws_static", *data, *model, *training, "experiment.mixtures=5",
                      "experiment.cv_folds=0", "experiment.laws=[linear]", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_report(tmp_path / "results" / "laws_static" / "laws_static.csv")
    assert [row["n_train"] for row in rows] == ["3"] * 3
    # Two held-out runs give R^2 but no rank correlation, and 3 fit runs fix the linear law's 3 parameters.
    assert all(row["status"].startswith("partial: spearman needs 3 or more test runs, got 2; exactly determined")
               for row in rows)
    assert all(row["r2"] != "" and row["spearman"] == "" for row in rows)
    assert "| linear | held_out | 3 | 2 |" in result.stdout


def test_static_split_checked_before_training():
    from mixbench.errors import ConfigError
    from mixbench.law_accuracy.sweeps import check_law_runs, fewest_runs

    # 2 of 3 runs are always held out, so a lower fraction cannot help and is not suggested. Each
    # law's own need at 3 domains is named, so the count suggested is one that lets it fit.
    with pytest.raises(ConfigError, match=r"experiment.mixtures=3 leaves 1 runs to fit on") as error:
        check_law_runs(static_options(mixtures=3, held_out_fraction=0.25, laws=["linear", "dml"]), 3)
    assert "linear needs 3 (experiment.mixtures=5 or more); dml needs 4 (experiment.mixtures=6 or more)" in str(error.value)
    assert str(error.value).endswith("To fix it, raise experiment.mixtures.")
    with pytest.raises(ConfigError, match=r"To fix it, raise experiment.mixtures, lower experiment.held_out_fraction or "
                                          r"choose laws that need fewer runs \(experiment.laws=\[linear\] needs the fewest\)"):
        check_law_runs(static_options(mixtures=8, held_out_fraction=0.75, laws=["dml"]), 3)
    assert [fewest_runs(0.25, fit) for fit in (2, 4, 5)] == [4, 6, 7]


def test_branch_children_checked_against_split(tmp_path):
    from mixbench.errors import ConfigError

    # 5 children exceed the 4 domains, but 2 are held out and the fit on 3 cannot determine A.
    with pytest.raises(ConfigError, match=r"experiment.children=5 is too few: .* leaves 3 to fit on, but the dynamic law "
                                          r"\(4 parameters per target for 4 domains\) needs at least 4") as error:
        branch_sweep(SimSetting(dict(SIM)), branch_options(branch_step=200, children=5), tmp_path)
    assert "use experiment.children=6 or more." in str(error.value)
    assert not (tmp_path / "branches").exists()


def test_branch_split_warning_names_children(caplog):
    from mixbench.law_accuracy.sweeps import check_split

    check_split(6, 0.25, 3, "experiment.children", "the dynamic law")
    assert "raise experiment.held_out_fraction or experiment.children." in caplog.text


def test_static_sweep_law_needs_checked_before_training(tmp_path):
    from mixbench.errors import ConfigError

    # 6 mixtures hold out 2 and fit on 4; the trees law needs 40 (two leaves of 20), so nothing could be scored.
    setting = SimSetting(dict(SIM, steps=100, warmup_steps=10))
    with pytest.raises(ConfigError, match=r"no law of experiment.laws=\[trees\] can be fitted: experiment.mixtures=6 "
                                          r"leaves 4 runs to fit on .* trees needs 40 \(experiment.mixtures=60 or more\)"):
        static_sweep(setting, RunStore(tmp_path), static_options(laws=["trees"]), tmp_path / "sweep")
    assert not list((tmp_path / "runs").glob("*"))
    assert not (tmp_path / "sweep").exists()


def test_static_sweep_warns_of_skipped_law(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    setting = SimSetting(dict(SIM, steps=100, warmup_steps=10))
    rows = static_sweep(setting, RunStore(tmp_path), static_options(laws=["linear", "trees"]), tmp_path / "sweep")
    warning = "trees needs 40 (experiment.mixtures=60 or more); trees will be reported as skipped."
    assert warning in caplog.text
    # The warning comes before the first run trains.
    assert caplog.text.index(warning) < caplog.text.index("static sweep run 1/6")
    assert {row["status"].split(":")[0] for row in rows if row["law"] == "trees"} == {"skipped"}
    assert all(row["r2"] is not None for row in rows if row["law"] == "linear")


def test_static_sweep_rejects_dynamic_law():
    from omegaconf import OmegaConf

    from mixbench.errors import ConfigError

    experiment = OmegaConf.create({"name": "s", "seed": 0, "mixtures": 6, "design": "cover", "held_out_fraction": 0.34,
                                   "laws": ["linear", "dynamic"], "cv_folds": 0, "loss_split": "val"})
    with pytest.raises(ConfigError, match=r"experiment.laws=\[linear,dynamic\] lists 'dynamic', a dynamic law"):
        StaticOptions.from_config(experiment)


def test_grid_design_names_setting(tmp_path):
    from mixbench.errors import ConfigError

    with pytest.raises(ConfigError, match=r"experiment.design=grid is only available .* use experiment.design=cover"):
        branch_sweep(SimSetting(dict(SIM)), branch_options(branch_step=200, children=8, design="grid"), tmp_path)


@pytest.mark.parametrize("nonnegative", [False, True])
def test_branch_report_records_nonnegative(tmp_path, nonnegative):
    options = branch_options(branch_step=200, window=5, children=8, nonnegative=nonnegative)
    branch_sweep(SimSetting(dict(SIM)), options, tmp_path)
    folder = tmp_path / "branch"
    assert json.loads((folder / "laws_dynamic_A.json").read_text())["nonnegative"] is nonnegative
    constraint = "constrained to A >= 0" if nonnegative else "unconstrained"
    assert f"with A {constraint} (experiment.nonnegative={str(nonnegative).lower()})" in (folder / "laws_dynamic.md").read_text()


def test_top_level_laws_in_dynamic_sweep():
    from mixbench.errors import ConfigError
    from mixbench.law_accuracy.command import laws

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="laws", overrides=["experiment=laws_dynamic_sim", "laws=[dml]"])
    with pytest.raises(ConfigError, match=r"experiment.sweep=dynamic sweep fits only the dynamic law .* drop laws=\[dml\]"):
        laws(cfg)


def test_sim_sweep_warns_unread_settings(tmp_path, caplog):
    from mixbench import api

    with caplog.at_level("WARNING", logger="mixbench"):
        api.laws(overrides=["experiment=laws_static_sim", "training.steps=30", f"results_dir={tmp_path}"])
    assert any(r.getMessage().startswith("training.steps=30: the simulator does not read training/model/data settings")
               for r in caplog.records)


def test_sweep_setting_mistakes_name_the_fix(tmp_path):
    from mixbench import api
    from mixbench.errors import ConfigError

    results = f"results_dir={tmp_path}"
    with pytest.raises(ConfigError, match=r"experiment.sweep='dynamc' is unknown; .* Did you mean experiment.sweep=dynamic\?"):
        api.laws(overrides=["experiment=laws_static_sim", "experiment.sweep=dynamc", results])
    # The simulator's block comes with the sim variant of the same sweep.
    with pytest.raises(ConfigError, match=r"which experiment=laws_static_sim has"):
        api.laws(overrides=["experiment=laws_static", "experiment.setting=sim", results])

    # A law sweep's folder is not a benchmark's, so `mixbench table` names the commands that read it.
    api.laws(overrides=["experiment=laws_static_sim", "sim.steps=60", "sim.warmup_steps=6", results])
    with pytest.raises(ConfigError, match=r"contains the report of a law sweep \(laws_static.md\), not method results"):
        api.table(overrides=["experiment=laws_static_sim", results])


def test_law_multirun_members_writing_one_report_are_rejected(tmp_path):
    from mixbench.sweep_check import sweep_error

    results = f"results_dir={tmp_path}"
    error = sweep_error("laws", ["-m", "experiment=laws_static_sim", "experiment.seed=0,1", results])
    assert error.startswith("sweep members (experiment=laws_static_sim experiment.seed=0")
    assert f"would both write their report to {tmp_path / 'laws_static_sim'}" in error
    # A name made from the swept value gives each member its own folder; run tables need their own `out`.
    assert sweep_error("laws", ["-m", "experiment=laws_static_sim", "experiment.seed=0,1", "experiment.name=s${experiment.seed}",
                                results]) is None
    tables = ["-m", "train.mixtures=m.csv", "train.losses=l.csv", "laws=[linear],[dml]", f"out={tmp_path / 'r.csv'}"]
    assert "Give each member its own out" in sweep_error("laws", tables)
    assert not list(tmp_path.iterdir())
