"""Tests for run tables and law scoring on small tables written to a temporary folder."""

import csv
from pathlib import Path

import numpy as np
import pytest

from mixbench.errors import DataError
from mixbench.law_accuracy import (
    REPORT_COLUMNS,
    RunTable,
    cross_validate,
    match_targets_to_domains,
    read_run_table,
    score_laws,
    summary_markdown,
    write_report,
)

DOMAINS = ("train_a", "train_b", "train_c")
TARGETS = ("loss/a_val", "loss/b_val")
W = np.array([[3.0, 2.0, 1.0], [1.0, 4.0, 2.5]])


def write_csv(path: Path, header, rows):
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_table(folder: Path, P, L, index=None, loss_order=None, stem="runs"):
    index = list(range(1, len(P) + 1)) if index is None else index
    loss_order = range(len(P)) if loss_order is None else loss_order
    mixtures = write_csv(folder / f"{stem}_mixture.csv", ["index", *DOMAINS], [[i, *p] for i, p in zip(index, P)])
    losses = write_csv(folder / f"{stem}_loss.csv", ["index", *TARGETS], [[index[k], *L[k]] for k in loss_order])
    return mixtures, losses


def linear_table(n, seed, name="runs"):
    P = np.random.default_rng(seed).dirichlet(np.ones(3), n)
    return RunTable(DOMAINS, TARGETS, P, 0.5 + P @ W.T, tuple(range(n)), name)


def test_read_joins_on_index(tmp_path):
    P = np.random.default_rng(0).dirichlet(np.ones(3), 6).round(6)
    L = 0.5 + P @ W.T
    table = read_run_table(*write_table(tmp_path, P, L, loss_order=[5, 3, 1, 0, 2, 4]))
    assert table.domains == DOMAINS
    assert table.targets == TARGETS
    assert table.index == (1, 2, 3, 4, 5, 6)
    assert table.name == "runs_mixture.csv"  # the file name, as `mixbench laws` reports label test sets
    np.testing.assert_allclose(table.L, L)
    np.testing.assert_allclose(table.P, P)


def test_read_mismatched_indices(tmp_path):
    mixtures = write_csv(tmp_path / "m.csv", ["index", *DOMAINS], [[1, 1, 0, 0], [2, 0, 1, 0], [3, 0, 0, 1]])
    losses = write_csv(tmp_path / "l.csv", ["index", *TARGETS], [[1, 1, 1], [2, 1, 1], [9, 1, 1]])
    with pytest.raises(DataError, match=r"index 3 is in m\.csv but missing from l\.csv; index 9 is in l\.csv"):
        read_run_table(mixtures, losses)


def test_read_missing_index_column(tmp_path):
    mixtures = write_csv(tmp_path / "m.csv", ["run", *DOMAINS], [[1, 1, 0, 0]])
    losses = write_csv(tmp_path / "l.csv", ["index", *TARGETS], [[1, 1, 1]])
    with pytest.raises(DataError, match="has no 'index' column"):
        read_run_table(mixtures, losses)


def test_read_duplicate_index(tmp_path):
    mixtures = write_csv(tmp_path / "m.csv", ["index", *DOMAINS], [[1, 1, 0, 0], [1, 0, 1, 0]])
    losses = write_csv(tmp_path / "l.csv", ["index", *TARGETS], [[1, 1, 1]])
    with pytest.raises(DataError, match=r"repeats index 1 \(lines 2 and 3\)"):
        read_run_table(mixtures, losses)


def test_read_nan_loss(tmp_path):
    mixtures = write_csv(tmp_path / "m.csv", ["index", *DOMAINS], [[1, 1, 0, 0], [2, 0, 1, 0]])
    losses = write_csv(tmp_path / "l.csv", ["index", *TARGETS], [[1, 1, 1], [2, "nan", 1]])
    with pytest.raises(DataError, match="index 2 column loss/a_val"):
        read_run_table(mixtures, losses)


