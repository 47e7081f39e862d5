"""Check every member of a `-m` sweep before Hydra launches any of them.

Without this check a bad value in a sweep list is found only when its member starts, after the
members before it have trained. The members are expanded as Hydra's basic sweeper expands them
(its override parser, sweeper params first, the cartesian product of the swept keys), and each
member's config is composed with the compose API. `mixbench run` and `mixbench benchmark` then
build their methods and check the training settings and each method's settings in the member's
setting. For a corpus member, that needs the prepared corpus (its domains and token counts), which
is built here once per data setting when it is missing.
"""

import itertools
import shutil
from collections import OrderedDict

from mixbench.errors import MixbenchError

# A sweep of more members than this is checked one swept value at a time: each value is composed
# once, with the first value of every other swept key. Composing and checking one member took 0.1
# to 0.15 s (Hydra 1.4, 2 CPU cores), so a full check takes up to about 30 s. The reduced check
# misses a bad combination of two values (train.warmup_steps not below train.steps, say), which
# the member itself then reports.
MAX_MEMBERS = 200

# Hydra flags that print or inspect the config instead of launching the sweep.
_NO_LAUNCH_FLAGS = ("--cfg", "-c", "--info", "-i", "--shell-completion", "-sc", "--resolve")


def is_multirun(arguments: list[str]) -> bool:
    """Return whether `arguments` launch a Hydra multirun (and do not only print the config)."""
    return any(item in ("-m", "--multirun") for item in arguments) and not any(item in _NO_LAUNCH_FLAGS for item in arguments)


def sweep_error(command: str, arguments: list[str]) -> str | None:
    """Return the error of the launcher settings or of the first sweep member that cannot run, or None.

    None also means that the sweep could not be parsed or composed here: Hydra then reports why
    with its own message, and the command line adds its hints.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from mixbench.config_files import CONF_DIR

    items = [item for item in arguments if "=" in item and not item.startswith("-")]
    _corpora.clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
            hydra_items = [override.input_line for override in parser.parse_overrides(items) if override.is_hydra_override()]
            base = compose(config_name=command, overrides=hydra_items, return_hydra_config=True)
            error = _launcher_error(base.hydra.launcher)
            if error:
                return error
            if command not in (*MEMBER_CHECKS, "laws"):
                return None
            # The basic sweeper puts the sweep's params from the config before the command line's overrides.
            params = [f"{key}={value}" for key, value in (base.hydra.sweeper.get("params") or {}).items()]
            task = [override for override in parser.parse_overrides([*params, *items]) if not override.is_hydra_override()]
            lists = _value_lists(task)
            if lists is None:
                return None
            if command == "laws":
                return _shared_report_error(
                    (member, compose(config_name=command, overrides=[*hydra_items, *member])) for _, member in _members(lists)
                )
            # Settings that need no corpus are checked for every member first, so that a typo is
            # reported before the check prepares a corpus for the methods' own checks.
            on_corpus = []
            for number, member in _members(lists):
                cfg = compose(config_name=command, overrides=[*hydra_items, *member], return_hydra_config=True)
                error = _member_error(command, cfg, number, member, with_corpus=False)
                if error:
                    return error
                if _is_corpus_member(cfg):
                    on_corpus.append((number, member, cfg))
            for number, member, cfg in on_corpus:
                error = _member_error(command, cfg, number, member, with_corpus=True)
                if error:
                    return error
    except (HydraException, OmegaConfBaseException):
        return None
    finally:
        HydraConfig.instance().cfg = None
    return None


def _shared_report_error(members) -> str | None:
    """Return an error when two members of a `mixbench laws` sweep would write the same report, or None.

    Each member writes its report to one place (results_dir/experiment.name for a law sweep, `out`
    for run tables) and replaces what is there, so only the last member's report would remain.
    """
    from pathlib import Path

    seen: dict[Path, list[str]] = {}
    for member, cfg in members:
        experiment = cfg.get("experiment")
        if experiment is not None:
            path, setting = Path(str(cfg.results_dir)) / str(experiment.name), "experiment.name"
        else:
            path, setting = Path(str(cfg.get("out"))), "out"
        if path in seen:
            fix = ("experiment.name=NAME_${experiment.seed}" if setting == "experiment.name"
                   else "out=PATH_${seed}.csv")
            return (f"sweep members ({' '.join(seen[path])}) and ({' '.join(member)}) would both write their report to {path}, "
                    f"and each member replaces the report there. Give each member its own {setting}, by sweeping it as well "
                    f"or from a swept value, as in '{fix}'.")
        seen[path] = member
    return None


def _member_error(command: str, cfg, number: int, member: list[str], with_corpus: bool) -> str | None:
    """Return the error of one member's check, naming the member, or None."""
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().set_config(cfg)
    try:
        MEMBER_CHECKS[command](cfg, with_corpus)
    except MixbenchError as error:
        return f"sweep member {number} ({' '.join(member)}): {error}"
    except (TypeError, ValueError) as error:
        # A value of the wrong type (sim.steps=x) fails where it is converted, as it would in the member.
        return f"sweep member {number} ({' '.join(member)}): {type(error).__name__}: {error}"
    return None


def _is_corpus_member(cfg) -> bool:
    from mixbench.commands import _experiment_kind

    return _experiment_kind(cfg.experiment) != "sim"


