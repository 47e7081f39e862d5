"""Parameter accuracy: branch an online method's own run at chosen rounds and score its A^t.

The parent is the method's run, trained by the engine's `execute_run` exactly as `mixbench run`
trains it (same spec, so the same run id). Each time the run records an estimate of A that is
one of the chosen rounds, an observer saves the full state (backend, loop, method) with the
engine's checkpoint writer. Children restore that state, train `window` steps on their own
fixed mixtures (a design of `children` mixtures), and `param_score` fits A*^t on them and
compares it with the method's estimate.

Rounds count the run's recorded A estimates from 0, in order: the `rounds` entries of the record
whose A is set. Aioli records one per round, right after its exploration. Methods that update
every step (DoGE, DoReMi, ODM) record one per validation pass.

Records live under <results_dir>/branches/: <run id>-run/record.json is the parent's record,
and <run id>-step<t>/ contains the saved state (checkpoint/, round.json), parent.json and the
children, as for the fixed-mixture branch sweep. Re-running trains nothing that has a record.
"""

import difflib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixbench.engine import _load_checkpoint, _prepare_online, _save_checkpoint, execute_run, round_length
from mixbench.errors import ConfigError, DataError
from mixbench.law_accuracy.branch import _sim_truth, branch_children, branch_directory, child_key
from mixbench.law_accuracy.command import plain
from mixbench.law_accuracy.param_report import param_markdown, write_rows
from mixbench.law_accuracy.param_score import score_branch_point
from mixbench.law_accuracy.sweeps import build_setting, choice_option, int_option, sweep_settings, warn_replaced_report
from mixbench.method import available_methods, build_method, get_method_class
from mixbench.runs import RunSpec, RunStore, folder_lock, provenance, write_json_atomic, write_text_atomic
from mixbench.simplex import DESIGN_KINDS, design

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParamOptions:
    """The settings of a parameter-accuracy sweep, read from the experiment config."""

    name: str
    seed: int
    parent_method: str
    method_overrides: dict
    rounds: tuple[int, ...]
    window: int
    children: int
    design: str
    nonnegative: bool
    eta: float | None

    @classmethod
    def from_config(cls, experiment) -> "ParamOptions":
        name = experiment.get("parent_method")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"experiment.parent_method={name!r} is invalid; name an online method, e.g. experiment.parent_method=aioli.")
        if name not in available_methods():
            raise unknown_parent_method(name)
        overrides = plain(experiment.get("method_overrides")) or {}
        if not isinstance(overrides, dict):
            raise ConfigError(f"experiment.method_overrides={overrides!r} is invalid; give a mapping from method name to settings.")
        return cls(
            name=str(experiment.name),
            seed=int_option(experiment, "seed", 0),
            parent_method=name,
            method_overrides=overrides,
            rounds=rounds_option(experiment.get("rounds")),
            window=int_option(experiment, "window", 1),
            children=int_option(experiment, "children", 2),
            design=choice_option(experiment, "design", tuple(DESIGN_KINDS), "cover"),
            nonnegative=bool(experiment.get("nonnegative", False)),
            eta=eta_option(experiment.get("eta")),
        )


def online_methods() -> list[str]:
    """Return the registered online methods: those whose run records an A^t to branch at."""
    return [method for method in available_methods() if get_method_class(method).kind == "online"]


def unknown_parent_method(name: str) -> ConfigError:
    """Build the error for an experiment.parent_method that names no registered method."""
    online = online_methods()
    close = difflib.get_close_matches(name, online, n=1, cutoff=0.5)
    guess = f" Did you mean experiment.parent_method={close[0]}?" if close else ""
    return ConfigError(
        f"experiment.parent_method={name!r} is not a registered method.{guess} The online methods, whose runs "
        f"record an A^t to branch at, are: {', '.join(online)}."
    )


def rounds_option(value: Any) -> tuple[int, ...]:
    """Return experiment.rounds as sorted distinct whole numbers >= 0, or raise ConfigError."""
    value = plain(value)
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 0 for r in value):
        raise ConfigError(
            f"experiment.rounds={value!r} is invalid; give a non-empty list of round numbers counted from 0, "
            f"e.g. experiment.rounds=[1,3]."
        )
    return tuple(sorted(set(value)))


