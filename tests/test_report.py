"""Comparison tables from hand-made records: paired intervals, win/loss, LaTeX, filters, missing rows, rebuilds."""

import csv
import io
import json
import math
import re
import sys

import pytest
from hydra import compose, initialize_config_dir

from mixbench.commands import CONF_DIR, benchmark, figures, run, table
from mixbench.engine import MethodResult, params_digest, save_method_result, setting_identity, setting_label
from mixbench.errors import ConfigError
from mixbench.report import CORPUS, Filters, build_table, latex_escape, load_results, t_quantile_975, to_latex
from mixbench.runs import RunStore, write_json_atomic
from mixbench.sim.setting import SimSetting

DEFAULT = {"name": "default", "fingerprint": "aaaa1111bbbb2222"}
THREE = {"name": "three", "fingerprint": "cccc3333dddd4444"}
DOMAINS = ("c_sharp", "web_text")


class Records:
    """Writes run records and method results in the layout the engine and run store use."""

    def __init__(self, root, experiment="exp"):
        self.root = root / "results"
        self.experiment = self.root / experiment
        self.store = RunStore(self.root)

    def run(self, run_id, perplexity=None, status="complete", compute=None):
        record = {"status": status, "role": "final", "domains": list(DOMAINS), "id": run_id,
                  "compute": compute or {"train_tokens": 1000, "exploration_tokens": 0, "eval_tokens": 10, "wall_time_s": 1.0}}
        if status == "complete":
            record["test_perplexity"] = list(perplexity)
            record["test_bits_per_byte"] = [math.log2(value) / 4 for value in perplexity]
        else:
            record["error"] = "loss became NaN or infinite at step 3"
        write_json_atomic(self.root / "runs" / run_id / "record.json", record)
        return run_id

    def result(self, method, seed, perplexity=None, setting=DEFAULT, status="complete", extra=(), compute=None, params=None):
        """Write one method result whose final run has `perplexity` per domain; return its final run id."""
        tag = "" if params is None else "-" + params_digest(params)
        final = self.run(f"{method}-{seed}-{setting_label(setting)}{tag}", perplexity, status, compute)
        payload = {"method": method, "params": params or {}, "seed": seed, "final_run": final, "fitted": {}, "status": status,
                   "wall_time_s": 1.0, "extra_runs": [{"id": run_id, "role": role} for run_id, role in extra]}
        if setting is not None:
            payload["setting"] = setting
        suffix = ("" if setting is None else f"-{setting_label(setting)}") + tag
        write_json_atomic(self.experiment / "methods" / f"{method}-seed{seed}{suffix}.json", payload)
        return final

    def listing(self, methods, seeds):
        write_json_atomic(self.experiment / "experiment.json", {"name": self.experiment.name, "setting": "corpus", "methods": methods, "seeds": seeds})

    def table(self, **filters):
        return build_table(load_results(self.experiment), self.store, CORPUS, _listing(self.experiment), Filters(**filters))


def _listing(experiment):
    path = experiment / "experiment.json"
    return json.loads(path.read_text()) if path.exists() else None


def three_seeds(records, setting=DEFAULT):
    """Stratified and natural at seeds 0-2: per-seed differences of the average perplexity are -1, -0.5, -1."""
    for seed, (stratified, natural) in enumerate([((10, 12), (9, 11)), ((11, 13), (11, 12)), ((9, 12), (8, 11))]):
        records.result("stratified", seed, stratified, setting)
        records.result("natural", seed, natural, setting)


def command(name, overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides)
    return {"table": table, "benchmark": benchmark, "figures": figures}[name](cfg)


def csv_rows(path):
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_paired_interval_matches_hand_computation(tmp_path):
    records = Records(tmp_path)
    three_seeds(records)
    rows = {row["method"]: row for row in records.table().rows}
    natural = rows["natural"]
    # Differences -1, -0.5, -1: mean -5/6, standard deviation sqrt(1/12), so the half-width is t(0.975, 2) / 6.
    t_two = 4.302652729911275
    assert natural["delta_vs_stratified"] == pytest.approx(-5 / 6)
    assert natural["delta_ci95_low"] == pytest.approx(-5 / 6 - t_two / 6)
    assert natural["delta_ci95_high"] == pytest.approx(-5 / 6 + t_two / 6)
    assert natural["paired_seeds"] == 3
    assert natural["vs_stratified"] == "win"
    assert natural["avg_test_ppl"] == pytest.approx((10 + 11.5 + 9.5) / 3)
    assert natural["std_test_ppl"] == pytest.approx(math.sqrt(((10 - 31 / 3) ** 2 + (11.5 - 31 / 3) ** 2 + (9.5 - 31 / 3) ** 2) / 2))
    assert natural["ppl_c_sharp"] == pytest.approx(28 / 3)
    assert "delta_vs_stratified" not in rows["stratified"]


