"""Comparison tables, rebuilt from method results and run records only.

A table has one row per method and setting. A method that ran with several sets of hyperparameters
in one experiment (a sweep over `method.eta`, say) has one row per set, named by the values that
differ: `aioli[eta=0.5]`. A setting is the data, model and training settings a
method ran in (`setting` in a method result). Rows compare each method with stratified sampling,
seed by seed within a setting. The win/loss summary counts the settings in which each method beats
stratified. `write_tables` renders the same table as markdown, CSV and LaTeX, with no timestamps and
fixed sorting and number formats, so the same records always give byte-identical files.
"""

import csv
import io
import json
import math
from collections.abc import Callable
from typing import Any
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from mixbench.engine import effective_params, params_digest, setting_label
from mixbench.errors import ConfigError, unknown_name_error
from mixbench.runs import RunStore, write_text_atomic

BASELINE = "stratified"
# Extra-run roles that always get a token column, so tables of different experiments line up.
ROLES = ("probe", "reference", "proxy", "single_domain")
# Two-sided 95% quantiles of Student's t by degrees of freedom, used when scipy is missing. Between
# two entries the lower degrees of freedom is used, which widens the interval slightly.
T_TABLE_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
               12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


# ---------------------------------------------------------------------------------------------
# Loading and filtering


def load_results(experiment_dir: Path) -> list[dict]:
    """Read every method result of an experiment, named as in `name_variants`, sorted by name, setting and seed."""
    paths = sorted((Path(experiment_dir) / "methods").glob("*.json"))
    if not paths:
        listed = (load_experiment(experiment_dir) or {}).get("methods")
        hint = f" experiment.json lists {', '.join(listed)}, but none has a result yet." if listed else ""
        raise ConfigError(
            f"no method results under {experiment_dir}/methods.{hint} Run `mixbench benchmark` for this experiment first."
        )
    results, origins = [], {}
    for path in paths:
        try:
            result = json.loads(path.read_text())
        except ValueError as error:
            raise ConfigError(f"method result {path} is not valid JSON ({error}); delete it and run the method again.") from None
        key = (result["method"], params_digest(effective_params(result)), setting_label(result.get("setting")),
               int(result["seed"]))
        if key in origins:
            raise ConfigError(
                f"{origins[key].name} and {path.name} under {path.parent} are both {key[0]} at seed {key[3]} in setting "
                f"{key[2]} with the same hyperparameters; delete the outdated one."
            )
        origins[key] = path
        result["file"] = path.name
        results.append(result)
    name_variants(results)
    return sorted(results, key=lambda result: (result["name"], setting_label(result.get("setting")), result["seed"]))


def name_variants(results: list[dict]) -> list[dict]:
    """Give each result its row name and return the list.

    The name is the method's name when all its results ran with one set of settings (nulls filled,
    see `effective_params`), and otherwise the method followed by the settings in which its sets
    differ, in alphabetical order: `aioli[ema=0.1,eta=0.5]`.
    """
    variants: dict[str, dict[str, dict]] = {}
    for result in results:
        params = effective_params(result)
        variants.setdefault(result["method"], {}).setdefault(params_digest(params), params)
    names = {}
    for method, sets in variants.items():
        keys = sorted({key for params in sets.values() for key in params})
        differing = [key for key in keys if len({params_digest({key: params.get(key)}) for params in sets.values()}) > 1]
        for digest, params in sets.items():
            values = ",".join(f"{key}={_printed(params.get(key))}" for key in differing)
            names[method, digest] = f"{method}[{values}]" if len(sets) > 1 else method
        if len(set(names[method, digest] for digest in sets)) < len(sets):
            # Sets that differ only in a key one of them lacks print alike, so the digest names them instead.
            names.update({(method, digest): f"{method}[{digest}]" for digest in sets})
    for result in results:
        result["name"] = names[result["method"], params_digest(effective_params(result))]
    return results


