"""Figure: each mixing law's predicted against actual loss on held-out or cross-validated runs.

Reads the per-run predictions that `mixbench laws` writes beside its report
(results/<experiment>/<report>_predictions.csv, for example laws_static_predictions.csv) and
draws one figure per predictions file, one panel per law. Each test set (`held_out`, a named test
table, or `cv` for cross-validation) has its own marker, and the colours tell the targets apart.
Run from the repository root: python -m paper_figures.law_predictions --experiment laws_static
"""

import csv
import logging
from itertools import groupby
from pathlib import Path

import numpy as np
from matplotlib.legend import Legend
from matplotlib.lines import Line2D

from paper_figures.common import (
    MissingInput,
    default_out_dir,
    experiment_dir,
    figure,
    fit_suptitle,
    fits_width,
    grid_shape,
    method_colors,
    run_script,
    save_figure,
)

log = logging.getLogger(__name__)

NAME = "law_predictions"
MARKERS = ("o", "s", "^", "D", "v", "P")
# The test set of cross-validation rows: each run predicted by the law fitted on the other folds.
CV_TEST_SET = "cv"
# Up to this many targets a legend names each one's colour. Beyond that method_colors soon repeats
# colours (after 20) and the legend outgrows the panels, so the figure has no target legend.
MAX_LEGEND_TARGETS = 16
# Inches per panel. The height leaves room for one row of the legend below the panels.
PANEL_WIDTH, PANEL_HEIGHT = 3.2, 3.0


