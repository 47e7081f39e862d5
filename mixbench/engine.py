"""Run methods end to end: prerequisite and probe runs, the training loop around the backend, records.

`execute_run` is the one outer loop every run goes through (static or online, real or simulated):
rounds of an online method, periodic validation, checkpoints, and the final test evaluation.
`run_method` executes a method's explore-fit-optimize cycle against the run store.
"""

import hashlib
import json
import logging
import os
import pickle
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from mixbench.backend import TrainingBackend
from mixbench.errors import ConfigError, RunFailedError
from mixbench.method import MethodContext, MixingMethod, Observation, OnlineMethod, Probe, build_method
from mixbench.runs import RunSpec, RunStore, write_json_atomic
from mixbench.simplex import validate_mixture
from mixbench.trackers import open_run_tracker, tracker_names

log = logging.getLogger(__name__)

# Progress bars of training runs; worker processes that share a terminal turn them off.
SHOW_PROGRESS = True

# The loop hands the backend at most this many steps at a time, so the progress bar moves. The
# chunking changes no result because every step depends only on the state before it.
PROGRESS_CHUNK = 10
# An online run records its mixture at about this many evenly spaced steps besides its validation
# steps, so that a mixture that moves every step can be drawn however rarely the run validates.
TRAJECTORY_POINTS = 100


class Setting(Protocol):
    """A place to run methods: the real corpus with the harness, or the simulator."""

    name: str
    domains: tuple[str, ...]

    def context(self, seed: int) -> MethodContext: ...

    def spec(self, seed: int, *, mixture=None, method=None, probe: Probe | None = None, role: str = "final") -> RunSpec: ...

    def make_backend(self, spec: RunSpec) -> TrainingBackend: ...

    def final_metrics(self, backend: TrainingBackend, test_losses: np.ndarray) -> dict: ...

    def is_main_process(self) -> bool: ...


@dataclass
class LoopState:
    """The state the outer loop carries between checkpoints, besides the backend's own."""

    mixture: np.ndarray
    metrics: list[dict] = field(default_factory=list)
    trajectory: list[dict] = field(default_factory=list)
    rounds: list[dict] = field(default_factory=list)
    # Sum of the mixture in force at every training step, for the run's step-averaged mixture.
    mixture_sum: np.ndarray | None = None
    mixture_steps: int = 0


def _save_checkpoint(directory: Path, backend, loop: LoopState, method: MixingMethod | None) -> None:
    """Write backend, loop and method state to `directory/checkpoint` atomically (temp folder, rename)."""
    import torch

    temporary = Path(tempfile.mkdtemp(dir=directory, prefix=".checkpoint-"))
    torch.save({"backend": backend.snapshot(), "loop": loop, "method": pickle.dumps(method)}, temporary / "state.pt")
    target = directory / "checkpoint"
    old = directory / ".checkpoint-old"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(temporary, target)
    shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(directory: Path):
    """Return (backend state, loop, method) of the run's last checkpoint, or None without one.

    A kill inside `_save_checkpoint` can leave a half-written temporary folder, which is removed,
    or only the previous checkpoint (between its two renames), which is used.
    """
    import torch

    for stale in directory.glob(".checkpoint-*"):
        if stale.name != ".checkpoint-old":
            shutil.rmtree(stale, ignore_errors=True)
    path = directory / "checkpoint" / "state.pt"
    if not path.exists():
        path = directory / ".checkpoint-old" / "state.pt"
    if not path.exists():
        return None
    state = torch.load(path, weights_only=False)
    return state["backend"], state["loop"], pickle.loads(state["method"])


class RoundObserver(Protocol):
    """Called by `execute_run` right after a round entry (the method's A estimate) is recorded.

    `mixture_before` is the mixture in force when the estimate was made; `loop.mixture` is the
    one the run goes on with. The observer must not change the backend, loop or method.
    """

    def __call__(self, backend, loop: LoopState, method: OnlineMethod, mixture_before: np.ndarray) -> None: ...


