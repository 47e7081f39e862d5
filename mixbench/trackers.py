"""Optional experiment trackers for one run (TensorBoard, Weights & Biases), through Accelerate's tracker classes.

Set `train.trackers=[tensorboard]` (or `[wandb]`, or both) and optionally `train.tracker_dir`. Each
trained run gets its own tracker run named `<role>-<run id>` that receives the mean train loss of
every step, the mixture of every step, and the per-domain validation losses of every evaluation.

The trackers are not attached to the harness's Accelerator: one Accelerator serves every run of a
process, `Accelerator.init_trackers` appends new trackers on each call, and `end_training` also
destroys the process group. So each run opens Accelerate's tracker classes itself and closes them
when it ends.
"""

import importlib.util
import json
import logging
from pathlib import Path

import numpy as np

from mixbench.errors import ConfigError

log = logging.getLogger(__name__)

# Tracker name -> (modules of which one must be importable, the install command that provides one).
SUPPORTED = {
    "tensorboard": (("tensorboard", "tensorboardX"), "pip install tensorboard"),
    "wandb": (("wandb",), "pip install wandb"),
}
# Weights & Biases groups every run of mixbench under one project.
WANDB_PROJECT = "mixbench"


def tracker_names(train: dict) -> list[str]:
    """Return the trackers listed in `train.trackers`; raise ConfigError for unknown or missing ones.

    Called before a run builds its model, so a missing package fails before any training.
    """
    requested = train.get("trackers") or []
    if isinstance(requested, str):
        requested = [requested]
    names = []
    for name in requested:
        if name not in SUPPORTED:
            raise ConfigError(
                f"train.trackers contains {name!r}, which is not a supported tracker; use any of "
                f"{', '.join(SUPPORTED)} (for example train.trackers=[tensorboard])."
            )
        modules, install = SUPPORTED[name]
        if not any(importlib.util.find_spec(module) is not None for module in modules):
            raise ConfigError(
                f"train.trackers contains {name!r} but the {modules[0]} package is not installed; "
                f"run `{install}`, or remove it from train.trackers."
            )
        if name not in names:
            names.append(name)
    return names


class RunTracker:
    """The trackers of one run: `log_step` after each training step, `log_validation` after each evaluation.

    A run resumed from a checkpoint at `start_step` (0 without one) continues its tracker run:
    TensorBoard drops the events an interrupted process logged after that step, and W&B resumes
    the run of the same id (it ignores steps at or below the last one it received).
    """

    def __init__(self, names: list[str], run_name: str, run_id: str, logging_dir: Path, domains, config: dict,
                 start_step: int = 0):
        from accelerate.tracking import TensorBoardTracker, WandBTracker

        self.domains = tuple(domains)
        self.trackers = []
        for name in names:
            if name == "tensorboard":
                # A run restarted from step 0 (interrupted before its first checkpoint) also replaces what was logged.
                tracker = TensorBoardTracker(run_name, str(logging_dir), purge_step=start_step + 1)
                tracker.start()
                _store_hparams(tracker, config)
            else:
                tracker = WandBTracker(WANDB_PROJECT, name=run_name, dir=str(logging_dir), id=run_id, resume="allow")
                tracker.start()
                tracker.store_init_configuration(config)
            self.trackers.append(tracker)
        log.info("logging run %s to %s in %s", run_name, ", ".join(names), logging_dir)

    def _log(self, values: dict, step: int) -> None:
        for tracker in self.trackers:
            tracker.log(values, step=step)

    def log_step(self, step: int, tokens: np.ndarray, train_loss: np.ndarray, mixture: np.ndarray) -> None:
        """Log one step's token-weighted mean train loss and the mixture it trained on."""
        present = tokens > 0
        values = {"train/loss": float(np.sum(train_loss[present] * tokens[present]) / np.sum(tokens[present]))}
        values.update({f"mixture/{domain}": float(weight) for domain, weight in zip(self.domains, mixture)})
        self._log(values, step)

    def log_validation(self, step: int, losses) -> None:
        """Log the per-domain validation losses and their mean."""
        values = {f"val/{domain}": float(loss) for domain, loss in zip(self.domains, losses)}
        values["val/mean"] = float(np.mean(losses))
        self._log(values, step)

    def finish(self, interrupted: bool = False) -> None:
        """Close every tracker; an interrupted or failed run is marked as such where the tracker records it (W&B)."""
        for tracker in self.trackers:
            run = getattr(tracker, "run", None)
            if interrupted and run is not None:
                run.finish(exit_code=1)
            else:
                tracker.finish()


