"""Write law-accuracy rows as CSV and summarise them as a Markdown table."""

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mixbench.runs import write_text_atomic

REPORT_COLUMNS = ("law", "target", "test_set", "n_train", "n_test", "r2", "mae", "spearman")
TRAILING_COLUMNS = ("rmse", "in_sample_r2", "status")


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return format(float(value), ".10g")
    return str(value)


def write_report(rows: Sequence[dict[str, Any]], out_csv: str | Path) -> Path:
    """Write rows as CSV, atomically: to a temporary file in the same folder, then renamed.

    The columns are law, target, test_set, n_train, n_test, r2, mae, spearman, then rmse,
    in_sample_r2 and status, then any other keys in sorted order. Missing values are empty.
    """
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    extra = sorted({key for row in rows for key in row} - set(REPORT_COLUMNS) - set(TRAILING_COLUMNS))
    columns = [*REPORT_COLUMNS, *TRAILING_COLUMNS, *extra]
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_format(row.get(column)) for column in columns])
    # The shared atomic writer also makes the file readable by others, as every result file is.
    write_text_atomic(out_csv, text.getvalue())
    return out_csv


PREDICTION_COLUMNS = ("law", "target", "test_set", "run", "actual", "predicted")


def predictions_path(report_csv: str | Path) -> Path:
    """Return where the per-run predictions behind a report go: `<report stem>_predictions.csv` beside it."""
    report_csv = Path(report_csv)
    return report_csv.with_name(f"{report_csv.stem}_predictions.csv")


def write_predictions(entries: Sequence[dict[str, Any]], out_csv: str | Path) -> Path:
    """Write per-run predictions (columns PREDICTION_COLUMNS, then any other keys sorted) as CSV, atomically."""
    extra = sorted({key for entry in entries for key in entry} - set(PREDICTION_COLUMNS))
    columns = [*PREDICTION_COLUMNS, *extra]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for entry in entries:
        # Full precision (repr), so that metrics recomputed from the file match the report.
        writer.writerow([repr(float(value)) if isinstance(value, (float, np.floating)) else _format(value) for value in map(entry.get, columns)])
    write_text_atomic(Path(out_csv), buffer.getvalue())
    return Path(out_csv)


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [row[key] for row in rows if row.get(key) is not None]
    return float(np.mean(values)) if values else None


def _cell(value: float | None) -> str:
    if value is None:
        return "-"
    # A law fitted on too few runs can predict losses of 1e40; fixed-point notation would print every digit.
    return f"{value:.3g}" if abs(value) >= 1e5 else f"{value:.3f}"


def is_scored(row: dict[str, Any]) -> bool:
    """Return whether a row has metrics: status "ok", or "partial: ..." when one metric is undefined."""
    return not str(row.get("status", "ok")).startswith("skipped")


def summary_markdown(rows: Sequence[dict[str, Any]], headline: str | None = None) -> str:
    """Return a Markdown table with one line per law and test set.

    Columns: Spearman and R^2 on the `headline` target when one is given (for example
    `metric/the_pile_pile_cc_val_loss`), then mean Spearman and mean R^2 over the scored
    targets, and how many targets were scored and skipped.
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["law"], row["test_set"]), []).append(row)
    header = ["law", "test set"]
    if headline:
        header += [f"{headline} Spearman", f"{headline} R^2"]
    header += ["mean Spearman", "mean R^2", "targets scored", "skipped"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (law, test_set), group in groups.items():
        scored = [row for row in group if is_scored(row)]
        cells = [law, test_set]
        if headline:
            chosen = [row for row in scored if row["target"] == headline]
            cells += [_cell(chosen[0]["spearman"]) if chosen else "-", _cell(chosen[0]["r2"]) if chosen else "-"]
        cells += [_cell(_mean(scored, "spearman")), _cell(_mean(scored, "r2")), str(len(scored)), str(len(group) - len(scored))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


AVERAGED_METRICS = ("r2", "mae", "rmse", "spearman", "in_sample_r2")


def averages_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Return a Markdown table of each metric averaged over the scored targets, per law and test set.

    A metric that is undefined for some targets (None) is averaged over the others.
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["law"], row["test_set"]), []).append(row)
    header = ["law", "test set", "runs fitted", "runs scored", "mean R^2", "mean MAE", "mean RMSE",
              "mean Spearman", "mean in-sample R^2", "targets scored", "skipped"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (law, test_set), group in groups.items():
        scored = [row for row in group if is_scored(row)]
        cells = [law, test_set, str(group[0]["n_train"]), str(group[0]["n_test"])]
        cells += [_cell(_mean(scored, metric)) for metric in AVERAGED_METRICS]
        cells += [str(len(scored)), str(len(group) - len(scored))]
        lines.append("| " + " | ".join(cells) + " |")
    exact = sorted({(row["law"], row["test_set"]) for row in rows if "exactly determined" in str(row.get("status", ""))})
    if exact:
        listed = ", ".join(f"{law} on {test_set}" for law, test_set in exact)
        lines += ["", f"Exactly determined fits ({listed}): the law has no more fit runs than parameters, so nothing "
                      f"constrains its predictions and their means can be far off; the status column names the rows."]
    return "\n".join(lines) + "\n"


def rows_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Return a Markdown table with one line per row: law, target, test set, metrics and status."""
    header = ["law", "target", "test set", "R^2", "MAE", "RMSE", "Spearman", "in-sample R^2", "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(row["law"]), str(row["target"]), str(row["test_set"])]
        cells += [_cell(row.get(metric)) for metric in AVERAGED_METRICS]
        cells.append(str(row.get("status", "ok")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
