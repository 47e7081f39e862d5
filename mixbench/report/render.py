"""Rendering a table as markdown, CSV and LaTeX, with fixed sorting and number formats."""

import csv
import io
import math
from pathlib import Path


from mixbench.report.table import HEADLINE, Table, count_text, settings_markdown
from mixbench.runs import write_text_atomic


WIN_LOSS_COLUMNS = ("method", "settings", "wins", "losses", "ties", "significant_wins", "significant_losses", "not_compared")


def _format(value) -> str:
    """Format a cell for markdown: three decimals, or three significant digits from 1e5 up; blank if undefined."""
    if value is None:
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        if abs(value) >= 1e5:
            return f"{value:.3g}"
        return f"{value:.3f}"
    return str(value)


def _columns(rows: list[dict], headline) -> list[str]:
    columns = list(headline)
    for row in rows:
        columns += [column for column in row if column not in columns]
    return columns


def to_markdown(rows: list[dict], headline=HEADLINE) -> str:
    """Render rows as a markdown table: headline columns first, then per-domain and compute columns."""
    columns = _columns(rows, headline)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(column, row.get(column)) for column in columns) + " |")
    return "\n".join(lines) + "\n"


def _cell(column: str, value) -> str:
    """Format token counts as counts (614.40k, 0), every other cell with `_format`."""
    if column.endswith("_tokens") and isinstance(value, (int, float)) and math.isfinite(value):
        return count_text(value)
    return _format(value)


def _csv_value(value):
    """Write floats at full precision (repr), and undefined values as empty cells rather than `nan`."""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    return "" if value is None else value


def to_csv(rows: list[dict], headline=HEADLINE) -> str:
    """Render rows as CSV with the markdown table's columns."""
    columns = _columns(rows, headline)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({column: _csv_value(row.get(column)) for column in columns})
    return buffer.getvalue()


def legend(table: Table) -> list[str]:
    """Return the legend: what the rows, columns and confidence interval of the table mean."""
    lines = [
        f"One row per method and setting; `setting` is the data config name and a fingerprint of the data. Model and "
        f"training settings are not part of it, so a method rerun with other ones replaces its earlier result, and "
        f"`final_run_tokens` shows each row's budget. The compared value is the {table.kind.metric_text}; lower is better.",
        "`delta_vs_stratified` is the mean over seeds of the per-seed difference (method minus stratified, same seed "
        "and setting), over the `paired_seeds` seeds both completed with final runs of the same length and the same model and "
        "training settings (thread counts, checkpoint and validation intervals aside). `delta_ci95_low` and `delta_ci95_high` bound its "
        "95% paired t-interval (Student's t with paired_seeds - 1 degrees of freedom); they are blank with one paired seed.",
        "`std_` columns are standard deviations over seeds (n - 1), blank with one seed. Token and wall-time columns "
        "are averages over seeds of the final run plus every extra run (`<role>_run_tokens` for probe, reference, proxy "
        "and single-domain runs). `total_reference_tokens` counts tokens a reference model scored during training "
        "(DoReMi), `total_target_tokens` those of target-gradient batches (DoGE), and `total_flops` every pass. `status` is ok, partial (a failed or missing seed), failed (no complete run), missing "
        "(no result for a method the experiment lists), skipped (its settings rule it out in this setting; "
        "experiment.json says why) or mixed (its seeds' final runs differ in length or in model or training settings, so "
        "its means and token columns average over them; `mixbench table` names the seeds of each).",
    ]
    lines.append(
        f"{table.kind.columns_text} `seeds` counts the seeds with a result, `failed` those without a complete final "
        "run and `missing` the listed seeds without a result. `vs_stratified` is win or loss by the sign of "
        "`delta_vs_stratified` alone; a difference is significant only when its interval excludes zero. "
        "`total_extra_run_tokens` counts the training tokens of extra runs, `total_exploration_tokens` those of "
        "exploration steps inside any run (Aioli's), and `total_eval_tokens` those scored by validation and test passes."
    )
    if table.kind.unmeasured:
        left_out = " or ".join(f"`{key}`" for key in table.kind.unmeasured)
        lines.append(f"These runs record no {left_out}, so those columns are left out.")
    if table.filters.describe():
        lines.append(f"Filtered to {table.filters.describe()}.")
    return lines


