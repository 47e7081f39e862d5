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
`overrides` adds more, as Hydra override strings or as a {dotted key: value} mapping. In `run`,
`method` may also be a mapping of `name` and settings, and may name a registered method that
has no config file (see `method_overrides`). Sweeps
(`-m`) are not available here: loop in Python instead. Logging goes wherever the calling
program configured it; `logging.basicConfig(level=logging.INFO)` shows the command line's lines.
"""

import copy
import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mixbench.config_files import CONF_DIR, has_config, quiet_hydra_migration_warning
from mixbench.errors import ConfigError
from mixbench.override_hints import experiment_folder_hint, method_without_config, misspelt_keys, unknown_choices

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


def method_overrides(method: Any, overrides: list[str]) -> list[str]:
    """Return the overrides that choose `method`: a method name, or a mapping of `name` and settings.

    A name with a config file (in conf/method or a hydra.searchpath folder in `overrides`) picks
    that file, as method=NAME does on the command line. A name without one, such as a method
    registered in the calling script, replaces the method config with {name: NAME}, so its class
    defaults apply. The mapping's other keys set or add the method's settings.
    """
    if isinstance(method, str):
        method = {"name": method}
    if not isinstance(method, Mapping) or not isinstance(method.get("name"), str) or not method["name"]:
        raise ConfigError(f"method={method!r} is invalid; give a method name, or a mapping such as "
                          f"{{'name': 'fixed', 'mixture': [0.5, 0.5]}} with its settings.")
    name = method["name"]
    if has_config("method", name, overrides):
        chosen = [f"method={override_value(name)}"]
    else:
        chosen = ["~method", f"+method.name={override_value(name)}"]
    # ++ sets a setting that the config file lists and adds one that it leaves to the class default.
    settings = [f"++method.{key}={override_value(value)}" for key, value in method.items() if key != "name"]
    return chosen + settings


def compose_config(command: str, overrides: Overrides = None, **settings: Any) -> DictConfig:
    """Return the config that `mixbench <command> <overrides>` would run with."""
    return _without_hydra(_compose(command, overrides, **settings))


def _without_hydra(cfg: DictConfig) -> DictConfig:
    """Return a copy of `cfg` without its `hydra` node, as a task receives it from the command line."""
    from omegaconf import flag_override

    task_cfg = copy.deepcopy(cfg)
    with flag_override(task_cfg, ["readonly", "struct"], [False, False]):
        del task_cfg["hydra"]
    return task_cfg


def _compose(command: str, overrides: Overrides = None, **settings: Any) -> DictConfig:
    """Return the config of `mixbench <command> <overrides>` with its `hydra` node (search path, runtime choices)."""
    from hydra import compose, initialize_config_dir

    if command not in COMMAND_NAMES:
        raise ConfigError(f"command {command!r} is unknown; use one of {', '.join(COMMAND_NAMES)}.")
    # Only `mixbench run` has a method group, so other commands pass method= to Hydra, which rejects it.
    method = settings.pop("method", None) if command == "run" else None
    strings = override_strings(overrides, **settings)
    if method is not None:
        strings = method_overrides(method, strings) + strings
    # Hydra 1.4 warns that `version_base` is deprecated; mixbench pins 1.3 semantics on purpose, as
    # the command line does. The filter is local, so the caller's warning settings stay as they are.
    from hydra.errors import HydraException

    with warnings.catch_warnings():
        quiet_hydra_migration_warning()
        try:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name=f"mixbench_{command}"):
                return compose(config_name=command, overrides=strings, return_hydra_config=True)
        except HydraException as error:
            # The command line prints the same hints after Hydra's message.
            hints = [*misspelt_keys(command, strings), *unknown_choices(strings), *method_without_config(strings),
                     *experiment_folder_hint(strings)]
            raise ConfigError(" ".join([str(error).strip(), *hints])) from error


def _call(command: str, overrides: Overrides, settings: dict[str, Any]):
    """Run the command's task as the command line does, with Hydra's runtime config set while it runs.

    The commands read it for the folders on hydra.searchpath (a plugin's method/NAME.yaml) and for
    the config file chosen for each group.
    """
    from hydra.core.hydra_config import HydraConfig

    from mixbench import commands

    full = _compose(command, overrides, **settings)
    cfg = _without_hydra(full)
    previous = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(full)
    try:
        return commands.TASKS[command](cfg)
    finally:
        HydraConfig.instance().cfg = previous


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

    Returns None in processes other than the main one of a multi-process run. A failed method
    does not stop the others, and the table is written. Then RunFailedError is raised, and its
    `rows` attribute contains the table rows.
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
