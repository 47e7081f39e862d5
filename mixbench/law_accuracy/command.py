"""The `mixbench laws` command: score mixing laws on run tables, or on sweeps of our own runs.

Without an experiment it reads published run tables: a mixture CSV and a loss CSV per set,
joined on `index`. It fits each law on the training set and scores it on every test set, or by
k-fold cross-validation when no test set is given. With `experiment=laws_static` or
`experiment=laws_dynamic` it trains a sweep first (see `sweeps` and `branch`).
"""

import difflib
import logging
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from mixbench.errors import ConfigError, DataError
from mixbench.law_accuracy.report import (
    averages_markdown,
    is_scored,
    predictions_path,
    summary_markdown,
    write_predictions,
    write_report,
)
from mixbench.law_accuracy.scoring import METRICS, MIN_SPEARMAN_POINTS, cross_validate, score_laws
from mixbench.law_accuracy.tables import RunTable, read_run_table
from mixbench.laws import LAWS, DynamicLaw, get_law
from mixbench.runs import require_writable, write_text_atomic

log = logging.getLogger(__name__)

# The laws scored on run tables when `laws` is null.
DEFAULT_TABLE_LAWS = ("linear", "dml", "trees")
# Folds of the cross-validation on run tables when no test set is given and cv_folds is null.
DEFAULT_CV_FOLDS = 5
# At most this many skipped rows are logged one by one, and the rest are counted.
MAX_LOGGED_SKIPS = 10
# At most this many distinct skip reasons are quoted in the error of a run that scored nothing.
MAX_SHOWN_REASONS = 3


# The values of experiment.sweep: what a law sweep trains and scores.
SWEEPS = ("static", "dynamic", "param")


def laws(cfg) -> list[dict[str, Any]]:
    """Run the command: a law sweep when `experiment.sweep` is set, else score the run tables."""
    experiment = cfg.get("experiment")
    if experiment is None:
        return score_tables(cfg)
    if cfg.get("train", {}).get("mixtures") is not None:
        raise ConfigError(
            "both experiment= and train.mixtures= are set; score published tables (train.mixtures, train.losses) "
            "or run a law sweep (experiment=laws_static or experiment=laws_dynamic), not both."
        )
    if cfg.get("laws") is not None:
        raise _top_level_laws_error(cfg.laws, experiment)
    sweep = experiment.get("sweep")
    if sweep == "static":
        from mixbench.law_accuracy.sweeps import run_static_sweep

        return run_static_sweep(cfg)
    if sweep == "dynamic":
        from mixbench.law_accuracy.branch import run_branch_sweep

        return run_branch_sweep(cfg)
    if sweep == "param":
        from mixbench.law_accuracy.param import run_param_sweep

        return run_param_sweep(cfg)
    if sweep is not None:
        close = difflib.get_close_matches(str(sweep), SWEEPS, n=1)
        hint = f" Did you mean experiment.sweep={close[0]}?" if close else ""
        raise ConfigError(f"experiment.sweep={sweep!r} is unknown; the law sweeps are {', '.join(SWEEPS)}.{hint}")
    raise ConfigError(
        f"experiment {experiment.get('name')!r} is not a law sweep (it sets no experiment.sweep); use "
        f"experiment=laws_static, laws_dynamic or laws_param, or score tables with train.mixtures=PATH train.losses=PATH."
    )


def _top_level_laws_error(value: Any, experiment) -> ConfigError:
    """Build the error for a top-level `laws=` given with a sweep, whose laws come from the experiment."""
    laws = _plain_list(value)
    if "laws" in experiment:
        fix = f"set experiment.laws={laws} instead"
    else:
        fix = (f"the experiment.sweep={experiment.get('sweep')} sweep fits only the dynamic law dL = -A p and takes "
               f"no law list, so drop laws={laws}")
    return ConfigError(f"laws={laws} chooses the laws scored on run tables, not in a law sweep; {fix}.")


