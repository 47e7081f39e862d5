"""Score mixing laws on run tables: fit on one table, measure predictions on held-out runs."""

import logging
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from mixbench.errors import ConfigError, DataError
from mixbench.law_accuracy.tables import RunTable
from mixbench.laws import MixingLaw, get_law

log = logging.getLogger(__name__)

METRICS = ("r2", "mae", "rmse", "spearman", "in_sample_r2")
# The test set of cross-validation rows, whose runs are the training runs themselves.
CV_TEST_SET = "cv"
_SEPARATORS = "_/.- "


def r2_score(y: np.ndarray, prediction: np.ndarray) -> float:
    """Return the coefficient of determination 1 - SS_res / SS_tot."""
    return float(1.0 - np.sum((y - prediction) ** 2) / np.sum((y - y.mean()) ** 2))


# Spearman's correlation of fewer points is always -1 or 1 (or undefined), so it is left blank.
MIN_SPEARMAN_POINTS = 3


def prediction_metrics(y: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    """Return R^2, MAE, RMSE and Spearman rank correlation of predictions against y (NaN below 3 points)."""
    error = prediction - y
    spearman = float(spearmanr(y, prediction)[0]) if len(y) >= MIN_SPEARMAN_POINTS else float("nan")
    return {
        # One run has no spread for R^2 to explain.
        "r2": r2_score(y, prediction) if len(y) >= 2 else float("nan"),
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "spearman": spearman,
    }


def _core_names(names: Sequence[str]) -> list[str]:
    """Strip the prefix and suffix that all names share, cut back to a separator."""
    if len(names) < 2:
        return list(names)
    prefix = os.path.commonprefix(list(names))
    suffix = os.path.commonprefix([name[::-1] for name in names])[::-1]
    cut_prefix = max((prefix.rfind(c) for c in _SEPARATORS), default=-1) + 1
    cut_suffix = min((suffix.find(c) for c in _SEPARATORS if c in suffix), default=len(suffix))
    end = len(suffix) - cut_suffix
    return [name[cut_prefix : len(name) - end if end else None] for name in names]


def match_targets_to_domains(domains: Sequence[str], targets: Sequence[str]) -> list[int | None]:
    """Return, per target, the index of the domain it evaluates, or None when unclear.

    A domain matches when its name, without the prefix and suffix shared by all domains,
    appears in the target name between separators (`train_the_pile_arxiv` matches
    `metric/the_pile_arxiv_val_loss`). The longest match wins; a tie gives None.
    """
    cores = _core_names(domains)
    matches = []
    for target in targets:
        found = [
            (len(core), j) for j, core in enumerate(cores)
            if core and re.search(rf"(?<![A-Za-z0-9]){re.escape(core)}(?![A-Za-z0-9])", target)
        ]
        found.sort(reverse=True)
        if found and (len(found) == 1 or found[0][0] > found[1][0]):
            matches.append(found[0][1])
        else:
            matches.append(None)
    return matches


def make_law(law: str | MixingLaw, seed: int) -> MixingLaw:
    """Return an unfitted law: a fresh copy of `law`, or the registered law of that name, seeded if it takes a seed."""
    if isinstance(law, MixingLaw):
        return type(law)(**law.get_params())
    made = get_law(law)
    if "seed" in made.get_params():
        made = get_law(law, seed=seed)
    return made


def _law_name(law: str | MixingLaw) -> str:
    return law.name if isinstance(law, MixingLaw) else str(law)


def law_labels(laws: Sequence[str | MixingLaw], seed: int = 0) -> list[str]:
    """Return each law's label in reports: its name, followed by the settings that tell it from same-named laws.

    `[get_law("trees", max_iter=5), get_law("trees", max_iter=200)]` gives `trees(max_iter=5)` and
    `trees(max_iter=200)`. Raise ConfigError when two laws have the same name and the same settings.
    """
    names = [_law_name(law) for law in laws]
    params = [make_law(law, seed).get_params() for law in laws]
    labels = []
    for name, own in zip(names, params):
        same = [other for other, other_name in zip(params, names) if other_name == name]
        if len(same) == 1:
            labels.append(name)
            continue
        differing = [key for key in own if any(other.get(key) != own[key] for other in same)]
        if not differing:
            raise ConfigError(f"the laws list {name} more than once with the same settings; list each law once, or give "
                              f"the copies different settings (get_law({name!r}, ...)) to compare them.")
        labels.append(f"{name}({', '.join(f'{key}={own[key]!r}' for key in differing)})")
    return labels


def _fit_one(law: MixingLaw, table: RunTable, target: int, own: int | None) -> MixingLaw:
    fit_params = {"own_domains": [own]} if law.name == "dml" else {}
    return law.fit(table.P, table.L[:, [target]], **fit_params)


def fit_status(law: MixingLaw, n_fit: int, m: int) -> str:
    """Return "ok", or a status saying that a parametric law was fitted on no more runs than it has parameters.

    Such a fit can pass through every run it saw, so nothing bounds its predictions elsewhere:
    a log-linear law fitted that way once predicted 7e11 for a loss of 3.7. Laws whose fewest
    runs exceed their parameter count (trees) are not concerned.
    """
    parameters = law.n_params(m)
    if law.min_runs(m) == parameters and n_fit <= parameters:
        return (f"exactly determined: the {law.name} law has {parameters} parameters per target for {m} domains and "
                f"was fitted on {n_fit} runs, so its predictions are not constrained; fit on more runs")
    return "ok"


def _skip_reason(law: MixingLaw, table: RunTable, target: int) -> str | None:
    k, m = table.P.shape
    if k < law.min_runs(m):
        return f"skipped: the {law.name} law needs at least {law.min_runs(m)} runs for {m} domains, got {k}"
    if np.ptp(table.L[:, target]) == 0:
        return "skipped: constant loss in the training runs"
    return None


def align_domains(train: RunTable, test: RunTable) -> RunTable:
    """Return `test` with its mixture columns in the order of `train`'s domains.

    Raise DataError naming the columns that one table has and the other lacks.
    """
    if test.domains == train.domains:
        return test
    missing = [d for d in train.domains if d not in test.domains]
    extra = [d for d in test.domains if d not in train.domains]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing domain columns {', '.join(missing)}")
        if extra:
            parts.append(f"extra domain columns {', '.join(extra)}")
        raise DataError(
            f"test table {test.name!r} has {' and '.join(parts)} compared with train table {train.name!r}; "
            f"both tables need the same domain columns."
        )
    order = [test.domains.index(d) for d in train.domains]
    return RunTable(train.domains, test.targets, test.P[:, order], test.L, test.index, test.name)


def _row(law: str, target: str, test_set: str, n_train: int, n_test: int, cv_folds: int | None = None,
         **values: Any) -> dict[str, Any]:
    row = {"law": law, "target": target, "test_set": test_set, "n_train": n_train, "n_test": n_test}
    if cv_folds is not None:
        row["cv_folds"] = cv_folds
    row.update({metric: values.get(metric) for metric in METRICS})
    row["status"] = values.get("status", "ok")
    return row


def score_laws(
    train: RunTable,
    tests: Sequence[RunTable],
    laws: Sequence[str | MixingLaw],
    seed: int = 0,
    predictions: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Fit each law on `train`, one target at a time, and score it on every table in `tests`.

    Return one row per law, target and test set with keys law, target, test_set, n_train,
    n_test, r2, mae, rmse, spearman, in_sample_r2 and status. A row that cannot be scored
    (too few runs for the law, constant loss, a target absent from the test table) has
    status "skipped: <reason>" and None metrics. `seed` seeds every law that has one.
    When `predictions` is a list, one entry per scored test run is appended to it (see
    `prediction_entries`).
    Raise ConfigError for an unknown law, or for "lightgbm" without the lightgbm package,
    and DataError when the tables have different domain columns.
    """
    if isinstance(tests, RunTable):
        tests = [tests]
    tests = [align_domains(train, test) for test in tests]
    for test in tests:
        _warn_repeated_mixtures(train, test)
    own_domains = match_targets_to_domains(train.domains, train.targets)
    rows = []
    for law_spec, label in zip(laws, law_labels(laws, seed)):
        for i, target in enumerate(train.targets):
            law = make_law(law_spec, seed)
            reason = _skip_reason(law, train, i)
            fitted = None if reason else _fit_one(law, train, i, own_domains[i])
            in_sample = None if fitted is None else r2_score(train.L[:, i], fitted.predict(train.P)[:, 0])
            for test in tests:
                common = dict(law=label, target=target, test_set=test.name, n_train=len(train), n_test=len(test))
                if reason:
                    rows.append(_row(**common, status=reason))
                elif target not in test.targets:
                    rows.append(_row(**common, in_sample_r2=in_sample, status="skipped: target missing from the test table"))
                else:
                    y = test.L[:, test.targets.index(target)]
                    if len(y) > 1 and np.ptp(y) == 0:
                        rows.append(_row(**common, in_sample_r2=in_sample, status="skipped: constant loss in the test runs"))
                    else:
                        predicted = fitted.predict(test.P)[:, 0]
                        rows.append(_row(**common, **prediction_metrics(y, predicted), in_sample_r2=in_sample,
                                         status=fit_status(law, len(train), len(train.domains))))
                        if predictions is not None:
                            predictions += prediction_entries(label, target, test.name, test.index, y, predicted)
    return rows


def _warn_repeated_mixtures(train: RunTable, test: RunTable) -> None:
    """Warn when test runs have the mixture of a training run: their scores then measure no prediction."""
    seen = {tuple(row) for row in np.round(train.P, 9)}
    repeated = sum(tuple(row) in seen for row in np.round(test.P, 9))
    if repeated:
        log.warning(
            "%d of the %d runs of test set %s have a mixture that is also in the training table %s, so a law is scored "
            "on mixtures it was fitted on%s; hold out runs of other mixtures.", repeated, len(test), test.name, train.name,
            " (the test set repeats the training runs)" if repeated == len(test) == len(train) else "",
        )


def prediction_entries(law: str, target: str, test_set: str, runs: Sequence, actual: np.ndarray, predicted: np.ndarray) -> list[dict[str, Any]]:
    """Return one entry per test run: law, target, test_set, run (its index), actual and predicted value."""
    return [
        {"law": law, "target": target, "test_set": test_set, "run": run, "actual": float(y), "predicted": float(p)}
        for run, y, p in zip(runs, actual, predicted)
    ]


def cross_validate(
    table: RunTable,
    laws: Sequence[str | MixingLaw],
    k: int = 5,
    seed: int = 0,
    test_set: str | None = None,
    predictions: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Score laws by k-fold cross-validation on one table, for when no held-out table exists.

    Each run is predicted once, by the law fitted on the other folds (shuffled with `seed`),
    and the metrics are computed over all those out-of-fold predictions. n_train is the
    smallest training fold; in_sample_r2 is the mean over folds. Rows have the keys of
    `score_laws`, with `test_set` (by default "cv", as in `mixbench laws` reports) and
    `cv_folds` (k). When `predictions` is a list, each run's out-of-fold prediction is
    appended to it.
    """
    if not isinstance(k, (int, np.integer)) or not 2 <= k <= len(table):
        raise ConfigError(f"k={k!r} folds must be an integer between 2 and the number of runs ({len(table)}).")
    order = np.random.default_rng(seed).permutation(len(table))
    folds = np.array_split(order, k)
    n_train = len(table) - max(fold.size for fold in folds)
    test_set = test_set or CV_TEST_SET
    own_domains = match_targets_to_domains(table.domains, table.targets)
    rows = []
    for law_spec, label in zip(laws, law_labels(laws, seed)):
        for i, target in enumerate(table.targets):
            common = dict(law=label, target=target, test_set=test_set, n_train=n_train, n_test=len(table), cv_folds=k)
            reason = _cv_skip_reason(make_law(law_spec, seed), table, i, n_train)
            if reason:
                rows.append(_row(**common, status=reason))
                continue
            prediction = np.empty(len(table))
            in_sample = []
            for fold in folds:
                train = table.subset(np.setdiff1d(order, fold))
                fitted = _fit_one(make_law(law_spec, seed), train, i, own_domains[i])
                prediction[fold] = fitted.predict(table.P[fold])[:, 0]
                in_sample.append(r2_score(train.L[:, i], fitted.predict(train.P)[:, 0]))
            metrics = prediction_metrics(table.L[:, i], prediction)
            if predictions is not None:
                predictions += prediction_entries(label, target, test_set, table.index, table.L[:, i], prediction)
            status = fit_status(make_law(law_spec, seed), n_train, len(table.domains))
            rows.append(_row(**common, **metrics, in_sample_r2=float(np.mean(in_sample)), status=status))
    return rows


def _cv_skip_reason(law: MixingLaw, table: RunTable, target: int, n_train: int) -> str | None:
    m = table.P.shape[1]
    if n_train < law.min_runs(m):
        return f"skipped: the {law.name} law needs at least {law.min_runs(m)} runs for {m} domains, a fold has {n_train}"
    if np.ptp(table.L[:, target]) == 0:
        return "skipped: constant loss in the runs"
    return None
