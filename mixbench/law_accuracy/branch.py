"""Dynamic-law branch sweep: branch child runs off a parent checkpoint and fit dL = -A p.

A parent run trains to step t on its mixture and its full training state is saved. Each child
restores that state, trains a short window of w steps on its own mixture, and records the
per-domain validation loss before and after. The dynamic law is fitted on the loss changes
of the children: in-sample R^2 on all of them, as the Aioli paper (Chen et al. 2024) reports,
and held-out R^2 on children that the fit never saw.

Records live under <results_dir>/branches/<parent run id>-step<t>/: parent.json, the parent's
state (parent_state.pt), and children/<key>.json, where the key hashes the parent spec, the
step, the child mixture and the window. Re-running trains only the children without a record.
"""

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixbench.errors import ConfigError
from mixbench.law_accuracy.command import log_skipped, mark_undefined, require_scored
from mixbench.law_accuracy.dynamic_fit import fit_and_score, sweep_markdown
from mixbench.law_accuracy.report import predictions_path, write_predictions, write_report
from mixbench.law_accuracy.sweeps import (
    build_setting,
    check_split,
    choice_option,
    fraction_option,
    int_option,
    split_rows,
    sweep_settings,
    warn_replaced_report,
)
from mixbench.runs import HASH_DECIMALS, RunSpec, folder_lock, write_json_atomic, write_text_atomic
from mixbench.simplex import DESIGN_KINDS, design, validate_mixture

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BranchOptions:
    """The settings of a branch sweep, read from the experiment config."""

    name: str
    seed: int
    branch_step: int
    window: int
    children: int
    design: str
    held_out_fraction: float
    parent_mixture: Any
    nonnegative: bool

    @classmethod
    def from_config(cls, experiment) -> "BranchOptions":
        return cls(
            name=str(experiment.name),
            seed=int_option(experiment, "seed", 0),
            branch_step=int_option(experiment, "branch_step", 0),
            window=int_option(experiment, "window", 1),
            children=int_option(experiment, "children", 2),
            design=choice_option(experiment, "design", tuple(DESIGN_KINDS), "cover"),
            held_out_fraction=fraction_option(experiment, "held_out_fraction"),
            parent_mixture=experiment.get("parent_mixture", "uniform"),
            nonnegative=bool(experiment.get("nonnegative", False)),
        )


def parent_mixture(value: Any, domains: tuple[str, ...]) -> np.ndarray:
    """Return the parent's mixture: "uniform" (the stratified run) or a list of weights, one per domain."""
    if isinstance(value, str):
        if value != "uniform":
            raise ConfigError(f"experiment.parent_mixture={value!r} is unknown; use uniform or a list of weights, one per domain.")
        return np.full(len(domains), 1.0 / len(domains))
    return validate_mixture(list(value), domains, name="experiment.parent_mixture")


def child_key(parent: RunSpec, step: int, mixture: np.ndarray, window: int) -> str:
    """Return the content hash of one child: parent spec id, branch step, child mixture and window."""
    content = {"parent": parent.id, "step": step, "mixture": [round(float(w), HASH_DECIMALS) for w in mixture], "window": window}
    if "noise_draws" in parent.train:
        # Simulator children draw their own noise; the marker keeps records from when they shared
        # the parent's draw from being reused.
        content["noise"] = "per_child"
    encoded = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(encoded.encode()).hexdigest()[:16]