def test_t_table_is_used_without_scipy(monkeypatch):
    assert t_quantile_975(2) == pytest.approx(4.302652729911275)
    monkeypatch.setitem(sys.modules, "scipy.stats", None)
    assert t_quantile_975(2) == 4.303
    assert t_quantile_975(11) == 2.228  # between tabulated entries the smaller degrees of freedom is used
    assert t_quantile_975(500) == 1.960


def test_one_seed_leaves_interval_and_spread_blank(tmp_path):
    records = Records(tmp_path)
    records.result("stratified", 0, (10, 12))
    records.result("natural", 0, (9, 11))
    command("table", [f"results_dir={records.root}", "experiment.name=exp"])
    natural = {row["method"]: row for row in csv_rows(records.experiment / "table.csv")}["natural"]
    assert float(natural["delta_vs_stratified"]) == pytest.approx(-1.0)
    assert natural["delta_ci95_low"] == natural["delta_ci95_high"] == natural["std_test_ppl"] == ""
    for name in ("table.md", "table.csv", "table.tex"):
        assert "nan" not in (records.experiment / name).read_text().lower()


def test_win_loss_counts_settings(tmp_path):
    records = Records(tmp_path)
    three_seeds(records, DEFAULT)
    # In data=three natural loses and dml ties (the same perplexity as stratified at every seed).
    for seed, (stratified, natural) in enumerate([((10, 10), (12, 12)), ((11, 11), (12, 13))]):
        records.result("stratified", seed, stratified, THREE)
        records.result("natural", seed, natural, THREE)
        records.result("dml", seed, stratified, THREE)
    # A result written before results named their setting counts as one more setting.
    records.result("stratified", 0, (10, 10), setting=None)
    records.result("natural", 0, (9, 9), setting=None)
    records.result("dml", 0, status="failed", setting=None)

    built = records.table()
    assert built.settings == ["default-aaaa1111", "three-cccc3333", "unnamed"]
    summary = {entry["method"]: entry for entry in built.win_loss}
    assert set(summary) == {"dml", "natural"}
    assert (summary["natural"]["wins"], summary["natural"]["losses"], summary["natural"]["ties"]) == (2, 1, 0)
    assert summary["natural"]["significant_wins"] == 1  # default: the interval ends below zero
    assert summary["natural"]["significant_losses"] == 0  # three: two seeds give a wide interval
    # dml has no result in default, ties in three, and failed in the unnamed setting.
    assert (summary["dml"]["wins"], summary["dml"]["losses"], summary["dml"]["ties"], summary["dml"]["not_compared"]) == (0, 0, 1, 2)
    verdicts = {(row["method"], row["setting"]): (row["status"], row.get("vs_stratified")) for row in built.rows}
    assert verdicts[("dml", "default-aaaa1111")] == ("missing", None)
    assert verdicts[("dml", "unnamed")] == ("failed", None)
    assert verdicts[("natural", "three-cccc3333")] == ("ok", "loss")


def test_latex_escapes_names_and_keeps_columns_aligned(tmp_path):
    assert latex_escape("a_b & 50% #1 $x {y} ~^\\") == (
        r"a\_b \& 50\% \#1 \$x \{y\} \textasciitilde{}\textasciicircum{}\textbackslash{}"
    )
    records = Records(tmp_path)
    three_seeds(records)
    records.result("skill_it", 0, (9, 9), THREE)
    records.result("stratified", 0, (10, 10), THREE)
    text = to_latex(records.table(), "Comparison table: my_exp")
    assert "skill\\_it" in text
    assert "c\\_sharp" in text
    assert "my\\_exp" in text
    assert "skill_it" not in text.replace("skill\\_it", "")
    assert text.count("\\begin{tabular}") == text.count("\\bottomrule") == 3
    # Within each tabular every row has as many unescaped & as the header.
    for block in re.findall(r"\\toprule\n(.*?)\\bottomrule", text, flags=re.S):
        lines = [line for line in block.splitlines() if line != "\\midrule"]
        counts = {len(re.findall(r"(?<!\\)&", line)) for line in lines}
        assert len(counts) == 1, lines
    assert "95\\% CI" in text
    assert "$[-1.550, -0.116]$" in text
    # The win/loss tabular keeps every column of the markdown summary, not_compared included.
    assert "Significant losses & Not compared \\\\" in text


