"""Run a benchmark's (method, seed) tasks one after another, or side by side in worker processes.

With `experiment.jobs` = N > 1, N worker processes each train one task at a time with
`train.threads` divided by N torch threads (at least 1). Tasks share the run store: when two of
them need the same run (DoReMi's reference is the stratified run), the store's per-run lock lets
one train it while the other waits and then reuses the record. A run's numbers depend on its
thread count, never on which worker trains it or in what order, so N jobs at T threads give the
same records as one job at T / N threads.
"""

import logging
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

from tqdm.auto import tqdm

from mixbench import engine
from mixbench.engine import failed_method_result, run_method, save_method_result

log = logging.getLogger("mixbench")

LOG_FORMAT = "[%(asctime)s] %(name)s: %(message)s"

# One setting per worker process, built on its first task from the config the parent passed.
_WORKER = {}


class _TaskTag(logging.Filter):
    """Add the worker's current task (method and seed) to every log record, as `task`."""

    task = "setting up"

    def filter(self, record: logging.LogRecord) -> bool:
        record.task = self.task
        return True


_TAG = _TaskTag()


def run_task(config: dict, setting, store, seed: int, directory: Path, main: bool = True) -> bool:
    """Train one method at one seed and save its result; return whether its final run completed.

    A method that raises is recorded as failed, so that one crash costs no other method's result.
    """
    try:
        result = run_method(config, setting, store, seed)
    except Exception as error:
        log.exception("method %s seed %d failed; continuing with the other methods", config["name"], seed)
        result = failed_method_result(config, setting, seed, error)
    if main:
        save_method_result(result, directory)
    return result.final.get("status") == "complete"


def run_sequential(tasks, configs: dict, setting, store, directory: Path) -> list[str]:
    """Run `(seed, name)` tasks in order in this process; return the labels of failed ones."""
    main = setting.is_main_process()
    return [f"{name} (seed {seed})" for seed, name in tasks if not run_task(configs[name], setting, store, seed, directory, main)]


def run_parallel(cfg: dict, tasks, configs: dict, directory: Path, jobs: int, build_setting) -> list[str]:
    """Run `(seed, name)` tasks in `jobs` worker processes; return the labels of failed ones.

    `cfg` is the plain command config with `train.threads` already set to each worker's count,
    and `build_setting(cfg)` rebuilds the setting in a worker (the corpus is cached by then).
    """
    failures = []
    # Spawn starts each worker in a fresh interpreter, because a forked child would inherit torch's thread pools.
    context = get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_start_worker, initargs=(os.getpid(),)) as pool:
        futures = {
            pool.submit(_worker_task, cfg, configs[name], seed, str(directory), build_setting): (seed, name)
            for seed, name in tasks
        }
        try:
            _collect(futures, len(tasks), failures)
        except KeyboardInterrupt:
            _stop(pool)
            raise
    return failures


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel the queued tasks and end the running ones, after Ctrl-C or SIGTERM in the parent.

    Leaving the pool's block would otherwise wait for every queued task. A rerun resumes the
    ended tasks from their last checkpoints, as after any interrupt.
    """
    # NOTE: `_processes` is a private attribute of ProcessPoolExecutor (CPython 3.10 to 3.13), and
    # shutdown() clears it, so the workers are taken first.
    workers = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in workers:
        if process.is_alive():
            process.terminate()


def _collect(futures: dict, total: int, failures: list[str]) -> None:
    """Log each task as it finishes and append the labels of failed ones to `failures`."""
    for done, future in enumerate(as_completed(futures), start=1):
        seed, name = futures[future]
        try:
            complete = future.result()
        except Exception as error:
            # The worker process itself died (killed, out of memory): the task's result is lost.
            log.error("method %s seed %d: its worker process failed (%s)", name, seed, error)
            complete = False
        if not complete:
            failures.append(f"{name} (seed {seed})")
        log.info("finished %d of %d tasks: %s seed %d (%s)", done, total, name, seed, "ok" if complete else "failed")


def _start_worker(parent: int) -> None:
    # A parent killed by SIGKILL or SIGTERM leaves its workers training with no process to collect
    # their results, so this thread ends them. The parent passes its own id, so a parent that died
    # during start-up is noticed too.
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True, name="mixbench-orphan-check").start()
    # Several workers share one terminal, so progress bars are off and each line names its task.
    engine.SHOW_PROGRESS = False
    # tqdm otherwise creates a multiprocessing lock, a named semaphore that a worker ended by
    # Ctrl-C or SIGTERM never releases, and Python's resource tracker then warns that it leaked.
    tqdm.set_lock(threading.RLock())
    handler = logging.StreamHandler()
    handler.addFilter(_TAG)
    handler.setFormatter(logging.Formatter(f"{LOG_FORMAT} [%(task)s]", datefmt="%H:%M:%S"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


def _exit_when_orphaned(parent: int, interval: float = 1.0) -> None:
    """Exit this process once its parent has died (it is then re-parented, so its parent id changes).

    A rerun recovers what the exit interrupts: records are written atomically, the flock on the
    run folder is released with the process, and the interrupted run resumes from its last checkpoint.
    """
    while os.getppid() == parent:
        time.sleep(interval)
    os._exit(1)


def _worker_task(cfg: dict, config: dict, seed: int, directory: str, build_setting) -> bool:
    from omegaconf import OmegaConf

    from mixbench.commands import load_plugins
    from mixbench.runs import RunStore
    from mixbench.threads import set_torch_threads

    _TAG.task = f"{config['name']} seed {seed}"
    if "setting" not in _WORKER:
        node = OmegaConf.create(cfg)
        set_torch_threads(node.train)
        load_plugins(node)
        # The parent already logged the corpus and checked the settings, so workers skip those lines.
        quiet = logging.getLogger("mixbench")
        quiet.setLevel(logging.WARNING)
        try:
            _WORKER["setting"] = build_setting(node)
        finally:
            quiet.setLevel(logging.NOTSET)
        _WORKER["store"] = RunStore(cfg["results_dir"])
    return run_task(config, _WORKER["setting"], _WORKER["store"], seed, Path(directory))