def path_list(value: Any, key: str) -> list[str]:
    """Return a config value given as one path or a list of paths as a list of strings."""
    if value is None:
        return []
    if isinstance(value, (str, Path)):
        return [str(value)]
    if isinstance(value, (list, tuple, ListConfig)):
        return [str(item) for item in value]
    raise ConfigError(f"{key}={value!r} is invalid; give a path or a list of paths like [a.csv,b.csv].")


def _plain_list(value: Any) -> Any:
    """Return a list setting as Hydra would print it back: [a,b] (other values unchanged)."""
    if isinstance(value, (list, tuple, ListConfig)):
        return "[" + ",".join(str(item) for item in value) + "]"
    return value


def law_names(value: Any, key: str = "laws") -> list[str]:
    """Return the configured static law names after checking that each one exists (ConfigError otherwise).

    `key` is the setting that lists them (laws, experiment.laws), named in the errors.
    """
    names = path_list(value, key)
    if not names:
        raise ConfigError(f"{key}=[] is empty; list at least one law, e.g. {key}=[linear,dml,trees].")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"{key}={_plain_list(value)} lists {', '.join(repeated)} more than once; list each law once.")
    for name in names:
        get_law(name)
        if issubclass(LAWS[name], DynamicLaw):
            static = [law for law in sorted(LAWS) if not issubclass(LAWS[law], DynamicLaw)]
            raise ConfigError(
                f"{key}={_plain_list(value)} lists {name!r}, a dynamic law: it fits the loss changes dL = -A p of "
                f"children branched from one parent, not the final losses scored here. Use static laws "
                f"({', '.join(static)}), or score the dynamic law with experiment=laws_dynamic."
            )
    return names


def _read_tables(cfg) -> tuple[RunTable, list[RunTable]]:
    train = cfg.get("train") or {}
    mixtures, losses = train.get("mixtures"), train.get("losses")
    if (mixtures is None) != (losses is None):
        given, missing = ("train.mixtures", "train.losses") if losses is None else ("train.losses", "train.mixtures")
        raise ConfigError(
            f"{given} is set but {missing} is not; a run table is a pair of CSV files joined on their 'index' column, so "
            f"set {missing}=PATH too."
        )
    if mixtures is None:
        raise ConfigError(
            "no run table given; set train.mixtures=PATH and train.losses=PATH (CSV files joined on their "
            "'index' column), or run a sweep with experiment=laws_static or experiment=laws_dynamic."
        )
    test = cfg.get("test") or {}
    test_mixtures = path_list(test.get("mixtures"), "test.mixtures")
    test_losses = path_list(test.get("losses"), "test.losses")
    if len(test_mixtures) != len(test_losses):
        raise ConfigError(
            f"test.mixtures lists {len(test_mixtures)} files but test.losses lists {len(test_losses)}; "
            f"give one loss file per mixture file, in the same order."
        )
    renormalize = bool(cfg.get("renormalize", False))
    table = read_run_table(mixtures, losses, name=Path(mixtures).name, renormalize=renormalize,
                           settings=("train.mixtures", "train.losses"))
    names = [Path(path).name for path in test_mixtures]
    # Two test sets with the same file name in different folders are named by their full paths instead.
    names = [path if names.count(name) > 1 else name for path, name in zip(test_mixtures, names)]
    tests = [
        read_run_table(path, loss_path, name=name, renormalize=renormalize, settings=("test.mixtures", "test.losses"),
                       domains=table.domains)
        for path, loss_path, name in zip(test_mixtures, test_losses, names)
    ]
    return table, tests


