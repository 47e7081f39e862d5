"""Comparison tables, rebuilt from method results and run records only."""

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from mixbench.errors import ConfigError
from mixbench.runs import RunStore

BASELINE = "stratified"


def load_results(experiment_dir: Path) -> list[dict]:
    """Read every method result of an experiment, sorted by method and seed."""
    paths = sorted((Path(experiment_dir) / "methods").glob("*.json"))
    if not paths:
        raise ConfigError(
            f"no method results under {experiment_dir}/methods; run `mixbench benchmark` for this experiment first."
        )
    results = [json.loads(path.read_text()) for path in paths]
    return sorted(results, key=lambda result: (result["method"], result["seed"]))


def _compute_of(record: dict) -> dict:
    compute = record.get("compute") or {}
    return {key: float(compute.get(key, 0.0) or 0.0) for key in ("train_tokens", "exploration_tokens", "eval_tokens", "wall_time_s")}


def summarize(results: list[dict], store: RunStore) -> list[dict]:
    """Return one table row per method: test perplexity over seeds, per-domain columns, compute."""
    by_method: dict[str, list[dict]] = {}
    for result in results:
        by_method.setdefault(result["method"], []).append(result)

    rows = []
    for method, members in by_method.items():
        finals = [store.record(member["final_run"]) for member in members]
        complete = [(member, final) for member, final in zip(members, finals) if final and final.get("status") == "complete"]
        row = {"method": method, "seeds": len(members), "failed": len(members) - len(complete)}
        if complete:
            row.update(_quality_columns([final for _, final in complete]))
        row.update(_compute_columns(members, store))
        rows.append(row)

    baseline = next((row for row in rows if row["method"] == BASELINE and "avg_test_ppl" in row), None)
    for row in rows:
        if baseline is not None and "avg_test_ppl" in row:
            row["delta_vs_stratified"] = row["avg_test_ppl"] - baseline["avg_test_ppl"]
    return rows


def _quality_columns(finals: list[dict]) -> dict:
    domains = finals[0]["domains"]
    perplexity = np.array([final["test_perplexity"] for final in finals])
    bits = np.array([final.get("test_bits_per_byte") or [math.nan] * len(domains) for final in finals], dtype=float)
    averages = perplexity.mean(axis=1)
    columns = {
        "avg_test_ppl": float(averages.mean()),
        "std_test_ppl": float(averages.std(ddof=1)) if len(averages) > 1 else math.nan,
        "avg_test_bpb": float(np.nanmean(bits)) if np.isfinite(bits).any() else math.nan,
    }
    for index, domain in enumerate(domains):
        columns[f"ppl_{domain}"] = float(perplexity[:, index].mean())
        columns[f"bpb_{domain}"] = float(bits[:, index].mean())
    return columns


def _compute_columns(members: list[dict], store: RunStore) -> dict:
    """Sum compute over the final run and every extra run, averaged over seeds.

    Extra-run tokens are also split by role (probe, reference, proxy, single_domain), so a
    table shows what each method spent its compute on.
    """
    totals: dict[str, list[float]] = {"train_tokens": [], "extra_run_tokens": [], "exploration_tokens": [], "eval_tokens": [], "wall_time_s": []}
    by_role: dict[str, list[float]] = {}
    for member in members:
        final = _compute_of(store.record(member["final_run"]) or {})
        extra = [(run.get("role") or "extra", _compute_of(store.record(run["id"]) or {})) for run in member["extra_runs"]]
        extra_tokens = sum(run["train_tokens"] + run["exploration_tokens"] for _, run in extra)
        totals["train_tokens"].append(final["train_tokens"] + final["exploration_tokens"] + extra_tokens)
        totals["extra_run_tokens"].append(extra_tokens)
        totals["exploration_tokens"].append(final["exploration_tokens"] + sum(run["exploration_tokens"] for _, run in extra))
        totals["eval_tokens"].append(final["eval_tokens"] + sum(run["eval_tokens"] for _, run in extra))
        totals["wall_time_s"].append(final["wall_time_s"] + sum(run["wall_time_s"] for _, run in extra))
        for role in {role for role, _ in extra}:
            spent = sum(run["train_tokens"] + run["exploration_tokens"] for name, run in extra if name == role)
            by_role.setdefault(role, []).append(spent)
    columns = {f"total_{key}" if key != "wall_time_s" else key: float(np.mean(values)) for key, values in totals.items()}
    for role, values in sorted(by_role.items()):
        columns[f"{role}_run_tokens"] = float(np.sum(values) / len(members))
    return columns