def test_filters_keep_chosen_rows_only(tmp_path):
    records = Records(tmp_path)
    three_seeds(records, DEFAULT)
    three_seeds(records, THREE)
    records.result("dml", 0, (8, 8), DEFAULT)
    base = [f"results_dir={records.root}", "experiment.name=exp"]

    rows = command("table", [*base, "table.methods=[natural]", "table.settings=[three]", "table.seeds=[0,2]"])
    assert [(row["method"], row["setting"]) for row in rows] == [("natural", "three-cccc3333")]
    # Stratified stays the baseline: seeds 0 and 2 give differences -1 and -1.
    assert rows[0]["delta_vs_stratified"] == pytest.approx(-1.0)
    assert rows[0]["paired_seeds"] == 2
    # A filtered table is written beside the full one, never over it.
    assert not (records.experiment / "table.md").exists()
    markdown = (records.experiment / "table-filtered.md").read_text()
    assert "| stratified |" not in markdown
    assert "| dml |" not in markdown
    assert "Filtered to methods=[natural]; settings=[three]; seeds=[0, 2]." in markdown
    assert {row["method"] for row in csv_rows(records.experiment / "table-filtered.csv")} == {"natural"}

    rows = command("table", [*base, "table.settings=[default-aaaa1111]"])
    assert {row["setting"] for row in rows} == {"default-aaaa1111"}
    assert [row["method"] for row in rows] == ["dml", "natural", "stratified"]


def test_bad_filters_are_clear_errors(tmp_path):
    records = Records(tmp_path)
    three_seeds(records)
    base = [f"results_dir={records.root}", "experiment.name=exp"]
    with pytest.raises(ConfigError, match=r"unknown method 'natrual'\. Did you mean 'natural'\?"):
        command("table", [*base, "table.methods=[natrual]"])
    with pytest.raises(ConfigError, match=r"unknown setting 'defualt'\. Did you mean 'default'"):
        command("table", [*base, "table.settings=[defualt]"])
    with pytest.raises(ConfigError, match=r"seed 7, which has no result here; known seeds: \[0, 1, 2\]"):
        command("table", [*base, "table.seeds=[7]"])
    with pytest.raises(ConfigError, match=r"table.methods=\[\] selects nothing"):
        command("table", [*base, "table.methods=[]"])
    with pytest.raises(ConfigError, match=r"table.seeds contains 'one'"):
        command("table", [*base, "table.seeds=[one]"])


def test_listed_methods_without_results_are_missing_rows(tmp_path):
    records = Records(tmp_path)
    records.listing(["stratified", "natural", "dml"], [0, 1])
    records.result("stratified", 0, (10, 12))
    records.result("stratified", 1, (11, 13))
    records.result("natural", 0, (9, 11))
    rows = {row["method"]: row for row in command("table", [f"results_dir={records.root}", "experiment.name=exp"])}
    assert (rows["dml"]["status"], rows["dml"]["seeds"], rows["dml"]["missing"]) == ("missing", 0, 2)
    assert (rows["natural"]["status"], rows["natural"]["missing"], rows["natural"]["paired_seeds"]) == ("partial", 1, 1)
    assert rows["stratified"]["status"] == "ok"
    assert "| dml | 0 | 0 | 2 | missing | default-aaaa1111 |" in (records.experiment / "table.md").read_text()
    assert "dml & 0 & missing" in (records.experiment / "table.tex").read_text()


def test_compute_columns_split_tokens_by_kind(tmp_path):
    records = Records(tmp_path)
    probes = [(records.run(f"probe-{index}", (20, 20), compute={"train_tokens": 100, "exploration_tokens": 0, "eval_tokens": 5,
                                                                   "reference_tokens": 100, "flops": 10.0, "wall_time_s": 1.0}),
               "probe") for index in range(2)]
    # A probe listed twice (one mixture drawn twice) and the final run listed as an extra run were
    # each trained once, so each counts once.
    repeated = [*probes, probes[0], (f"dml-0-{setting_label(DEFAULT)}", "probe")]
    records.result("dml", 0, (9, 9), extra=repeated,
                   compute={"train_tokens": 1000, "exploration_tokens": 50, "eval_tokens": 20, "target_tokens": 7,
                            "flops": 100.0, "wall_time_s": 2.0})
    row = records.table().rows[0]
    expected = {"total_train_tokens": 1250, "total_extra_run_tokens": 200, "total_exploration_tokens": 50,
                "total_eval_tokens": 30, "total_reference_tokens": 200, "total_target_tokens": 7, "total_flops": 120.0,
                "wall_time_s": 4.0, "final_run_tokens": 1050, "probe_run_tokens": 200,
                "reference_run_tokens": 0, "proxy_run_tokens": 0, "single_domain_run_tokens": 0}
    assert {key: row[key] for key in expected} == expected