def test_read_empty_cell(tmp_path):
    mixtures = write_csv(tmp_path / "m.csv", ["index", *DOMAINS], [[1, 1, "", 0]])
    losses = write_csv(tmp_path / "l.csv", ["index", *TARGETS], [[1, 1, 1]])
    with pytest.raises(DataError, match="index 1 column train_b"):
        read_run_table(mixtures, losses)


def test_read_non_numeric_cell(tmp_path):
    mixtures = write_csv(tmp_path / "m.csv", ["index", *DOMAINS], [[1, 1, "x", 0]])
    losses = write_csv(tmp_path / "l.csv", ["index", *TARGETS], [[1, 1, 1]])
    with pytest.raises(DataError, match="'x' is not a number"):
        read_run_table(mixtures, losses)


def test_read_rows_off_simplex(tmp_path):
    rows = [[1, 0.5, 0.5, 0.0], [2, 0.6, 0.5, 0.0], [3, 0.2, 0.2, 0.2]]
    mixtures = write_csv(tmp_path / "m.csv", ["index", *DOMAINS], rows)
    losses = write_csv(tmp_path / "l.csv", ["index", *TARGETS], [[i, 1, 1] for i in (1, 2, 3)])
    with pytest.raises(DataError, match=r"2 rows .*index 2 sums to 1\.1, index 3 sums to 0\.6.*renormalize=True"):
        read_run_table(mixtures, losses)
    table = read_run_table(mixtures, losses, renormalize=True)
    np.testing.assert_allclose(table.P.sum(axis=1), 1.0)
    np.testing.assert_allclose(table.P[2], [1 / 3, 1 / 3, 1 / 3])


@pytest.mark.parametrize("loss_columns", [TARGETS, ("a_val", "b_val")], ids=["loss-names", "plain-names"])
@pytest.mark.parametrize("renormalize", [False, True])
def test_read_swapped_files(tmp_path, loss_columns, renormalize):
    P = np.random.default_rng(0).dirichlet(np.ones(3), 6).round(6)
    L = 0.5 + P @ W.T
    mixtures = write_csv(tmp_path / "m.csv", ["index", *DOMAINS], [[i, *p] for i, p in enumerate(P)])
    losses = write_csv(tmp_path / "l.csv", ["index", *loss_columns], [[i, *row] for i, row in enumerate(L)])
    with pytest.raises(DataError) as raised:
        read_run_table(losses, mixtures, renormalize=renormalize)
    message = str(raised.value)
    assert f"mixture file {losses} looks like a loss table" in message
    assert f"loss file {mixtures} looks like a mixture table" in message
    assert "Swap the values of mixtures_csv and losses_csv." in message
    assert "renormalize" not in message


def test_read_swapped_names_settings(tmp_path):
    P = np.random.default_rng(1).dirichlet(np.ones(3), 4).round(6)
    mixtures, losses = write_table(tmp_path, P, 0.5 + P @ W.T)
    with pytest.raises(DataError, match="Swap the values of test.mixtures and test.losses"):
        read_run_table(losses, mixtures, settings=("test.mixtures", "test.losses"))


def test_read_loss_table_as_mixtures(tmp_path):
    # The same loss file for both paths: nothing to swap, and renormalizing losses gives no mixtures.
    P = np.random.default_rng(2).dirichlet(np.ones(3), 4).round(6)
    _, losses = write_table(tmp_path, P, 0.5 + P @ W.T)
    with pytest.raises(DataError) as raised:
        read_run_table(losses, losses)
    message = str(raised.value)
    assert "4 rows that do not sum to 1" in message
    assert "looks like a loss table (column names such as 'loss/a_val')" in message
    assert "Set mixtures_csv to a CSV file of mixture weights" in message
    assert "renormalize" not in message


@pytest.mark.parametrize("domains", [("glossary", "code", "web"), DOMAINS], ids=["loss-inside-word", "counts"])
def test_read_unnormalized_weights_keep_advice(tmp_path, domains):
    # Token counts as weights are above 1, and "glossary" contains "loss": neither makes a loss table.
    rows = [[1, 3.0, 2.0, 1.0], [2, 1.0, 1.0, 2.0]]
    mixtures = write_csv(tmp_path / "m.csv", ["index", *domains], rows)
    losses = write_csv(tmp_path / "l.csv", ["index", *TARGETS], [[1, 2.5, 3.1], [2, 2.7, 2.9]])
    with pytest.raises(DataError, match=r"2 rows that do not sum to 1 .*pass renormalize=True"):
        read_run_table(mixtures, losses)
    np.testing.assert_allclose(read_run_table(mixtures, losses, renormalize=True).P[0], [0.5, 1 / 3, 1 / 6])


