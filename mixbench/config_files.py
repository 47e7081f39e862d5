"""Config folders of mixbench's Hydra configs: the package's conf folder and those a command line adds to the search path."""

import warnings
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


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


def quiet_hydra_migration_warning() -> None:
    """Hide Hydra 1.4's notice that `version_base` is deprecated: mixbench pins 1.3 semantics on purpose."""
    try:
        from hydra.errors import Hydra15MigrationWarning
    except ImportError:  # a Hydra release without this warning class
        return
    warnings.filterwarnings("ignore", category=Hydra15MigrationWarning)

