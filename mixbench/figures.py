"""The `mixbench figures` command: rebuild an experiment's paper figures from its records only.

The figures are drawn by the scripts in paper_figures/ at the root of the checkout (one module
per figure, each with a `build` function). They read results_dir/<experiment>/ and the run
records in results_dir/runs/, and write PNG and PDF files to results_dir/<experiment>/figures/
(or to out_dir). A figure whose inputs are absent is skipped with one log line that names them.
The results folder is only read, so it may be read-only when out_dir names another folder.
"""

import importlib
import importlib.util
import json
import logging
import sys
from pathlib import Path
from types import ModuleType

from omegaconf import ListConfig

from mixbench.errors import ConfigError
from mixbench.runs import require_writable

log = logging.getLogger("mixbench")

FIGURES_DIR = Path(__file__).resolve().parents[1] / "paper_figures"
PACKAGE = "paper_figures"


def _figure_package() -> ModuleType:
    """Import paper_figures from the checkout, which the editable install does not put on sys.path."""
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE]
    init = FIGURES_DIR / "__init__.py"
    if not init.exists():
        raise ConfigError(f"figure scripts not found in {FIGURES_DIR}; install mixbench from a checkout with `pip install -e .`.")
    spec = importlib.util.spec_from_file_location(PACKAGE, init, submodule_search_locations=[str(FIGURES_DIR)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = package
    try:
        spec.loader.exec_module(package)
    except BaseException:
        del sys.modules[PACKAGE]
        raise
    return package


def figure_module(name: str) -> ModuleType:
    """Return the script module of one figure (or `common`, the scripts' shared helpers)."""
    _figure_package()
    return importlib.import_module(f"{PACKAGE}.{name}")


def available_figures() -> tuple[str, ...]:
    """Return the figure names in build order."""
    return tuple(_figure_package().FIGURES)


def _selected(names) -> list[str]:
    known = available_figures()
    if names is None or names == "all":
        return list(known)
    if isinstance(names, str) or not isinstance(names, (list, tuple, ListConfig)):
        raise ConfigError(f"figures={names!r} is invalid; use all or a list of figure names like [{known[0]},{known[1]}].")
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ConfigError(f"figures lists unknown figures {', '.join(map(str, unknown))}; the figures are {', '.join(known)}.")
    return list(names)


def build_figures(results_dir="results", experiment="sim", names=None, out_dir=None, seed=None) -> dict[str, list[Path]]:
    """Build the named figures (all by default) of one experiment; return the written paths per figure.

    A figure whose inputs are missing maps to an empty list and is logged as skipped. Files of the
    built figures that this build did not write (see `earlier_files`) are listed in one warning.
    Raise ConfigError for an unknown figure name, a non-integer seed, a missing experiment folder,
    or an output folder that is not writable.
    """
    selected = _selected(names)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"seed={seed!r} is invalid; give the seed whose runs to show (a whole number) or null for the lowest recorded.")
    directory = Path(results_dir) / str(experiment)
    if not directory.is_dir():
        raise ConfigError(
            f"experiment folder {directory} not found; check experiment.name={experiment} and results_dir={results_dir}, "
            f"or train the experiment first (`mixbench benchmark` or a law sweep, with the same experiment.name)."
        )
    _check_seed_recorded(directory, seed)
    _warn_mixed_runs(Path(results_dir), directory)
    common = figure_module("common")
    base = Path(out_dir) if out_dir else common.default_out_dir(results_dir, str(experiment))
    created = not base.exists()
    require_writable(base, "figures", "set out_dir=PATH to write the figures to a folder you can write to; the records are only read.")
    # An experiment run in several settings (data=default and data=three, say) gets one folder of
    # figures per setting, because their domains differ.
    settings = common.experiment_settings(results_dir, str(experiment)) if (directory / "methods").is_dir() else []
    targets = [(None, out_dir)]
    if len(settings) > 1:
        targets = [(label, base / label) for label in settings]
    written: dict[str, list[Path]] = {}
    for name in selected:
        module = figure_module(name)
        written[name] = []
        for setting, target in targets:
            try:
                paths = module.build(results_dir, str(experiment), out_dir=target, seed=seed, setting=setting)
            except common.MissingInput as missing:
                log.info("figure %s skipped%s: %s", name, f" for {setting}" if setting else "", missing)
                continue
            written[name] += paths
            log.info("figure %s: wrote %s", name, ", ".join(str(path.relative_to(path.parents[1])) if setting else path.name for path in paths))
    _warn_earlier_files(base, selected, written)
    if created and not any(written.values()):
        _remove_empty_folders(base)
    return written


def _check_seed_recorded(directory: Path, seed) -> None:
    """Raise ConfigError when `seed` is set and no method result of the experiment has that seed."""
    methods = directory / "methods"
    if seed is None or not methods.is_dir():
        return
    known = set()
    for path in methods.glob("*.json"):
        try:
            known.add(json.loads(path.read_text()).get("seed"))
        except (OSError, ValueError):
            continue
    known.discard(None)
    if seed not in known:
        listed = ", ".join(str(value) for value in sorted(known)) or "none"
        raise ConfigError(f"seed={seed} has no method result in {directory}; known seeds: {listed}. "
                          f"Pick one of them, or set seed=null for the lowest recorded.")


def _remove_empty_folders(base: Path) -> None:
    """Remove `base` and its sub-folders if no file was written in them: every figure was skipped."""
    for folder in sorted((path for path in base.rglob("*") if path.is_dir()), key=lambda path: len(path.parts), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    if not any(base.iterdir()):
        base.rmdir()


def earlier_files(base: Path, names: list[str], written: dict[str, list[Path]]) -> list[Path]:
    """Return the PNG and PDF files of figures `names` in `base` and its sub-folders that are not in `written`.

    Sub-folders are searched one level deep, where an experiment run in several settings keeps one
    folder per setting. A file belongs to a figure when its name is the figure's name, or starts
    with it and an underscore (a_heatmaps_doremi.png).
    """
    if not base.is_dir():
        return []
    suffixes = {f".{kind}" for kind in figure_module("common").FORMATS}
    fresh = {path.resolve() for paths in written.values() for path in paths}
    folders = [base, *sorted(path for path in base.iterdir() if path.is_dir())]
    return [
        path for folder in folders for path in sorted(folder.iterdir())
        if path.suffix in suffixes and path.is_file() and path.resolve() not in fresh
        and any(path.stem == name or path.stem.startswith(name + "_") for name in names)
    ]


def _warn_earlier_files(base: Path, names: list[str], written: dict[str, list[Path]]) -> None:
    """Warn once about figure files in `base` that this build did not write; nothing is deleted."""
    earlier = earlier_files(base, names, written)
    if earlier:
        log.warning(
            "%d figure file(s) in %s were not written by this build: %s. They come from an earlier build (of a method "
            "result since renamed, another seed or another setting) and can be deleted if they are outdated.",
            len(earlier), base, ", ".join(str(path.relative_to(base)) for path in earlier),
        )


def _warn_mixed_runs(results_dir: Path, directory: Path) -> None:
    """Say so when the figures would set final runs of different lengths or settings side by side."""
    if not any((directory / "methods").glob("*.json")):
        return
    from mixbench.report import load_results, mixed_conditions
    from mixbench.runs import RunStore

    for label, listing in mixed_conditions(load_results(directory), RunStore(results_dir, read_only=True)).items():
        log.warning(
            "the figures of %s show final runs of different lengths or settings in setting %s (%s), because some methods ran "
            "with other training settings, so their losses are not comparable. Rerun them with one set, or use "
            "another experiment.name per set.",
            directory, label, listing,
        )


def figures(cfg) -> dict[str, list[Path]]:
    """Rebuild results_dir/<experiment>/figures/ from records only; see `build_figures`."""
    out_dir = cfg.get("out_dir")
    built = build_figures(
        results_dir=cfg.results_dir,
        experiment=str(cfg.experiment.name),
        names=cfg.get("figures", "all"),
        out_dir=Path(out_dir) if out_dir else None,
        seed=cfg.get("seed"),
    )
    count = sum(len(paths) for paths in built.values())
    skipped = [name for name, paths in built.items() if not paths]
    log.info("figures of %s: %d files, %d of %d figures skipped", cfg.experiment.name, count, len(skipped), len(built))
    return built
