"""Hints for command lines that Hydra rejects: misspelt keys, options without a config file, settings in the wrong place.

Each function returns lines to print (an empty list when it has nothing to add): after Hydra's own
error, or before Hydra starts for `unknown_plain_choices`, whose cases need no composed config.
"""

import difflib
import importlib
import re

from mixbench.config_files import (
    CONF_DIR,
    config_folders,
    config_groups,
    group_options,
    has_config,
    quiet_hydra_migration_warning,
    searchpath_overrides,
)


def unknown_choices(overrides: list[str]) -> list[str]:
    """Return a line for each `group=option` (each option of a sweep) that names no config file, with the closest options."""
    lines = []
    for item in overrides:
        group, _, value = item.partition("=")
        if not value or "." in group or group.startswith(("+", "~", "-", "hydra")):
            continue
        options = group_options(group, overrides)
        if not options:
            continue
        for name in value.split(","):
            if has_config(group, name, overrides):
                continue
            close = difflib.get_close_matches(name, options, n=3, cutoff=0.6)
            hint = f" Did you mean {' or '.join(f'{group}={option}' for option in close)}?" if close else ""
            lines.append(f"{group}={name} has no config file {group}/{name}.yaml.{hint} The options are {', '.join(options)}.")
    return lines


# A group choice that Hydra reads as plain names: one option, or a comma list in a sweep. Sweep
# functions such as choice(...) and glob(...) are left to Hydra.
_PLAIN_CHOICE = re.compile(r"[A-Za-z0-9_\-]+(,[A-Za-z0-9_\-]+)*")


def unknown_plain_choices(command: str, overrides: list[str]) -> list[str]:
    """Return `unknown_choices` lines for plain `group=option` overrides of `command`'s own config groups.

    These can be checked before Hydra starts, so a misspelt option gets one clear message. Other
    forms, and search paths that are not folders (pkg://), are left to Hydra's own error.
    """
    entries = [item.split("=", 1)[1] for item in searchpath_overrides(overrides)]
    if any("pkg://" in entry for entry in entries):
        return []
    groups = command_group_defaults(command)
    plain = []
    for item in overrides:
        group, _, value = item.partition("=")
        if group in groups and value != "null" and _PLAIN_CHOICE.fullmatch(value):
            plain.append(item)
    return unknown_choices([*plain, *searchpath_overrides(overrides)])


def experiment_folder_hint(overrides: list[str]) -> list[str]:
    """Point `experiment=NAME` without a config file to `experiment.name=NAME`, which names a results folder."""
    names = [item.split("=", 1)[1] for item in overrides if item.startswith("experiment=")]
    if not names or has_config("experiment", names[0], overrides):
        return []
    return [
        f"experiment={names[0]} picks a config file from conf/experiment; to read or write the results folder "
        f"{names[0]} with another experiment's settings, use experiment.name={names[0]} instead."
    ]


def method_without_config(overrides: list[str]) -> list[str]:
    """Explain `method=NAME` for a registered method (plugins included) that has no config file here."""
    chosen = [item.split("=", 1)[1] for item in overrides if item.startswith("method=")]
    if not chosen:
        return []
    name = chosen[0].split(",")[0]
    if has_config("method", name, overrides):
        return []
    plugins = [item.split("=", 1)[1].strip("[]") for item in overrides if item.startswith("plugins=")]
    try:
        from mixbench.method import available_methods

        for module in ",".join(plugins).split(","):
            if module.strip():
                importlib.import_module(module.strip())
        registered = name in available_methods()
    except Exception:  # noqa: BLE001 - a plugin that fails to import is reported by the command itself
        return []
    if not registered:
        return []
    return [
        f"method {name} is registered, but mixbench run needs its config file method/{name}.yaml: put one in a "
        f"folder's conf/method/ and pass hydra.searchpath=[file://FOLDER/conf] (see docs/adding-a-method.md). "
        f"Without a file, choose it with its class defaults as method.name={name} (settings: +method.KEY=VALUE), "
        f"or run it in mixbench benchmark 'experiment.methods=[{name}]'."
    ]