def test_read_accepts_rounding(tmp_path):
    mixtures = write_csv(tmp_path / "m.csv", ["index", *DOMAINS], [[1, 0.333, 0.333, 0.333]])
    losses = write_csv(tmp_path / "l.csv", ["index", *TARGETS], [[1, 1, 1]])
    assert read_run_table(mixtures, losses).P.shape == (1, 3)


def test_read_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_run_table(tmp_path / "absent.csv", tmp_path / "absent_loss.csv")


def test_score_rows_and_metrics():
    rows = score_laws(linear_table(40, 0, "train"), [linear_table(30, 1, "test")], ["linear", "dml"])
    assert len(rows) == 4
    expected_keys = {*REPORT_COLUMNS, "rmse", "in_sample_r2", "status"}
    for row in rows:
        assert set(row) == expected_keys
        assert row["status"] == "ok"
        assert row["n_train"] == 40
        assert row["n_test"] == 30
    linear = [row for row in rows if row["law"] == "linear"]
    assert all(row["r2"] > 0.999999 and row["spearman"] == pytest.approx(1.0) for row in linear)
    assert all(row["mae"] < 1e-9 for row in linear)


def test_score_several_test_sets():
    rows = score_laws(linear_table(20, 0), [linear_table(10, 1, "a"), linear_table(10, 2, "b")], ["linear"])
    assert [(row["target"], row["test_set"]) for row in rows] == [
        (TARGETS[0], "a"), (TARGETS[0], "b"), (TARGETS[1], "a"), (TARGETS[1], "b"),
    ]


def test_score_skips_constant_target():
    train = linear_table(20, 0)
    L = train.L.copy()
    L[:, 1] = 3.0
    train = RunTable(train.domains, train.targets, train.P, L, train.index, "train")
    rows = score_laws(train, [linear_table(10, 1, "test")], ["linear"])
    assert rows[0]["status"] == "ok"
    assert rows[1]["status"] == "skipped: constant loss in the training runs"
    assert rows[1]["r2"] is None
    assert rows[1]["spearman"] is None


def test_score_skips_too_few_runs():
    rows = score_laws(linear_table(3, 0), [linear_table(10, 1, "test")], ["linear", "dml"])
    by_law = {row["law"]: row for row in rows if row["target"] == TARGETS[0]}
    # Three runs fix the linear law's three parameters, so it is scored and flagged.
    assert by_law["linear"]["status"].startswith("exactly determined: the linear law has 3 parameters per target")
    assert by_law["linear"]["mae"] is not None
    assert by_law["dml"]["status"] == "skipped: the dml law needs at least 4 runs for 3 domains, got 3"
    assert by_law["dml"]["mae"] is None


def test_score_skips_target_missing_from_test():
    test = linear_table(10, 1, "test")
    test = RunTable(test.domains, ("loss/a_val", "loss/other"), test.P, test.L, test.index, "test")
    rows = score_laws(linear_table(20, 0), [test], ["linear"])
    assert rows[1]["status"] == "skipped: target missing from the test table"
    assert rows[1]["in_sample_r2"] > 0.999


def test_score_names_missing_domain_column():
    test = linear_table(10, 1, "test")
    test = RunTable(("train_a", "train_b", "train_x"), TARGETS, test.P, test.L, test.index, "test")
    with pytest.raises(DataError, match="missing domain columns train_c and extra domain columns train_x"):
        score_laws(linear_table(20, 0), [test], ["linear"])


