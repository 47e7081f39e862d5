"""Ctrl-C and SIGTERM: turn both into KeyboardInterrupt, stop sweep members, print one line on how to resume."""

import contextlib
import os
import signal
import sys
from pathlib import Path

# The signal behind the last KeyboardInterrupt: SIGINT unless a SIGTERM handler set it.
_signal_received = signal.SIGINT


def raise_keyboard_interrupt(signum, frame) -> None:
    """Turn a termination signal into KeyboardInterrupt, remembering which one it was."""
    global _signal_received
    _signal_received = signum
    raise KeyboardInterrupt


def member_processes() -> list[int]:
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


def report_interrupt(command: str) -> int:
    """Handle Ctrl-C or SIGTERM that reached this process outside a task: stop any sweep members,
    report the interrupt and return the exit status.

    Hydra's joblib and submitit launchers run members in child processes. SIGTERM sent to this
    process alone would leave them training, so they get SIGINT, as from Ctrl-C in a terminal:
    submitit's jobs ignore SIGTERM, which SLURM sends before it preempts a job.
    """
    if _signal_received == signal.SIGTERM:
        for member in member_processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(member, signal.SIGINT)
    print_interrupted("training" if command == "laws" else "train")
    return exit_status()


def print_interrupted(key: str) -> None:
    """Print the interrupt line; `key` is the group that contains checkpoint_every (train, or training in law sweeps)."""
    print(
        "mixbench: interrupted. Finished runs are kept; run the same command again to resume the others "
        f"from their last checkpoint ({key}.checkpoint_every).",
        file=sys.stderr,
    )


def hear_interrupts_in_member() -> None:
    """Let SIGINT stop this sweep member even when the member was started with SIGINT ignored.

    A launcher stops its members with SIGINT (`report_interrupt`). A sweep started with `&` from a
    script inherits SIGINT as ignored, and its members would then train on after the launcher exits.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # Only the main thread may set a handler; a member run in another thread keeps the disposition.
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGINT, signal.default_int_handler)


def in_joblib_member() -> bool:
    """Return whether this process runs a member of a sweep under Hydra's joblib launcher."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return False
    return str(HydraConfig.get().launcher.get("_target_", "")).endswith("JoblibLauncher")


def exit_status() -> int:
    """Return the exit status for the last interrupt: 130 for Ctrl-C (SIGINT), 143 for SIGTERM."""
    return 128 + int(_signal_received)
