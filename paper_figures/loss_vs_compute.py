"""Figure: the table's compared value against total training compute, per method and seed.

Compute is counted as the comparison table counts total_train_tokens: training and exploration
tokens of the final run plus those of every extra run (probe, reference, proxy, single-domain),
each run once. The value is the one the table compares: the mean over domains of the final run's
test perplexity, or on the simulator its noise-free mean loss.
Run from the repository root: python -m paper_figures.loss_vs_compute --experiment sim
"""

from pathlib import Path

import numpy as np

from paper_figures.common import (
    MethodRun,
    default_out_dir,
    figure,
    label_log_axis,
    load_method_runs,
    method_styles,
    run_script,
    save_figure,
)

NAME = "loss_vs_compute"


def total_tokens(run: MethodRun) -> float:
    """Return the training plus exploration tokens of the final run and every extra run."""
    total = 0.0
    for record in (run.final, *run.extra):
        compute = record.get("compute") or {}
        total += float(compute.get("train_tokens") or 0) + float(compute.get("exploration_tokens") or 0)
    return total


def compared_value(run: MethodRun) -> tuple[float, str]:
    """Return the value the comparison table ranks this run by, and its axis label."""
    if "true_mean_loss" in run.final:
        return float(run.final["true_mean_loss"]), "final mean loss over domains (noise-free)"
    return float(np.mean(run.final["test_perplexity"])), "average test perplexity over domains"


def build(results_dir="results", experiment="sim", out_dir=None, seed=None, setting=None) -> list[Path]:
    """Draw the figure of an experiment's method results and save it. `seed` is unused."""
    runs = load_method_runs(results_dir, experiment, setting)
    with figure(1, 1, width=6.5, height=4.0) as (fig, axes):
        draw(axes[0], runs, experiment)
        return save_figure(fig, out_dir or default_out_dir(results_dir, experiment), NAME)


def draw(ax, runs: list[MethodRun], experiment: str) -> None:
    """Draw every seed as a small point and each method's mean over seeds as a labelled marker."""
    methods = list(dict.fromkeys(run.method for run in runs))
    styles = method_styles(methods)
    for method in methods:
        members = [run for run in runs if run.method == method]
        tokens = np.array([total_tokens(run) for run in members])
        losses = np.array([compared_value(run)[0] for run in members])
        color, marker = styles[method]["color"], styles[method]["marker"]
        ax.scatter(tokens, losses, color=color, marker=marker, s=10, alpha=0.4, linewidths=0)
        # Hollow markers of distinct shapes: methods at the same compute and loss stay visible.
        ax.scatter(tokens.mean(), losses.mean(), marker=marker, s=60, facecolors="none", edgecolors=color, linewidths=1.5,
                   label=f"{method} ({len(members)} seed{'s' if len(members) != 1 else ''})")
    ax.set_xscale("log")
    label_log_axis(ax.xaxis)
    ax.set_xlabel("total training tokens (final and extra runs)")
    ax.set_ylabel(compared_value(runs[0])[1])
    # Beside the axes, where it cannot hide points.
    ax.figure.legend(fontsize=7, loc="outside right upper")
    ax.set_title(f"Final value against compute, {experiment}", fontsize=10)


if __name__ == "__main__":
    run_script(build, __doc__.splitlines()[0])