def _group_items(command: str, overrides: list[str]) -> list[str]:
    """Return the `group=option` overrides of the config groups that `command` composes.

    A group that the command does not compose (method in benchmark) is left out, so that the others
    compose. A dot-less key that names no config group is a top-level setting, not a choice.
    """
    command_groups = command_group_defaults(command)
    settings = [item for item in overrides if "=" in item and not item.startswith(("+", "~", "-", "hydra"))]
    return [item for item in settings if "." not in item.split("=", 1)[0]
            and group_options(item.split("=", 1)[0], overrides) and item.split("=", 1)[0] in command_groups]


def _chosen_config(command: str, overrides: list[str]):
    """Compose `command`'s config with only the group choices of `overrides`; return it (None if it fails) and the choices.

    Group choices decide which keys exist, and a sweep's list of choices is represented by its first.
    """
    from hydra import compose, initialize_config_dir

    choices = [item.split(",")[0] for item in _group_items(command, overrides)]
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            # With the search path, a plugin's config files (method/NAME.yaml) are found as in the command.
            return compose(config_name=command, overrides=[*choices, *searchpath_overrides(overrides)]), choices
    except Exception:  # noqa: BLE001 - the choices themselves may be what failed, and Hydra reports why
        return None, choices


def misspelt_keys(command: str, overrides: list[str]) -> list[str]:
    """Return a line for each override whose key is not in the command's config, with the closest keys."""
    from omegaconf import DictConfig, OmegaConf

    settings = [item for item in overrides if "=" in item and not item.startswith(("+", "~", "-", "hydra"))]
    command_groups = command_group_defaults(command)
    cfg, choices = _chosen_config(command, overrides)
    if cfg is None:
        return []
    swept = [choice for choice, item in zip(choices, _group_items(command, overrides)) if "," in item]
    context = f" with {' '.join(swept)}" if swept else ""
    lines = []
    for item in settings:
        key = item.split("=", 1)[0]
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if node is None and parent:
            # A section that does not exist: point at the first missing part of the key instead.
            parent, leaf = _first_missing(cfg, key)
            node = OmegaConf.select(cfg, parent) if parent else cfg
        if not isinstance(node, DictConfig):
            continue
        if not parent and leaf not in node and leaf in config_groups(overrides):
            lines.append(_absent_group_line(command, item, cfg, command_groups, overrides))
            continue
        if leaf in node:
            if "method_overrides" in parent.split("."):
                lines += _merge_hint(item, node[leaf])
            continue
        names = [str(name) for name in node.keys()]
        if not parent and command == "benchmark" and difflib.get_close_matches(leaf, ["method"], n=1, cutoff=0.6):
            lines.append(f"{leaf} is not a setting of mixbench benchmark. If you meant method: "
                         + _benchmark_method_line("method", item.partition("=")[2], cfg, overrides))
            continue
        # A top-level key may also be a misspelt config group that the command composes, so those are candidates too.
        candidates = names if parent else sorted(set(names) | (set(config_groups(overrides)) & set(command_groups)))
        close = difflib.get_close_matches(leaf, candidates, n=3, cutoff=0.6)
        if "method_overrides" in parent.split("."):
            # Per-method overrides are free-form: a new method or setting is added with a leading +.
            entries = f"its entries are {', '.join(names)}" if names else "it has no entries"
            hint = f"{entries}, and a new one is added with a leading +: +{item}"
        elif command == "laws" and parent == "train":
            # In `mixbench laws`, train.* names the run-table files, and a corpus sweep trains with training.*.
            sweep = (f"this sweep takes its training settings as training.{leaf}" if "training" in cfg else
                     f"a law sweep on the corpus (experiment=laws_static, laws_dynamic or laws_param) takes them as training.{leaf}")
            hint = f"here train.* names the run-table files ({', '.join(names)}); {sweep}."
        elif close:
            # Hydra's own message suggests a leading +, which would add a key that nothing reads.
            hint = (f"did you mean {' or '.join(f'{parent}.{name}' if parent else name for name in close)}? "
                    f"(Adding {leaf} with a leading + would make a new setting that mixbench never reads.)")
        elif parent == "method":
            # `name` picks the method, and the other keys are its hyperparameters.
            own = [name for name in names if name != "name"]
            method = node.get("name")
            hint = f"method {method} takes {', '.join(own)}." if own else f"method {method} takes no settings."
        else:
            hint = f"its settings are {', '.join(names)}."
        full_key = f"{parent}.{leaf}" if parent else leaf
        lines.append(f"{full_key} is not a setting of mixbench {command}{context}; {hint}")
    return lines


