"""Table kinds (corpus, simulator) and their rows: one per method and setting, plus the win/loss summary."""

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mixbench.engine import setting_label
from mixbench.report.results import Filters, apply_filters, name_variants
from mixbench.report.stats import compute_columns, corpus_quality, paired_difference, sim_quality
from mixbench.runs import RunStore

BASELINE = "stratified"


def count_text(value: float) -> str:
    """Format a token or FLOP count with a k, M or G suffix and two decimals."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{suffix}"
    return f"{value:.0f}"


@dataclass(frozen=True)
class TableKind:
    """A table's headline columns, the per-seed value compared with stratified, and its quality and LaTeX columns."""

    name: str
    headline: tuple[str, ...]
    metric_text: str
    seed_value: Callable[[dict], float]
    quality: Callable[[list[tuple[dict, dict]], RunStore], dict]
    # LaTeX columns: (header, row -> cell text).
    latex: tuple[tuple[str, Callable[[dict], str]], ...] = field(default=())
    # Compute columns this kind of run does not measure; they are left out rather than shown as 0.
    unmeasured: tuple[str, ...] = ()
    # What this kind's own columns mean, for the legend.
    columns_text: str = ""


PAIRED = ("delta_vs_stratified", "delta_ci95_low", "delta_ci95_high", "paired_seeds", "vs_stratified")
HEADLINE = ("method", "seeds", "failed", "missing", "status", "setting", "avg_test_ppl", "std_test_ppl", *PAIRED,
            "avg_test_bpb", "total_train_tokens", "wall_time_s")
SIM_HEADLINE = ("method", "seeds", "failed", "missing", "status", "setting", "final_avg_loss", "std_final_avg_loss", *PAIRED,
                "regret", "std_regret", "a_sim", "total_train_tokens")


def _latex_value(key: str, spread: str | None = None, digits: int = 3, primary: bool = False) -> Callable[[dict], str]:
    """Return a cell formatter for `key` (with `\\pm spread` when given); the primary column names a failed or missing row."""

    def cell(row: dict) -> str:
        if key not in row:
            return row["status"] if primary and row["status"] in ("missing", "failed", "skipped") else "--"
        text = f"{row[key]:.{digits}f}"
        value = f"${text} \\pm {row[spread]:.{digits}f}$" if spread and spread in row else f"${text}$"
        # A mean over runs of different lengths or settings is marked in the row's main cell.
        return f"{value} (mixed runs)" if primary and row["status"] == "mixed" else value
    return cell


def _latex_interval(row: dict) -> str:
    if "delta_ci95_low" not in row:
        return "--"
    return f"$[{row['delta_ci95_low']:.3f}, {row['delta_ci95_high']:.3f}]$"


def _latex_tokens(row: dict) -> str:
    return count_text(row["total_train_tokens"]) if "total_train_tokens" in row else "--"


CORPUS = TableKind(
    name="corpus",
    headline=HEADLINE,
    metric_text="average test perplexity (the mean over domains of per-domain test perplexity)",
    seed_value=lambda final: float(np.mean(final["test_perplexity"])),
    quality=corpus_quality,
    latex=(("Test perplexity", _latex_value("avg_test_ppl", "std_test_ppl", primary=True)),
           ("$\\Delta$ vs stratified", _latex_value("delta_vs_stratified")), ("95\\% CI", _latex_interval),
           ("Bits per byte", _latex_value("avg_test_bpb")), ("Train tokens", _latex_tokens),
           ("Wall time (s)", _latex_value("wall_time_s", digits=0))),
    columns_text=("`avg_test_ppl` is the mean over domains of test perplexity and `ppl_<domain>` each domain's; "
                  "`avg_test_bpb` and `bpb_<domain>` are the same in test bits per byte of text."),
)
SIM = TableKind(
    name="sim",
    headline=SIM_HEADLINE,
    metric_text="noise-free final average loss (the simulator's true mean loss over domains)",
    seed_value=lambda final: float(final["true_mean_loss"]),
    quality=sim_quality,
    latex=(("Final loss", _latex_value("final_avg_loss", "std_final_avg_loss", primary=True)),
           ("$\\Delta$ vs stratified", _latex_value("delta_vs_stratified")), ("95\\% CI", _latex_interval),
           ("Regret", _latex_value("regret", "std_regret")), ("$a_{\\mathrm{sim}}$", _latex_value("a_sim")),
           ("Train tokens", _latex_tokens)),
    unmeasured=("total_flops", "wall_time_s"),
    columns_text=("`regret` is the gap between the method's final true loss and that of the best static mixture for "
                  "the run, over the same gap for stratified: 0 is the best static mixture, 1 no better than "
                  "stratified. It is a ratio per seed, averaged over seeds, so seeds where stratified is already near "
                  "the best static mixture weigh more: it can exceed 1 while `delta_vs_stratified` is below 0. "
                  "`a_sim` is the agreement of an online method's A estimates with the simulator's true A "
                  "(the mean of the cosine similarity and the Spearman correlation of their column sums)."),
)