def test_compute_columns_average_the_complete_seeds(tmp_path):
    records = Records(tmp_path)
    records.listing(["natural"], [0, 1, 2])
    for seed in (0, 1):
        records.result("natural", seed, (9, 9))
    # A failed run stopped early, before it had spent anything.
    records.result("natural", 2, status="failed", compute={"train_tokens": 0, "exploration_tokens": 0, "eval_tokens": 0,
                                                           "wall_time_s": 0.5})
    row = records.table().rows[0]
    assert (row["failed"], row["total_train_tokens"], row["final_run_tokens"], row["wall_time_s"]) == (1, 1000, 1000, 1.0)
    records.result("natural", 0, status="failed", compute={"train_tokens": 0, "exploration_tokens": 0, "eval_tokens": 0,
                                                           "wall_time_s": 0.5})
    records.result("natural", 1, status="failed", compute={"train_tokens": 300, "exploration_tokens": 0, "eval_tokens": 0,
                                                           "wall_time_s": 0.5})
    # With no complete seed, the row shows what the failed runs spent.
    assert records.table().rows[0]["total_train_tokens"] == 100


def test_rebuild_is_byte_identical(tmp_path):
    records = Records(tmp_path)
    records.listing(["stratified", "natural", "dml"], [0, 1, 2])
    three_seeds(records, DEFAULT)
    three_seeds(records, THREE)
    records.result("dml", 1, status="failed")
    overrides = [f"results_dir={records.root}", "experiment.name=exp"]
    command("table", overrides)
    names = ("table.md", "table.csv", "table.tex")
    first = {name: (records.experiment / name).read_bytes() for name in names}
    for name in names:
        (records.experiment / name).unlink()
    command("table", overrides)
    assert {name: (records.experiment / name).read_bytes() for name in names} == first


def test_results_of_two_settings_are_kept_apart(tmp_path):
    def result(setting, seed=0):
        final = {"id": f"run-{seed}", "status": "complete"}
        return MethodResult("natural", {}, seed, final, [], {}, 1.0, setting=setting)

    directory = tmp_path / "exp"
    assert save_method_result(result(DEFAULT), directory).name == "natural-seed0.json"
    assert save_method_result(result(DEFAULT), directory).name == "natural-seed0.json"
    assert save_method_result(result(THREE), directory).name == "natural-seed0-three-cccc3333.json"
    assert save_method_result(result(None, seed=1), directory).name == "natural-seed1.json"
    stored = sorted(path.name for path in (directory / "methods").glob("*.json"))
    assert stored == ["natural-seed0-three-cccc3333.json", "natural-seed0.json", "natural-seed1.json"]
    assert "setting" not in json.loads((directory / "methods" / "natural-seed1.json").read_text())


def test_setting_fingerprint_follows_the_data():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        sim = dict(compose(config_name="benchmark", overrides=["experiment=sim"]).sim)
    first, again = setting_identity(SimSetting(dict(sim))), setting_identity(SimSetting(dict(sim)))
    assert first == again
    assert first["name"] == "sim"
    assert setting_identity(SimSetting(dict(sim, domains=3)))["fingerprint"] != first["fingerprint"]
    # Training settings are not part of the setting, so a longer rerun replaces the earlier results.
    assert setting_identity(SimSetting(dict(sim, steps=2000))) == first


