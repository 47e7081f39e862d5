"""The simulated setting: methods run on a `SimBackend` through the same engine as real runs.

World `seed` of an experiment is `world_seed + seed`, so each seed is a different world and the
table's averages are over worlds as well as noise draws.
"""

import logging
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from mixbench.errors import ConfigError
from mixbench.method import MethodContext, Probe
from mixbench.runs import RunSpec
from mixbench.setting import probe_model_settings, probe_schedule, probe_train_settings
from mixbench.sim.backend import SAMPLING_MODES, SimBackend
from mixbench.sim.make import make_world
from mixbench.sim.metrics import a_sim, regret

WORLD_KEYS = ("domains", "world_seed", "prerequisites", "asymmetry", "interference", "step_size")
TRAIN_KEYS = ("steps", "tokens_per_step", "eval_noise", "train_noise", "warmup_steps", "min_lr_ratio", "sampling", "eval_every", "checkpoint_every")


log = logging.getLogger("mixbench")


def warn_unused_overrides(train_group: str = "train") -> list[str]:
    """Warn about command-line settings that the simulator does not read, and return them.

    The simulator trains no model on no corpus, so overrides of `train_group` (train, or training
    in law sweeps), model and data change nothing. Its own settings are under sim. Thread counts
    are left out of the warning, because a command line may set them for every experiment alike.
    """
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    unused = []
    for item in HydraConfig.get().overrides.task:
        key = item.lstrip("+~").split("=", 1)[0]
        group = key.split(".", 1)[0]
        if group in (train_group, "model", "data") and key != f"{train_group}.threads":
            unused.append(item)
    if unused:
        log.warning(
            "%s: the simulator does not read %s settings, so %s nothing here; set the simulator's own under "
            "sim (sim.steps, sim.domains, ...), or run on the corpus without experiment=%s.",
            " ".join(unused), "/".join((train_group, "model", "data")), "this changes" if len(unused) == 1 else "these change",
            HydraConfig.get().runtime.choices.get("experiment", "sim"),
        )
    return unused


@lru_cache(maxsize=64)
def _world(m: int, seed: int, prerequisites: bool, asymmetry: float, interference: float, step_size: float):
    return make_world(m, seed=seed, prerequisites=prerequisites, asymmetry=asymmetry, interference=interference, step_size=step_size)


# The sim settings that are whole numbers, with their least value.
WHOLE_NUMBERS = {"domains": 2, "world_seed": 0, "steps": 1, "tokens_per_step": 1, "warmup_steps": 0, "eval_every": 0,
                 "checkpoint_every": 0}
# The sim settings that are real numbers: whether a value is allowed, and the range in words.
REAL_NUMBERS = {
    "eval_noise": (lambda value: value >= 0, ">= 0"),
    "train_noise": (lambda value: value >= 0, ">= 0"),
    "min_lr_ratio": (lambda value: 0 <= value <= 1, "between 0 and 1"),
    "step_size": (lambda value: value > 0, "above 0"),
}


def check_sim_settings(config: dict) -> None:
    """Raise ConfigError naming the sim.* setting whose value a simulated run would reject.

    Checked when the setting is built, before anything trains, so that a bad value never turns
    earlier results into failed ones. The world's own settings (asymmetry, interference) are
    checked when the world is made.
    """
    for key, least in WHOLE_NUMBERS.items():
        value = config[key]
        if key == "warmup_steps" and value is None:
            continue  # null: 10% of the run
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ConfigError(f"sim.{key}={value!r} is invalid; it must be a whole number >= {least}.")
    for key, (allowed, bounds) in REAL_NUMBERS.items():
        value = config[key]
        number = isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and np.isfinite(value)
        if not (number and allowed(value)):
            raise ConfigError(f"sim.{key}={value!r} is invalid; it must be a number {bounds}.")
    if config["warmup_steps"] is not None and config["warmup_steps"] >= config["steps"]:
        raise ConfigError(f"sim.warmup_steps={config['warmup_steps']} is not below sim.steps={config['steps']}; "
                          f"lower sim.warmup_steps or raise sim.steps.")
    if config["sampling"] not in SAMPLING_MODES:
        raise ConfigError(f"sim.sampling={config['sampling']!r} is invalid; use one of {', '.join(SAMPLING_MODES)}.")