def _cv_folds(value: Any, table: RunTable, has_tests: bool) -> int:
    """Return the number of cross-validation folds (0 for none), or raise ConfigError for an invalid `cv_folds`.

    null means DEFAULT_CV_FOLDS without a test set and none beside test sets. A number of folds
    beside test sets adds cross-validation rows, as experiment.cv_folds does in the sweeps.
    """
    if has_tests and value in (None, 0):
        return 0
    if value is None:
        if len(table) < 2:
            raise ConfigError(
                f"{table.name} has 1 run, too few to cross-validate on, and no test set is given; add runs, or give "
                f"held-out runs with test.mixtures=[PATH] test.losses=[PATH]."
            )
        # With fewer runs than the default folds, use leave-one-out, so that each law's own run count decides.
        return min(DEFAULT_CV_FOLDS, len(table))
    if not isinstance(value, int) or isinstance(value, bool) or not 2 <= value <= len(table):
        use = "0 or null for none, or" if has_tests else "with no test set the laws are cross-validated, which needs"
        raise ConfigError(
            f"cv_folds={value!r} is invalid; {use} an integer number of folds between 2 and the number of "
            f"training runs ({len(table)})."
        )
    return value


def cv_rows(table: RunTable, names: list[str], folds: int, seed: int,
            predictions: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Cross-validate the laws on `table`: rows with test set `cv` and their fold count, predictions appended."""
    return cross_validate(table, names, k=folds, seed=seed, predictions=predictions)


def mark_undefined(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Replace NaN metrics by None and record that in the row's status, so that no NaN passes silently.

    Spearman's correlation is undefined when a law predicts the same loss for every test run,
    and left blank with fewer than 3 test runs.
    """
    for row in rows:
        undefined = [key for key in METRICS if isinstance(row.get(key), float) and math.isnan(row[key])]
        for key in undefined:
            row[key] = None
        if not (undefined and is_scored(row)):
            continue
        runs = row.get("n_test") or 0
        if runs < 2 and set(undefined) <= {"r2", "spearman"}:
            partial = f"partial: r2 needs 2 or more test runs and spearman {MIN_SPEARMAN_POINTS}, got {runs}"
        elif undefined == ["spearman"] and runs < MIN_SPEARMAN_POINTS:
            partial = f"partial: spearman needs {MIN_SPEARMAN_POINTS} or more test runs, got {runs}"
        else:
            partial = f"partial: {', '.join(undefined)} undefined because the predictions or losses are constant"
        # A status that already flags the fit keeps its text after the partial one.
        status = str(row.get("status", "ok"))
        row["status"] = partial if status == "ok" else f"{partial}; {status}"
    return rows


def log_skipped(rows: list[dict[str, Any]]) -> None:
    """Log each row that could not be fully scored, up to MAX_LOGGED_SKIPS, then a count."""
    flagged = [row for row in rows if row.get("status", "ok") != "ok"]
    for row in flagged[:MAX_LOGGED_SKIPS]:
        log.warning("%s on %s (%s): %s", row["law"], row["target"], row["test_set"], row["status"])
    if len(flagged) > MAX_LOGGED_SKIPS:
        log.warning("%d more rows were skipped or partly scored; see the status column", len(flagged) - MAX_LOGGED_SKIPS)


def score_tables(cfg) -> list[dict[str, Any]]:
    """Score the configured laws on run tables, write `out` (CSV) and `out` with .md, and print the summary."""
    laws = cfg.get("laws")
    names = law_names(list(DEFAULT_TABLE_LAWS) if laws is None else laws)
    seed = int(cfg.get("seed", 0))
    table, tests = _read_tables(cfg)
    out = _report_path(cfg)
    headline = cfg.get("headline")
    if headline is not None and headline not in table.targets:
        raise ConfigError(f"headline={headline!r} is not a target of the loss file {cfg.train.losses}; its targets are "
                          f"{', '.join(table.targets)}.")

    log.info("fitting %s on %d runs of %s (%d domains, %d targets)", ", ".join(names), len(table), table.name,
             len(table.domains), len(table.targets))
    predictions: list[dict[str, Any]] = []
    folds = _cv_folds(cfg.get("cv_folds"), table, bool(tests))
    rows = score_laws(table, tests, names, seed=seed, predictions=predictions) if tests else []
    if folds:
        log.info("%d-fold cross-validation on the training runs%s", folds, " besides the test sets" if tests else "")
        rows += cv_rows(table, names, folds, seed, predictions)
    rows = mark_undefined(rows)

    write_report(rows, out)
    if predictions:
        write_predictions(predictions, predictions_path(out))
    markdown = _tables_markdown(table, tests, folds, rows, headline)
    write_text_atomic(out.with_suffix(".md"), markdown)
    print(markdown, end="")
    log_skipped(rows)
    log.info("wrote %s and %s", out, out.with_suffix(".md"))
    fewer = "" if "linear" in names else " or choose laws that need fewer runs (laws=[linear] needs the fewest)"
    require_scored(rows, out, f"add training runs{fewer}")
    return rows


def _tables_markdown(table: RunTable, tests: list[RunTable], folds: int, rows: list[dict[str, Any]],
                     headline: str | None) -> str:
    """Return the run-table report in Markdown: what was fitted and scored, then the two summary tables."""
    scored_by = []
    if tests:
        scored_by.append(f"scored on {', '.join(test.name for test in tests)}")
    if folds:
        scored_by.append(f"by {folds}-fold cross-validation (test set `cv`)")
    fitted = f"Fitted on {len(table)} runs ({len(table.domains)} domains, {len(table.targets)} targets)"
    lines = [
        f"# Mixing laws on run tables: {table.name}",
        "",
        f"{fitted}, {' and '.join(scored_by)}." if scored_by else f"{fitted}.",
        "",
        "## Per law and test set",
        "",
        summary_markdown(rows, headline=headline),
        "## Averages over targets",
        "",
        averages_markdown(rows),
    ]
    return "\n".join(lines)


def _report_path(cfg) -> Path:
    """Return `out`, checked before any fitting: a .csv path that names no input file, in a folder that can be written."""
    out = Path(str(cfg.get("out")))
    if out.is_dir():
        raise ConfigError(f"out={out} is a folder; give the report's file name, such as out={out / 'report.csv'}.")
    if out.suffix.lower() != ".csv":
        raise ConfigError(
            f"out={out} must name the CSV report (a path ending in .csv); the markdown summary and the predictions go "
            f"beside it as <name>.md and <name>_predictions.csv. Use out={out.with_suffix('.csv')}."
        )
    written = {out.resolve(): "out", out.with_suffix(".md").resolve(): "its markdown summary",
               predictions_path(out).resolve(): "its predictions file"}
    for key in ("train.mixtures", "train.losses", "test.mixtures", "test.losses"):
        group, _, field = key.partition(".")
        for path in path_list((cfg.get(group) or {}).get(field), key):
            if Path(path).resolve() in written:
                raise ConfigError(
                    f"out={out} would overwrite the input file {path} ({key}) with {written[Path(path).resolve()]}; "
                    f"write the report elsewhere, for example out={out.with_name(out.stem + '_report.csv')}."
                )
    require_writable(out.parent, "report", "set out=PATH to a file in a folder you can write to (results_dir moves the default).")
    return out


def require_scored(rows: list[dict[str, Any]], report: Path, fix: str) -> None:
    """Raise DataError when no row has metrics, naming the skip reasons, `fix` and the report that lists them.

    Call it after writing the report, so that the reasons stay on disk.
    """
    if any(is_scored(row) for row in rows):
        return
    reasons = sorted({str(row.get("status", "")).removeprefix("skipped: ") for row in rows})
    quoted = "; ".join(reasons[:MAX_SHOWN_REASONS]) + ("; ..." if len(reasons) > MAX_SHOWN_REASONS else "")
    raise DataError(
        f"no law could be scored on any target ({quoted}). To fix it, {fix}. The status column of {report} "
        f"gives the reason for each row."
    )


def plain(node: Any) -> Any:
    """Return a config node as plain Python containers."""
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node
