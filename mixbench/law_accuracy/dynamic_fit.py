"""Fit the dynamic law dL = -A p to branch-sweep children and score it, in-sample and held out."""

from typing import Any

import numpy as np

from mixbench.law_accuracy.report import averages_markdown, rows_markdown
from mixbench.law_accuracy.scoring import METRICS, fit_status, prediction_entries, prediction_metrics, r2_score
from mixbench.laws import DynamicLaw
from mixbench.sim.metrics import a_sim


def _r2(y: np.ndarray, prediction: np.ndarray) -> float | None:
    """Return R^2, or None when y is constant and R^2 is undefined."""
    return r2_score(y, prediction) if np.ptp(y) > 0 else None


def _pooled_r2(y: np.ndarray, prediction: np.ndarray) -> float | None:
    """Return R^2 over all targets together, each target centred on its own mean first."""
    centred = y - y.mean(axis=0)
    total = float(np.sum(centred**2))
    return None if total == 0 else float(1.0 - np.sum((y - prediction) ** 2) / total)


def _true_changes(parent: dict, children: list[dict], P: np.ndarray) -> np.ndarray | None:
    """Return the loss changes that the simulator's true A at the branch step predicts, or None for real runs."""
    if "true_A" not in parent:
        return None
    progress = np.array([child["window_progress"] for child in children])
    return -progress[:, None] * (P @ np.asarray(parent["true_A"]).T)


def _row(target: str, n_fit: int, n_held: int) -> dict[str, Any]:
    row = {"law": "dynamic", "target": target, "test_set": "held_out", "n_train": n_fit, "n_test": n_held}
    row.update({metric: None for metric in METRICS})
    row["status"] = "ok"
    return row


def _score_target(row: dict, i: int, P: np.ndarray, dL: np.ndarray, fit_rows, held_rows, fitted_law) -> np.ndarray | None:
    """Fill one target's held-out metrics and in-sample R^2 of the law fitted on the fit children.

    Return the held-out predictions, or None when the row has no held-out metrics.
    """
    m = P.shape[1]
    if fitted_law is None:
        row["status"] = f"skipped: the dynamic law needs at least {m} fit children for {m} domains, got {len(fit_rows)}"
        return None
    y_fit, y_held = dL[fit_rows, i], dL[held_rows, i]
    row["in_sample_r2"] = _r2(y_fit, fitted_law.predict_dynamic(P[fit_rows])[:, i])
    if len(held_rows) < 2 or np.ptp(y_held) == 0:
        row["status"] = "partial: held-out metrics need at least 2 held-out children with different loss changes"
        return None
    prediction = fitted_law.predict_dynamic(P[held_rows])[:, i]
    row.update(prediction_metrics(y_held, prediction))
    row["status"] = fit_status(fitted_law, len(fit_rows), m)
    return prediction


