"""Paper figures rebuilt from the records under results/ only; see README.md in this folder.

Each module draws one figure with `build(results_dir, experiment, out_dir=None, seed=None)`,
which returns the paths it wrote or raises `common.MissingInput` naming what is absent.
"""

# The figure modules in the order `mixbench figures` builds them.
FIGURES = ("mixture_trajectories", "val_loss_curves", "a_heatmaps", "law_predictions", "param_heatmaps", "loss_vs_compute")
