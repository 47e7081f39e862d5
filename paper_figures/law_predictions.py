"""Figure: each mixing law's predicted against actual loss on held-out runs.

Reads the per-run predictions that `mixbench laws` writes beside its report
(results/<experiment>/<report>_predictions.csv, for example laws_static_predictions.csv) and
draws one figure per predictions file, one panel per law.
Run from the repository root: python -m paper_figures.law_predictions --experiment laws_static
"""

import csv
from pathlib import Path

import numpy as np
from matplotlib.lines import Line2D

from paper_figures.common import MissingInput, default_out_dir, experiment_dir, figure, grid_shape, method_colors, run_script, save_figure

NAME = "law_predictions"
MARKERS = ("o", "s", "^", "D", "v", "P")
# Beyond this many targets the legend would cover the panels, so it is left out.
MAX_LEGEND_TARGETS = 12


def read_predictions(path: Path) -> list[dict]:
    """Return the rows of a predictions CSV with `actual` and `predicted` as floats."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["actual"], row["predicted"] = float(row["actual"]), float(row["predicted"])
    return rows


def _draw_law(ax, rows: list[dict], colors: dict, markers: dict) -> None:
    actual = np.array([row["actual"] for row in rows])
    predicted = np.array([row["predicted"] for row in rows])
    for row in rows:
        ax.scatter(row["actual"], row["predicted"], color=colors[row["target"]], marker=markers[row["test_set"]], s=18)
    low, high = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
    margin = 0.05 * (high - low) or 0.05
    ax.plot([low - margin, high + margin], [low - margin, high + margin], color="0.5", linewidth=0.8, linestyle="--")
    ax.set_xlim(low - margin, high + margin)
    ax.set_ylim(low - margin, high + margin)
    mae = float(np.mean(np.abs(predicted - actual)))
    ax.set_title(f"{rows[0]['law']}: {len(rows)} predictions, MAE {mae:.3g}", fontsize=9)


def build_file(path: Path, out_dir: Path) -> list[Path]:
    """Write law_predictions_<report>.png and .pdf for one predictions file, one panel per law."""
    rows = read_predictions(path)
    if not rows:
        raise MissingInput(f"{path} lists no predictions (no law could be scored on the held-out runs)")
    laws = list(dict.fromkeys(row["law"] for row in rows))
    targets = list(dict.fromkeys(row["target"] for row in rows))
    test_sets = list(dict.fromkeys(row["test_set"] for row in rows))
    colors = method_colors(targets)
    markers = {name: MARKERS[index % len(MARKERS)] for index, name in enumerate(test_sets)}
    quantity = rows[0].get("quantity") or "loss"
    report = path.stem.removesuffix("_predictions")
    columns, grid_rows = grid_shape(len(laws), max_columns=3)
    with figure(columns, grid_rows, width=3.2, height=3.0) as (fig, axes):
        for ax, law in zip(axes, laws):
            _draw_law(ax, [row for row in rows if row["law"] == law], colors, markers)
            ax.set_xlabel(f"actual {quantity}")
            ax.set_ylabel(f"predicted {quantity}")
        for ax in axes[len(laws):]:
            ax.set_visible(False)
        if len(targets) <= MAX_LEGEND_TARGETS:
            handles = [Line2D([], [], color=colors[target], marker="o", linestyle="none", label=target) for target in targets]
            if len(test_sets) > 1:
                handles += [Line2D([], [], color="0.3", marker=markers[name], linestyle="none", label=name) for name in test_sets]
            fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), fontsize=8)
        fig.suptitle(f"Held-out predictions of {report}, {path.parent.name}")
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
