"""Figure: each method's mixture over training steps, as stacked domain weights.

Reads results/<experiment>/methods/*.json and the run records they point to. For DoReMi and DoGE
the panel shows the proxy run, where the weights change; their final run trains on the proxy's
averaged weights.
Run from the repository root: python -m paper_figures.mixture_trajectories --experiment sim
"""

import logging
from pathlib import Path

import numpy as np

from paper_figures.common import MissingInput, default_out_dir, figure, grid_shape, load_method_runs, pick_seed, run_script, save_figure

NAME = "mixture_trajectories"
# An online run with fewer recorded mixtures than this is drawn with a warning.
SPARSE_POINTS = 10

log = logging.getLogger(__name__)


def mixture_points(record: dict) -> tuple[np.ndarray, np.ndarray]:
    """Return (steps, mixtures) of a run: the mixture in force up to each recorded step, from step 0.

    The trajectory records the mixture at each validation step and, in online runs, at about 100
    evenly spaced steps. Step 0 takes the static mixture of the run, or the first online round's
    mixture when that round starts at step 0.
    """
    trajectory = record.get("trajectory") or []
    if not trajectory:
        raise MissingInput(f"run {record.get('id')} has no mixture trajectory")
    spec = record.get("spec") or {}
    static = spec.get("mixture")
    # A run shorter than SPARSE_POINTS steps records each of its steps.
    expected = min(SPARSE_POINTS, int((spec.get("train") or {}).get("steps") or SPARSE_POINTS))
    if static is None and len(trajectory) < expected:
        # Runs recorded before the evenly spaced points existed contain only their validation steps.
        log.warning("run %s recorded its mixture at only %d step(s). Its panel draws each recorded mixture from the "
                    "previous recorded step on, so a mixture that changed in between is drawn flat.", record.get("id"), len(trajectory))
    steps = [int(entry["step"]) for entry in trajectory]
    mixtures = [entry["mixture"] for entry in trajectory]
    rounds = record.get("rounds") or []
    if static is not None:
        initial = static
    elif rounds and int(rounds[0]["step"]) == 0:
        initial = rounds[0]["mixture"]
    else:
        initial = mixtures[0]
    if steps[0] != 0:
        steps, mixtures = [0, *steps], [initial, *mixtures]
    return np.asarray(steps), np.asarray(mixtures, dtype=float)


def build(results_dir="results", experiment="sim", out_dir=None, seed=None, setting=None) -> list[Path]:
    """Draw one panel per method (the runs of one seed) and write mixture_trajectories.png and .pdf."""
    shown_seed, runs = pick_seed(load_method_runs(results_dir, experiment, setting), seed)
    domains = runs[0].final["domains"]
    columns, rows = grid_shape(len(runs))
    with figure(columns, rows, sharey=True) as (fig, axes):
        for ax, run in zip(axes, runs):
            steps, mixtures = mixture_points(run.mixing)
            # Each weight applies from the previous recorded step up to this one.
            ax.stackplot(steps, mixtures.T, labels=domains, step="pre", linewidth=0)
            ax.set_title(run.mixing_label, fontsize=9)
            ax.set_xlim(0, steps[-1])
            ax.set_ylim(0, 1)
            ax.set_xlabel("step")
        for ax in axes[len(runs):]:
            ax.set_visible(False)
        axes[0].set_ylabel("domain weight")
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(domains), 8), fontsize=8)
        fig.suptitle(f"Mixture over training, {experiment}, seed {shown_seed}")
        return save_figure(fig, out_dir or default_out_dir(results_dir, experiment), NAME)


if __name__ == "__main__":
    run_script(build, __doc__.splitlines()[0])