def _launcher_error(launcher) -> str | None:
    """Return the error of a launcher setting that the launcher itself reports only as a traceback.

    These are joblib's `n_jobs`, and the SLURM launcher on a machine without SLURM's commands.
    """
    if str(launcher.get("_target_", "")).endswith(".SlurmLauncher") and not shutil.which("srun"):
        return ("hydra/launcher=slurm submits to a SLURM cluster, but this machine has no srun command; run the sweep on "
                "a cluster's login node, or try it on this machine with hydra/launcher=submitit_local.")
    if "n_jobs" not in launcher:
        return None
    from mixbench.threads import available_cores, joblib_members

    try:
        joblib_members(launcher.n_jobs, available_cores())
    except MixbenchError as error:
        return str(error)
    return None


def _value_lists(overrides) -> "OrderedDict[str, list[str]] | None":
    """Return each key's list of `key=value` items, as the basic sweeper builds them; None for a sweep it rejects."""
    lists: OrderedDict[str, list[str]] = OrderedDict()
    for override in overrides:
        key = override.get_key_element()
        if not override.is_sweep_override():
            lists[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            lists[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            # An interval sweep needs another sweeper (Optuna, Ax), whose members are drawn at run time.
            return None
    return lists


def _members(lists: "OrderedDict[str, list[str]]"):
    """Yield (job number, overrides) of the members to check, numbered as Hydra numbers its jobs."""
    values = list(lists.values())
    if any(not choices for choices in values):
        return
    sizes = [len(choices) for choices in values]
    total = 1
    for size in sizes:
        total *= size
    if total <= MAX_MEMBERS:
        yield from enumerate(list(member) for member in itertools.product(*values))
        return
    # The product's last key varies fastest, so a member's job number is its positions times these strides.
    strides = [1] * len(sizes)
    for index in range(len(sizes) - 2, -1, -1):
        strides[index] = strides[index + 1] * sizes[index + 1]
    for index, choices in enumerate(values):
        for position in range(1 if index else 0, len(choices)):
            member = [other[0] for other in values]
            member[index] = choices[position]
            yield position * strides[index], member


def check_run_member(cfg, with_corpus: bool = True) -> None:
    """Build the method of a `mixbench run` member and check its training settings.

    Without `with_corpus`, the method's own check of a corpus member is left out, because it needs the corpus.
    """
    from mixbench.commands import _run_method_config, load_plugins
    from mixbench.method import build_method

    load_plugins(cfg)
    method = build_method(_run_method_config(cfg))
    _check_training(cfg, [method], int(cfg.seed), with_corpus=with_corpus)


def check_benchmark_member(cfg, with_corpus: bool = True) -> None:
    """Build every method of a `mixbench benchmark` member and check its training settings (see `check_run_member`)."""
    from mixbench.commands import (
        _benchmark_jobs, _check_unique, _plain, benchmark_method_error, benchmark_methods, load_plugins, method_config,
    )
    from mixbench.errors import ConfigError
    from mixbench.method import build_method

    load_plugins(cfg)
    experiment = cfg.experiment
    _benchmark_jobs(experiment)
    seeds = [int(seed) for seed in experiment.seeds]
    _check_unique("experiment.seeds", seeds)
    overrides = _plain(experiment.get("method_overrides") or {})
    methods = []
    for name in benchmark_methods(experiment):
        try:
            methods.append(build_method(method_config(name, overrides.get(name))))
        except ConfigError as error:
            # With methods=all the benchmark skips a method that cannot run, and its table records the reason.
            if not isinstance(experiment.methods, str):
                raise benchmark_method_error(error, name) from None
    if methods and seeds:
        _check_training(cfg, methods, seeds[0], skip_failing=isinstance(experiment.methods, str), in_benchmark=True,
                        with_corpus=with_corpus)


def _check_training(cfg, methods, seed: int, skip_failing: bool = False, in_benchmark: bool = False,
                    with_corpus: bool = True) -> None:
    """Check the training settings and each method's settings in the member's setting: the simulator or the corpus."""
    from mixbench.commands import _experiment_kind, _plain, _setting
    from mixbench.errors import ConfigError
    from mixbench.setting import check_settings

    if _experiment_kind(cfg.experiment) != "sim":
        check_settings(_plain(cfg.model), _plain(cfg.train))
        if not with_corpus:
            return
        setting = _setting(cfg, _corpus(cfg))
    else:
        from mixbench.sim.setting import SimSetting

        setting = SimSetting(_plain(cfg.sim))
        # The backend checks the simulator's training settings (sampling, noise, tokens per step) when it is made.
        setting.make_backend(setting.spec(seed))
    for method in methods:
        try:
            method.check(setting.context(seed))
        except ConfigError as error:
            if skip_failing:
                continue
            if in_benchmark:
                from mixbench.commands import benchmark_method_error

                raise benchmark_method_error(error, method.name) from None
            raise


# Corpora prepared for the members checked so far, by their data settings.
_corpora: dict[str, object] = {}


def _corpus(cfg):
    """Return the member's corpus, prepared once per data setting of the sweep.

    Methods check their settings against the corpus's domains and token counts, so the corpus is
    built here if it is missing, as the first member would otherwise build it.
    """
    import json
    import logging

    from mixbench.commands import _plain
    from mixbench.data import prepare_corpus

    key = json.dumps(_plain(cfg.data), sort_keys=True, default=str)
    if key not in _corpora:
        data_log = logging.getLogger("mixbench.data")
        level = data_log.level
        # Each member logs its corpus when it starts, so the check logs only warnings.
        data_log.setLevel(max(level, logging.WARNING))
        try:
            _corpora[key] = prepare_corpus(_plain(cfg.data))
        finally:
            data_log.setLevel(level)
    return _corpora[key]


MEMBER_CHECKS = {"run": check_run_member, "benchmark": check_benchmark_member}
