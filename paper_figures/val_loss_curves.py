"""Figure: validation loss per domain over training steps, one line per method.

Reads the periodic validation evaluations (`metrics`) of each method's final run.
Run from the repository root: python -m paper_figures.val_loss_curves --experiment sim
"""

from pathlib import Path

import numpy as np

from paper_figures.common import (
    default_out_dir,
    figure,
    grid_shape,
    load_method_runs,
    log,
    method_styles,
    pick_seed,
    run_script,
    save_figure,
)

NAME = "val_loss_curves"


def loss_curve(record: dict) -> tuple[np.ndarray, np.ndarray]:
    """Return (steps, losses of shape steps x domains) of a run's validation evaluations."""
    entries = [entry for entry in record.get("metrics") or [] if entry.get("split", "val") == "val"]
    steps = np.array([int(entry["step"]) for entry in entries])
    losses = np.array([entry["losses"] for entry in entries], dtype=float).reshape(len(entries), -1)
    return steps, losses


def build(results_dir="results", experiment="sim", out_dir=None, seed=None, setting=None) -> list[Path]:
    """Draw one panel per domain plus the domain average, and write val_loss_curves.png and .pdf."""
    shown_seed, runs = pick_seed(load_method_runs(results_dir, experiment, setting), seed)
    domains = runs[0].final["domains"]
    styles = method_styles([run.method for run in runs])
    _hint_if_single_points(runs)
    panels = [*domains, "average over domains"]
    columns, rows = grid_shape(len(panels))
    with figure(columns, rows) as (fig, axes):
        for run in runs:
            steps, losses = loss_curve(run.final)
            # Markers at the evaluations tell methods apart beyond ten colours, and show a run
            # evaluated only at its end, whose single point a bare line would not.
            style = {**styles[run.method], "label": run.method, "linewidth": 1.2, "markersize": 3}
            for index, ax in enumerate(axes[: len(domains)]):
                ax.plot(steps, losses[:, index], **style)
            axes[len(domains)].plot(steps, losses.mean(axis=1), **style)
        for ax, title in zip(axes, panels):
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("step")
        for ax in axes[len(panels):]:
            ax.set_visible(False)
        axes[0].set_ylabel("validation loss")
        handles, labels = axes[len(domains)].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6) or 1, fontsize=8)
        fig.suptitle(f"Validation loss of the final runs, {experiment}, seed {shown_seed}")
        return save_figure(fig, out_dir or default_out_dir(results_dir, experiment), NAME)


def _hint_if_single_points(runs) -> None:
    """Log how to get curves when every final run was validated only at its end."""
    if any(len(loss_curve(run.final)[0]) > 1 for run in runs):
        return
    train = (runs[0].final.get("spec") or {}).get("train") or {}
    log.info(
        "figure %s: each final run was validated once (train.eval_every=%s, train.steps=%s), so each method is "
        "one point; rerun with train.eval_every below train.steps for curves.",
        NAME, train.get("eval_every"), train.get("steps"),
    )


if __name__ == "__main__":
    run_script(build, __doc__.splitlines()[0])
