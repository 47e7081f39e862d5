"""`mixbench figures` on simulator records: every file is written, valid, reproducible, and missing inputs are skipped."""

import csv
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mixbench import api
from mixbench.errors import ConfigError
from mixbench.figures import build_figures, figure_module
from paper_figures.a_heatmaps import PANEL_HEIGHT
from paper_figures.common import DPI

SIM = ["experiment=sim", "experiment.methods=[stratified,doremi]", "experiment.seeds=[0]", "sim.steps=200", "sim.eval_every=50", "sim.warmup_steps=20"]
STATIC_LAWS = ["experiment=laws_static_sim", "experiment.mixtures=8", "sim.steps=100", "sim.warmup_steps=10"]
DYNAMIC_LAWS = ["experiment=laws_dynamic_sim", "experiment.children=8", "experiment.branch_step=50", "sim.steps=100", "sim.warmup_steps=10"]
SIM_FIGURES = ["mixture_trajectories", "val_loss_curves", "a_heatmaps_doremi", "loss_vs_compute"]


def mixbench(*args, cwd):
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "mixbench", *args], cwd=cwd, capture_output=True, text=True, env=environment, timeout=300)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder with a short simulator benchmark (stratified, doremi) and a static and a dynamic law sweep."""
    root = tmp_path_factory.mktemp("figures")
    # In-process through the Python API, which composes the same configs as the command line.
    results = f"results_dir={root / 'results'}"
    api.benchmark(overrides=[*SIM, results])
    api.laws(overrides=[*STATIC_LAWS, results])
    api.laws(overrides=[*DYNAMIC_LAWS, results])
    return root


def figure_files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def assert_valid_png(path: Path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG", path
        width, height = image.size
        image.verify()
    assert width > 200, f"{path} is only {width} pixels wide"
    assert height > 200, f"{path} is only {height} pixels high"


def assert_valid_pdf(path: Path) -> None:
    payload = path.read_bytes()
    assert payload.startswith(b"%PDF-"), path
    assert payload.rstrip().endswith(b"%%EOF"), path
    assert len(re.findall(rb"/Type\s*/Page\b", payload)) == 1, f"{path} does not hold exactly one page"
    assert b"CreationDate" not in payload, f"{path} carries a creation date"


@pytest.fixture(scope="module")
def sim_figures(workdir):
    """The output of `mixbench figures experiment=sim` run once on the module's records."""
    result = mixbench("figures", "experiment=sim", cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_sim_figures_written_and_valid(workdir, sim_figures):
    directory = workdir / "results" / "sim" / "figures"
    expected = sorted(f"{stem}.{kind}" for stem in SIM_FIGURES for kind in ("png", "pdf"))
    assert sorted(path.name for path in directory.iterdir()) == expected
    for name in expected:
        path = directory / name
        assert_valid_png(path) if name.endswith(".png") else assert_valid_pdf(path)
    # The sim folder contains no law report, so that figure is skipped with one line naming what is missing.
    skipped = [line for line in sim_figures.stderr.splitlines() if "skipped" in line and "law_predictions" in line]
    assert len(skipped) == 1, sim_figures.stderr[-3000:]
    assert "_predictions.csv" in skipped[0]
    assert "1 of 5 figures skipped" in sim_figures.stderr


def test_rebuild_gives_identical_bytes(workdir, sim_figures):
    directory = workdir / "results" / "sim" / "figures"
    before = figure_files(directory)
    shutil.rmtree(directory)

    rebuilt = mixbench("figures", "experiment=sim", cwd=workdir)
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    after = figure_files(directory)
    assert sorted(after) == sorted(before)
    changed = [name for name in before if before[name] != after[name]]
    assert not changed, f"rebuilt figures differ: {changed}"


def test_law_folders_build_prediction_figures(workdir, caplog):
    caplog.set_level(logging.INFO)
    results = workdir / "results"
    for experiment, report in (("laws_static_sim", "laws_static"), ("laws_dynamic_sim", "laws_dynamic")):
        built = build_figures(results, experiment, names=["law_predictions", "mixture_trajectories"])
        assert [path.name for path in built["law_predictions"]] == [f"law_predictions_{report}.png", f"law_predictions_{report}.pdf"]
        assert_valid_png(results / experiment / "figures" / f"law_predictions_{report}.png")
        assert_valid_pdf(results / experiment / "figures" / f"law_predictions_{report}.pdf")
        # A law folder has no method results: the mixture figure is skipped, not a crash.
        assert built["mixture_trajectories"] == []
        assert f"figure mixture_trajectories skipped: no method results under {results / experiment / 'methods'}" in caplog.text


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_static_predictions_match_held_out_runs(workdir):
    directory = workdir / "results" / "laws_static_sim"
    runs = json.loads((directory / "laws_static_runs.json").read_text())
    held_out = {run["id"]: run["losses"] for run in runs["runs"] if run["split"] == "held_out"}
    predictions = read_csv(directory / "laws_static_predictions.csv")
    assert {row["run"] for row in predictions} == set(held_out)
    domains = runs["domains"]
    for row in predictions:
        assert float(row["actual"]) == pytest.approx(held_out[row["run"]][domains.index(row["target"])], rel=1e-9)

    # Each report row's MAE is the mean absolute error of its stored predictions.
    for report in read_csv(directory / "laws_static.csv"):
        if report["status"] != "ok":
            continue
        rows = [row for row in predictions if row["law"] == report["law"] and row["target"] == report["target"]]
        assert len(rows) == int(report["n_test"])
        errors = [abs(float(row["predicted"]) - float(row["actual"])) for row in rows]
        assert np.mean(errors) == pytest.approx(float(report["mae"]), rel=1e-6, abs=1e-9)


def test_dynamic_predictions_are_held_out_children(workdir):
    directory = workdir / "results" / "laws_dynamic_sim"
    fitted = json.loads((directory / "laws_dynamic_A.json").read_text())
    predictions = read_csv(directory / "laws_dynamic_predictions.csv")
    assert {row["run"] for row in predictions} == set(fitted["held_out"])
    assert {row["quantity"] for row in predictions} == {"loss change"}
    assert len(predictions) == len(fitted["held_out"]) * len(fitted["eval_sets"])


def test_trajectory_points_follow_records(workdir):
    results = workdir / "results"
    common = figure_module("common")
    runs = {run.method: run for run in common.load_method_runs(results, "sim")}
    assert runs["doremi"].mixing["role"] == "proxy"
    assert runs["stratified"].mixing is runs["stratified"].final

    steps, mixtures = figure_module("mixture_trajectories").mixture_points(runs["doremi"].mixing)
    trajectory = runs["doremi"].mixing["trajectory"]
    assert steps[0] == 0
    assert list(steps[1:]) == [entry["step"] for entry in trajectory]
    np.testing.assert_allclose(mixtures[1:], [entry["mixture"] for entry in trajectory])
    np.testing.assert_allclose(mixtures.sum(axis=1), 1.0, atol=1e-9)


def test_compute_matches_table(workdir):
    table = {row["method"]: row for row in read_csv(workdir / "results" / "sim" / "table.csv")}
    compute = figure_module("loss_vs_compute")
    for run in figure_module("common").load_method_runs(workdir / "results", "sim"):
        assert compute.total_tokens(run) == pytest.approx(float(table[run.method]["total_train_tokens"]))
    doremi = [run for run in figure_module("common").load_method_runs(workdir / "results", "sim") if run.method == "doremi"][0]
    assert compute.total_tokens(doremi) > float(table["stratified"]["total_train_tokens"])


def test_missing_record_leaves_method_out(workdir, tmp_path, caplog):
    copy = tmp_path / "results"
    shutil.copytree(workdir / "results", copy, ignore=shutil.ignore_patterns("figures"))
    doremi = json.loads((copy / "sim" / "methods" / "doremi-seed0.json").read_text())
    shutil.rmtree(copy / "runs" / doremi["final_run"])
    caplog.set_level(logging.INFO)

    built = build_figures(copy, "sim", names=["a_heatmaps", "loss_vs_compute"])
    assert built["a_heatmaps"] == []
    assert "figure a_heatmaps skipped: no run of experiment sim at seed 0 recorded an A estimate" in caplog.text
    assert "leaving out doremi-seed0.json: final run" in caplog.text
    assert [path.name for path in built["loss_vs_compute"]] == ["loss_vs_compute.png", "loss_vs_compute.pdf"]


def test_bad_requests_raise_clear_errors(workdir):
    results = workdir / "results"
    with pytest.raises(ConfigError, match="unknown figures heatmap; the figures are mixture_trajectories"):
        build_figures(results, "sim", names=["heatmap"])
    with pytest.raises(ConfigError, match="experiment folder .*nosuch not found"):
        build_figures(results, "nosuch")
    with pytest.raises(ConfigError, match="seed='1' is invalid"):
        build_figures(results, "sim", seed="1")
    assert build_figures(results, "sim", names=["mixture_trajectories"], seed=7) == {"mixture_trajectories": []}


def test_two_settings_get_one_folder_each(tmp_path):
    results = tmp_path / "results"
    api.benchmark(overrides=[*SIM, f"results_dir={results}"])
    api.benchmark(overrides=[*SIM, f"results_dir={results}", "sim.domains=3"])
    written = build_figures(results, "sim", names=["val_loss_curves", "loss_vs_compute"])

    # Their domains differ, so each setting's runs are drawn apart, in a folder named by its label.
    folders = sorted(path.name for path in (results / "sim" / "figures").iterdir())
    assert len(folders) == 2
    assert all(re.fullmatch(r"sim-[0-9a-f]{8}", name) for name in folders)
    assert len(written["val_loss_curves"]) == 4
    for folder in folders:
        assert sorted(figure_files(results / "sim" / "figures" / folder)) == [
            "loss_vs_compute.pdf", "loss_vs_compute.png", "val_loss_curves.pdf", "val_loss_curves.png"]


def test_single_validation_gets_a_hint(tmp_path, caplog):
    results = tmp_path / "results"
    api.benchmark(overrides=[*SIM, f"results_dir={results}", "experiment.methods=[stratified]"])
    with caplog.at_level("INFO", logger="mixbench.figures"):
        build_figures(results, "sim", names=["val_loss_curves"])
    assert "validated once" not in caplog.text

    # Validated only at the end, each method is one point, and the log explains how to get curves.
    api.benchmark(overrides=[*SIM, f"results_dir={results}", "experiment.methods=[stratified]", "sim.eval_every=0"])
    with caplog.at_level("INFO", logger="mixbench.figures"):
        build_figures(results, "sim", names=["val_loss_curves"])
    assert "each final run was validated once (train.eval_every=0, train.steps=200)" in caplog.text


def test_doremi_heatmap_has_true_a_row(workdir, sim_figures):
    # DoReMi's last estimate is at the final step, where the simulator records no true A. The row of
    # true matrices is drawn anyway, with that panel marked as not recorded.
    with Image.open(workdir / "results" / "sim" / "figures" / "a_heatmaps_doremi.png") as image:
        height = image.size[1]
    assert height == round(2 * PANEL_HEIGHT * DPI)


def test_method_styles_tell_many_methods_apart():
    from paper_figures.common import method_styles

    names = [f"method{index:02d}" for index in range(40)]
    styles = method_styles(names)
    looks = {(style["color"], style["marker"], style["linestyle"]) for style in styles.values()}
    assert len(looks) == 40
    # Two methods at one point differ in marker, also when their colours repeat.
    assert len({styles[name]["marker"] for name in names[:11]}) == 11
    # Fixed by the sorted names, not by the order given.
    assert method_styles(list(reversed(names))) == styles


def compute_run(method: str, seed: int, tokens: float, loss: float):
    final = {"compute": {"train_tokens": tokens, "exploration_tokens": 0}, "true_mean_loss": loss}
    return figure_module("common").MethodRun(method, seed, {}, final, final, ())


def labelled_ticks(axis) -> list[tuple[float, str]]:
    """Return the position and text of every major and minor tick label drawn on `axis`."""
    axis.figure.canvas.draw()
    return [(label.get_position()[0 if axis.axis_name == "x" else 1], label.get_text())
            for label in axis.get_ticklabels(which="both") if label.get_text()]


def test_compute_axis_labels_narrow_range():
    # One method's seeds cluster near 1.2e5 tokens and another's spread to 3.1e5, less than half a decade.
    runs = [compute_run("stratified", seed, tokens, 3.0) for seed, tokens in enumerate((1.18e5, 1.2e5, 1.22e5))]
    runs += [compute_run("doremi", seed, tokens, 2.9) for seed, tokens in enumerate((2.0e5, 2.6e5, 3.1e5))]
    with figure_module("common").figure(1, 1, width=6.5, height=4.0) as (_, axes):
        figure_module("loss_vs_compute").draw(axes[0], runs, "sim")
        ticks = labelled_ticks(axes[0].xaxis)

    inside = [(position, text) for position, text in ticks if 1.18e5 <= position <= 3.1e5]
    assert len(inside) >= 3, ticks
    # On a log axis the middle of the range is the geometric mean, so this checks the cluster's half.
    middle = np.sqrt(1.18e5 * 3.1e5)
    assert any(position < middle for position, _ in inside), ticks
    assert any(position > middle for position, _ in inside), ticks


@pytest.mark.parametrize("low, high", [(1.2e5, 1.23e5), (1.2e5, 1.20001e5), (1.2e5, 9e5), (3e4, 1.5e6), (1.1e3, 9e5), (1e3, 5e7)])
def test_log_axis_labels_inside_range(low, high):
    common = figure_module("common")
    values = np.geomspace(low, high, 7)
    with common.figure(1, 1) as (_, axes):
        axes[0].scatter(values, np.ones_like(values))
        axes[0].set_xscale("log")
        common.label_log_axis(axes[0].xaxis)
        ticks = labelled_ticks(axes[0].xaxis)

    inside = [(position, text) for position, text in ticks if low <= position <= high]
    assert len(inside) >= common.MIN_LABELLED_TICKS, ticks
    texts = [text for _, text in inside]
    assert len(set(texts)) == len(texts), ticks
