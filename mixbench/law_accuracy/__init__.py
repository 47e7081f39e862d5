"""Law accuracy: how well mixing laws predict the losses of runs they were not fitted on.

    train = read_run_table("train_mixture.csv", "train_loss.csv")
    test = read_run_table("test_mixture.csv", "test_loss.csv")
    rows = score_laws(train, [test], ["linear", "dml", "trees"])
    write_report(rows, "law_accuracy.csv")
    print(summary_markdown(rows, headline="metric/the_pile_pile_cc_val_loss"))
"""

from mixbench.law_accuracy.report import REPORT_COLUMNS, summary_markdown, write_report
from mixbench.law_accuracy.scoring import (
    align_domains,
    cross_validate,
    match_targets_to_domains,
    prediction_metrics,
    r2_score,
    score_laws,
)
from mixbench.law_accuracy.tables import RunTable, read_run_table

__all__ = [
    "REPORT_COLUMNS",
    "RunTable",
    "align_domains",
    "cross_validate",
    "match_targets_to_domains",
    "prediction_metrics",
    "r2_score",
    "read_run_table",
    "score_laws",
    "summary_markdown",
    "write_report",
]