def _printed(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def load_experiment(experiment_dir: Path) -> dict | None:
    """Return the experiment's `experiment.json` (methods, seeds, setting kind), or None without one."""
    path = Path(experiment_dir) / "experiment.json"
    return json.loads(path.read_text()) if path.exists() else None


@dataclass(frozen=True)
class Filters:
    """The methods, settings and seeds a table keeps; None keeps all.

    A setting is named by its data config name (`default`) or its full label (`default-1a2b3c4d`).
    Stratified stays the baseline of every comparison even when `methods` leaves it out.
    """

    methods: tuple[str, ...] | None = None
    settings: tuple[str, ...] | None = None
    seeds: tuple[int, ...] | None = None

    @classmethod
    def from_config(cls, node) -> "Filters":
        """Build filters from the `table` config block (a dict or DictConfig); None gives no filter."""
        if node is None:
            return cls()
        values = dict(node.items())
        unknown = sorted(set(values) - {"methods", "settings", "seeds"})
        if unknown:
            raise ConfigError(f"table.{unknown[0]} is not a table setting; use table.methods, table.settings or table.seeds.")
        return cls(
            methods=_names("methods", values.get("methods")),
            settings=_names("settings", values.get("settings")),
            seeds=_seeds(values.get("seeds")),
        )

    def describe(self) -> str:
        parts = [f"{key}=[{', '.join(str(v) for v in value)}]" for key, value in
                 (("methods", self.methods), ("settings", self.settings), ("seeds", self.seeds)) if value is not None]
        return "; ".join(parts)


def _as_list(key: str, value) -> list | None:
    if value is None:
        return None
    items = [value] if isinstance(value, (str, int)) else list(value)
    if not items:
        raise ConfigError(f"table.{key}=[] selects nothing; list at least one value, or use table.{key}=null to keep all.")
    return items


def _names(key: str, value) -> tuple[str, ...] | None:
    items = _as_list(key, value)
    return None if items is None else tuple(dict.fromkeys(str(item) for item in items))


def _seeds(value) -> tuple[int, ...] | None:
    items = _as_list("seeds", value)
    if items is None:
        return None
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int):
            raise ConfigError(f"table.seeds contains {item!r}; seeds are whole numbers, for example table.seeds=[0,1].")
    return tuple(sorted(set(items)))


def apply_filters(results: list[dict], filters: Filters, expected_methods=()) -> tuple[list[dict], list[str]]:
    """Keep the results of the filtered settings and seeds; return them and the methods to list.

    Results of other methods stay, because stratified is the baseline even when it is not listed.
    Raises ConfigError for a method, setting or seed that the experiment does not have.
    """
    known_methods = sorted({result["method"] for result in results} | set(expected_methods))
    variant_names = sorted({result["name"] for result in results} - set(known_methods))
    if filters.methods is not None:
        filters = replace(filters, methods=tuple(_row_name(name, variant_names) for name in filters.methods))
    for name in filters.methods or ():
        if name not in known_methods and name not in variant_names:
            raise unknown_name_error("method", name, known_methods + variant_names,
                                     fix="table.methods may only name methods of this experiment, or their rows.")
    if filters.settings is not None:
        labels = {setting_label(result.get("setting")) for result in results}
        names = {_setting_name(result) for result in results}
        for name in filters.settings:
            if name not in labels | names:
                raise unknown_name_error("setting", name, labels | names, fix="table.settings takes a data config name or a full setting label.")
        chosen = set(filters.settings)
        results = [r for r in results if setting_label(r.get("setting")) in chosen or _setting_name(r) in chosen]
    if filters.seeds is not None:
        known_seeds = sorted({int(result["seed"]) for result in results})
        for seed in filters.seeds:
            if seed not in known_seeds:
                raise ConfigError(f"table.seeds contains seed {seed}, which has no result here; known seeds: {known_seeds}.")
    chosen = list(filters.methods) if filters.methods is not None else known_methods
    # A method's name lists every row it has here; a row's own name lists that row alone.
    listed = set()
    for name in chosen:
        rows = {result["name"] for result in results if result["method"] == name}
        listed |= (rows or {name}) if name in known_methods else {name}
    return results, sorted(listed)


def _row_name(name: str, variant_names: list[str]) -> str:
    """Return the row that `name` means: `doremi[eta=0.50]` is the row `doremi[eta=0.5]`, as values are compared parsed."""
    requested = _parse_row_name(name)
    if requested is None or name in variant_names:
        return name
    matches = [row for row in variant_names if _parse_row_name(row) == requested]
    return matches[0] if len(matches) == 1 else name


