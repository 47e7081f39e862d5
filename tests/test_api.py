"""The Python API: the same Hydra configs as the command line, and results that match the records on disk."""

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import mixbench
from mixbench import api
from mixbench.errors import ConfigError

from conftest import TINY_MODEL, TINY_TRAIN, tree_state

SIM = ["experiment.methods=[stratified,natural]", "experiment.seeds=[0,1]", "sim.steps=200", "sim.eval_every=50", "sim.warmup_steps=20"]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def same_value(left, right) -> bool:
    if isinstance(left, float) and isinstance(right, float) and math.isnan(left) and math.isnan(right):
        return True
    return left == right


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "null"),
        (True, "true"),
        (3, "3"),
        (0.25, "0.25"),
        ("natural", "natural"),
        ("null", "'null'"),
        ("/tmp/a b", "'/tmp/a b'"),
        ("it's", "'it\\'s'"),
        (Path("/tmp/x"), "'/tmp/x'"),
        ([0.5, "wiki"], "[0.5,wiki]"),
        ({"python": 0.5, "wiki": 0.5}, "{python:0.5,wiki:0.5}"),
    ],
)
def test_override_value_grammar(value, expected):
    assert api.override_value(value) == expected


def test_compose_applies_keywords_and_overrides():
    cfg = api.compose_config("run", method="natural", seed=1, overrides=["train.steps=50"])
    assert cfg.method.name == "natural"
    assert cfg.seed == 1
    assert cfg.train.steps == 50

    cfg = api.compose_config("run", method="fixed", overrides={"method.mixture": {"python": 0.5, "wiki": 0.5}, "results_dir": "/tmp/a b"})
    assert dict(cfg.method.mixture) == {"python": 0.5, "wiki": 0.5}
    assert cfg.results_dir == "/tmp/a b"

    cfg = api.compose_config("figures", experiment="sim", figures=["a_heatmaps"])
    assert cfg.experiment.name == "sim"
    assert list(cfg.figures) == ["a_heatmaps"]


def test_bad_calls_raise_clear_errors():
    with pytest.raises(ConfigError, match="single string; pass a list"):
        api.run(overrides="train.steps=5")
    with pytest.raises(ConfigError, match="command 'train' is unknown"):
        api.compose_config("train")
    with pytest.raises(ConfigError, match="cannot be written as a Hydra override"):
        api.compose_config("run", seed=object())


def test_config_errors_carry_the_command_line_hints():
    # A results folder given as experiment= is pointed to experiment.name=, a misspelt key to its neighbour.
    with pytest.raises(ConfigError, match="use experiment.name=walks instead"):
        api.table(experiment="walks")
    with pytest.raises(ConfigError, match="train.step is not a setting of mixbench run; did you mean train.steps"):
        api.compose_config("run", overrides=["train.step=40"])


def test_import_mixbench_stays_light():
    code = "import sys, mixbench; assert 'hydra' not in sys.modules and 'torch' not in sys.modules; print(mixbench.api.__name__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "mixbench.api"
    assert mixbench.api is api