def test_score_aligns_domain_order():
    test = linear_table(10, 1, "test")
    shuffled = RunTable(("train_c", "train_a", "train_b"), TARGETS, test.P[:, [2, 0, 1]], test.L, test.index, "test")
    train = linear_table(20, 0)
    first = score_laws(train, [test], ["linear"])
    second = score_laws(train, [shuffled], ["linear"])
    assert [row["r2"] for row in first] == pytest.approx([row["r2"] for row in second])


def test_cross_validate_rows():
    rows = cross_validate(linear_table(50, 0, "sweep"), ["linear", "trees"], k=5, seed=0)
    linear = [row for row in rows if row["law"] == "linear"]
    assert [(row["test_set"], row["cv_folds"]) for row in linear] == [("cv", 5)] * 2
    assert all(row["r2"] > 0.999999 for row in linear)
    assert all(row["n_train"] == 40 and row["n_test"] == 50 for row in rows)
    trees = [row for row in rows if row["law"] == "trees"]
    assert all(row["status"] == "ok" for row in trees)


def test_cross_validate_skips_small_folds():
    rows = cross_validate(linear_table(12, 0), ["trees"], k=3)
    assert all(row["status"].startswith("skipped: the trees law needs at least 40 runs") for row in rows)


def test_cross_validate_rejects_bad_k():
    with pytest.raises(ValueError, match="folds"):
        cross_validate(linear_table(5, 0), ["linear"], k=1)


def test_write_report_columns_and_atomicity(tmp_path):
    rows = score_laws(linear_table(20, 0), [linear_table(10, 1, "test")], ["linear"])
    rows.append({**rows[0], "target": "loss/c_val", "r2": None, "status": "skipped: constant loss in the training runs"})
    out = write_report(rows, tmp_path / "sub" / "report.csv")
    with out.open() as handle:
        table = list(csv.reader(handle))
    assert table[0][:8] == ["law", "target", "test_set", "n_train", "n_test", "r2", "mae", "spearman"]
    assert table[0][8:] == ["rmse", "in_sample_r2", "status"]
    assert len(table) == 4
    assert table[3][5] == ""
    assert [path.name for path in out.parent.iterdir()] == ["report.csv"]
    # Readable by others like every result file, with the CSV module's own line ends.
    assert out.stat().st_mode & 0o777 == 0o644
    assert out.read_bytes().startswith(b"law,target,test_set,n_train,n_test,r2,mae,spearman,rmse,in_sample_r2,status\r\n")


def test_summary_markdown_headline():
    rows = score_laws(linear_table(20, 0), [linear_table(10, 1, "test")], ["linear"])
    text = summary_markdown(rows, headline="loss/a_val")
    lines = text.strip().splitlines()
    assert lines[0] == "| law | test set | loss/a_val Spearman | loss/a_val R^2 | mean Spearman | mean R^2 | targets scored | skipped |"
    assert lines[2] == "| linear | test | 1.000 | 1.000 | 1.000 | 1.000 | 2 | 0 |"
    plain = summary_markdown(rows)
    assert "mean Spearman" in plain
    assert "loss/a_val" not in plain


def test_match_targets_to_domains():
    domains = ["train_the_pile_arxiv", "train_the_pile_pile_cc", "train_the_pile_pubmed_central", "train_the_pile_cc"]
    targets = ["metric/the_pile_pile_cc_val_loss", "metric/the_pile_arxiv_val_loss", "metric/the_pile_books_val_loss"]
    assert match_targets_to_domains(domains, targets) == [1, 0, None]


def test_same_named_laws_are_labelled_by_their_settings():
    from mixbench.errors import ConfigError
    from mixbench.laws import get_law

    train, test = linear_table(20, 0), linear_table(10, 1, "test")
    rows = score_laws(train, [test], [get_law("linear", alpha=0.0), get_law("linear", alpha=10.0), "dml"])
    assert sorted({row["law"] for row in rows}) == ["dml", "linear(alpha=0.0)", "linear(alpha=10.0)"]
    # The heavy ridge penalty predicts worse: the two rows are two different fits.
    mae = {row["law"]: row["mae"] for row in rows if row["target"] == TARGETS[0]}
    assert mae["linear(alpha=10.0)"] > mae["linear(alpha=0.0)"]
    with pytest.raises(ConfigError, match="the laws list linear more than once with the same settings"):
        score_laws(train, [test], ["linear", get_law("linear")])
    with pytest.raises(ConfigError, match="the laws list linear more than once"):
        cross_validate(train, ["linear", "linear"], k=4)


