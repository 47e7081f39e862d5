"""`mixbench laws` on run tables, as a user runs it: real Hydra, CSV files in a temporary folder."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parents[1]
REGMIX = REPO.parent / "shared" / "reference_runs" / "regmix"
PILE_CC = "metric/the_pile_pile_cc_val_loss"
COLUMNS = ["law", "target", "test_set", "n_train", "n_test", "r2", "mae", "spearman"]
DOMAINS = ["web", "code", "books"]
TARGETS = ["loss_web", "loss_code"]


def mixbench(*args, cwd):
    environment = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run([sys.executable, "-m", "mixbench", "laws", *args], cwd=cwd, capture_output=True, text=True,
                          env=environment, timeout=600)


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_runs(folder: Path, name: str, k: int, seed: int, first_index: int = 1) -> tuple[Path, Path]:
    """Write k runs whose losses follow a log-linear law in the mixture, plus a little noise."""
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(len(DOMAINS)), size=k).round(4)
    P[:, -1] = np.clip(1.0 - P[:, :-1].sum(axis=1), 0.0, None)
    rates = np.array([[2.0, 0.3, 0.5], [0.2, 2.5, 0.1]])
    L = 2.0 + np.exp(0.5 - P @ rates.T) + 0.002 * rng.standard_normal((k, len(TARGETS)))
    index = list(range(first_index, first_index + k))
    mixtures = write_csv(folder / f"{name}_mixture.csv", ["index", *DOMAINS], [[i, *p] for i, p in zip(index, P.tolist())])
    losses = write_csv(folder / f"{name}_loss.csv", ["index", *TARGETS], [[i, *l] for i, l in zip(index, L.tolist())])
    return mixtures, losses


def read_report(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def tables(tmp_path):
    train = write_runs(tmp_path, "train", 40, seed=0)
    first = write_runs(tmp_path, "first", 12, seed=1, first_index=100)
    second = write_runs(tmp_path, "second", 12, seed=2, first_index=200)
    return train, first, second


def table_args(train, tests=()) -> list[str]:
    args = [f"train.mixtures={train[0]}", f"train.losses={train[1]}"]
    if tests:
        args += [f"test.mixtures=[{','.join(str(m) for m, _ in tests)}]", f"test.losses=[{','.join(str(l) for _, l in tests)}]"]
    return args


def test_config_keeps_train_group_out():
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="laws", overrides=["train.mixtures=M.csv", "train.losses=L.csv"], return_hydra_config=True)
    assert "train" not in cfg.hydra.runtime.choices
    assert cfg.train.mixtures == "M.csv"
    assert cfg.train.losses == "L.csv"
    # Null scores the default laws on run tables; a sweep rejects any list given here.
    assert cfg.laws is None


def test_help_shows_examples(tmp_path):
    result = mixbench("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "mixbench laws train.mixtures=" in result.stdout
    assert "experiment=laws_dynamic" in result.stdout


def test_two_test_sets_report(tables, tmp_path):
    train, first, second = tables
    out = tmp_path / "report.csv"
    # Without laws=, the default laws are scored.
    result = mixbench(*table_args(train, [first, second]), f"out={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    rows = read_report(out)
    assert list(dict.fromkeys(row["law"] for row in rows)) == ["linear", "dml", "trees"]
    with out.open() as handle:
        header = handle.readline().strip().split(",")
    assert header[:8] == COLUMNS
    assert "in_sample_r2" in header
    assert len(rows) == 3 * len(TARGETS) * 2
    assert {row["test_set"] for row in rows} == {"first_mixture.csv", "second_mixture.csv"}
    assert {row["n_train"] for row in rows} == {"40"}
    assert {row["n_test"] for row in rows} == {"12"}
    assert all(row["status"] == "ok" for row in rows)
    dml = [row for row in rows if row["law"] == "dml"]
    assert min(float(row["r2"]) for row in dml) > 0.9
    assert min(float(row["in_sample_r2"]) for row in dml) > 0.9
    assert "| dml | first_mixture.csv |" in result.stdout
    markdown = out.with_suffix(".md").read_text()
    assert markdown.startswith("# Mixing laws on run tables: train_mixture.csv\n")
    assert "Fitted on 40 runs (3 domains, 2 targets), scored on first_mixture.csv, second_mixture.csv." in markdown
    assert "## Per law and test set\n\n| law | test set |" in markdown
    assert "## Averages over targets\n\n| law | test set | runs fitted |" in markdown


def test_no_test_set_cross_validates(tables, tmp_path):
    train, _, _ = tables
    out = tmp_path / "cv.csv"
    result = mixbench(*table_args(train), "laws=[linear]", "cv_folds=4", f"out={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_report(out)
    assert {row["test_set"] for row in rows} == {"cv"}
    assert {row["cv_folds"] for row in rows} == {"4"}
    assert {row["n_test"] for row in rows} == {"40"}
    assert all(row["r2"] and row["in_sample_r2"] for row in rows)
    # Each run is predicted once per target, by the fold that held it out, and the R^2 is computed over those.
    predictions = read_report(tmp_path / "cv_predictions.csv")
    assert len(predictions) == 40 * len(TARGETS)
    assert {row["test_set"] for row in predictions} == {"cv"}
    for row in rows:
        mine = [entry for entry in predictions if entry["target"] == row["target"]]
        actual = np.array([float(entry["actual"]) for entry in mine])
        predicted = np.array([float(entry["predicted"]) for entry in mine])
        r2 = 1 - np.sum((actual - predicted) ** 2) / np.sum((actual - actual.mean()) ** 2)
        assert r2 == pytest.approx(float(row["r2"]), rel=1e-6)


def test_constant_target_is_skipped(tmp_path):
    mixtures, losses = write_runs(tmp_path, "train", 20, seed=0)
    rows = read_report(losses)
    write_csv(losses, ["index", *TARGETS, "flat"], [[row["index"], row["loss_web"], row["loss_code"], 3.0] for row in rows])
    out = tmp_path / "report.csv"
    result = mixbench(f"train.mixtures={mixtures}", f"train.losses={losses}", "laws=[linear]", f"out={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    [flat] = [row for row in read_report(out) if row["target"] == "flat"]
    assert flat["status"].startswith("skipped: constant loss")
    assert flat["r2"] == ""
    assert "nan" not in out.read_text().lower()
    assert "flat" in result.stderr


def test_too_few_runs_skips_law(tmp_path):
    train = write_runs(tmp_path, "train", 3, seed=0)
    test = write_runs(tmp_path, "test", 6, seed=1, first_index=10)
    out = tmp_path / "report.csv"
    result = mixbench(*table_args(train, [test]), "laws=[linear,dml]", f"out={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_report(out)
    assert all(row["status"].startswith("exactly determined") for row in rows if row["law"] == "linear")
    dml = [row for row in rows if row["law"] == "dml"]
    assert all("needs at least 4 runs for 3 domains, got 3" in row["status"] for row in dml)
    assert all(row["r2"] == "" for row in dml)


def test_nothing_scorable_exits_2(tmp_path):
    train = write_runs(tmp_path, "train", 3, seed=0)
    result = mixbench(*table_args(train), "laws=[dml]", "cv_folds=3", f"out={tmp_path / 'r.csv'}", cwd=tmp_path)
    assert result.returncode == 2
    assert "no law could be scored" in result.stderr
    assert "laws=[linear] needs the fewest" in result.stderr
    # With the linear law among those that failed, the only fix left is more runs.
    result = mixbench(*table_args(train), "laws=[linear]", "cv_folds=3", f"out={tmp_path / 'r.csv'}", cwd=tmp_path)
    assert result.returncode == 2
    assert "To fix it, add training runs. The status column" in result.stderr


def test_cv_with_fewer_runs_than_default_folds(tmp_path):
    # Fewer runs than the default 5 folds: leave-one-out, and the error names what the laws need.
    train = write_runs(tmp_path, "train", 3, seed=0)
    result = mixbench(*table_args(train), f"out={tmp_path / 'r.csv'}", cwd=tmp_path)
    assert result.returncode == 2
    assert "cv_folds" not in result.stderr
    assert "the linear law needs at least 3 runs for 3 domains, a fold has 2" in result.stderr


def drop_first_loss_row(losses: Path) -> None:
    lines = losses.read_text().splitlines()
    losses.write_text("\n".join([lines[0], *lines[2:]]) + "\n")


def drop_domain_column(mixtures: Path, keep_sums: bool = True) -> None:
    rows = read_report(mixtures)
    write_csv(mixtures, ["index", "web", "code"],
              [[row["index"], row["web"], float(row["code"]) + (float(row["books"]) if keep_sums else 0.0)] for row in rows])


@pytest.mark.parametrize(
    "damage, extra, message",
    [
        ("mismatch", [], "index 100 is in first_mixture.csv but missing from first_loss.csv"),
        ("domain", [], "missing domain columns books"),
        # Without the column its rows no longer sum to 1; the column is named, not the sums.
        ("domain-sums", [], "has missing domain columns books compared with the training mixtures"),
        ("none", ["train.losses=null"], "train.mixtures is set but train.losses is not"),
        ("none", ["laws=[linear,dml,linear]"], "laws=[linear,dml,linear] lists linear more than once"),
        ("none", ["test.losses=[]"], "test.mixtures lists 1 files but test.losses lists 0"),
        ("none", ["laws=[dmll]"], "unknown mixing law 'dmll'"),
        ("none", ["cv_folds=1", "test.mixtures=[]", "test.losses=[]"], "cv_folds=1 is invalid"),
        ("none", ["headline=loss_wbe"], "headline='loss_wbe' is not a target of the loss file"),
    ],
    ids=["mismatched-index", "missing-domain", "missing-domain-sums", "no-train-losses", "repeated-law", "unpaired-test",
         "unknown-law", "bad-folds", "bad-headline"],
)
def test_bad_input_exits_2(tables, tmp_path, damage, extra, message):
    train, first, _ = tables
    if damage == "mismatch":
        drop_first_loss_row(first[1])
    if damage == "domain":
        drop_domain_column(first[0])
    if damage == "domain-sums":
        drop_domain_column(first[0], keep_sums=False)
    result = mixbench(*table_args(train, [first]), *extra, f"out={tmp_path / 'r.csv'}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_swapped_test_files_are_named(tables, tmp_path):
    train, first, _ = tables
    result = mixbench(*table_args(train, [(first[1], first[0])]), "laws=[linear]", f"out={tmp_path / 'r.csv'}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"mixture file {first[1]} looks like a loss table (column names such as 'loss_web'" in result.stderr
    assert f"loss file {first[0]} looks like a mixture table" in result.stderr
    assert "Swap the values of test.mixtures and test.losses." in result.stderr
    assert "renormalize" not in result.stderr


def test_missing_file_is_named(tables, tmp_path):
    train, _, _ = tables
    missing = tmp_path / "nowhere" / "test_mixture.csv"
    result = mixbench(*table_args(train), f"test.mixtures=[{missing}]", f"test.losses=[{train[1]}]", cwd=tmp_path)
    assert result.returncode == 2
    assert f"mixture file {missing} not found" in result.stderr


def test_sweep_and_tables_conflict(tables, tmp_path):
    train, _, _ = tables
    result = mixbench(*table_args(train), "experiment=laws_static_sim", cwd=tmp_path)
    assert result.returncode == 2
    assert "both experiment= and train.mixtures= are set" in result.stderr


@pytest.mark.skipif(not (REGMIX / "train_mixture_1m.csv").is_file(), reason=f"RegMix run tables not found in {REGMIX}")
def test_regmix_swapped_train_files(tmp_path):
    mixtures, losses = REGMIX / "train_mixture_1m.csv", REGMIX / "train_pile_loss_1m.csv"
    result = mixbench(
        f"train.mixtures={losses}", f"train.losses={mixtures}",
        f"test.mixtures=[{REGMIX / 'test_mixture_1m.csv'}]", f"test.losses=[{REGMIX / 'test_pile_loss_1m.csv'}]",
        "laws=[linear]", f"out={tmp_path / 'r.csv'}", cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"mixture file {losses} looks like a loss table" in result.stderr
    assert f"loss file {mixtures} looks like a mixture table (every row sums to 1)" in result.stderr
    assert "Swap the values of train.mixtures and train.losses." in result.stderr
    assert "renormalize" not in result.stderr
    assert not (tmp_path / "r.csv").exists()


@pytest.mark.skipif(not (REGMIX / "train_mixture_1m.csv").is_file(), reason=f"RegMix run tables not found in {REGMIX}")
def test_regmix_tables_through_cli(tmp_path):
    out = tmp_path / "regmix.csv"
    result = mixbench(
        f"train.mixtures={REGMIX / 'train_mixture_1m.csv'}", f"train.losses={REGMIX / 'train_pile_loss_1m.csv'}",
        f"test.mixtures=[{REGMIX / 'test_mixture_1m.csv'}]", f"test.losses=[{REGMIX / 'test_pile_loss_1m.csv'}]",
        "laws=[linear,dml,trees]", f"headline={PILE_CC}", f"out={out}", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_report(out)
    spearman = {row["law"]: float(row["spearman"]) for row in rows if row["target"] == PILE_CC}
    assert spearman["linear"] == pytest.approx(0.90, abs=0.01)
    assert spearman["dml"] >= 0.95
    assert spearman["trees"] >= 0.98
    for law in ("linear", "dml", "trees"):
        scored = [row for row in rows if row["law"] == law and row["status"] == "ok"]
        assert len(scored) == 13
        assert f"| {law} | test_mixture_1m.csv | 512 | 256 |" in result.stdout
    assert "| 13 | 0 |" in result.stdout


def test_dynamic_law_rejected_on_tables(tables, tmp_path):
    train, first, _ = tables
    result = mixbench(*table_args(train, [first]), "laws=[linear,dynamic]", f"out={tmp_path / 'r.csv'}", cwd=tmp_path)
    assert result.returncode == 2
    assert "laws=[linear,dynamic] lists 'dynamic', a dynamic law" in result.stderr
    assert "Use static laws (dml, lightgbm, linear, trees)" in result.stderr


def test_cv_folds_beside_test_sets(tables, tmp_path):
    train, first, _ = tables
    out = tmp_path / "both.csv"
    result = mixbench(*table_args(train, [first]), "laws=[linear]", "cv_folds=4", f"out={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_report(out)
    assert sorted({row["test_set"] for row in rows}) == ["cv", "first_mixture.csv"]
    assert {row["cv_folds"] for row in rows if row["test_set"] == "cv"} == {"4"}

    # Without cv_folds, a test set is scored alone.
    result = mixbench(*table_args(train, [first]), "laws=[linear]", f"out={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {row["test_set"] for row in read_report(out)} == {"first_mixture.csv"}


def test_nothing_scorable_names_reason(tmp_path):
    train = write_runs(tmp_path, "train", 3, seed=0)
    result = mixbench(*table_args(train), "laws=[dml]", "cv_folds=3", f"out={tmp_path / 'r.csv'}", cwd=tmp_path)
    assert result.returncode == 2
    assert "(the dml law needs at least 4 runs for 3 domains, a fold has 2)" in result.stderr


@pytest.mark.parametrize("case", ["input", "markdown", "folder", "read-only"])
def test_bad_out_is_rejected_before_fitting(tables, tmp_path, read_only, case):
    from mixbench import api
    from mixbench.errors import ConfigError

    train, _, _ = tables
    out = {"input": train[0], "markdown": tmp_path / "report.md", "folder": tmp_path,
           "read-only": tmp_path / "locked" / "report.csv"}[case]
    (tmp_path / "locked").mkdir()
    read_only(tmp_path / "locked")
    before = train[0].read_bytes()
    message = {"input": r"would overwrite the input file .*train_mixture.csv \(train.mixtures\)",
               "markdown": r"must name the CSV report .*Use out=.*report.csv", "folder": r"is a folder",
               "read-only": r"report folder .*locked.* is not writable"}[case]

    with pytest.raises(ConfigError, match=message):
        api.laws(overrides=[*table_args(train), "laws=[linear]", f"out={out}"])
    assert train[0].read_bytes() == before
    assert not list(tmp_path.glob("*.md"))