def added_key_typos(command: str, overrides: list[str]) -> list[str]:
    """Return a line for each `+key=value` whose key is one letter or so from a key that exists beside it.

    Hydra accepts any new key added with +, and mixbench reads only the keys it defines, so a
    misspelt key added this way (+experiment.method, +seeds) would be ignored without a word.
    Per-method overrides are left alone: their new entries are added with + on purpose.
    """
    from omegaconf import DictConfig, OmegaConf

    added = [item for item in overrides if item.startswith("+") and not item.startswith("++") and "=" in item]
    if not added:
        return []
    quiet_hydra_migration_warning()
    command_groups = command_group_defaults(command)
    cfg, _ = _chosen_config(command, overrides)
    if cfg is None:
        return []
    lines = []
    for item in added:
        key, value = item[1:].split("=", 1)
        parent, _, leaf = key.rpartition(".")
        if parent and OmegaConf.select(cfg, parent) is None:
            # A section that does not exist (+mthod.eta): compare its first missing part instead.
            parent, leaf = _first_missing(cfg, key)
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if not isinstance(node, DictConfig) or leaf in node or "method_overrides" in parent.split("."):
            continue
        names = [str(name) for name in node.keys()]
        if not parent:
            names += [group for group in command_groups if group not in names]
        close = difflib.get_close_matches(leaf, names, n=1, cutoff=0.8)
        if close:
            near = f"{parent}.{close[0]}" if parent else close[0]
            rest = key[len(f"{parent}.{leaf}" if parent else leaf):]
            lines.append(f"+{key} adds a new setting that mixbench never reads; did you mean {near}{rest}? Set it "
                         f"without the +: {near}{rest}={value}.")
    return lines


def command_group_defaults(command: str) -> dict[str, str | None]:
    """Return the config groups in the defaults list of conf/COMMAND.yaml, each with its default option.

    A group listed as `group: null` (experiment in laws) maps to None, and Hydra's own groups are left out.
    """
    import yaml

    entries = yaml.safe_load((CONF_DIR / f"{command}.yaml").read_text()).get("defaults", [])
    groups = {}
    for entry in entries:
        if isinstance(entry, dict):
            for group, option in entry.items():
                if not group.startswith("override "):
                    groups[group] = option
    return groups


def _absent_group_line(command: str, item: str, cfg, command_groups: dict, overrides: list[str]) -> str:
    """Explain an override of a config group that the composed config of `command` does not contain."""
    key, _, value = item.partition("=")
    group = key.split(".")[0]
    if command == "benchmark" and group == "method":
        return _benchmark_method_line(key, value, cfg, overrides)
    if group in command_groups:
        # The group is in the defaults list as null, so its settings exist only once an option is chosen.
        return _unchosen_group_line(command, group, key, overrides)
    settings = sorted(str(name) for name in cfg.keys())
    return (f"{key} is not a setting of mixbench {command}, which takes no {group} settings; remove {item}. "
            f"The settings of mixbench {command} are {', '.join(settings)}.")


def _benchmark_method_line(key: str, value: str, cfg, overrides: list[str]) -> str:
    """Point `method=NAME` and `method.KEY=VALUE` in a benchmark to experiment.methods and method_overrides."""
    from omegaconf import DictConfig, OmegaConf

    listed = _listed_methods(cfg, overrides)
    where = "mixbench benchmark, which runs the methods in experiment.methods with their settings under experiment.method_overrides"
    if key == "method":
        # One name, a sweep (a,b) or a list ([a,b]) of them.
        names = [part.strip().strip("'\"") for part in value.strip().strip("[]").split(",") if part.strip()]
        example = ",".join(listed + [name for name in names if name not in listed])
        name = names[0] if names else "NAME"
        return (f"method={value} is not a setting of {where}: write 'experiment.methods=[{example}]', and give {name}'s "
                f"settings as ++experiment.method_overrides.{name}.KEY=VALUE.")
    setting = key.split(".", 1)[1]
    owners = _methods_with_setting(setting.split(".")[0], overrides)
    if not owners:
        return (f"{key} is not a setting of {where}, and no method config has a setting {setting.split('.')[0]}; "
                f"give a method's settings as ++experiment.method_overrides.METHOD.KEY=VALUE.")
    name = owners[0]
    entry = OmegaConf.select(cfg, f"experiment.method_overrides.{name}")
    # A setting the entry already lists is overridden as is, and a new one (or a new entry) needs a leading +.
    prefix = "" if isinstance(entry, DictConfig) and setting.split(".")[0] in entry else "+"
    line = f"{key} is not a setting of {where}: write '{prefix}experiment.method_overrides.{name}.{setting}={value}'"
    if name not in listed and listed:
        line += f" and add {name} to experiment.methods"
    if len(owners) > 1:
        line += f" (methods with a setting {setting.split('.')[0]}: {', '.join(owners)})"
    return line + "."