def test_test_runs_with_training_mixtures_are_named(caplog):
    train = linear_table(20, 0)
    with caplog.at_level("WARNING", logger="mixbench.law_accuracy.scoring"):
        score_laws(train, [train], ["linear"])
    assert "20 of the 20 runs of test set runs have a mixture that is also in the training table" in caplog.text
    assert "(the test set repeats the training runs)" in caplog.text
    caplog.clear()
    score_laws(train, [linear_table(10, 1, "test")], ["linear"])
    assert "training table" not in caplog.text


def test_exactly_determined_folds_are_flagged():
    # 8 runs in 4 folds leave 6 to fit the linear law's 3 parameters; 4 runs in 4 folds leave 3.
    enough = cross_validate(linear_table(8, 0), ["linear"], k=4)
    assert {row["status"] for row in enough} == {"ok"}
    exact = cross_validate(linear_table(4, 0), ["linear"], k=4)
    assert {row["status"] for row in exact} == {
        "exactly determined: the linear law has 3 parameters per target for 3 domains and was fitted on 3 runs, so its "
        "predictions are not constrained; fit on more runs"}
    from mixbench.law_accuracy.report import averages_markdown

    assert "Exactly determined fits (linear on cv)" in averages_markdown(exact)
    assert "Exactly determined" not in averages_markdown(enough)


def test_one_test_run_gets_mae_and_the_reason():
    from mixbench.law_accuracy.command import mark_undefined

    rows = mark_undefined(score_laws(linear_table(20, 0), [linear_table(1, 1, "one")], ["linear"]))
    assert all(row["mae"] is not None and row["r2"] is None and row["spearman"] is None for row in rows)
    assert {row["status"] for row in rows} == {"partial: r2 needs 2 or more test runs and spearman 3, got 1"}


def test_read_names_missing_domain_before_row_sums(tmp_path):
    P = np.array([[0.2, 0.3, 0.5], [0.5, 0.1, 0.4], [0.3, 0.3, 0.4], [0.6, 0.4, 0.0]])
    mixtures, losses = write_table(tmp_path, P, 0.5 + P @ W.T)
    rows = list(csv.reader(mixtures.open()))
    write_csv(mixtures, rows[0][:-1], [row[:-1] for row in rows[1:]])
    with pytest.raises(DataError, match="has missing domain columns train_c compared with the training mixtures"):
        read_run_table(mixtures, losses, domains=DOMAINS)
    # Without the expected domains, only the sums can be checked.
    with pytest.raises(DataError, match="has 3 rows that do not sum to 1"):
        read_run_table(mixtures, losses)


def test_read_zero_row_is_not_sent_to_renormalize(tmp_path):
    P = np.array([[0.2, 0.3, 0.5], [0.0, 0.0, 0.0]])
    mixtures, losses = write_table(tmp_path, P, 0.5 + P @ W.T)
    with pytest.raises(DataError, match="has 1 row that does not sum to 1") as error:
        read_run_table(mixtures, losses)
    assert "the row at index 2 has all weights 0, which is not a mixture: drop those runs" in str(error.value)
    assert "renormalize" not in str(error.value)


def test_markdown_means_of_huge_predictions_use_exponents():
    from mixbench.law_accuracy.report import averages_markdown

    rows = [{"law": "dml", "test_set": "cv", "target": "loss", "n_train": 9, "n_test": 3, "r2": -9.78e42, "mae": 1.5e21,
             "rmse": 2.5e21, "spearman": 0.5, "in_sample_r2": 1.0, "status": "ok"}]
    line = averages_markdown(rows).splitlines()[2]

    # Every metric's cell stays short: exponents from 1e5 up, three decimals below.
    assert line == "| dml | cv | 9 | 3 | -9.78e+42 | 1.5e+21 | 2.5e+21 | 0.500 | 1.000 | 1 | 0 |"