def test_benchmark_names_earlier_results_in_table(tmp_path, caplog):
    common = [f"results_dir={tmp_path}", "experiment=sim", "experiment.seeds=[0]", "sim.steps=100", "sim.warmup_steps=10",
              "sim.eval_every=50", "experiment.method_overrides={}"]  # fmt: skip
    command("benchmark", [*common, "experiment.methods=[stratified,natural]", "sim.domains=3"])
    caplog.clear()

    with caplog.at_level("WARNING", logger="mixbench"):
        rows = command("benchmark", [*common, "experiment.methods=[stratified,doremi]"])

    label = next(row["setting"] for row in rows if row["method"] == "doremi" and row["status"] == "ok")
    earlier = [row["setting"] for row in rows if row["method"] == "natural" and row["status"] == "ok"]
    warnings = [record.getMessage() for record in caplog.records if "also lists earlier results" in record.getMessage()]
    assert len(warnings) == 1, warnings
    assert f"(methods natural; settings {earlier[0]})" in warnings[0]
    assert "with `missing` rows where a method has no result in a setting" in warnings[0]
    suggested = f"'table.methods=[stratified,doremi]' 'table.settings=[{label}]'"
    assert suggested in warnings[0]

    # The suggested filters give a table of this command's methods and setting alone.
    filtered = command("table", [f"results_dir={tmp_path}", "experiment.name=sim", "table.methods=[stratified,doremi]",
                                 f"table.settings=[{label}]"])  # fmt: skip
    assert sorted((row["method"], row["setting"], row["status"]) for row in filtered) == [
        ("doremi", label, "ok"), ("stratified", label, "ok")]


def test_benchmark_alone_in_folder_is_quiet(tmp_path, caplog):
    overrides = [f"results_dir={tmp_path}", "experiment=sim", "experiment.seeds=[0]", "sim.steps=100", "sim.warmup_steps=10",
                 "sim.eval_every=50", "experiment.methods=[stratified,natural]", "experiment.method_overrides={}"]  # fmt: skip

    with caplog.at_level("WARNING", logger="mixbench"):
        command("benchmark", overrides)
        command("benchmark", overrides)

    assert "also lists earlier results" not in caplog.text


def test_override_of_an_unlisted_method_is_named(tmp_path, caplog):
    from mixbench import api

    overrides = [f"results_dir={tmp_path}", "experiment=sim", "experiment.seeds=[0]", "sim.steps=100", "sim.warmup_steps=10",
                 "experiment.methods=[stratified]"]  # fmt: skip
    # The experiment file's own overrides (dml, regmix, ...) are for methods a shorter list may leave out.
    with caplog.at_level("WARNING", logger="mixbench"):
        api.benchmark(overrides=overrides)
    assert "unused" not in caplog.text
    with caplog.at_level("WARNING", logger="mixbench"):
        api.benchmark(overrides=[*overrides, "+experiment.method_overrides.aioli={eta: 0.5}"])
    assert ("experiment.method_overrides sets aioli, which experiment.methods=[stratified] does not list, so those "
            "settings are unused") in caplog.text


def test_simulator_benchmark_in_two_settings(tmp_path):
    overrides = [f"results_dir={tmp_path}", "experiment=sim", "experiment.methods=[stratified,natural]", "experiment.seeds=[0,1]",
                 "sim.steps=100", "sim.warmup_steps=10", "sim.eval_every=50", "experiment.method_overrides={}"]
    command("benchmark", overrides)
    rows = command("benchmark", [*overrides, "sim.domains=3"])
    settings = sorted({row["setting"] for row in rows})
    assert len(settings) == 2
    assert all(label.startswith("sim-") for label in settings)
    assert len(list((tmp_path / "sim" / "methods").glob("*.json"))) == 8
    natural = [row for row in rows if row["method"] == "natural"]
    assert [row["paired_seeds"] for row in natural] == [2, 2]
    assert all(row["vs_stratified"] in ("win", "loss", "tie") for row in natural)
    summary = (tmp_path / "sim" / "table.md").read_text().split("## Wins and losses against stratified")[1]
    wins = sum(row["vs_stratified"] == "win" for row in natural)
    assert f"| natural | 2 | {wins} | {2 - wins} | 0 |" in summary
    # The table lists what distinguishes the two settings. The world seed, offset by each seed, is not listed.
    listing = (tmp_path / "sim" / "table.md").read_text().split("## Settings")[1].split("## Wins")[0]
    described = dict(line[2:].split(": ", 1) for line in listing.splitlines() if line.startswith("- "))
    assert sorted(described) == [f"`{label}`" for label in settings]
    assert sorted(described.values()) == ["simulator.domains=3", "simulator.domains=5"]


