"""Torch CPU threads for a command, divided among the members of a parallel sweep.

`train.threads` is the number of torch threads the command may use at once: a positive count,
`auto` for every core this process may run on, or 0 for torch's own default. Under Hydra's joblib
launcher (`mixbench run -m hydra/launcher=joblib hydra.launcher.n_jobs=N ...`) up to N members train
at the same time, so each member gets the count divided by the smaller of N and the sweep's size,
at least 1. Under submitit_local every member of the sweep (or of each batch of
hydra.sweeper.max_batch_size) starts at once, and the count is divided by their number. The count
a run actually used is written back into `train.threads`, so its run spec records it. Run ids leave
threads out, so a run trained at one count is reused at another. `mixbench benchmark
experiment.jobs=N` divides the count the same way among its worker processes, the smaller of N and
the number of tasks. Under torchrun or accelerate launch, the count is divided among the run's
processes on this machine (LOCAL_WORLD_SIZE).
"""

import logging
import os

from omegaconf import DictConfig, open_dict

from mixbench.errors import ConfigError

log = logging.getLogger(__name__)

AUTO = "auto"


def available_cores() -> int:
    """Return the number of CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def parallel_members(cores: int) -> int:
    """Return how many sweep members run at once in this process's sweep.

    joblib runs up to `n_jobs` side by side, never more than the sweep (or batch) has, and
    submitit's local executor starts every member of the sweep at once. The basic launcher runs
    them one after another, and a SLURM member has its own allocation: both count 1.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return 1
    hydra = HydraConfig.get()
    if hydra.mode != RunMode.MULTIRUN:
        return 1
    if hydra.launcher.get("n_jobs") is not None:
        members = joblib_members(hydra.launcher.n_jobs, cores)
        size = _count_sweep(hydra.sweep.dir)
        # A sweep that cannot be counted keeps n_jobs, which never gives members more threads than the budget.
        return members if size is None else min(members, size)
    if str(hydra.launcher.get("_target_", "")).endswith(".LocalLauncher"):
        return sweep_size(hydra.sweep.dir)
    return 1


def sweep_size(sweep_dir) -> int:
    """Return the number of members of the sweep, from the overrides saved in its multirun.yaml.

    A member's own overrides hold single values, so the sweep's lists are read from the file
    Hydra writes before it launches any member. Where the file is missing or a sweep has no fixed
    size, return 1 with a warning.
    """
    size = _count_sweep(sweep_dir)
    if size is None:
        log.warning(
            "cannot count the sweep's members in %s (its multirun.yaml is missing or has an interval sweep); "
            "each member trains with train.threads threads.",
            sweep_dir,
        )
        return 1
    return size


def _count_sweep(sweep_dir) -> int | None:
    """Return the number of members of the sweep (at most its max_batch_size), or None where it cannot be counted."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    path = os.path.join(str(sweep_dir), "multirun.yaml")
    if not os.path.exists(path):
        return None
    saved = OmegaConf.load(path)
    overrides = OverridesParser.create().parse_overrides(list(saved.hydra.overrides.task))
    size = 1
    for override in overrides:
        if not override.is_sweep_override():
            continue
        if not override.is_discrete_sweep():
            # An interval sweep (Optuna, Ax) lists no values, so its sweeper decides the member count.
            return None
        size *= len(list(override.sweep_string_iterator()))
    batch = saved.hydra.sweeper.get("max_batch_size")
    return max(1, min(size, batch) if batch else size)


def joblib_members(n_jobs, cores: int) -> int:
    """Return the number of members joblib runs at once for `n_jobs` on a machine with `cores` cores."""
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0:
        raise ConfigError(
            f"hydra.launcher.n_jobs={n_jobs!r} is invalid; use a positive number of parallel members, or -1 for one per core."
        )
    if n_jobs < 0:
        # joblib's rule: -1 runs one member per core, -2 one per core but one, and so on.
        return max(1, cores + 1 + n_jobs)
    return n_jobs


def member_threads(threads, members: int, cores: int) -> int:
    """Return the torch threads of one of `members` parallel members given `train.threads` (0: torch's default)."""
    if threads == AUTO:
        total = cores
    elif isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ConfigError(
            f"train.threads={threads!r} is invalid; use a positive thread count, {AUTO} (every core, "
            f"divided among parallel sweep members), or 0 (torch's default)."
        )
    else:
        total = threads
    if total == 0:
        return 0
    return max(1, total // members)


def warn_oversubscribed(threads, used: int, members: int, cores: int, processes: str, option: str) -> bool:
    """Warn when `members` processes at `used` threads each exceed the budget `train.threads`=`threads`.

    `processes` names them in the message ("parallel members"), and `option` is the setting that
    runs fewer of them at once. Return whether it warned.
    """
    budget = cores if threads == AUTO else threads
    if used * members <= budget:
        return False
    log.warning(
        "%d %s with %d thread(s) each use more threads than train.threads=%s allows; run fewer %s at once "
        "(%s) for runs that do not compete for cores.",
        members, processes, used, threads, processes, option,
    )  # fmt: skip
    return True


def set_torch_threads(train) -> int:
    """Set torch's CPU threads from `train["threads"]` and store the count used back into `train`.

    `train` is the `train` config node or a dict; afterwards its `threads` entry is the count this
    process trains with, which run specs record.
    """
    import torch

    cores = available_cores()
    # torchrun and accelerate launch start LOCAL_WORLD_SIZE processes on this machine, all training at once.
    processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    members = parallel_members(cores) * processes
    requested = train.get("threads", 0)
    requested = 0 if requested is None else requested
    count = member_threads(requested, members, cores)
    if count:
        torch.set_num_threads(count)
    used = torch.get_num_threads()
    if members > 1 and processes > 1:
        log.info("torch threads: %d per process (train.threads=%s, %d processes of this run on this machine)",
                 used, requested, members)
    elif members > 1:
        log.info("torch threads: %d per member (train.threads=%s, %d parallel sweep members)", used, requested, members)
    if members > 1 and processes == 1 and requested != 0:
        warn_oversubscribed(
            requested, used, members, cores, "parallel members",
            "hydra.launcher.n_jobs under joblib, hydra.sweeper.max_batch_size under submitit_local",
        )  # fmt: skip
    if isinstance(train, DictConfig):
        with open_dict(train):
            train.threads = used
    else:
        train["threads"] = used
    return used
