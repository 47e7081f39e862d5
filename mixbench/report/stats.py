"""Per-seed statistics of a table row: paired differences with stratified, quality and compute columns."""

import math

import numpy as np

from mixbench.runs import RunStore

# Extra-run roles that always get a token column, so tables of different experiments line up.
ROLES = ("probe", "reference", "proxy", "single_domain")
# Two-sided 95% quantiles of Student's t by degrees of freedom, used when scipy is missing. Between
# two entries the lower degrees of freedom is used, which widens the interval slightly.
T_TABLE_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
               12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


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


def corpus_quality(pairs: list[tuple[dict, dict]], store: RunStore) -> dict:
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


def sim_quality(pairs: list[tuple[dict, dict]], store: RunStore) -> dict:
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


def compute_columns(members: list[dict], store: RunStore) -> dict:
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