def test_sim_benchmark_and_table_match_records(tmp_path, caplog):
    results = tmp_path / "results"
    with caplog.at_level("INFO", logger="mixbench"):
        rows = api.benchmark(experiment="sim", results_dir=results, overrides=SIM)
    assert [row["method"] for row in rows] == ["natural", "stratified"]
    # The log names the setting by the label its rows carry in the table.
    labels = {row["setting"] for row in rows}
    assert len(labels) == 1
    assert f"setting {labels.pop()}: tables label" in caplog.text

    # Each row is computed from the final-run records of the method's seeds.
    for row in rows:
        finals = [
            read_json(results / "runs" / read_json(results / "sim" / "methods" / f"{row['method']}-seed{seed}.json")["final_run"] / "record.json")
            for seed in (0, 1)
        ]
        assert row["seeds"] == 2
        assert row["final_avg_loss"] == pytest.approx(sum(final["true_mean_loss"] for final in finals) / 2)
        assert row["regret"] == pytest.approx(sum(final["regret"] for final in finals) / 2)
        assert row["total_train_tokens"] == pytest.approx(finals[0]["compute"]["train_tokens"])
        # The simulator measures neither, so the table leaves them out instead of showing 0.
        assert "total_flops" not in row
        assert "wall_time_s" not in row

    # The table rebuilt from records equals what the benchmark returned and what it wrote.
    rebuilt = api.table(experiment="sim", results_dir=results)
    assert len(rebuilt) == len(rows)
    for row, again in zip(rows, rebuilt):
        assert row.keys() == again.keys()
        assert all(same_value(row[key], again[key]) for key in row), (row, again)
    with (results / "sim" / "table.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        written = {line["method"]: line for line in reader}
    assert "total_flops" not in reader.fieldnames
    assert "total_eval_tokens" in reader.fieldnames
    for row in rebuilt:
        assert float(written[row["method"]]["final_avg_loss"]) == pytest.approx(row["final_avg_loss"])

    built = api.figures(experiment="sim", results_dir=results, figures=["loss_vs_compute"])
    assert [path.name for path in built["loss_vs_compute"]] == ["loss_vs_compute.png", "loss_vs_compute.pdf"]
    assert all(path.is_file() for path in built["loss_vs_compute"])


def corpus_overrides(text_folders: Path, cache: Path) -> list[str]:
    items = ["data=folders", f"data.path={text_folders}", f"data.cache_dir={cache}"]
    items += [f"model.{key}={value}" for key, value in TINY_MODEL.items()]
    items += [f"train.{key}={str(value).lower() if isinstance(value, bool) else value}" for key, value in TINY_TRAIN.items()]
    return items


def test_run_returns_stored_record(text_folders, tmp_path):
    results = tmp_path / "results"
    result = api.run(method="natural", seed=1, results_dir=results, overrides=corpus_overrides(text_folders, tmp_path / "cache"))
    assert (result.method, result.seed) == ("natural", 1)

    stored = read_json(results / "runs" / result.final["id"] / "record.json")
    for key in ("id", "status", "test_losses", "val_losses", "final_mixture", "metrics", "compute"):
        assert stored[key] == result.final[key], key
    assert stored["spec"]["train"]["steps"] == TINY_TRAIN["steps"]
    saved = read_json(results / "default" / "methods" / "natural-seed1.json")
    assert saved["final_run"] == result.final["id"]
    assert saved["seed"] == 1


def test_read_only_results_tabulated_elsewhere(tmp_path, read_only):
    results = tmp_path / "results"
    rows = api.benchmark(experiment="sim", results_dir=results, overrides=SIM)
    read_only(results)
    before = tree_state(results)

    with pytest.raises(ConfigError, match=f"table folder '{results / 'sim'}' is not writable .*set out_dir=PATH"):
        api.table(experiment="sim", results_dir=results)
    out = tmp_path / "elsewhere"
    rebuilt = api.table(experiment="sim", results_dir=results, out_dir=out)
    assert [row["method"] for row in rebuilt] == [row["method"] for row in rows]
    assert sorted(path.name for path in out.iterdir()) == ["table.csv", "table.md", "table.tex"]
    assert (out / "table.md").read_text() == (results / "sim" / "table.md").read_text()

    with pytest.raises(ConfigError, match=f"figures folder '{results / 'sim' / 'figures'}' is not writable .*set out_dir=PATH"):
        api.figures(experiment="sim", results_dir=results, figures=["loss_vs_compute"])
    built = api.figures(experiment="sim", results_dir=results, figures=["loss_vs_compute"], out_dir=out / "figures")
    assert [path.name for path in built["loss_vs_compute"]] == ["loss_vs_compute.png", "loss_vs_compute.pdf"]
    assert tree_state(results) == before


def test_table_of_missing_folder_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"no method results under reslts/walk/methods\. Check results_dir=reslts and experiment.name=walk"):
        api.table(results_dir="reslts", overrides=["experiment.name=walk"])
    assert list(tmp_path.iterdir()) == []


