"""Comparison tables, rebuilt from method results and run records only.

A table has one row per method and setting. A method that ran with several sets of hyperparameters
in one experiment (a sweep over `method.eta`, say) has one row per set, named by the values that
differ: `aioli[eta=0.5]`. A setting is the data, model and training settings a
method ran in (`setting` in a method result). Rows compare each method with stratified sampling,
seed by seed within a setting. The win/loss summary counts the settings in which each method beats
stratified. `write_tables` renders the same table as markdown, CSV and LaTeX, with no timestamps and
fixed sorting and number formats, so the same records always give byte-identical files.
"""

from mixbench.report.render import latex_escape, legend, render_markdown, to_csv, to_latex, to_markdown, write_tables
from mixbench.report.results import Filters, apply_filters, load_experiment, load_results, name_variants
from mixbench.report.stats import distinct_extra_runs, paired_difference, t_quantile_975
from mixbench.report.table import (
    BASELINE,
    CORPUS,
    SIM,
    UNCOMPARED_TRAIN_KEYS,
    Table,
    TableKind,
    build_table,
    final_settings,
    mixed_conditions,
    run_conditions,
    setting_data,
    summarize,
    summarize_sim,
    win_loss,
)

__all__ = [
    "BASELINE", "CORPUS", "SIM", "UNCOMPARED_TRAIN_KEYS", "Filters", "Table", "TableKind", "apply_filters", "build_table",
    "distinct_extra_runs", "final_settings", "latex_escape", "legend", "load_experiment", "load_results", "mixed_conditions",
    "name_variants", "paired_difference", "render_markdown", "run_conditions", "setting_data", "summarize", "summarize_sim",
    "t_quantile_975", "to_csv", "to_latex", "to_markdown", "win_loss", "write_tables",
]