def _observe(observer: RoundObserver | None, recorded: int, backend, loop: LoopState, method, before: np.ndarray) -> None:
    if observer is not None and method is not None and len(loop.rounds) > recorded:
        observer(backend, loop, method, before)


def _next_stop(step: int, total: int, *intervals: int) -> int:
    stops = [total] + [(step // every + 1) * every for every in intervals if every and every > 0]
    return min(stops)


def execute_run(
    spec: RunSpec,
    setting: Setting,
    run_dir: Path,
    method: OnlineMethod | None = None,
    context: MethodContext | None = None,
    reference: tuple[RunSpec, Path] | None = None,
    on_round: RoundObserver | None = None,
    trained_by: dict | None = None,
) -> dict:
    """Train the run described by `spec` to the end, resuming from its checkpoint, and return its record.

    `reference` is the spec and folder of a finished run whose model becomes the backend's
    reference model (DoReMi's excess loss is measured against it). `on_round` is called each
    time the method's A estimate is recorded (see `RoundObserver`); branch sweeps use it to
    save the run's state at chosen rounds. `trained_by` is the name and settings of the method
    whose task trains the run. Trackers log it, and it changes neither the run id nor the record.
    """
    tracking = bool(tracker_names(spec.train))  # a missing tracker package fails before the model is built
    backend = _make_backend(spec, setting, method, reference)
    train = spec.train
    eval_every, checkpoint_every = int(train.get("eval_every", 0)), int(train.get("checkpoint_every", 0))
    round_steps = method.round_steps if method is not None else 0
    main = setting.is_main_process()

    initial = np.asarray(spec.mixture) if spec.mixture is not None else method.initial_mixture(context)
    loop = LoopState(mixture=validate_mixture(initial, setting.domains))
    resumed = _load_checkpoint(run_dir) if run_dir is not None else None
    if resumed is not None:
        backend_state, loop, method = resumed
        backend.restore(backend_state)
        log.info("run %s: resuming from step %d", spec.id, backend.step)

    progress = tqdm(total=backend.total_steps, initial=backend.step, desc=f"{spec.role} {spec.id[:8]}",
                    disable=None if main and SHOW_PROGRESS else True, leave=False)  # None: only on a terminal
    tracker = open_run_tracker(spec, run_dir, setting.domains, trained_by, backend.step) if main else None
    finished = False
    # Trackers log every step, so each `train` call takes one step; chunking changes no result.
    chunk = 1 if tracking else PROGRESS_CHUNK
    try:
        while backend.step < backend.total_steps:
            before = backend.step

            # An online method explores, fits and picks a new mixture at each round boundary.
            if method is not None and backend.step % round_steps == 0:
                previous, recorded = loop.mixture, len(loop.rounds)
                loop.mixture = _online_round(method, context, backend, loop)
                _observe(on_round, recorded, backend, loop, method, previous)

            # Train up to the next evaluation, checkpoint or round boundary.
            stop = _next_stop(backend.step, backend.total_steps, eval_every, checkpoint_every, round_steps)
            stop = min(stop, backend.step + chunk)
            hook = _step_hook(method, context)
            by_weights = method.by_loss_weights if method is not None else False
            # A round may itself train (Aioli's exploration), so the trained steps start here.
            trained_from = backend.step
            result = backend.train(stop - backend.step, loop.mixture, by_loss_weights=by_weights, hook=hook)
            if result.mixtures:
                loop.mixture = result.mixtures[-1]
                # Added one step at a time, so that the sum does not depend on how steps are chunked.
                for mixture in result.mixtures:
                    loop.mixture_sum = np.array(mixture, dtype=float) if loop.mixture_sum is None else loop.mixture_sum + mixture
                loop.mixture_steps += len(result.mixtures)
            if method is not None:
                _record_trajectory(loop, trained_from, backend.step, result.mixtures, backend.total_steps)
            progress.update(backend.step - before)
            if tracker is not None and result.mixtures:
                tracker.log_step(backend.step, result.tokens, result.train_loss, result.mixtures[-1])

            # Periodic validation: one log line with the step, per-domain losses and the mixture.
            if backend.step == backend.total_steps or (eval_every and backend.step % eval_every == 0):
                recorded = len(loop.rounds)
                _record_evaluation(backend, loop, setting, main, method)
                if tracker is not None:
                    tracker.log_validation(backend.step, loop.metrics[-1]["losses"])
                _observe(on_round, recorded, backend, loop, method, loop.mixture)

            if checkpoint_every and backend.step % checkpoint_every == 0 and backend.step < backend.total_steps:
                if main:
                    _save_checkpoint(run_dir, backend, loop, method)
        finished = True
    except RunFailedError as error:
        progress.close()
        return {"status": "failed", "error": str(error), "step": backend.step, "metrics": loop.metrics, "role": spec.role}
    finally:
        if tracker is not None:
            tracker.finish(interrupted=not finished)
    progress.close()
    return _complete_record(spec, setting, backend, loop, method, run_dir, main)


def _make_backend(spec: RunSpec, setting: Setting, method: OnlineMethod | None, reference: tuple[RunSpec, Path] | None):
    """Build the run's backend, with the reference model and the loss normalization the method needs."""
    backend = setting.make_backend(spec)
    if reference is not None:
        setting.attach_reference(backend, spec, *reference)
    # A method that trains by loss weights may choose how they are normalised (DoReMi has two).
    normalization = getattr(method, "loss_normalization", None)
    if normalization is not None and hasattr(backend, "set_loss_normalization"):
        backend.set_loss_normalization(normalization)
    return backend


def _complete_record(spec: RunSpec, setting: Setting, backend, loop: LoopState, method: OnlineMethod | None,
                     run_dir: Path, main: bool) -> dict:
    """Run the final test pass, save the model and return the record of a finished run."""
    test_losses = backend.evaluate("test") if spec.train.get("test_pass", True) else None
    if main:
        setting.save_model(backend, run_dir)
    record = {
        "status": "complete",
        "role": spec.role,
        "domains": list(setting.domains),
        "final_mixture": loop.mixture.tolist(),
        "val_losses": loop.metrics[-1]["losses"] if loop.metrics else None,
        "test_losses": test_losses.tolist() if test_losses is not None else None,
        "metrics": loop.metrics,
        "trajectory": loop.trajectory,
        "mean_mixture": (loop.mixture_sum / loop.mixture_steps).tolist() if loop.mixture_steps else None,
        "rounds": loop.rounds,
        "compute": backend.compute.as_dict(),
        "method_state": _jsonable_state(method) if method is not None else None,
    }
    record.update(setting.final_metrics(backend, test_losses))
    if method is None:
        # The simulator's true A is compared only with a method's own estimates. A run on a fixed
        # mixture has none, so dropping it keeps the many probe records small.
        record.pop("true_A", None)
    return record


def _online_round(method: OnlineMethod, context: MethodContext, backend, loop: LoopState) -> np.ndarray:
    """Run one round's exploration sub-rounds on the live model, fit the method, return its mixture.

    `fit` receives the run's validation evaluations so far (role "validation", oldest first),
    then one observation per sub-round (role "exploration"). The model is evaluated once before
    the first sub-round and once after each, so a sub-round's "before" is the previous one's result.
    """
    observations = [
        Observation(np.asarray(entry["mixture"]), np.asarray(entry["losses"]), role="validation") for entry in loop.metrics
    ]
    probes = method.explore(context)
    before = backend.evaluate("val") if probes else None
    for probe in probes:
        backend.train(int(probe.steps), probe.mixture, purpose="exploration")
        after = backend.evaluate("val")
        observations.append(Observation(probe.mixture, after, before=before, steps=int(probe.steps), role="exploration"))
        before = after
    method.fit(observations, context)
    mixture = validate_mixture(method.optimize(context), context.domains, name=f"mixture chosen by {method.name}")
    estimate = getattr(method, "A_", None)
    loop.rounds.append({"step": backend.step, "mixture": mixture.tolist(), "A": None if estimate is None else np.asarray(estimate).tolist()})
    return mixture


def _record_trajectory(loop: LoopState, before: int, after: int, mixtures: list, total_steps: int) -> None:
    """Add the mixture of every step in (before, after] that falls on the trajectory's spacing.

    The spacing depends only on the step numbers, so a resumed run records the same points.
    """
    spacing = max(1, total_steps // TRAJECTORY_POINTS)
    for step in range(before + 1, after + 1):
        if step % spacing == 0:
            # A step hook returns each step's mixture; otherwise the mixture held for the whole call.
            mixture = mixtures[step - before - 1] if mixtures else loop.mixture
            loop.trajectory.append({"step": step, "mixture": np.asarray(mixture, dtype=float).tolist()})


def _record_evaluation(backend, loop: LoopState, setting: Setting, main: bool, method: MixingMethod | None = None) -> None:
    """Log a validation pass; also record the method's A estimate if it changed since the last recorded one.

    Methods that update every step (DoReMi, DoGE, ODM) change their estimate between rounds, so
    this is where their A^t enters `loop.rounds`. A round-based method's estimate is unchanged
    between rounds and is recorded only by `_online_round`.
    """
    losses = backend.evaluate("val")
    seen = backend.compute.train_tokens + backend.compute.exploration_tokens
    loop.metrics.append({"step": backend.step, "split": "val", "losses": losses.tolist(), "tokens_seen": seen, "mixture": loop.mixture.tolist()})
    if not loop.trajectory or loop.trajectory[-1]["step"] != backend.step:
        loop.trajectory.append({"step": backend.step, "mixture": loop.mixture.tolist()})
    estimate = getattr(method, "A_", None)
    if estimate is not None:
        recorded = [entry["A"] for entry in loop.rounds if entry["A"] is not None]
        if not recorded or not np.array_equal(np.asarray(recorded[-1]), np.asarray(estimate)):
            loop.rounds.append({"step": backend.step, "mixture": loop.mixture.tolist(), "A": np.asarray(estimate).tolist()})
    if main:
        per_domain = " ".join(f"{d}={loss:.3f}" for d, loss in zip(setting.domains, losses))
        mixture = " ".join(f"{w:.3f}" for w in loop.mixture)
        log.info("step %d | val loss %.4f | %s | mixture %s", backend.step, float(np.mean(losses)), per_domain, mixture)


def _jsonable_state(method: MixingMethod) -> dict:
    return {key: _jsonable(value) for key, value in method.fitted_state().items()}


def _jsonable(value):
    """Return `value` as plain JSON values. Any other object (a fitted law, say) becomes its repr."""
    if value is None or isinstance(value, (bool, str, int, float)):
        return value
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    return repr(value)


@dataclass
class MethodResult:
    """The outcome of one method at one seed: its final run and every extra run it needed."""

    method: str
    params: dict
    seed: int
    final: dict
    extra: list[dict]
    fitted: dict
    wall_time_s: float
    # The setting it ran in ({"name", "fingerprint"}, see `setting_identity`); None in older results.
    setting: dict | None = None
    # The settings the method ran with, nulls filled from the context (`run_params`); None in older results.
    run_params: dict | None = None

    def to_dict(self) -> dict:
        record = {
            "method": self.method,
            "params": self.params,
            "seed": self.seed,
            "final_run": self.final["id"],
            "extra_runs": [{"id": record["id"], "role": record.get("role")} for record in self.extra],
            "fitted": self.fitted,
            "status": self.final.get("status"),
            "wall_time_s": self.wall_time_s,
        }
        if self.final.get("id") is None:
            # The method raised before its final run existed, so the error is kept here for the table.
            record["error"] = self.final.get("error")
        if self.setting is not None:
            record["setting"] = self.setting
        if self.run_params is not None:
            record["run_params"] = _jsonable(self.run_params)
        return record


def failed_method_result(method_config: dict[str, Any], setting: Setting, seed: int, error: BaseException) -> MethodResult:
    """Return the result of a method that raised before it had a final run, marked failed."""
    name = str(method_config.get("name"))
    params = {key: value for key, value in method_config.items() if key != "name"}
    run_params = None
    try:
        # The settings a successful run of this config would record, so that both share one file.
        method = build_method(method_config)
        params = method.get_params()
        run_params = method.run_params(setting.context(seed))
    except Exception:  # noqa: BLE001 - the config itself may be what failed
        pass
    final = {"id": None, "status": "failed", "error": f"{type(error).__name__}: {error}"}
    return MethodResult(name, params, seed, final, [], {}, 0.0, setting=setting_identity(setting), run_params=run_params)


def setting_identity(setting: Setting) -> dict:
    """Return the name and fingerprint of a setting, so that tables compare methods only within one setting.

    The fingerprint hashes the data of a run at seed 0 (the corpus fingerprint, tokenizer and
    domains, or the simulated world), so the same data config name over another corpus is another
    setting. Model and training settings are left out: results of a rerun with other ones replace
    the earlier results of the same data.
    """
    encoded = json.dumps(setting.spec(0).hashed_content()["data"], sort_keys=True, separators=(",", ":"))
    return {"name": str(setting.name), "fingerprint": hashlib.sha256(encoded.encode()).hexdigest()[:16]}


def setting_label(identity: dict | None) -> str:
    """Return the short label of a setting identity (`default-1a2b3c4d`); `unnamed` for older results."""
    if not identity:
        return "unnamed"
    return f"{identity['name']}-{str(identity['fingerprint'])[:8]}"


def run_method(method_config: dict[str, Any], setting: Setting, store: RunStore, seed: int) -> MethodResult:
    """Run one method at one seed end to end: its probe runs, its fit, and its final run."""
    method = build_method(method_config)
    context = setting.context(seed)
    main = setting.is_main_process()
    extra: list[dict] = []
    # Invalid settings raise here, before the log line below and before any training.
    method.check(context)
    params = method.run_params(context)
    if main:
        settings = ", ".join(f"{key}={value!r}" for key, value in params.items())
        log.info("method %s, seed %d: %s", method.name, seed, settings or "it has no settings")
        _warn_if_few_rounds(method, context)

    # Trackers log the method and its settings with every run its task trains, also a static run's.
    trained_by = {"name": method.name, **params}

    def train(spec: RunSpec, run_dir: Path, online: OnlineMethod | None = None) -> dict:
        return execute_run(spec, setting, run_dir, method=online, context=context, trained_by=trained_by)

    if method.kind == "static":
        observations, _ = _train_probes(method.explore(context), method.name, setting, store, seed, train, extra, main)
        method.fit(observations, context)
        mixture = validate_mixture(method.optimize(context), setting.domains, name=f"mixture chosen by {method.name}")
        final, _ = store.get_or_run(setting.spec(seed, mixture=mixture), train, main=main)
        fitted = _jsonable_state(method)
    else:
        online, reference = _prepare_online(method_config, setting, store, seed, context, train, extra, main)
        spec = setting.spec(seed, method={"name": method.name, **params}, role="proxy" if method.trains_proxy else "final")
        run, _ = store.get_or_run(
            spec,
            lambda s, d: execute_run(s, setting, d, method=online, context=context, reference=reference, trained_by=trained_by),
            main=main,
        )
        if method.trains_proxy:
            extra.append(run)
            # The proxy's weights averaged over every training step, as DoReMi and DoGE publish them.
            mean_mixture = np.asarray(run["mean_mixture"])
            mixture = validate_mixture(method.final_mixture(mean_mixture, context), setting.domains, normalize=True)
            final, _ = store.get_or_run(setting.spec(seed, mixture=mixture), train, main=main)
        else:
            final = run
        # The state the method learned during its run, as its record keeps it (also for a reused run).
        fitted = dict(run.get("method_state") or {})

    return MethodResult(
        method=method.name,
        params=method.get_params(),
        seed=seed,
        final=final,
        extra=extra,
        fitted=fitted,
        wall_time_s=_records_wall_time(final, extra),
        setting=setting_identity(setting),
        run_params=params,
    )


def round_length(method: OnlineMethod, context: MethodContext) -> int | None:
    """Return the steps in each of the method's rounds, or None when the context does not settle it.

    A round length that the method sets only after its prerequisite runs (a null `update_steps`)
    is read from the run parameters, which resolve it for the context.
    """
    try:
        return int(method.round_steps)
    except ConfigError:
        resolved = method.run_params(context).get("update_steps")
        return resolved if isinstance(resolved, int) and resolved >= 1 else None


def _warn_if_few_rounds(method: MixingMethod, context: MethodContext) -> None:
    """Warn when a method that moves its mixture only between rounds gets fewer than 3 rounds in the run.

    Methods with a step hook move the mixture at every step and are left alone.
    """
    if not isinstance(method, OnlineMethod) or type(method).step_hook is not OnlineMethod.step_hook:
        return
    length = round_length(method, context)
    if length is None:
        return
    rounds = -(-context.total_steps // length)
    if rounds < 3:
        log.warning(
            "method %s changes its mixture every %d steps, so this run of %d steps has only %d round(s). "
            "Shorter runs need shorter rounds: lower the method's round length (update_steps for aioli and "
            "skill_it: method.update_steps=N, or experiment.method_overrides.%s.update_steps=N in a benchmark).",
            method.name, length, context.total_steps, rounds, method.name,
        )


def _records_wall_time(final: dict, extra: list[dict]) -> float:
    """Return the wall time of the method's runs as their records count it, each run once.

    A record counts every part of a resumed run and the time a reused run took when it was
    trained, so the figure matches the table's, not this call's elapsed time.
    """
    runs = {run["id"]: run for run in [*extra, final] if run.get("id") is not None}
    return float(sum((run.get("compute") or {}).get("wall_time_s", 0.0) or 0.0 for run in runs.values()))


def _prepare_online(method_config, setting, store, seed, context, train, extra, main):
    """Train an online method's prerequisite runs and hand their results to a fresh instance of it.

    Returns the prepared method and the reference run (spec and folder), if it has one.
    """
    online = build_method(method_config)
    observations, specs = _train_probes(online.prerequisites(context), online.name, setting, store, seed, train, extra, main)
    online.use_prerequisites(observations, context)
    reference = next(((spec, store.run_dir(spec)) for spec in specs if spec.role == "reference"), None)
    return online, reference


def _step_hook(method, context):
    """Return the method's step hook for the next steps, or None; raise ConfigError for one without `update`."""
    hook = method.step_hook(context) if method is not None else None
    if hook is not None and not callable(getattr(hook, "update", None)):
        raise ConfigError(
            f"method {method.name!r}: step_hook returned {type(hook).__qualname__}, which has no update(stats, "
            f"mixture) method; define update on it, returning the new mixture or None, or return None from step_hook."
        )
    return hook


def _train_probes(probes, method_name, setting, store, seed, train, extra, main):
    """Train (or reuse) each probe's whole run; return their observations and specs.

    Every record is appended to `extra`, so the method's table row counts its compute.
    """
    probes, specs = list(probes), []
    # Every probe's settings are checked before the first one trains.
    for number, probe in enumerate(probes, start=1):
        try:
            specs.append(setting.spec(seed, probe=probe, role=probe.role))
        except ConfigError as error:
            raise ConfigError(f"method {method_name}: {probe.role} run {number} of {len(probes)}: {error}") from None
    observations = []
    for probe, spec in zip(probes, specs):
        record, _ = store.get_or_run(spec, train, main=main)
        # The stored record keeps the role of the method that trained it first (the stratified run
        # is also DoReMi's reference), so the role of this use is set here.
        extra.append({**record, "role": probe.role})
        if record.get("status") != "complete":
            raise RunFailedError(f"{probe.role} run {spec.id} of method {method_name!r} failed: {record.get('error')}")
        observations.append(
            Observation(np.asarray(spec.mixture), np.asarray(record["val_losses"]), run_id=spec.id, role=probe.role)
        )
    return observations, specs


def save_method_result(result: MethodResult, directory: Path) -> Path:
    """Write a method result next to the experiment's table, atomically, and return its path.

    A result is identified by its method, seed, setting and the settings it ran with (nulls
    filled, so `eta=null` and the value it stands for are one result). The first one of a method and
    seed goes to `<method>-seed<k>.json`. A result of another setting (the same experiment run again
    with data=three, say) goes to `<method>-seed<k>-<setting label>.json`, and one with other
    hyperparameters (a sweep over `method.eta`, say) to
    `<method>-seed<k>-<setting label>-<digest of the hyperparameters>.json`. So rerunning a result
    replaces it, and results of other settings or hyperparameters sit side by side.
    """
    methods = Path(directory) / "methods"
    written = result.to_dict()
    base = f"{result.method}-seed{result.seed}"
    label = re.sub(r"[^A-Za-z0-9_.-]", "_", setting_label(result.setting))
    candidates = [methods / f"{base}.json", methods / f"{base}-{label}.json",
                  methods / f"{base}-{label}-{params_digest(effective_params(written))}.json"]
    stored = [_stored_identity(path, written) for path in candidates]
    identity = result_identity(written)
    free = [held is None or held == "replaceable" for held in stored]
    # A file that contains this very result is rewritten. A file without a setting predates settings
    # and is replaced. The setting's name is taken only when the first file contains another setting.
    if identity in stored:
        path = candidates[stored.index(identity)]
    elif free[0]:
        path = candidates[0]
    elif free[1] and stored[0][0] != identity[0]:
        path = candidates[1]
    else:
        path = candidates[2]
    earlier = stored[candidates.index(path)]
    if earlier not in (None, "replaceable"):
        previous = json.loads(path.read_text())
        replaced = previous.get("final_run")
        if previous.get("status") == "complete" and written.get("status") != "complete":
            log.warning(
                "replacing the complete result of %s seed %d in %s (final run %s) with this failed one. The earlier "
                "run records stay in the run store, so rerunning with the earlier settings restores it without training.",
                result.method, result.seed, path.parent.parent, replaced,
            )
        elif replaced not in (None, written.get("final_run")):
            # The identity matches but the final run differs, so the new result used other training settings.
            log.warning(
                "replacing the result of %s seed %d in %s (final run %s) with final run %s. The earlier run records "
                "stay in the run store. Use another experiment.name to keep both in tables.",
                result.method, result.seed, path.parent.parent, replaced, written.get("final_run"),
            )
    write_json_atomic(path, written)
    return path


def effective_params(result: dict) -> dict:
    """Return the settings a stored method result ran with: `run_params`, or `params` in older results."""
    run_params = result.get("run_params")
    return run_params if run_params is not None else (result.get("params") or {})


def params_digest(params: dict) -> str:
    """Return 8 hex digits that identify a method's hyperparameters; 1 and 1.0 count as one value."""
    encoded = json.dumps(_numbers_as_floats(_jsonable(params)), sort_keys=True)
    return hashlib.sha256(encoded.encode()).hexdigest()[:8]


def _numbers_as_floats(value):
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, list):
        return [_numbers_as_floats(item) for item in value]
    if isinstance(value, dict):
        return {key: _numbers_as_floats(item) for key, item in value.items()}
    return value


def result_identity(result: dict) -> tuple:
    """Return what distinguishes results of one method and seed: the setting and the settings it ran with."""
    return (json.dumps(result.get("setting"), sort_keys=True), params_digest(effective_params(result)))


def _stored_identity(path: Path, new: dict):
    """Return the identity of the result stored at `path` (see `result_identity`).

    None when the file is absent; "replaceable" when it is unreadable or has no setting. A result
    written before results kept `run_params` counts as the new one when its setting and `params` match.
    """
    if not path.exists():
        return None
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return "replaceable"
    if stored.get("setting") is None:
        return "replaceable"
    if stored.get("run_params") is None and stored.get("setting") == new.get("setting"):
        if params_digest(stored.get("params") or {}) == params_digest(new.get("params") or {}):
            return result_identity(new)
    return result_identity(stored)