def test_duplicate_results_are_rejected(tmp_path):
    records = Records(tmp_path)
    records.result("natural", 0, (9, 11))
    copy = records.experiment / "methods" / "natural-seed0-copy.json"
    copy.write_text((records.experiment / "methods" / "natural-seed0-default-aaaa1111.json").read_text())
    with pytest.raises(ConfigError, match="both natural at seed 0 in setting default-aaaa1111 with the same hyperparameters; delete the outdated one"):
        load_results(records.experiment)


def test_no_shared_seed_leaves_method_uncompared(tmp_path):
    records = Records(tmp_path)
    records.result("stratified", 0, (10, 12))
    records.result("natural", 1, (9, 11))
    built = records.table()
    natural = {row["method"]: row for row in built.rows}["natural"]
    assert "delta_vs_stratified" not in natural
    assert (natural["status"], natural["missing"]) == ("partial", 1)
    assert built.win_loss[0]["not_compared"] == 1


def test_skipped_method_row_not_missing(tmp_path):
    from mixbench.commands import _write_experiment

    directory = tmp_path / "experiment"
    _write_experiment(directory, "mixed", "sim", ["stratified", "natural"], [0], "eight-aaaaaaaa", {"grid": "grid needs m <= 3"})
    _write_experiment(directory, "mixed", "sim", ["stratified", "grid"], [1], "three-bbbbbbbb", {})
    stored = json.loads((directory / "experiment.json").read_text())

    # Methods and seeds merge over settings; each setting keeps its own skipped methods.
    assert stored["methods"] == ["stratified", "natural", "grid"]
    assert stored["seeds"] == [0, 1]
    assert stored["skipped"] == {"eight-aaaaaaaa": {"grid": "grid needs m <= 3"}, "three-bbbbbbbb": {}}


def test_benchmark_marks_ruled_out_method_skipped(tmp_path):
    from mixbench.method import available_methods

    # Grid needs m <= 3, so with every method requested it is ruled out at 4 domains and ran at 3.
    others = [name for name in available_methods() if name not in ("stratified", "grid")]
    overrides = [f"results_dir={tmp_path}", "experiment=sim", "experiment.methods=all", f"experiment.exclude=[{','.join(others)}]",
                 "experiment.seeds=[0]", "sim.steps=40", "sim.warmup_steps=4", "sim.eval_every=20",
                 "+experiment.method_overrides.grid.resolution=2"]
    command("benchmark", [*overrides, "sim.domains=4"])
    rows = command("benchmark", [*overrides, "sim.domains=3"])
    assert len(rows) == 4
    assert sorted(row["status"] for row in rows if row["method"] == "grid") == ["ok", "skipped"]
    assert sorted(row["status"] for row in rows if row["method"] == "stratified") == ["ok", "ok"]
    assert "| grid | 0 | 0 | 0 | skipped |" in (tmp_path / "sim" / "table.md").read_text()
    # A later benchmark of fewer methods in the same setting keeps the earlier skip and its reason.
    rows = command("benchmark", [*overrides[:2], "experiment.methods=[stratified]", *overrides[4:], "sim.domains=4"])
    assert sorted(row["status"] for row in rows if row["method"] == "grid") == ["ok", "skipped"]


def test_hyperparameter_sets_kept_apart(tmp_path):
    def result(params, setting=DEFAULT):
        return MethodResult("aioli", params, 0, {"id": "run", "status": "complete"}, [], {}, 1.0, setting=setting)

    directory = tmp_path / "exp"
    first = save_method_result(result({"eta": 0.1}), directory).name
    assert first == "aioli-seed0.json"
    assert save_method_result(result({"eta": 0.1}), directory).name == first
    other = save_method_result(result({"eta": 0.5}), directory).name
    assert re.fullmatch(r"aioli-seed0-default-aaaa1111-[0-9a-f]{8}\.json", other)
    assert save_method_result(result({"eta": 0.5}), directory).name == other
    assert save_method_result(result({"eta": 0.1}, THREE), directory).name == "aioli-seed0-three-cccc3333.json"
    stored = {path.name: json.loads(path.read_text())["params"] for path in (directory / "methods").glob("*.json")}
    assert stored == {first: {"eta": 0.1}, other: {"eta": 0.5}, "aioli-seed0-three-cccc3333.json": {"eta": 0.1}}