def _parse_row_name(name: str) -> tuple[str, dict] | None:
    """Split `method[key=value,...]` into the method and its settings, the values parsed as YAML; None if not of that form."""
    import yaml

    method, bracket, rest = name.partition("[")
    if not bracket or not rest.endswith("]"):
        return None
    items, depth, start, body = [], 0, 0, rest[:-1]
    for index, char in enumerate(body + ","):
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(body[start:index])
            start = index + 1
    settings = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals:
            return None
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        # 1 and 1.0 name one setting value, as in the row names.
        settings[key.strip()] = float(parsed) if isinstance(parsed, int) and not isinstance(parsed, bool) else parsed
    return method, settings


def _setting_name(result: dict) -> str:
    return (result.get("setting") or {}).get("name", "unnamed")


# ---------------------------------------------------------------------------------------------
# Per-seed statistics


def t_quantile_975(degrees: int) -> float:
    """Return the 97.5% quantile of Student's t with `degrees` degrees of freedom (scipy if installed)."""
    try:
        from scipy.stats import t
    except ImportError:
        if degrees > max(T_TABLE_975):
            return 1.960
        return T_TABLE_975[max(key for key in T_TABLE_975 if key <= degrees)]
    return float(t.ppf(0.975, degrees))


def paired_difference(values: dict[int, float], baseline: dict[int, float]) -> dict:
    """Mean and 95% t-interval of the per-seed difference `values - baseline`, over shared seeds.

    With one shared seed the interval is undefined and left out; with none, so is the mean.
    """
    shared = sorted(set(values) & set(baseline))
    if not shared:
        return {}
    differences = np.array([values[seed] - baseline[seed] for seed in shared])
    columns = {"delta_vs_stratified": float(differences.mean()), "paired_seeds": len(shared)}
    if len(shared) > 1:
        half_width = t_quantile_975(len(shared) - 1) * float(differences.std(ddof=1)) / math.sqrt(len(shared))
        columns["delta_ci95_low"] = columns["delta_vs_stratified"] - half_width
        columns["delta_ci95_high"] = columns["delta_vs_stratified"] + half_width
    return columns


def _mean_std(mean: str, std: str, values) -> dict:
    """Return the mean and the standard deviation (n - 1) of `values`, leaving the latter out for one value."""
    values = np.asarray(values, dtype=float)
    columns = {mean: float(values.mean())}
    if len(values) > 1:
        columns[std] = float(values.std(ddof=1))
    return columns


def _corpus_quality(pairs: list[tuple[dict, dict]], store: RunStore) -> dict:
    finals = [final for _, final in pairs]
    domains = finals[0]["domains"]
    perplexity = np.array([final["test_perplexity"] for final in finals], dtype=float)
    bits = np.array([final.get("test_bits_per_byte") or [math.nan] * len(domains) for final in finals], dtype=float)
    columns = _mean_std("avg_test_ppl", "std_test_ppl", perplexity.mean(axis=1))
    if np.isfinite(bits).any():
        columns["avg_test_bpb"] = float(np.nanmean(bits))
    for index, domain in enumerate(domains):
        columns[f"ppl_{domain}"] = float(perplexity[:, index].mean())
        if np.isfinite(bits[:, index]).all():
            columns[f"bpb_{domain}"] = float(bits[:, index].mean())
    return columns


def _sim_quality(pairs: list[tuple[dict, dict]], store: RunStore) -> dict:
    columns = _mean_std("final_avg_loss", "std_final_avg_loss", [final["true_mean_loss"] for _, final in pairs])
    columns.update(_mean_std("regret", "std_regret", [final["regret"] for _, final in pairs]))
    scores = [score for score in (_a_sim_of(member, final, store) for member, final in pairs) if score is not None]
    if scores:
        columns["a_sim"] = float(np.mean(scores))
    return columns


def _a_sim_of(member: dict, final: dict | None, store: RunStore):
    """Score the run in which an online method estimated A: its proxy run, else its final run."""
    from mixbench.sim.setting import method_a_sim

    for run in member["extra_runs"]:
        if run.get("role") == "proxy":
            record = store.record(run["id"])
            return method_a_sim(record) if record else None
    return method_a_sim(final) if final else None


