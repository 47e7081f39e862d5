"""Run tables: mixtures and final losses of many training runs, read from a pair of CSV files.

The mixture file has an `index` column and one weight column per domain. The loss file has
an `index` column and one loss column per target (evaluation set). Rows are joined on
`index`, so the two files may list the runs in different orders.
"""

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mixbench.errors import DataError

INDEX_COLUMN = "index"
ROW_SUM_TOLERANCE = 0.01
# Loss columns are named like "loss_web", "val/loss" or RegMix's "metric/the_pile_arxiv_val_loss".
# "loss" must not follow a letter, so that a domain such as "glossary" is not taken for a loss.
LOSS_COLUMN = re.compile(r"(?<![a-z])loss|^metric/", re.IGNORECASE)


@dataclass(frozen=True)
class RunTable:
    """Mixtures P (k, m) over `domains` and losses L (k, n) on `targets` of k runs, keyed by `index`."""

    domains: tuple[str, ...]
    targets: tuple[str, ...]
    P: np.ndarray
    L: np.ndarray
    index: tuple
    name: str

    def __len__(self) -> int:
        return len(self.index)

    def subset(self, rows, name: str | None = None) -> "RunTable":
        """Return the table restricted to the given row positions."""
        rows = np.asarray(rows)
        return RunTable(
            self.domains, self.targets, self.P[rows], self.L[rows],
            tuple(self.index[i] for i in rows), name or self.name,
        )


def _read_header(rows: list[list[str]], path: Path, kind: str) -> list[str]:
    """Return the header of a CSV file after checking its `index` column and column names."""
    if not rows:
        raise DataError(f"{kind} file {path} is empty; it needs a header with an '{INDEX_COLUMN}' column.")
    header = [name.strip() for name in rows[0]]
    if INDEX_COLUMN not in header:
        raise DataError(f"{kind} file {path} has no '{INDEX_COLUMN}' column (columns: {', '.join(header)}); "
                        f"add one that identifies each run.")
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise DataError(f"{kind} file {path} repeats the columns {', '.join(duplicated)}.")
    if len(header) < 2:
        raise DataError(f"{kind} file {path} has only the '{INDEX_COLUMN}' column and no data columns.")
    if len(rows) < 2:
        raise DataError(f"{kind} file {path} has a header but no runs.")
    return header


def _read_csv(path: Path, kind: str) -> tuple[list[str], dict, np.ndarray]:
    """Return (value columns, {index: row position}, values) of one CSV file."""
    if not path.is_file():
        raise DataError(f"{kind} file {path} not found.")
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    header = _read_header(rows, path, kind)
    key = header.index(INDEX_COLUMN)
    columns = [name for name in header if name != INDEX_COLUMN]

    positions: dict = {}
    values = np.empty((len(rows) - 1, len(columns)))
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataError(f"{kind} file {path} line {line} has {len(row)} fields but the header has {len(header)}.")
        index = _parse_index(row[key].strip())
        if index in positions:
            raise DataError(f"{kind} file {path} repeats index {index!r} (lines {positions[index] + 2} and {line}); "
                            f"each run needs a unique index.")
        positions[index] = line - 2
        cells = [cell for j, cell in enumerate(row) if j != key]
        for j, cell in enumerate(cells):
            try:
                values[line - 2, j] = float(cell) if cell.strip() else np.nan
            except ValueError:
                raise DataError(f"{kind} file {path} line {line}, column {columns[j]}: {cell!r} is not a number.") from None

    bad = np.argwhere(~np.isfinite(values))
    if bad.size:
        inverse = {position: index for index, position in positions.items()}
        cells = ", ".join(f"index {inverse[r]!r} column {columns[c]}" for r, c in bad[:5])
        raise DataError(f"{kind} file {path} has missing, NaN or infinite values ({cells}"
                        f"{', ...' if len(bad) > 5 else ''}); drop or fix those runs.")
    return columns, positions, values


def _parse_index(text: str):
    try:
        return int(text)
    except ValueError:
        return text