def _format(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if abs(value) >= 1e5:
            return f"{value:.3g}"
        return f"{value:.3f}"
    return str(value)


HEADLINE = ["method", "seeds", "failed", "avg_test_ppl", "std_test_ppl", "delta_vs_stratified", "avg_test_bpb", "total_train_tokens", "wall_time_s"]


def to_markdown(rows: list[dict], headline: list[str] = HEADLINE) -> str:
    """Render rows as a markdown table: headline columns first, then per-domain and compute columns."""
    columns = _columns(rows, headline)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_format(row.get(column, "")) for column in columns) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict], headline: list[str] = HEADLINE) -> str:
    columns = _columns(rows, headline)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({column: row.get(column, "") for column in columns})
    return buffer.getvalue()


def _columns(rows: list[dict], headline: list[str]) -> list[str]:
    seen = [column for column in headline if any(column in row for row in rows)]
    for row in rows:
        seen += [column for column in row if column not in seen]
    return seen


def write_tables(rows: list[dict], directory: Path, headline: list[str] = HEADLINE) -> tuple[Path, Path]:
    """Write `table.md` and `table.csv` into `directory` atomically."""
    from mixbench.runs import write_text_atomic

    directory.mkdir(parents=True, exist_ok=True)
    markdown, comma_separated = directory / "table.md", directory / "table.csv"
    write_text_atomic(markdown, to_markdown(rows, headline))
    write_text_atomic(comma_separated, to_csv(rows, headline))
    return markdown, comma_separated


SIM_HEADLINE = ["method", "seeds", "failed", "final_avg_loss", "std_final_avg_loss", "regret", "std_regret", "a_sim", "total_train_tokens"]


def summarize_sim(results: list[dict], store: RunStore) -> list[dict]:
    """Return one row per method on the simulator: true final loss, regret and, where known, a_sim.

    `regret` is (L_method - L_opt) / (L_stratified - L_opt) with noise-free losses and L_opt the
    loss of the best static mixture: 0 is perfect, 1 is no better than stratified.
    """
    by_method: dict[str, list[dict]] = {}
    for result in results:
        by_method.setdefault(result["method"], []).append(result)

    rows = []
    for method, members in by_method.items():
        finals = [store.record(member["final_run"]) for member in members]
        complete = [final for final in finals if final and final.get("status") == "complete"]
        row = {"method": method, "seeds": len(members), "failed": len(members) - len(complete)}
        if complete:
            losses = np.array([final["true_mean_loss"] for final in complete])
            regrets = np.array([final["regret"] for final in complete])
            row["final_avg_loss"] = float(losses.mean())
            row["std_final_avg_loss"] = float(losses.std(ddof=1)) if len(losses) > 1 else math.nan
            row["regret"] = float(regrets.mean())
            row["std_regret"] = float(regrets.std(ddof=1)) if len(regrets) > 1 else math.nan
            scores = [score for score in (_a_sim_of(member, final, store) for member, final in zip(members, finals)) if score is not None]
            row["a_sim"] = float(np.mean(scores)) if scores else math.nan
        row.update(_compute_columns(members, store))
        rows.append({**{key: row.get(key, math.nan) for key in SIM_HEADLINE}, **row})
    return rows


def _a_sim_of(member: dict, final: dict | None, store: RunStore):
    """Score the run in which an online method estimated A: its proxy run, else its final run."""
    from mixbench.sim.setting import method_a_sim

    for run in member["extra_runs"]:
        if run.get("role") == "proxy":
            record = store.record(run["id"])
            return method_a_sim(record) if record else None
    return method_a_sim(final) if final else None
