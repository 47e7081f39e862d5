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
# The committed sweep's settings (Aioli over 5 simulated domains, branched at two rounds), which train in a few seconds.
PARAM_LAWS = ["experiment=laws_param_sim"]
SIM_FIGURES = ["mixture_trajectories", "val_loss_curves", "a_heatmaps_doremi", "loss_vs_compute"]


def mixbench(*args, cwd):
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "mixbench", *args], cwd=cwd, capture_output=True, text=True, env=environment, timeout=300)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder with a short simulator benchmark (stratified, doremi), a static, a dynamic and a parameter-accuracy law sweep."""
    root = tmp_path_factory.mktemp("figures")
    # In-process through the Python API, which composes the same configs as the command line.
    results = f"results_dir={root / 'results'}"
    api.benchmark(overrides=[*SIM, results])
    api.laws(overrides=[*STATIC_LAWS, results])
    api.laws(overrides=[*DYNAMIC_LAWS, results])
    api.laws(overrides=[*PARAM_LAWS, results])
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
    # The sim folder contains no law report, so the two law figures are skipped with one line each naming what is missing.
    for name, missing in (("law_predictions", "_predictions.csv"), ("param_heatmaps", "laws_param.json")):
        skipped = [line for line in sim_figures.stderr.splitlines() if "skipped" in line and name in line]
        assert len(skipped) == 1, sim_figures.stderr[-3000:]
        assert missing in skipped[0]
    assert "2 of 6 figures skipped" in sim_figures.stderr


@pytest.mark.parametrize("experiment, expected", [("sim", SIM_FIGURES), ("laws_param_sim", ["param_heatmaps"])])
def test_rebuild_gives_identical_bytes(workdir, experiment, expected):
    directory = workdir / "results" / experiment / "figures"
    built = mixbench("figures", f"experiment={experiment}", cwd=workdir)
    assert built.returncode == 0, built.stderr[-3000:]
    before = figure_files(directory)
    assert sorted(before) == sorted(f"{stem}.{kind}" for stem in expected for kind in ("png", "pdf"))
    shutil.rmtree(directory)

    rebuilt = mixbench("figures", f"experiment={experiment}", cwd=workdir)
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


def test_files_of_earlier_builds_are_listed(workdir, tmp_path, caplog):
    out = tmp_path / "figures"
    names = ["a_heatmaps", "loss_vs_compute"]
    caplog.set_level(logging.INFO)
    build_figures(workdir / "results", "sim", names=names, out_dir=out)
    assert "not written by this build" not in caplog.text

    # A method result renamed since (a hyperparameter variant), a folder of a setting no longer there,
    # a figure not requested this time and a file that is no figure.
    (out / "other-1a2b3c4d").mkdir()
    earlier = ["a_heatmaps_doremi_eta=0.5.png", "a_heatmaps_doremi_eta=0.5.pdf", "other-1a2b3c4d/loss_vs_compute.png"]
    for name in [*earlier, "mixture_trajectories.png", "notes.png"]:
        shutil.copyfile(out / "loss_vs_compute.png", out / name)
    caplog.clear()
    build_figures(workdir / "results", "sim", names=names, out_dir=out)

    warnings = [record.getMessage() for record in caplog.records if "not written by this build" in record.getMessage()]
    assert len(warnings) == 1, caplog.text
    listed = warnings[0].split(": ", 1)[1].split(". ", 1)[0].split(", ")
    assert sorted(listed) == sorted(earlier)
    assert f"in {out} were not written" in warnings[0]
    assert "can be deleted" in warnings[0]
    assert all((out / name).exists() for name in [*earlier, "mixture_trajectories.png", "notes.png"])


def test_bad_requests_raise_clear_errors(workdir):
    results = workdir / "results"
    with pytest.raises(ConfigError, match="unknown figures heatmap; the figures are mixture_trajectories"):
        build_figures(results, "sim", names=["heatmap"])
    with pytest.raises(ConfigError, match="experiment folder .*nosuch not found"):
        build_figures(results, "nosuch")
    with pytest.raises(ConfigError, match="seed='1' is invalid"):
        build_figures(results, "sim", seed="1")
    # A seed without any method result is an error, as in mixbench table, not a build of skipped figures.
    with pytest.raises(ConfigError, match=r"seed=7 has no method result in .*sim; known seeds: 0"):
        build_figures(results, "sim", names=["mixture_trajectories"], seed=7)


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


def test_all_figures_skipped_leaves_no_folder(tmp_path, caplog):
    results = tmp_path / "results"
    api.benchmark(overrides=[*SIM, f"results_dir={results}", "experiment.methods=[stratified]"])
    # A law-sweep figure has no input in a benchmark folder.
    with caplog.at_level("INFO", logger="mixbench"):
        written = build_figures(results, "sim", names=["param_heatmaps"])
    assert written == {"param_heatmaps": []}
    assert "figure param_heatmaps skipped" in caplog.text
    assert not (results / "sim" / "figures").exists()
    # A folder that was there before is kept.
    (results / "sim" / "figures").mkdir()
    build_figures(results, "sim", names=["param_heatmaps"])
    assert (results / "sim" / "figures").is_dir()


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


@pytest.fixture
def drawn(monkeypatch) -> list:
    """The figures that the law figure modules save, kept open so that tests can check what was drawn."""
    common = figure_module("common")
    figures = []

    def save_and_keep(fig, out_dir, stem, formats=common.FORMATS):
        figures.append(fig)
        return common.save_figure(fig, out_dir, stem, formats)

    for name in ("law_predictions", "param_heatmaps"):
        monkeypatch.setattr(figure_module(name), "save_figure", save_and_keep)
    return figures


def suptitle_of(fig) -> str:
    return fig._suptitle.get_text() if fig._suptitle is not None else ""


def rendered_width(artist) -> float:
    artist.figure.canvas.draw()
    return artist.get_window_extent().width


def write_predictions(path: Path, laws: list[str], targets: list[str], test_sets: dict[str, int]) -> list[dict]:
    """Write a predictions CSV with `test_sets[name]` runs per law, target and test set, and return its rows."""
    rng = np.random.default_rng(0)
    rows = []
    for law in laws:
        for target in targets:
            for test_set, runs in test_sets.items():
                for run in range(runs):
                    actual = float(rng.uniform(2.0, 4.0))
                    rows.append({"law": law, "target": target, "test_set": test_set, "run": f"run{run}",
                                 "actual": actual, "predicted": actual + float(rng.normal(0.0, 0.1))})
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["law", "target", "test_set", "run", "actual", "predicted"])
        writer.writeheader()
        writer.writerows(rows)
    return rows


TARGETS = [f"target {index:02d}" for index in range(17)]


def test_one_law_title_fits(tmp_path, drawn):
    experiment = "laws_table_with_a_long_folder_name"
    write_predictions(tmp_path / experiment / "laws_predictions.csv", ["dml"], TARGETS[:3], {"held_out": 4})
    paths = figure_module("law_predictions").build(tmp_path, experiment)

    assert [path.name for path in paths] == ["law_predictions_laws.png", "law_predictions_laws.pdf"]
    [fig] = drawn
    assert [ax.get_visible() for ax in fig.axes] == [True]
    title = suptitle_of(fig)
    assert title.replace("\n", " ") == f"Held-out predictions of laws, {experiment}"
    # On one line the title is wider than the 3.2-inch panel and would be cut off.
    assert "\n" in title
    assert rendered_width(fig._suptitle) <= fig.bbox.width


@pytest.mark.parametrize("count", [13, 16])
def test_target_legend_up_to_sixteen(tmp_path, drawn, count):
    write_predictions(tmp_path / "laws" / "laws_predictions.csv", ["linear", "dml", "lgbm"], TARGETS[:count], {"held_out": 2})
    figure_module("law_predictions").build(tmp_path, "laws")

    [fig] = drawn
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 3
    [legend] = fig.legends
    assert [text.get_text() for text in legend.get_texts()] == TARGETS[:count]
    assert rendered_width(legend) <= fig.bbox.width


def test_target_legend_on_one_panel(tmp_path, drawn):
    law_predictions = figure_module("law_predictions")
    write_predictions(tmp_path / "laws" / "laws_predictions.csv", ["dml"], TARGETS[:16], {"held_out": 2})
    law_predictions.build(tmp_path, "laws")

    [fig] = drawn
    [legend] = fig.legends
    assert len(legend.get_texts()) == 16
    assert rendered_width(legend) <= fig.bbox.width
    # Sixteen names do not fit one row under a 3.2-inch panel. The figure grows for the further rows, so the panel keeps room.
    assert fig.get_figheight() > law_predictions.PANEL_HEIGHT + 0.5


def test_target_legend_dropped_beyond_sixteen(tmp_path, drawn, caplog):
    write_predictions(tmp_path / "laws" / "laws_predictions.csv", ["linear", "dml"], TARGETS, {"held_out": 2, "cv": 2})
    with caplog.at_level(logging.INFO):
        figure_module("law_predictions").build(tmp_path, "laws")

    [fig] = drawn
    assert fig.legends == []
    assert "has no target legend, because laws_predictions.csv has 17 targets" in caplog.text
    # Each panel's own legend still names the test sets' markers.
    for ax in fig.axes:
        assert len(ax.get_legend().get_texts()) == 2


@pytest.mark.parametrize("test_sets, title", [
    ({"held_out": 3}, "Held-out predictions"),
    ({"test_1m.csv": 3}, "Held-out predictions"),
    ({"cv": 3}, "Cross-validated predictions"),
    ({"held_out": 3, "cv": 5}, "Out-of-sample predictions"),
    ({"test_1m.csv": 3, "cv": 5}, "Out-of-sample predictions"),
])
def test_title_names_kind_of_predictions(tmp_path, drawn, test_sets, title):
    write_predictions(tmp_path / "laws" / "laws_predictions.csv", ["linear", "dml"], TARGETS[:3], test_sets)
    figure_module("law_predictions").build(tmp_path, "laws")

    [fig] = drawn
    # The report is named after its folder here, so the title names it once.
    assert suptitle_of(fig).replace("\n", " ") == f"{title} of laws"


def test_test_sets_get_markers_and_mae(tmp_path, drawn):
    rows = write_predictions(tmp_path / "laws" / "laws_predictions.csv", ["linear", "dml"], TARGETS[:3], {"held_out": 3, "cv": 5})
    figure_module("law_predictions").build(tmp_path, "laws")

    [fig] = drawn
    for ax, law in zip(fig.axes, ["linear", "dml"]):
        assert ax.get_title() == f"{law}: 24 predictions"
        legend = ax.get_legend()
        expected = []
        for test_set, count in (("held_out", 9), ("cv", 15)):
            errors = [abs(row["predicted"] - row["actual"]) for row in rows if row["law"] == law and row["test_set"] == test_set]
            assert len(errors) == count
            expected.append(f"{test_set} ({count}): MAE {np.mean(errors):.3g}")
        assert [text.get_text() for text in legend.get_texts()] == expected
        markers = [handle.get_marker() for handle in legend.legend_handles]
        assert len(set(markers)) == 2
        # One scatter point per prediction, drawn with one scatter call per target and test set.
        assert sum(len(collection.get_offsets()) for collection in ax.collections) == 24
        assert len(ax.collections) == 6
    # The legend below the panels names only the targets, because each panel's legend names the markers.
    assert [text.get_text() for text in fig.legends[0].get_texts()] == TARGETS[:3]


def drawn_points(ax) -> list[tuple[float, float, tuple, str]]:
    """Return each scatter point of `ax` in drawing order as (x, y, RGBA colour, marker path)."""
    points = []
    for collection in ax.collections:
        [path] = collection.get_paths()
        [color] = collection.get_facecolors()
        points += [(x, y, tuple(color), repr(path)) for x, y in collection.get_offsets()]
    return points


@pytest.mark.parametrize("order", ["by target", "by run"])
def test_points_follow_prediction_rows(tmp_path, drawn, order):
    from matplotlib.markers import MarkerStyle

    law_predictions = figure_module("law_predictions")
    path = tmp_path / "laws" / "laws_predictions.csv"
    rows = write_predictions(path, ["linear", "dml"], TARGETS[:3], {"held_out": 3, "cv": 5})
    if order == "by run":
        # Targets and test sets alternate from row to row, so later points must still cover earlier ones.
        rows.sort(key=lambda row: (row["law"], row["run"]))
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    law_predictions.build(tmp_path, "laws")

    [fig] = drawn
    colors = law_predictions.method_colors(TARGETS[:3])
    shapes = {}
    for test_set, marker in (("held_out", "o"), ("cv", "s")):
        style = MarkerStyle(marker)
        shapes[test_set] = repr(style.get_path().transformed(style.get_transform()))
    laws = list(dict.fromkeys(row["law"] for row in rows))
    assert len(laws) == 2
    for ax, law in zip(fig.axes, laws):
        selected = [row for row in rows if row["law"] == law]
        expected = [(row["actual"], row["predicted"], tuple(colors[row["target"]]), shapes[row["test_set"]]) for row in selected]
        assert drawn_points(ax) == expected
        blocks = sum(1 for index, row in enumerate(selected)
                     if index == 0 or (row["target"], row["test_set"]) != (selected[index - 1]["target"], selected[index - 1]["test_set"]))
        assert len(ax.collections) == blocks
        assert blocks == (6 if order == "by target" else len(selected))


def test_param_heatmaps_of_sweep(workdir, drawn, caplog):
    results = workdir / "results"
    caplog.set_level(logging.INFO)
    built = build_figures(results, "laws_param_sim", names=["param_heatmaps", "law_predictions"])

    directory = results / "laws_param_sim" / "figures"
    assert [path.name for path in built["param_heatmaps"]] == ["param_heatmaps.png", "param_heatmaps.pdf"]
    assert_valid_png(directory / "param_heatmaps.png")
    assert_valid_pdf(directory / "param_heatmaps.pdf")
    assert built["law_predictions"] == []
    assert "figure law_predictions skipped: no law predictions" in caplog.text

    report = json.loads((results / "laws_param_sim" / "laws_param.json").read_text())
    [fig] = drawn
    assert len(fig.subfigs) == len(report["rounds"]) == 2
    for subfigure, entry in zip(fig.subfigs, report["rounds"]):
        assert suptitle_of(subfigure).startswith(f"round {entry['round']}, step {entry['step']}: a_sim {entry['a_sim']:.3f}")
        # The simulator's rounds also compare both matrices with the true A^t.
        assert f"{entry['a_sim_true']:.3f} ($A^t$)" in suptitle_of(subfigure)
        heatmaps = [ax for ax in subfigure.axes if ax.images]
        assert len(heatmaps) == 2
        for ax, key in zip(heatmaps, ("method_A", "fitted_A")):
            np.testing.assert_array_equal(ax.images[0].get_array(), np.asarray(entry[key]))
            assert [label.get_text() for label in ax.get_xticklabels()] == report["domains"]
            assert [label.get_text() for label in ax.get_yticklabels()] == report["eval_sets"]
        # One colour scale per round, symmetric around 0, that spans both matrices.
        limit = max(np.abs(entry["method_A"]).max(), np.abs(entry["fitted_A"]).max())
        for ax in heatmaps:
            assert ax.images[0].get_clim() == pytest.approx((-limit, limit))


def param_round(index: int, domains: int) -> dict:
    rng = np.random.default_rng(index)
    return {"round": index, "step": 100 * index, "a_sim": 0.5, "b": 2.0, "children": [{}] * 8,
            "method_A": rng.normal(size=(domains, domains)).tolist(), "fitted_A": rng.normal(size=(domains, domains)).tolist()}


@pytest.mark.parametrize("domains, annotated", [(3, True), (8, False)])
def test_param_heatmaps_cap_rounds(tmp_path, drawn, domains, annotated):
    param_heatmaps = figure_module("param_heatmaps")
    names = [f"domain{index}" for index in range(domains)]
    report = {"domains": names, "eval_sets": names, "method": "doge", "seed": 0, "window": 30,
              "rounds": [param_round(index, domains) for index in range(10)]}
    (tmp_path / "param").mkdir()
    (tmp_path / "param" / "laws_param.json").write_text(json.dumps(report))
    param_heatmaps.build(tmp_path, "param")

    [fig] = drawn
    round_labels = [suptitle_of(subfigure).split(":")[0] for subfigure in fig.subfigs]
    assert len(round_labels) == figure_module("a_heatmaps").MAX_ROUNDS == 6
    assert round_labels[0] == "round 0, step 0"
    assert round_labels[-1] == "round 9, step 900"
    # Small matrices carry their values, because a shared scale can leave one of them faint.
    texts = [len(ax.texts) for subfigure in fig.subfigs for ax in subfigure.axes if ax.images]
    assert texts == [domains * domains if annotated else 0] * 12


def test_param_heatmaps_need_report(tmp_path):
    (tmp_path / "laws_static").mkdir()
    with pytest.raises(figure_module("common").MissingInput, match=r"no parameter-accuracy report \(laws_param.json\) under"):
        figure_module("param_heatmaps").build(tmp_path, "laws_static")