def eta_option(value: Any) -> float | None:
    """Return experiment.eta: null (the method's own step size, else 1) or a positive number."""
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ConfigError(f"experiment.eta={value!r} is invalid; give a positive step size, or null for the method's own.")
    return float(value)


def method_eta(method) -> float:
    """Return the method's exponentiated-gradient step size (Aioli's eta), or 1 when it has none."""
    settings = getattr(method, "settings_", None)
    if isinstance(settings, dict) and isinstance(settings.get("eta"), (int, float)):
        return float(settings["eta"])
    eta = getattr(method, "eta", None)
    return float(eta) if isinstance(eta, (int, float)) and not isinstance(eta, bool) and eta > 0 else 1.0


def parent_method_config(options: ParamOptions, setting) -> dict:
    """Return the parent method's config (conf/method file, then overrides) after checking it is online."""
    from mixbench.commands import method_config

    name = options.parent_method
    config = method_config(name, options.method_overrides.get(name))
    cls = get_method_class(name)
    if cls.kind != "online":
        raise ConfigError(
            f"experiment.parent_method={name!r} is a {cls.kind} method: it records no A^t during its run. "
            f"Branch an online method's run instead: {', '.join(online_methods())}."
        )
    build_method(config).check(setting.context(options.seed))
    return config


class RoundSnapshots:
    """An engine round observer that saves the run's full state at the chosen rounds."""

    def __init__(self, root: Path, spec: RunSpec, rounds: set[int], main: bool = True):
        self.root, self.spec, self.rounds, self.main = Path(root), spec, set(rounds), main

    def __call__(self, backend, loop, method, mixture_before: np.ndarray) -> None:
        entry = loop.rounds[-1]
        if entry.get("A") is None or not self.main:
            return
        index = sum(1 for recorded in loop.rounds if recorded.get("A") is not None) - 1
        if index not in self.rounds:
            return
        directory = branch_directory(self.root, self.spec, backend.step)
        directory.mkdir(parents=True, exist_ok=True)
        _save_checkpoint(directory, backend, loop, method)
        write_json_atomic(directory / "round.json", {
            "round": index, "step": backend.step, "A": entry["A"],
            "mixture_before": np.asarray(mixture_before).tolist(), "mixture_after": loop.mixture.tolist(),
        })
        log.info("%s round %d: saved the state at step %d for branching", method.name, index, backend.step)


def _parent_dir(root: Path, spec: RunSpec) -> Path:
    return Path(root) / f"{spec.id}-run"


def train_parent(setting, store: RunStore, spec: RunSpec, config: dict, seed: int, root: Path, rounds: set[int]) -> dict:
    """Train the method's run through the engine, saving its state at `rounds`; return its record."""
    context = setting.context(seed)
    main = setting.is_main_process()

    def train(probe_spec, run_dir):
        return execute_run(probe_spec, setting, run_dir, context=context)

    online, reference = _prepare_online(config, setting, store, seed, context, train, [], main)
    directory = _parent_dir(root, spec)
    directory.mkdir(parents=True, exist_ok=True)
    log.info("parameter accuracy: training the %s run %s, saving rounds %s", online.name, spec.id, sorted(rounds))
    record = execute_run(spec, setting, directory, method=online, context=context, reference=reference,
                         on_round=RoundSnapshots(root, spec, rounds, main))
    if record.get("status") != "complete":
        raise DataError(
            f"the {online.name} run {spec.id} failed at step {record.get('step')} ({record.get('error')}); "
            f"lower the learning rate, or delete {directory} to retry."
        )
    record = {**record, "id": spec.id, "spec": spec.to_dict(), "method_eta": method_eta(online), **provenance()}
    if main:
        write_json_atomic(directory / "record.json", record)
        shutil.rmtree(directory / "checkpoint", ignore_errors=True)
    return record


def estimates(record: dict) -> list[dict]:
    """Return the record's round entries that carry an A estimate, in order."""
    return [entry for entry in record.get("rounds") or [] if entry.get("A") is not None]


