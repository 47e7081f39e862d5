"""Hints for Hydra launcher settings (`hydra/launcher=NAME`, `hydra.launcher.KEY=VALUE`) that Hydra rejects."""

import difflib
import importlib.util

import yaml

from mixbench.config_files import CONF_DIR, config_folders, group_options, searchpath_overrides

GROUP = "hydra/launcher"
SLURM_INSTALL = 'pip install -e ".[slurm]"'


def launcher_options(overrides: list[str]) -> list[str]:
    """Return the launcher names: Hydra's own and its installed plugins', conf/hydra/launcher, and the search path's."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        installed = GlobalHydra.instance().config_loader().get_group_options(GROUP)
    return sorted({*installed, *group_options(GROUP, overrides)})


def launcher_hints(overrides: list[str]) -> list[str]:
    """Return a line for a launcher that is unknown or not installed, and for each option the launcher lacks."""
    chosen = [item.split("=", 1)[1] for item in overrides if item.lstrip("+").startswith(f"{GROUP}=")]
    name = chosen[-1] if chosen else None
    settings_given = [item.lstrip("+") for item in overrides if item.lstrip("+").startswith("hydra.launcher.")]
    if name is None and not settings_given:
        return []

    options = launcher_options(overrides)
    listing = f"The launchers are {', '.join(options)}."
    if name is not None and _needs_submitit(name, overrides) and not _submitit_installed():
        return [f"{GROUP}={name} needs Hydra's submitit launcher plugin, which is not installed; install it with "
                f"`{SLURM_INSTALL}` in the mixbench checkout and run the command again."]
    if name is not None and name not in options:
        close = difflib.get_close_matches(name, options, n=2, cutoff=0.6)
        hint = f" Did you mean {' or '.join(f'{GROUP}={option}' for option in close)}?" if close else ""
        return [f"{GROUP}={name} names no launcher.{hint} {listing}"]

    settings = _launcher_settings(name, overrides)
    if settings is None:
        return []

    lines = []
    for item in settings_given:
        leaf = item.split("=", 1)[0].split(".")[2]
        if leaf in settings:
            continue
        if name in (None, "basic"):
            lines.append(
                f"{item} sets an option of another launcher, but the command uses Hydra's basic launcher, which runs "
                f"the members one after another and has no options. Choose a launcher first, for example "
                f"`hydra/launcher=joblib {item}` for parallel members on this machine. {listing}"
            )
            continue
        close = difflib.get_close_matches(leaf, settings, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(f'hydra.launcher.{option}' for option in close)}?" if close else (
            f"its settings are {', '.join(settings)}.")
        lines.append(f"hydra.launcher.{leaf} is not a setting of launcher {name}; {hint}")
    return lines


def _launcher_settings(name: str | None, overrides: list[str]) -> list[str] | None:
    """Return the setting names of launcher `name` (None: the default one), or None when it cannot be composed."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    choice = [f"{GROUP}={name}"] if name else []
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="run", overrides=[*choice, *searchpath_overrides(overrides)], return_hydra_config=True)
    except (HydraException, OmegaConfBaseException):
        return None
    return [str(key) for key in cfg.hydra.launcher.keys() if not str(key).startswith("_")]


def _needs_submitit(name: str, overrides: list[str]) -> bool:
    """Return whether launcher `name` is one of submitit's or a config file whose defaults pick one of them."""
    if name.startswith("submitit"):
        return True
    for folder in config_folders(overrides):
        path = folder / GROUP / f"{name}.yaml"
        if path.exists():
            defaults = (yaml.safe_load(path.read_text()) or {}).get("defaults") or []
            return any(str(entry).startswith("submitit") for entry in defaults)
    return False


def _submitit_installed() -> bool:
    return importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is not None
