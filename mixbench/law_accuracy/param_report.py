"""CSV and Markdown reports of a parameter-accuracy sweep (see `param`)."""

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from mixbench.law_accuracy.dynamic_fit import _matrix_markdown
from mixbench.law_accuracy.param_score import MIXTURES
from mixbench.runs import write_text_atomic

COLUMNS = ("method", "round", "step", "window", "children", "a_sim", "b", "b_r2", "fitted_r2", "eta",
           *(f"regret_{name}" for name in MIXTURES))
SIM_COLUMNS = ("a_sim_true", "fitted_a_sim_true", *(f"true_regret_{name}" for name in MIXTURES))


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return format(float(value), ".6g")
    return str(value)


def write_rows(rows: list[dict[str, Any]], path: Path) -> Path:
    """Write one row per branch point as CSV, atomically; simulator columns only when present."""
    columns = [*COLUMNS, *(column for column in SIM_COLUMNS if any(column in row for row in rows))]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_format(row.get(column)) for column in columns])
    write_text_atomic(Path(path), buffer.getvalue())
    return Path(path)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _mixture(values) -> str:
    return " ".join(f"{w:.3f}" for w in values)


def _table(rows: list[dict], simulated: bool) -> str:
    header = ["round", "step", "a_sim", "b", "R^2 of b A^t", "R^2 of A*", "regret: method's step", "regret: A*'s step",
              "regret: run's next mixture", "regret: method's argmin"]
    keys = ["a_sim", "b", "b_r2", "fitted_r2", "regret_method_step", "regret_fitted_step", "regret_chosen",
            "regret_method_argmin"]
    if simulated:
        header += ["a_sim vs true A", "A* a_sim vs true A", "true regret: method's step", "true regret: A*'s step",
                   "true regret: method's argmin", "true regret: A*'s argmin"]
        keys += ["a_sim_true", "fitted_a_sim_true", "true_regret_method_step", "true_regret_fitted_step",
                 "true_regret_method_argmin", "true_regret_fitted_argmin"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append(f"| {row['round']} | {row['step']} | " + " | ".join(_number(row.get(key)) for key in keys) + " |")
    return "\n".join(lines) + "\n"


def _mean(rows: list[dict], key: str) -> float | None:
    values = [row[key] for row in rows if row.get(key) is not None]
    return float(np.mean(values)) if values else None


def param_markdown(options, setting, spec, rows: list[dict], details: list[dict]) -> str:
    """Return the Markdown report: the summary, one table row per round, then each round's matrices and mixtures."""
    simulated = any("true_A" in detail for detail in details)
    domains, eval_sets = list(setting.domains), list(setting.domains)
    lines = [
        f"# Parameter accuracy: {options.name}",
        "",
        f"The {options.parent_method} run {spec.id} (setting {setting.name}, {spec.train['steps']} steps, seed {options.seed}) "
        f"was branched at its rounds {', '.join(str(row['round']) for row in rows)}: {options.children} children on a "
        f"{options.design} design each trained {options.window} steps from the run's saved state. A*^t is fitted on their "
        f"validation loss changes (dL = -A* p); b is the least-squares scale with -dL about b A^t p, A^t being the "
        f"method's recorded estimate.",
        "",
        f"- Mean a_sim (cosine and Spearman of column sums, A*^t against A^t): {_number(_mean(rows, 'a_sim'))}.",
        f"- Mean R^2 of the b-scaled method law on the children: {_number(_mean(rows, 'b_r2'))} "
        f"(of A*^t itself, in sample: {_number(_mean(rows, 'fitted_r2'))}).",
        f"- Implied mixture: one exponentiated-gradient step p_j ~ p_j exp(eta sum_i A_ij) from the mixture in force at the "
        f"round, on A normalised as Aioli does (eta {rows[0]['eta']:.3g}); argmin: the single domain that minimises the "
        f"loss the linear law predicts. Regret is scored by the loss A*^t predicts after the window: 0 is the best "
        f"mixture on the simplex under A*^t (A*'s own argmin), 1 the uniform mixture.",
    ]
    if simulated:
        lines.append(f"- Simulator: mean a_sim of A^t against the true A^t {_number(_mean(rows, 'a_sim_true'))}, of A*^t "
                     f"against it {_number(_mean(rows, 'fitted_a_sim_true'))}; true regret uses the true law over the window.")
    lines += ["", "## Per round", "", _table(rows, simulated)]
    for detail in details:
        lines += [f"## Round {detail['round']} (step {detail['step']})", "",
                  f"Mixture in force: {_mixture(detail['mixture_before'])}. Method's step: {_mixture(detail['mixtures']['method_step'])}; "
                  f"A*'s step: {_mixture(detail['mixtures']['fitted_step'])}; the run's next mixture: "
                  f"{_mixture(detail['mixtures']['chosen'])}; argmins: method {_mixture(detail['mixtures']['method_argmin'])}, "
                  f"A* {_mixture(detail['mixtures']['fitted_argmin'])}.", "",
                  "Method's A^t:", "", _matrix_markdown(detail["method_A"], eval_sets, domains),
                  f"Fitted A*^t (loss drop per unit weight over {options.window} steps):", "",
                  _matrix_markdown(detail["fitted_A"], eval_sets, domains)]
        if "true_A" in detail:
            lines += ["True A^t (per unit of training time):", "", _matrix_markdown(detail["true_A"], eval_sets, domains)]
    return "\n".join(lines)