def branch_points(record: dict, options: ParamOptions) -> list[dict]:
    """Return the round entries of `options.rounds`, after checking each exists and leaves room for the window."""
    recorded, total = estimates(record), int(record["spec"]["train"]["steps"])
    method = options.parent_method
    if not recorded:
        raise DataError(f"the {method} run {record['id']} recorded no estimate of A, so there is nothing to compare.")
    beyond = [r for r in options.rounds if r >= len(recorded)]
    if beyond:
        steps = ", ".join(str(entry["step"]) for entry in recorded)
        raise ConfigError(
            f"experiment.rounds={list(options.rounds)} asks for round {beyond[0]}, but the {method} run recorded "
            f"{len(recorded)} estimates of A (rounds 0 to {len(recorded) - 1}, at steps {steps}); pick rounds below {len(recorded)}."
        )
    points = []
    for r in options.rounds:
        step = int(recorded[r]["step"])
        if step + options.window > total:
            raise ConfigError(
                f"experiment.window={options.window} from round {r} (step {step}) passes the run's {total} steps: "
                f"only {total - step} steps remain; shorten the window or choose an earlier round."
            )
        points.append({"round": r, "step": step, "A": recorded[r]["A"]})
    return points


def _has_children(root: Path, spec: RunSpec, step: int, mixtures: np.ndarray, window: int) -> bool:
    directory = branch_directory(root, spec, step)
    return all((directory / "children" / f"{child_key(spec, step, p, window)}.json").exists() for p in mixtures)


def _has_state(root: Path, spec: RunSpec, step: int) -> bool:
    directory = branch_directory(root, spec, step)
    return (directory / "checkpoint" / "state.pt").exists() and (directory / "round.json").exists()


def parent_record(setting, store, spec, config, options, root, mixtures) -> tuple[dict, list[dict]]:
    """Return the parent's record and branch points, training the parent only when something is missing.

    The parent is trained when it has no record, or when a round's children lack records and
    its saved state is gone (then the run is trained again, which reproduces it at a fixed
    thread count).
    """
    directory = _parent_dir(root, spec)
    with folder_lock(directory):
        path = directory / "record.json"
        record = json.loads(path.read_text()) if path.exists() else None
        missing = set(options.rounds)
        if record is not None:
            points = branch_points(record, options)
            missing = {point["round"] for point in points
                      if not _has_children(root, spec, point["step"], mixtures, options.window)
                      and not _has_state(root, spec, point["step"])}
        if record is None or missing:
            previous = record
            record = train_parent(setting, store, spec, config, options.seed, root, missing)
            _warn_if_changed(previous, record, options.rounds)
        else:
            log.info("parameter accuracy: reusing the %s run %s and its saved rounds", options.parent_method, spec.id)
        return record, branch_points(record, options)


def _warn_if_changed(previous: dict | None, record: dict, rounds) -> None:
    if previous is None:
        return
    old, new = estimates(previous), estimates(record)
    changed = [r for r in rounds if r < min(len(old), len(new)) and not np.allclose(old[r]["A"], new[r]["A"])]
    if changed:
        log.warning("the retrained run %s differs from its earlier record at rounds %s (another thread count?); "
                    "children trained before come from the earlier run", record["id"], changed)


def _state_loader(setting, spec: RunSpec, point: dict):
    """Return a `load_parent` for `branch_children` that restores the state saved at `point`."""

    def load(directory: Path):
        if not (directory / "checkpoint" / "state.pt").exists():
            raise DataError(f"the saved state of round {point['round']} is missing from {directory}; run the command again to retrain the parent.")
        backend_state, _, _ = _load_checkpoint(directory)
        backend = setting.make_backend(spec)
        backend.restore(backend_state)
        saved = json.loads((directory / "round.json").read_text())
        if backend.step != point["step"] or saved["round"] != point["round"]:
            raise DataError(f"the state in {directory} is at step {backend.step}, not {point['step']}; delete the folder and run again.")
        record = {
            "spec": spec.to_dict(), "step": backend.step, "round": point["round"], "domains": list(backend.domains),
            "eval_sets": list(backend.eval_sets), "losses": backend.evaluate("val").tolist(), "method_A": saved["A"],
            "mixture_before": saved["mixture_before"], "mixture_after": saved["mixture_after"], **_sim_truth(backend),
        }
        write_json_atomic(directory / "parent.json", record)
        return backend, record

    return load


