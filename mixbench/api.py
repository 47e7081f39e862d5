"""Call the mixbench commands from Python, with the same Hydra configs as the command line.

Each function composes conf/<command>.yaml with `hydra.compose`, applies the overrides, runs the
command and returns its result instead of printing only:

    import mixbench.api as mb

    result = mb.run(method="natural", seed=1, overrides=["train.steps=50"])
    result.final["test_losses"]                    # the final run's record
    rows = mb.benchmark(experiment="sim", overrides={"experiment.methods": ["stratified", "aioli"]})
    rows = mb.table(experiment="sim")              # one dict per row of table.csv
    paths = mb.figures(experiment="sim")           # {figure name: written files}

Keyword arguments become `key=value` overrides (`method="natural"` is `method=natural`);
`overrides` adds more, as Hydra override strings or as a {dotted key: value} mapping. Sweeps
(`-m`) are not available here: loop in Python instead. Logging goes wherever the calling
program configured it; `logging.basicConfig(level=logging.INFO)` shows the command line's lines.
"""

import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mixbench.cli import CONF_DIR, experiment_folder_hint, method_without_config, misspelt_keys, quiet_hydra_migration_warning
from mixbench.errors import ConfigError

COMMAND_NAMES = ("prepare", "run", "benchmark", "table", "laws", "figures")

# Strings that Hydra reads as themselves without quotes; anything else is quoted.
_PLAIN_STRING = re.compile(r"[A-Za-z_][A-Za-z0-9_\-.]*")
_RESERVED = {"null", "true", "false", "inf", "nan"}

Overrides = Iterable[str] | Mapping[str, Any] | None


def override_value(value: Any) -> str:
    """Return `value` written in Hydra's override grammar (null, true, 3, 'a b', [x,y], {k:v})."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        if _PLAIN_STRING.fullmatch(value) and value.lower() not in _RESERVED:
            return value
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{key}:{override_value(item)}" for key, item in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_value(item) for item in value) + "]"
    raise ConfigError(f"setting value {value!r} of type {type(value).__name__} cannot be written as a Hydra override; "
                      f"use None, a bool, a number, a string, a path, a list or a dict.")


def override_strings(overrides: Overrides = None, **settings: Any) -> list[str]:
    """Return Hydra override strings from keyword settings and `overrides` (strings or a mapping)."""
    strings = [f"{key}={override_value(value)}" for key, value in settings.items()]
    if overrides is None:
        return strings
    if isinstance(overrides, Mapping):
        return strings + [f"{key}={override_value(value)}" for key, value in overrides.items()]
    if isinstance(overrides, str):
        raise ConfigError(f"overrides={overrides!r} is a single string; pass a list such as [{overrides!r}].")
    return strings + [str(item) for item in overrides]


def compose_config(command: str, overrides: Overrides = None, **settings: Any) -> DictConfig:
    """Return the config that `mixbench <command> <overrides>` would run with."""
    from hydra import compose, initialize_config_dir

    if command not in COMMAND_NAMES:
        raise ConfigError(f"command {command!r} is unknown; use one of {', '.join(COMMAND_NAMES)}.")
    strings = override_strings(overrides, **settings)
    # Hydra 1.4 warns that `version_base` is deprecated; mixbench pins 1.3 semantics on purpose, as
    # the command line does. The filter is local, so the caller's warning settings stay as they are.
    from hydra.errors import HydraException

    with warnings.catch_warnings():
        quiet_hydra_migration_warning()
        try:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name=f"mixbench_{command}"):
                return compose(config_name=command, overrides=strings)
        except HydraException as error:
            # The command line prints the same hints after Hydra's message.
            hints = [*misspelt_keys(command, strings), *method_without_config(strings), *experiment_folder_hint(strings)]
            raise ConfigError(" ".join([str(error).strip(), *hints])) from error


def _call(command: str, overrides: Overrides, settings: dict[str, Any]):
    from mixbench import commands

    return commands.TASKS[command](compose_config(command, overrides, **settings))


def prepare(overrides: Overrides = None, **settings: Any):
    """Build or verify a corpus (`mixbench prepare`) and return it as a `mixbench.data` corpus object."""
    return _call("prepare", overrides, settings)


def run(overrides: Overrides = None, **settings: Any):
    """Run one method end to end (`mixbench run`) and return its `mixbench.engine.MethodResult`.

    `result.final` is the final run's record and `result.extra` the records of its extra runs,
    as stored under results_dir/runs. The method result is saved as the command line saves it.
    """
    return _call("run", overrides, settings)


def benchmark(overrides: Overrides = None, **settings: Any) -> list[dict] | None:
    """Run every method of an experiment at every seed (`mixbench benchmark`); return the table rows.

    Returns None in processes other than the main one of a multi-process run.
    """
    return _call("benchmark", overrides, settings)


def table(overrides: Overrides = None, **settings: Any) -> list[dict]:
    """Rebuild an experiment's table from its records (`mixbench table`) and return its rows, as in table.csv."""
    return _call("table", overrides, settings)


def laws(overrides: Overrides = None, **settings: Any) -> list[dict]:
    """Score mixing laws (`mixbench laws`) and return the report rows, one per law, target and test set."""
    return _call("laws", overrides, settings)


def figures(overrides: Overrides = None, **settings: Any) -> dict[str, list[Path]]:
    """Rebuild an experiment's figures (`mixbench figures`); return the written files per figure (empty when skipped)."""
    return _call("figures", overrides, settings)