def _listed_methods(cfg, overrides: list[str]) -> list[str]:
    """Return the method names of experiment.methods, as set in `overrides` or else in `cfg`; [] for "all"."""
    import yaml

    listed = cfg.experiment.get("methods")
    for item in overrides:
        key, _, value = item.lstrip("+").partition("=")
        if key == "experiment.methods":
            try:
                listed = yaml.safe_load(value)
            except yaml.YAMLError:
                return []
    if listed is None or isinstance(listed, str):
        return []
    return [str(name) for name in listed]


def _methods_with_setting(setting: str, overrides: list[str]) -> list[str]:
    """Return the methods whose config file (in conf/method or on hydra.searchpath) lists `setting`."""
    from omegaconf import OmegaConf

    owners = []
    for name in group_options("method", overrides):
        for folder in config_folders(overrides):
            path = folder / "method" / f"{name}.yaml"
            if path.exists() and setting in OmegaConf.load(path):
                owners.append(name)
                break
    return owners


def _unchosen_group_line(command: str, group: str, key: str, overrides: list[str]) -> str:
    """Name the options of a group that defaults to null in `command` and that have the setting `key`."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    law_sweeps = command == "laws" and group == "experiment"
    options = []
    options_with_key = []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for option in group_options(group, overrides):
            try:
                option_cfg = compose(config_name=command, overrides=[f"{group}={option}", *searchpath_overrides(overrides)])
            except Exception:  # noqa: BLE001 - an option that does not compose cannot be suggested
                continue
            # `mixbench laws` reads only law sweeps, which are the experiments with experiment.sweep.
            if law_sweeps and OmegaConf.select(option_cfg, "experiment.sweep") is None:
                continue
            options.append(option)
            if OmegaConf.select(option_cfg, key, default="<absent>") != "<absent>":
                options_with_key.append(option)
    kind = "a law sweep" if law_sweeps else f"an option of {group}"
    if not options_with_key:
        return (f"{key} is not a setting of mixbench {command}, whose {group} is null until one is chosen, and no "
                f"{group} option has it. The options are {', '.join(options)}.")
    return (f"{key} is not a setting of mixbench {command} until {kind} is chosen ({group} is null by default): "
            f"add {group}={options_with_key[0]}. The options with {key} are {', '.join(options_with_key)}.")


def _merge_hint(item: str, node) -> list[str]:
    """Return a line when `item` sets a method's override entry to a mapping with keys the entry lacks.

    Hydra rejects those keys, and its advice of a leading + does not apply to a key that exists.
    """
    import yaml
    from omegaconf import DictConfig

    key, value = item.split("=", 1)
    try:
        mapping = yaml.safe_load(value)
    except yaml.YAMLError:
        return []
    if not isinstance(node, DictConfig) or not isinstance(mapping, dict):
        return []
    new = [str(name) for name in mapping if name not in node]
    if not new:
        return []
    return [f"{key} has no setting {', '.join(new)}; to add settings to it, write ++{item} (merged into the "
            f"existing {', '.join(map(str, node.keys())) or 'empty section'}) or +{key}.{new[0]}=VALUE."]


def _first_missing(cfg, key: str) -> tuple[str, str]:
    """Return (the deepest existing section of `key`, the next part of `key`, which it lacks)."""
    from omegaconf import DictConfig, OmegaConf

    parts = key.split(".")
    for depth in range(1, len(parts)):
        parent = ".".join(parts[:depth - 1])
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if not isinstance(node, DictConfig) or parts[depth - 1] not in node:
            return parent, parts[depth - 1]
    return ".".join(parts[:-1]), parts[-1]