def _check_rounds_fit(options: ParamOptions, method, context, total: int) -> None:
    """Reject chosen rounds beyond the run's last round boundary before the run trains.

    A run records at most one estimate of A per round, so the boundaries bound the rounds.
    `branch_points` later checks the estimates the trained run actually recorded.
    """
    length = round_length(method, context)
    if length is None:
        return
    boundaries = -(-total // length)
    beyond = [r for r in options.rounds if r >= boundaries]
    if beyond:
        raise ConfigError(
            f"experiment.rounds={list(options.rounds)} asks for round {beyond[0]}, but a run of {total} steps in "
            f"rounds of {length} steps records at most {boundaries} estimates of A (rounds 0 to {boundaries - 1}); "
            f"pick rounds below {boundaries}, or lengthen the run or shorten its rounds."
        )


def param_sweep(setting, store: RunStore, options: ParamOptions, results_dir: Path) -> list[dict[str, Any]]:
    """Branch the method's run at each chosen round, score its A^t, and write the report; return one row per round.

    Writes laws_param.csv, laws_param.md and laws_param.json to results_dir/<experiment name>.
    """
    m = len(setting.domains)
    if options.children <= m:
        raise ConfigError(
            f"experiment.children={options.children} is too few: fitting A*^t takes {m} parameters per target for {m} "
            f"domains, so it needs more than {m} children (2 x {m} or more is better)."
        )
    config = parent_method_config(options, setting)
    method = build_method(config)
    spec = setting.spec(options.seed, method={"name": method.name, **method.run_params(setting.context(options.seed))},
                        role="proxy" if method.trains_proxy else "final")
    total = int(spec.train["steps"])
    if options.window >= total:
        raise ConfigError(f"experiment.window={options.window} is not shorter than the run's {total} steps; shorten the window.")
    _check_rounds_fit(options, method, setting.context(options.seed), total)

    directory = Path(results_dir) / options.name
    settings = sweep_settings(options, spec)
    warn_replaced_report(directory / "laws_param.json", settings, directory / "laws_param.csv")
    root = Path(results_dir) / "branches"
    mixtures = design(m, options.children, options.design, rng=options.seed, setting="experiment.design")
    record, points = parent_record(setting, store, spec, config, options, root, mixtures)
    eta = options.eta if options.eta is not None else float(record.get("method_eta", 1.0))

    rows, details = [], []
    for point in points:
        parent, children = branch_children(setting, spec, point["step"], mixtures, options.window, root,
                                           load_parent=_state_loader(setting, spec, point))
        scored = score_branch_point(parent, children, eta, options.nonnegative)
        details.append({"round": point["round"], "step": point["step"], "children": [c["key"] for c in children],
                        "losses": parent["losses"], "mixture_before": parent["mixture_before"], **scored})
        rows.append(_row(options, point, len(children), scored))

    write_json_atomic(directory / "laws_param.json", {
        "setting": setting.name, "method": method.name, "method_config": config, "run": spec.id, "seed": options.seed,
        "window": options.window, "domains": list(setting.domains), "eval_sets": parent["eval_sets"], "rounds": details,
        "sweep_settings": settings,
    })
    write_rows(rows, directory / "laws_param.csv")
    markdown = param_markdown(options, setting, spec, rows, details)
    write_text_atomic(directory / "laws_param.md", markdown)
    print(markdown, end="")
    log.info("wrote %s, %s and %s", directory / "laws_param.csv", directory / "laws_param.md", directory / "laws_param.json")
    return rows


def _row(options: ParamOptions, point: dict, n_children: int, scored: dict) -> dict[str, Any]:
    row = {
        "method": options.parent_method, "round": point["round"], "step": point["step"], "window": options.window,
        "children": n_children, "a_sim": scored["a_sim"], "b": scored["b"], "b_r2": scored["b_r2"],
        "fitted_r2": scored["fitted_r2"], "eta": scored["eta"],
    }
    row.update({f"regret_{name}": value for name, value in scored["regret"].items()})
    if "true_A" in scored:
        row.update({"a_sim_true": scored["a_sim_true"], "fitted_a_sim_true": scored["fitted_a_sim_true"]})
        row.update({f"true_regret_{name}": value for name, value in scored["true_regret"].items()})
    return row


def run_param_sweep(cfg) -> list[dict[str, Any]]:
    """Run the parameter-accuracy sweep that the config describes; see `param_sweep`."""
    options = ParamOptions.from_config(cfg.experiment)
    setting = build_setting(cfg)
    return param_sweep(setting, RunStore(cfg.results_dir), options, Path(cfg.results_dir))