@dataclass
class Table:
    """The rows of a comparison table, the win/loss summary, and what the table was built from."""

    kind: TableKind
    rows: list[dict]
    win_loss: list[dict]
    settings: list[str]
    filters: Filters = field(default_factory=Filters)
    # Per setting label, the flat data settings of one of its final runs (see `setting_data`).
    setting_data: dict[str, dict[str, Any]] = field(default_factory=dict)


def build_table(results: list[dict], store: RunStore, kind: TableKind = CORPUS, expected: dict | None = None,
                filters: Filters | None = None) -> Table:
    """Summarize method results into rows (method x setting) and the win/loss summary.

    `expected` is the experiment's `experiment.json`: its methods and seeds without a result
    become `missing` rows and counts.
    """
    filters = filters or Filters()
    expected = expected or {}
    selected, listed = apply_filters(name_variants(results), filters, expected.get("methods") or ())
    by_setting: dict[str, dict[str, list[dict]]] = {}
    for result in selected:
        by_setting.setdefault(setting_label(result.get("setting")), {}).setdefault(result["name"], []).append(result)

    # A row of one set of a method's hyperparameters appears only in the settings where that set ran.
    variant_rows = {result["name"] for result in selected if result["name"] != result["method"]}
    rows = []
    for label in sorted(by_setting):
        members = {method: sorted(group, key=lambda r: r["seed"]) for method, group in by_setting[label].items()}
        seen = {int(r["seed"]) for group in members.values() for r in group}
        seeds = list(filters.seeds) if filters.seeds is not None else sorted(seen | set(expected.get("seeds") or ()))
        members = {method: [r for r in group if int(r["seed"]) in seeds] for method, group in members.items()}
        skipped = ((expected.get("skipped") or {}).get(label)) or {}
        row_names = [name for name in listed if (name not in variant_rows or name in members) and (name not in skipped or name in members)]
        rows += _setting_rows(label, members, row_names, seeds, kind, store)
        rows += [_skipped_row(method, label, kind) for method in listed if method in skipped and method not in members]
    return Table(kind, rows, win_loss(rows, listed), sorted(by_setting), filters, setting_data(selected, store))


def setting_data(results: list[dict], store: RunStore) -> dict[str, dict[str, Any]]:
    """Return, per setting label, the data settings of the first final run found, flattened to dotted keys.

    A setting label is a name and a fingerprint. These values are what the fingerprint hashes, so
    a table of several settings can list what distinguishes them.
    """
    data: dict[str, dict[str, Any]] = {}
    for result in results:
        label = setting_label(result.get("setting"))
        record = None if label in data or not result.get("final_run") else store.record(result["final_run"])
        spec = (record or {}).get("spec")
        if not spec:
            continue
        flat: dict[str, Any] = {}
        _flatten("", spec.get("data") or {}, flat)
        if "simulator.world_seed" in flat:
            # Seed k simulates world world_seed + k; the setting is the world of seed 0.
            flat["simulator.world_seed"] -= int(spec.get("seed", 0))
        data[label] = flat
    return data


def _flatten(prefix: str, value: Any, flat: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, flat)
    else:
        flat[prefix] = value


def settings_markdown(data: dict[str, dict[str, Any]]) -> list[str]:
    """Return the lines that list, for a table of several settings, the data settings that distinguish them."""
    if len(data) < 2:
        return []
    encoded = {label: {key: json.dumps(value, sort_keys=True) for key, value in flat.items()} for label, flat in data.items()}
    keys = sorted(key for key in set().union(*encoded.values()) if len({values.get(key) for values in encoded.values()}) > 1)
    lines = ["## Settings", "", "The data settings that differ between the settings of this table, from a final run of each:", ""]
    for label in sorted(data):
        differing = ", ".join(f"{key}={_shortened(data[label].get(key), 16 if key.endswith('fingerprint') else 60)}" for key in keys)
        lines.append(f"- `{label}`: {differing}")
    return [*lines, ""]