def fit_and_score(parent: dict, children: list[dict], fit_rows: np.ndarray, held_rows: np.ndarray,
                  nonnegative: bool, predictions: list[dict[str, Any]] | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Return (one row per target, fitted values): A fitted on every child and on the fit children only.

    Rows hold held-out R^2, MAE, RMSE and Spearman of the law fitted on the fit children, its
    in-sample R^2, and `in_sample_r2_all`: the in-sample R^2 of the law fitted on every child.
    On the simulator they also hold `true_law_r2`, the R^2 of the true A at the branch step.
    When `predictions` is a list, one entry per held-out child and target is appended to it,
    with the child's key as `run` and the loss change as the actual and predicted value.
    """
    P = np.array([child["mixture"] for child in children], dtype=np.float64)
    dL = np.array([child["dL"] for child in children], dtype=np.float64)
    targets, m = parent["eval_sets"], P.shape[1]
    law_all = DynamicLaw(nonnegative=nonnegative).fit_dynamic(P, dL)
    predicted_all = law_all.predict_dynamic(P)
    law_fit = None
    if len(fit_rows) >= m:
        law_fit = DynamicLaw(nonnegative=nonnegative).fit_dynamic(P[fit_rows], dL[fit_rows])
    truth = _true_changes(parent, children, P)

    rows = []
    for i, target in enumerate(targets):
        row = _row(target, len(fit_rows), len(held_rows))
        if np.ptp(dL[:, i]) == 0:
            row["status"] = "skipped: the loss change is the same for every child"
        else:
            row["in_sample_r2_all"] = _r2(dL[:, i], predicted_all[:, i])
            predicted = _score_target(row, i, P, dL, fit_rows, held_rows, law_fit)
            if predictions is not None and predicted is not None:
                keys = [children[j]["key"] for j in held_rows]
                entries = prediction_entries("dynamic", target, "held_out", keys, dL[held_rows, i], predicted)
                predictions += [entry | {"quantity": "loss change"} for entry in entries]
            if truth is not None:
                row["true_law_r2"] = _r2(dL[:, i], truth[:, i])
        rows.append(row)

    fitted = {"A": law_all.A_.tolist(), "A_fit_children": None if law_fit is None else law_fit.A_.tolist(),
              "in_sample_r2_pooled": _pooled_r2(dL, predicted_all)}
    if truth is not None:
        fitted.update(_compare_with_truth(parent, children, law_all.A_, dL, truth))
    return rows, fitted


def _compare_with_truth(parent: dict, children: list[dict], A: np.ndarray, dL: np.ndarray, truth: np.ndarray) -> dict:
    """Compare a fitted A with the simulator's true A at the branch step, scaled by the window's progress."""
    progress = float(np.mean([child["window_progress"] for child in children]))
    true_A = np.asarray(parent["true_A"])
    expected = progress * true_A
    return {
        "true_A": true_A.tolist(),
        "window_progress": progress,
        "a_sim": a_sim(true_A, A),
        # Least-squares scale b with A about b * (progress * true A); 1 means the right size.
        "scale_vs_true": float(np.sum(A * expected) / np.sum(expected * expected)),
        "relative_error": float(np.linalg.norm(A - expected) / np.linalg.norm(expected)),
        "true_law_r2_pooled": _pooled_r2(dL, truth),
    }


def _mean(rows: list[dict], key: str) -> float | None:
    values = [row[key] for row in rows if row.get(key) is not None]
    return float(np.mean(values)) if values else None


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _matrix_markdown(A: list[list[float]], rows: list[str], columns: list[str]) -> str:
    lines = ["| eval set \\ domain | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    lines += ["| " + name + " | " + " | ".join(f"{value:.4g}" for value in values) + " |" for name, values in zip(rows, A)]
    return "\n".join(lines) + "\n"


def sweep_markdown(options, setting, parent: dict, children: list[dict], rows: list[dict], fitted: dict) -> str:
    """Return the Markdown report of a branch sweep: averages, in-sample R^2 on all children, per target, A."""
    n_held = rows[0]["n_test"] if rows else 0
    lines = [
        f"# Dynamic mixing law: {options.name}",
        "",
        f"Parent run {parent['spec']['id']} (setting {setting.name}, mixture "
        f"{' '.join(f'{w:.3f}' for w in parent['spec']['mixture'])}) trained to step {parent['step']}; "
        f"{len(children)} children on a {options.design} design each trained {options.window} more steps. "
        f"dL = -A p is fitted on the validation loss changes by least squares, "
        + ("with A constrained to A >= 0 (experiment.nonnegative=true)." if options.nonnegative
           else "with A unconstrained (experiment.nonnegative=false)."),
        "",
        f"- In-sample R^2 with all {len(children)} children (the measure Aioli, Chen et al. 2024, reports): mean over targets "
        f"{_number(_mean(rows, 'in_sample_r2_all'))}, pooled over targets {_number(fitted['in_sample_r2_pooled'])}.",
        f"- Held out: fitted on {len(children) - n_held} children, scored on {n_held}: mean R^2 "
        f"{_number(_mean(rows, 'r2'))}, mean Spearman {_number(_mean(rows, 'spearman'))}.",
    ]
    if "true_A" in fitted:
        lines += [
            f"- Simulator truth at step {parent['step']}: the true law dL = -(window progress {fitted['window_progress']:.4g}) A_true p "
            f"scores R^2 {_number(_mean(rows, 'true_law_r2'))} (mean over targets), {_number(fitted['true_law_r2_pooled'])} pooled.",
            f"- Fitted A against the true A: a_sim {fitted['a_sim']:.3f} (cosine and Spearman of column sums), scale "
            f"{fitted['scale_vs_true']:.3f} (1 is the right size), relative error {fitted['relative_error']:.3f}.",
        ]
    lines += ["", "## Averages over targets", "", averages_markdown(rows), "## Per target", "", rows_markdown(rows),
              f"## Fitted A (all {len(children)} children, loss drop per unit weight over the window)", "",
              _matrix_markdown(fitted["A"], parent["eval_sets"], parent["domains"])]
    return "\n".join(lines)