def render_markdown(table: Table, title: str) -> str:
    """Render the whole `table.md`: title, legend, the main table and the win/loss summary."""
    parts = [f"# {title}", "", *legend(table), "", to_markdown(table.rows, table.kind.headline).rstrip("\n"), ""]
    parts += settings_markdown(table.setting_data)
    parts += ["## Wins and losses against stratified", ""]
    parts += ["Per method, the number of settings in which its mean over paired seeds is below stratified's (wins), "
              "above it (losses) or equal (ties); significant ones have a 95% interval that excludes zero.", ""]
    if table.win_loss:
        parts.append(to_markdown(table.win_loss, WIN_LOSS_COLUMNS).rstrip("\n"))
    else:
        parts.append("No method other than stratified is listed.")
    return "\n".join(parts) + "\n"


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters in plain text (method, setting and domain names)."""
    replacements = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
                    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    return "".join(replacements.get(character, character) for character in str(text))


def _tabular(headers: list[str], body: list[list[str]], left: int) -> list[str]:
    spec = "l" * left + "r" * (len(headers) - left)
    lines = [f"\\begin{{tabular}}{{{spec}}}", "\\toprule", " & ".join(headers) + r" \\", "\\midrule"]
    lines += [" & ".join(cells) + r" \\" for cells in body]
    return lines + ["\\bottomrule", "\\end{tabular}"]


def to_latex(table: Table, title: str) -> str:
    """Render booktabs tabulars (main columns, per-domain perplexity, wins and losses) with the legend as comments."""
    several = len(table.settings) > 1
    lines = [f"% {latex_escape(title)}. Rebuilt by `mixbench table`; needs \\usepackage{{booktabs}}."]
    lines += [f"% {sentence}" for sentence in legend(table)]
    names = ["Method"] + (["Setting"] if several else []) + ["Seeds"]
    headers = names + [header for header, _ in table.kind.latex]
    body = [[latex_escape(row["method"])] + ([latex_escape(row["setting"])] if several else []) + [str(row["seeds"])]
            + [cell(row) for _, cell in table.kind.latex] for row in table.rows]
    lines += [""] + _tabular(headers, body, len(names) - 1)

    domains = [column[4:] for column in _columns(table.rows, ()) if column.startswith("ppl_")]
    if domains:
        lines += ["", "% Test perplexity per domain, mean over seeds."]
        body = [[latex_escape(row["method"])] + ([latex_escape(row["setting"])] if several else [])
                + [f"${row[f'ppl_{domain}']:.3f}$" if f"ppl_{domain}" in row else "--" for domain in domains]
                for row in table.rows]
        lines += _tabular(names[:-1] + [latex_escape(domain) for domain in domains], body, len(names) - 1)

    if table.win_loss:
        lines += ["", "% Settings in which each method beats stratified (wins), trails it (losses) or ties, and those without a comparison."]
        headers = ["Method", "Settings", "Wins", "Losses", "Ties", "Significant wins", "Significant losses", "Not compared"]
        body = [[latex_escape(entry["method"])] + [str(entry[key]) for key in WIN_LOSS_COLUMNS[1:]] for entry in table.win_loss]
        lines += _tabular(headers, body, 1)
    return "\n".join(lines) + "\n"


def write_tables(table: Table, directory: Path, title: str) -> list[Path]:
    """Write `table.md`, `table.csv` and `table.tex` into `directory` atomically and return their paths.

    A filtered table goes to `table-filtered.*` instead, so that it never replaces the full table.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = "table-filtered" if table.filters.describe() else "table"
    contents = {
        f"{stem}.md": render_markdown(table, title),
        f"{stem}.csv": to_csv(table.rows, table.kind.headline),
        f"{stem}.tex": to_latex(table, title),
    }
    paths = []
    for name, text in contents.items():
        write_text_atomic(directory / name, text)
        paths.append(directory / name)
    return paths