def _shortened(value: Any, limit: int = 60) -> str:
    """Return a value as one short line: lists joined by commas, long text cut with an ellipsis."""
    text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _setting_rows(label: str, members: dict[str, list[dict]], listed: list[str], seeds: list[int], kind: TableKind,
                  store: RunStore) -> list[dict]:
    """Return the rows of one setting, each method compared seed by seed with stratified."""
    finals = {method: _complete_finals(group, store) for method, group in members.items()}
    values = {method: {seed: kind.seed_value(final) for seed, final in runs.items()} for method, runs in finals.items()}
    conditions = {method: {seed: run_conditions(final) for seed, final in runs.items()} for method, runs in finals.items()}
    baseline = values.get(BASELINE, {})
    rows = []
    for method in listed:
        group = members.get(method, [])
        row = _row(method, label, group, seeds, kind, store)
        if method != BASELINE and values.get(method) and baseline:
            # A seed pairs only when both final runs trained on as many tokens with the same model and
            # training settings: a rerun with another learning rate, say, would otherwise look comparable.
            same = {seed: value for seed, value in values[method].items()
                    if conditions[method].get(seed) == conditions[BASELINE].get(seed)}
            row.update(paired_difference(same, baseline))
        if "delta_vs_stratified" in row:
            row["vs_stratified"] = _verdict(row["delta_vs_stratified"])
        rows.append(_ordered(row, kind))
    return rows


def _complete_finals(group: list[dict], store: RunStore) -> dict[int, dict]:
    """Return the complete final-run record of each seed in `group`."""
    finals = {}
    for member in group:
        final = store.record(member["final_run"])
        if final and final.get("status") == "complete":
            finals[int(member["seed"])] = final
    return finals


def final_budget(record: dict) -> int:
    """Return the tokens a final run trained on, exploration included: the budget methods are compared at."""
    compute = record.get("compute") or {}
    return int(compute.get("train_tokens", 0)) + int(compute.get("exploration_tokens", 0))


# Training settings that change neither what a final run learns nor how it is tested, so runs that
# differ only in them are compared. Thread counts change the last bits of the sums, not the recipe.
UNCOMPARED_TRAIN_KEYS = frozenset({"threads", "trackers", "tracker_dir", "checkpoint_every", "eval_every", "eval_batch_size"})


def final_settings(record: dict) -> dict[str, Any]:
    """Return the model and training settings of a final run that its comparison with others rests on.

    The keys are `model.<key>` and `train.<key>`; a record without a spec gives {}.
    """
    spec = record.get("spec") or {}
    settings = {f"model.{key}": value for key, value in (spec.get("model") or {}).items()}
    settings |= {f"train.{key}": value for key, value in (spec.get("train") or {}).items() if key not in UNCOMPARED_TRAIN_KEYS}
    return settings


def run_conditions(record: dict) -> tuple[int, str]:
    """Return what must match for two final runs to be compared: the token budget and the settings."""
    return final_budget(record), json.dumps(final_settings(record), sort_keys=True, default=str)


def mixed_conditions(results: list[dict], store: RunStore) -> dict[str, str]:
    """Return, per setting whose complete final runs differ in length or settings, which rows have each.

    The value lists each length (and the settings that differ, if any) with its rows and their seeds:
    "122880 tokens: natural (seed 0); 614400 tokens: natural (seeds 1, 2), stratified (seeds 0, 1, 2)", or
    "122880 tokens, train.lr=0.001: odm (seed 0); 122880 tokens, train.lr=0.003: stratified (seed 0)".
    """
    groups: dict[str, dict[tuple[int, str], dict[str, list[int]]]] = {}
    for result in results:
        final = store.record(result["final_run"]) if result.get("final_run") else None
        if final and final.get("status") == "complete":
            rows = groups.setdefault(setting_label(result.get("setting")), {}).setdefault(run_conditions(final), {})
            rows.setdefault(result["name"], []).append(int(result["seed"]))
    return {label: _conditions_listing(by_conditions) for label, by_conditions in sorted(groups.items()) if len(by_conditions) > 1}