def read_predictions(path: Path) -> list[dict]:
    """Return the rows of a predictions CSV with `actual` and `predicted` as floats."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["actual"], row["predicted"] = float(row["actual"]), float(row["predicted"])
    return rows


def _mae(rows: list[dict]) -> float:
    return float(np.mean([abs(row["predicted"] - row["actual"]) for row in rows]))


def _draw_law(ax, rows: list[dict], colors: dict, markers: dict) -> None:
    """Draw one law's predictions against the actual values, with the MAE of each test set.

    A run can be predicted on several test sets (held out and again in cross-validation), so a
    single MAE over all rows would mix them. With several test sets the panel's legend gives
    each test set's marker, number of predictions (in brackets) and MAE.
    """
    actual = np.array([row["actual"] for row in rows])
    predicted = np.array([row["predicted"] for row in rows])
    # Later points cover earlier ones, so the points keep the row order, with one scatter call per run of rows
    # with the same target and test set. `mixbench laws` writes those rows together, so the calls are few.
    start = 0
    for (target, test_set), block in groupby(rows, key=lambda row: (row["target"], row["test_set"])):
        stop = start + len(list(block))
        ax.scatter(actual[start:stop], predicted[start:stop], color=colors[target], marker=markers[test_set], s=18)
        start = stop
    low, high = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
    margin = 0.05 * (high - low) or 0.05
    ax.plot([low - margin, high + margin], [low - margin, high + margin], color="0.5", linewidth=0.8, linestyle="--")
    ax.set_xlim(low - margin, high + margin)
    ax.set_ylim(low - margin, high + margin)
    test_sets = [name for name in markers if any(row["test_set"] == name for row in rows)]
    if len(test_sets) == 1:
        ax.set_title(f"{rows[0]['law']}: {len(rows)} predictions, MAE {_mae(rows):.3g}", fontsize=9)
        return
    ax.set_title(f"{rows[0]['law']}: {len(rows)} predictions", fontsize=9)
    handles = []
    for name in test_sets:
        selected = [row for row in rows if row["test_set"] == name]
        label = f"{name} ({len(selected)}): MAE {_mae(selected):.3g}"
        handles.append(Line2D([], [], color="0.3", marker=markers[name], linestyle="none", label=label))
    # Good predictions lie on the diagonal, so the upper left corner is the emptiest. A legend wider
    # than the panel would make the layout shrink the panel, so the labels are kept short.
    ax.legend(handles=handles, loc="upper left", fontsize=7, handlelength=1.0, handletextpad=0.4)


def figure_title(report: str, folder: str, test_sets: list[str]) -> str:
    """Return the suptitle. It begins with "Held-out" only when no row comes from cross-validation."""
    if CV_TEST_SET not in test_sets:
        kind = "Held-out"
    elif len(test_sets) == 1:
        kind = "Cross-validated"
    else:
        kind = "Out-of-sample"
    # A sweep's report is named after its experiment folder (laws_static in laws_static/): name it once.
    place = report if report == folder else f"{report}, {folder}"
    return f"{kind} predictions of {place}"


def add_legend(fig, targets: list[str], colors: dict) -> Legend | None:
    """Add the legend of target colours below the panels, in as many columns as fit the figure's width.

    The figure grows by the height of each legend row after the first, so the panels keep their
    size. Beyond MAX_LEGEND_TARGETS targets there is no legend, and None is returned.
    """
    if len(targets) > MAX_LEGEND_TARGETS:
        return None
    handles = [Line2D([], [], color=colors[target], marker="o", linestyle="none", label=target) for target in targets]
    for columns in range(len(handles), 0, -1):
        legend = fig.legend(handles=handles, loc="outside lower center", ncols=columns, fontsize=8)
        if columns == 1 or fits_width(legend, fig):
            break
        legend.remove()
    legend_rows = -(-len(handles) // columns)
    if legend_rows > 1:
        height = legend.get_window_extent(fig.canvas.get_renderer()).height / fig.dpi
        fig.set_figheight(fig.get_figheight() + height * (legend_rows - 1) / legend_rows)
    return legend


def build_file(path: Path, out_dir: Path) -> list[Path]:
    """Write law_predictions_<report>.png and .pdf for one predictions file, one panel per law."""
    rows = read_predictions(path)
    if not rows:
        raise MissingInput(f"{path} lists no predictions (no law could be scored on held-out or cross-validated runs)")
    laws = list(dict.fromkeys(row["law"] for row in rows))
    targets = list(dict.fromkeys(row["target"] for row in rows))
    test_sets = list(dict.fromkeys(row["test_set"] for row in rows))
    colors = method_colors(targets)
    markers = {name: MARKERS[index % len(MARKERS)] for index, name in enumerate(test_sets)}
    quantity = rows[0].get("quantity") or "loss"
    report = path.stem.removesuffix("_predictions")
    if len(targets) > MAX_LEGEND_TARGETS:
        log.info("figures: %s has no target legend, because %s has %d targets (a legend names at most %d)",
                 f"{NAME}_{report}", path.name, len(targets), MAX_LEGEND_TARGETS)
    columns, grid_rows = grid_shape(len(laws), max_columns=3)
    with figure(columns, grid_rows, width=PANEL_WIDTH, height=PANEL_HEIGHT) as (fig, axes):
        for ax, law in zip(axes, laws):
            _draw_law(ax, [row for row in rows if row["law"] == law], colors, markers)
            ax.set_xlabel(f"actual {quantity}")
            ax.set_ylabel(f"predicted {quantity}")
        for ax in axes[len(laws):]:
            ax.set_visible(False)
        fit_suptitle(fig, figure_title(report, path.parent.name, test_sets))
        add_legend(fig, targets, colors)
        return save_figure(fig, out_dir, f"{NAME}_{report}")


def build(results_dir="results", experiment="laws_static", out_dir=None, seed=None, setting=None) -> list[Path]:
    """Write one figure per *_predictions.csv in the experiment folder; `seed` is unused."""
    directory = experiment_dir(results_dir, experiment)
    files = sorted(directory.glob("*_predictions.csv"))
    if not files:
        raise MissingInput(
            f"no law predictions (*_predictions.csv) under {directory}; `mixbench laws` writes them beside its report"
        )
    target = out_dir or default_out_dir(results_dir, experiment)
    return [path for file in files for path in build_file(file, target)]


if __name__ == "__main__":
    run_script(build, __doc__.splitlines()[0])
