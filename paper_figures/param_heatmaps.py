"""Figure: per round of a parameter-accuracy sweep, the method's A^t beside the A*^t fitted on its children.

Reads results/<experiment>/laws_param.json, which `mixbench laws experiment=laws_param` (or
laws_param_sim) writes, and draws one row per branched round, at most MAX_ROUNDS of them.
Run from the repository root: python -m paper_figures.param_heatmaps --experiment laws_param_three
"""

import json
from pathlib import Path

import numpy as np

from paper_figures.a_heatmaps import PANEL_WIDTH, draw_heatmap_row, spread_rounds
from paper_figures.common import MissingInput, default_out_dir, experiment_dir, figure_rows, fit_suptitle, run_script, save_figure

NAME = "param_heatmaps"
REPORT = "laws_param.json"
# Inches per row of two panels: less than a_heatmaps' PANEL_HEIGHT, because a square heatmap in a
# PANEL_WIDTH panel leaves room to spare and each row has a one- or two-line title of its own.
ROW_HEIGHT = 2.7
# Up to this many domains each cell is labelled with its value, so a faint matrix stays readable.
# Wider matrices leave too little room per cell at PANEL_WIDTH.
MAX_ANNOTATED_DOMAINS = 4


def _matrix(entry: dict, key: str) -> np.ndarray | None:
    return None if entry.get(key) is None else np.asarray(entry[key], dtype=float)


def annotate_cells(ax, matrix: np.ndarray) -> None:
    """Write each cell's value on a heatmap drawn by draw_heatmap_row, in white on dark cells."""
    _, limit = ax.images[0].get_clim()
    for (row, column), value in np.ndenumerate(matrix):
        color = "white" if abs(value) > 0.6 * limit else "black"
        ax.text(column, row, f"{value:.2g}", ha="center", va="center", fontsize=6, color=color)


def round_title(entry: dict) -> str:
    """Return a round's title: round, step, a_sim, the scale b, and on the simulator a_sim against the true A^t."""
    title = f"round {entry['round']}, step {entry['step']}: a_sim {entry['a_sim']:.3f}, b {entry['b']:.3g}"
    if entry.get("a_sim_true") is not None and entry.get("fitted_a_sim_true") is not None:
        title += f"\na_sim against the true $A^t$: {entry['a_sim_true']:.3f} ($A^t$), {entry['fitted_a_sim_true']:.3f} ($A^{{*t}}$)"
    return title


def build(results_dir="results", experiment="laws_param", out_dir=None, seed=None, setting=None) -> list[Path]:
    """Write param_heatmaps.png and .pdf from the experiment's laws_param.json. `seed` and `setting` are unused.

    Both matrices of a round share one colour scale, symmetric around 0, so their sizes compare
    directly. The method's A^t is in the method's own units, so it can look faint beside A*^t (or
    the reverse). The cell values of small matrices keep both readable.
    """
    directory = experiment_dir(results_dir, experiment)
    path = directory / REPORT
    if not path.exists():
        raise MissingInput(f"no parameter-accuracy report ({REPORT}) under {directory}; `mixbench laws experiment=laws_param` writes it")
    report = json.loads(path.read_text())
    rounds = spread_rounds(list(report.get("rounds") or []))
    if not rounds:
        raise MissingInput(f"{path} lists no rounds (the sweep branched no round)")
    domains, eval_sets = list(report["domains"]), list(report["eval_sets"])
    method = report["method"]
    with figure_rows(2, len(rounds), width=PANEL_WIDTH, height=ROW_HEIGHT) as (fig, rows):
        for entry, (subfigure, axes) in zip(rounds, rows):
            matrices = [_matrix(entry, "method_A"), _matrix(entry, "fitted_A")]
            titles = [f"{method} $A^t$", f"fitted $A^{{*t}}$ ({len(entry.get('children') or [])} children)"]
            draw_heatmap_row(subfigure, axes, matrices, titles, "", domains, eval_sets)
            for ax, matrix in zip(axes, matrices):
                ax.set_xlabel("training domain", fontsize=8)
                if matrix is not None and matrix.shape[1] <= MAX_ANNOTATED_DOMAINS:
                    annotate_cells(ax, matrix)
            fit_suptitle(subfigure, round_title(entry), fontsize=9)
        fit_suptitle(
            fig,
            f"{method} $A^t$ against $A^{{*t}}$ fitted over {report['window']}-step windows, "
            f"{path.parent.name}, seed {report['seed']}",
            fontsize=10,
        )
        return save_figure(fig, out_dir or default_out_dir(results_dir, experiment), NAME)


if __name__ == "__main__":
    run_script(build, __doc__.splitlines()[0])