def _count(number: int, noun: str) -> str:
    """Return "1 row" or "3 rows": the count with its noun in the right number."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _describe(indices: list, limit: int = 10) -> str:
    shown = ", ".join(repr(index) for index in indices[:limit])
    return shown + (f" and {len(indices) - limit} more" if len(indices) > limit else "")


def read_run_table(
    mixtures_csv: str | Path,
    losses_csv: str | Path,
    *,
    name: str | None = None,
    renormalize: bool = False,
    settings: tuple[str, str] = ("mixtures_csv", "losses_csv"),
    domains: tuple[str, ...] | None = None,
) -> RunTable:
    """Read a run table from a mixture CSV and a loss CSV joined on their `index` column.

    Rows keep the order of the mixture file. Raise DataError for a missing `index` column,
    duplicate indices, indices present in only one file, empty, NaN or non-numeric cells,
    negative weights, or mixture rows whose sum is off 1 by more than 0.01. With
    `renormalize=True`, each mixture row is divided by its sum instead of being checked.
    Before those checks, and whatever `renormalize` is, raise DataError naming both files when
    they look swapped. That is when the mixture rows do not sum to 1 and have loss-like column
    names or values above 1, while every loss row sums to 1. `settings` names the arguments or
    config keys that gave the two paths, so that messages name the ones to change. `name`
    defaults to the mixture file's name. `domains`, when given (a training table's), are the
    domain columns the mixture file must have. A missing or extra column is named before the
    rows are checked, because a missing column also leaves rows that do not sum to 1.
    """
    mixtures_csv, losses_csv = Path(mixtures_csv), Path(losses_csv)
    columns, mixture_rows, P = _read_csv(mixtures_csv, "mixture")
    targets, loss_rows, L = _read_csv(losses_csv, "loss")
    _check_not_swapped(columns, P, L, (mixtures_csv, losses_csv), settings)
    if domains is not None:
        _check_domain_columns(columns, tuple(domains), mixtures_csv)
    only_mixtures = [index for index in mixture_rows if index not in loss_rows]
    only_losses = [index for index in loss_rows if index not in mixture_rows]
    if only_mixtures or only_losses:
        parts = []
        for indices, present, absent in ((only_mixtures, mixtures_csv, losses_csv), (only_losses, losses_csv, mixtures_csv)):
            if indices:
                verb = "index {} is" if len(indices) == 1 else "indices {} are"
                parts.append(f"{verb.format(_describe(indices))} in {present.name} but missing from {absent.name}")
        raise DataError("the mixture and loss files list different runs: " + "; ".join(parts) + ".")
    index = tuple(mixture_rows)
    L = L[[loss_rows[i] for i in index]]
    P = _check_weights(P, index, mixtures_csv, renormalize, columns, settings[0])
    return RunTable(tuple(columns), tuple(targets), P, L, index, name or mixtures_csv.name)


def _check_domain_columns(columns: list[str], domains: tuple[str, ...], path: Path) -> None:
    """Raise DataError when the mixture file's domain columns are not `domains` (in any order)."""
    missing = [domain for domain in domains if domain not in columns]
    extra = [column for column in columns if column not in domains]
    if missing or extra:
        parts = [f"{label} domain columns {', '.join(names)}" for label, names in (("missing", missing), ("extra", extra)) if names]
        raise DataError(f"mixture file {path} has {' and '.join(parts)} compared with the training mixtures; "
                        f"every mixture file needs the same domain columns.")


def _sums_to_one(values: np.ndarray) -> np.ndarray:
    """Return, per row, whether the row sums to 1 within ROW_SUM_TOLERANCE."""
    return np.abs(values.sum(axis=1) - 1.0) <= ROW_SUM_TOLERANCE


def _loss_columns(columns: list[str]) -> list[str]:
    return [name for name in columns if LOSS_COLUMN.search(name)]


def _loss_signs(columns: list[str], values: np.ndarray) -> list[str]:
    """Return the signs, in column names and values, that a table read as mixtures is a loss table."""
    signs = []
    named = _loss_columns(columns)
    if named:
        signs.append(f"column names such as {named[0]!r}")
    if values.max() > 1.0 + ROW_SUM_TOLERANCE:
        signs.append(f"values up to {values.max():.4g}, above 1")
    return signs


def _check_not_swapped(domains: list[str], P: np.ndarray, L: np.ndarray, paths: tuple[Path, Path],
                       settings: tuple[str, str]) -> None:
    """Raise DataError when the mixture file contains losses and the loss file contains mixtures."""
    if _sums_to_one(P).all():
        return
    signs = _loss_signs(domains, P)
    # One column cannot be a mixture over several domains, and its rows summing to 1 would only mean losses of 1.
    looks_like_mixtures = L.shape[1] > 1 and (L >= 0).all() and _sums_to_one(L).all()
    if signs and looks_like_mixtures:
        mixtures_csv, losses_csv = paths
        raise DataError(
            f"mixture file {mixtures_csv} looks like a loss table ({' and '.join(signs)}), and loss file "
            f"{losses_csv} looks like a mixture table (every row sums to 1). Swap the values of "
            f"{settings[0]} and {settings[1]}."
        )


def _check_weights(P: np.ndarray, index: tuple, path: Path, renormalize: bool, columns: list[str],
                   setting: str) -> np.ndarray:
    negative = [index[i] for i in np.flatnonzero(np.any(P < 0, axis=1))]
    if negative:
        raise DataError(f"mixture file {path} has negative weights at indices {_describe(negative)}.")
    totals = P.sum(axis=1)
    if renormalize:
        empty = [index[i] for i in np.flatnonzero(totals <= 0)]
        if empty:
            raise DataError(f"mixture file {path} has rows with all weights 0 at indices {_describe(empty)}.")
        return P / totals[:, None]
    off = np.flatnonzero(~_sums_to_one(P))
    if off.size:
        rows = ", ".join(f"index {index[i]!r} sums to {totals[i]:.4g}" for i in off[:10])
        verb = "does" if off.size == 1 else "do"
        problem = (f"mixture file {path} has {_count(off.size, 'row')} that {verb} not sum to 1 within {ROW_SUM_TOLERANCE} "
                   f"({rows}{', ...' if off.size > 10 else ''})")
        empty = [index[i] for i in np.flatnonzero(totals <= 0)]
        # A row of zeros has no sum to divide by, so renormalize=True would fail on it.
        if empty:
            rows_text = f"the row at index {empty[0]!r} has" if len(empty) == 1 else f"the rows at indices {_describe(empty)} have"
            raise DataError(f"{problem}; {rows_text} all weights 0, which is not a mixture: drop those runs.")
        named = _loss_columns(columns)
        # Dividing losses by their sum gives no mixtures, so the renormalize advice would mislead here.
        if named:
            raise DataError(f"{problem}, and it looks like a loss table (column names such as {named[0]!r}). "
                            f"Set {setting} to a CSV file of mixture weights, one column per domain.")
        raise DataError(f"{problem}; fix them, or pass renormalize=True to divide each row by its sum.")
    return P