def _store_hparams(tracker, config: dict) -> None:
    """Write the run's settings as TensorBoard hparams into the run's own event file, with val/mean as its metric.

    Accelerate's `store_init_configuration` writes them to a separate sub-run without scalars, where
    the HParams dashboard finds no metric. Without torch's tensorboard support (tensorboardX only)
    that method is used instead.
    """
    try:
        from torch.utils.tensorboard.summary import hparams
    except ImportError:
        tracker.store_init_configuration(config)
        return
    for summary in hparams(config, {"val/mean": 0.0}):
        tracker.writer.file_writer.add_summary(summary)
    tracker.writer.flush()


def open_run_tracker(spec, run_dir: Path, domains, trained_by: dict | str | None = None, start_step: int = 0) -> RunTracker | None:
    """Open the trackers listed in `spec.train.trackers`, or return None when it lists none.

    `start_step` is the step a resumed run continues from (0 for a fresh run).

    TensorBoard logs go to `<train.tracker_dir>/<role>-<run id>`, or to `<run folder>/<role>-<run id>`
    when `tracker_dir` is null. W&B writes its files to `wandb/` inside that same folder (`tracker_dir`
    or the run folder). `trained_by` is the method (name and settings) whose task trains the run,
    logged where the spec names none (final, probe and reference runs).
    """
    names = tracker_names(spec.train)
    if not names:
        return None
    tracker_dir = spec.train.get("tracker_dir")
    logging_dir = Path(tracker_dir) if tracker_dir else Path(run_dir)
    return RunTracker(names, f"{spec.role}-{spec.id}", spec.id, logging_dir, domains, _flat_config(spec, trained_by), start_step)


def _flat_config(spec, trained_by: dict | str | None = None) -> dict:
    """Return the run's settings as flat scalars, the only values tracker configurations accept.

    `trained_by` is the name and settings of the method whose task trains the run (or its name).
    """
    config = {"run_id": spec.id, "role": spec.role, "seed": spec.seed}
    # A static run's spec names no method, and its record may serve several (stratified's run is
    # also DoReMi's reference), so the method is the one whose task trained it.
    method = spec.method if spec.method is not None else trained_by
    if isinstance(method, str):
        method = {"name": method}
    if method is not None:
        config["method"] = str(method.get("name"))
    for group in ("model", "train"):
        for key, value in getattr(spec, group).items():
            if isinstance(value, (bool, int, float, str)):
                config[f"{group}.{key}"] = value
    # The method's settings, which tell the members of a sweep over them apart.
    for key, value in (method or {}).items():
        if key == "name":
            continue
        if isinstance(value, (bool, int, float, str)):
            config[f"method.{key}"] = value
        elif isinstance(value, (list, tuple, dict)):
            config[f"method.{key}"] = json.dumps(value, sort_keys=True)
    data = spec.data or {}
    for key in ("name", "fingerprint", "tokenizer"):
        if isinstance(data.get(key), (str, int, float)):
            config[f"data.{key}"] = data[key]
    if data.get("domains") is not None:
        config["data.domains"] = ",".join(str(domain) for domain in data["domains"])
    if spec.mixture is not None:
        config["mixture"] = ",".join(f"{weight:.4f}" for weight in spec.mixture)
    return config