def distinct_extra_runs(result: dict) -> list[dict]:
    """Return a method result's extra runs without repeats and without its final run.

    A method may list one run twice: RegMix can draw one probe mixture more than once, and the
    store then reuses the run. That run was trained once, so its compute counts once.
    """
    seen = {result.get("final_run")}
    distinct = []
    for run in result.get("extra_runs") or []:
        if run["id"] not in seen:
            seen.add(run["id"])
            distinct.append(run)
    return distinct


def _compute_of(record: dict) -> dict:
    compute = record.get("compute") or {}
    keys = ("train_tokens", "exploration_tokens", "eval_tokens", "reference_tokens", "target_tokens", "flops", "wall_time_s")
    return {key: float(compute.get(key, 0.0) or 0.0) for key in keys}


def _compute_columns(members: list[dict], store: RunStore) -> dict:
    """Sum compute over the final run and every extra run, averaged over seeds.

    Tokens are split by kind: the final run's training, exploration (inside any run), each
    extra-run role (training and exploration of probe, reference, proxy and single-domain runs),
    evaluation, and the passes inside training steps: tokens a reference model scored and
    tokens of target-gradient batches. `total_train_tokens` is every token trained on,
    evaluation excluded, and `total_flops` counts every pass.
    """
    per_seed: dict[str, list[float]] = {}
    roles = sorted(set(ROLES) | {run.get("role") or "extra" for member in members for run in member["extra_runs"]})
    for member in members:
        final = _compute_of(store.record(member["final_run"]) or {})
        extra = [(run.get("role") or "extra", _compute_of(store.record(run["id"]) or {})) for run in distinct_extra_runs(member)]
        extra_tokens = sum(run["train_tokens"] + run["exploration_tokens"] for _, run in extra)
        spent = {
            "total_train_tokens": final["train_tokens"] + final["exploration_tokens"] + extra_tokens,
            "total_extra_run_tokens": extra_tokens,
            "total_exploration_tokens": final["exploration_tokens"] + sum(run["exploration_tokens"] for _, run in extra),
            "total_eval_tokens": final["eval_tokens"] + sum(run["eval_tokens"] for _, run in extra),
            "total_reference_tokens": final["reference_tokens"] + sum(run["reference_tokens"] for _, run in extra),
            "total_target_tokens": final["target_tokens"] + sum(run["target_tokens"] for _, run in extra),
            "total_flops": final["flops"] + sum(run["flops"] for _, run in extra),
            "wall_time_s": final["wall_time_s"] + sum(run["wall_time_s"] for _, run in extra),
            # The budget methods are compared at: exploration inside the final run is part of it (Aioli).
            "final_run_tokens": final["train_tokens"] + final["exploration_tokens"],
        }
        for role in roles:
            spent[f"{role}_run_tokens"] = sum(run["train_tokens"] + run["exploration_tokens"] for name, run in extra if name == role)
        for key, value in spent.items():
            per_seed.setdefault(key, []).append(value)
    return {key: float(np.mean(values)) for key, values in per_seed.items()}


# ---------------------------------------------------------------------------------------------
# Table kinds and rows


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
    return _count(row["total_train_tokens"]) if "total_train_tokens" in row else "--"


CORPUS = TableKind(
    name="corpus",
    headline=HEADLINE,
    metric_text="average test perplexity (the mean over domains of per-domain test perplexity)",
    seed_value=lambda final: float(np.mean(final["test_perplexity"])),
    quality=_corpus_quality,
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
    quality=_sim_quality,
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
        row.update(_compute_columns([member for member, _ in pairs] or group, store))
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


# ---------------------------------------------------------------------------------------------
# Rendering


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


def _count(value: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{suffix}"
    return f"{value:.0f}"


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
        return _count(value)
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
        lines += ["", "% Settings in which each method beats stratified (wins), trails it (losses) or ties."]
        headers = ["Method", "Settings", "Wins", "Losses", "Ties", "Significant wins", "Significant losses"]
        body = [[latex_escape(entry["method"])] + [str(entry[key]) for key in WIN_LOSS_COLUMNS[1:7]] for entry in table.win_loss]
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
