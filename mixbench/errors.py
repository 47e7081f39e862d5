"""Exceptions that mixbench raises for invalid input, each naming the bad value and the fix."""

import difflib
from collections.abc import Iterable


class MixbenchError(Exception):
    """Base class of every error mixbench raises on purpose."""


class ConfigError(MixbenchError, ValueError):
    """An invalid or conflicting setting, detected before any training starts."""


class MixtureError(ConfigError):
    """A mixture that is not a point of the probability simplex."""


class DataError(MixbenchError, ValueError):
    """A corpus, domain folder or token shard that is missing, too small or corrupt."""


class RunFailedError(MixbenchError, RuntimeError):
    """A run or method that failed: a loss that became NaN or infinite, or a method that raised.

    `rows` contains the table rows when a benchmark wrote its table before raising, else None.
    """

    def __init__(self, message: str, rows: list[dict] | None = None):
        super().__init__(message)
        self.rows = rows


def unknown_name_error(kind: str, name: str, known: Iterable[str], fix: str = "") -> ConfigError:
    """Build the error for an unknown name, listing the closest known names first."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    message = f"unknown {kind} {name!r}."
    if close:
        message += f" Did you mean {', '.join(repr(c) for c in close)}?"
    message += f" Known {kind}s: {', '.join(known) if known else '(none)'}."
    if fix:
        message += " " + fix
    return ConfigError(message)
