"""Figure: the A^t estimates of each online method over rounds, as heatmaps (one file per method).

Reads the `rounds` entries (step, mixture, A) of the run in which each method chose its mixture.
On the simulator a second row shows the true A at the same steps, from the record's `true_A`.
Run from the repository root: python -m paper_figures.a_heatmaps --experiment sim
"""

from pathlib import Path

import numpy as np

from paper_figures.common import MissingInput, default_out_dir, figure, load_method_runs, pick_seed, run_script, save_figure

NAME = "a_heatmaps"
# Panels per row; a run with more rounds shows this many, evenly spaced, first and last included.
MAX_ROUNDS = 6
# Inches per panel: room for a square heatmap, its title and the rotated domain names below it.
PANEL_WIDTH, PANEL_HEIGHT = 2.2, 3.0
# A figure of one or two panels is widened to this, so that its title and colour bar fit.
MIN_FIGURE_WIDTH = 4.4


def spread_rounds(rounds: list[dict]) -> list[dict]:
    """Return at most MAX_ROUNDS of `rounds`, evenly spaced, the first and last included."""
    if len(rounds) <= MAX_ROUNDS:
        return rounds
    chosen = np.unique(np.linspace(0, len(rounds) - 1, MAX_ROUNDS).round().astype(int))
    return [rounds[index] for index in chosen]


def estimated_rounds(record: dict) -> list[dict]:
    """Return the rounds of a run that carry an A estimate, at most MAX_ROUNDS of them."""
    return spread_rounds([entry for entry in record.get("rounds") or [] if entry.get("A") is not None])


def draw_heatmap_row(fig, axes, matrices: list[np.ndarray | None], titles: list[str], label: str, domains: list[str],
                     eval_sets: list[str] | None = None) -> None:
    """Draw one row of heatmaps on a colour scale symmetric around 0 and shared by the row.

    Columns are training domains and rows evaluation sets. Without `eval_sets`, the rows are named
    after the domains when A is square, else numbered. A non-empty `label` heads the row's y label.
    A None matrix leaves its panel empty, with a note that nothing was recorded at that step.
    """
    limit = max(float(np.abs(matrix).max()) for matrix in matrices if matrix is not None) or 1.0
    image = None
    for ax, matrix, title in zip(axes, matrices, titles):
        if matrix is None:
            ax.set_title(title, fontsize=8)
            ax.text(0.5, 0.5, "not recorded\nat this step", ha="center", va="center", fontsize=7, transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_box_aspect(1)
            continue
        image = ax.imshow(matrix, cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(title, fontsize=8)
        ax.set_xticks(range(matrix.shape[1]), domains[: matrix.shape[1]], rotation=90, fontsize=7)
        if eval_sets is not None and matrix.shape[0] == len(eval_sets):
            row_names = eval_sets
        elif matrix.shape[0] == len(domains):
            row_names = domains
        else:
            row_names = [str(index) for index in range(matrix.shape[0])]
        ax.set_yticks(range(matrix.shape[0]), row_names, fontsize=7)
    axes[0].set_ylabel(f"{label}\neval set" if label else "eval set", fontsize=8)
    fig.colorbar(image, ax=list(axes), shrink=0.8)


def build_method(run, out_dir: Path) -> list[Path]:
    """Write a_heatmaps_<method>.png and .pdf for one method's run; the caller checks it has estimates."""
    rounds = estimated_rounds(run.mixing)
    domains = list(run.final["domains"])
    truth = {int(entry["step"]): np.asarray(entry["A"], dtype=float) for entry in run.mixing.get("true_A") or []}
    # The simulator records the true A where training resumes, so a per-step method's last estimate
    # (at the final step) has none beside it.
    with_truth = any(int(entry["step"]) in truth for entry in rounds)
    width = max(PANEL_WIDTH, MIN_FIGURE_WIDTH / len(rounds))
    with figure(len(rounds), 2 if with_truth else 1, width=width, height=PANEL_HEIGHT) as (fig, axes):
        titles = [f"step {entry['step']}" for entry in rounds]
        draw_heatmap_row(fig, axes[: len(rounds)], [np.asarray(entry["A"], dtype=float) for entry in rounds], titles, "estimate", domains)
        if with_truth:
            true_matrices = [truth.get(int(entry["step"])) for entry in rounds]
            draw_heatmap_row(fig, axes[len(rounds):], true_matrices, titles, "true A", domains)
        for ax in axes:
            ax.set_xlabel("training domain", fontsize=8)
        fig.suptitle(f"$A^t$ of {run.mixing_label}, seed {run.seed}", fontsize=10)
        return save_figure(fig, out_dir, f"{NAME}_{run.method}")


def build(results_dir="results", experiment="sim", out_dir=None, seed=None, setting=None) -> list[Path]:
    """Write one heatmap figure per method whose run recorded A estimates."""
    shown_seed, runs = pick_seed(load_method_runs(results_dir, experiment, setting), seed)
    online = [run for run in runs if estimated_rounds(run.mixing)]
    if not online:
        raise MissingInput(f"no run of experiment {experiment} at seed {shown_seed} recorded an A estimate (only online methods do)")
    target = out_dir or default_out_dir(results_dir, experiment)
    return [path for run in online for path in build_method(run, target)]


if __name__ == "__main__":
    run_script(build, __doc__.splitlines()[0])