def test_run_hint_names_results_dir(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    short = ["experiment=sim", "sim.steps=40", "sim.eval_every=20", "sim.warmup_steps=4"]
    with caplog.at_level("INFO", logger="mixbench"):
        api.run(method="natural", overrides=short)
    assert "(mixbench table experiment.name=sim shows it)" in caplog.text

    caplog.clear()
    with caplog.at_level("INFO", logger="mixbench"):
        api.run(method="natural", results_dir="my results", overrides=short)
    assert "(mixbench table 'results_dir=my results' experiment.name=sim shows it)" in caplog.text

    # A benchmark of other seeds points to a filtered copy of the table, quoted for the shell.
    caplog.clear()
    api.benchmark(results_dir="my results", overrides=[*short, "experiment.methods=[natural]", "experiment.seeds=[1,2]"])
    assert "or `mixbench table 'results_dir=my results' experiment.name=sim 'table.seeds=[1,2]'` for a filtered copy" in caplog.text


def test_failed_benchmark_error_carries_rows(tmp_path):
    from mixbench.errors import RunFailedError
    from mixbench.method import StaticMethod, register, unregister

    @register
    class Crashing(StaticMethod):
        """A static method whose optimize raises, standing in for a method with a bug."""

        name = "test_api_crashing"

        def optimize(self, context):
            raise RuntimeError("optimize exploded on purpose")

    try:
        with pytest.raises(RunFailedError, match="1 method run\\(s\\) failed: test_api_crashing \\(seed 0\\)") as raised:
            api.benchmark(experiment="sim", results_dir=tmp_path, overrides=[
                "experiment.methods=[stratified,test_api_crashing]", "experiment.seeds=[0]", *SIM[2:]])
    finally:
        unregister("test_api_crashing")
    rows = {row["method"]: row for row in raised.value.rows}
    assert rows["test_api_crashing"]["status"] == "failed"
    assert rows["stratified"]["status"] == "ok"
    assert rows == {row["method"]: row for row in api.table(experiment="sim", results_dir=tmp_path)}


def test_fixed_mixture_forms_one_row(tmp_path):
    results = tmp_path / "results"
    short = ["sim.steps=40", "sim.eval_every=20", "sim.warmup_steps=4"]
    forms = [{"mixture": [0.5, 0.5, 0, 0, 0]}, {"mixture": {"d0": 0.5, "d1": 0.5}},
             {"mixture": [2, 2, 0, 0, 0], "normalize": True}]
    runs = {api.run(experiment="sim", method={"name": "fixed", **form}, results_dir=results, overrides=short).final["id"]
            for form in forms}

    # The three forms give one mixture and so one run, one stored result and one table row.
    assert len(runs) == 1
    assert [path.name for path in (results / "sim" / "methods").iterdir()] == ["fixed-seed0.json"]
    assert [row["method"] for row in api.table(experiment="sim", results_dir=results) if row["method"].startswith("fixed")] == ["fixed"]


def test_simulator_names_settings_it_does_not_read(tmp_path, caplog):
    results = tmp_path / "results"
    short = ["sim.steps=40", "sim.eval_every=20", "sim.warmup_steps=4"]
    with caplog.at_level("WARNING", logger="mixbench"):
        api.run(experiment="sim", method="natural", results_dir=results, overrides=[*short, "train.steps=30", "data=three"])
    unused = [r.getMessage() for r in caplog.records if "the simulator does not read" in r.getMessage()]
    assert len(unused) == 1
    assert unused[0].startswith("train.steps=30 data=three: the simulator does not read train/model/data settings")

    # Thread counts and the simulator's own settings are not named.
    caplog.clear()
    with caplog.at_level("WARNING", logger="mixbench"):
        api.run(experiment="sim", method="natural", results_dir=results, overrides=[*short, "train.threads=1"])
    assert not [r for r in caplog.records if "the simulator does not read" in r.getMessage()]