def test_variant_rows_only_where_they_ran(tmp_path):
    records = Records(tmp_path)
    records.listing(["stratified", "aioli"], [0])
    for setting in (DEFAULT, THREE):
        records.result("stratified", 0, (10, 12), setting)
    records.result("aioli", 0, (9, 11), DEFAULT, params={"eta": 0.5})
    records.result("aioli", 0, (11, 13), THREE, params={"eta": 1.0})
    rows = [(row["setting"], row["method"], row["status"]) for row in records.table().rows]
    assert rows == [("default-aaaa1111", "aioli[eta=0.5]", "ok"), ("default-aaaa1111", "stratified", "ok"),
                    ("three-cccc3333", "aioli[eta=1.0]", "ok"), ("three-cccc3333", "stratified", "ok")]


def test_result_identity_uses_filled_settings(tmp_path):
    def result(params, run_params):
        return MethodResult("aioli", params, 0, {"id": "run", "status": "complete"}, [], {}, 1.0, setting=DEFAULT,
                            run_params=run_params)

    directory = tmp_path / "exp"
    # A result written before results kept run_params is replaced by the same config's new result.
    older = MethodResult("aioli", {"eta": None}, 0, {"id": "run", "status": "complete"}, [], {}, 1.0, setting=DEFAULT)
    assert save_method_result(older, directory).name == "aioli-seed0.json"
    assert save_method_result(result({"eta": None}, {"eta": 1.0}), directory).name == "aioli-seed0.json"
    # A null and the value it stands for are one result, and so are 1 and 1.0.
    assert save_method_result(result({"eta": 1}, {"eta": 1}), directory).name == "aioli-seed0.json"
    assert save_method_result(result({"eta": 0.5}, {"eta": 0.5}), directory).name != "aioli-seed0.json"
    assert len(list((directory / "methods").glob("*.json"))) == 2


def test_sweep_row_per_value(tmp_path):
    overrides = [f"results_dir={tmp_path}", "experiment=sim", "experiment.seeds=[0]", "sim.steps=100",
                 "sim.warmup_steps=10", "sim.eval_every=50"]
    # eta=1 is the default 1.0, and DoGE's mu=null stands for 0.01 at 5 domains, so each pair is one result.
    for method in ("method=stratified", "method=doremi", "method=doremi method.eta=0.5", "method=doremi method.eta=1",
                   "method=doge", "method=doge method.mu=0.01"):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            run(compose(config_name="run", overrides=[*overrides, *method.split()]))
    files = sorted(path.name for path in (tmp_path / "sim" / "methods").glob("*.json"))
    assert len(files) == 4
    assert json.loads((tmp_path / "sim" / "experiment.json").read_text())["setting"] == "sim"
    rows = command("table", [f"results_dir={tmp_path}", "experiment.name=sim"])
    by_name = {row["method"]: row for row in rows}
    assert sorted(by_name) == ["doge", "doremi[eta=0.5]", "doremi[eta=1.0]", "stratified"]
    assert by_name["doremi[eta=0.5]"]["final_avg_loss"] != by_name["doremi[eta=1.0]"]["final_avg_loss"]
    assert all("delta_vs_stratified" in by_name[name] for name in ("doremi[eta=0.5]", "doremi[eta=1.0]"))
    single = command("table", [f"results_dir={tmp_path}", "experiment.name=sim", "table.methods=['doremi[eta=0.5]']"])
    assert [row["method"] for row in single if row["method"] != "stratified"] == ["doremi[eta=0.5]"]
    # A row's values are compared parsed, as in its name: 0.50 is 0.5 and 1 is 1.0.
    for typed, row_name in (("doremi[eta=0.50]", "doremi[eta=0.5]"), ("doremi[eta=1]", "doremi[eta=1.0]")):
        rows = command("table", [f"results_dir={tmp_path}", "experiment.name=sim", f"table.methods=['{typed}']"])
        assert [row["method"] for row in rows if row["method"] != "stratified"] == [row_name]
    both = command("table", [f"results_dir={tmp_path}", "experiment.name=sim", "table.methods=[doremi]"])
    assert sorted(row["method"] for row in both) == ["doremi[eta=0.5]", "doremi[eta=1.0]"]


def test_run_rejects_other_setting_kind(tmp_path):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        run(compose(config_name="run", overrides=[f"results_dir={tmp_path}", "experiment=sim", "method=stratified",
                                                  "sim.steps=100", "sim.warmup_steps=10", "sim.eval_every=50"]))
        corpus = compose(config_name="run", overrides=[f"results_dir={tmp_path}", "experiment.name=sim", "method=natural"])
    with pytest.raises(ConfigError, match="contains results of experiment.setting=sim, and this command trains with experiment.setting=corpus"):
        run(corpus)
    assert sorted(path.name for path in (tmp_path / "sim" / "methods").iterdir()) == ["stratified-seed0.json"]