@dataclass
class SimSetting:
    """Runs on simulated worlds with a known mixing law; `config` is the experiment's `sim` block."""

    config: dict
    name: str = "sim"
    domains: tuple[str, ...] = field(init=False)

    def __post_init__(self):
        missing = [key for key in WORLD_KEYS + TRAIN_KEYS if key not in self.config]
        if missing:
            raise ConfigError(f"the sim config lacks {', '.join(missing)}; see conf/experiment/sim.yaml.")
        check_sim_settings(self.config)
        self.domains = tuple(self.world(0).names)

    def world(self, seed: int):
        c = self.config
        return _world(
            int(c["domains"]),
            int(c["world_seed"]) + seed,
            bool(c["prerequisites"]),
            float(c["asymmetry"]),
            float(c["interference"]),
            float(c["step_size"]),
        )

    def domain_tokens(self, seed: int) -> np.ndarray:
        """Simulated domain sizes (tokens), so that `natural` has something to be proportional to."""
        rng = np.random.default_rng([int(self.config["world_seed"]) + seed, 7])
        return np.round(10 ** rng.uniform(6, 8, size=len(self.domains)))

    def context(self, seed: int) -> MethodContext:
        return MethodContext(
            domains=self.domains,
            eval_sets=self.domains,
            train_tokens=self.domain_tokens(seed),
            total_steps=int(self.config["steps"]),
            tokens_per_step=int(self.config["tokens_per_step"]),
            seed=seed,
            steps_setting="sim.steps",
        )

    def spec(self, seed: int, *, mixture=None, method=None, probe: Probe | None = None, role: str = "final") -> RunSpec:
        train = {key: self.config[key] for key in TRAIN_KEYS}
        # Each run draws its own evaluation and training noise (see `make_backend`). The key gives
        # these runs new ids, so records from when runs of one seed shared one draw are not reused.
        train["noise_draws"] = "per_run"
        model = {"kind": "simulated"}
        if probe is not None:
            train.update(probe_train_settings(probe.train, TRAIN_KEYS))
            if probe.steps is not None:
                train["warmup_steps"], train["steps"] = probe_schedule(probe.steps, train)
            # The simulator has no model, but a probe's model settings still tell its run apart.
            model.update(probe_model_settings(probe.model, None))
            mixture = probe.mixture
            seed = probe.seed if probe.seed is not None else seed
        data = {"simulator": {key: self.config[key] for key in WORLD_KEYS} | {"world_seed": int(self.config["world_seed"]) + seed}}
        return RunSpec(
            data=data,
            model=model,
            train=train,
            seed=int(seed),
            mixture=tuple(float(w) for w in mixture) if mixture is not None else None,
            method=method,
            role=role,
        )

    def make_backend(self, spec: RunSpec) -> SimBackend:
        world_seed = int(spec.data["simulator"]["world_seed"]) - int(self.config["world_seed"])
        train = spec.train
        return SimBackend(
            self.world(world_seed),
            int(train["steps"]),
            int(train["tokens_per_step"]),
            eval_noise=float(train["eval_noise"]),
            train_noise=float(train["train_noise"]),
            seed=spec.seed,
            noise_key=int(spec.id, 16) % 2**63,
            warmup_steps=train["warmup_steps"],
            min_lr_ratio=float(train["min_lr_ratio"]),
            sampling=train["sampling"],
        )

    def final_metrics(self, backend: SimBackend, test_losses: np.ndarray) -> dict:
        truth = backend.ground_truth()
        uniform = np.full(len(self.domains), 1.0 / len(self.domains))
        stratified_loss = float(np.mean(backend.world.static_loss(uniform, backend.total_steps, schedule=backend.schedule)))
        return {
            "test_perplexity": np.exp(test_losses).tolist(),
            "test_bits_per_byte": None,
            "true_losses": truth["losses"].tolist(),
            "true_mean_loss": float(np.mean(truth["losses"])),
            "optimal_static_mixture": truth["optimal_static_mixture"].tolist(),
            "optimal_static_loss": float(truth["optimal_static_loss"]),
            "stratified_loss": stratified_loss,
            "regret": float(regret(float(np.mean(truth["losses"])), float(truth["optimal_static_loss"]), stratified_loss)),
            "true_A": [{"step": step, "A": np.asarray(matrix).tolist()} for step, matrix in zip(truth["round_steps"], truth["A"])],
        }

    def save_model(self, backend: SimBackend, run_dir) -> None:
        """Simulated runs have no weights to keep: a reference is rebuilt from its mixture."""

    def attach_reference(self, backend: SimBackend, spec: RunSpec, reference: RunSpec, reference_dir) -> None:
        from mixbench.setting import check_reference

        check_reference(spec, reference)
        if int(reference.train["steps"]) != backend.total_steps:
            raise ConfigError(
                f"reference run {reference.id} trained {reference.train['steps']} steps but this run trains "
                f"{backend.total_steps}; the simulator's reference must match the run's length."
            )
        backend.set_reference(np.asarray(reference.mixture), mode="final")

    def is_main_process(self) -> bool:
        return True


def method_a_sim(record: dict) -> float | None:
    """Average `a_sim` between a run's per-round A estimates and the true A at the same steps."""
    truth = {entry["step"]: np.asarray(entry["A"]) for entry in record.get("true_A") or []}
    scores = []
    for round_ in record.get("rounds") or []:
        if round_.get("A") is None or round_["step"] not in truth:
            continue
        scores.append(a_sim(truth[round_["step"]], np.asarray(round_["A"])))
    return float(np.mean(scores)) if scores else None