def _conditions_listing(by_conditions: dict[tuple[int, str], dict[str, list[int]]]) -> str:
    settings = {conditions: json.loads(conditions[1]) for conditions in by_conditions}
    keys = sorted({key for values in settings.values() for key in values})
    differing = [key for key in keys if len({json.dumps(values.get(key), default=str) for values in settings.values()}) > 1]

    def heading(conditions: tuple[int, str]) -> str:
        values = settings[conditions]
        # The token count already shows a difference in steps.
        return ", ".join([f"{conditions[0]} tokens", *(f"{key}={values.get(key)}" for key in differing if key != "train.steps")])

    def listing(rows: dict[str, list[int]]) -> str:
        return ", ".join(f"{name} (seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, sorted(seeds)))})"
                         for name, seeds in sorted(rows.items()))

    return "; ".join(f"{heading(conditions)}: {listing(rows)}" for conditions, rows in sorted(by_conditions.items()))


def _row(method: str, label: str, group: list[dict], seeds: list[int], kind: TableKind, store: RunStore) -> dict:
    finals = [store.record(member["final_run"]) for member in group]
    pairs = [(member, final) for member, final in zip(group, finals) if final and final.get("status") == "complete"]
    missing = len(set(seeds) - {int(member["seed"]) for member in group})
    failed = len(group) - len(pairs)
    status = _status(group, pairs, failed, missing)
    if len({run_conditions(final) for _, final in pairs}) > 1:
        # Its means and token columns average over runs of different lengths or settings.
        status = "mixed"
    row = {"method": method, "seeds": len(group), "failed": failed, "missing": missing, "status": status, "setting": label}
    if pairs:
        row.update(kind.quality(pairs, store))
    if group:
        # Compute is averaged over the seeds the quality columns average over; a row with no complete
        # seed shows what its failed runs spent.
        row.update(compute_columns([member for member, _ in pairs] or group, store))
    for key in kind.unmeasured:
        row.pop(key, None)
    return row


def _skipped_row(method: str, label: str, kind: TableKind) -> dict:
    """Return the row of a method whose check ruled it out in this setting (grid at m > 3, say).

    experiment.json keeps the reason.
    """
    row = {"method": method, "seeds": 0, "failed": 0, "missing": 0, "status": "skipped", "setting": label}
    return _ordered(row, kind)


def _verdict(delta: float) -> str:
    if delta < 0:
        return "win"
    if delta > 0:
        return "loss"
    return "tie"


def _status(group: list, pairs: list, failed: int, missing: int) -> str:
    if not group:
        return "missing"
    if not pairs:
        return "failed"
    if failed or missing:
        return "partial"
    return "ok"


def _ordered(row: dict, kind: TableKind) -> dict:
    """Put headline columns first, so every format lists columns in one fixed order."""
    return {**{key: row[key] for key in kind.headline if key in row}, **row}


def win_loss(rows: list[dict], listed: list[str]) -> list[dict]:
    """Count, per method, the settings where its mean beats stratified's (win), trails it (loss) or ties.

    The means are over the seeds both have. A significant win or loss is one whose 95% interval
    excludes zero. Settings where either has no complete run count under `not_compared`.
    """
    summary = []
    for method in listed:
        if method == BASELINE:
            continue
        own = [row for row in rows if row["method"] == method]
        verdicts = [row.get("vs_stratified") for row in own]
        summary.append({
            "method": method,
            "settings": len(own),
            "wins": verdicts.count("win"),
            "losses": verdicts.count("loss"),
            "ties": verdicts.count("tie"),
            "significant_wins": sum(1 for row in own if row.get("delta_ci95_high", 0.0) < 0),
            "significant_losses": sum(1 for row in own if row.get("delta_ci95_low", 0.0) > 0),
            "not_compared": verdicts.count(None),
        })
    return summary


def summarize(results: list[dict], store: RunStore, expected: dict | None = None, filters: Filters | None = None) -> list[dict]:
    """Return the rows of a real-corpus table (one per method and setting)."""
    return build_table(results, store, CORPUS, expected, filters).rows


def summarize_sim(results: list[dict], store: RunStore, expected: dict | None = None, filters: Filters | None = None) -> list[dict]:
    """Return the rows of a simulator table: noise-free final loss, regret and, where known, a_sim.

    `regret` is (L_method - L_opt) / (L_stratified - L_opt) with noise-free losses and L_opt the
    loss of the best static mixture: 0 is perfect, 1 is no better than stratified.
    """
    return build_table(results, store, SIM, expected, filters).rows