def _save_state(path: Path, state: Any) -> None:
    import torch

    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(descriptor)
    try:
        torch.save(state, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _sim_truth(backend) -> dict:
    """Return the simulator's true losses and A at the backend's current step (empty for real runs)."""
    world = getattr(backend, "world", None)
    if world is None:
        return {}
    return {"true_losses": backend.true_losses.tolist(), "true_A": world.true_A(backend.true_losses).tolist()}


def _parent_backend(setting, spec: RunSpec, step: int, directory: Path):
    """Return a backend at the branch step, from the saved parent state or by training the parent."""
    import torch

    backend = setting.make_backend(spec)
    state_path, record_path = directory / "parent_state.pt", directory / "parent.json"
    if state_path.exists() and record_path.exists():
        log.info("branch parent %s: restoring the saved state at step %d", spec.id, step)
        backend.restore(torch.load(state_path, weights_only=False))
        return backend, json.loads(record_path.read_text())

    log.info("branch parent %s: training %d steps on mixture %s", spec.id, step, " ".join(f"{w:.3f}" for w in spec.mixture))
    if step:
        backend.train(step, np.asarray(spec.mixture))
    record = {
        "spec": spec.to_dict(), "step": step, "domains": list(backend.domains), "eval_sets": list(backend.eval_sets),
        "losses": backend.evaluate("val").tolist(), **_sim_truth(backend),
    }
    _save_state(state_path, backend.snapshot())
    write_json_atomic(record_path, record)
    return backend, record


def _train_child(backend, snapshot, parent: dict, spec: RunSpec, mixture: np.ndarray, window: int, key: str) -> dict:
    backend.restore(snapshot)
    reseed_noise = getattr(backend, "reseed_noise", None)
    if reseed_noise is not None:
        # Restoring also restores the simulator's noise generator. Without a reseed every child's
        # "after" loss carries one shared draw, which shifts every dL by the same vector: a fitted
        # A absorbs that shift and scores better against the true A than independent noise allows.
        reseed_noise(int(key, 16))
    backend.train(window, mixture)
    after = backend.evaluate("val")
    record = {
        "key": key, "parent": spec.id, "step": parent["step"], "window": window, "mixture": mixture.tolist(),
        "before": parent["losses"], "after": after.tolist(), "dL": (after - np.asarray(parent["losses"])).tolist(),
        **_sim_truth(backend),
    }
    world = getattr(backend, "world", None)
    if world is not None:
        # Total time eta of the window's steps: the true law predicts dL about -progress * A^t p.
        etas = world.etas(backend.total_steps, backend.schedule)
        record["window_progress"] = float(etas[parent["step"] : parent["step"] + window].sum())
    return record


def branch_directory(root: Path, spec: RunSpec, step: int) -> Path:
    """Return the folder of the branch point of the parent `spec` at `step`."""
    return Path(root) / f"{spec.id}-step{step}"


def branch_children(setting, spec: RunSpec, step: int, mixtures: np.ndarray, window: int, root: Path,
                    load_parent=None) -> tuple[dict, list[dict]]:
    """Return (parent record, child records) for `mixtures`, training only children without a record.

    `load_parent(directory)` returns (backend at the branch step, parent record) and writes the
    record to directory/parent.json. It is called only when some child lacks a record. Without
    it, the fixed-mixture parent `spec` is trained, or restored from its saved state.
    """
    directory = branch_directory(root, spec, step)
    keys = [child_key(spec, step, mixture, window) for mixture in mixtures]
    paths = [directory / "children" / f"{key}.json" for key in keys]
    # Parallel sweeps train each child once.
    with folder_lock(directory):
        missing = [i for i, path in enumerate(paths) if not path.exists()]
        if missing:
            if load_parent is None:
                backend, parent = _parent_backend(setting, spec, step, directory)
            else:
                backend, parent = load_parent(directory)
            snapshot = backend.snapshot()
            for number, i in enumerate(missing, start=1):
                log.info("branch child %d/%d (%s): %d steps on mixture %s", number, len(missing), keys[i], window,
                         " ".join(f"{w:.3f}" for w in mixtures[i]))
                record = _train_child(backend, snapshot, parent, spec, mixtures[i], window, keys[i])
                write_json_atomic(paths[i], record)
        else:
            log.info("branch sweep: reusing the %d stored children of parent %s at step %d", len(paths), spec.id, step)
        parent = json.loads((directory / "parent.json").read_text())
        children = [json.loads(path.read_text()) for path in paths]
    return parent, children


def run_branch_sweep(cfg) -> list[dict[str, Any]]:
    """Run the branch sweep that the config describes; see `branch_sweep`."""
    options = BranchOptions.from_config(cfg.experiment)
    setting = build_setting(cfg)
    rows, _ = branch_sweep(setting, options, Path(cfg.results_dir))
    return rows


def branch_sweep(setting, options: BranchOptions, results_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Train (or reuse) the branch sweep and fit the dynamic law; return (rows, fitted values).

    Writes laws_dynamic.csv, laws_dynamic.md and laws_dynamic_A.json to results_dir/<experiment name>;
    the parent and children are recorded under results_dir/branches.
    """
    m = len(setting.domains)
    p0 = parent_mixture(options.parent_mixture, setting.domains)
    spec = setting.spec(options.seed, mixture=p0, role="branch_parent")
    total = int(spec.train["steps"])
    if options.branch_step + options.window > total:
        raise ConfigError(
            f"experiment.branch_step={options.branch_step} plus experiment.window={options.window} passes the parent's "
            f"{total} training steps; the children continue the parent's learning-rate schedule, so raise the steps "
            f"({'sim.steps' if setting.name == 'sim' else 'training.steps'}) or branch earlier."
        )
    # The law fitted on the fit children has m parameters per target, so it needs m of them.
    check_split(options.children, options.held_out_fraction, m, "experiment.children",
                f"the dynamic law ({m} parameters per target for {m} domains)")
    directory = Path(results_dir) / options.name
    settings = sweep_settings(options, spec)
    warn_replaced_report(directory / "laws_dynamic_A.json", settings, directory / "laws_dynamic.csv")
    mixtures = design(m, options.children, options.design, rng=options.seed, setting="experiment.design")
    parent, children = branch_children(setting, spec, options.branch_step, mixtures, options.window,
                                       Path(results_dir) / "branches")

    fit_rows, held_rows = split_rows(mixtures, options.held_out_fraction, options.seed, minimum_fit=m,
                                     count_key="experiment.children", purpose="the dynamic law")
    predictions: list[dict[str, Any]] = []
    rows, fitted = fit_and_score(parent, children, fit_rows, held_rows, options.nonnegative, predictions)
    rows = mark_undefined(rows)

    write_json_atomic(directory / "laws_dynamic_A.json", {
        "setting": setting.name, "parent": spec.id, "parent_mixture": p0.tolist(), "branch_step": options.branch_step,
        "window": options.window, "nonnegative": options.nonnegative, "domains": parent["domains"], "eval_sets": parent["eval_sets"],
        "children": [child["key"] for child in children], "held_out": [children[i]["key"] for i in held_rows],
        **fitted, "sweep_settings": settings,
    })
    write_report(rows, directory / "laws_dynamic.csv")
    write_predictions(predictions, predictions_path(directory / "laws_dynamic.csv"))
    markdown = sweep_markdown(options, setting, parent, children, rows, fitted)
    write_text_atomic(directory / "laws_dynamic.md", markdown)
    print(markdown, end="")
    log_skipped(rows)
    log.info("wrote %s, %s and %s", directory / "laws_dynamic.csv", directory / "laws_dynamic.md", directory / "laws_dynamic_A.json")
    require_scored(rows, directory / "laws_dynamic.csv",
                   "lengthen experiment.window or branch earlier (experiment.branch_step), so that the children's losses change")
    return rows, fitted