def test_row_over_seeds_of_different_lengths_is_marked(tmp_path, caplog):
    common = [f"results_dir={tmp_path}", "experiment=sim", "sim.warmup_steps=10", "sim.eval_every=50"]
    for method, seed, steps in (("stratified", 0, 100), ("stratified", 1, 100), ("natural", 0, 100), ("natural", 1, 200)):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            run(compose(config_name="run", overrides=[*common, f"method={method}", f"seed={seed}", f"sim.steps={steps}"]))
    caplog.clear()
    rows = {row["method"]: row for row in command("table", [f"results_dir={tmp_path}", "experiment.name=sim"])}
    assert rows["natural"]["status"] == "mixed"
    assert rows["stratified"]["status"] == "ok"
    assert rows["natural"]["paired_seeds"] == 1
    assert re.search(r"\d+ tokens: natural \(seed 0\), stratified \(seeds 0, 1\); \d+ tokens: natural \(seed 1\)", caplog.text)
    latex = (tmp_path / "sim" / "table.tex").read_text()
    assert [line for line in latex.splitlines() if line.startswith("natural")][0].count("(mixed runs)") == 1
    assert "(mixed runs)" not in [line for line in latex.splitlines() if line.startswith("stratified")][0]


def test_other_training_settings_not_compared(tmp_path, caplog):
    # Same length, another learning-rate schedule: the difference would otherwise pass as a comparison.
    common = [f"results_dir={tmp_path}", "experiment=sim", "sim.steps=100", "sim.eval_every=50"]
    for method, seed, warmup in (("stratified", 0, 10), ("stratified", 1, 10), ("natural", 0, 10), ("natural", 1, 20),
                                 ("odm", 0, 20), ("odm", 1, 20)):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            run(compose(config_name="run", overrides=[*common, f"method={method}", f"seed={seed}", f"sim.warmup_steps={warmup}",
                                                      f"sim.checkpoint_every={10 * (seed + 1)}"]))
    caplog.clear()
    rows = {row["method"]: row for row in command("table", [f"results_dir={tmp_path}", "experiment.name=sim"])}
    assert rows["natural"]["status"] == "mixed"
    assert rows["natural"]["paired_seeds"] == 1
    # Every odm seed differs from stratified's, so none pairs; checkpoint intervals alone would not matter.
    assert rows["odm"]["status"] == "ok"
    assert "delta_vs_stratified" not in rows["odm"]
    assert rows["stratified"]["status"] == "ok"
    assert re.search(r"\d+ tokens, train.warmup_steps=10: natural \(seed 0\), stratified \(seeds 0, 1\); "
                     r"\d+ tokens, train.warmup_steps=20: natural \(seed 1\), odm \(seeds 0, 1\)", caplog.text)


def test_mixed_conditions_warned_not_compared(tmp_path, caplog):
    common = [f"results_dir={tmp_path}", "experiment=sim", "sim.warmup_steps=10", "sim.eval_every=50"]
    warned, rows, replaced, figures_warned = [], [], [], []
    for method, steps in (("stratified", 100), ("natural", 100), ("natural", 200)):
        caplog.clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            run(compose(config_name="run", overrides=[*common, f"method={method}", f"sim.steps={steps}"]))
        replaced.append("replacing the result of natural seed 0" in caplog.text)
        caplog.clear()
        rows.append({row["method"]: row for row in command("table", [f"results_dir={tmp_path}", "experiment.name=sim"])})
        warned.append(re.search(r"different lengths or settings in setting sim-\w+ \((\d+) tokens: stratified \(seed 0\); (\d+) tokens: natural \(seed 0\)\)", caplog.text))
        caplog.clear()
        command("figures", [f"results_dir={tmp_path}", "experiment.name=sim", "figures=[loss_vs_compute]"])
        figures_warned.append("figures of" in caplog.text and warned[-1] is not None and warned[-1].group(0) in caplog.text)
    assert replaced == [False, False, True]
    assert warned[:2] == [None, None]
    assert figures_warned == [False, False, True]
    assert warned[2] is not None
    assert 2 * int(warned[2].group(1)) == int(warned[2].group(2))
    # Natural is compared with stratified at the same length only.
    assert rows[1]["natural"]["paired_seeds"] == 1
    assert "delta_vs_stratified" not in rows[2]["natural"]
